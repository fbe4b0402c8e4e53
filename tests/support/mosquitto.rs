//! A real Mosquitto broker for integration tests, on a free loopback port, killed on drop.
//!
//! Include it with `#[path = "support/mosquitto.rs"] mod mosquitto;`. When Mosquitto is not
//! installed the tests that need it skip, except on CI (`CI=true`), where they must fail.
#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        let Some(binary) = find_binary() else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("mosquitto not installed: the MQTT tests need it on CI (apt-get install mosquitto)");
            }
            eprintln!("mosquitto not installed: skipping");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir for mosquitto");
        let port = free_port();
        // The log goes to stderr, which we write to a file: run as root, Mosquitto drops to
        // its own user and could not open a file in our temp dir.
        let config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
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

    /// Waits (bounded) until Mosquitto's log contains `needle`; false if it never does.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.log().contains(needle) {
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
