//! The SQLite file: inbox, outbox, concatenated-SMS parts, script data, output states and the
//! call log.
//!
//! [`Store`] is the synchronous layer that owns the `rusqlite::Connection`; [`StoreHandle`] is
//! the cloneable async handle that every task uses, talking to the one thread that owns the
//! `Store` (see [`spawn`]).
//!
//! Every method that writes commits before it returns, so a caller may act on the result
//! (delete the SMS from the SIM, hand a part to the modem) knowing that the write survives a
//! crash. Which writes also survive a power cut is a per-table choice, see [`Durability`].
//!
//! Phone numbers are compared as stored: callers pass them normalised by [`crate::phone`].

mod attempts;
mod handle;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use sha2::{Digest, Sha256};

use crate::bus::SenderKind;
use crate::config::SmsConfig;

pub use attempts::DispatchAttempt;
pub use handle::{spawn, StoreHandle};

/// What a concatenated message shows where a part never arrived.
pub const MISSING_PART_MARKER: &str = "[…]";

/// How long another process (an operator's `sqlite3` shell, a backup) may hold the write lock
/// before a write fails with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the hashes of assembled parts are remembered. A part stays on the SIM until it is
/// deleted after being stored, so a gateway that was powered off for days may read it again
/// when it comes back.
const CONSUMED_PART_MEMORY: TimeDelta = TimeDelta::days(30);

/// Errors from the store.
///
/// Messages do not repeat their cause; it is the error's `source()`, printed by `{:#}`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory that should hold the database file could not be created.
    #[error("cannot create the directory {path} for the store")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file exists but is not an SQLite database (or is damaged beyond reading).
    #[error(
        "the store {path} is not an SQLite database (help: move the file away to start with an \
         empty store, or set store.path to another file)"
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// The database file could not be opened or set up (permissions, locked for too long).
    #[error(
        "cannot open the store {path} (help: check that gsmgw can read and write the file and \
         its directory)"
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// Why, as SQLite reports it.
        source: rusqlite::Error,
    },
    /// The file was written by a newer gsmgw whose schema this build does not know.
    #[error(
        "the store {path} has schema version {found} but this gsmgw knows only up to {known} \
         (help: run the newer gsmgw, or restore a backup)"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The version recorded in the file.
        found: u32,
        /// The newest version this build knows.
        known: u32,
    },
    /// A schema migration failed; the file is left at the previous version.
    #[error("migrating the store {path} to schema version {version} failed")]
    Migration {
        /// The file.
        path: PathBuf,
        /// The version that could not be applied.
        version: u32,
        /// Why.
        source: rusqlite::Error,
    },
    /// An SQLite operation failed (disk full, I/O error, a stored value of the wrong type).
    #[error("store: SQLite operation failed")]
    Sqlite(#[from] rusqlite::Error),
    /// An outgoing SMS would exceed a cap from `[sms]`; it is recorded as failed with the
    /// reason (row `id`), not sent.
    #[error("outgoing SMS {id} not sent: {reason}")]
    Capped {
        /// The outbox row, recorded with status `failed`.
        id: i64,
        /// Which cap, in words.
        reason: String,
    },
    /// No row with this id.
    #[error("no {table} row with id {id}")]
    NotFound {
        /// The table.
        table: &'static str,
        /// The id asked for.
        id: i64,
    },
    /// A concatenated-SMS part has impossible numbering (a bug in the PDU decoder or a
    /// malformed PDU).
    #[error("invalid SMS part from {from}: part {seq} of {total}")]
    InvalidPart {
        /// The sender.
        from: String,
        /// The part's sequence number (1-based).
        seq: u8,
        /// The number of parts the message claims.
        total: u8,
    },
    /// A sent part was recorded before the parts in front of it. Parts are sent in order so
    /// that `parts_sent.len()` is the index of the next part to send.
    #[error("outbox row {id}: part {part_index} recorded before part {next}")]
    PartOutOfOrder {
        /// The outbox row.
        id: i64,
        /// The index given.
        part_index: usize,
        /// The index expected (the number of parts recorded so far).
        next: usize,
    },
    /// A script value to store is not valid JSON.
    #[error("value for {scope}/{key} is not JSON")]
    InvalidJson {
        /// The script's scope.
        scope: String,
        /// The key.
        key: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The store thread has ended (shut down, or every handle was dropped); nothing was done.
    #[error("the store is closed")]
    Closed,
}

/// How hard a commit is pushed to disk.
///
/// `synchronous` is a per-connection setting, not a per-table one, so the store switches it
/// before each write transaction. In WAL mode both levels are crash-safe for the process (a
/// committed transaction is in the WAL file); they differ on a power cut:
/// - [`Durability::Full`] fsyncs the WAL on every commit, so the commit survives a power cut.
///   Used where the caller acts on the commit outside the file: an SMS is deleted from the SIM
///   once its inbox row is committed, a part is handed to the modem once its outbox row is;
///   and for output states, which decide what the relays do after a power cut.
/// - [`Durability::Normal`] fsyncs only at checkpoints: a power cut may roll back the last
///   commits, never corrupt the file. Used for script data and the call log, which scripts may
///   write often and where losing the last second is harmless; it saves SD-card wear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    Full,
    Normal,
}

impl Durability {
    fn pragma_value(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

/// A received single-part SMS (or one already assembled elsewhere), to store in the inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInboxSms {
    /// The hash of the PDU as read from the modem (hex SHA-256, say): the dedupe key.
    pub pdu_hash: String,
    /// The sender, normalised.
    pub from: String,
    pub text: String,
    /// The service centre time stamp.
    pub sent_at: Option<DateTime<FixedOffset>>,
    /// True when this is what is left of a message whose other parts never arrived.
    pub incomplete: bool,
}

/// The result of [`Store::inbox_insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxInsert {
    /// Stored as a new row, to be delivered.
    New(i64),
    /// Already stored under this id (re-read after a crash): do not deliver again.
    Duplicate(i64),
}

/// A stored received SMS.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxRow {
    pub id: i64,
    pub from: String,
    pub text: String,
    pub sent_at: Option<DateTime<FixedOffset>>,
    pub received_at: DateTime<Utc>,
    /// True when parts of a concatenated message never arrived.
    pub incomplete: bool,
    /// The sender's type-of-address when it was recorded ([`Store::inbox_insert_kind`]).
    pub sender_kind: Option<SenderKind>,
}

impl InboxRow {
    /// The sender's kind: as recorded, else judged from its text.
    pub fn kind(&self) -> SenderKind {
        self.sender_kind
            .unwrap_or_else(|| SenderKind::of(&self.from))
    }
}

/// A reply a plugin asked to send while handling a received SMS (see
/// [`Store::commit_dispatch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboxSms {
    /// The recipient, normalised.
    pub to: String,
    pub text: String,
    /// The requester's correlation id, echoed in status events.
    pub request_id: Option<String>,
    /// May use the caps' priority reserve (alarm, notify, security alerts).
    pub priority: bool,
}

/// A change to script data made while handling a received SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvChange {
    pub scope: String,
    pub key: String,
    /// The JSON value; `None` deletes the key.
    pub value: Option<String>,
}

/// One reply recorded by [`Store::commit_dispatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedSms {
    /// Its outbox row.
    pub id: i64,
    /// Why it was recorded as failed instead of queued: a cap was reached.
    pub capped: Option<String>,
}

/// What [`Store::commit_dispatch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchCommit {
    /// The message is now marked delivered, with these replies.
    Committed(Vec<QueuedSms>),
    /// It had been marked delivered before: nothing was written.
    AlreadyDelivered,
}

/// One part of a concatenated SMS (user data header present).
#[derive(Debug, Clone, PartialEq)]
pub struct NewPart {
    /// The hash of this part's PDU: the dedupe key.
    pub pdu_hash: String,
    /// The sender, normalised.
    pub from: String,
    /// The concatenation reference (8- or 16-bit).
    pub reference: u16,
    /// How many parts the message has.
    pub total: u8,
    /// This part's number, 1-based.
    pub seq: u8,
    pub text: String,
    pub sent_at: Option<DateTime<FixedOffset>>,
}

/// The result of [`Store::part_insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartInsert {
    /// This part was stored before (or its message already assembled): nothing to do.
    Duplicate,
    /// Stored; other parts are still missing.
    Pending,
    /// That was the last missing part: the message is now this inbox row, to be delivered.
    Complete(i64),
}

/// Where an outgoing SMS stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxStatus {
    /// Waiting to be sent (or being sent).
    Queued,
    /// Every part was accepted by the network.
    Sent,
    /// Given up: capped, or out of attempts.
    Failed,
}

impl OutboxStatus {
    fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Queued => "queued",
            OutboxStatus::Sent => "sent",
            OutboxStatus::Failed => "failed",
        }
    }

    fn parse(column: usize, value: &str) -> rusqlite::Result<Self> {
        match value {
            "queued" => Ok(OutboxStatus::Queued),
            "sent" => Ok(OutboxStatus::Sent),
            "failed" => Ok(OutboxStatus::Failed),
            other => Err(conversion_error(
                column,
                format!("unknown outbox status {other:?}"),
            )),
        }
    }
}

/// A stored outgoing SMS.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    /// The recipient, normalised.
    pub to: String,
    pub text: String,
    /// The id of the request that asked for it (MQTT, Lua), to report back to.
    pub request_id: Option<String>,
    /// Failed attempts so far.
    pub attempts: u32,
    pub status: OutboxStatus,
    /// The message references of the parts already accepted, in part order: after a crash,
    /// sending resumes at part `parts_sent.len()`.
    pub parts_sent: Vec<u8>,
    /// The last error (cap reason or send failure).
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// The TP-Status of the last delivery report, if one came.
    pub delivery_status: Option<u8>,
}

/// A logged call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRow {
    pub id: i64,
    /// `None` when the caller ID was withheld.
    pub from: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// What was done (`rejected`, `answered`, …).
    pub action: String,
}

/// The synchronous store: owns the SQLite connection. Tasks use it through a [`StoreHandle`].
pub struct Store {
    conn: Connection,
    limits: SmsConfig,
    durability: Option<Durability>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.conn.path())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating it and its directory if needed) the database at `path` and brings its
    /// schema up to date. `limits` are the outgoing caps checked by [`Store::outbox_insert`].
    pub fn open(path: &Path, limits: SmsConfig) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        // Best effort: when it fails (a directory in the way, no permission), opening fails
        // too and SQLite's error says why.
        let _ = private_file(path);
        let open = || -> Result<Store, StoreError> {
            let conn = Connection::open(path)?;
            let store = Store::init(conn, path, limits)?;
            // SQLite gives -wal and -shm the database file's mode; files left by an older
            // version (or copied in) are made private too.
            for suffix in ["", "-wal", "-shm"] {
                let mut side = path.as_os_str().to_owned();
                side.push(suffix);
                let side = PathBuf::from(side);
                if side.exists() {
                    if let Err(e) = make_private(&side) {
                        tracing::warn!(file = %side.display(), error = %e, "store: cannot make the file private (mode 0600)");
                    }
                }
            }
            Ok(store)
        };
        // SQLite opens lazily: a file that is not a database is only noticed by the first
        // statement, inside `init`, so every error from there names the path.
        open().map_err(|e| match e {
            StoreError::Sqlite(source)
                if source.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) =>
            {
                StoreError::NotADatabase {
                    path: path.to_path_buf(),
                }
            }
            StoreError::Sqlite(source) => StoreError::Open {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// An empty store in memory, for tests and `gsmgw try`.
    pub fn open_in_memory(limits: SmsConfig) -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?, Path::new(":memory:"), limits)
    }

    fn init(mut conn: Connection, path: &Path, limits: SmsConfig) -> Result<Store, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // An in-memory database answers "memory": nothing to do there.
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            tracing::warn!(mode, "store: WAL not available, using this journal mode");
        }
        conn.pragma_update(None, "foreign_keys", true)?;
        // Deleted and overwritten content (an inbox row rewritten masked, assembled parts) is
        // zeroed in the file instead of lingering in free space.
        conn.pragma_update(None, "secure_delete", true)?;
        schema::migrate(&mut conn, path)?;
        Ok(Store {
            conn,
            limits,
            durability: None,
        })
    }

    /// Starts a write transaction at the given durability. IMMEDIATE takes the write lock at
    /// once, so a concurrent reader (backup, shell) cannot make it fail half-way with BUSY.
    fn write(&mut self, durability: Durability) -> Result<Transaction<'_>, StoreError> {
        if self.durability != Some(durability) {
            // Must be set outside a transaction, hence here.
            self.conn
                .pragma_update(None, "synchronous", durability.pragma_value())?;
            self.durability = Some(durability);
        }
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    /// Runs the `UPDATE` `sql` on row `id` of `table` in one durable transaction; `NotFound`
    /// when no row changed.
    fn update_row(
        &mut self,
        table: &'static str,
        id: i64,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<(), StoreError> {
        let tx = self.write(Durability::Full)?;
        let changed = tx.execute(sql, args)?;
        if changed == 0 {
            return Err(StoreError::NotFound { table, id });
        }
        tx.commit()?;
        Ok(())
    }

    // ---- inbox ----

    /// Stores a received SMS, or recognises it by `pdu_hash` as already stored.
    pub fn inbox_insert(&mut self, msg: &NewInboxSms) -> Result<InboxInsert, StoreError> {
        let tx = self.write(Durability::Full)?;
        let result = insert_inbox_row(
            &tx,
            &msg.pdu_hash,
            &msg.from,
            &msg.text,
            msg.sent_at,
            Utc::now(),
            msg.incomplete,
        )?;
        tx.commit()?;
        Ok(result)
    }

    /// [`Store::inbox_insert`], recording the sender's type-of-address in the same
    /// transaction (a new row only).
    pub fn inbox_insert_kind(
        &mut self,
        msg: &NewInboxSms,
        kind: SenderKind,
    ) -> Result<InboxInsert, StoreError> {
        let tx = self.write(Durability::Full)?;
        let result = insert_inbox_row(
            &tx,
            &msg.pdu_hash,
            &msg.from,
            &msg.text,
            msg.sent_at,
            Utc::now(),
            msg.incomplete,
        )?;
        if let InboxInsert::New(id) = result {
            tx.execute(
                "UPDATE inbox SET sender_kind = ?2 WHERE id = ?1",
                params![id, kind.as_str()],
            )?;
        }
        tx.commit()?;
        Ok(result)
    }

    /// Records the sender's type-of-address of inbox row `id` (a concatenated message, once
    /// its last part arrived).
    pub fn inbox_set_sender_kind(&mut self, id: i64, kind: SenderKind) -> Result<(), StoreError> {
        self.update_row(
            "inbox",
            id,
            "UPDATE inbox SET sender_kind = ?2 WHERE id = ?1",
            params![id, kind.as_str()],
        )
    }

    /// Records that the message was handed to the consumers, so it is not delivered again on
    /// start-up.
    pub fn inbox_mark_delivered(&mut self, id: i64) -> Result<(), StoreError> {
        self.update_row(
            "inbox",
            id,
            "UPDATE inbox SET delivered_at = ?2 WHERE id = ?1",
            params![id, Utc::now().timestamp_millis()],
        )
    }

    /// Whether inbox row `id` was marked delivered (by [`Store::inbox_mark_delivered`] or
    /// [`Store::commit_dispatch`]); `None` when there is no such row.
    pub fn inbox_delivered(&mut self, id: i64) -> Result<Option<bool>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT delivered_at IS NOT NULL FROM inbox WHERE id = ?1")?;
        Ok(stmt.query_row([id], |row| row.get(0)).optional()?)
    }

    /// Records, in ONE transaction, that inbox row `inbox_id` was handled and what handling it
    /// left behind: the replies to send and the script data to save. A crash before the commit
    /// redelivers the message with none of its effects kept; after it, the message is never
    /// delivered again and every reply is in the outbox. Caps apply to each reply as in
    /// [`Store::outbox_insert`]: a capped one is recorded failed. Script data that is not
    /// valid JSON is logged and skipped, so one bad value cannot make a message undeliverable.
    pub fn commit_dispatch(
        &mut self,
        inbox_id: i64,
        outbox: &[NewOutboxSms],
        kv: &[KvChange],
    ) -> Result<DispatchCommit, StoreError> {
        self.commit_dispatch_masked(inbox_id, outbox, kv, None)
    }

    /// [`Store::commit_dispatch`] that also rewrites the inbox row's text as `masked` (the
    /// secrets a script marked replaced by `***`), in the same transaction. The clear text is
    /// then wiped from the files: `secure_delete` zeroes the old row, and the write-ahead log
    /// that still held it is checkpointed and truncated.
    pub fn commit_dispatch_masked(
        &mut self,
        inbox_id: i64,
        outbox: &[NewOutboxSms],
        kv: &[KvChange],
        masked: Option<&str>,
    ) -> Result<DispatchCommit, StoreError> {
        let limits = self.limits.clone();
        let now = Utc::now();
        let tx = self.write(Durability::Full)?;
        let delivered: Option<bool> = tx
            .query_row(
                "SELECT delivered_at IS NOT NULL FROM inbox WHERE id = ?1",
                [inbox_id],
                |row| row.get(0),
            )
            .optional()?;
        match delivered {
            None => {
                return Err(StoreError::NotFound {
                    table: "inbox",
                    id: inbox_id,
                })
            }
            Some(true) => return Ok(DispatchCommit::AlreadyDelivered),
            Some(false) => {}
        }
        tx.execute(
            "UPDATE inbox SET delivered_at = ?2 WHERE id = ?1",
            params![inbox_id, now.timestamp_millis()],
        )?;
        if let Some(text) = masked {
            tx.execute(
                "UPDATE inbox SET text = ?2 WHERE id = ?1",
                params![inbox_id, text],
            )?;
        }
        let mut queued = Vec::with_capacity(outbox.len());
        for sms in outbox {
            let (id, capped) = insert_outbox_row(&tx, &limits, sms, now)?;
            queued.push(QueuedSms { id, capped });
        }
        for change in kv {
            if let Some(value) = &change.value {
                if let Err(e) = check_json(&change.scope, &change.key, value) {
                    tracing::warn!(error = %e, "script data not saved");
                    continue;
                }
            }
            write_kv(&tx, &change.scope, &change.key, change.value.as_deref())?;
        }
        tx.commit()?;
        if masked.is_some() {
            self.wipe_log();
        }
        Ok(DispatchCommit::Committed(queued))
    }

    /// Copies the write-ahead log into the database and truncates it to nothing, so that
    /// page images it held (a row before it was masked) are gone from the disk. Best effort:
    /// a reader holding an old snapshot makes it wait for the next one.
    fn wipe_log(&mut self) {
        let result: rusqlite::Result<(i64, i64, i64)> =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                });
        match result {
            Ok((0, _, _)) => {}
            Ok((busy, _, _)) => {
                tracing::warn!(
                    busy,
                    "store: the log could not be truncated now (a reader is busy)"
                );
            }
            Err(e) => tracing::warn!(error = %e, "store: the log could not be truncated"),
        }
    }

    /// The messages stored but never marked delivered, oldest first: delivered on start-up.
    pub fn inbox_undelivered(&mut self) -> Result<Vec<InboxRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, sender, text, sent_at, received_at, incomplete, sender_kind FROM inbox \
             WHERE delivered_at IS NULL ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], inbox_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// One inbox row.
    pub fn inbox_get(&mut self, id: i64) -> Result<Option<InboxRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, sender, text, sent_at, received_at, incomplete, sender_kind FROM inbox \
             WHERE id = ?1",
        )?;
        Ok(stmt.query_row([id], inbox_row).optional()?)
    }

    // ---- concatenated parts ----

    /// Stores one part of a concatenated SMS. When it completes its message (all `total`
    /// parts of the same sender, reference and total are present), the parts are joined in
    /// order into one inbox row in the same transaction and removed.
    pub fn part_insert(&mut self, p: &NewPart) -> Result<PartInsert, StoreError> {
        if p.total == 0 || p.seq == 0 || p.seq > p.total {
            return Err(StoreError::InvalidPart {
                from: p.from.clone(),
                seq: p.seq,
                total: p.total,
            });
        }
        let now = Utc::now();
        let tx = self.write(Durability::Full)?;
        let known: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM sms_parts WHERE pdu_hash = ?1) \
                 OR EXISTS (SELECT 1 FROM sms_parts_consumed WHERE pdu_hash = ?1)",
            [&p.pdu_hash],
            |row| row.get(0),
        )?;
        if known {
            return Ok(PartInsert::Duplicate);
        }
        let same_seq: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM sms_parts \
             WHERE sender = ?1 AND reference = ?2 AND total = ?3 AND seq = ?4)",
            params![p.from, p.reference, p.total, p.seq],
            |row| row.get(0),
        )?;
        if same_seq {
            // A retransmission by the network, with a different time stamp: the first wins.
            tracing::debug!(
                from = %p.from, reference = p.reference, seq = p.seq,
                "SMS part already stored under another hash; ignored"
            );
            return Ok(PartInsert::Duplicate);
        }
        tx.execute(
            "INSERT INTO sms_parts \
             (pdu_hash, sender, reference, total, seq, text, sent_at, received_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                p.pdu_hash,
                p.from,
                p.reference,
                p.total,
                p.seq,
                p.text,
                p.sent_at.map(|t| t.to_rfc3339()),
                now.timestamp_millis()
            ],
        )?;
        let group = PartGroup {
            from: p.from.clone(),
            reference: p.reference,
            total: p.total,
        };
        let parts = group.parts(&tx)?;
        if parts.len() < usize::from(p.total) {
            tx.commit()?;
            return Ok(PartInsert::Pending);
        }
        let id = group.assemble(&tx, &parts, now)?;
        tx.commit()?;
        Ok(PartInsert::Complete(id))
    }

    /// Gives up waiting for the missing parts of every message whose first part arrived
    /// before `older_than`: each becomes an inbox row marked incomplete, with
    /// [`MISSING_PART_MARKER`] where each missing part would be. Returns the new inbox ids, to
    /// deliver. Also forgets assembled-part hashes far older than `older_than`.
    ///
    /// After downtime, read the SIM (the `AT+CMGL` sweep) before calling this, or a missing
    /// part still waiting there arrives too late.
    pub fn parts_expire(&mut self, older_than: DateTime<Utc>) -> Result<Vec<i64>, StoreError> {
        let now = Utc::now();
        let tx = self.write(Durability::Full)?;
        let groups = {
            let mut stmt = tx.prepare_cached(
                "SELECT sender, reference, total FROM sms_parts GROUP BY sender, reference, total \
                 HAVING MIN(received_at) < ?1 ORDER BY MIN(received_at)",
            )?;
            let groups = stmt
                .query_map([older_than.timestamp_millis()], |row| {
                    Ok(PartGroup {
                        from: row.get(0)?,
                        reference: row.get(1)?,
                        total: row.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            groups
        };
        let mut ids = Vec::with_capacity(groups.len());
        for group in groups {
            let parts = group.parts(&tx)?;
            let id = group.assemble(&tx, &parts, now)?;
            tracing::info!(
                from = %group.from, reference = group.reference, total = group.total,
                present = parts.len(), inbox_id = id,
                "concatenated SMS incomplete after timeout; delivered with markers"
            );
            ids.push(id);
        }
        tx.execute(
            "DELETE FROM sms_parts_consumed WHERE consumed_at < ?1",
            [(older_than - CONSUMED_PART_MEMORY).timestamp_millis()],
        )?;
        tx.commit()?;
        Ok(ids)
    }

    // ---- outbox ----

    /// Queues an outgoing SMS to `to` (normalised), checking the recipient and the caps of
    /// `[sms]` over the parts queued or sent in the hour and the day before `now`. Refused or
    /// over a cap, the row is still recorded, as `failed` with the reason, and
    /// [`StoreError::Capped`] carries its id. A cap of 0 allows nothing. A message counts as
    /// many times as it has parts.
    pub fn outbox_insert(
        &mut self,
        to: &str,
        text: &str,
        request_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let sms = NewOutboxSms {
            to: to.to_string(),
            text: text.to_string(),
            request_id: request_id.map(str::to_string),
            priority: false,
        };
        self.outbox_queue(&sms, now)
    }

    /// [`Store::outbox_insert`] for `sms`, which may ask for the priority reserve.
    pub fn outbox_queue(
        &mut self,
        sms: &NewOutboxSms,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let limits = self.limits.clone();
        let tx = self.write(Durability::Full)?;
        let (id, capped) = insert_outbox_row(&tx, &limits, sms, now)?;
        tx.commit()?;
        match capped {
            Some(reason) => Err(StoreError::Capped { id, reason }),
            None => Ok(id),
        }
    }

    /// The queued outgoing SMS, oldest first.
    pub fn outbox_pending(&mut self) -> Result<Vec<OutboxRow>, StoreError> {
        let ids = {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT id FROM outbox WHERE status = 'queued' ORDER BY id")?;
            let ids = stmt
                .query_map([], |row| row.get::<_, i64>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            ids
        };
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = self.outbox_get(id)? {
                rows.push(row);
            }
        }
        Ok(rows)
    }

    /// Records that part `part_index` (0-based) of row `id` was accepted with `message_ref`,
    /// so that after a crash only the parts after it are sent again. Parts are recorded in
    /// order; recording an already recorded part again replaces its reference.
    pub fn outbox_record_part(
        &mut self,
        id: i64,
        part_index: usize,
        message_ref: u8,
    ) -> Result<(), StoreError> {
        let tx = self.write(Durability::Full)?;
        let recorded: Option<usize> = tx
            .query_row(
                "SELECT (SELECT COUNT(*) FROM outbox_parts WHERE outbox_id = ?1) \
                 FROM outbox WHERE id = ?1",
                [id],
                |row| row.get(0),
            )
            .optional()?;
        let next = recorded.ok_or(StoreError::NotFound {
            table: "outbox",
            id,
        })?;
        if part_index > next {
            return Err(StoreError::PartOutOfOrder {
                id,
                part_index,
                next,
            });
        }
        tx.execute(
            "INSERT INTO outbox_parts (outbox_id, part_index, message_ref) VALUES (?1, ?2, ?3) \
             ON CONFLICT (outbox_id, part_index) DO UPDATE SET message_ref = excluded.message_ref",
            params![id, part_index, message_ref],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks row `id` sent (every part accepted).
    pub fn outbox_mark_sent(&mut self, id: i64) -> Result<(), StoreError> {
        self.update_row(
            "outbox",
            id,
            "UPDATE outbox SET status = 'sent', sent_at = ?2 WHERE id = ?1",
            params![id, Utc::now().timestamp_millis()],
        )
    }

    /// Counts a failed attempt to send queued row `id` and records `error`; at `max_attempts`
    /// the row is marked failed. Returns the row's status afterwards (a row no longer queued
    /// is left as it is).
    pub fn outbox_attempt_failed(
        &mut self,
        id: i64,
        error: &str,
        max_attempts: u32,
    ) -> Result<OutboxStatus, StoreError> {
        let tx = self.write(Durability::Full)?;
        let status: Option<String> = tx
            .query_row(
                "UPDATE outbox SET attempts = attempts + 1, error = ?2, \
                    status = CASE WHEN attempts + 1 >= ?3 THEN 'failed' ELSE status END \
                 WHERE id = ?1 AND status = 'queued' RETURNING status",
                params![id, error, max_attempts],
                |row| row.get(0),
            )
            .optional()?;
        let status = match status {
            Some(status) => status,
            None => tx
                .query_row("SELECT status FROM outbox WHERE id = ?1", [id], |row| {
                    row.get(0)
                })
                .optional()?
                .ok_or(StoreError::NotFound {
                    table: "outbox",
                    id,
                })?,
        };
        let status = OutboxStatus::parse(0, &status)?;
        tx.commit()?;
        Ok(status)
    }

    /// One outbox row.
    pub fn outbox_get(&mut self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, recipient, text, request_id, attempts, status, error, created_at, \
                        sent_at, delivery_status \
                 FROM outbox WHERE id = ?1",
        )?;
        let row = stmt
            .query_row([id], |row| {
                Ok(OutboxRow {
                    id: row.get(0)?,
                    to: row.get(1)?,
                    text: row.get(2)?,
                    request_id: row.get(3)?,
                    attempts: row.get(4)?,
                    status: OutboxStatus::parse(5, &row.get::<_, String>(5)?)?,
                    parts_sent: Vec::new(),
                    error: row.get(6)?,
                    created_at: utc_column(row, 7)?,
                    sent_at: optional_utc_column(row, 8)?,
                    delivery_status: row.get(9)?,
                })
            })
            .optional()?;
        let Some(mut row) = row else { return Ok(None) };
        let mut stmt = self.conn.prepare_cached(
            "SELECT message_ref FROM outbox_parts WHERE outbox_id = ?1 ORDER BY part_index",
        )?;
        row.parts_sent = stmt
            .query_map([id], |r| r.get(0))?
            .collect::<Result<Vec<u8>, _>>()?;
        Ok(Some(row))
    }

    /// The outbox row a delivery report belongs to: the newest row to `to` with a part sent
    /// under `message_ref`, preferring rows that have no report yet (references wrap at 256).
    pub fn outbox_match_report(
        &mut self,
        message_ref: u8,
        to: &str,
    ) -> Result<Option<i64>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT o.id, o.recipient, o.delivery_status IS NULL AS waiting \
             FROM outbox o JOIN outbox_parts p ON p.outbox_id = o.id \
             WHERE p.message_ref = ?1 ORDER BY waiting DESC, o.id DESC LIMIT 64",
        )?;
        let candidates = stmt
            .query_map([message_ref], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        // The report carries the recipient as the network formats it, which may differ from
        // how it was stored ("+44…", "44…", "07…"); the reference already narrows the rows
        // down, so the last digits are enough to tell them apart.
        Ok(candidates
            .into_iter()
            .find(|(_, recipient)| recipient_matches(recipient, to))
            .map(|(id, _)| id))
    }

    /// Records the TP-Status of a delivery report for row `id`.
    pub fn outbox_set_delivery(&mut self, id: i64, status: u8) -> Result<(), StoreError> {
        self.update_row(
            "outbox",
            id,
            "UPDATE outbox SET delivery_status = ?2, delivered_at = ?3 WHERE id = ?1",
            params![id, status, Utc::now().timestamp_millis()],
        )
    }

    // ---- script data ----

    /// The JSON value stored under `key` in `scope` (a script's or dialect's name).
    pub fn kv_get(&mut self, scope: &str, key: &str) -> Result<Option<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT value FROM kv WHERE scope = ?1 AND key = ?2")?;
        Ok(stmt.query_row([scope, key], |row| row.get(0)).optional()?)
    }

    /// Stores the JSON `value` under `key` in `scope`; `None` deletes it.
    pub fn kv_set(
        &mut self,
        scope: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), StoreError> {
        if let Some(value) = value {
            check_json(scope, key, value)?;
        }
        let tx = self.write(Durability::Normal)?;
        write_kv(&tx, scope, key, value)?;
        tx.commit()?;
        Ok(())
    }

    /// Every key and JSON value in `scope`.
    pub fn kv_all(&mut self, scope: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, value FROM kv WHERE scope = ?1")?;
        let all = stmt
            .query_map([scope], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        Ok(all)
    }

    // ---- outputs ----

    /// Records the last state of output `name`, restored at start-up.
    pub fn output_state_set(&mut self, name: &str, on: bool) -> Result<(), StoreError> {
        let tx = self.write(Durability::Full)?;
        tx.execute(
            "INSERT INTO outputs (name, is_on, changed_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET is_on = excluded.is_on, changed_at = excluded.changed_at",
            params![name, on, Utc::now().timestamp_millis()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The last recorded state of every output.
    pub fn output_states(&mut self) -> Result<HashMap<String, bool>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, is_on FROM outputs")?;
        let states = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<HashMap<_, _>, _>>()?;
        Ok(states)
    }

    // ---- calls ----

    /// Logs an incoming call and what was done with it. Returns the row id.
    pub fn call_log(
        &mut self,
        from: Option<&str>,
        started_at: DateTime<Utc>,
        ended_at: DateTime<Utc>,
        action: &str,
    ) -> Result<i64, StoreError> {
        let tx = self.write(Durability::Normal)?;
        tx.execute(
            "INSERT INTO calls (caller, started_at, ended_at, action) VALUES (?1, ?2, ?3, ?4)",
            params![
                from,
                started_at.timestamp_millis(),
                ended_at.timestamp_millis(),
                action
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// The last `limit` calls, newest first.
    pub fn calls_recent(&mut self, limit: u32) -> Result<Vec<CallRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, caller, started_at, ended_at, action FROM calls ORDER BY id DESC LIMIT ?1",
        )?;
        let calls = stmt
            .query_map([limit], |row| {
                Ok(CallRow {
                    id: row.get(0)?,
                    from: row.get(1)?,
                    started_at: utc_column(row, 2)?,
                    ended_at: utc_column(row, 3)?,
                    action: row.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(calls)
    }
}

/// The parts of one concatenated message share sender, reference and total.
struct PartGroup {
    from: String,
    reference: u16,
    total: u8,
}

/// A stored part, as needed to assemble its message.
struct StoredPart {
    pdu_hash: String,
    seq: u8,
    text: String,
    sent_at: Option<DateTime<FixedOffset>>,
}

impl PartGroup {
    /// The group's stored parts in sequence order.
    fn parts(&self, tx: &Transaction<'_>) -> Result<Vec<StoredPart>, StoreError> {
        let mut stmt = tx.prepare_cached(
            "SELECT pdu_hash, seq, text, sent_at FROM sms_parts \
             WHERE sender = ?1 AND reference = ?2 AND total = ?3 ORDER BY seq",
        )?;
        let parts = stmt
            .query_map(params![self.from, self.reference, self.total], |row| {
                Ok(StoredPart {
                    pdu_hash: row.get(0)?,
                    seq: row.get(1)?,
                    text: row.get(2)?,
                    sent_at: offset_column(row, 3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(parts)
    }

    /// Joins `parts` (in seq order) into one inbox row, a marker for each missing part,
    /// remembers their hashes and deletes them.
    fn assemble(
        &self,
        tx: &Transaction<'_>,
        parts: &[StoredPart],
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let mut text = String::new();
        let mut present = parts.iter().peekable();
        for seq in 1..=self.total {
            match present.next_if(|part| part.seq == seq) {
                Some(part) => text.push_str(&part.text),
                None => text.push_str(MISSING_PART_MARKER),
            }
        }
        let incomplete = parts.len() < usize::from(self.total);
        // The message's time is its first part's; if that is missing, the earliest we have.
        let sent_at = parts.iter().find_map(|part| part.sent_at);
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(part.pdu_hash.as_bytes());
            hasher.update(b"\n");
        }
        let pdu_hash = format!("parts:{}", hex::encode(hasher.finalize()));
        let id = match insert_inbox_row(tx, &pdu_hash, &self.from, &text, sent_at, now, incomplete)?
        {
            InboxInsert::New(id) | InboxInsert::Duplicate(id) => id,
        };
        let mut remember = tx.prepare_cached(
            "INSERT OR REPLACE INTO sms_parts_consumed (pdu_hash, inbox_id, consumed_at) \
             VALUES (?1, ?2, ?3)",
        )?;
        for part in parts {
            remember.execute(params![part.pdu_hash, id, now.timestamp_millis()])?;
        }
        tx.execute(
            "DELETE FROM sms_parts WHERE sender = ?1 AND reference = ?2 AND total = ?3",
            params![self.from, self.reference, self.total],
        )?;
        Ok(id)
    }
}

/// [`StoreError::InvalidJson`] unless `value` is JSON.
fn check_json(scope: &str, key: &str, value: &str) -> Result<(), StoreError> {
    serde_json::from_str::<serde::de::IgnoredAny>(value).map_err(|source| {
        StoreError::InvalidJson {
            scope: scope.to_string(),
            key: key.to_string(),
            source,
        }
    })?;
    Ok(())
}

/// Sets (or with `None` deletes) one script-data value inside `tx`.
fn write_kv(
    tx: &Transaction<'_>,
    scope: &str,
    key: &str,
    value: Option<&str>,
) -> Result<(), StoreError> {
    match value {
        Some(value) => tx.execute(
            "INSERT INTO kv (scope, key, value) VALUES (?1, ?2, ?3) \
             ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value",
            [scope, key, value],
        )?,
        None => tx.execute("DELETE FROM kv WHERE scope = ?1 AND key = ?2", [scope, key])?,
    };
    Ok(())
}

/// The kv scope where `gw.auth.grant` records enrolled numbers (key = normalised number).
const ENROLMENT_SCOPE: &str = "gateway:enrolled";

/// Inserts one outgoing SMS inside `tx`. Every outgoing SMS passes here, whoever sent it
/// (plugins, rules, MQTT, the CLI), so this is the one place that refuses recipients (see
/// [`recipient_refusal`]) and applies the caps of `limits` over the message *parts* queued or
/// sent in the hour and the day before `now`; a message that is not `priority` must also leave
/// `priority_reserve` parts of each cap free. Returns the row id and, when refused or capped,
/// the reason (the row is then recorded as failed).
fn insert_outbox_row(
    tx: &Transaction<'_>,
    limits: &SmsConfig,
    sms: &NewOutboxSms,
    now: DateTime<Utc>,
) -> Result<(i64, Option<String>), StoreError> {
    let to = crate::phone::normalise(&sms.to, limits.country_code.as_deref());
    let (text, request_id) = (sms.text.as_str(), sms.request_id.as_deref());
    let parts = u32::try_from(crate::modem::pdu::part_count(text)).unwrap_or(u32::MAX);
    let refused = match recipient_refusal(tx, limits, &to)? {
        Some(reason) => Some(reason),
        None => cap_reached(tx, limits, &to, parts, sms.priority, now)?,
    };
    let (status, error) = match &refused {
        Some(reason) => (OutboxStatus::Failed, Some(reason.as_str())),
        None => (OutboxStatus::Queued, None),
    };
    tx.execute(
        "INSERT INTO outbox (recipient, text, request_id, status, error, created_at, parts) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            to,
            text,
            request_id,
            status.as_str(),
            error,
            now.timestamp_millis(),
            parts
        ],
    )?;
    Ok((tx.last_insert_rowid(), refused))
}

/// Why `parts` more parts to `to` would pass a cap, if they would.
fn cap_reached(
    tx: &Transaction<'_>,
    limits: &SmsConfig,
    to: &str,
    parts: u32,
    priority: bool,
    now: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let hour_ago = (now - TimeDelta::hours(1)).timestamp_millis();
    let day_ago = (now - TimeDelta::days(1)).timestamp_millis();
    let (all_hour, all_day, to_hour, to_day): (u32, u32, u32, u32) = tx.query_row(
        "SELECT COALESCE(SUM(CASE WHEN created_at > ?1 THEN parts END), 0), \
                COALESCE(SUM(parts), 0), \
                COALESCE(SUM(CASE WHEN recipient = ?3 AND created_at > ?1 THEN parts END), 0), \
                COALESCE(SUM(CASE WHEN recipient = ?3 THEN parts END), 0) \
             FROM outbox WHERE status IN ('queued', 'sent') AND created_at > ?2",
        params![hour_ago, day_ago, to],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
    )?;
    let reserve = if priority { 0 } else { limits.priority_reserve };
    let gateway = String::new();
    let recipient = format!(" to {to}");
    let caps = [
        (
            all_hour,
            limits.max_per_hour,
            &gateway,
            "hour",
            "max_per_hour",
        ),
        (all_day, limits.max_per_day, &gateway, "day", "max_per_day"),
        (
            to_hour,
            limits.max_per_recipient_per_hour,
            &recipient,
            "hour",
            "max_per_recipient_per_hour",
        ),
        (
            to_day,
            limits.max_per_recipient_per_day,
            &recipient,
            "day",
            "max_per_recipient_per_day",
        ),
    ];
    let reason = caps
        .into_iter()
        .find(|(count, max, ..)| count.saturating_add(parts) > max.saturating_sub(reserve))
        .map(|(count, max, scope, window, key)| {
            let held = if reserve > 0 && max > 0 {
                format!(", {reserve} kept for priority SMS by sms.priority_reserve")
            } else {
                String::new()
            };
            format!(
                "{count} SMS parts{scope} sent or queued in the last {window}, {parts} more \
                 would pass the limit (sms.{key} = {max}{held})"
            )
        });
    Ok(reason)
}

/// Why no SMS may go to `to` (normalised), if so: a number in `sms.deny_prefixes` (premium
/// ranges; nothing overrides it), a number outside a non-empty `sms.allow_prefixes`, or an
/// alphanumeric address, short code or number with fewer than 8 digits that is neither listed
/// in `sms.allow_recipients` nor enrolled.
fn recipient_refusal(
    tx: &Transaction<'_>,
    limits: &SmsConfig,
    to: &str,
) -> Result<Option<String>, StoreError> {
    let cc = limits.country_code.as_deref();
    let norm = |p: &str| crate::phone::normalise(p, cc);
    if let Some(p) = limits
        .deny_prefixes
        .iter()
        .find(|p| to.starts_with(norm(p).as_str()))
    {
        return Ok(Some(format!(
            "recipient {to} refused: it starts with {p} (sms.deny_prefixes)"
        )));
    }
    let listed = limits
        .allow_recipients
        .iter()
        .any(|r| norm(r).eq_ignore_ascii_case(to));
    if listed {
        return Ok(None);
    }
    if !limits.allow_prefixes.is_empty()
        && !limits
            .allow_prefixes
            .iter()
            .any(|p| to.starts_with(norm(p).as_str()))
    {
        return Ok(Some(format!(
            "recipient {to} refused: it starts with none of sms.allow_prefixes"
        )));
    }
    let digits = to.strip_prefix('+').unwrap_or(to);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Ok(Some(format!(
            "recipient {to:?} refused: not a phone number (help: list it in sms.allow_recipients)"
        )));
    }
    if digits.len() < MIN_RECIPIENT_DIGITS && !enrolled(tx, to)? {
        return Ok(Some(format!(
            "recipient {to} refused: a short code or a number of fewer than \
             {MIN_RECIPIENT_DIGITS} digits (help: list it in sms.allow_recipients)"
        )));
    }
    Ok(None)
}

/// Numbers with fewer digits are short codes (often premium services), never sent to unless
/// listed or enrolled.
const MIN_RECIPIENT_DIGITS: usize = 8;

/// True when a script enrolled `number` (`gw.auth.grant`).
fn enrolled(tx: &Transaction<'_>, number: &str) -> Result<bool, StoreError> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM kv WHERE scope = ?1 AND key = ?2",
            params![ENROLMENT_SCOPE, number],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Creates the database file with mode 0600 if it does not exist, and makes an existing one
/// private: it holds messages, numbers and script data.
fn private_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
    }
    make_private(path)
}

fn make_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode != 0o600 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// True when a delivery report's recipient is the stored recipient.
fn recipient_matches(stored: &str, reported: &str) -> bool {
    const REPORT_MATCH_DIGITS: usize = 8;
    stored == reported
        || crate::phone::same(stored, reported, None, None)
        || crate::phone::same(stored, reported, None, Some(REPORT_MATCH_DIGITS))
}

fn insert_inbox_row(
    tx: &Transaction<'_>,
    pdu_hash: &str,
    from: &str,
    text: &str,
    sent_at: Option<DateTime<FixedOffset>>,
    received_at: DateTime<Utc>,
    incomplete: bool,
) -> Result<InboxInsert, StoreError> {
    let inserted = tx.execute(
        "INSERT INTO inbox (pdu_hash, sender, text, sent_at, received_at, incomplete) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (pdu_hash) DO NOTHING",
        params![
            pdu_hash,
            from,
            text,
            sent_at.map(|t| t.to_rfc3339()),
            received_at.timestamp_millis(),
            incomplete
        ],
    )?;
    if inserted == 1 {
        return Ok(InboxInsert::New(tx.last_insert_rowid()));
    }
    let id = tx.query_row(
        "SELECT id FROM inbox WHERE pdu_hash = ?1",
        [pdu_hash],
        |row| row.get(0),
    )?;
    Ok(InboxInsert::Duplicate(id))
}

fn inbox_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<InboxRow> {
    Ok(InboxRow {
        id: row.get(0)?,
        from: row.get(1)?,
        text: row.get(2)?,
        sent_at: offset_column(row, 3)?,
        received_at: utc_column(row, 4)?,
        incomplete: row.get(5)?,
        sender_kind: row
            .get::<_, Option<String>>(6)?
            .as_deref()
            .and_then(SenderKind::parse),
    })
}

fn conversion_error(column: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        Box::<dyn std::error::Error + Send + Sync>::from(message),
    )
}

fn utc_column(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<DateTime<Utc>> {
    let millis: i64 = row.get(column)?;
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| conversion_error(column, format!("time {millis} ms out of range")))
}

fn optional_utc_column(
    row: &rusqlite::Row<'_>,
    column: usize,
) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get::<_, Option<i64>>(column)? {
        None => Ok(None),
        Some(_) => utc_column(row, column).map(Some),
    }
}

fn offset_column(
    row: &rusqlite::Row<'_>,
    column: usize,
) -> rusqlite::Result<Option<DateTime<FixedOffset>>> {
    match row.get::<_, Option<String>>(column)? {
        None => Ok(None),
        Some(text) => DateTime::parse_from_rfc3339(&text)
            .map(Some)
            .map_err(|e| conversion_error(column, format!("time {text:?}: {e}"))),
    }
}
