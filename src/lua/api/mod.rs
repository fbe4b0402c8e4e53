//! The `gw` global: one file per API module, each with its single `register` function, all
//! listed in [`register_all`]. `docs/lua-api.md` documents every function with an example.
//!
//! Callbacks reach the host through [`ApiContext`]: the shared [`World`] and command list, and
//! the calling script's own state (store, timers, the message being handled). Locks are held
//! only inside one callback and never while Lua runs, so they cannot deadlock.

mod alarm;
mod auth;
mod call;
mod config;
mod fail_once;
mod input;
mod log;
mod modem;
mod mqtt;
mod output;
mod phone;
mod sms;
pub(crate) mod store;
mod text;
mod timer;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Local, NaiveTime};
use mlua::{DeserializeOptions, Function, Lua, LuaSerdeExt, SerializeOptions, Table, Value};
use sha2::{Digest, Sha256};

use super::clock::{self, WallClock};
use super::lockout::{Enrolment, Lockouts, LOCKOUT_SCOPE};
use super::sandbox::Budget;
use super::{Caps, World};
use crate::bus::{
    AlarmAction, AlarmSource, Command, Event, OutputAction, ScriptKind, Secret, SenderKind,
};

/// Where the host keeps the Lua functions of pending timers (id → function).
pub(crate) const TIMERS_REGISTRY_KEY: &str = "gsmgw.timers";

/// Where the host keeps the Lua functions waiting for a USSD or MQTT session result.
pub(crate) const CALLBACKS_REGISTRY_KEY: &str = "gsmgw.callbacks";

/// What every script shares: the world they read, the commands and events they emit, and the
/// host-wide state the API works on.
#[derive(Debug)]
pub(crate) struct Shared {
    pub world: World,
    pub commands: Vec<Command>,
    pub events: Vec<Event>,
    pub country_code: Option<String>,
    pub lockouts: Lockouts,
    /// Who was granted authority, by number (`gw.auth.grant`).
    pub enrolment: Enrolment,
    /// Numbers told about attacks (`security.alert_to`).
    pub alert_to: Vec<String>,
    pub clock: WallClock,
    /// `None` when MQTT is disabled.
    pub mqtt_connected: Option<bool>,
    /// The last request id given out (USSD, MQTT sessions); unique for the host's lifetime.
    pub next_request_id: u64,
    /// Requests whose callback waits for the result, by id.
    pub pending: BTreeMap<u64, Owner>,
    /// What scripts marked on the SMS being dispatched; `None` outside an SMS dispatch.
    pub sms_marks: Option<SmsMarks>,
    /// Reply budgets and the USSD allow-list.
    pub sms_policy: super::budget::SmsPolicy,
    /// What SMS from strangers caused to be sent in the last hour.
    pub stranger_budgets: super::budget::StrangerBudgets,
}

/// What the scripts handling one SMS said about it (contract C).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SmsMarks {
    /// Texts to mask (`***`) wherever the SMS is shown or kept: `gw.sms.secret`.
    pub secrets: Vec<String>,
    /// The SMS carries a credential (a secret was marked, or `gw.auth.fail` counted it):
    /// it is never forwarded.
    pub credential_bearing: bool,
    /// Senders (as given, trimmed, lower case) `gw.auth.fail` already counted for this SMS.
    pub failed_senders: Vec<String>,
}

impl Shared {
    pub fn new(world: World, country_code: Option<String>, clock: WallClock) -> Self {
        Self {
            world,
            commands: Vec::new(),
            events: Vec::new(),
            country_code,
            lockouts: Lockouts::default(),
            enrolment: Enrolment::default(),
            alert_to: Vec::new(),
            clock,
            mqtt_connected: None,
            next_request_id: 0,
            pending: BTreeMap::new(),
            sms_marks: None,
            sms_policy: Default::default(),
            stranger_budgets: Default::default(),
        }
    }
}

/// The script generation a callback belongs to: a result for an older generation (the script
/// was reloaded since) finds no owner and does nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub kind: ScriptKind,
    pub name: String,
    pub generation: u64,
    /// The message being handled when the request was made: the callback answers it
    /// (`gw.sms.reply` replies to the sender of the SMS that asked).
    pub current: Current,
}

impl Owner {
    pub fn is(&self, kind: ScriptKind, name: &str, generation: u64) -> bool {
        self.kind == kind && self.name == name && self.generation == generation
    }
}

/// What a callback knows about the message being handled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Current {
    /// The number `gw.sms.reply` answers to.
    pub reply_to: Option<String>,
    /// The call `gw.call.*` act on when no id is given.
    pub call_id: Option<u64>,
    /// The sender of the SMS being handled and its kind: an alphanumeric sender never
    /// matches a number in `gw.phone` nor gets a grant, whatever its characters.
    pub sender: Option<(String, SenderKind)>,
}

/// When a timer fires again.
#[derive(Debug, Clone)]
pub(crate) enum Repeat {
    /// `gw.timer.after`.
    Once,
    /// `gw.timer.every`, `on.timer = "every 5m"`.
    Every(Duration),
    /// `gw.timer.at`, `on.timer = "at 22:00"`: `next` is the wall-clock time it is due.
    Daily {
        at: NaiveTime,
        next: DateTime<Local>,
    },
}

/// A pending timer of one script.
#[derive(Debug, Clone)]
pub(crate) struct Timer {
    pub due: Instant,
    pub repeat: Repeat,
    /// `Some(spec)` for a rule's `on.timer` trigger (runs `execute`, has no Lua function).
    pub trigger: Option<String>,
}

/// The per-script state the API works on.
#[derive(Debug)]
pub(crate) struct ScriptCtx {
    pub kind: ScriptKind,
    pub name: String,
    /// The generation this state is (or becomes, while loading).
    pub generation: u64,
    pub now: Instant,
    pub current: Current,
    /// Persisted data: key → JSON.
    pub store: BTreeMap<String, String>,
    pub timers: BTreeMap<u64, Timer>,
    pub next_timer_id: u64,
    /// Commands issued by the running call, against [`Caps::commands_per_call`].
    pub commands_this_call: usize,
    /// Outputs the running call switched, as it asked: its own later reads see them, while
    /// the [`World`] changes only when the GPIO owner confirms.
    pub requested_outputs: BTreeMap<String, bool>,
}

/// The bounds the API enforces on one script.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ApiLimits {
    pub caps: Caps,
    /// The longest duration a script may ask for.
    pub max_duration: Duration,
}

/// The handles one script's callbacks hold.
#[derive(Clone)]
pub(crate) struct ApiContext {
    pub shared: Arc<Mutex<Shared>>,
    pub script: Arc<Mutex<ScriptCtx>>,
    pub config: Arc<serde_json::Value>,
    pub limits: ApiLimits,
    pub budget: Arc<Budget>,
}

impl ApiContext {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        // Callbacks never panic while holding it, so a poisoned lock still holds sound data.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn script(&self) -> MutexGuard<'_, ScriptCtx> {
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when `address` is the alphanumeric sender of the SMS being handled.
    fn is_alphanumeric_sender(&self, address: &str) -> bool {
        matches!(&self.script().current.sender,
            Some((from, SenderKind::Alphanumeric)) if from.trim() == address.trim())
    }

    /// Queues `command`; past [`Caps::commands_per_call`] it is dropped and the call ends
    /// with an error naming the cap at its next budget check (see [`ApiContext::try_emit`]
    /// for an error at once).
    fn emit(&self, command: Command) {
        if self.count_command() {
            self.shared().commands.push(command);
        } else {
            self.budget.trip_command_cap();
        }
    }

    /// Queues `command`, or fails with an error naming [`Caps::commands_per_call`].
    fn try_emit(&self, lua: &Lua, function: &str, command: Command) -> mlua::Result<()> {
        if !self.count_command() {
            self.budget.trip_command_cap();
            return Err(lua_error(
                lua,
                format!(
                    "{function}: too many commands in one call (lua.max_commands_per_call = {})",
                    self.limits.caps.commands_per_call
                ),
            ));
        }
        self.shared().commands.push(command);
        Ok(())
    }

    /// Counts one more command of the running call; false when that is over the cap.
    fn count_command(&self) -> bool {
        let mut script = self.script();
        script.commands_this_call = script.commands_this_call.saturating_add(1);
        script.commands_this_call <= self.limits.caps.commands_per_call
    }

    /// Charges `bytes` of work done outside the VM (copying, serialising) to the budget.
    fn charge_bytes(&self, lua: &Lua, function: &str, bytes: usize) -> mlua::Result<()> {
        let cost = bytes as u64 / super::sandbox::BYTES_PER_INSTRUCTION;
        if self.budget.charge(cost) {
            return Err(lua_error(
                lua,
                format!("{function}: {}", self.budget.exceeded_message()),
            ));
        }
        Ok(())
    }

    /// Fails when `text` is longer than an SMS a script may send (`lua.max_sms_chars`).
    fn check_sms_text(&self, lua: &Lua, function: &str, text: &str) -> mlua::Result<()> {
        let cap = self.limits.caps.sms_chars;
        // Counting stops at the cap: the text may be megabytes long.
        if text.chars().nth(cap).is_some() {
            return Err(lua_error(
                lua,
                format!("{function}: text longer than lua.max_sms_chars ({cap} characters)"),
            ));
        }
        Ok(())
    }

    /// `seconds` as a duration a script may ask for: finite, not negative, at most
    /// `lua.max_duration_s`.
    fn duration(&self, lua: &Lua, function: &str, seconds: f64) -> mlua::Result<Duration> {
        let max = self.limits.max_duration;
        match Duration::try_from_secs_f64(seconds) {
            Ok(d) if d <= max => Ok(d),
            _ => Err(lua_error(
                lua,
                format!(
                    "{function}: invalid duration {seconds} s: give seconds from 0 to {} (lua.max_duration_s)",
                    max.as_secs()
                ),
            )),
        }
    }

    /// Registers `f` (if any) to run when the result of request `id` arrives.
    fn await_result(&self, lua: &Lua, f: Option<Function>) -> mlua::Result<u64> {
        let owner = {
            let script = self.script();
            Owner {
                kind: script.kind,
                name: script.name.clone(),
                generation: script.generation,
                current: script.current.clone(),
            }
        };
        let mut shared = self.shared();
        shared.next_request_id += 1;
        let id = shared.next_request_id;
        if let Some(f) = f {
            let fns: Table = lua.named_registry_value(CALLBACKS_REGISTRY_KEY)?;
            fns.raw_set(id, f)?;
            shared.pending.insert(id, owner);
        }
        Ok(id)
    }
}

/// Serialisation that turns JSON `null` into `nil`, so scripts test fields with `if x then`.
fn to_lua_options() -> SerializeOptions {
    SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
}

/// A Lua error carrying the caller's `file:line`, like the errors Lua raises itself.
pub(crate) fn lua_error(lua: &Lua, message: impl std::fmt::Display) -> mlua::Error {
    let place = lua.inspect_stack(1).and_then(|frame| {
        let line = frame.curr_line();
        let src = frame.source().short_src.map(|s| s.into_owned())?;
        (line > 0).then(|| format!("{src}:{line}: "))
    });
    mlua::Error::RuntimeError(format!("{}{message}", place.unwrap_or_default()))
}

/// `base + d`, or the latest instant representable near it: a script's durations are bounded,
/// but an instant must never panic on overflow.
pub(crate) fn later(base: Instant, d: Duration) -> Instant {
    base.checked_add(d)
        .or_else(|| base.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(base)
}

/// Creates the `gw` global with every module. The one place modules are listed.
pub(crate) fn register_all(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    lua.globals().set("gw", lua.create_table()?)?;
    lua.set_named_registry_value(TIMERS_REGISTRY_KEY, lua.create_table()?)?;
    lua.set_named_registry_value(CALLBACKS_REGISTRY_KEY, lua.create_table()?)?;
    output::register(lua, ctx)?;
    input::register(lua, ctx)?;
    sms::register(lua, ctx)?;
    call::register(lua, ctx)?;
    log::register(lua, ctx)?;
    config::register(lua, ctx)?;
    store::register(lua, ctx)?;
    timer::register(lua, ctx)?;
    phone::register(lua, ctx)?;
    modem::register(lua, ctx)?;
    alarm::register(lua, ctx)?;
    mqtt::register(lua, ctx)?;
    auth::register(lua, ctx)?;
    text::register(lua, ctx)?;
    // After `auth`: it wraps `gw.auth.fail`.
    sms::mark_failures(lua, ctx)?;
    // Last: it wraps `gw.auth.fail` as the other wrappers left it.
    fail_once::register(lua, ctx)?;
    Ok(())
}

fn module(lua: &Lua, name: &str) -> mlua::Result<Table> {
    let gw: Table = lua.globals().get("gw")?;
    let table = lua.create_table()?;
    gw.set(name, &table)?;
    Ok(table)
}

/// `get(name)` and `names()` over one of the World's named on/off maps (outputs or inputs).
fn register_states(
    lua: &Lua,
    m: &Table,
    ctx: &ApiContext,
    pick: fn(&World) -> &BTreeMap<String, bool>,
) -> mlua::Result<()> {
    let c = ctx.clone();
    m.set(
        "get",
        lua.create_function(move |_, name: String| {
            Ok(pick(&c.shared().world).get(&name).copied())
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "names",
        lua.create_function(move |_, ()| {
            Ok(pick(&c.shared().world).keys().cloned().collect::<Vec<_>>())
        })?,
    )?;
    Ok(())
}

/// The key-value scope of a script's `gw.store`: `plugin:<name>` or `rule:<name>`.
pub(crate) fn scope(kind: ScriptKind, name: &str) -> String {
    match kind {
        ScriptKind::Plugin => format!("plugin:{name}"),
        ScriptKind::Rule => format!("rule:{name}"),
    }
}

/// True for a caller ID that identifies nobody: absent, empty, or without digits
/// ("anonymous", "withheld").
fn is_withheld(number: Option<&str>) -> bool {
    number.map_or(true, |n| crate::phone::digits(n).is_empty())
}
