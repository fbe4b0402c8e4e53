//! Timers are not starved by a long queue of events: the script task runs due timers after
//! each event instead of draining the whole queue first.

#[path = "support/wait.rs"]
mod wait;

use gsmgw::app::{self, RunOptions};
use gsmgw::bus::Event;
use gsmgw::config::Config;
use gsmgw::gpio;
use gsmgw::modem::sim::{SimConfig, SimModem};
use wait::within;

/// Each input event costs the plugin real work until a timer, a moment after loading,
/// switches the relay on (then the rest of the queue drains quickly).
const PLUGIN: &str = r#"
local fired = false
gw.timer.after(0.2, function() fired = true gw.output.on("relay") end)
return {
  input = function(ev)
    if fired then return end
    local x = 0
    for i = 1, 100000 do x = x + i end
  end,
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_timer_runs_while_a_long_queue_of_events_waits() {
    let (sim, _sim_events) = SimModem::start(SimConfig::default()).expect("sim modem starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    std::fs::write(plugins.join("busy.lua"), PLUGIN).expect("write plugin");
    let text = format!(
        r#"
[modem]
port = "{port}"
[gpio]
backend = "sim"
[outputs.relay]
line = 17
[inputs.door]
line = 27
[store]
path = "{db}"
[lua]
plugins_dir = "{plugins}"
plugins = ["busy"]
hot_reload = false
[mqtt]
enabled = false
"#,
        port = sim.path().display(),
        db = dir.path().join("gsmgw.db").display(),
        plugins = plugins.display(),
    );
    let cfg = Config::from_toml(&text, "test.toml").expect("test config is valid");
    let (backend, _gpio) = gpio::sim_backend(&cfg);
    let gateway = app::start(
        cfg,
        RunOptions {
            gpio_backend: Some(backend),
            ..RunOptions::default()
        },
    )
    .await
    .expect("gateway starts");

    // Far more work queued than the wait below allows: drained first, the timer would fire
    // only after all of it.
    for i in 0..20_000 {
        gateway.handles.bus.publish(Event::InputChanged {
            name: "door".into(),
            on: i % 2 == 0,
        });
    }
    within(10, "the timer to switch the relay on", async {
        loop {
            if matches!(gateway.handles.gpio.output("relay").await, Ok(true)) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    gateway.stop().await;
    sim.stop();
}
