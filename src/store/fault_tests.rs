//! A damaged, full, locked, read-only or vanished file: each gives its own error with help,
//! and the ones the store cannot go on with stop the store thread.

use std::time::Duration;

use rusqlite::OpenFlags;

use super::*;

fn open_with_rows(path: &Path, rows: usize) -> Store {
    let mut store = Store::open(path, SmsConfig::default()).expect("a new store opens");
    for i in 0..rows {
        let msg = NewInboxSms {
            pdu_hash: format!("hash-{i}"),
            from: "+447700900123".into(),
            text: format!("message {i} {}", "x".repeat(400)),
            sent_at: None,
            incomplete: false,
        };
        store.inbox_insert(&msg).expect("insert");
    }
    store
}

#[test]
fn a_damaged_page_is_found_at_start_and_called_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gsmgw.db");
    // Closing checkpoints the WAL, so every page is in the main file.
    drop(open_with_rows(&path, 200));
    let page_size = 4096;
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 8 * page_size, "the file spans many pages");
    // Page 1 (the header) stays intact: the damage is inside, where only a check sees it.
    for b in &mut bytes[3 * page_size..5 * page_size] {
        *b = 0xA5;
    }
    let copy = dir.path().join("damaged.db");
    std::fs::write(&copy, &bytes).unwrap();
    let err = Store::open(&copy, SmsConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.starts_with("the store is corrupt: "), "{message}");
    assert!(message.contains("README \"Store recovery\""), "{message}");
}

#[test]
fn a_full_disk_is_called_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_with_rows(&dir.path().join("gsmgw.db"), 1);
    // The file may not grow beyond its current pages: what a full disk looks like to SQLite.
    let pages: i64 = store
        .conn
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .unwrap();
    let _: i64 = store
        .conn
        .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |row| {
            row.get(0)
        })
        .unwrap();
    let big = "y".repeat(64 * 1024);
    let err = store
        .outbox_insert("+447700900123", &big, None, Utc::now())
        .unwrap_err();
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("the store's disk is full (help: "),
        "{err}"
    );
    assert!(err.health_problem().is_some() && !err.is_fatal());
}

#[test]
fn a_lock_held_by_another_process_is_called_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gsmgw.db");
    let mut store = open_with_rows(&path, 1);
    store.conn.busy_timeout(Duration::from_millis(50)).unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let err = store.kv_set("rule:x", "k", Some("1")).unwrap_err();
    assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("the store is locked by another process (help: "),
        "{err}"
    );
    other.execute_batch("COMMIT").unwrap();
    store
        .kv_set("rule:x", "k", Some("1"))
        .expect("the lock is gone");
}

#[test]
fn a_file_opened_read_only_is_called_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gsmgw.db");
    drop(open_with_rows(&path, 1));
    // What a read-only mount or a file gsmgw may not write gives (chmod does not stop root).
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let err = match Store::init(conn, &path, SmsConfig::default()) {
        Ok(mut store) => store.kv_set("rule:x", "k", Some("1")).unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("the store is read-only (help: "),
        "{err}"
    );
}

/// Damages every page but the header of a file that a running store has open, and makes
/// the store read them from disk again: what a failing SD card does to a running gateway.
pub(crate) fn damage_under_a_running_store(path: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let page_size = 4096;
    let len = std::fs::metadata(path).unwrap().len();
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(page_size)).unwrap();
    let garbage = vec![0xA5u8; usize::try_from(len - page_size).unwrap()];
    file.write_all(&garbage).unwrap();
    file.sync_all().unwrap();
    // A write by another connection (to the header page only) tells every connection that
    // its page cache is stale, so the next read goes to the damaged file.
    let other = Connection::open(path).unwrap();
    other.execute_batch("PRAGMA user_version = 7").unwrap();
}

#[tokio::test]
async fn a_file_damaged_while_open_stops_the_store_thread_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gsmgw.db");
    // Closed once so that every page is in the main file, not the WAL.
    drop(open_with_rows(&path, 20));
    let (store, thread) = spawn(Store::open(&path, SmsConfig::default()).unwrap());
    let health = store.health();
    damage_under_a_running_store(&path);
    let err = store.output_state_set("relay", true).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    tokio::time::timeout(Duration::from_secs(10), store.closed())
        .await
        .expect("the store thread ends");
    let seen = health.borrow().clone();
    assert!(seen.fatal, "{seen:?}");
    assert!(
        seen.problem
            .as_deref()
            .is_some_and(|p| p.starts_with("the store is corrupt: ")),
        "{seen:?}"
    );
    assert!(matches!(store.ping().await, Err(StoreError::Closed)));
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .unwrap()
        .expect("the thread ended without a panic");
}

#[tokio::test]
async fn health_reports_a_lock_and_clears_when_a_write_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gsmgw.db");
    let (store, _thread) = spawn(open_with_rows(&path, 1));
    let mut health = store.health();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // Busy for the store's 5 s busy timeout: a lock is a problem that passes.
    let err = store.kv_set("rule:x", "k", Some("1")).await.unwrap_err();
    assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
    assert!(health.borrow_and_update().problem.is_some());
    other.execute_batch("COMMIT").unwrap();
    store.kv_set("rule:x", "k", Some("1")).await.unwrap();
    let now = health.borrow_and_update().clone();
    assert_eq!(now, StoreHealth::default());
}
