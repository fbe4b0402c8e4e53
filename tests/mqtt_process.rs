//! MQTT across process and broker failures: the broker must say `offline` for a gateway that
//! died without a goodbye, and a broker restart must neither lose the published state nor make
//! the gateway send an SMS request a second time.

#[path = "support/mosquitto.rs"]
mod mosquitto;
#[path = "support/mqtt_gateway.rs"]
mod rig;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use gsmgw::modem::sim::{SimConfig, SimEvent, SimModem};
use mosquitto::{Mosquitto, Observer, WAIT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rig::Rig;
use serde_json::{json, Value};
use tokio::time::timeout;

/// The real binary's device id, so its topics are `gsmgw/killwill/…`.
const DEVICE_ID: &str = "killwill";
const RECIPIENT: &str = "+447700900123";

fn json_of(payload: &[u8]) -> Value {
    serde_json::from_slice(payload).unwrap_or(Value::Null)
}

/// A config for the real binary: the simulated modem's pty, sim GPIO, MQTT on `broker_url`.
fn write_config(dir: &Path, modem_port: &Path, broker_url: &str) -> PathBuf {
    let config = format!(
        r#"
[gateway]
device_id = "{DEVICE_ID}"
country_code = "44"
[modem]
port = "{port}"
[gpio]
backend = "sim"
[store]
path = "{db}"
[lua]
hot_reload = false
[mqtt]
url = "{broker_url}"
keep_alive_s = 5
"#,
        port = modem_port.display(),
        db = dir.join("gsmgw.db").display(),
    );
    let path = dir.join("gsmgw.toml");
    std::fs::write(&path, config).expect("write config");
    path
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_will_says_offline_when_the_gateway_process_is_killed() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let (sim, _sim_events) = SimModem::start(SimConfig::default()).expect("sim modem starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), sim.path(), &broker.url());
    let log = dir.path().join("gsmgw.log");
    let status = format!("gsmgw/{DEVICE_ID}/status");

    let mut watcher = Observer::start(broker.port, &status).await;
    let mut child = spawn_gateway(&config, &log);
    watcher.wait_for(&status, "online").await;
    let mut before = Observer::start(broker.port, &status).await;
    let online = before.next_on(&status).await;
    assert!(
        online.retain && online.payload == "online",
        "a late subscriber sees the retained online: {online:?}"
    );

    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    kill(pid, Signal::SIGKILL).expect("kill the gateway");
    child.wait().expect("the killed gateway is reaped");
    // The kernel closes the socket of a killed process: the broker sends the will at once,
    // long before the keep-alive would run out.
    watcher.wait_for(&status, "offline").await;

    let mut after = Observer::start(broker.port, &status).await;
    let will = after.next_on(&status).await;
    assert!(will.retain, "the will is retained: {will:?}");
    assert_eq!(
        will.payload,
        "offline",
        "a fresh subscriber sees the gateway offline; gateway log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    sim.stop();
}

/// Waits for the final (not `queued`) outcome of request `id` on `sms/sent`.
async fn outcome_of(observer: &mut Observer, topic: &str, id: &str) -> Value {
    loop {
        let reply = json_of(&observer.next_on(topic).await.payload);
        if reply["id"] == id && reply["status"] != "queued" {
            return reply;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_neither_loses_state_nor_sends_an_sms_twice() {
    let Some(mut broker) = Mosquitto::start() else {
        return;
    };
    let mut rig = Rig::start(&broker).await;
    let sent_topic = rig.topic("sms/sent");
    let relay = rig.topic("output/relay");

    rig.observer
        .publish(&rig.topic("output/relay/set"), "ON", false)
        .await;
    rig.observer.wait_for(&relay, "ON").await;
    let first = json!({"to": RECIPIENT, "text": "before the restart", "id": "req-1"});
    rig.observer
        .publish(&rig.topic("sms/send"), first.to_string(), false)
        .await;
    assert_eq!(
        rig.next_sms().await,
        (RECIPIENT.to_string(), "before the restart".to_string())
    );
    let outcome = outcome_of(&mut rig.observer, &sent_topic, "req-1").await;
    assert_eq!(outcome["status"], "sent", "{outcome}");

    broker.restart();
    // The old observer's connection died with the broker.
    let mut after = Observer::start(broker.port, &rig.topic("#")).await;
    after.wait_for(&rig.topic("status"), "online").await;
    after.wait_for(&relay, "ON").await;
    let mut late = Observer::start(broker.port, &relay).await;
    let retained = late.next_on(&relay).await;
    assert!(
        retained.retain && retained.payload == "ON",
        "the broker holds the output state again: {retained:?}"
    );

    // A second request marks the end: anything the gateway would repeat of the first after
    // reconnecting reaches the modem before it.
    let second = json!({"to": RECIPIENT, "text": "after the restart", "id": "req-2"});
    after
        .publish(&rig.topic("sms/send"), second.to_string(), false)
        .await;
    let mut repeats = 0;
    let marker = async {
        loop {
            match rig.sim_events.recv().await {
                Some(SimEvent::SmsSent { text, .. }) if text == "after the restart" => return,
                Some(SimEvent::SmsSent { text, .. }) if text == "before the restart" => {
                    repeats += 1;
                }
                Some(_) => {}
                None => panic!("the simulated modem stopped"),
            }
        }
    };
    timeout(WAIT, marker)
        .await
        .expect("the second SMS is sent in time");
    assert_eq!(repeats, 0, "the first SMS was sent again after the restart");
    let outcome = outcome_of(&mut after, &sent_topic, "req-2").await;
    assert_eq!(outcome["status"], "sent", "{outcome}");
    rig.stop().await;
}
