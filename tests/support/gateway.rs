//! The real gateway on a simulated modem and simulated GPIO, for end-to-end tests.
//!
//! Include it with `#[path = "support/gateway.rs"] mod gateway;` next to
//! `#[path = "support/wait.rs"] mod wait;`. Tests run on a paused clock: the simulated modem is
//! a blocking task, so tokio's time moves only when a test calls `tokio::time::advance`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use gsmgw::app::{self, Gateway, RunOptions};
use gsmgw::bus::Event;
use gsmgw::config::Config;
use gsmgw::gpio::{self, SimGpio};
use gsmgw::modem::sim::{SimConfig, SimEvent, SimHandle, SimModem};
use tokio::sync::mpsc;

use crate::wait::{next_matching, within};

/// A running gateway with its simulated modem and GPIO.
pub struct Rig {
    pub gateway: Gateway,
    pub sim: SimHandle,
    pub sim_events: mpsc::UnboundedReceiver<SimEvent>,
    pub gpio: SimGpio,
    _dir: tempfile::TempDir,
}

/// The configuration: one relay `relay` (line 17, active low), a second relay `relay_y`, the
/// inputs `door` (no debounce, so a level set by the test counts at once) and `input2`, the
/// plugins from `plugins/` given by `plugins`, and `plugin_sections` appended as they are.
pub fn config(
    sim: &SimHandle,
    dir: &Path,
    plugins: &[&str],
    plugin_sections: &str,
    mqtt_port: Option<u16>,
) -> Config {
    let plugins_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins");
    let plugin_list = plugins
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        r#"
[gateway]
device_id = "gate"
country_code = "44"
[modem]
port = "{port}"
[gpio]
backend = "sim"
[outputs.relay]
line = 17
active_low = true
[outputs.relay_y]
line = 23
[inputs.door]
line = 27
debounce_ms = 0
[inputs.input2]
line = 24
[store]
path = "{db}"
[lua]
plugins_dir = "{plugins_dir}"
plugins = [{plugin_list}]
hot_reload = false
[mqtt]
enabled = {enabled}
url = "mqtt://127.0.0.1:{mqtt}"
{plugin_sections}
"#,
        port = sim.path().display(),
        db = dir.join("gsmgw.db").display(),
        plugins_dir = plugins_dir.display(),
        enabled = mqtt_port.is_some(),
        mqtt = mqtt_port.unwrap_or(1),
    );
    Config::from_toml(&text, "test.toml").expect("test config is valid")
}

/// Starts the gateway with [`config`] and waits until the modem is ready; the sim events of
/// the start-up are dropped.
pub async fn start(plugins: &[&str], plugin_sections: &str, mqtt_port: Option<u16>) -> Rig {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GSMGW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("gsmgw=warn")),
        )
        .with_test_writer()
        .try_init();
    let (sim, sim_events) = SimModem::start(SimConfig::default()).expect("sim modem starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(&sim, dir.path(), plugins, plugin_sections, mqtt_port);
    let (backend, gpio) = gpio::sim_backend(&cfg);
    let gateway = app::start(
        cfg,
        RunOptions {
            gpio_backend: Some(backend),
            ..Default::default()
        },
    )
    .await
    .expect("gateway starts");
    let mut rig = Rig {
        gateway,
        sim,
        sim_events,
        gpio,
        _dir: dir,
    };
    // The modem is ready once the driver has read the IMEI and polled the network.
    let mut status = rig.gateway.handles.bus.subscribe();
    if !rig.gateway.handles.modem.status().ready {
        within(20, "the modem to be ready", async {
            while let Some(ev) = status.recv().await {
                if matches!(ev, Event::Modem(ref s) if s.ready) {
                    return;
                }
            }
        })
        .await;
    }
    rig.drain_sim_events();
    rig
}

impl Rig {
    /// Drops the sim events seen so far.
    pub fn drain_sim_events(&mut self) {
        while self.sim_events.try_recv().is_ok() {}
    }

    /// The next SMS the gateway sent (recipient, text), skipping other sim events.
    pub async fn next_sms(&mut self) -> (String, String) {
        next_matching(&mut self.sim_events, 20, "an outgoing SMS", |ev| match ev {
            SimEvent::SmsSent { to, text, .. } => Some((to, text)),
            _ => None,
        })
        .await
    }

    /// The sim events up to and including the first one that `last` accepts.
    pub async fn events_until(
        &mut self,
        what: &str,
        last: impl Fn(&SimEvent) -> bool,
    ) -> Vec<SimEvent> {
        within(20, what, async {
            let mut seen = Vec::new();
            loop {
                match self.sim_events.recv().await {
                    Some(ev) => {
                        let done = last(&ev);
                        seen.push(ev);
                        if done {
                            return seen;
                        }
                    }
                    None => panic!("the simulated modem stopped while waiting for {what}"),
                }
            }
        })
        .await
    }

    /// The logical state of the output `name`.
    pub async fn output(&self, name: &str) -> bool {
        self.gateway
            .handles
            .gpio
            .output(name)
            .await
            .expect("the output exists")
    }

    pub async fn stop(self) {
        self.gateway.stop().await;
        self.sim.stop();
    }
}
