//! End to end: the gate-opener use case through every layer — the simulated modem on a pty,
//! the driver, the store, the Lua plugin, simulated GPIO and a real Mosquitto broker.
//!
//! The simulated modem runs as a blocking task, which keeps tokio's paused clock from
//! advancing by itself: time moves only when a test calls `tokio::time::advance`, so the
//! relay's pulse length is checked exactly. Waits for real I/O are bounded by a wall-clock
//! deadline instead of a tokio timeout (which would never fire on a paused clock).

#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::path::PathBuf;
use std::time::Duration;

use gsmgw::app::{self, Gateway, RunOptions};
use gsmgw::bus::Event;
use gsmgw::config::Config;
use gsmgw::gpio;
use gsmgw::modem::sim::{SimConfig, SimEvent, SimHandle, SimModem};
use tokio::sync::{mpsc, oneshot};

const MASTER: &str = "+447700900123";
const USER_NATIONAL: &str = "07700900456";
const USER: &str = "+447700900456";
const STRANGER: &str = "+447700900999";

/// Fails the test if `fut` does not finish within `secs` seconds of real time.
async fn within<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    let (tx, rx) = oneshot::channel::<()>();
    // A detached thread: the test does not wait for it to end.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        let _ = tx.send(());
    });
    tokio::select! {
        v = fut => v,
        _ = rx => panic!("timed out after {secs} s waiting for {what}"),
    }
}

fn config(sim: &SimHandle, dir: &std::path::Path, mqtt_port: Option<u16>) -> Config {
    let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins");
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
[inputs.door]
line = 27
[store]
path = "{db}"
[lua]
plugins_dir = "{plugins}"
plugins = ["call_reject_conn"]
hot_reload = false
[plugins.call_reject_conn]
relay = "relay"
input = "door"
master = "{MASTER}"
[mqtt]
enabled = {enabled}
url = "mqtt://127.0.0.1:{mqtt}"
"#,
        port = sim.path().display(),
        db = dir.join("gsmgw.db").display(),
        plugins = plugins.display(),
        enabled = mqtt_port.is_some(),
        mqtt = mqtt_port.unwrap_or(1),
    );
    Config::from_toml(&text, "test.toml").expect("test config is valid")
}

struct Rig {
    gateway: Gateway,
    sim: SimHandle,
    sim_events: mpsc::UnboundedReceiver<SimEvent>,
    _dir: tempfile::TempDir,
}

async fn start(mqtt_port: Option<u16>) -> Rig {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GSMGW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("gsmgw=warn")),
        )
        .with_test_writer()
        .try_init();
    let (sim, sim_events) = SimModem::start(SimConfig::default()).expect("sim modem starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(&sim, dir.path(), mqtt_port);
    let (backend, _sim_gpio) = gpio::sim_backend(&cfg);
    let gateway = app::start(
        cfg,
        RunOptions {
            gpio_backend: Some(backend),
        },
    )
    .await
    .expect("gateway starts");
    let mut rig = Rig {
        gateway,
        sim,
        sim_events,
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
    drain_commands(&mut rig.sim_events);
    rig
}

fn drain_commands(events: &mut mpsc::UnboundedReceiver<SimEvent>) {
    while events.try_recv().is_ok() {}
}

/// The next SMS the gateway sent, skipping other sim events.
async fn next_sms(events: &mut mpsc::UnboundedReceiver<SimEvent>) -> (String, String) {
    within(20, "an outgoing SMS", async {
        loop {
            match events.recv().await {
                Some(SimEvent::SmsSent { to, text, .. }) => return (to, text),
                Some(_) => continue,
                None => panic!("the simulated modem stopped"),
            }
        }
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn master_status_is_answered_and_a_stranger_gets_nothing() {
    let mut rig = start(None).await;
    // The stranger's message is handled first; if it got a reply, that reply would be the
    // first SMS out.
    rig.sim.inject_sms(STRANGER, "STATUS");
    rig.sim.inject_sms(MASTER, "STATUS");
    let (to, text) = next_sms(&mut rig.sim_events).await;
    assert_eq!(to, MASTER);
    assert_eq!(text, "RELAY OPEN INPUT LOW");
    rig.gateway.stop().await;
    rig.sim.stop();
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
        let (to, _) = next_sms(&mut rig.sim_events).await;
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

    rig.gateway.stop().await;
    rig.sim.stop();
}
