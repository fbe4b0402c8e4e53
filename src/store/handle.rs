//! The async face of the store: one OS thread owns the [`Store`]; tasks hold [`StoreHandle`]s
//! that send it work over a bounded channel and await the reply on a oneshot.
//!
//! Why a dedicated thread and not `spawn_blocking` per call: rusqlite blocks (an fsync with
//! `synchronous=FULL` on an SD card can take tens of milliseconds), and the connection must be
//! used by one thread at a time. A thread that owns it needs no mutex, keeps the prepared
//! statement cache warm, runs requests strictly in the order they were sent (an inbox insert
//! is never overtaken by its own mark-delivered), applies back-pressure through the bounded
//! queue instead of piling up blocking-pool threads, and closes the connection (checkpointing
//! the WAL) at a known point when it ends.

use std::collections::{BTreeMap, HashMap};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    CallRow, DispatchCommit, InboxInsert, InboxRow, KvChange, NewInboxSms, NewOutboxSms, NewPart,
    OutboxRow, OutboxStatus, PartInsert, Pruned, Store, StoreError,
};

/// Requests waiting for the store thread before senders wait their turn.
const QUEUE_DEPTH: usize = 64;

/// One unit of work: runs a `Store` method and returns what the result tells about the file,
/// and the delivery of the result on the oneshot it captured. The thread records the health
/// first, so a caller that sees an error also sees it in [`StoreHandle::health`].
type Job = Box<dyn FnOnce(&mut Store) -> (Verdict, Reply) + Send>;

/// Sends a job's result to its caller.
type Reply = Box<dyn FnOnce() + Send>;

/// What one job's result says about the store's health.
enum Verdict {
    /// It succeeded.
    Fine,
    /// It failed for a reason that says nothing about the file (a row not found, a cap).
    Neutral,
    /// The file has a problem that may pass (disk full, locked, read-only).
    Problem(String),
    /// The file cannot be used any more: the thread ends.
    Fatal(String),
}

/// The store's health, as the store thread last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreHealth {
    /// What is wrong, in words with help; `None` while writes succeed.
    pub problem: Option<String>,
    /// True once the thread has ended because of `problem` (or a panic).
    pub fatal: bool,
}

enum Request {
    Run(Job),
    Shutdown,
}

/// A cloneable async handle to the store thread. Each method is the async twin of the
/// [`Store`] method of the same name; once the thread has ended they return
/// [`StoreError::Closed`].
///
/// A request that was queued runs even if the caller stops waiting for it, so a write is
/// either done completely or, with `Closed`, not at all.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    requests: mpsc::Sender<Request>,
    health: watch::Receiver<StoreHealth>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Run(_) => f.write_str("Run"),
            Request::Shutdown => f.write_str("Shutdown"),
        }
    }
}

/// Starts the thread that owns `store`. It ends, dropping the store (which closes the file),
/// when every handle is dropped or [`StoreHandle::shutdown`] is called, after finishing the
/// requests queued before that.
///
/// It also ends when a request finds the file unusable ([`StoreError::is_fatal`]: damaged,
/// moved away, failing disk) or a request panics; [`StoreHealth::fatal`] then says why, and
/// [`StoreHandle::closed`] resolves, so the gateway can stop and be restarted rather than
/// fail every SMS one by one.
pub fn spawn(store: Store) -> (StoreHandle, JoinHandle<()>) {
    let (requests, mut queue) = mpsc::channel(QUEUE_DEPTH);
    let (health_tx, health) = watch::channel(StoreHealth::default());
    let run = move || {
        let mut store = store;
        while let Some(request) = queue.blocking_recv() {
            let job = match request {
                Request::Run(job) => job,
                Request::Shutdown => break,
            };
            let writes = store.writes_begun;
            // A panic is a bug in one request; it must not leave the gateway running on a
            // store that no longer answers.
            let (verdict, reply) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut store)))
                    .unwrap_or_else(|panic| {
                        let why = format!("the store thread panicked: {}", panic_text(&panic));
                        // The caller's oneshot went down with the job: it sees `Closed`.
                        let nothing: Reply = Box::new(|| {});
                        (Verdict::Fatal(why), nothing)
                    });
            let wrote = store.writes_begun != writes;
            let fatal = matches!(verdict, Verdict::Fatal(_));
            health_tx.send_if_modified(|h| match verdict {
                // Reads succeed on a full or read-only disk: only a write proves it healed.
                Verdict::Fine if wrote && h.problem.is_some() => {
                    tracing::info!("store: writes succeed again");
                    h.problem = None;
                    true
                }
                Verdict::Fine | Verdict::Neutral => false,
                Verdict::Problem(p) => {
                    let changed = h.problem.as_ref() != Some(&p);
                    h.problem = Some(p);
                    changed
                }
                Verdict::Fatal(p) => {
                    tracing::error!(error = %p, "store: the file cannot be used any more; the store stops");
                    h.problem = Some(p);
                    h.fatal = true;
                    true
                }
            });
            reply();
            if fatal {
                break;
            }
        }
        tracing::debug!("store thread ends");
    };
    // Like `std::thread::spawn`, this fails only when the OS cannot create a thread at
    // start-up, where there is nothing sensible to continue with.
    let thread = match std::thread::Builder::new()
        .name("gsmgw-store".into())
        .spawn(run)
    {
        Ok(thread) => thread,
        Err(e) => panic!("cannot start the store thread: {e}"),
    };
    (StoreHandle { requests, health }, thread)
}

/// The message of a caught panic.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

impl StoreHandle {
    async fn call<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let result = work(store);
            let verdict = match &result {
                Ok(_) => Verdict::Fine,
                Err(e) if e.is_fatal() => Verdict::Fatal(e.to_string()),
                Err(e) => e
                    .health_problem()
                    .map_or(Verdict::Neutral, Verdict::Problem),
            };
            let deliver: Reply = Box::new(move || {
                // The caller may have stopped waiting; the work is done regardless.
                let _ = reply.send(result);
            });
            (verdict, deliver)
        });
        self.requests
            .send(Request::Run(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// The store's health, updated after every request.
    pub fn health(&self) -> watch::Receiver<StoreHealth> {
        self.health.clone()
    }

    /// Resolves when the store thread has ended (shut down, or stopped on a fatal error).
    pub async fn closed(&self) {
        self.requests.closed().await
    }

    /// Ends the store thread after the requests queued before this one; later calls on any
    /// handle return [`StoreError::Closed`].
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        self.requests
            .send(Request::Shutdown)
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// See [`Store::inbox_insert`].
    pub async fn inbox_insert(&self, msg: &NewInboxSms) -> Result<InboxInsert, StoreError> {
        let msg = msg.clone();
        self.call(move |s| s.inbox_insert(&msg)).await
    }

    /// See [`Store::inbox_insert_kind`].
    pub async fn inbox_insert_kind(
        &self,
        msg: &NewInboxSms,
        kind: crate::bus::SenderKind,
    ) -> Result<InboxInsert, StoreError> {
        let msg = msg.clone();
        self.call(move |s| s.inbox_insert_kind(&msg, kind)).await
    }

    /// See [`Store::inbox_set_sender_kind`].
    pub async fn inbox_set_sender_kind(
        &self,
        id: i64,
        kind: crate::bus::SenderKind,
    ) -> Result<(), StoreError> {
        self.call(move |s| s.inbox_set_sender_kind(id, kind)).await
    }

    /// See [`Store::inbox_mark_delivered`].
    pub async fn inbox_mark_delivered(&self, id: i64) -> Result<(), StoreError> {
        self.call(move |s| s.inbox_mark_delivered(id)).await
    }

    /// See [`Store::inbox_undelivered`].
    pub async fn inbox_undelivered(&self) -> Result<Vec<InboxRow>, StoreError> {
        self.call(Store::inbox_undelivered).await
    }

    /// See [`Store::inbox_delivered`].
    pub async fn inbox_delivered(&self, id: i64) -> Result<Option<bool>, StoreError> {
        self.call(move |s| s.inbox_delivered(id)).await
    }

    /// See [`Store::inbox_begin_dispatch`].
    pub async fn inbox_begin_dispatch(
        &self,
        id: i64,
    ) -> Result<Option<super::DispatchAttempt>, StoreError> {
        self.call(move |s| s.inbox_begin_dispatch(id)).await
    }

    /// See [`Store::inbox_dispatch_failed`].
    pub async fn inbox_dispatch_failed(&self, id: i64, error: String) -> Result<(), StoreError> {
        self.call(move |s| s.inbox_dispatch_failed(id, &error))
            .await
    }

    /// See [`Store::inbox_quarantine`].
    pub async fn inbox_quarantine(&self, id: i64, error: String) -> Result<(), StoreError> {
        self.call(move |s| s.inbox_quarantine(id, &error)).await
    }

    /// See [`Store::commit_dispatch_masked`].
    pub async fn commit_dispatch(
        &self,
        inbox_id: i64,
        outbox: Vec<NewOutboxSms>,
        kv: Vec<KvChange>,
        masked: Option<String>,
    ) -> Result<DispatchCommit, StoreError> {
        self.call(move |s| s.commit_dispatch_masked(inbox_id, &outbox, &kv, masked.as_deref()))
            .await
    }

    /// See [`Store::inbox_get`].
    pub async fn inbox_get(&self, id: i64) -> Result<Option<InboxRow>, StoreError> {
        self.call(move |s| s.inbox_get(id)).await
    }

    /// See [`Store::part_insert`].
    pub async fn part_insert(&self, p: &NewPart) -> Result<PartInsert, StoreError> {
        let p = p.clone();
        self.call(move |s| s.part_insert(&p)).await
    }

    /// See [`Store::parts_expire`].
    pub async fn parts_expire(&self, older_than: DateTime<Utc>) -> Result<Vec<i64>, StoreError> {
        self.call(move |s| s.parts_expire(older_than)).await
    }

    /// See [`Store::outbox_insert`].
    pub async fn outbox_insert(
        &self,
        to: &str,
        text: &str,
        request_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let (to, text, request_id) = (
            to.to_string(),
            text.to_string(),
            request_id.map(String::from),
        );
        self.call(move |s| s.outbox_insert(&to, &text, request_id.as_deref(), now))
            .await
    }

    /// See [`Store::outbox_queue`].
    pub async fn outbox_queue(
        &self,
        sms: NewOutboxSms,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        self.call(move |s| s.outbox_queue(&sms, now)).await
    }

    /// See [`Store::outbox_pending`].
    pub async fn outbox_pending(&self) -> Result<Vec<OutboxRow>, StoreError> {
        self.call(Store::outbox_pending).await
    }

    /// See [`Store::outbox_record_part`].
    pub async fn outbox_record_part(
        &self,
        id: i64,
        part_index: usize,
        message_ref: u8,
    ) -> Result<(), StoreError> {
        self.call(move |s| s.outbox_record_part(id, part_index, message_ref))
            .await
    }

    /// See [`Store::outbox_mark_sent`].
    pub async fn outbox_mark_sent(&self, id: i64) -> Result<(), StoreError> {
        self.call(move |s| s.outbox_mark_sent(id)).await
    }

    /// See [`Store::outbox_attempt_failed`].
    pub async fn outbox_attempt_failed(
        &self,
        id: i64,
        error: &str,
        max_attempts: u32,
    ) -> Result<OutboxStatus, StoreError> {
        let error = error.to_string();
        self.call(move |s| s.outbox_attempt_failed(id, &error, max_attempts))
            .await
    }

    /// See [`Store::outbox_get`].
    pub async fn outbox_get(&self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        self.call(move |s| s.outbox_get(id)).await
    }

    /// See [`Store::outbox_match_report`].
    pub async fn outbox_match_report(
        &self,
        message_ref: u8,
        to: &str,
    ) -> Result<Option<i64>, StoreError> {
        let to = to.to_string();
        self.call(move |s| s.outbox_match_report(message_ref, &to))
            .await
    }

    /// See [`Store::outbox_set_delivery`].
    pub async fn outbox_set_delivery(&self, id: i64, status: u8) -> Result<(), StoreError> {
        self.call(move |s| s.outbox_set_delivery(id, status)).await
    }

    /// See [`Store::kv_get`].
    pub async fn kv_get(&self, scope: &str, key: &str) -> Result<Option<String>, StoreError> {
        let (scope, key) = (scope.to_string(), key.to_string());
        self.call(move |s| s.kv_get(&scope, &key)).await
    }

    /// See [`Store::kv_set`].
    pub async fn kv_set(
        &self,
        scope: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), StoreError> {
        let (scope, key, value) = (scope.to_string(), key.to_string(), value.map(String::from));
        self.call(move |s| s.kv_set(&scope, &key, value.as_deref()))
            .await
    }

    /// See [`Store::kv_all`].
    pub async fn kv_all(&self, scope: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let scope = scope.to_string();
        self.call(move |s| s.kv_all(&scope)).await
    }

    /// See [`Store::output_state_set`].
    pub async fn output_state_set(&self, name: &str, on: bool) -> Result<(), StoreError> {
        let name = name.to_string();
        self.call(move |s| s.output_state_set(&name, on)).await
    }

    /// See [`Store::output_states`].
    pub async fn output_states(&self) -> Result<HashMap<String, bool>, StoreError> {
        self.call(Store::output_states).await
    }

    /// See [`Store::call_log`].
    pub async fn call_log(
        &self,
        from: Option<&str>,
        started_at: DateTime<Utc>,
        ended_at: DateTime<Utc>,
        action: &str,
    ) -> Result<i64, StoreError> {
        let (from, action) = (from.map(String::from), action.to_string());
        self.call(move |s| s.call_log(from.as_deref(), started_at, ended_at, &action))
            .await
    }

    /// See [`Store::prune`].
    pub async fn prune(&self, older_than: DateTime<Utc>) -> Result<Pruned, StoreError> {
        self.call(move |s| s.prune(older_than)).await
    }

    /// See [`Store::ping`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(Store::ping).await
    }

    /// See [`Store::calls_recent`].
    pub async fn calls_recent(&self, limit: u32) -> Result<Vec<CallRow>, StoreError> {
        self.call(move |s| s.calls_recent(limit)).await
    }
}
