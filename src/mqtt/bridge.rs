//! The bridge's tasks.
//!
//! - the connection task owns the [`EventLoop`]: it polls, sleeps with back-off after an error,
//!   and hands incoming messages and connection changes to the others. It never publishes,
//!   because a publish waits for `poll()` to drain the request channel: from the polling task
//!   it would wait on itself.
//! - the publisher task owns what is published: it turns bus events into messages, keeps the
//!   latest retained state and a bounded queue of events for while the broker is away, and on
//!   every ConnAck re-subscribes and re-publishes.
//! - the command task parses incoming commands and forwards them on the command channel, so a
//!   slow consumer of commands never stalls the connection.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rumqttc::{
    AsyncClient, Event as MqttEvent, EventLoop, Outgoing as MqttOutgoing, Packet, Publish, QoS,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::messages::{self, Outgoing};
use super::topics::{CommandTopic, Topics};
use crate::bus::{Command, Event};

/// Events (SMS, calls) kept while the broker is away; beyond this the oldest are dropped.
pub const EVENT_QUEUE_LIMIT: usize = 1000;
/// Incoming messages waiting for the command task; beyond this they are dropped with a warning.
const INCOMING_QUEUE_LIMIT: usize = 256;
/// How long a clean shutdown may take to say `offline` and disconnect.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The latest retained state and the events not yet delivered: what is (re)published when the
/// connection (re)appears.
#[derive(Debug, Default)]
pub struct Outbox {
    retained: BTreeMap<String, Vec<u8>>,
    events: VecDeque<Outgoing>,
}

impl Outbox {
    /// Records `out`; returns it when it should be published now (`connected`). State is always
    /// remembered (the latest wins); an event is queued only while disconnected.
    pub fn record(&mut self, out: Outgoing, connected: bool) -> Option<Outgoing> {
        if out.retain {
            self.retained.insert(out.topic.clone(), out.payload.clone());
        }
        if connected {
            return Some(out);
        }
        if !out.retain {
            if self.events.len() >= EVENT_QUEUE_LIMIT {
                if let Some(dropped) = self.events.pop_front() {
                    tracing::warn!(topic = %dropped.topic, "MQTT broker away too long: oldest queued event dropped");
                }
            }
            self.events.push_back(out);
        }
        None
    }

    /// Everything to publish after a ConnAck: all retained state, then the queued events in
    /// order (the queue is emptied).
    pub fn on_connect(&mut self) -> Vec<Outgoing> {
        let state = self.retained.iter().map(|(topic, payload)| Outgoing {
            topic: topic.clone(),
            payload: payload.clone(),
            retain: true,
        });
        state.chain(self.events.drain(..)).collect()
    }
}

/// Capped exponential back-off with jitter, so that a fleet of gateways does not reconnect in
/// lock-step after a broker restart.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The delay before the next attempt (1 s, 2 s, 4 s … 60 s, each shortened by up to 25 %,
    /// never below 1 s).
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let base = BACKOFF_MIN
            .saturating_mul(1 << self.failures.min(6))
            .min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        base.mul_f64(rng.gen_range(0.75..=1.0)).max(BACKOFF_MIN)
    }

    /// Called on a successful connection.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// What the connection task tells the publisher.
#[derive(Debug)]
enum Link {
    Up,
    Down,
}

/// Aborts a helper task when the connection task ends or is aborted, so that aborting the
/// bridge's one `JoinHandle` stops everything.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Everything the bridge's tasks are built from.
pub(super) struct Parts {
    pub client: AsyncClient,
    pub eventloop: EventLoop,
    pub topics: Topics,
    pub bus_rx: mpsc::UnboundedReceiver<Event>,
    pub requests_rx: mpsc::Receiver<Outgoing>,
    pub requests_tx: mpsc::Sender<Outgoing>,
    pub commands: mpsc::Sender<Command>,
    pub connected: Arc<AtomicBool>,
}

/// Spawns the publisher and command tasks and returns the connection task's future.
pub(super) fn run(
    parts: Parts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send {
    let Parts {
        client,
        eventloop,
        topics,
        bus_rx,
        requests_rx,
        requests_tx,
        commands,
        connected,
    } = parts;
    let (link_tx, link_rx) = mpsc::unbounded_channel();
    let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_QUEUE_LIMIT);
    let publisher = Publisher {
        client: client.clone(),
        topics: topics.clone(),
        outbox: Outbox::default(),
        connected: connected.clone(),
    };
    let publisher = AbortOnDrop(tokio::spawn(publisher.run(link_rx, bus_rx, requests_rx)));
    let command_task = AbortOnDrop(tokio::spawn(forward_commands(
        topics.clone(),
        incoming_rx,
        commands,
        requests_tx,
    )));
    let connection = Connection {
        client,
        eventloop,
        topics,
        link_tx,
        incoming_tx,
        connected,
    };
    connection.run(shutdown, publisher, command_task)
}

struct Connection {
    client: AsyncClient,
    eventloop: EventLoop,
    topics: Topics,
    link_tx: mpsc::UnboundedSender<Link>,
    incoming_tx: mpsc::Sender<Publish>,
    connected: Arc<AtomicBool>,
}

impl Connection {
    async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        publisher: AbortOnDrop,
        command_task: AbortOnDrop,
    ) {
        tokio::pin!(shutdown);
        let mut backoff = Backoff::default();
        let mut up = false;
        loop {
            let polled = tokio::select! {
                () = &mut shutdown => break,
                polled = self.eventloop.poll() => polled,
            };
            match polled {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!("MQTT connected");
                    backoff.reset();
                    up = true;
                    let _ = self.link_tx.send(Link::Up);
                }
                Ok(MqttEvent::Incoming(Packet::Publish(publish))) => {
                    if let Err(e) = self.incoming_tx.try_send(publish) {
                        tracing::warn!(error = %e, "MQTT command dropped: too many waiting");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if up {
                        up = false;
                        self.connected.store(false, Ordering::Relaxed);
                        let _ = self.link_tx.send(Link::Down);
                    }
                    let delay = backoff.next_delay(&mut rand::thread_rng());
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT connection failed");
                    // rumqttc reconnects on the next poll at once; the pause is ours to make.
                    tokio::select! {
                        () = &mut shutdown => { up = false; break; }
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        // Nothing may publish behind the `offline` below.
        drop(publisher);
        drop(command_task);
        self.connected.store(false, Ordering::Relaxed);
        if up {
            self.say_goodbye().await;
        }
        tracing::info!("MQTT bridge stopped");
    }

    /// Publishes `offline` and disconnects, so the broker does not send the will.
    async fn say_goodbye(mut self) {
        let client = self.client.clone();
        let status = self.topics.status();
        let request = async move {
            client
                .publish(status, QoS::AtLeastOnce, true, "offline")
                .await?;
            client.disconnect().await
        };
        let drain = async {
            loop {
                match self.eventloop.poll().await {
                    Ok(MqttEvent::Outgoing(MqttOutgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        match tokio::time::timeout(GOODBYE_TIMEOUT, async { tokio::join!(request, drain).0 }).await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "MQTT: could not say offline"),
            Err(_) => tracing::warn!("MQTT: disconnect timed out"),
        }
    }
}

struct Publisher {
    client: AsyncClient,
    topics: Topics,
    outbox: Outbox,
    connected: Arc<AtomicBool>,
}

impl Publisher {
    async fn run(
        mut self,
        mut link_rx: mpsc::UnboundedReceiver<Link>,
        mut bus_rx: mpsc::UnboundedReceiver<Event>,
        mut requests_rx: mpsc::Receiver<Outgoing>,
    ) {
        let mut up = false;
        let (mut bus_open, mut requests_open) = (true, true);
        loop {
            tokio::select! {
                // Connection changes first, so nothing is sent on a link known to be down.
                biased;
                link = link_rx.recv() => match link {
                    Some(Link::Up) => {
                        up = true;
                        self.on_connect().await;
                        // Only now: a caller asking `connected()` expects state to be out.
                        self.connected.store(true, Ordering::Relaxed);
                    }
                    Some(Link::Down) => {
                        up = false;
                        self.connected.store(false, Ordering::Relaxed);
                    }
                    None => return,
                },
                event = bus_rx.recv(), if bus_open => match event {
                    Some(event) => {
                        if let Some(out) = messages::for_event(&self.topics, &event) {
                            self.submit(out, up).await;
                        }
                    }
                    None => bus_open = false,
                },
                request = requests_rx.recv(), if requests_open => match request {
                    Some(out) => self.submit(out, up).await,
                    None => requests_open = false,
                },
            }
        }
    }

    async fn submit(&mut self, out: Outgoing, up: bool) {
        if let Some(out) = self.outbox.record(out, up) {
            self.publish(out).await;
        }
    }

    async fn on_connect(&mut self) {
        for filter in [self.topics.output_set_filter(), self.topics.sms_send()] {
            if let Err(e) = self.client.subscribe(filter, QoS::AtLeastOnce).await {
                tracing::warn!(error = %e, "MQTT subscribe failed");
            }
        }
        let online = Outgoing {
            topic: self.topics.status(),
            payload: b"online".to_vec(),
            retain: true,
        };
        self.publish(online).await;
        for out in self.outbox.on_connect() {
            self.publish(out).await;
        }
    }

    /// Hands `out` to the event loop. If the connection has just dropped it waits in rumqttc's
    /// pending queue, which is replayed before anything newer on reconnect.
    async fn publish(&self, out: Outgoing) {
        if let Err(e) = self
            .client
            .publish(
                out.topic.as_str(),
                QoS::AtLeastOnce,
                out.retain,
                out.payload,
            )
            .await
        {
            tracing::warn!(topic = %out.topic, error = %e, "MQTT publish failed");
        }
    }
}

/// Turns incoming messages into commands.
async fn forward_commands(
    topics: Topics,
    mut incoming_rx: mpsc::Receiver<Publish>,
    commands: mpsc::Sender<Command>,
    replies: mpsc::Sender<Outgoing>,
) {
    while let Some(publish) = incoming_rx.recv().await {
        if publish.retain {
            // A retained command would be acted on again at every (re)connect: Tasmota's
            // "ghost switching". Commands are never retained, so this one is a mistake.
            tracing::warn!(topic = %publish.topic, "MQTT: retained command ignored (publish commands without retain)");
            continue;
        }
        let command = match topics.classify(&publish.topic) {
            Some(CommandTopic::OutputSet(name)) => {
                match messages::parse_output_command(&publish.payload) {
                    Ok(action) => Command::SetOutput {
                        name: name.to_string(),
                        action,
                    },
                    Err(e) => {
                        tracing::warn!(topic = %publish.topic, error = %e, "MQTT: bad output command ignored");
                        continue;
                    }
                }
            }
            Some(CommandTopic::SmsSend) => match messages::parse_sms_request(&publish.payload) {
                Ok(req) => Command::SendSms {
                    to: req.to,
                    text: req.text,
                    request_id: req.id,
                },
                Err(rejection) => {
                    tracing::warn!(error = %rejection.error, "MQTT: SMS request refused");
                    let _ = replies
                        .send(messages::sms_request_failed(&topics, &rejection))
                        .await;
                    continue;
                }
            },
            None => {
                tracing::debug!(topic = %publish.topic, "MQTT: message on an unknown topic ignored");
                continue;
            }
        };
        if commands.send(command).await.is_err() {
            tracing::warn!("MQTT: command dropped, nobody takes commands any more");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::mock::StepRng;

    fn state(topic: &str, payload: &str) -> Outgoing {
        Outgoing {
            topic: topic.into(),
            payload: payload.into(),
            retain: true,
        }
    }

    fn event(n: usize) -> Outgoing {
        Outgoing {
            topic: "p/call".into(),
            payload: n.to_string().into_bytes(),
            retain: false,
        }
    }

    #[test]
    fn while_connected_everything_is_published_at_once() {
        let mut outbox = Outbox::default();
        assert_eq!(outbox.record(event(1), true), Some(event(1)));
        assert_eq!(
            outbox.record(state("p/output/a", "ON"), true),
            Some(state("p/output/a", "ON"))
        );
        assert_eq!(outbox.on_connect(), vec![state("p/output/a", "ON")]);
    }

    #[test]
    fn while_disconnected_the_latest_state_wins_and_events_wait_in_order() {
        let mut outbox = Outbox::default();
        assert_eq!(outbox.record(state("p/output/a", "ON"), false), None);
        assert_eq!(outbox.record(event(1), false), None);
        assert_eq!(outbox.record(state("p/output/a", "OFF"), false), None);
        assert_eq!(outbox.record(event(2), false), None);
        assert_eq!(
            outbox.on_connect(),
            vec![state("p/output/a", "OFF"), event(1), event(2)]
        );
        assert_eq!(
            outbox.on_connect(),
            vec![state("p/output/a", "OFF")],
            "events go out once, state every time"
        );
    }

    #[test]
    fn the_event_queue_drops_the_oldest_when_full() {
        let mut outbox = Outbox::default();
        for n in 0..EVENT_QUEUE_LIMIT + 5 {
            outbox.record(event(n), false);
        }
        let flushed = outbox.on_connect();
        assert_eq!(flushed.len(), EVENT_QUEUE_LIMIT);
        assert_eq!(flushed.first(), Some(&event(5)));
        assert_eq!(flushed.last(), Some(&event(EVENT_QUEUE_LIMIT + 4)));
    }

    #[test]
    fn backoff_doubles_up_to_a_minute_and_resets() {
        // StepRng(0, 0) makes gen_range return its lower bound: the shortest jittered delay.
        let mut low = StepRng::new(0, 0);
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..9)
            .map(|_| backoff.next_delay(&mut low).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [1000, 1500, 3000, 6000, 12000, 24000, 45000, 45000, 45000]
        );
        backoff.reset();
        assert_eq!(backoff.next_delay(&mut low), Duration::from_secs(1));
        let mut rng = rand::thread_rng();
        for _ in 0..50 {
            let d = backoff.next_delay(&mut rng);
            assert!((BACKOFF_MIN..=BACKOFF_MAX).contains(&d), "{d:?}");
        }
    }
}
