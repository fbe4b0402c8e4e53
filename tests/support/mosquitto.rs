//! A real Mosquitto broker for integration tests, on a free loopback port, killed on drop.
//!
//! Include it with `#[path = "support/mosquitto.rs"] mod mosquitto;`. When Mosquitto is not
//! installed the tests that need it skip, except on CI (`CI=true`), where they must fail.
#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long Mosquitto may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running Mosquitto.
pub struct Mosquitto {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    binary: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
}

fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("mosquitto"))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

impl Mosquitto {
    /// Starts Mosquitto on a free port, or returns `None` (after saying so) when it is not
    /// installed. Panics when it is not installed on CI.
    pub fn start() -> Option<Mosquitto> {
        Self::start_with(|_, _| String::new())
    }

    /// Like [`Mosquitto::start`], with more configuration: `extra(dir, port)` may write files
    /// into Mosquitto's temp dir and returns lines for its config (which then replace
    /// `allow_anonymous true` when they mention `allow_anonymous`).
    pub fn start_with(extra: impl FnOnce(&Path, u16) -> String) -> Option<Mosquitto> {
        let Some(binary) = find_binary() else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("mosquitto not installed: the MQTT tests need it on CI (apt-get install mosquitto)");
            }
            eprintln!("mosquitto not installed: skipping");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir for mosquitto");
        // Run as root, Mosquitto drops to its own user, which must read the files written here.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755));
        }
        let port = free_port();
        // The log goes to stderr, which we write to a file: run as root, Mosquitto drops to
        // its own user and could not open a file in our temp dir.
        let extra = extra(dir.path(), port);
        let anonymous = if extra.contains("allow_anonymous") {
            ""
        } else {
            "allow_anonymous true\n"
        };
        let config = format!(
            "per_listener_settings false\nlistener {port} 127.0.0.1\n{anonymous}persistence false\nlog_dest stderr\n{extra}"
        );
        std::fs::write(dir.path().join("mosquitto.conf"), config).expect("write mosquitto.conf");
        let child = spawn(&binary, dir.path());
        let mut mosquitto = Mosquitto {
            port,
            binary,
            child,
            dir,
        };
        mosquitto.wait_until_ready();
        Some(mosquitto)
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Kills Mosquitto (abruptly: no goodbye to clients) and starts it again on the same port.
    /// Retained messages are lost (persistence is off), as after a broker crash.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(&self.binary, self.dir.path());
        self.wait_until_ready();
    }

    /// Kills Mosquitto and waits until it is gone.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What Mosquitto logged, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// A free port for a second listener.
    pub fn free_port() -> u16 {
        free_port()
    }

    /// Waits (bounded) until Mosquitto's log contains `needle`; false if it never does.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        self.wait_for_log_count(needle, 1)
    }

    /// Waits (bounded) until Mosquitto's log contains `needle` `count` times.
    pub fn wait_for_log_count(&self, needle: &str, count: usize) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        while self.log().matches(needle).count() < count {
            if Instant::now() >= deadline {
                return false;
            }
            // A bounded poll: the log file is the only view into what Mosquitto decided.
            std::thread::sleep(POLL_INTERVAL);
        }
        true
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mosquitto exited with {status}:\n{}", self.log());
            }
            if Instant::now() >= deadline {
                panic!(
                    "mosquitto not accepting on port {} after {READY_TIMEOUT:?}:\n{}",
                    self.port,
                    self.log()
                );
            }
            // A bounded poll for the listener to appear: Mosquitto gives no readiness signal.
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

fn spawn(binary: &Path, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("mosquitto.log"))
        .expect("open mosquitto.log");
    Command::new(binary)
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn mosquitto")
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Generous: a reconnect after a broker restart waits for the bridge's back-off (1–2 s).
pub const WAIT: Duration = Duration::from_secs(15);

pub fn unique(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A client that sees everything under a filter.
pub struct Observer {
    pub client: AsyncClient,
    pub received: mpsc::UnboundedReceiver<Publish>,
    _task: JoinHandle<()>,
}

impl Observer {
    /// Connects, subscribes to `filter` and returns once the subscription is acknowledged.
    pub async fn start(port: u16, filter: &str) -> Observer {
        let mut options = MqttOptions::new(unique("observer"), "127.0.0.1", port);
        options.set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        // As Home Assistant's client (paho) does: otherwise each command waits behind the
        // PUBACK before it for a delayed ACK, and the benches measure Nagle, not the gateway.
        eventloop.set_network_options(gsmgw::mqtt::network_options());
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
    pub async fn next_on(&mut self, topic: &str) -> Publish {
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
    pub async fn wait_for(&mut self, topic: &str, payload: &str) -> Publish {
        loop {
            let p = self.next_on(topic).await;
            if p.payload == payload.as_bytes() {
                return p;
            }
        }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .expect("observer publish");
    }
}
