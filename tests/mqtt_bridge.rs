//! The MQTT bridge against a real Mosquitto, observed by a plain rumqttc client.

#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use gsmgw::bus::{Bus, Call, Command, Event, IncomingSms, OutputAction};
use gsmgw::config::{Config, MqttConfig};
use gsmgw::mqtt::{self, MqttHandle};
use mosquitto::Mosquitto;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, Publish, QoS};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Generous: a reconnect after a broker restart waits for the bridge's back-off (1–2 s).
const WAIT: Duration = Duration::from_secs(15);

fn unique(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A client that sees everything under a filter.
struct Observer {
    client: AsyncClient,
    received: mpsc::UnboundedReceiver<Publish>,
    _task: JoinHandle<()>,
}

impl Observer {
    /// Connects, subscribes to `filter` and returns once the subscription is acknowledged.
    async fn start(port: u16, filter: &str) -> Observer {
        let mut options = MqttOptions::new(unique("observer"), "127.0.0.1", port);
        options.set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let (tx, received) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed_rx) = oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let subscriber = client.clone();
        let filter = filter.to_string();
        let task = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                match event {
                    MqttEvent::Incoming(Packet::ConnAck(_)) => {
                        let _ = subscriber.try_subscribe(filter.as_str(), QoS::AtLeastOnce);
                    }
                    MqttEvent::Incoming(Packet::SubAck(_)) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    MqttEvent::Incoming(Packet::Publish(p)) => {
                        let _ = tx.send(p);
                    }
                    _ => {}
                }
            }
        });
        timeout(WAIT, subscribed_rx)
            .await
            .expect("observer subscribed in time")
            .expect("observer task alive");
        Observer {
            client,
            received,
            _task: task,
        }
    }

    /// The next message on `topic` (others are skipped).
    async fn next_on(&mut self, topic: &str) -> Publish {
        let wait = async {
            loop {
                let p = self
                    .received
                    .recv()
                    .await
                    .expect("observer connection alive");
                if p.topic == topic {
                    return p;
                }
            }
        };
        timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("nothing on {topic} within {WAIT:?}"))
    }

    /// Waits for `payload` on `topic`, skipping other payloads there.
    async fn wait_for(&mut self, topic: &str, payload: &str) -> Publish {
        loop {
            let p = self.next_on(topic).await;
            if p.payload == payload.as_bytes() {
                return p;
            }
        }
    }

    async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .expect("observer publish");
    }
}

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
        let (handle, task) =
            mqtt::spawn(&cfg, &bus, commands_tx, shutdown).expect("bridge starts");
        Gateway {
            prefix: cfg.mqtt.topic_prefix(&device),
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
    let Some((broker, gw, _observer)) = setup().await else {
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
    };
    gw.bus.publish(Event::SmsReceived(sms));
    gw.bus
        .publish(Event::CallRinging(Call { id: 1, from: None }));
    let received = observer.next_on(&gw.topic("sms/received")).await;
    assert!(!received.retain);
    assert_eq!(received.qos, QoS::AtLeastOnce);
    assert_eq!(
        json_of(&received),
        json!({"event_type":"received","from":"+447700900123","text":"OPEN","time":null,"id":12})
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
    let (_handle, _task) = mqtt::spawn(&cfg, &gw.bus, commands_tx, std::future::pending())
        .expect("bridge starts");
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
            request_id: Some("r1".into())
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
