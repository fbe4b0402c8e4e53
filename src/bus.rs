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

/// A received SMS, after it is committed to the store's inbox. Its `Debug` leaves the text
/// out: it may hold a password, and events are logged.
#[derive(Clone, PartialEq)]
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
    /// What kind of address `from` is (from the PDU's type-of-address when known).
    pub sender_kind: SenderKind,
}

impl std::fmt::Debug for IncomingSms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingSms")
            .field("id", &self.id)
            .field("from", &self.from)
            .field(
                "text",
                &format_args!("<{} chars>", self.text.chars().count()),
            )
            .field("time", &self.time)
            .field("incomplete", &self.incomplete)
            .field("sender_kind", &self.sender_kind)
            .finish()
    }
}

/// A received SMS after the scripts handled it: what may be shown of it.
#[derive(Debug, Clone, PartialEq)]
pub struct HandledSms {
    /// The SMS with every secret a script marked (`gw.sms.secret`) masked as `***`.
    pub sms: IncomingSms,
    /// The plugin that handled it, if any.
    pub handled_by: Option<String>,
    /// Found undelivered at start and older than `sms.max_command_age_s`: plugins never saw
    /// it, rules saw it marked stale.
    pub stale: bool,
}

/// What kind of address an SMS came from. Only a real number (international or national,
/// with at least [`MIN_REAL_NUMBER_DIGITS`] digits) can hold authority: alphanumeric sender
/// IDs are chosen freely by bulk-SMS services and short codes belong to services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SenderKind {
    International,
    National,
    /// Fewer than [`MIN_REAL_NUMBER_DIGITS`] digits, or a network-specific address.
    Short,
    Alphanumeric,
    /// No address at all.
    #[default]
    Empty,
}

/// Digits a number needs to count as a subscriber's number rather than a short code.
pub const MIN_REAL_NUMBER_DIGITS: usize = 8;

impl SenderKind {
    /// The name scripts see as `msg.sender_kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            SenderKind::International => "international",
            SenderKind::National => "national",
            SenderKind::Short => "short",
            SenderKind::Alphanumeric => "alphanumeric",
            SenderKind::Empty => "empty",
        }
    }

    /// The inverse of [`SenderKind::as_str`].
    pub fn parse(s: &str) -> Option<SenderKind> {
        [
            SenderKind::International,
            SenderKind::National,
            SenderKind::Short,
            SenderKind::Alphanumeric,
            SenderKind::Empty,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// The kind of `address` judged from its text alone, for when the type-of-address is not
    /// known (a message made up by a test or the CLI). A name made of digits cannot be told
    /// from a number this way; the driver passes the PDU's type instead.
    pub fn of(address: &str) -> SenderKind {
        let trimmed = address.trim();
        if trimmed.is_empty() {
            return SenderKind::Empty;
        }
        if !crate::phone::is_number(trimmed) {
            return SenderKind::Alphanumeric;
        }
        Self::of_number(
            trimmed,
            trimmed.starts_with('+') || trimmed.starts_with("00"),
        )
    }

    /// The kind of a numeric address: short below [`MIN_REAL_NUMBER_DIGITS`] digits.
    pub fn of_number(number: &str, international: bool) -> SenderKind {
        let digits = crate::phone::digits(number).len();
        if digits == 0 {
            SenderKind::Empty
        } else if digits < MIN_REAL_NUMBER_DIGITS {
            SenderKind::Short
        } else if international {
            SenderKind::International
        } else {
            SenderKind::National
        }
    }

    /// True for a number that can be enrolled and matched against number lists.
    pub fn is_real_number(self) -> bool {
        matches!(self, SenderKind::International | SenderKind::National)
    }
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

/// Who asks the alarm panel, set by whoever routes the request and never taken from its
/// content: trust is out of band, `by` is only a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlarmSource {
    /// A Lua dialect plugin or rule, named `plugin:<name>` / `rule:<name>`. Trusted: it
    /// authenticates its own users (passwords, PINs, master numbers), so it needs no panel code.
    Script(String),
    /// MQTT, Home Assistant, the CLI: needs the panel's code when one is configured.
    External,
}

impl AlarmSource {
    /// True when the request may skip the panel's code (a given code is still checked).
    pub fn trusted(&self) -> bool {
        matches!(self, AlarmSource::Script(name) if !name.is_empty())
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
    /// Stored in the inbox, not yet handled: for the script task only (nothing publishes it;
    /// it may hold a secret that is only known once a script marked it).
    SmsReceived(IncomingSms),
    /// Handled by the scripts (or found stale): published on MQTT `<p>/sms/received`.
    SmsHandled(HandledSms),
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
    /// The panel's answer to [`Command::Alarm`] with `reply: Some(id)`: `Err` carries the
    /// reason (`"zone_open:<zone>"`, `"code_required"`, `"wrong_code"`, `"not_configured"`,
    /// `"busy"`).
    AlarmResult {
        id: u64,
        result: Result<(), String>,
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
    /// Something the owner should know about authority: grants, attacks, unlocks.
    Security(Security),
    /// Someone with access to the gateway (MQTT, `gsmgw unlock`) asks to lift the lock-out of
    /// `number`; the script task does it and answers with [`Security::Unlocked`].
    UnlockRequest {
        number: String,
        by: String,
    },
}

/// Security events, published on `<p>/security` with their `event_type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// `script` granted `role` to `number` (`gw.auth.grant`).
    Granted {
        script: String,
        number: String,
        role: String,
    },
    /// `script` took `role` (every role when `None`) from `number` (`gw.auth.revoke`).
    Revoked {
        script: String,
        number: String,
        role: Option<String>,
    },
    /// `failures` wrong credentials claimed the enrolled `number`: it is not locked out of
    /// what its caller ID grants, but its credential-bearing SMS commands are suspended until
    /// `until` and the owner is alerted.
    EnrolledTargeted {
        number: String,
        failures: u32,
        until: chrono::DateTime<chrono::Utc>,
    },
    /// The gateway-wide failure budget is spent: credential-bearing commands from senders
    /// that are not enrolled are suspended until `until`.
    BudgetSpent {
        failures: u32,
        until: chrono::DateTime<chrono::Utc>,
    },
    /// The lock-out of `number` was lifted by `by` (`mqtt`, `cli`).
    Unlocked { number: String, by: String },
}

impl Security {
    /// The `event_type` of the MQTT message and of the Home Assistant event entity.
    pub fn event_type(&self) -> &'static str {
        match self {
            Security::Granted { .. } => "granted",
            Security::Revoked { .. } => "revoked",
            Security::EnrolledTargeted { .. } => "enrolled_targeted",
            Security::BudgetSpent { .. } => "budget_spent",
            Security::Unlocked { .. } => "unlocked",
        }
    }

    /// Every `event_type`, including the lock-out's, for the discovery entity.
    pub const EVENT_TYPES: [&'static str; 6] = [
        "lockout",
        "granted",
        "revoked",
        "enrolled_targeted",
        "budget_spent",
        "unlocked",
    ];
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
        /// May use the priority reserve of the caps (alarm, notify, security alerts).
        priority: bool,
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
    /// Ask the alarm panel; `code` is checked when the panel has one and the source is not
    /// trusted (a given code is always checked). With `reply`, the answer comes back as
    /// [`Event::AlarmResult`] with that id.
    Alarm {
        action: AlarmAction,
        /// Who asks, set by the router (the Lua host, the MQTT bridge), out of band.
        source: AlarmSource,
        /// A label for logs and `Event::Alarm` (a user name, a number); grants nothing.
        by: Option<String>,
        code: Option<Secret>,
        reply: Option<u64>,
    },
    /// Send a USSD code (`*100#`); answered by [`Event::UssdResult`].
    Ussd {
        id: u64,
        code: String,
    },
    /// Lift the lock-out of `number` (MQTT `<p>/security/unlock`): becomes
    /// [`Event::UnlockRequest`] for the script task.
    Unlock {
        number: String,
        by: String,
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
