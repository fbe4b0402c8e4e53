//! A whole gateway (`app::start`) on a simulated modem and simulated GPIO, connected to a real
//! Mosquitto, with an observer of its topics: shared by `tests/mqtt_gateway.rs` and
//! `benches/mqtt.rs`. Include it after `mosquitto.rs`:
//! `#[path = "support/mqtt_gateway.rs"] mod rig;` with `mod mosquitto` declared alongside.
#![allow(dead_code)]

use std::time::Duration;

use gsmgw::app::{self, Gateway, RunOptions};
use gsmgw::bus::Event;
use gsmgw::config::Config;
use gsmgw::gpio::{self, SimGpio};
use gsmgw::modem::sim::{SimConfig, SimEvent, SimHandle, SimModem};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::mosquitto::{Mosquitto, Observer, WAIT};

/// The gateway's topic prefix.
pub const PREFIX: &str = "gsmgw/mqttgw";

pub struct Rig {
    pub gateway: Gateway,
    pub config: Config,
    pub sim: SimHandle,
    pub sim_events: mpsc::UnboundedReceiver<SimEvent>,
    pub gpio: SimGpio,
    /// Sees everything under [`PREFIX`].
    pub observer: Observer,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// Starts the gateway against `broker` and waits until the modem is ready and the gateway
    /// is online.
    pub async fn start(broker: &Mosquitto) -> Rig {
        let (sim, sim_events) = SimModem::start(SimConfig::default()).expect("sim modem starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let text = format!(
            r#"
[gateway]
device_id = "mqttgw"
country_code = "44"
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
hot_reload = false
[mqtt]
url = "{url}"
"#,
            port = sim.path().display(),
            db = dir.path().join("gsmgw.db").display(),
            url = broker.url(),
        );
        let config = Config::from_toml(&text, "rig.toml").expect("rig config is valid");
        let (backend, gpio) = gpio::sim_backend(&config);
        let mut observer = Observer::start(broker.port, &format!("{PREFIX}/#")).await;
        let gateway = app::start(
            config.clone(),
            RunOptions {
                gpio_backend: Some(backend),
                ..Default::default()
            },
        )
        .await
        .expect("gateway starts");
        let mut status = gateway.handles.bus.subscribe();
        if !gateway.handles.modem.status().ready {
            let ready = async {
                while let Some(ev) = status.recv().await {
                    if matches!(ev, Event::Modem(ref s) if s.ready) {
                        return;
                    }
                }
            };
            timeout(Duration::from_secs(20), ready)
                .await
                .expect("the modem is ready in time");
        }
        observer
            .wait_for(&format!("{PREFIX}/status"), "online")
            .await;
        Rig {
            gateway,
            config,
            sim,
            sim_events,
            gpio,
            observer,
            _dir: dir,
        }
    }

    /// `<PREFIX>/<suffix>`.
    pub fn topic(&self, suffix: &str) -> String {
        format!("{PREFIX}/{suffix}")
    }

    /// The next SMS the simulated modem was asked to send.
    pub async fn next_sms(&mut self) -> (String, String) {
        let wait = async {
            loop {
                match self.sim_events.recv().await {
                    Some(SimEvent::SmsSent { to, text, .. }) => return (to, text),
                    Some(_) => continue,
                    None => panic!("the simulated modem stopped"),
                }
            }
        };
        timeout(WAIT, wait).await.expect("an outgoing SMS in time")
    }

    pub async fn stop(self) {
        self.gateway.stop().await;
        self.sim.stop();
    }
}
