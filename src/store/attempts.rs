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
