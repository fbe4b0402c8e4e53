//! End to end: the gate-opener use case through every layer — the simulated modem on a pty,
//! the driver, the store, the Lua plugin, simulated GPIO and a real Mosquitto broker.
//!
//! The simulated modem runs as a blocking task, which keeps tokio's paused clock from
//! advancing by itself: time moves only when a test calls `tokio::time::advance`, so the
//! relay's pulse length is checked exactly. Waits for real I/O are bounded by a wall-clock
//! deadline instead of a tokio timeout (which would never fire on a paused clock).

#[path = "support/gateway.rs"]
mod gateway;
#[path = "support/mosquitto.rs"]
mod mosquitto;
#[path = "support/wait.rs"]
mod wait;

use std::time::Duration;

use gateway::Rig;
use gsmgw::modem::profiles::PROFILES;
use gsmgw::modem::sim::{SimConfig, SimEvent};
use tokio::sync::mpsc;
use wait::within;

const MASTER: &str = "+447700900123";
const USER_NATIONAL: &str = "07700900456";
const USER: &str = "+447700900456";
const STRANGER: &str = "+447700900999";

async fn start(mqtt_port: Option<u16>) -> Rig {
    let section = format!(
        r#"
[plugins.call_reject_conn]
relay = "relay"
input = "door"
master = "{MASTER}"
"#
    );
    gateway::start(&["call_reject_conn"], &section, mqtt_port).await
}

#[tokio::test(start_paused = true)]
async fn master_status_is_answered_and_a_stranger_gets_nothing() {
    let mut rig = start(None).await;
    // The stranger's message is handled first; if it got a reply, that reply would be the
    // first SMS out.
    rig.sim.inject_sms(STRANGER, "STATUS");
    rig.sim.inject_sms(MASTER, "STATUS");
    let (to, text) = rig.next_sms().await;
    assert_eq!(to, MASTER);
    assert_eq!(text, "RELAY OPEN INPUT LOW");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_users_call_is_rejected_and_pulses_the_relay_seen_on_mqtt() {
    let Some(broker) = mosquitto::Mosquitto::start() else {
        return;
    };
    let mut rig = start(Some(broker.port)).await;

    let mut opts = rumqttc::MqttOptions::new("observer", "127.0.0.1", broker.port);
    opts.set_keep_alive(Duration::from_secs(60));
    let (client, mut mqtt) = rumqttc::AsyncClient::new(opts, 16);
    client
        .subscribe("gsmgw/gate/output/relay", rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (relay_tx, mut relay) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok(ev) = mqtt.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = ev {
                let _ = relay_tx.send(String::from_utf8_lossy(&p.payload).into_owned());
            }
        }
    });
    // The retained state published at start: the relay is off.
    let first = within(20, "the retained relay state", relay.recv()).await;
    assert_eq!(first.as_deref(), Some("OFF"));

    // Configure by SMS with confirmations on, so each step is known to be done.
    for cmd in [
        "TEXTRES ENABLE",
        &format!("ADD {USER_NATIONAL}"),
        "REJECT ALL",
    ] {
        rig.sim.inject_sms(MASTER, cmd);
        let (to, _) = rig.next_sms().await;
        assert_eq!(to, MASTER);
    }

    rig.sim.ring(Some(USER));
    let commands = within(20, "the call to be rejected", async {
        let mut seen = Vec::new();
        loop {
            match rig.sim_events.recv().await {
                Some(SimEvent::Command(c)) => seen.push(c),
                Some(SimEvent::CallRejected) => return seen,
                Some(_) => {}
                None => panic!("the simulated modem stopped"),
            }
        }
    })
    .await;
    assert!(
        commands.iter().any(|c| c == "AT+CHUP"),
        "commands seen: {commands:?}"
    );

    let on = within(20, "relay ON on MQTT", relay.recv()).await;
    assert_eq!(on.as_deref(), Some("ON"));
    // RLYTIME defaults to 3 s: nothing may change before it has passed.
    tokio::time::advance(Duration::from_millis(2900)).await;
    let gpio = &rig.gateway.handles.gpio;
    assert!(
        gpio.output("relay").await.expect("relay exists"),
        "the relay went off before RLYTIME"
    );
    tokio::time::advance(Duration::from_millis(200)).await;
    let off = within(20, "relay OFF on MQTT", relay.recv()).await;
    assert_eq!(off.as_deref(), Some("OFF"));

    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_gate_opener_works_on_every_modem_profile() {
    for profile in PROFILES.iter().filter(|p| p.voice) {
        let section = format!(
            "[plugins.call_reject_conn]\nrelay = \"relay\"\ninput = \"door\"\nmaster = \"{MASTER}\"\n"
        );
        let sim = SimConfig {
            profile,
            ..SimConfig::default()
        };
        let mut rig = gateway::start_with(&["call_reject_conn"], &section, None, sim).await;
        for cmd in [
            "TEXTRES ENABLE",
            &format!("ADD {USER_NATIONAL}"),
            "REJECT ALL",
        ] {
            rig.sim.inject_sms(MASTER, cmd);
            let (to, _) = rig.next_sms().await;
            assert_eq!(to, MASTER, "{}", profile.id);
        }
        rig.drain_sim_events();
        rig.sim.ring(Some(USER));
        within(20, "the call to be rejected", async {
            loop {
                match rig.sim_events.recv().await {
                    Some(SimEvent::CallRejected) => return,
                    Some(_) => {}
                    None => panic!("the simulated modem stopped"),
                }
            }
        })
        .await;
        let gpio = &rig.gateway.handles.gpio;
        let on = within(20, "the relay to switch on", async {
            loop {
                if gpio.output("relay").await.expect("relay exists") {
                    return true;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(on, "{}", profile.id);
        rig.stop().await;
    }
}
