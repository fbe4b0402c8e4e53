//! The scripts' MQTT inbox: messages on the topics scripts subscribe to wait here, not on the
//! unbounded event bus. Anyone who can publish to the broker can send them, as fast as the
//! network allows, so the queue is bounded: in a flood the oldest message is dropped (with a
//! warning at most every [`WARN_EVERY`]) and memory stays at `capacity` messages of at most
//! `mqtt.max_payload_bytes` each.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The shortest time between two warnings about dropped messages.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// One message for the scripts: its topic relative to the prefix, and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptMessage {
    pub topic: String,
    pub payload: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<ScriptMessage>,
    /// Dropped since the last warning.
    dropped: u64,
    last_warning: Option<Instant>,
    /// The bridge is gone: nothing more will come.
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    arrived: Notify,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a panicking holder changes nothing.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The receiving side, taken by the script task (one consumer).
#[derive(Debug, Clone)]
pub struct ScriptInbox {
    shared: Arc<Shared>,
}

/// The sending side, held by the bridge.
#[derive(Debug)]
pub struct InboxSender {
    shared: Arc<Shared>,
}

/// A bounded inbox of `capacity` messages (at least 1).
pub fn inbox(capacity: usize) -> (InboxSender, ScriptInbox) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        arrived: Notify::new(),
        capacity: capacity.max(1),
    });
    (
        InboxSender {
            shared: shared.clone(),
        },
        ScriptInbox { shared },
    )
}

impl InboxSender {
    /// Queues `message`, dropping the oldest waiting one when full.
    pub fn push(&self, message: ScriptMessage) {
        let mut state = self.shared.lock();
        if state.queue.len() >= self.shared.capacity {
            state.queue.pop_front();
            state.dropped += 1;
            let now = Instant::now();
            if state
                .last_warning
                .map_or(true, |at| now.duration_since(at) >= WARN_EVERY)
            {
                tracing::warn!(
                    dropped = state.dropped,
                    capacity = self.shared.capacity,
                    topic = %message.topic,
                    "MQTT: messages for the scripts arrive faster than they are handled; the oldest were dropped (mqtt.script_queue_len)"
                );
                state.dropped = 0;
                state.last_warning = Some(now);
            }
        }
        state.queue.push_back(message);
        drop(state);
        self.shared.arrived.notify_one();
    }
}

impl Drop for InboxSender {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.arrived.notify_one();
    }
}

impl ScriptInbox {
    /// The oldest waiting message; `None` once the bridge is gone and the inbox is empty.
    pub async fn recv(&self) -> Option<ScriptMessage> {
        loop {
            {
                let mut state = self.shared.lock();
                if let Some(message) = state.queue.pop_front() {
                    return Some(message);
                }
                if state.closed {
                    return None;
                }
            }
            // `notify_one` stores a permit when nobody waits yet, so a push between the check
            // above and this wait is not missed.
            self.shared.arrived.notified().await;
        }
    }

    /// The oldest waiting message, without waiting.
    pub fn try_recv(&self) -> Option<ScriptMessage> {
        self.shared.lock().queue.pop_front()
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// True when no message waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: usize) -> ScriptMessage {
        ScriptMessage {
            topic: "flood".into(),
            payload: n.to_string().into_bytes(),
        }
    }

    #[tokio::test]
    async fn a_flood_keeps_the_newest_messages_and_drops_the_oldest() {
        let (tx, rx) = inbox(3);
        for n in 0..10_000 {
            tx.push(message(n));
        }
        assert_eq!(rx.len(), 3);
        assert_eq!(rx.recv().await, Some(message(9_997)));
        assert_eq!(rx.recv().await, Some(message(9_998)));
        assert_eq!(rx.recv().await, Some(message(9_999)));
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_message_and_ends_when_the_sender_is_gone() {
        let (tx, rx) = inbox(4);
        let waiter = tokio::spawn(async move {
            let first = rx.recv().await;
            let end = rx.recv().await;
            (first, end)
        });
        tokio::task::yield_now().await;
        tx.push(message(1));
        drop(tx);
        let (first, end) = waiter.await.unwrap();
        assert_eq!(first, Some(message(1)));
        assert_eq!(end, None);
    }
}
