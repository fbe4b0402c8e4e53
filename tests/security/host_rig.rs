//! The real gateway on a simulated modem and GPIO, running test plugins and rules written by
//! the test (not the shipped dialects): for the host's own defences.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use gsmgw::app::{self, Gateway, RunOptions};
use gsmgw::bus::{Event, IncomingSms, SenderKind};
use gsmgw::config::Config;
use gsmgw::gpio;
use gsmgw::lua::{HostOptions, LuaHost, World};
use gsmgw::modem::sim::{SimConfig, SimEvent, SimHandle, SimModem};
use gsmgw::store::{NewInboxSms, Store};
use tokio::sync::mpsc;

use crate::wait::within;

/// A running gateway with its simulated modem.
pub struct Rig {
    pub gateway: Gateway,
    pub sim: SimHandle,
    pub sim_events: mpsc::UnboundedReceiver<SimEvent>,
    pub dir: tempfile::TempDir,
}

/// Writes `plugins` and `rules` (name, source) into `dir` and returns the config text for
/// them, with `extra` appended (more sections or keys of `[sms]`, which comes last).
pub fn config_text(
    dir: &Path,
    port: &Path,
    plugins: &[(&str, &str)],
    rules: &[(&str, &str)],
    mqtt_port: Option<u16>,
    sms: &str,
) -> String {
    let plugins_dir = dir.join("plugins");
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&plugins_dir).expect("plugins dir");
    std::fs::create_dir_all(&rules_dir).expect("rules dir");
    for (name, source) in plugins {
        std::fs::write(plugins_dir.join(format!("{name}.lua")), source).expect("write plugin");
    }
    for (name, source) in rules {
        std::fs::write(rules_dir.join(format!("{name}.lua")), source).expect("write rule");
    }
    let list = |items: &[(&str, &str)]| {
        items
            .iter()
            .map(|(n, _)| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"
[gateway]
device_id = "sec"
country_code = "44"
[modem]
port = "{port}"
[gpio]
backend = "sim"
[outputs.relay]
line = 17
[store]
path = "{db}"
[lua]
plugins_dir = "{plugins_dir}"
plugins = [{plugin_list}]
rules_dir = "{rules_dir}"
rules = [{rule_list}]
hot_reload = false
[mqtt]
enabled = {enabled}
url = "mqtt://127.0.0.1:{mqtt}"
[sms]
{sms}
"#,
        port = port.display(),
        db = db_path(dir).display(),
        plugins_dir = plugins_dir.display(),
        plugin_list = list(plugins),
        rules_dir = rules_dir.display(),
        rule_list = list(rules),
        enabled = mqtt_port.is_some(),
        mqtt = mqtt_port.unwrap_or(1),
    )
}

/// The store file of a rig whose directory is `dir`.
pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("gsmgw.db")
}

/// Starts the gateway in `dir` (a fresh temp dir when `None`) and waits until the modem is
/// ready. `before` runs on the store file before the gateway opens it.
pub async fn start(
    plugins: &[(&str, &str)],
    rules: &[(&str, &str)],
    mqtt_port: Option<u16>,
    sms: &str,
    before: impl FnOnce(&Path),
) -> Rig {
    let (sim, sim_events) = SimModem::start(SimConfig::default()).expect("sim modem starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config_text(dir.path(), sim.path(), plugins, rules, mqtt_port, sms);
    let cfg = Config::from_toml(&text, "security.toml").expect("test config is valid");
    before(&db_path(dir.path()));
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
    let mut status = gateway.handles.bus.subscribe();
    if !gateway.handles.modem.status().ready {
        within(20, "the modem to be ready", async {
            while let Some(ev) = status.recv().await {
                if matches!(ev, Event::Modem(ref s) if s.ready) {
                    return;
                }
            }
        })
        .await;
    }
    let mut rig = Rig {
        gateway,
        sim,
        sim_events,
        dir,
    };
    while rig.sim_events.try_recv().is_ok() {}
    rig
}

impl Rig {
    pub async fn stop(self) -> tempfile::TempDir {
        self.gateway.stop().await;
        self.sim.stop();
        self.dir
    }
}

/// Inserts an SMS into the inbox of the store file at `path`, undelivered, as if the gateway
/// stopped before handing it to the scripts.
pub fn stored_undelivered(path: &Path, hash: &str, from: &str, text: &str, age_s: i64) {
    let mut store = Store::open(path, Default::default()).expect("store opens");
    let sent = chrono::Utc::now() - chrono::TimeDelta::seconds(age_s);
    store
        .inbox_insert(&NewInboxSms {
            pdu_hash: hash.into(),
            from: from.into(),
            text: text.into(),
            sent_at: Some(sent.fixed_offset()),
            incomplete: false,
        })
        .expect("inbox insert");
}

/// A Lua host with `plugins` loaded (name, source), for tests that need no modem.
pub struct Host {
    pub host: LuaHost,
    pub dir: tempfile::TempDir,
    pub now: std::time::Instant,
}

impl Host {
    pub fn new(plugins: &[(&str, &str)]) -> Host {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = HostOptions {
            memory_limit_kb: 8192,
            instruction_limit: 10_000_000,
            country_code: Some("44".into()),
            ..HostOptions::default()
        };
        let mut host = LuaHost::new(opts, World::default());
        let now = std::time::Instant::now();
        for (name, source) in plugins {
            let path = dir.path().join(format!("{name}.lua"));
            std::fs::write(&path, source).expect("write plugin");
            let status =
                host.load_plugin(name, &path, &serde_json::json!({}), Default::default(), now);
            assert_eq!(status.error, None, "{name} loads");
        }
        Host { host, dir, now }
    }

    pub fn sms(&mut self, id: i64, from: &str, text: &str) -> gsmgw::lua::Dispatch {
        let sms = IncomingSms {
            id,
            from: from.into(),
            text: text.into(),
            time: None,
            incomplete: false,
            sender_kind: SenderKind::of(from),
        };
        self.host.dispatch_sms(&sms, self.now)
    }
}
