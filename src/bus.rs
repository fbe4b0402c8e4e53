//! The event bus: every source turns what happens into an [`Event`]; every sink acts on
//! [`Command`]s.
//!
//! The bus is unbounded on purpose: the tasks that consume events (Lua host, MQTT bridge) also
//! send commands to the tasks that publish events (GPIO, modem), so a bounded bus could
//! deadlock two owners waiting on each other. Sources are rate-limited by the physical world
//! (SMS, rings, debounced inputs), so the queues stay short.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use tokio::sync::mpsc;

/// A received SMS, after it is committed to the store's inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingSms {
    /// The inbox row id.
    pub id: i64,
    /// The sender, normalised (E.164 with `+` when international, else as sent; may be
    /// alphanumeric).
    pub from: String,
    pub text: String,
    /// The service centre time stamp, with the sender's network time zone.
    pub time: Option<DateTime<FixedOffset>>,
    /// True when parts of a concatenated message never arrived and this is what we have.
    pub incomplete: bool,
}

/// A received SMS that carries data, not text (8-bit coding: a WAP push, OTA settings).
/// It goes to MQTT and the log, never to plugins as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingData {
    /// The inbox row id (the row keeps the data as upper-case hex).
    pub id: i64,
    /// The sender, normalised as for [`IncomingSms`].
    pub from: String,
    /// The user data after the header; all parts of a concatenated message joined.
    pub data: Vec<u8>,
    /// The destination application port, when the message has one (2948: WAP push).
    pub port: Option<u16>,
    /// The service centre time stamp.
    pub time: Option<DateTime<FixedOffset>>,
}

/// An incoming call. `id` is unique for the lifetime of the process, so a late command for an
/// old call can be recognised and ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub id: u64,
    /// `None` when the caller ID is withheld or unavailable.
    pub from: Option<String>,
}

/// How an outgoing SMS ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendStatus {
    Queued,
    Sent,
    Failed(String),
}

/// The outcome of one outgoing SMS, published when its status changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsStatus {
    pub outbox_id: i64,
    pub to: String,
    /// The id given by whoever asked (MQTT `sms/send`), echoed on `sms/sent`.
    pub request_id: Option<String>,
    pub status: SendStatus,
}

/// What the modem reports about itself and the network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModemStatus {
    pub ready: bool,
    pub registered: bool,
    pub roaming: bool,
    pub operator: Option<String>,
    pub signal_dbm: Option<i32>,
    pub imei: Option<String>,
}

/// Which kind of script a status is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptKind {
    Plugin,
    Rule,
}

impl ScriptKind {
    /// The MQTT topic segment: `plugins` or `rules`.
    pub fn topic(self) -> &'static str {
        match self {
            ScriptKind::Plugin => "plugins",
            ScriptKind::Rule => "rules",
        }
    }
}

/// A script was (re)loaded, or failed to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptStatus {
    pub kind: ScriptKind,
    pub name: String,
    pub generation: u64,
    /// `file:line: message` when the load failed (the previous version, if any, keeps running).
    pub error: Option<String>,
}

/// The alarm panel's states (Home Assistant's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlarmState {
    Disarmed,
    /// Exit delay running: armed when it ends.
    Arming,
    ArmedAway,
    ArmedHome,
    /// Entry delay running: triggered when it ends unless disarmed.
    Pending,
    Triggered,
}

impl AlarmState {
    /// The name used on MQTT and in Lua (`armed_away`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Disarmed => "disarmed",
            AlarmState::Arming => "arming",
            AlarmState::ArmedAway => "armed_away",
            AlarmState::ArmedHome => "armed_home",
            AlarmState::Pending => "pending",
            AlarmState::Triggered => "triggered",
        }
    }

    /// The inverse of [`AlarmState::as_str`].
    pub fn parse(s: &str) -> Option<AlarmState> {
        [
            AlarmState::Disarmed,
            AlarmState::Arming,
            AlarmState::ArmedAway,
            AlarmState::ArmedHome,
            AlarmState::Pending,
            AlarmState::Triggered,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// A password, PIN or code: its `Debug` shows `***`, so it never reaches a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// What can be asked of the alarm panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmAction {
    ArmAway,
    ArmHome,
    Disarm,
    Trigger,
}

/// Everything that happens, as seen by the sinks.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    SmsReceived(IncomingSms),
    /// An 8-bit data SMS: see [`IncomingData`].
    DataSmsReceived(IncomingData),
    /// A received SMS whose dispatch failed or was cut off `lua.max_dispatch_attempts` times:
    /// quarantined, handed to rules only, never to plugins again.
    SmsFailed {
        sms: IncomingSms,
        error: String,
    },
    SmsStatus(SmsStatus),
    CallRinging(Call),
    CallEnded(Call),
    InputChanged {
        name: String,
        on: bool,
    },
    OutputChanged {
        name: String,
        on: bool,
    },
    Modem(ModemStatus),
    Script(ScriptStatus),
    /// A message on a topic that a script subscribed to (topic relative to the prefix).
    Mqtt {
        topic: String,
        payload: Vec<u8>,
    },
    /// The alarm panel changed state; `by` names the user, zone or source when known.
    Alarm {
        state: AlarmState,
        by: Option<String>,
    },
    /// The answer to [`Command::Ussd`] with the same `id`.
    UssdResult {
        id: u64,
        result: Result<String, String>,
    },
    /// The outcome of [`Command::MqttConnect`] with the same `id`: `Ok("host:port ID=client")`.
    MqttSession {
        id: u64,
        result: Result<String, String>,
    },
    /// A sender gave too many wrong passwords and is ignored until `until`.
    Lockout {
        number: String,
        until: chrono::DateTime<chrono::Utc>,
    },
}

/// What to do with a named output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputAction {
    /// Switch on or off; with a duration, switch back after it (a pulse when `on`).
    Set {
        on: bool,
        duration: Option<Duration>,
    },
    /// Invert the current state.
    Toggle,
}

/// A request to one of the owning tasks, routed by the app in the order it was issued.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    SetOutput {
        name: String,
        action: OutputAction,
    },
    SendSms {
        to: String,
        text: String,
        request_id: Option<String>,
    },
    RejectCall {
        call_id: u64,
    },
    AnswerCall {
        call_id: u64,
    },
    HangUp {
        call_id: u64,
    },
    /// Persist a script's key/value datum (`value` is JSON; `None` deletes).
    KvSet {
        scope: String,
        key: String,
        value: Option<String>,
    },
    MqttPublish {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    /// Receive messages on `topic` (relative to the prefix) as [`Event::Mqtt`].
    MqttSubscribe {
        topic: String,
    },
    /// Connect the on-demand MQTT session for `seconds`; answered by [`Event::MqttSession`].
    MqttConnect {
        id: u64,
        seconds: u64,
    },
    /// Ask the alarm panel; `code` is checked when the panel has one.
    Alarm {
        action: AlarmAction,
        by: Option<String>,
        code: Option<Secret>,
    },
    /// Send a USSD code (`*100#`); answered by [`Event::UssdResult`].
    Ussd {
        id: u64,
        code: String,
    },
}

/// The fan-out of events to every subscriber.
#[derive(Clone, Default)]
pub struct Bus {
    // A std mutex: it is held only to clone senders, never across an await.
    subscribers: Arc<Mutex<Vec<mpsc::UnboundedSender<Event>>>>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// A receiver that gets every event published from now on.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().push(tx);
        rx
    }

    /// Sends `event` to every live subscriber; subscribers that went away are forgotten.
    pub fn publish(&self, event: Event) {
        tracing::debug!(?event, "bus");
        self.lock().retain(|tx| tx.send(event.clone()).is_ok());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<mpsc::UnboundedSender<Event>>> {
        // A panic while holding this lock cannot leave the Vec inconsistent, so poisoning is
        // ignored rather than spread.
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subscriber_gets_every_event_and_dropped_ones_are_forgotten() {
        let bus = Bus::new();
        let mut a = bus.subscribe();
        let b = bus.subscribe();
        drop(b);
        bus.publish(Event::InputChanged {
            name: "door".into(),
            on: true,
        });
        assert_eq!(
            a.try_recv().ok(),
            Some(Event::InputChanged {
                name: "door".into(),
                on: true
            })
        );
        assert_eq!(bus.lock().len(), 1);
    }
}
