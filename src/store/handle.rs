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
use tokio::sync::{mpsc, oneshot};

use super::{
    CallRow, DispatchCommit, InboxInsert, InboxRow, KvChange, NewInboxSms, NewOutboxSms, NewPart,
    OutboxRow, OutboxStatus, PartInsert, Store, StoreError,
};

/// Requests waiting for the store thread before senders wait their turn.
const QUEUE_DEPTH: usize = 64;

/// One unit of work: runs a `Store` method and sends its result on the oneshot it captured.
type Job = Box<dyn FnOnce(&mut Store) + Send>;

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
pub fn spawn(store: Store) -> (StoreHandle, JoinHandle<()>) {
    let (requests, mut queue) = mpsc::channel(QUEUE_DEPTH);
    let run = move || {
        let mut store = store;
        while let Some(request) = queue.blocking_recv() {
            match request {
                Request::Run(job) => job(&mut store),
                Request::Shutdown => break,
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
    (StoreHandle { requests }, thread)
}

impl StoreHandle {
    async fn call<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            // The caller may have stopped waiting; the work is done regardless.
            let _ = reply.send(work(store));
        });
        self.requests
            .send(Request::Run(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
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

    /// See [`Store::calls_recent`].
    pub async fn calls_recent(&self, limit: u32) -> Result<Vec<CallRow>, StoreError> {
        self.call(move |s| s.calls_recent(limit)).await
    }
}
