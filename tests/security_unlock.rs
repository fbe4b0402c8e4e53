//! `gsmgw unlock` against the real binary (docs/security.md, "Lock-out cannot lock the owner
//! out"): on the store of a stopped gateway, and through a running gateway over MQTT, where
//! the lock-out was made by real SMS on the simulated modem.

#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use gsmgw::modem::sim::{SimConfig, SimModem};
use mosquitto::{Mosquitto, Observer};
use serde_json::Value;

const DEVICE_ID: &str = "unlocktest";
const STRANGER: &str = "+447700900999";

fn write_config(dir: &Path, modem_port: &Path, mqtt: Option<&str>) -> PathBuf {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
    let mqtt = match mqtt {
        Some(url) => format!("url = \"{url}\""),
        None => "enabled = false".to_string(),
    };
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
[store]
path = "{db}"
[lua]
hot_reload = false
plugins_dir = "{plugins}"
plugins = ["call_reject_conn"]
[plugins.call_reject_conn]
relay = "relay"
input = "door"
master = "+447700900001"
[mqtt]
{mqtt}
"#,
        port = modem_port.display(),
        db = dir.join("gsmgw.db").display(),
        plugins = plugins.display(),
    );
    let path = dir.join("gsmgw.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

fn unlock(config: &Path, sender: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gsmgw"))
        .args(["unlock", "--timeout", "20", "-c"])
        .arg(config)
        .arg(sender)
        .output()
        .expect("gsmgw unlock runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn open_store(dir: &Path) -> gsmgw::store::Store {
    gsmgw::store::Store::open(&dir.join("gsmgw.db"), Default::default()).expect("store opens")
}

#[test]
fn unlock_deletes_the_lock_out_from_the_store_of_a_stopped_gateway() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), Path::new("/dev/null"), None);
    {
        let mut store = open_store(dir.path());
        for key in [STRANGER, "bank"] {
            store
                .kv_set(
                    gsmgw::lua::LOCKOUT_SCOPE,
                    key,
                    Some("\"2099-01-01T00:00:00Z\""),
                )
                .expect("saved");
        }
    }
    let (ok, stdout) = unlock(&config, "07700 900999");
    assert!(ok, "{stdout}");
    assert!(stdout.contains("lock-out deleted"), "{stdout}");
    let (ok, stdout) = unlock(&config, "BANK");
    assert!(ok && stdout.contains("bank: lock-out deleted"), "{stdout}");
    let mut store = open_store(dir.path());
    assert_eq!(
        store.kv_all(gsmgw::lua::LOCKOUT_SCOPE).expect("read").len(),
        0
    );
}

fn spawn_gateway(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_gsmgw"))
        .args(["run", "-c"])
        .arg(config)
        .env("GSMGW_LOG", "gsmgw=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("gsmgw starts")
}

async fn next_security_event(observer: &mut Observer, topic: &str, event_type: &str) -> Value {
    loop {
        let p = observer.next_on(topic).await;
        let v: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
        if v["event_type"] == event_type {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_reaches_a_running_gateway_over_mqtt_after_a_real_lock_out() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let (sim, _sim_events) = SimModem::start(SimConfig::default()).expect("sim modem starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), sim.path(), Some(&broker.url()));
    let log = dir.path().join("gsmgw.log");
    let prefix = format!("gsmgw/{DEVICE_ID}");
    let security = format!("{prefix}/security");
    let mut observer = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let mut child = spawn_gateway(&config, &log);
    observer
        .wait_for(&format!("{prefix}/status"), "online")
        .await;

    for _ in 0..5 {
        sim.inject_sms(STRANGER, "MASTER +447700900999,11111");
    }
    let locked = next_security_event(&mut observer, &security, "lockout").await;
    assert_eq!(locked["number"], STRANGER, "{locked}");

    let config_for_cli = config.clone();
    let (ok, stdout) = tokio::task::spawn_blocking(move || unlock(&config_for_cli, "07700900999"))
        .await
        .expect("unlock ran");
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("unlocked in the running gateway"),
        "{stdout}\ngateway log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let unlocked = next_security_event(&mut observer, &security, "unlocked").await;
    assert_eq!(unlocked["number"], STRANGER);
    assert_eq!(unlocked["by"], "mqtt");

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits")),
        nix::sys::signal::Signal::SIGTERM,
    );
    child.wait().expect("the gateway stops");
    sim.stop();
    // Stopped: the store no longer holds the lock-out either.
    let mut store = open_store(dir.path());
    assert!(store
        .kv_get(gsmgw::lua::LOCKOUT_SCOPE, STRANGER)
        .expect("read")
        .is_none());
}
