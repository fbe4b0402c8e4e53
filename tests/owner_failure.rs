//! Supervision of the real binary: when an owner task cannot go on, `gsmgw run` says which and
//! why and exits non-zero, so that systemd restarts it, instead of running on with a dead
//! resource. The fault is a real one: the database file is damaged under the running gateway,
//! as a failing SD card does, and the next SMS makes the store read it.

#[path = "support/wait.rs"]
mod wait;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use gsmgw::config::SmsConfig;
use gsmgw::modem::sim::{SimConfig, SimEvent, SimModem};
use gsmgw::store::{NewInboxSms, Store};
use wait::{next_matching, within};

fn write_config(dir: &Path, port: &Path) -> std::path::PathBuf {
    let config = format!(
        r#"
[gateway]
device_id = "supervised"
country_code = "44"
[modem]
port = "{port}"
[gpio]
backend = "sim"
[store]
path = "{db}"
[lua]
plugins_dir = "{dir}"
plugins = []
hot_reload = false
[mqtt]
enabled = false
"#,
        port = port.display(),
        db = dir.join("gsmgw.db").display(),
        dir = dir.display(),
    );
    let path = dir.join("gsmgw.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

/// A store with some history, closed so that every page is in the main file (not the WAL).
fn store_with_history(path: &Path) {
    let mut store = Store::open(path, SmsConfig::default()).expect("store opens");
    for i in 0..50 {
        let msg = NewInboxSms {
            pdu_hash: format!("old-{i}"),
            from: "+447700900123".into(),
            text: format!("old message {i} {}", "x".repeat(300)),
            sent_at: None,
            incomplete: false,
        };
        store.inbox_insert(&msg).expect("insert");
        store.inbox_mark_delivered(i + 1).expect("mark");
    }
}

/// Overwrites every page but the header with garbage, then writes the header through another
/// connection, which tells the gateway's connection that its page cache is stale.
fn damage(path: &Path) {
    const PAGE: u64 = 4096;
    let len = std::fs::metadata(path).expect("db exists").len();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open db");
    file.seek(SeekFrom::Start(PAGE)).expect("seek");
    let garbage = vec![0xA5u8; usize::try_from(len - PAGE).expect("fits")];
    file.write_all(&garbage).expect("write garbage");
    file.sync_all().expect("sync");
    let other = rusqlite::Connection::open(path).expect("second connection");
    other
        .execute_batch("PRAGMA user_version = 7")
        .expect("header write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_finds_its_file_damaged_stops_the_gateway_with_the_reason() {
    let (sim, mut events) = SimModem::start(SimConfig::default()).expect("sim modem starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("gsmgw.db");
    store_with_history(&db);
    let config = write_config(dir.path(), sim.path());
    let child = Command::new(env!("CARGO_BIN_EXE_gsmgw"))
        .args(["run", "-c"])
        .arg(&config)
        .env("GSMGW_LOG", "gsmgw=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gsmgw starts");
    // The start-up sweep: the gateway is up and has read its store.
    next_matching(&mut events, 30, "the start-up sweep", |ev| match ev {
        SimEvent::Command(c) if c.starts_with("AT+CMGL=4") => Some(()),
        _ => None,
    })
    .await;
    damage(&db);
    sim.inject_sms("+447700900123", "this SMS cannot be stored");
    let output = within(
        30,
        "the gateway to exit",
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("join")
    .expect("wait for the gateway");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    // SQLite reports garbage pages as corruption; a torn read of them may come as an I/O
    // error: both stop the store, and the message says which.
    assert!(
        stderr.contains("the store task stopped: the store is corrupt")
            || stderr.contains("the store task stopped: disk I/O error on the store"),
        "{stderr}"
    );
    // The SMS was not lost: it is still on the SIM, where the restarted gateway finds it.
    assert_eq!(sim.stored_sms(), 1, "{stderr}");
}
