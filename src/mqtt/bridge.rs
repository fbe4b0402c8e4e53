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
//!   slow consumer of commands never stalls the connection; it also delivers messages on the
//!   scripts' subscriptions to the bus.
//!
//! On demand (`mqtt.mode = "on_demand"`) the connection task polls only during a session: a
//! connect request starts one, and it ends (with `offline` and a clean disconnect) after its
//! idle window passes without a message in or out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event as MqttEvent, EventLoop,
    Outgoing as MqttOutgoing, Packet, Publish, QoS,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::discovery::Discovery;
use super::messages::{self, Outgoing};
use super::topics::{CommandTopic, Topics};
use super::MqttError;
use crate::bus::{AlarmSource, Bus, Command, Event};

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

/// What the publisher is asked to do, by handles and by the command task.
#[derive(Debug)]
pub(super) enum Request {
    /// Publish (and, when retained, remember) a message.
    Publish(Outgoing),
    /// Subscribe to a full topic filter now (it is already in the shared subscription set, so
    /// it is renewed at every ConnAck).
    Subscribe(String),
    /// The retained discovery manifest the broker held when we connected.
    PreviousManifest(Vec<u8>),
    /// Home Assistant said `online`: it has forgotten the entities, publish them again.
    HomeAssistantOnline,
}

/// A request to connect (on-demand) or to hear about the connection (always).
pub(super) struct ConnectRequest {
    /// Keep the session for this long after the last use (0: `mqtt.idle_disconnect_s`).
    pub seconds: u64,
    pub reply: oneshot::Sender<Result<String, MqttError>>,
}

/// Script subscriptions (full filters), shared by the handles that add them, the publisher
/// that renews them and the command task that delivers their messages.
pub(super) type Subscriptions = Arc<Mutex<BTreeSet<String>>>;

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
    pub bus: Bus,
    pub bus_rx: mpsc::UnboundedReceiver<Event>,
    pub requests_rx: mpsc::Receiver<Request>,
    pub requests_tx: mpsc::Sender<Request>,
    pub connect_rx: mpsc::Receiver<ConnectRequest>,
    pub commands: mpsc::Sender<Command>,
    pub connected: Arc<AtomicBool>,
    pub subscriptions: Subscriptions,
    /// Filters subscribed at every ConnAck besides the scripts' (the `$share/…` fleet one).
    pub extra_filters: Vec<String>,
    /// Home Assistant's birth topic, when discovery is on.
    pub ha_status: Option<String>,
    pub discovery: Discovery,
    pub discovery_messages: Vec<Outgoing>,
    pub publish_imei: bool,
    /// `None`: always connected; `Some(default idle)`: on demand.
    pub on_demand: Option<Duration>,
    /// `host:port ID=<client id>`, the answer to a connect request.
    pub session_name: String,
    /// For the error message when the broker refuses the login.
    pub username: Option<String>,
    /// Outputs that need the alarm code.
    pub protected: Protected,
}

/// Outputs that MQTT may switch only with the alarm code (the siren, the modem's power key):
/// whoever can publish to the broker must not silence the alarm or cut the modem.
#[derive(Debug, Clone, Default)]
pub struct Protected {
    outputs: BTreeSet<String>,
    /// SHA-256 of the alarm code, compared in constant time; `None`: no code, so never.
    code: Option<[u8; 32]>,
}

impl Protected {
    pub fn new(cfg: &crate::config::Config) -> Self {
        use sha2::Digest;
        Self {
            outputs: cfg.protected_outputs(),
            code: cfg
                .alarm
                .code
                .as_deref()
                .map(|c| sha2::Sha256::digest(c.as_bytes()).into()),
        }
    }

    /// Why a command on output `name` with `payload` is refused, if it is.
    pub fn refusal(&self, name: &str, payload: &[u8]) -> Option<&'static str> {
        use sha2::Digest;
        use subtle::ConstantTimeEq;
        if !self.outputs.contains(name) {
            return None;
        }
        let Some(expected) = &self.code else {
            return Some("it is the siren or the modem's power key and no alarm code is set");
        };
        match messages::output_code(payload) {
            Some(given) => {
                let given: [u8; 32] = sha2::Sha256::digest(given.0.as_bytes()).into();
                if bool::from(expected.ct_eq(&given)) {
                    None
                } else {
                    Some("wrong alarm code")
                }
            }
            None => Some("it is the siren or the modem's power key: give the alarm code ({\"state\":\"OFF\",\"code\":\"…\"})"),
        }
    }
}

/// Spawns the publisher and command tasks and returns the connection task's future.
pub(super) fn run(
    parts: Parts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send {
    let (link_tx, link_rx) = mpsc::unbounded_channel();
    let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_QUEUE_LIMIT);
    let publisher = Publisher {
        client: parts.client.clone(),
        topics: parts.topics.clone(),
        outbox: Outbox::default(),
        connected: parts.connected.clone(),
        subscriptions: parts.subscriptions.clone(),
        extra_filters: parts.extra_filters,
        ha_status: parts.ha_status.clone(),
        discovery: parts.discovery,
        discovery_messages: parts.discovery_messages,
        publish_imei: parts.publish_imei,
    };
    let publisher = AbortOnDrop(tokio::spawn(publisher.run(
        link_rx,
        parts.bus_rx,
        parts.requests_rx,
    )));
    let router = Router {
        topics: parts.topics.clone(),
        subscriptions: parts.subscriptions,
        ha_status: parts.ha_status,
        bus: parts.bus,
        commands: parts.commands,
        requests: parts.requests_tx,
        protected: parts.protected,
    };
    let command_task = AbortOnDrop(tokio::spawn(router.run(incoming_rx)));
    let connection = Connection {
        client: parts.client,
        eventloop: parts.eventloop,
        topics: parts.topics,
        link_tx,
        incoming_tx,
        connected: parts.connected,
        connect_rx: parts.connect_rx,
        on_demand: parts.on_demand,
        session_name: parts.session_name,
        username: parts.username,
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
    connect_rx: mpsc::Receiver<ConnectRequest>,
    on_demand: Option<Duration>,
    session_name: String,
    username: Option<String>,
}

/// An on-demand session: connected (or connecting) until `deadline`, which each use pushes to
/// `window` from now.
struct Session {
    deadline: Instant,
    window: Duration,
    /// False until the first ConnAck: a first attempt that fails ends the session, because the
    /// caller was told it failed.
    connected_once: bool,
}

impl Session {
    fn extend(&mut self, window: Duration) {
        self.window = window;
        self.used();
    }

    fn used(&mut self) {
        self.deadline = self.deadline.max(Instant::now() + self.window);
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A connection error in words for the log and for whoever asked to connect; a refused login
/// says which settings to check (and never the password).
fn describe(e: &ConnectionError, username: Option<&str>) -> String {
    match e {
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) => format!(
            "the broker refused the login ({code:?}) as user {:?} (help: check mqtt.username and mqtt.password / mqtt.password_file)",
            username.unwrap_or("")
        ),
        other => other.to_string(),
    }
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
        let mut session: Option<Session> = None;
        let mut waiting: Vec<oneshot::Sender<Result<String, MqttError>>> = Vec::new();
        let mut requests_open = true;
        loop {
            if let (Some(idle), None) = (self.on_demand, &session) {
                // On demand and no session: nothing is polled, so nothing connects.
                tokio::select! {
                    () = &mut shutdown => break,
                    request = self.connect_rx.recv(), if requests_open => match request {
                        Some(request) => {
                            tracing::info!("MQTT: connecting on demand");
                            let mut new = Session {
                                deadline: Instant::now(),
                                window: idle,
                                connected_once: false,
                            };
                            new.extend(window_for(request.seconds, idle));
                            session = Some(new);
                            waiting.push(request.reply);
                        }
                        None => requests_open = false,
                    },
                }
                continue;
            }
            let deadline = session.as_ref().map(|s| s.deadline);
            let polled = tokio::select! {
                () = &mut shutdown => break,
                request = self.connect_rx.recv(), if requests_open => {
                    match request {
                        Some(request) => {
                            if let (Some(idle), Some(s)) = (self.on_demand, session.as_mut()) {
                                s.extend(window_for(request.seconds, idle));
                            }
                            if up {
                                let _ = request.reply.send(Ok(self.session_name.clone()));
                            } else {
                                waiting.push(request.reply);
                            }
                        }
                        None => requests_open = false,
                    }
                    continue;
                }
                () = sleep_until_some(deadline) => {
                    tracing::info!("MQTT: on-demand session idle, disconnecting");
                    session = None;
                    if up {
                        up = false;
                        self.connected.store(false, Ordering::Relaxed);
                        let _ = self.link_tx.send(Link::Down);
                        self.say_goodbye().await;
                    }
                    // Drops the socket, so the next session starts with a fresh connection.
                    self.eventloop.clean();
                    continue;
                }
                polled = self.eventloop.poll() => polled,
            };
            match polled {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!("MQTT connected");
                    backoff.reset();
                    up = true;
                    if let Some(s) = session.as_mut() {
                        s.connected_once = true;
                        s.used();
                    }
                    let _ = self.link_tx.send(Link::Up);
                    for reply in waiting.drain(..) {
                        let _ = reply.send(Ok(self.session_name.clone()));
                    }
                }
                Ok(MqttEvent::Incoming(Packet::Publish(publish))) => {
                    if let Some(s) = session.as_mut() {
                        s.used();
                    }
                    if let Err(e) = self.incoming_tx.try_send(publish) {
                        tracing::warn!(error = %e, "MQTT command dropped: too many waiting");
                    }
                }
                Ok(MqttEvent::Outgoing(MqttOutgoing::Publish(_))) => {
                    if let Some(s) = session.as_mut() {
                        s.used();
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if up {
                        up = false;
                        self.connected.store(false, Ordering::Relaxed);
                        let _ = self.link_tx.send(Link::Down);
                    }
                    let why = describe(&e, self.username.as_deref());
                    for reply in waiting.drain(..) {
                        let _ = reply.send(Err(MqttError::Connect(why.clone())));
                    }
                    if session.as_ref().is_some_and(|s| !s.connected_once) {
                        tracing::error!(error = %why, "MQTT: on-demand connection failed");
                        session = None;
                        self.eventloop.clean();
                        continue;
                    }
                    let delay = backoff.next_delay(&mut rand::thread_rng());
                    if matches!(e, ConnectionError::ConnectionRefused(_)) {
                        tracing::error!(error = %why, retry_in_ms = delay.as_millis() as u64, "MQTT connection refused");
                    } else {
                        tracing::warn!(error = %why, retry_in_ms = delay.as_millis() as u64, "MQTT connection failed");
                    }
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
    async fn say_goodbye(&mut self) {
        let client = self.client.clone();
        let status = self.topics.status();
        let request = async move {
            client
                .publish(status, QoS::AtLeastOnce, true, "offline")
                .await?;
            client.disconnect().await
        };
        let eventloop = &mut self.eventloop;
        // rumqttc reports the outgoing DISCONNECT before it has flushed the socket: stopping
        // there can cut the goodbye mid-packet (Mosquitto then drops the client and sends the
        // will after all). Keep polling until the broker closes the connection, which it does
        // once it has read the DISCONNECT.
        let drain = async { while eventloop.poll().await.is_ok() {} };
        match tokio::time::timeout(GOODBYE_TIMEOUT, async { tokio::join!(request, drain).0 }).await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "MQTT: could not say offline"),
            Err(_) => tracing::warn!("MQTT: disconnect timed out"),
        }
    }
}

/// The idle window a connect request asks for.
fn window_for(seconds: u64, idle: Duration) -> Duration {
    if seconds == 0 {
        idle
    } else {
        Duration::from_secs(seconds)
    }
}

struct Publisher {
    client: AsyncClient,
    topics: Topics,
    outbox: Outbox,
    connected: Arc<AtomicBool>,
    subscriptions: Subscriptions,
    extra_filters: Vec<String>,
    ha_status: Option<String>,
    discovery: Discovery,
    discovery_messages: Vec<Outgoing>,
    publish_imei: bool,
}

impl Publisher {
    async fn run(
        mut self,
        mut link_rx: mpsc::UnboundedReceiver<Link>,
        mut bus_rx: mpsc::UnboundedReceiver<Event>,
        mut requests_rx: mpsc::Receiver<Request>,
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
                        if let Some(out) = messages::for_event(&self.topics, &event, self.publish_imei) {
                            self.submit(out, up).await;
                        }
                    }
                    None => bus_open = false,
                },
                request = requests_rx.recv(), if requests_open => match request {
                    Some(Request::Publish(out)) => self.submit(out, up).await,
                    Some(Request::Subscribe(filter)) => {
                        if up {
                            self.subscribe(filter).await;
                        }
                    }
                    Some(Request::PreviousManifest(previous)) => {
                        if up {
                            for removal in self.discovery.removals(&previous, &self.discovery_messages) {
                                tracing::info!(topic = %removal.topic, "MQTT: removing a Home Assistant entity no longer configured");
                                self.publish(removal).await;
                            }
                        }
                    }
                    Some(Request::HomeAssistantOnline) => {
                        if up {
                            self.publish_discovery().await;
                        }
                    }
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

    async fn subscribe(&self, filter: String) {
        if let Err(e) = self
            .client
            .subscribe(filter.as_str(), QoS::AtLeastOnce)
            .await
        {
            tracing::warn!(filter = %filter, error = %e, "MQTT subscribe failed");
        }
    }

    async fn on_connect(&mut self) {
        let scripts: Vec<String> = lock(&self.subscriptions).iter().cloned().collect();
        let filters = [
            self.topics.output_set_filter(),
            self.topics.sms_send(),
            self.topics.sms_send_text(),
            self.topics.alarm_set(),
            self.topics.security_unlock(),
            // Its retained message is the previous manifest; it arrives before our new one.
            self.topics.discovery_manifest(),
        ]
        .into_iter()
        .chain(self.ha_status.clone())
        .chain(self.extra_filters.iter().cloned())
        .chain(scripts);
        for filter in filters {
            self.subscribe(filter).await;
        }
        let online = Outgoing {
            topic: self.topics.status(),
            payload: b"online".to_vec(),
            retain: true,
        };
        self.publish(online).await;
        self.publish_discovery().await;
        let manifest = self.discovery.manifest(&self.discovery_messages);
        self.publish(manifest).await;
        for out in self.outbox.on_connect() {
            self.publish(out).await;
        }
    }

    async fn publish_discovery(&self) {
        for out in &self.discovery_messages {
            self.publish(out.clone()).await;
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

/// The subscription set, whatever a panicking holder left (a set of strings cannot be left
/// inconsistent).
pub(super) fn lock(subscriptions: &Subscriptions) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
    subscriptions.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends each incoming message where it belongs: script subscriptions to the bus, commands to
/// the command channel, bookkeeping to the publisher.
struct Router {
    topics: Topics,
    subscriptions: Subscriptions,
    ha_status: Option<String>,
    bus: Bus,
    commands: mpsc::Sender<Command>,
    requests: mpsc::Sender<Request>,
    protected: Protected,
}

impl Router {
    async fn run(self, mut incoming_rx: mpsc::Receiver<Publish>) {
        while let Some(publish) = incoming_rx.recv().await {
            self.route(publish).await;
        }
    }

    async fn route(&self, publish: Publish) {
        let for_scripts = lock(&self.subscriptions)
            .iter()
            .any(|filter| rumqttc::matches(&publish.topic, filter));
        if for_scripts {
            if let Some(relative) = publish
                .topic
                .strip_prefix(self.topics.prefix())
                .and_then(|r| r.strip_prefix('/'))
            {
                self.bus.publish(Event::Mqtt {
                    topic: relative.to_string(),
                    payload: publish.payload.to_vec(),
                });
            }
        }
        if publish.topic == self.topics.discovery_manifest() {
            // Only the retained copy is the previous manifest; live ones are our own echo.
            if publish.retain {
                let _ = self
                    .requests
                    .send(Request::PreviousManifest(publish.payload.to_vec()))
                    .await;
            }
            return;
        }
        if self.ha_status.as_deref() == Some(publish.topic.as_str()) {
            // A retained birth is old news: discovery was just published at connect.
            if !publish.retain && publish.payload.as_ref() == b"online" {
                tracing::info!("MQTT: Home Assistant is online, publishing discovery");
                let _ = self.requests.send(Request::HomeAssistantOnline).await;
            }
            return;
        }
        let Some(kind) = self.topics.classify(&publish.topic) else {
            if !for_scripts {
                tracing::debug!(topic = %publish.topic, "MQTT: message on an unknown topic ignored");
            }
            return;
        };
        if publish.retain {
            // A retained command would be acted on again at every (re)connect: Tasmota's
            // "ghost switching". Commands are never retained, so this one is a mistake.
            tracing::warn!(topic = %publish.topic, "MQTT: retained command ignored (publish commands without retain)");
            return;
        }
        if let Some(command) = self.command(kind, &publish).await {
            if self.commands.send(command).await.is_err() {
                tracing::warn!("MQTT: command dropped, nobody takes commands any more");
            }
        }
    }

    /// The command a message asks for; `None` (after a warning or a reply) when it is refused.
    async fn command(&self, kind: CommandTopic<'_>, publish: &Publish) -> Option<Command> {
        let payload = &publish.payload;
        match kind {
            CommandTopic::OutputSet(name) => match messages::parse_output_command(payload) {
                Ok(_) if self.protected.refusal(name, payload).is_some() => {
                    let why = self.protected.refusal(name, payload).unwrap_or_default();
                    tracing::warn!(output = %name, "MQTT: output command refused: {why}");
                    None
                }
                Ok(action) => Some(Command::SetOutput {
                    name: name.to_string(),
                    action,
                }),
                Err(e) => {
                    tracing::warn!(topic = %publish.topic, error = %e, "MQTT: bad output command ignored");
                    None
                }
            },
            CommandTopic::SmsSend | CommandTopic::SmsSendText => {
                let request = match kind {
                    CommandTopic::SmsSendText => messages::parse_text_request(payload),
                    _ => messages::parse_sms_request(payload),
                };
                match request {
                    Ok(req) => Some(Command::SendSms {
                        to: req.to,
                        text: req.text,
                        request_id: req.id,
                        priority: false,
                    }),
                    Err(rejection) => {
                        tracing::warn!(error = %rejection.error, "MQTT: SMS request refused");
                        let reply = messages::sms_request_failed(&self.topics, &rejection);
                        let _ = self.requests.send(Request::Publish(reply)).await;
                        None
                    }
                }
            }
            CommandTopic::SecurityUnlock => match messages::parse_unlock_command(payload) {
                Ok(number) => Some(Command::Unlock {
                    number,
                    by: "mqtt".into(),
                }),
                Err(e) => {
                    tracing::warn!(topic = %publish.topic, error = %e, "MQTT: bad unlock command ignored");
                    None
                }
            },
            CommandTopic::AlarmSet => match messages::parse_alarm_command(payload) {
                Ok(req) => Some(Command::Alarm {
                    action: req.action,
                    source: AlarmSource::External,
                    by: Some("mqtt".into()),
                    code: req.code,
                    reply: None,
                }),
                Err(e) => {
                    tracing::warn!(topic = %publish.topic, error = %e, "MQTT: bad alarm command ignored");
                    None
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_siren_and_the_power_key_need_the_alarm_code() {
        let text =
            "[outputs.relay]\nline = 17\n[outputs.siren]\nline = 18\n[outputs.pwr]\nline = 19\n\
                    [alarm]\nsiren = \"siren\"\n[modem]\npower_key = \"pwr\"\n";
        let without_code = crate::config::Config::from_toml(text, "t.toml").expect("config");
        let p = Protected::new(&without_code);
        assert_eq!(p.refusal("relay", b"ON"), None);
        assert!(p.refusal("siren", b"OFF").is_some());
        assert!(p
            .refusal("pwr", br#"{"state":"ON","code":"4321"}"#)
            .is_some());
        let with_code = crate::config::Config::from_toml(
            &text.replace(
                "siren = \"siren\"\n",
                "siren = \"siren\"\ncode = \"4321\"\n",
            ),
            "t.toml",
        );
        let p = Protected::new(&with_code.expect("config"));
        assert!(p.refusal("siren", b"OFF").is_some());
        assert!(p
            .refusal("siren", br#"{"state":"OFF","code":"1234"}"#)
            .is_some());
        assert_eq!(
            p.refusal("siren", br#"{"state":"OFF","code":"4321"}"#),
            None
        );
        assert_eq!(p.refusal("pwr", br#"{"state":"ON","code":4321}"#), None);
    }
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
