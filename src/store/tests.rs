use std::time::Duration;

use chrono::{TimeZone, Utc};
use tempfile::TempDir;

use super::*;

fn limits() -> SmsConfig {
    SmsConfig {
        max_per_hour: 3,
        max_per_day: 5,
        max_per_recipient_per_hour: 2,
        max_per_recipient_per_day: 4,
        send_attempts: 3,
        priority_reserve: 0,
        ..SmsConfig::default()
    }
}

fn generous() -> SmsConfig {
    SmsConfig {
        max_per_hour: 1000,
        max_per_day: 1000,
        max_per_recipient_per_hour: 1000,
        max_per_recipient_per_day: 1000,
        send_attempts: 3,
        priority_reserve: 0,
        ..SmsConfig::default()
    }
}

struct TestFile {
    _dir: TempDir,
    path: PathBuf,
}

fn test_file() -> TestFile {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gsmgw.db");
    TestFile { _dir: dir, path }
}

fn sms(hash: &str, from: &str, text: &str) -> NewInboxSms {
    NewInboxSms {
        pdu_hash: hash.into(),
        from: from.into(),
        text: text.into(),
        sent_at: Some(
            FixedOffset::east_opt(3600)
                .unwrap()
                .with_ymd_and_hms(2024, 5, 1, 12, 0, 0)
                .unwrap(),
        ),
        incomplete: false,
    }
}

fn part(hash: &str, from: &str, reference: u16, total: u8, seq: u8, text: &str) -> NewPart {
    NewPart {
        pdu_hash: hash.into(),
        from: from.into(),
        reference,
        total,
        seq,
        text: text.into(),
        sent_at: None,
    }
}

fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, hour, minute, 0).unwrap()
}

// ---- opening and migrations ----

#[test]
fn opening_an_empty_file_applies_every_migration_once_and_reopening_changes_nothing() {
    let file = test_file();
    {
        let mut store = Store::open(&file.path, limits()).unwrap();
        store.kv_set("rule", "k", Some("1")).unwrap();
    }
    let store = Store::open(&file.path, limits()).unwrap();
    let versions: Vec<u32> = store
        .conn
        .prepare("SELECT version FROM schema_version ORDER BY version")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(versions, (1..=schema::latest_version()).collect::<Vec<_>>());
    let mut store = store;
    assert_eq!(store.kv_get("rule", "k").unwrap().as_deref(), Some("1"));
    let mode: String = store
        .conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode.to_ascii_lowercase(), "wal");
}

#[test]
fn a_file_from_a_newer_gsmgw_is_refused() {
    let file = test_file();
    drop(Store::open(&file.path, limits()).unwrap());
    let conn = Connection::open(&file.path).unwrap();
    conn.execute(
        "INSERT INTO schema_version (version) VALUES (?1)",
        [schema::latest_version() + 1],
    )
    .unwrap();
    drop(conn);
    let err = Store::open(&file.path, limits()).unwrap_err();
    assert!(
        matches!(&err, StoreError::NewerSchema { path, .. } if *path == file.path),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_sqlite_gives_an_error_naming_the_path() {
    let file = test_file();
    std::fs::write(
        &file.path,
        "this is not a database, it is a shopping list\n".repeat(100),
    )
    .unwrap();
    let err = Store::open(&file.path, limits()).unwrap_err();
    assert!(
        matches!(&err, StoreError::NotADatabase { path } if *path == file.path),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&file.path.display().to_string()),
        "{message}"
    );
}

#[test]
fn a_directory_in_place_of_the_file_gives_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(dir.path(), limits()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Open { path, .. } if path == dir.path()),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn opening_creates_the_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("var/lib/gsmgw/gsmgw.db");
    Store::open(&path, limits()).unwrap();
    assert!(path.exists());
}

#[test]
fn sms_writes_are_fully_synced_and_script_data_is_not() {
    let file = test_file();
    let mut store = Store::open(&file.path, limits()).unwrap();
    let synchronous = |store: &Store| -> i64 {
        store
            .conn
            .query_row("PRAGMA synchronous", [], |row| row.get(0))
            .unwrap()
    };
    store.kv_set("rule", "k", Some("1")).unwrap();
    assert_eq!(synchronous(&store), 1, "NORMAL for script data");
    store.inbox_insert(&sms("h", "+447700900001", "x")).unwrap();
    assert_eq!(synchronous(&store), 2, "FULL for the inbox");
}

// ---- inbox ----

#[test]
fn the_same_pdu_read_twice_is_a_duplicate_of_the_first_row() {
    let mut store = Store::open_in_memory(limits()).unwrap();
    let first = store
        .inbox_insert(&sms("h1", "+447700900001", "hello"))
        .unwrap();
    let InboxInsert::New(id) = first else {
        panic!("expected New, got {first:?}")
    };
    assert_eq!(
        store
            .inbox_insert(&sms("h1", "+447700900001", "hello"))
            .unwrap(),
        InboxInsert::Duplicate(id)
    );
    assert_eq!(store.inbox_undelivered().unwrap().len(), 1);
}

#[test]
fn undelivered_messages_survive_a_reopen_oldest_first_and_delivered_ones_do_not_return() {
    let file = test_file();
    let (a, b, c) = {
        let mut store = Store::open(&file.path, limits()).unwrap();
        let ids: Vec<i64> = ["a", "b", "c"]
            .iter()
            .map(
                |h| match store.inbox_insert(&sms(h, "+447700900001", h)).unwrap() {
                    InboxInsert::New(id) | InboxInsert::Duplicate(id) => id,
                },
            )
            .collect();
        store.inbox_mark_delivered(ids[1]).unwrap();
        (ids[0], ids[1], ids[2])
    };
    let mut store = Store::open(&file.path, limits()).unwrap();
    let undelivered = store.inbox_undelivered().unwrap();
    assert_eq!(
        undelivered.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![a, c]
    );
    assert_eq!(undelivered[0].text, "a");
    assert_eq!(undelivered[0].sent_at, sms("a", "", "").sent_at);
    assert_eq!(
        store.inbox_get(b).unwrap().map(|r| r.text).as_deref(),
        Some("b")
    );
    assert!(matches!(
        store.inbox_mark_delivered(999),
        Err(StoreError::NotFound { .. })
    ));
}

// ---- concatenated parts ----

#[test]
fn parts_from_two_senders_with_interleaved_references_arrive_out_of_order_and_assemble() {
    let mut store = Store::open_in_memory(limits()).unwrap();
    // Both senders use reference 7; the second also has reference 8 open.
    let arrivals = [
        part("b2", "+447700900002", 7, 2, 2, "world"),
        part("a3", "+447700900001", 7, 3, 3, "three"),
        part("c1", "+447700900002", 8, 2, 1, "other "),
        part("a1", "+447700900001", 7, 3, 1, "one "),
    ];
    for p in &arrivals {
        assert_eq!(
            store.part_insert(p).unwrap(),
            PartInsert::Pending,
            "{}",
            p.pdu_hash
        );
    }
    let PartInsert::Complete(b) = store
        .part_insert(&part("b1", "+447700900002", 7, 2, 1, "hello "))
        .unwrap()
    else {
        panic!("+442 ref 7 should be complete")
    };
    let PartInsert::Complete(a) = store
        .part_insert(&part("a2", "+447700900001", 7, 3, 2, "two "))
        .unwrap()
    else {
        panic!("+441 ref 7 should be complete")
    };
    let a = store.inbox_get(a).unwrap().unwrap();
    let b = store.inbox_get(b).unwrap().unwrap();
    assert_eq!(
        (a.from.as_str(), a.text.as_str(), a.incomplete),
        ("+447700900001", "one two three", false)
    );
    assert_eq!(
        (b.from.as_str(), b.text.as_str(), b.incomplete),
        ("+447700900002", "hello world", false)
    );
    // The third message is still waiting.
    let waiting: i64 = store
        .conn
        .query_row("SELECT COUNT(*) FROM sms_parts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(waiting, 1);
}

#[test]
fn a_duplicate_part_is_ignored_also_after_its_message_was_assembled() {
    let mut store = Store::open_in_memory(limits()).unwrap();
    assert_eq!(
        store
            .part_insert(&part("p1", "+447700900001", 1, 2, 1, "a"))
            .unwrap(),
        PartInsert::Pending
    );
    assert_eq!(
        store
            .part_insert(&part("p1", "+447700900001", 1, 2, 1, "a"))
            .unwrap(),
        PartInsert::Duplicate
    );
    // The network retransmitted part 1 with another time stamp, so another hash.
    assert_eq!(
        store
            .part_insert(&part("p1b", "+447700900001", 1, 2, 1, "a"))
            .unwrap(),
        PartInsert::Duplicate
    );
    let done = store
        .part_insert(&part("p2", "+447700900001", 1, 2, 2, "b"))
        .unwrap();
    let PartInsert::Complete(id) = done else {
        panic!("expected Complete, got {done:?}")
    };
    assert_eq!(store.inbox_get(id).unwrap().unwrap().text, "ab");
    // Re-read from the SIM after a crash before AT+CMGD.
    assert_eq!(
        store
            .part_insert(&part("p2", "+447700900001", 1, 2, 2, "b"))
            .unwrap(),
        PartInsert::Duplicate
    );
    assert_eq!(store.inbox_undelivered().unwrap().len(), 1);
}

#[test]
fn a_part_with_impossible_numbering_is_rejected() {
    let mut store = Store::open_in_memory(limits()).unwrap();
    for (total, seq) in [(0, 0), (2, 0), (2, 3)] {
        let err = store
            .part_insert(&part("x", "+447700900001", 1, total, seq, "x"))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidPart { .. }),
            "{total}/{seq}: {err}"
        );
    }
}

#[test]
fn partial_parts_survive_a_reopen_and_complete_afterwards() {
    let file = test_file();
    {
        let mut store = Store::open(&file.path, limits()).unwrap();
        store
            .part_insert(&part("p1", "+447700900001", 300, 2, 1, "before "))
            .unwrap();
    }
    let mut store = Store::open(&file.path, limits()).unwrap();
    let done = store
        .part_insert(&part("p2", "+447700900001", 300, 2, 2, "after"))
        .unwrap();
    let PartInsert::Complete(id) = done else {
        panic!("expected Complete, got {done:?}")
    };
    assert_eq!(store.inbox_get(id).unwrap().unwrap().text, "before after");
}

#[test]
fn expired_groups_become_incomplete_messages_with_a_marker_for_each_missing_part() {
    let mut store = Store::open_in_memory(limits()).unwrap();
    store
        .part_insert(&part("a2", "+447700900001", 5, 4, 2, "two "))
        .unwrap();
    store
        .part_insert(&part("a4", "+447700900001", 5, 4, 4, "four"))
        .unwrap();
    // Nothing is older than an hour ago.
    assert_eq!(
        store
            .parts_expire(Utc::now() - TimeDelta::hours(1))
            .unwrap(),
        Vec::<i64>::new()
    );
    let ids = store
        .parts_expire(Utc::now() + TimeDelta::seconds(1))
        .unwrap();
    assert_eq!(ids.len(), 1);
    let row = store.inbox_get(ids[0]).unwrap().unwrap();
    assert!(row.incomplete);
    assert_eq!(row.text, format!("{m}two {m}four", m = MISSING_PART_MARKER));
    let left: i64 = store
        .conn
        .query_row("SELECT COUNT(*) FROM sms_parts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    // A straggler arriving later is not turned into a second message.
    assert_eq!(
        store
            .part_insert(&part("a4", "+447700900001", 5, 4, 4, "four"))
            .unwrap(),
        PartInsert::Duplicate
    );
}

// ---- outbox ----

#[test]
fn the_global_hourly_cap_records_a_failed_row_with_the_reason() {
    let mut store = Store::open_in_memory(limits()).unwrap();
    let now = at(12, 0);
    for to in ["+447700900001", "+447700900002", "+447700900003"] {
        store.outbox_insert(to, "hi", None, now).unwrap();
    }
    let err = store
        .outbox_insert("+447700900004", "hi", Some("req-9"), now)
        .unwrap_err();
    let StoreError::Capped { id, reason } = err else {
        panic!("expected Capped, got {err}")
    };
    assert!(reason.contains("max_per_hour"), "{reason}");
    let row = store.outbox_get(id).unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Failed);
    assert_eq!(row.error.as_deref(), Some(reason.as_str()));
    assert_eq!(row.request_id.as_deref(), Some("req-9"));
    assert_eq!(store.outbox_pending().unwrap().len(), 3);
    // An hour later the window has moved on.
    store
        .outbox_insert("+447700900004", "hi", None, now + TimeDelta::minutes(61))
        .unwrap();
}

#[test]
fn the_global_daily_cap_counts_the_whole_day() {
    let mut store = Store::open_in_memory(limits()).unwrap();
    for (i, hour) in [1, 3, 5, 7, 9].into_iter().enumerate() {
        store
            .outbox_insert(&format!("+447700900{i:03}"), "hi", None, at(hour, 0))
            .unwrap();
    }
    let err = store
        .outbox_insert("+447700900009", "hi", None, at(23, 0))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Capped { reason, .. } if reason.contains("max_per_day")),
        "{err}"
    );
    // 24 hours after the first one, a slot is free again.
    store
        .outbox_insert("+447700900009", "hi", None, at(1, 0) + TimeDelta::days(1))
        .unwrap();
}

#[test]
fn the_per_recipient_caps_apply_to_one_number_only() {
    let mut store = Store::open_in_memory(SmsConfig {
        max_per_hour: 10,
        max_per_day: 10,
        ..limits()
    })
    .unwrap();
    store
        .outbox_insert("+447700900001", "1", None, at(10, 0))
        .unwrap();
    store
        .outbox_insert("+447700900001", "2", None, at(10, 30))
        .unwrap();
    let err = store
        .outbox_insert("+447700900001", "3", None, at(10, 45))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Capped { reason, .. }
            if reason.contains("max_per_recipient_per_hour") && reason.contains("+447700900001")),
        "{err}"
    );
    store
        .outbox_insert("+447700900002", "other", None, at(10, 45))
        .unwrap();
    store
        .outbox_insert("+447700900001", "3", None, at(12, 0))
        .unwrap();
    store
        .outbox_insert("+447700900001", "4", None, at(14, 0))
        .unwrap();
    let err = store
        .outbox_insert("+447700900001", "5", None, at(16, 0))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Capped { reason, .. } if reason.contains("max_per_recipient_per_day")),
        "{err}"
    );
}

#[test]
fn capped_and_failed_rows_do_not_count_against_the_caps() {
    let mut store = Store::open_in_memory(limits()).unwrap();
    let now = at(12, 0);
    let a = store
        .outbox_insert("+447700900001", "a", None, now)
        .unwrap();
    store
        .outbox_insert("+447700900001", "b", None, now)
        .unwrap();
    assert!(store
        .outbox_insert("+447700900001", "c", None, now)
        .is_err());
    assert_eq!(
        store.outbox_attempt_failed(a, "no network", 1).unwrap(),
        OutboxStatus::Failed
    );
    store
        .outbox_insert("+447700900001", "d", None, now)
        .unwrap();
}

#[test]
fn sent_parts_survive_a_reopen_so_only_unsent_parts_are_sent_again() {
    let file = test_file();
    let id = {
        let mut store = Store::open(&file.path, generous()).unwrap();
        let id = store
            .outbox_insert("+447700900001", "long text", Some("r1"), at(12, 0))
            .unwrap();
        store.outbox_record_part(id, 0, 41).unwrap();
        store.outbox_record_part(id, 1, 42).unwrap();
        id
    };
    let mut store = Store::open(&file.path, generous()).unwrap();
    let pending = store.outbox_pending().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, id);
    assert_eq!(pending[0].parts_sent, vec![41, 42]);
    assert_eq!(pending[0].created_at, at(12, 0));
    let err = store.outbox_record_part(id, 3, 44).unwrap_err();
    assert!(
        matches!(err, StoreError::PartOutOfOrder { next: 2, .. }),
        "{err}"
    );
    store.outbox_record_part(id, 2, 43).unwrap();
    store.outbox_mark_sent(id).unwrap();
    assert!(store.outbox_pending().unwrap().is_empty());
    let row = store.outbox_get(id).unwrap().unwrap();
    assert_eq!(
        (row.status, row.parts_sent),
        (OutboxStatus::Sent, vec![41, 42, 43])
    );
}

#[test]
fn failed_attempts_are_counted_until_the_row_is_marked_failed() {
    let mut store = Store::open_in_memory(generous()).unwrap();
    let id = store
        .outbox_insert("+447700900001", "x", None, at(12, 0))
        .unwrap();
    assert_eq!(
        store
            .outbox_attempt_failed(id, "+CMS ERROR: 500", 3)
            .unwrap(),
        OutboxStatus::Queued
    );
    assert_eq!(
        store
            .outbox_attempt_failed(id, "+CMS ERROR: 500", 3)
            .unwrap(),
        OutboxStatus::Queued
    );
    assert_eq!(
        store.outbox_attempt_failed(id, "timeout", 3).unwrap(),
        OutboxStatus::Failed
    );
    let row = store.outbox_get(id).unwrap().unwrap();
    assert_eq!((row.attempts, row.error.as_deref()), (3, Some("timeout")));
    // A late failure report for a row already given up on changes nothing.
    assert_eq!(
        store.outbox_attempt_failed(id, "late", 3).unwrap(),
        OutboxStatus::Failed
    );
    assert_eq!(store.outbox_get(id).unwrap().unwrap().attempts, 3);
}

#[test]
fn a_delivery_report_matches_the_newest_row_to_that_number_with_that_reference() {
    let mut store = Store::open_in_memory(generous()).unwrap();
    let old = store
        .outbox_insert("+447700900123", "old", None, at(10, 0))
        .unwrap();
    store.outbox_record_part(old, 0, 9).unwrap();
    store.outbox_set_delivery(old, 0).unwrap();
    let other = store
        .outbox_insert("+447700900999", "other", None, at(11, 0))
        .unwrap();
    store.outbox_record_part(other, 0, 9).unwrap();
    let new = store
        .outbox_insert("+447700900123", "new", None, at(12, 0))
        .unwrap();
    store.outbox_record_part(new, 0, 9).unwrap();
    assert_eq!(
        store.outbox_match_report(9, "447700900123").unwrap(),
        Some(new)
    );
    assert_eq!(
        store.outbox_match_report(9, "07700900123").unwrap(),
        Some(new)
    );
    assert_eq!(
        store.outbox_match_report(9, "+447700900999").unwrap(),
        Some(other)
    );
    assert_eq!(
        store.outbox_match_report(10, "+447700900123").unwrap(),
        None
    );
    store.outbox_set_delivery(new, 0x40).unwrap();
    assert_eq!(
        store.outbox_get(new).unwrap().unwrap().delivery_status,
        Some(0x40)
    );
}

// ---- script data, outputs, calls ----

#[test]
fn script_values_round_trip_per_scope_and_none_deletes() {
    let mut store = Store::open_in_memory(limits()).unwrap();
    store.kv_set("heating", "target", Some("21.5")).unwrap();
    store
        .kv_set("heating", "mode", Some(r#"{"eco":true}"#))
        .unwrap();
    store.kv_set("gate", "target", Some(r#""open""#)).unwrap();
    store.kv_set("heating", "target", Some("22")).unwrap();
    assert_eq!(
        store.kv_get("heating", "target").unwrap().as_deref(),
        Some("22")
    );
    assert_eq!(
        store.kv_all("heating").unwrap(),
        BTreeMap::from([
            ("mode".into(), r#"{"eco":true}"#.into()),
            ("target".into(), "22".into())
        ])
    );
    store.kv_set("heating", "target", None).unwrap();
    assert_eq!(store.kv_get("heating", "target").unwrap(), None);
    assert_eq!(
        store.kv_get("gate", "target").unwrap().as_deref(),
        Some(r#""open""#)
    );
    let err = store.kv_set("gate", "bad", Some("{not json")).unwrap_err();
    assert!(matches!(err, StoreError::InvalidJson { .. }), "{err}");
}

#[test]
fn output_states_keep_the_last_value_across_a_reopen() {
    let file = test_file();
    {
        let mut store = Store::open(&file.path, limits()).unwrap();
        store.output_state_set("relay1", true).unwrap();
        store.output_state_set("relay2", true).unwrap();
        store.output_state_set("relay2", false).unwrap();
    }
    let mut store = Store::open(&file.path, limits()).unwrap();
    assert_eq!(
        store.output_states().unwrap(),
        HashMap::from([("relay1".into(), true), ("relay2".into(), false)])
    );
}

#[test]
fn calls_are_logged_newest_first_with_withheld_callers() {
    let mut store = Store::open_in_memory(limits()).unwrap();
    store
        .call_log(Some("+447700900001"), at(9, 0), at(9, 1), "rejected")
        .unwrap();
    store
        .call_log(None, at(10, 0), at(10, 2), "ignored")
        .unwrap();
    let calls = store.calls_recent(10).unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (calls[0].from.as_deref(), calls[0].action.as_str()),
        (None, "ignored")
    );
    assert_eq!(
        (calls[1].from.as_deref(), calls[1].ended_at),
        (Some("+447700900001"), at(9, 1))
    );
}

// ---- the async handle ----

/// Waits for the store thread to end, for at most a few seconds.
async fn joined(thread: std::thread::JoinHandle<()>) -> bool {
    let join = tokio::task::spawn_blocking(move || thread.join().is_ok());
    matches!(
        tokio::time::timeout(Duration::from_secs(10), join).await,
        Ok(Ok(true))
    )
}

#[tokio::test]
async fn the_handle_runs_requests_on_the_store_thread_and_reports_closed_after_shutdown() {
    let file = test_file();
    let (handle, thread) = spawn(Store::open(&file.path, generous()).unwrap());
    let other = handle.clone();
    let id = match handle
        .inbox_insert(&sms("h", "+447700900001", "hi"))
        .await
        .unwrap()
    {
        InboxInsert::New(id) => id,
        dup => panic!("expected New, got {dup:?}"),
    };
    assert_eq!(other.inbox_undelivered().await.unwrap().len(), 1);
    other.inbox_mark_delivered(id).await.unwrap();
    other.kv_set("s", "k", Some("true")).await.unwrap();
    assert_eq!(
        handle.kv_get("s", "k").await.unwrap().as_deref(),
        Some("true")
    );
    let out = handle
        .outbox_insert("+447700900001", "x", None, at(12, 0))
        .await
        .unwrap();
    handle.outbox_record_part(out, 0, 5).await.unwrap();
    assert_eq!(
        handle.outbox_pending().await.unwrap()[0].parts_sent,
        vec![5]
    );

    handle.shutdown().await.unwrap();
    assert!(joined(thread).await, "store thread did not end");
    assert!(matches!(
        other.inbox_undelivered().await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        handle.kv_get("s", "k").await,
        Err(StoreError::Closed)
    ));
    // What was written before the shutdown is in the file.
    let mut store = Store::open(&file.path, generous()).unwrap();
    assert!(store.inbox_undelivered().unwrap().is_empty());
    assert_eq!(store.kv_get("s", "k").unwrap().as_deref(), Some("true"));
}

#[tokio::test]
async fn the_store_thread_ends_when_every_handle_is_dropped() {
    let (handle, thread) = spawn(Store::open_in_memory(limits()).unwrap());
    let other = handle.clone();
    other.output_state_set("relay", true).await.unwrap();
    drop(handle);
    assert_eq!(
        other.output_states().await.unwrap().get("relay"),
        Some(&true)
    );
    drop(other);
    assert!(joined(thread).await, "store thread did not end");
}

fn reply(to: &str, text: &str) -> NewOutboxSms {
    NewOutboxSms {
        to: to.into(),
        text: text.into(),
        request_id: None,
        priority: false,
    }
}

fn kv(key: &str, value: Option<&str>) -> KvChange {
    KvChange {
        scope: "plugin:x".into(),
        key: key.into(),
        value: value.map(str::to_string),
    }
}

#[test]
fn commit_dispatch_marks_delivered_and_keeps_replies_and_data_together() {
    let mut s = Store::open_in_memory(generous()).unwrap();
    let InboxInsert::New(id) = s
        .inbox_insert(&sms("h1", "+447700900070", "STATUS"))
        .unwrap()
    else {
        panic!("new row expected");
    };
    let done = s
        .commit_dispatch(
            id,
            &[
                reply("+447700900070", "ack STATUS"),
                reply("+447700900071", "copy"),
            ],
            &[kv("n", Some("1")), kv("bad", Some("{not json"))],
        )
        .unwrap();
    let DispatchCommit::Committed(queued) = done else {
        panic!("first commit must write: {done:?}");
    };
    assert_eq!(queued.len(), 2);
    assert!(queued.iter().all(|q| q.capped.is_none()));
    assert_eq!(s.inbox_delivered(id).unwrap(), Some(true));
    assert!(s.inbox_undelivered().unwrap().is_empty());
    let pending = s.outbox_pending().unwrap();
    assert_eq!(
        pending.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(),
        ["ack STATUS", "copy"]
    );
    assert_eq!(s.kv_get("plugin:x", "n").unwrap().as_deref(), Some("1"));
    assert_eq!(s.kv_get("plugin:x", "bad").unwrap(), None);
}

#[test]
fn commit_dispatch_of_a_delivered_message_writes_nothing() {
    let mut s = Store::open_in_memory(generous()).unwrap();
    let InboxInsert::New(id) = s
        .inbox_insert(&sms("h1", "+447700900070", "STATUS"))
        .unwrap()
    else {
        panic!("new row expected");
    };
    s.commit_dispatch(id, &[reply("+447700900070", "one")], &[])
        .unwrap();
    let again = s
        .commit_dispatch(id, &[reply("+447700900070", "two")], &[kv("k", Some("2"))])
        .unwrap();
    assert_eq!(again, DispatchCommit::AlreadyDelivered);
    assert_eq!(s.outbox_pending().unwrap().len(), 1);
    assert_eq!(s.kv_get("plugin:x", "k").unwrap(), None);
    assert!(matches!(
        s.commit_dispatch(999, &[], &[]),
        Err(StoreError::NotFound { table: "inbox", .. })
    ));
}

#[test]
fn commit_dispatch_records_a_capped_reply_as_failed_and_still_commits() {
    let mut s = Store::open_in_memory(limits()).unwrap();
    let InboxInsert::New(id) = s.inbox_insert(&sms("h1", "+447700900070", "x")).unwrap() else {
        panic!("new row expected");
    };
    // max_per_recipient_per_hour = 2: the third reply to the same number is capped.
    let DispatchCommit::Committed(queued) = s
        .commit_dispatch(
            id,
            &[
                reply("+447700900070", "a"),
                reply("+447700900070", "b"),
                reply("+447700900070", "c"),
            ],
            &[],
        )
        .unwrap()
    else {
        panic!("must commit");
    };
    assert_eq!(queued[0].capped, None);
    assert_eq!(queued[1].capped, None);
    let reason = queued[2].capped.clone().expect("third reply capped");
    assert!(reason.contains("max_per_recipient_per_hour"), "{reason}");
    let row = s.outbox_get(queued[2].id).unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Failed);
    assert_eq!(s.inbox_delivered(id).unwrap(), Some(true));
}

#[test]
fn the_senders_type_survives_in_the_inbox_until_delivery() {
    let f = test_file();
    {
        let mut store = Store::open(&f.path, generous()).unwrap();
        let name = store
            .inbox_insert_kind(&sms("h1", "00900123", "OPEN"), SenderKind::Alphanumeric)
            .unwrap();
        assert!(matches!(name, InboxInsert::New(_)));
        store
            .inbox_insert(&sms("h2", "+447700900123", "OPEN"))
            .unwrap();
        let InboxInsert::New(id) = store.inbox_insert(&sms("h3", "Bank", "x")).unwrap() else {
            panic!("new row expected");
        };
        store.inbox_set_sender_kind(id, SenderKind::Short).unwrap();
    }
    // A restart: the undelivered rows come back with the type they arrived with.
    let mut store = Store::open(&f.path, generous()).unwrap();
    let rows = store.inbox_undelivered().unwrap();
    let kinds: Vec<_> = rows.iter().map(|r| (r.sender_kind, r.kind())).collect();
    assert_eq!(
        kinds,
        vec![
            (Some(SenderKind::Alphanumeric), SenderKind::Alphanumeric),
            // Not recorded: judged from the text.
            (None, SenderKind::International),
            (Some(SenderKind::Short), SenderKind::Short),
        ]
    );
}
