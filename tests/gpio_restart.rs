//! A relay in a timed pulse when the gateway stops (an upgrade, a crash, a power cut of the
//! service) must come back in the pulse's resting state, not stuck on: for a gate or a boiler,
//! "on for 10 s" must never become "on until someone notices".
//!
//! The gateway runs with simulated GPIO and no modem (the driver keeps retrying the missing
//! port, which the rest of the gateway does not wait for); the store is a real SQLite file
//! shared by the two runs.

use std::path::Path;
use std::time::Duration;

use gsmgw::app::{self, Gateway, RunOptions};
use gsmgw::bus::OutputAction;
use gsmgw::config::Config;
use gsmgw::gpio::{self, SimGpio};

fn config(dir: &Path) -> Config {
    let text = format!(
        r#"
[modem]
port = "{dir}/no-modem"
[gpio]
backend = "sim"
[outputs.gate]
line = 17
active_low = true
restore = true
[store]
path = "{dir}/gsmgw.db"
[lua]
hot_reload = false
[mqtt]
enabled = false
"#,
        dir = dir.display()
    );
    Config::from_toml(&text, "restart.toml").expect("test config is valid")
}

async fn start(dir: &Path) -> (Gateway, SimGpio) {
    let cfg = config(dir);
    let (backend, sim) = gpio::sim_backend(&cfg);
    let gateway = app::start(
        cfg,
        RunOptions {
            gpio_backend: Some(backend),
            ..Default::default()
        },
    )
    .await
    .expect("gateway starts");
    (gateway, sim)
}

/// Waits (at most 10 s of real time) until the store holds `on` as the gate's saved state.
async fn saved_state_becomes(gateway: &Gateway, on: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let saved = gateway
            .handles
            .store
            .output_states()
            .await
            .expect("read output states");
        if saved.get("gate") == Some(&on) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gate's saved state never became {on}: {saved:?}"
        );
        // The write goes through the output-state task to the store's thread; poll for it.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Switches the gate on for good, then starts a 10 s pulse on it, and returns once the
/// pulse is running.
async fn pulse_gate(gateway: &Gateway, sim: &SimGpio) {
    let set = |on, duration| OutputAction::Set { on, duration };
    gateway
        .handles
        .gpio
        .set("gate", set(true, None))
        .await
        .expect("switch the gate on");
    saved_state_becomes(gateway, true).await;
    gateway
        .handles
        .gpio
        .set("gate", set(true, Some(Duration::from_secs(10))))
        .await
        .expect("start the pulse");
    // Active-low: the relay is energised while the line is low.
    assert_eq!(
        sim.output_level("gate"),
        Some(false),
        "the pulse is running"
    );
}

#[tokio::test]
async fn a_pulse_interrupted_by_a_stop_ends_off_after_the_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, sim) = start(dir.path()).await;
    pulse_gate(&first, &sim).await;
    first.stop().await;

    let (second, sim) = start(dir.path()).await;
    assert_eq!(
        sim.output_level("gate"),
        Some(true),
        "line high: relay released"
    );
    assert_eq!(second.handles.gpio.output("gate").await.ok(), Some(false));
    second.stop().await;
}

#[tokio::test]
async fn a_pulse_interrupted_by_a_crash_ends_off_after_the_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, sim) = start(dir.path()).await;
    pulse_gate(&first, &sim).await;
    // The resting state is saved when the pulse starts, so a crash right after loses nothing.
    saved_state_becomes(&first, false).await;
    // No orderly stop: the tasks are left to die with their channels, as in a crash.
    drop(first);

    let (second, sim) = start(dir.path()).await;
    assert_eq!(
        sim.output_level("gate"),
        Some(true),
        "line high: relay released"
    );
    assert_eq!(second.handles.gpio.output("gate").await.ok(), Some(false));
    second.stop().await;
}
