//! The MQTT bridge against a real Mosquitto, observed by a plain rumqttc client.

#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::time::Duration;

use gsmgw::bus::{
    AlarmAction, AlarmSource, Bus, Call, Command, Event, IncomingSms, OutputAction, Secret,
};
use gsmgw::config::{Config, MqttConfig, MqttMode, NotifyTarget};
use gsmgw::mqtt::{self, MqttHandle};
use mosquitto::{unique, Mosquitto, Observer, WAIT};
use rumqttc::{Publish, QoS};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// A bridge with its bus and command channel.
struct Gateway {
    prefix: String,
    bus: Bus,
    commands: mpsc::Receiver<Command>,
    handle: MqttHandle,
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

impl Gateway {
    fn start(url: &str) -> Gateway {
        Self::start_with(url, |_| {})
    }

    /// A bridge for a fresh device id, with `adjust` applied to its config.
    fn start_with(url: &str, adjust: impl FnOnce(&mut Config)) -> Gateway {
        let device = unique("gw");
        let mut cfg = Config::default();
        cfg.gateway.device_id = device.clone();
        cfg.mqtt = MqttConfig {
            url: url.to_string(),
            prefix: "test".into(),
            ..Default::default()
        };
        adjust(&mut cfg);
        let bus = Bus::new();
        let (commands_tx, commands) = mpsc::channel(16);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        let (handle, task) = mqtt::spawn(&cfg, &bus, commands_tx, shutdown).expect("bridge starts");
        Gateway {
            prefix: cfg.mqtt.topic_prefix(&cfg.gateway.device_id),
            bus,
            commands,
            handle,
            task,
            stop: Some(stop),
        }
    }

    /// The client id the bridge uses by default.
    fn client_id(&self) -> String {
        format!("gsmgw-{}", self.prefix.trim_start_matches("test/"))
    }

    fn topic(&self, suffix: &str) -> String {
        format!("{}/{suffix}", self.prefix)
    }

    async fn next_command(&mut self) -> Command {
        timeout(WAIT, self.commands.recv())
            .await
            .expect("a command in time")
            .expect("bridge alive")
    }
}

fn json_of(p: &Publish) -> Value {
    serde_json::from_slice(&p.payload).unwrap_or(Value::Null)
}

/// A connected gateway and an observer of everything under its prefix; `None` without Mosquitto.
async fn setup() -> Option<(Mosquitto, Gateway, Observer)> {
    let broker = Mosquitto::start()?;
    let gw = Gateway::start(&broker.url());
    let mut observer = Observer::start(broker.port, &gw.topic("#")).await;
    // `online` follows the bridge's subscriptions on the same connection, so commands
    // published from now on reach it.
    observer.wait_for(&gw.topic("status"), "online").await;
    Some((broker, gw, observer))
}

#[tokio::test]
async fn status_is_online_retained_and_the_will_says_offline_when_the_connection_dies() {
    let Some((broker, gw, mut observer)) = setup().await else {
        return;
    };
    let late = Observer::start(broker.port, &gw.topic("status")).await;
    let mut late = late;
    let online = late.next_on(&gw.topic("status")).await;
    assert!(online.retain, "online must be retained");
    assert_eq!(online.payload, "online");
    assert!(gw.handle.connected());

    // Dropping the event loop closes the socket without DISCONNECT: only the will can say it.
    gw.task.abort();
    let offline = observer.wait_for(&gw.topic("status"), "offline").await;
    assert_eq!(offline.payload, "offline");
    let abrupt = format!("Client {} closed its connection.", gw.client_id());
    assert!(
        broker.wait_for_log(&abrupt),
        "no abrupt close in the log:\n{}",
        broker.log()
    );
    let mut after = Observer::start(broker.port, &gw.topic("status")).await;
    let retained = after.next_on(&gw.topic("status")).await;
    assert!(retained.retain);
    assert_eq!(retained.payload, "offline");
}

#[tokio::test]
async fn clean_shutdown_says_offline_retained_and_ends_the_task() {
    let Some((broker, mut gw, mut observer)) = setup().await else {
        return;
    };
    drop(gw.stop.take());
    timeout(WAIT, &mut gw.task)
        .await
        .expect("bridge ends after shutdown")
        .expect("bridge did not panic");
    observer.wait_for(&gw.topic("status"), "offline").await;
    // `disconnected.` (not `closed its connection.`): a DISCONNECT, so the will was not used.
    let clean = format!("Client {} disconnected.", gw.client_id());
    assert!(
        broker.wait_for_log(&clean),
        "no clean disconnect in the log:\n{}",
        broker.log()
    );
    let mut after = Observer::start(broker.port, &gw.topic("status")).await;
    let retained = after.next_on(&gw.topic("status")).await;
    assert!(retained.retain);
    assert_eq!(retained.payload, "offline");
    assert!(
        gw.handle.publish("x", b"y".to_vec(), false).await.is_err(),
        "a stopped bridge refuses"
    );
}

#[tokio::test]
async fn output_and_input_changes_are_published_retained() {
    let Some((broker, gw, mut observer)) = setup().await else {
        return;
    };
    gw.bus.publish(Event::OutputChanged {
        name: "relay1".into(),
        on: true,
    });
    gw.bus.publish(Event::InputChanged {
        name: "door".into(),
        on: false,
    });
    // Out on the broker first, so the late observer gets them as retained messages.
    observer.wait_for(&gw.topic("input/door"), "OFF").await;
    let mut late = Observer::start(broker.port, &gw.topic("#")).await;
    let output = late.next_on(&gw.topic("output/relay1")).await;
    assert!(output.retain);
    assert_eq!(output.payload, "ON");
    let input = late.next_on(&gw.topic("input/door")).await;
    assert!(input.retain);
    assert_eq!(input.payload, "OFF");
}

#[tokio::test]
async fn sms_and_call_events_are_published_as_json() {
    let Some((_broker, gw, mut observer)) = setup().await else {
        return;
    };
    let sms = IncomingSms {
        id: 12,
        from: "+447700900123".into(),
        text: "OPEN".into(),
        time: None,
        incomplete: false,
        sender_kind: gsmgw::bus::SenderKind::of("+447700900123"),
    };
    // Only once handled: the scripts may have marked secrets to mask.
    gw.bus.publish(Event::SmsReceived(sms.clone()));
    gw.bus.publish(Event::SmsHandled(gsmgw::bus::HandledSms {
        sms,
        handled_by: None,
        stale: true,
    }));
    gw.bus
        .publish(Event::CallRinging(Call { id: 1, from: None }));
    let received = observer.next_on(&gw.topic("sms/received")).await;
    assert!(!received.retain);
    assert_eq!(received.qos, QoS::AtLeastOnce);
    assert_eq!(
        json_of(&received),
        json!({"event_type":"received","from":"+447700900123","text":"OPEN","time":null,"id":12,"stale":true})
    );
    let call = observer.next_on(&gw.topic("call")).await;
    assert_eq!(json_of(&call), json!({"event_type":"ringing","from":null}));
}

#[tokio::test]
async fn set_commands_become_set_output_commands() {
    let Some((_broker, mut gw, observer)) = setup().await else {
        return;
    };
    let set = gw.topic("output/relay1/set");
    observer.publish(&set, "on", false).await;
    observer.publish(&set, "TOGGLE", false).await;
    observer
        .publish(&set, r#"{"state":"ON","seconds":5}"#, false)
        .await;
    let expected = [
        OutputAction::Set {
            on: true,
            duration: None,
        },
        OutputAction::Toggle,
        OutputAction::Set {
            on: true,
            duration: Some(Duration::from_secs(5)),
        },
    ];
    for action in expected {
        assert_eq!(
            gw.next_command().await,
            Command::SetOutput {
                name: "relay1".into(),
                action
            }
        );
    }
}

#[tokio::test]
async fn a_retained_command_is_ignored() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let mut gw = Gateway::start("mqtt://127.0.0.1:1"); // never connects; only its prefix is used
    gw.task.abort();
    // The retained command is on the broker before a bridge with that prefix connects.
    let prefix = gw.prefix.clone();
    let mut observer = Observer::start(broker.port, &format!("{prefix}/#")).await;
    observer
        .publish(&format!("{prefix}/output/relay1/set"), "ON", true)
        .await;
    observer
        .wait_for(&format!("{prefix}/output/relay1/set"), "ON")
        .await;

    let mut cfg = Config::default();
    cfg.gateway.device_id = prefix.trim_start_matches("test/").to_string();
    cfg.mqtt = MqttConfig {
        url: broker.url(),
        prefix: "test".into(),
        ..Default::default()
    };
    let (commands_tx, commands) = mpsc::channel(16);
    let (_handle, _task) =
        mqtt::spawn(&cfg, &gw.bus, commands_tx, std::future::pending()).expect("bridge starts");
    gw.commands = commands;
    observer
        .wait_for(&format!("{prefix}/status"), "online")
        .await;
    observer
        .publish(&format!("{prefix}/output/relay1/set"), "OFF", false)
        .await;
    assert_eq!(
        gw.next_command().await,
        Command::SetOutput {
            name: "relay1".into(),
            action: OutputAction::Set {
                on: false,
                duration: None
            }
        },
        "the retained ON must not come first"
    );
}

#[tokio::test]
async fn bad_payloads_are_refused_and_the_connection_survives() {
    let Some((_broker, mut gw, mut observer)) = setup().await else {
        return;
    };
    let set = gw.topic("output/relay1/set");
    observer.publish(&set, vec![0xff, 0xfe, 0x00], false).await;
    observer.publish(&set, vec![b'O'; 1 << 20], false).await;
    observer.publish(&set, "{not json", false).await;
    observer
        .publish(&gw.topic("output/nosuchrelay/set"), "MAYBE", false)
        .await;
    observer
        .publish(&gw.topic("sms/send"), vec![b'{'; 1 << 20], false)
        .await;
    observer.publish(&set, "OFF", false).await;
    assert_eq!(
        gw.next_command().await,
        Command::SetOutput {
            name: "relay1".into(),
            action: OutputAction::Set {
                on: false,
                duration: None
            }
        }
    );
    assert!(gw.handle.connected());
    // The oversized sms/send was answered, not fatal.
    let failed = observer.next_on(&gw.topic("sms/sent")).await;
    assert_eq!(json_of(&failed)["status"], "failed");
    while let Ok(p) = observer.received.try_recv() {
        assert!(
            !(p.topic == gw.topic("status") && p.payload == "offline"),
            "the bridge was disconnected"
        );
    }
}

#[tokio::test]
async fn sms_send_becomes_a_send_sms_command() {
    let Some((_broker, mut gw, observer)) = setup().await else {
        return;
    };
    observer
        .publish(
            &gw.topic("sms/send"),
            r#"{"to":"+447700900123","text":"hello","id":"r1"}"#,
            false,
        )
        .await;
    assert_eq!(
        gw.next_command().await,
        Command::SendSms {
            to: "+447700900123".into(),
            text: "hello".into(),
            request_id: Some("r1".into()),
            priority: false,
        }
    );
}

#[tokio::test]
async fn bad_sms_requests_are_answered_failed_on_sms_sent() {
    let Some((_broker, mut gw, mut observer)) = setup().await else {
        return;
    };
    let long = "x".repeat(1601);
    let requests = [
        ("bad-json".to_string(), "{\"to\":".to_string()),
        (
            "letters".into(),
            json!({"to":"+44abc","text":"hi","id":"letters"}).to_string(),
        ),
        (
            "no-text".into(),
            json!({"to":"+447700900123","id":"no-text"}).to_string(),
        ),
        (
            "too-long".into(),
            json!({"to":"+447700900123","text":long,"id":"too-long"}).to_string(),
        ),
    ];
    for (_, payload) in &requests {
        observer
            .publish(&gw.topic("sms/send"), payload.as_str(), false)
            .await;
    }
    for (id, _) in &requests {
        let reply = json_of(&observer.next_on(&gw.topic("sms/sent")).await);
        assert_eq!(reply["status"], "failed", "{reply}");
        assert!(
            reply["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{reply}"
        );
        let expected_id = if id == "bad-json" {
            Value::Null
        } else {
            json!(id)
        };
        assert_eq!(reply["id"], expected_id, "{reply}");
    }
    assert!(
        gw.commands.try_recv().is_err(),
        "no command from a refused request"
    );
}

#[tokio::test]
async fn state_is_republished_after_a_broker_restart() {
    let Some((mut broker, gw, mut observer)) = setup().await else {
        return;
    };
    gw.bus.publish(Event::OutputChanged {
        name: "relay1".into(),
        on: true,
    });
    observer.wait_for(&gw.topic("output/relay1"), "ON").await;

    broker.restart();
    // Changed while (or just as) the broker is away: the latest state must win.
    gw.bus.publish(Event::OutputChanged {
        name: "relay1".into(),
        on: false,
    });
    let mut after = Observer::start(broker.port, &gw.topic("#")).await;
    after.wait_for(&gw.topic("status"), "online").await;
    let relay = after.wait_for(&gw.topic("output/relay1"), "OFF").await;
    assert_eq!(relay.payload, "OFF");
    let mut late = Observer::start(broker.port, &gw.topic("output/relay1")).await;
    let retained = late.next_on(&gw.topic("output/relay1")).await;
    assert!(retained.retain);
    assert_eq!(
        retained.payload, "OFF",
        "the broker holds the latest state again"
    );
}

#[tokio::test]
async fn scripts_publish_through_the_handle_under_the_prefix() {
    let Some((broker, gw, mut observer)) = setup().await else {
        return;
    };
    gw.handle
        .publish("rules/night/state", b"armed".to_vec(), true)
        .await
        .expect("publish");
    observer
        .wait_for(&gw.topic("rules/night/state"), "armed")
        .await;
    let mut late = Observer::start(broker.port, &gw.topic("rules/#")).await;
    let p = late.next_on(&gw.topic("rules/night/state")).await;
    assert!(p.retain, "kept by the broker for late subscribers");
    assert_eq!(p.payload, "armed");
    assert!(gw.handle.publish("a/#", Vec::new(), false).await.is_err());
}

#[cfg(feature = "embedded-broker")]
#[tokio::test]
async fn embedded_broker_relays_a_publish_to_a_subscriber() {
    let broker = mqtt::broker::start(21883).expect("embedded broker starts");
    let mut observer = Observer::start(broker.port, "demo/#").await;
    observer.publish("demo/hello", "world", false).await;
    let p = observer.next_on("demo/hello").await;
    assert_eq!(p.payload, "world");

    // And the bridge itself works against it.
    let gw = Gateway::start(&broker.url());
    let mut status = Observer::start(broker.port, &gw.topic("status")).await;
    status.wait_for(&gw.topic("status"), "online").await;
}

#[tokio::test]
async fn alarm_commands_carry_their_code_and_bad_ones_do_nothing() {
    let Some((_broker, mut gw, observer)) = setup().await else {
        return;
    };
    let set = gw.topic("alarm/set");
    observer.publish(&set, "ARM_AWAY", false).await;
    for bad in [
        vec![0xff, 0xfe],
        vec![b'A'; 1 << 20],
        b"{\"action\":".to_vec(),
        b"OPEN_SESAME".to_vec(),
        br#"{"action":"DISARM","code":[1]}"#.to_vec(),
    ] {
        observer.publish(&set, bad, false).await;
    }
    observer
        .publish(&set, r#"{"action":"DISARM","code":"4321"}"#, false)
        .await;
    assert_eq!(
        gw.next_command().await,
        Command::Alarm {
            action: AlarmAction::ArmAway,
            source: AlarmSource::External,
            by: Some("mqtt".into()),
            code: None,
            reply: None,
        }
    );
    assert_eq!(
        gw.next_command().await,
        Command::Alarm {
            action: AlarmAction::Disarm,
            source: AlarmSource::External,
            by: Some("mqtt".into()),
            code: Some(Secret("4321".into())),
            reply: None,
        },
        "the bad payloads in between gave no command"
    );
    assert!(gw.handle.connected());
}

#[tokio::test]
async fn the_text_entity_sends_number_colon_text() {
    let Some((_broker, mut gw, mut observer)) = setup().await else {
        return;
    };
    let topic = gw.topic("sms/send_text");
    observer
        .publish(&topic, "+44 7700 900123: on my way", false)
        .await;
    observer.publish(&topic, "no number here", false).await;
    assert_eq!(
        gw.next_command().await,
        Command::SendSms {
            to: "+44 7700 900123".into(),
            text: "on my way".into(),
            request_id: None,
            priority: false,
        }
    );
    let refused = json_of(&observer.next_on(&gw.topic("sms/sent")).await);
    assert_eq!(refused["status"], "failed");
}

#[tokio::test]
async fn modem_state_carries_the_imei_only_when_configured() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    for publish_imei in [false, true] {
        let gw = Gateway::start_with(&broker.url(), |c| c.mqtt.publish_imei = publish_imei);
        let mut observer = Observer::start(broker.port, &gw.topic("#")).await;
        observer.wait_for(&gw.topic("status"), "online").await;
        gw.bus.publish(Event::Modem(gsmgw::bus::ModemStatus {
            registered: true,
            imei: Some("350000000000001".into()),
            ..Default::default()
        }));
        let modem = json_of(&observer.next_on(&gw.topic("modem")).await);
        assert_eq!(modem.get("imei").is_some(), publish_imei, "{modem}");
    }
}

/// The discovery config published for `topic`, waiting for it.
async fn discovery_config(observer: &mut Observer, topic: &str) -> Value {
    json_of(&observer.next_on(topic).await)
}

#[tokio::test]
async fn discovery_is_retained_republished_for_home_assistant_and_stale_entities_removed() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let device = unique("disc");
    let configure = |outputs: &[&str]| {
        let device = device.clone();
        let outputs: Vec<String> = outputs.iter().map(|s| s.to_string()).collect();
        move |c: &mut Config| {
            c.gateway.device_id = device;
            for name in outputs {
                let text = format!("[outputs.{name}]\nline = 1\n");
                let parsed = Config::from_toml(&text, "o.toml").expect("output config");
                c.outputs.extend(parsed.outputs);
            }
        }
    };
    let switch = |name: &str| format!("homeassistant/switch/gsmgw_{device}/output_{name}/config");
    let mut ha = Observer::start(broker.port, "homeassistant/#").await;

    let mut first = Gateway::start_with(&broker.url(), configure(&["gate", "old"]));
    let gate = discovery_config(&mut ha, &switch("gate")).await;
    assert_eq!(gate["command_topic"], first.topic("output/gate/set"));
    assert_eq!(gate["availability_topic"], first.topic("status"));
    let old = ha.next_on(&switch("old")).await;
    assert!(!old.payload.is_empty());
    drop(first.stop.take());
    let _ = timeout(WAIT, &mut first.task).await;

    // The same device without `old`: its entity is removed with an empty retained config.
    let second = Gateway::start_with(&broker.url(), configure(&["gate"]));
    let removed = ha.next_on(&switch("old")).await;
    assert!(
        removed.payload.is_empty(),
        "the stale entity must be cleared"
    );
    let mut late = Observer::start(broker.port, &format!("homeassistant/+/gsmgw_{device}/#")).await;
    let retained = late.next_on(&switch("gate")).await;
    assert!(retained.retain);

    // Home Assistant restarts: its birth message brings the configs back.
    ha.publish("homeassistant/status", "online", false).await;
    let again = discovery_config(&mut ha, &switch("gate")).await;
    assert_eq!(again["unique_id"], format!("gsmgw_{device}_output_gate"));
    drop(second);
}

/// The next `Event::Mqtt` on the bus, bounded by WAIT.
async fn next_mqtt(
    events: &mut mpsc::UnboundedReceiver<Event>,
) -> Result<(String, Vec<u8>), tokio::time::error::Elapsed> {
    let wait = async {
        loop {
            if let Some(Event::Mqtt { topic, payload }) = events.recv().await {
                return (topic, payload);
            }
        }
    };
    timeout(WAIT, wait).await
}

#[tokio::test]
async fn script_subscriptions_reach_the_bus_and_survive_a_broker_restart() {
    let Some((mut broker, gw, _observer)) = setup().await else {
        return;
    };
    let mut events = gw.bus.subscribe();
    gw.handle.subscribe("rules/+/cmd").await.expect("subscribe");
    assert!(gw.handle.subscribe("a/#/b").await.is_err());
    // The bridge's own publish goes out after its SUBSCRIBE on the same connection, so once
    // it comes back the subscription stands.
    gw.handle
        .publish("rules/self/cmd", b"me".to_vec(), false)
        .await
        .expect("publish");
    let got = next_mqtt(&mut events).await;
    assert_eq!(
        got.ok(),
        Some(("rules/self/cmd".to_string(), b"me".to_vec()))
    );
    let observer = Observer::start(broker.port, &gw.topic("status")).await;
    observer
        .publish(&gw.topic("rules/night/cmd"), "go", false)
        .await;
    let got = next_mqtt(&mut events).await;
    assert_eq!(
        got.ok(),
        Some(("rules/night/cmd".to_string(), b"go".to_vec()))
    );

    broker.restart();
    let mut status = Observer::start(broker.port, &gw.topic("status")).await;
    status.wait_for(&gw.topic("status"), "online").await;
    // `online` follows the re-subscriptions on the same connection.
    status
        .publish(&gw.topic("rules/day/cmd"), "again", false)
        .await;
    let got = next_mqtt(&mut events).await;
    assert_eq!(
        got.ok(),
        Some(("rules/day/cmd".to_string(), b"again".to_vec()))
    );
}

#[tokio::test]
async fn on_demand_connects_when_asked_and_disconnects_when_idle() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let gw = Gateway::start_with(&broker.url(), |c| {
        c.mqtt.mode = MqttMode::OnDemand;
        c.mqtt.idle_disconnect_s = 1;
    });
    let mut observer = Observer::start(broker.port, &gw.topic("status")).await;
    assert!(!gw.handle.connected(), "disconnected until asked");
    let session = gw.handle.connect_for(0).await;
    assert_eq!(
        session.ok(),
        Some(format!("127.0.0.1:{} ID={}", broker.port, gw.client_id()))
    );
    // Nothing was retained before: the first status seen is this session's.
    let first = observer.next_on(&gw.topic("status")).await;
    assert_eq!(first.payload, "online");
    let idle = observer.next_on(&gw.topic("status")).await;
    assert_eq!(idle.payload, "offline", "dropped after the idle time");
    let clean = format!("Client {} disconnected.", gw.client_id());
    assert!(broker.wait_for_log(&clean), "{}", broker.log());
    // And again on the next request.
    assert!(gw.handle.connect_for(30).await.is_ok());
    observer.wait_for(&gw.topic("status"), "online").await;
}

#[tokio::test]
async fn an_on_demand_connect_to_a_dead_broker_reports_the_failure() {
    let port = Mosquitto::free_port();
    let gw = Gateway::start_with(&format!("mqtt://127.0.0.1:{port}"), |c| {
        c.mqtt.mode = MqttMode::OnDemand;
    });
    let result = timeout(WAIT, gw.handle.connect_for(10)).await;
    assert!(
        matches!(result, Ok(Err(mqtt::MqttError::Connect(_)))),
        "{result:?}"
    );
}

// Multi-threaded: the log is polled by blocking the test's thread while the bridge retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_reported_and_retried_and_right_ones_connect() {
    let Some(mosquitto_passwd) = [
        "/usr/bin/mosquitto_passwd",
        "/usr/local/bin/mosquitto_passwd",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).is_file()) else {
        return;
    };
    let Some(broker) = Mosquitto::start_with(|dir, _| {
        let file = dir.join("passwd");
        let status = std::process::Command::new(mosquitto_passwd)
            .args(["-c", "-b"])
            .arg(&file)
            .args(["gw", "right-password"])
            .status()
            .expect("mosquitto_passwd runs");
        assert!(status.success());
        format!("allow_anonymous false\npassword_file {}\n", file.display())
    }) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let password_file = dir.path().join("pw");
    std::fs::write(&password_file, "right-password\n").expect("write password file");
    let wrong = Gateway::start_with(&broker.url(), |c| {
        c.mqtt.username = Some("gw".into());
        c.mqtt.password = Some("wrong-password".into());
    });
    let err = timeout(WAIT, wrong.handle.connect_for(0))
        .await
        .expect("an answer in time")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("refused the login"), "{err}");
    assert!(err.contains("mqtt.password"), "says what to check: {err}");
    assert!(!err.contains("wrong-password"), "never the password: {err}");
    assert!(
        broker.wait_for_log_count("not authorised", 2),
        "tried again after the back-off:\n{}",
        broker.log()
    );

    let right = Gateway::start_with(&broker.url(), |c| {
        c.mqtt.username = Some("gw".into());
        c.mqtt.password_file = Some(password_file.clone());
    });
    let session = timeout(WAIT, right.handle.connect_for(0)).await;
    assert!(matches!(session, Ok(Ok(_))), "{session:?}");
}

/// A CA and a server certificate for localhost / 127.0.0.1, made with the openssl CLI.
fn make_certificates(dir: &std::path::Path) -> bool {
    let openssl = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .is_ok()
        && openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=gsmgw test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ])
        && openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ])
        && openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ])
}

#[tokio::test]
async fn tls_with_a_configured_ca_connects_and_a_wrong_ca_is_refused() {
    let tls_port = Mosquitto::free_port();
    let mut certs_made = false;
    let mut ca = std::path::PathBuf::new();
    let Some(broker) = Mosquitto::start_with(|dir, _| {
        certs_made = make_certificates(dir);
        ca = dir.join("ca.pem");
        if !certs_made {
            return String::new();
        }
        for f in ["server.key", "server.pem", "ca.pem"] {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644));
        }
        format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            dir.join("ca.pem").display(),
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        )
    }) else {
        return;
    };
    if !certs_made {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "openssl is needed on CI"
        );
        eprintln!("openssl not available: skipping");
        return;
    }
    let gw = Gateway::start_with(&format!("mqtts://localhost:{tls_port}"), |c| {
        c.mqtt.ca_file = Some(ca.clone());
    });
    let session = timeout(WAIT, gw.handle.connect_for(0)).await;
    assert!(
        matches!(session, Ok(Ok(_))),
        "{session:?}\n{}",
        broker.log()
    );
    // Seen from the plain listener: the TLS bridge is online.
    let mut observer = Observer::start(broker.port, &gw.topic("status")).await;
    observer.wait_for(&gw.topic("status"), "online").await;

    // Another CA does not vouch for this server.
    let other = tempfile::tempdir().expect("temp dir");
    assert!(make_certificates(other.path()));
    let untrusting = Gateway::start_with(&format!("mqtts://localhost:{tls_port}"), |c| {
        c.mqtt.ca_file = Some(other.path().join("ca.pem"));
    });
    let refused = timeout(WAIT, untrusting.handle.connect_for(0)).await;
    assert!(matches!(refused, Ok(Err(_))), "{refused:?}");
}

#[tokio::test]
async fn two_gateways_do_not_interfere_and_a_send_group_shares_each_request_once() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let group = unique("grp");
    let mut a = Gateway::start_with(&broker.url(), |c| c.mqtt.send_group = Some(group.clone()));
    let mut b = Gateway::start_with(&broker.url(), |c| c.mqtt.send_group = Some(group.clone()));
    let mut observer = Observer::start(broker.port, "test/#").await;
    observer.wait_for(&a.topic("status"), "online").await;
    observer.wait_for(&b.topic("status"), "online").await;

    // Each gateway's own topics reach only it.
    observer
        .publish(&a.topic("output/relay/set"), "ON", false)
        .await;
    observer
        .publish(&b.topic("output/relay/set"), "OFF", false)
        .await;
    let on = |on| Command::SetOutput {
        name: "relay".into(),
        action: OutputAction::Set { on, duration: None },
    };
    assert_eq!(a.next_command().await, on(true));
    assert_eq!(b.next_command().await, on(false));

    const REQUESTS: usize = 100;
    for n in 0..REQUESTS {
        let request = json!({"to":"+447700900123","text":"fleet","id":format!("f{n}")});
        observer
            .publish("test/fleet/sms/send", request.to_string(), false)
            .await;
    }
    // A marker after the requests on each gateway's own topic: whatever comes before it on
    // a channel is all that gateway took.
    observer
        .publish(&a.topic("output/end/set"), "ON", false)
        .await;
    observer
        .publish(&b.topic("output/end/set"), "ON", false)
        .await;
    let mut taken = Vec::new();
    for gw in [&mut a, &mut b] {
        loop {
            match gw.next_command().await {
                Command::SendSms { request_id, .. } => taken.push(request_id.unwrap_or_default()),
                Command::SetOutput { name, .. } if name == "end" => break,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    taken.sort();
    let mut expected: Vec<String> = (0..REQUESTS).map(|n| format!("f{n}")).collect();
    expected.sort();
    assert_eq!(taken, expected, "each request taken by exactly one gateway");
}

#[tokio::test]
async fn notify_targets_become_notify_entities() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let gw = Gateway::start_with(&broker.url(), |c| {
        c.mqtt.notify = vec![NotifyTarget {
            name: "owner".into(),
            number: "+447700900123".into(),
        }]
    });
    let device = gw.prefix.trim_start_matches("test/").to_string();
    let topic = format!("homeassistant/notify/gsmgw_{device}/sms_owner/config");
    let mut ha = Observer::start(broker.port, &topic).await;
    let config = json_of(&ha.next_on(&topic).await);
    assert_eq!(config["command_topic"], gw.topic("sms/send"));
}
