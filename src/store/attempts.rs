//! Dispatch attempts of received SMS, counted before each dispatch so that a message whose
//! handling crashes or stalls the gateway (a poison message) is recognised after a restart
//! and quarantined instead of being offered to the plugins for ever.

use chrono::Utc;
use rusqlite::{params, OptionalExtension};

use super::{Durability, Store, StoreError};

/// What earlier dispatches of one inbox row left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchAttempt {
    /// Dispatches begun, this one included.
    pub attempts: u32,
    /// The error recorded by a dispatch that failed, if any (none when it was cut off).
    pub last_error: Option<String>,
}

impl Store {
    /// Counts one more dispatch of undelivered inbox row `id`, committed before the dispatch
    /// begins; `None` when the row is delivered already or does not exist.
    pub fn inbox_begin_dispatch(&mut self, id: i64) -> Result<Option<DispatchAttempt>, StoreError> {
        // A kill does not lose a commit at `NORMAL`; only a power cut may lose one count.
        let tx = self.write(Durability::Normal)?;
        let attempt = tx
            .query_row(
                "UPDATE inbox SET dispatch_attempts = dispatch_attempts + 1 \
                 WHERE id = ?1 AND delivered_at IS NULL \
                 RETURNING dispatch_attempts, dispatch_error",
                [id],
                |row| {
                    Ok(DispatchAttempt {
                        attempts: row.get(0)?,
                        last_error: row.get(1)?,
                    })
                },
            )
            .optional()?;
        tx.commit()?;
        Ok(attempt)
    }

    /// Records why a dispatch of inbox row `id` failed (its commit did not go through).
    pub fn inbox_dispatch_failed(&mut self, id: i64, error: &str) -> Result<(), StoreError> {
        self.update_row(
            "inbox",
            id,
            "UPDATE inbox SET dispatch_error = ?2 WHERE id = ?1",
            params![id, error],
        )
    }

    /// Marks inbox row `id` delivered as quarantined with `error`: it is never dispatched again.
    pub fn inbox_quarantine(&mut self, id: i64, error: &str) -> Result<(), StoreError> {
        self.update_row(
            "inbox",
            id,
            "UPDATE inbox SET delivered_at = ?2, quarantined = 1, dispatch_error = ?3 \
             WHERE id = ?1 AND delivered_at IS NULL",
            params![id, Utc::now().timestamp_millis(), error],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::{InboxInsert, NewInboxSms};
    use super::*;
    use crate::config::SmsConfig;

    fn store_with_one_sms() -> (Store, i64) {
        let mut store = match Store::open_in_memory(SmsConfig::default()) {
            Ok(s) => s,
            Err(e) => panic!("store: {e}"),
        };
        let msg = NewInboxSms {
            pdu_hash: "h1".into(),
            from: "+447700900123".into(),
            text: "POISON".into(),
            sent_at: None,
            incomplete: false,
        };
        match store.inbox_insert(&msg) {
            Ok(InboxInsert::New(id)) => (store, id),
            other => panic!("insert: {other:?}"),
        }
    }

    #[test]
    fn each_dispatch_is_counted_and_the_last_failure_is_kept() {
        let (mut store, id) = store_with_one_sms();
        let first = store.inbox_begin_dispatch(id).ok().flatten();
        assert_eq!(
            first,
            Some(DispatchAttempt {
                attempts: 1,
                last_error: None
            })
        );
        assert!(store.inbox_dispatch_failed(id, "disk full").is_ok());
        let second = store.inbox_begin_dispatch(id).ok().flatten();
        assert_eq!(
            second,
            Some(DispatchAttempt {
                attempts: 2,
                last_error: Some("disk full".into())
            })
        );
    }

    #[test]
    fn a_quarantined_sms_is_delivered_and_never_dispatched_again() {
        let (mut store, id) = store_with_one_sms();
        assert!(store.inbox_begin_dispatch(id).is_ok());
        assert!(store.inbox_quarantine(id, "cut off 3 times").is_ok());
        assert_eq!(store.inbox_delivered(id).ok(), Some(Some(true)));
        assert_eq!(store.inbox_begin_dispatch(id).ok(), Some(None));
        assert!(store
            .inbox_undelivered()
            .is_ok_and(|rows| rows.iter().all(|r| r.id != id)));
        // Quarantining twice finds nothing to change.
        assert!(store.inbox_quarantine(id, "again").is_err());
    }
}
