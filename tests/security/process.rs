//! The real `gsmgw` binary on the simulated modem with a real Mosquitto, logging at trace
//! level: after a conversation, every byte it left behind — database files, the log, every
//! MQTT payload — can be searched for secrets.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gsmgw::modem::sim::{SimConfig, SimEvent, SimHandle, SimModem};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rumqttc::Publish;
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::mosquitto::{Mosquitto, Observer, WAIT};

const DEVICE_ID: &str = "secrets";

pub struct Gateway {
    child: Child,
    sim: SimHandle,
    sim_events: mpsc::UnboundedReceiver<SimEvent>,
    observer: Observer,
    payloads: Vec<Publish>,
    dir: tempfile::TempDir,
    log: PathBuf,
    _broker: Mosquitto,
}

/// Everything the gateway left behind.
pub struct Leftovers {
    /// `gsmgw.db`, `-wal`, `-shm`: (file name, bytes).
    pub database: Vec<(String, Vec<u8>)>,
    pub log: Vec<u8>,
    /// Every MQTT payload published under the gateway's prefix, with its topic.
    pub mqtt: Vec<(String, Vec<u8>)>,
}

impl Leftovers {
    /// Where `needle` occurs, by place; empty when nowhere.
    pub fn places_of(&self, needle: &str) -> Vec<String> {
        let needle = needle.as_bytes();
        let has = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        let mut places = Vec::new();
        for (name, bytes) in &self.database {
            if has(bytes) {
                places.push(format!("database file {name}"));
            }
        }
        // Each line's first word is its time stamp, whose microseconds could be any code.
        let log = String::from_utf8_lossy(&self.log);
        let stamped = log.lines().any(|line| {
            line.split_once(' ')
                .is_some_and(|(_, rest)| has(rest.as_bytes()))
        });
        if stamped {
            places.push("the trace-level log".to_string());
        }
        for (topic, payload) in &self.mqtt {
            if has(payload) {
                places.push(format!("MQTT {topic}"));
            }
        }
        places
    }
}

fn write_config(
    dir: &Path,
    modem: &Path,
    broker_url: &str,
    plugin: &str,
    section: &str,
) -> PathBuf {
    let plugins_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins");
    let config = format!(
        r#"
[gateway]
device_id = "{DEVICE_ID}"
country_code = "44"
[modem]
port = "{port}"
[gpio]
backend = "sim"
[outputs.relay]
line = 17
[inputs.door]
line = 27
debounce_ms = 0
[store]
path = "{db}"
[lua]
plugins_dir = "{plugins_dir}"
plugins = ["{plugin}"]
hot_reload = false
# Hashing codes (argon2) in a debug build on a machine busy with other tests can pass the
# default 500 ms; what is tested here is where secrets end up, not how fast.
call_deadline_ms = 20000
[mqtt]
url = "{broker_url}"
[plugins.{plugin}]
{section}
"#,
        port = modem.display(),
        db = dir.join("gsmgw.db").display(),
        plugins_dir = plugins_dir.display(),
    );
    let path = dir.join("gsmgw.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

impl Gateway {
    /// Starts the gateway with one plugin and its config section; `None` without Mosquitto.
    pub async fn start(plugin: &str, section: &str) -> Option<Gateway> {
        let broker = Mosquitto::start()?;
        let (sim, sim_events) = SimModem::start(SimConfig::default()).expect("sim modem starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = write_config(dir.path(), sim.path(), &broker.url(), plugin, section);
        let log = dir.path().join("gsmgw.log");
        let prefix = format!("gsmgw/{DEVICE_ID}");
        let mut observer = Observer::start(broker.port, &format!("{prefix}/#")).await;
        let child = Command::new(env!("CARGO_BIN_EXE_gsmgw"))
            .args(["run", "-c"])
            .arg(&config)
            // Every level of every module: a secret must not show even at trace.
            .env("GSMGW_LOG", "trace")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("gsmgw starts");
        let mut payloads = Vec::new();
        let status = format!("{prefix}/status");
        let online = async {
            loop {
                let p = observer.received.recv().await.expect("observer alive");
                let done = p.topic == status && p.payload == "online";
                payloads.push(p);
                if done {
                    return;
                }
            }
        };
        timeout(WAIT, online)
            .await
            .expect("the gateway comes online");
        Some(Gateway {
            child,
            sim,
            sim_events,
            observer,
            payloads,
            dir,
            log,
            _broker: broker,
        })
    }

    /// Sends an SMS to the gateway and returns the SMS it sends back within `quiet` of the
    /// last one (none: an empty list after `quiet`).
    pub async fn sms(&mut self, from: &str, text: &str, replies: usize) -> Vec<String> {
        self.sim.inject_sms(from, text);
        let mut got = Vec::new();
        while got.len() < replies {
            let next = timeout(WAIT, self.sim_events.recv()).await;
            match next {
                Ok(Some(SimEvent::SmsSent { text, .. })) => got.push(text),
                Ok(Some(_)) => {}
                Ok(None) => panic!("the simulated modem stopped"),
                Err(_) => panic!(
                    "{replies} replies expected to {text:?}, got {got:?}; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ),
            }
        }
        got
    }

    /// Stops the gateway with SIGTERM and collects what it left behind.
    pub async fn finish(mut self) -> Leftovers {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits"));
        kill(pid, Signal::SIGTERM).expect("SIGTERM");
        let status = self.child.wait().expect("the gateway exits");
        assert!(status.success(), "clean exit: {status}");
        // What the broker delivered before the goodbye; the observer sees `offline` last.
        let status_topic = format!("gsmgw/{DEVICE_ID}/status");
        let drained = async {
            while let Some(p) = self.observer.received.recv().await {
                let done = p.topic == status_topic && p.payload == "offline";
                self.payloads.push(p);
                if done {
                    return;
                }
            }
        };
        let _ = timeout(Duration::from_secs(5), drained).await;
        self.sim.stop();
        let mut database = Vec::new();
        for name in ["gsmgw.db", "gsmgw.db-wal", "gsmgw.db-shm"] {
            if let Ok(bytes) = std::fs::read(self.dir.path().join(name)) {
                database.push((name.to_string(), bytes));
            }
        }
        Leftovers {
            database,
            log: std::fs::read(&self.log).unwrap_or_default(),
            mqtt: self
                .payloads
                .iter()
                .map(|p| (p.topic.clone(), p.payload.to_vec()))
                .collect(),
        }
    }
}
