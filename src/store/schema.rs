//! The schema and its migrations.
//!
//! Each migration runs in its own `IMMEDIATE` transaction together with the row that records
//! it in `schema_version`, so a crash (or a second process starting at the same moment) leaves
//! the file either before or after a migration, never half-way. Start-up is idempotent: a file
//! that is up to date is left untouched.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::StoreError;

/// The migrations, in order; the schema version of a file is the number of them applied.
/// Append only: a released migration is never edited, a change is a new migration.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the first schema. Times are Unix milliseconds (UTC) unless the column says otherwise.
    r"
    CREATE TABLE inbox (
        id           INTEGER PRIMARY KEY,
        -- The hash of the PDU as read from the modem (or of the parts' hashes for a
        -- concatenated message): re-reading it after a crash must not deliver it twice.
        pdu_hash     TEXT    NOT NULL UNIQUE,
        sender       TEXT    NOT NULL,
        text         TEXT    NOT NULL,
        -- RFC 3339, keeping the service centre's time zone.
        sent_at      TEXT,
        received_at  INTEGER NOT NULL,
        incomplete   INTEGER NOT NULL DEFAULT 0,
        delivered_at INTEGER
    );
    CREATE INDEX inbox_undelivered ON inbox (id) WHERE delivered_at IS NULL;

    CREATE TABLE sms_parts (
        pdu_hash    TEXT    PRIMARY KEY,
        sender      TEXT    NOT NULL,
        reference   INTEGER NOT NULL,
        total       INTEGER NOT NULL,
        seq         INTEGER NOT NULL,
        text        TEXT    NOT NULL,
        sent_at     TEXT,
        received_at INTEGER NOT NULL
    );
    CREATE INDEX sms_parts_group ON sms_parts (sender, reference, total, seq);

    -- Hashes of parts already assembled (or expired) into an inbox row: a part re-read from
    -- the SIM after a crash that happened before its AT+CMGD is recognised as a duplicate
    -- instead of starting a new, never-completed group.
    CREATE TABLE sms_parts_consumed (
        pdu_hash    TEXT    PRIMARY KEY,
        inbox_id    INTEGER NOT NULL,
        consumed_at INTEGER NOT NULL
    );

    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY,
        recipient       TEXT    NOT NULL,
        text            TEXT    NOT NULL,
        request_id      TEXT,
        status          TEXT    NOT NULL CHECK (status IN ('queued', 'sent', 'failed')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        error           TEXT,
        created_at      INTEGER NOT NULL,
        sent_at         INTEGER,
        delivery_status INTEGER,
        delivered_at    INTEGER
    );
    CREATE INDEX outbox_created ON outbox (created_at);
    CREATE INDEX outbox_queued ON outbox (id) WHERE status = 'queued';

    -- One row per part that the modem accepted (+CMGS), with its message reference.
    CREATE TABLE outbox_parts (
        outbox_id   INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
        part_index  INTEGER NOT NULL,
        message_ref INTEGER NOT NULL,
        PRIMARY KEY (outbox_id, part_index)
    ) WITHOUT ROWID;
    CREATE INDEX outbox_parts_ref ON outbox_parts (message_ref);

    CREATE TABLE kv (
        scope TEXT NOT NULL,
        key   TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (scope, key)
    ) WITHOUT ROWID;

    CREATE TABLE outputs (
        name       TEXT    PRIMARY KEY,
        is_on      INTEGER NOT NULL,
        changed_at INTEGER NOT NULL
    );

    CREATE TABLE calls (
        id         INTEGER PRIMARY KEY,
        caller     TEXT,
        started_at INTEGER NOT NULL,
        ended_at   INTEGER NOT NULL,
        action     TEXT    NOT NULL
    );
    ",
    // 2: dispatch attempts, so that a message that crashes or stalls its dispatch is
    // quarantined after `lua.max_dispatch_attempts` instead of being offered for ever.
    r"
    ALTER TABLE inbox ADD COLUMN dispatch_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE inbox ADD COLUMN dispatch_error TEXT;
    ALTER TABLE inbox ADD COLUMN quarantined INTEGER NOT NULL DEFAULT 0;
    ",
    // 3: the sender's type-of-address (`international`, `alphanumeric`, …), so that a message
    // delivered after a restart still knows that `00900123` was a name and not a number.
    // NULL for rows written before: the type is then judged from the sender's text.
    r"
    ALTER TABLE inbox ADD COLUMN sender_kind TEXT;
    ",
    // 4: caps count message parts, not rows.
    r"
    ALTER TABLE outbox ADD COLUMN parts INTEGER NOT NULL DEFAULT 1;
    ",
];

/// The schema version this build writes.
pub(super) fn latest_version() -> u32 {
    // The list is a short constant; it cannot exceed u32.
    u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX)
}

/// Brings the file up to [`latest_version`], refusing a file written by a newer gsmgw.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let known = latest_version();
    loop {
        // IMMEDIATE: take the write lock before reading the version, so that two processes
        // opening the same new file cannot both apply the same migration.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: u32 = tx
            .query_row("SELECT MAX(version) FROM schema_version", [], |row| {
                row.get::<_, Option<u32>>(0)
            })
            .optional()?
            .flatten()
            .unwrap_or(0);
        if found > known {
            return Err(StoreError::NewerSchema {
                path: path.to_path_buf(),
                found,
                known,
            });
        }
        if found == known {
            return Ok(());
        }
        let next = found + 1;
        let sql = usize::try_from(found)
            .ok()
            .and_then(|index| MIGRATIONS.get(index))
            .ok_or_else(|| StoreError::NewerSchema {
                path: path.to_path_buf(),
                found,
                known,
            })?;
        tx.execute_batch(sql)
            .map_err(|source| StoreError::Migration {
                path: path.to_path_buf(),
                version: next,
                source,
            })?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [next])?;
        tx.commit()?;
        tracing::info!(version = next, "store schema migrated");
    }
}
