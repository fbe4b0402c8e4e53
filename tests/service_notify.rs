//! The systemd notifications, sent to a fake `NOTIFY_SOCKET` (a datagram socket in a temp
//! dir, which is all systemd's end is).
//!
//! `NOTIFY_SOCKET` and `WATCHDOG_*` are process-wide, so the tests in this file take turns
//! (`ENV`); no other test binary sets them.

use std::path::Path;
use std::time::Duration;

use gsmgw::service;
use tokio::net::UnixDatagram;
use tokio::sync::Mutex;

static ENV: Mutex<()> = Mutex::const_new(());

/// Binds a fake notify socket in `dir` and points `NOTIFY_SOCKET` at it.
fn fake_systemd(dir: &Path) -> UnixDatagram {
    let path = dir.join("notify");
    let sock = UnixDatagram::bind(&path).expect("bind the fake notify socket");
    std::env::set_var("NOTIFY_SOCKET", &path);
    sock
}

fn leave_systemd() {
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        std::env::remove_var(var);
    }
}

async fn next_message(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(30), sock.recv(&mut buf))
        .await
        .expect("a notification within 30 s")
        .expect("recv");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn ready_stopping_and_status_reach_the_notify_socket() {
    let _env = ENV.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = fake_systemd(dir.path());
    assert!(service::under_systemd());

    service::ready();
    let msg = next_message(&sock).await;
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");

    service::status("modem registered on Vodafone, signal -71 dBm");
    let msg = next_message(&sock).await;
    assert_eq!(msg, "STATUS=modem registered on Vodafone, signal -71 dBm\n");

    service::stopping();
    let msg = next_message(&sock).await;
    assert!(msg.lines().any(|l| l == "STOPPING=1"), "{msg:?}");
    leave_systemd();
}

#[tokio::test]
async fn without_systemd_notifications_do_nothing() {
    let _env = ENV.lock().await;
    leave_systemd();
    assert!(!service::under_systemd());
    assert_eq!(service::watchdog_period(), None);
    // No socket to send to: these must neither fail nor panic.
    service::ready();
    service::status("x");
    service::stopping();
}

#[tokio::test]
async fn the_watchdog_period_is_half_of_watchdog_usec() {
    let _env = ENV.lock().await;
    std::env::set_var("WATCHDOG_USEC", "30000000");
    std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
    assert_eq!(service::watchdog_period(), Some(Duration::from_secs(15)));
    // The watchdog is for another process (systemd sets WATCHDOG_PID to the main PID).
    std::env::set_var("WATCHDOG_PID", "1");
    assert_eq!(service::watchdog_period(), None);
    leave_systemd();
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_pings_while_the_loop_answers() {
    let _env = ENV.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = fake_systemd(dir.path());
    let (liveness, mut heartbeat) = service::liveness();
    tokio::spawn(async move {
        loop {
            heartbeat.probed().await;
            heartbeat.answer();
        }
    });
    let period = Duration::from_secs(15);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watchdog = tokio::spawn(service::watchdog(period, liveness, async {
        let _ = stop_rx.await;
    }));
    // The paused clock runs ahead whenever everything waits, so this takes no real time.
    for _ in 0..3 {
        assert_eq!(next_message(&sock).await, "WATCHDOG=1\n");
    }
    let _ = stop_tx.send(());
    watchdog.await.expect("the watchdog ends on shutdown");
    leave_systemd();
}

#[tokio::test(start_paused = true)]
async fn a_hung_loop_stops_the_watchdog_pings_until_it_answers_again() {
    let _env = ENV.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = fake_systemd(dir.path());
    let (liveness, mut heartbeat) = service::liveness();
    let (unhang_tx, unhang_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        // Hung from the start: holds the heartbeat but never comes round to answer.
        let _ = unhang_rx.await;
        loop {
            heartbeat.answer();
            heartbeat.probed().await;
        }
    });
    let period = Duration::from_secs(15);
    let watchdog = tokio::spawn(service::watchdog(period, liveness, std::future::pending()));

    // Four watchdog periods (two of systemd's WatchdogSec): no ping, and the status says why.
    let deadline = tokio::time::Instant::now() + period * 4;
    let mut during_hang = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(got) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
        let n = got.expect("recv");
        during_hang.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(
        during_hang,
        vec!["STATUS=not responding: the script loop did not answer\n".to_string()],
        "no WATCHDOG=1 while the loop is hung"
    );
    // Only WATCHDOG=1 counts; status lines may say that the loop is not responding.
    let _ = unhang_tx.send(());
    loop {
        let msg = next_message(&sock).await;
        if msg == "WATCHDOG=1\n" {
            break;
        }
        assert!(msg.starts_with("STATUS="), "{msg:?}");
    }
    watchdog.abort();
    leave_systemd();
}
