//! Secrets stay secret (issue 11.8), from the attacker's side: after an SMS that changes a
//! password, neither the old nor the new password is in the bytes of the database files (db,
//! -wal, -shm), in the logs at any level (trace included), or in any MQTT payload; the store's
//! files are private (0600); config errors do not show the line's text; `mqtt.url` userinfo is
//! redacted.
//!
//! The passwords have letters past `f`, so they can never appear inside the hex of a PDU that
//! the modem traffic logs at trace level: any match is a real leak.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use gsmgw::modem::sim::SimEvent;

use crate::host_rig;
use crate::mosquitto::{Mosquitto, Observer};
use crate::wait::next_matching;

const OLD: &str = "hunterOldqz";
const NEW: &str = "wizardNewqz";
const MASTER: &str = "+447700900123";

/// A password-comma style plugin: `<old>,pwd=<new>` changes the password, which it keeps
/// hashed; both are marked secret, right or wrong.
const PASSWORD_PLUGIN: &str = r#"
return {
  sms = function(msg)
    local old, new = msg.text:match("^(%w+),pwd=(%w+)$")
    if not old then return false end
    gw.sms.secret(old)
    gw.sms.secret(new)
    if not gw.auth.verify(old, gw.store.get("pwd") or "hunterOldqz") then
      gw.auth.fail(msg.from)
      return true
    end
    gw.store.set("pwd", gw.auth.hash(new))
    gw.sms.reply("PASSWORD CHANGED")
    return true
  end,
}"#;

/// Every log line of this test binary, at every level.
fn captured() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(Arc::clone(&buffer));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("this test binary installs the only global subscriber");
        buffer
    })
    .clone()
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The bytes of the store file and its -wal and -shm, those that exist.
fn store_bytes(db: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            std::fs::read(&p)
                .ok()
                .map(|b| (std::path::PathBuf::from(p).display().to_string(), b))
        })
        .collect()
}

fn assert_no_password(what: &str, bytes: &[u8]) {
    for secret in [OLD, NEW] {
        assert!(!contains(bytes, secret), "{what} contains {secret}");
    }
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn a_changed_password_is_nowhere_in_the_files_logs_or_mqtt() {
    let log = captured();
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let mut observer = Observer::start(broker.port, "#").await;
    let mut rig = host_rig::start(
        &[("pwd", PASSWORD_PLUGIN)],
        &[],
        Some(broker.port),
        "",
        |_| {},
    )
    .await;
    let db = host_rig::db_path(rig.dir.path());
    rig.sim.inject_sms(MASTER, &format!("{OLD},pwd={NEW}"));
    let (to, text) = next_matching(&mut rig.sim_events, 20, "the reply", |ev| match ev {
        SimEvent::SmsSent { to, text, .. } => Some((to, text)),
        _ => None,
    })
    .await;
    assert_eq!((to.as_str(), text.as_str()), (MASTER, "PASSWORD CHANGED"));
    // The wrong old password now: marked and counted, and masked like the right one.
    rig.sim.inject_sms(MASTER, &format!("{OLD},pwd=x{NEW}"));
    let mut received = Vec::new();
    let topic = "gsmgw/sec/sms/received";
    for _ in 0..2 {
        let p = observer.next_on(topic).await;
        received.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    assert!(
        received[0].contains(r#""text":"***,pwd=***""#),
        "{received:?}"
    );
    assert!(
        received[1].contains(r#""text":"***,pwd=***""#),
        "{received:?}"
    );

    #[cfg(unix)]
    for (file, _) in store_bytes(&db) {
        assert_eq!(mode(std::path::Path::new(&file)), 0o600, "{file}");
    }
    for (file, bytes) in store_bytes(&db) {
        assert_no_password(&file, &bytes);
    }
    rig.stop().await;
    for (file, bytes) in store_bytes(&db) {
        assert_no_password(&format!("{file} after the stop"), &bytes);
    }
    // Every payload the broker carried, retained ones included.
    while let Ok(p) = observer.received.try_recv() {
        assert_no_password(&format!("MQTT {}", p.topic), &p.payload);
    }
    let log = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        contains(&log, "SMS handled") && contains(&log, "***,pwd=***"),
        "the log is captured at trace level, with the masked text"
    );
    assert_no_password("the log", &log);
}

#[test]
fn a_new_store_and_its_log_files_are_private() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("new.db");
    let mut store = gsmgw::store::Store::open(&path, Default::default()).expect("store");
    store
        .kv_set("s", "k", Some("1"))
        .expect("a write creates the log");
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        assert_eq!(mode(std::path::Path::new(&p)), 0o600, "{suffix}");
    }
}

#[cfg(unix)]
#[test]
fn an_existing_world_readable_store_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("old.db");
    drop(gsmgw::store::Store::open(&path, Default::default()).expect("store"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    drop(gsmgw::store::Store::open(&path, Default::default()).expect("store"));
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn gsmgw_check_never_shows_a_secret_line_or_url_credentials() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("gsmgw.toml");
    for (text, key) in [
        (
            "[plugins.pwd]\npassword = \"hunterOldqz\n",
            "plugins.pwd.password",
        ),
        ("[alarm]\ncode = [\"hunterOldqz\"]\n", "alarm.code"),
        (
            "[mqtt]\nenabled = true\nurl = \"mqtt://u:hunterOldqz@broker:1883\"\n",
            "mqtt.url",
        ),
    ] {
        std::fs::write(&path, text).expect("write");
        let report = gsmgw::app::check(&path);
        let problems = report.problems.join("\n");
        assert!(problems.contains(key), "{key}: {problems}");
        assert!(!problems.contains(OLD), "{problems}");
    }
}
