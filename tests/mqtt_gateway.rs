//! The MQTT interface of a whole gateway: app, simulated modem and GPIO, real Mosquitto.

#[path = "support/mosquitto.rs"]
mod mosquitto;
#[path = "support/mqtt_gateway.rs"]
mod rig;

use std::process::ExitCode;

use mosquitto::Mosquitto;
use rig::Rig;
use serde_json::{json, Value};

fn json_of(payload: &[u8]) -> Value {
    serde_json::from_slice(payload).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_request_is_sent_by_the_modem_and_reported_sent_with_its_id() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let mut rig = Rig::start(&broker).await;
    let request = json!({"to":"+447700900123","text":"hello from HA","id":"req-1"});
    rig.observer
        .publish(&rig.topic("sms/send"), request.to_string(), false)
        .await;
    let (to, text) = rig.next_sms().await;
    assert_eq!(to, "+447700900123");
    assert_eq!(text, "hello from HA");
    let sent_topic = rig.topic("sms/sent");
    let outcome = loop {
        let reply = json_of(&rig.observer.next_on(&sent_topic).await.payload);
        if reply["status"] != "queued" {
            break reply;
        }
        assert_eq!(reply["id"], "req-1");
    };
    assert_eq!(outcome["id"], "req-1");
    assert_eq!(outcome["status"], "sent", "{outcome}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_command_switches_the_line_and_the_state_is_published() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let mut rig = Rig::start(&broker).await;
    let state = rig.topic("output/relay");
    rig.observer
        .publish(&rig.topic("output/relay/set"), "ON", false)
        .await;
    rig.observer.wait_for(&state, "ON").await;
    assert_eq!(rig.gpio.output_level("relay"), Some(true));
    assert_eq!(
        rig.gateway.handles.gpio.output("relay").await.ok(),
        Some(true)
    );
    rig.observer
        .publish(&rig.topic("output/relay/set"), "TOGGLE", false)
        .await;
    rig.observer.wait_for(&state, "OFF").await;
    assert_eq!(rig.gpio.output_level("relay"), Some(false));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gsmgw_send_waits_for_the_outcome_and_exits_by_it() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let rig = Rig::start(&broker).await;
    let sent = gsmgw::mqtt::cli::send(&rig.config, "+447700900123", "from the CLI", 20).await;
    assert_eq!(sent.ok(), Some(ExitCode::SUCCESS));
    let refused = gsmgw::mqtt::cli::send(&rig.config, "+44 call me", "x", 20).await;
    assert_eq!(refused.ok(), Some(ExitCode::FAILURE));
    let config = rig.config.clone();
    rig.stop().await;
    // Nobody answers any more: a bounded wait, then failure.
    let unanswered = gsmgw::mqtt::cli::send(&config, "+447700900123", "x", 1).await;
    assert_eq!(unanswered.ok(), Some(ExitCode::FAILURE));
}

#[test]
fn gsmgw_discovery_prints_every_topic() {
    let cfg =
        gsmgw::config::Config::from_toml("[outputs.relay]\nline = 1\n", "d.toml").expect("config");
    assert_eq!(
        gsmgw::mqtt::cli::discovery(&cfg, true).ok(),
        Some(ExitCode::SUCCESS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_publishes_its_health_retained() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let mut rig = Rig::start(&broker).await;
    let health = rig.topic("health");
    rig.observer.wait_for(&health, r#"{"status":"ok"}"#).await;
    rig.stop().await;
}
