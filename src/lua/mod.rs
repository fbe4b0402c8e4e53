//! The Lua host for dialect plugins and rules: one sandboxed state per script, dispatch of SMS,
//! calls and events (plugins in order, then every matching rule), timers, asynchronous
//! callbacks, the lock-out of senders, and hot reload that keeps the old version on error.
//!
//! The host is synchronous and deterministic: the app owns it in one task, passes `now` in (and
//! the wall-clock time through [`LuaHost::set_wall_clock`]), and executes the returned
//! [`Dispatch::commands`] in order. Nothing here sleeps or spawns.
//!
//! Layout: [`sandbox`] builds a safe state with memory and instruction budgets; [`api`]
//! registers the `gw` global (documented in `docs/lua-api.md`); [`rules`] checks rule tables and
//! matches events; [`lockout`] counts wrong passwords; [`clock`] converts between `Instant`s and
//! local time; this file loads scripts and routes work to them.

mod api;
mod budget;
mod clock;
mod lockout;
mod pattern;
mod rules;
mod sandbox;
pub mod task;
pub mod watch;

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chrono::{DateTime, Local};
use mlua::{ChunkMode, Function, Lua, MultiValue, Table, Value};

use crate::bus::{
    AlarmState, Call, Command, Event, IncomingSms, ModemStatus, ScriptKind, ScriptStatus, Security,
};
use api::{ApiContext, Current, Repeat, ScriptCtx, Shared, Timer};
use api::{CALLBACKS_REGISTRY_KEY, TIMERS_REGISTRY_KEY};
pub use budget::SmsPolicy;
use clock::WallClock;
pub use lockout::{LockoutPolicy, ENROLMENT_SCOPE, LOCKOUT_SCOPE};
use rules::{Mode, Rule, RuleEvent, TimerSpec};
use sandbox::Budget;

/// Calls in a row that may fail before a script is disabled.
const MAX_CONSECUTIVE_FAILURES: u32 = 5;

/// The hooks a plugin table may have; anything else in it is ignored.
const HOOK_NAMES: [&str; 8] = [
    "sms",
    "unhandled",
    "call",
    "call_ended",
    "input",
    "output",
    "alarm",
    "init",
];

/// Limits and settings shared by every script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOptions {
    /// Memory one script's state may use, in KiB.
    pub memory_limit_kb: usize,
    /// VM instructions one call (hook, timer callback, load) may run.
    pub instruction_limit: u64,
    /// Digits of the home country code (`"44"`), for `gw.phone` and `gw.sms.send`.
    pub country_code: Option<String>,
    /// Wall-clock time one call may run, in milliseconds.
    pub call_deadline_ms: u64,
    /// What one call may ask of the gateway outside its Lua state.
    pub caps: Caps,
    /// The longest duration a script may ask for, in seconds.
    pub max_duration_s: u64,
    /// Seconds after which a disabled script is tried again.
    pub disabled_retry_s: u64,
}

/// Caps on what a script holds or asks for outside its Lua state (whose memory is limited
/// by `memory_limit_kb`); going over one is a Lua error naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub commands_per_call: usize,
    pub mqtt_payload_bytes: usize,
    pub store_value_bytes: usize,
    pub store_keys: usize,
    pub sms_chars: usize,
    pub timers: usize,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self::from(&crate::config::LuaConfig::default())
    }
}

impl From<&crate::config::LuaConfig> for HostOptions {
    fn from(c: &crate::config::LuaConfig) -> Self {
        Self {
            memory_limit_kb: c.memory_limit_kb,
            instruction_limit: c.instruction_limit,
            country_code: None,
            call_deadline_ms: c.call_deadline_ms,
            caps: Caps {
                commands_per_call: c.max_commands_per_call,
                mqtt_payload_bytes: c.max_mqtt_payload_bytes,
                store_value_bytes: c.max_store_value_bytes,
                store_keys: c.max_store_keys,
                sms_chars: c.max_sms_chars,
                timers: c.max_timers,
            },
            max_duration_s: c.max_duration_s,
            disabled_retry_s: c.disabled_retry_s,
        }
    }
}

impl HostOptions {
    fn limits(&self) -> sandbox::Limits {
        sandbox::Limits {
            memory_limit_kb: self.memory_limit_kb,
            instruction_limit: self.instruction_limit,
            call_deadline: std::time::Duration::from_millis(self.call_deadline_ms),
            commands_per_call: self.caps.commands_per_call,
        }
    }
}

/// What scripts can read about the gateway; the host keeps it up to date from events.
#[derive(Debug, Clone, PartialEq)]
pub struct World {
    /// Every configured output (only these names can be driven) and its last known state.
    pub outputs: BTreeMap<String, bool>,
    pub inputs: BTreeMap<String, bool>,
    pub modem: ModemStatus,
    /// The alarm panel's state, from [`Event::Alarm`].
    pub alarm: AlarmState,
}

impl Default for World {
    fn default() -> Self {
        Self {
            outputs: BTreeMap::new(),
            inputs: BTreeMap::new(),
            modem: ModemStatus::default(),
            alarm: AlarmState::Disarmed,
        }
    }
}

/// The outcome of handing something to the scripts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dispatch {
    /// The plugin that handled the SMS or call, if any.
    pub handled_by: Option<String>,
    /// What the scripts asked for, in the order they asked.
    pub commands: Vec<Command>,
    /// Every script error, as `file:line: message`.
    pub errors: Vec<String>,
    /// Scripts whose status changed (disabled after repeated failures), to publish.
    pub statuses: Vec<ScriptStatus>,
    /// Events the host raised (a sender locked out), to publish on the bus.
    pub events: Vec<Event>,
    /// For an SMS: texts the scripts marked secret (`gw.sms.secret`), to mask wherever the
    /// SMS is shown or kept (see [`mask`]).
    pub secrets: Vec<String>,
    /// For an SMS: it carries a credential (a secret was marked or `gw.auth.fail` counted
    /// it); it is never forwarded.
    pub credential_bearing: bool,
}

/// What replaces a secret wherever an SMS is shown or kept.
pub const MASK: &str = "***";

/// `text` with every occurrence of each secret replaced by [`MASK`]; longer secrets first, so
/// that one secret inside another leaves nothing of the longer one.
pub fn mask(text: &str, secrets: &[String]) -> String {
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for secret in sorted {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    out
}

/// One loaded generation of a script.
struct Script {
    // Dropped before `lua`: handles into a state go first.
    hooks: Table,
    /// `Some` for a rule: its checked table.
    rule: Option<Rule>,
    /// Mode `queued`: triggers waiting for the pending work of an earlier run.
    queue: VecDeque<RuleEvent>,
    lua: Lua,
    budget: Arc<Budget>,
    ctx: Arc<Mutex<ScriptCtx>>,
    file: String,
    /// The `lib/*.lua` files this script has `require`d (canonical paths), for hot reload.
    libs: Libs,
    generation: u64,
    consecutive_failures: u32,
    disabled: bool,
    /// When it was disabled: it is tried again `disabled_retry_s` later.
    disabled_at: Option<Instant>,
}

/// The library files a script has required so far; shared with its `require`, which may run
/// after loading too.
type Libs = Arc<Mutex<Vec<std::path::PathBuf>>>;

/// The default of `lua.plugin_text_limit`: the characters of SMS text a dialect plugin sees.
pub const PLUGIN_TEXT_LIMIT: usize = 1600;

/// Where `require` keeps the values of libraries already loaded (name → value).
const LOADED_REGISTRY_KEY: &str = "gsmgw.loaded";

/// Bytes a library file may have: far beyond any helper, small enough to read at once.
const MAX_LIB_BYTES: u64 = 256 * 1024;

/// What a dialect plugin sees of an SMS text: trimmed of outer white space and at most
/// `limit` characters, so that its parsing costs a bounded time whatever arrives. Case and
/// inner spacing are kept: some dialects' passwords depend on them.
pub(crate) fn plugin_text(text: &str, limit: usize) -> &str {
    let text = text.trim();
    match text.char_indices().nth(limit) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

impl Script {
    fn ctx(&self) -> MutexGuard<'_, ScriptCtx> {
        self.ctx.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The arguments a hook or callback is called with, built inside the script's own state.
enum HookArg<'a> {
    None,
    Sms(&'a IncomingSms),
    Call(&'a Call),
    Switch {
        name: &'a str,
        on: bool,
    },
    /// The alarm panel's new state and who caused it.
    Alarm {
        state: &'a str,
        by: Option<&'a str>,
    },
    /// A rule's `execute(gw, ev)`.
    Rule(&'a RuleEvent),
    /// An asynchronous callback's `(ok, detail)`; `detail` is nil when absent.
    Outcome {
        ok: bool,
        detail: Option<&'a str>,
    },
}

/// The fields of an SMS as scripts see them.
pub(crate) fn sms_fields(t: &Table, sms: &IncomingSms) -> mlua::Result<()> {
    t.set("from", sms.from.as_str())?;
    t.set("text", sms.text.as_str())?;
    t.set(
        "time",
        sms.time.map(|time| {
            time.to_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        }),
    )?;
    t.set("id", sms.id)?;
    t.set("sender_kind", sms.sender_kind.as_str())?;
    t.set("incomplete", sms.incomplete)
}

impl HookArg<'_> {
    fn to_lua(&self, lua: &Lua) -> mlua::Result<MultiValue> {
        let t = match self {
            HookArg::None => return Ok(MultiValue::new()),
            HookArg::Rule(ev) => {
                let gw: Value = lua.globals().raw_get("gw")?;
                return Ok(MultiValue::from_iter([gw, Value::Table(ev.to_lua(lua)?)]));
            }
            HookArg::Outcome { ok, detail } => {
                let detail = match detail {
                    Some(d) => Value::String(lua.create_string(d)?),
                    None => Value::Nil,
                };
                return Ok(MultiValue::from_iter([Value::Boolean(*ok), detail]));
            }
            _ => lua.create_table()?,
        };
        match self {
            HookArg::Sms(sms) => sms_fields(&t, sms)?,
            HookArg::Call(call) => {
                t.set("from", call.from.as_deref())?;
                t.set("id", call.id)?;
            }
            HookArg::Switch { name, on } => {
                t.set("name", *name)?;
                t.set("on", *on)?;
            }
            HookArg::Alarm { state, by } => {
                t.set("state", *state)?;
                t.set("by", *by)?;
            }
            HookArg::None | HookArg::Rule(_) | HookArg::Outcome { .. } => {}
        }
        Ok(MultiValue::from_iter([Value::Table(t)]))
    }
}

/// Who a rule answers with `gw.sms.reply` and `gw.call.*` for one trigger.
fn current_for(ev: &RuleEvent) -> Current {
    match ev {
        RuleEvent::Sms { sms, .. } => Current {
            reply_to: Some(sms.from.clone()),
            call_id: None,
            sender: Some((sms.from.clone(), sms.sender_kind)),
        },
        RuleEvent::Call { call, .. } => Current {
            reply_to: call.from.clone(),
            call_id: Some(call.id),
            sender: None,
        },
        _ => Current::default(),
    }
}

/// A timer that is due: sorted by time, then plugin order, then rules by name.
type DueTimer = (Instant, usize, u64, ScriptKind, String, u64);

/// Runs dialect plugins and rules.
pub struct LuaHost {
    opts: HostOptions,
    shared: Arc<Mutex<Shared>>,
    plugins: BTreeMap<String, Script>,
    rules: BTreeMap<String, Script>,
    /// Preferred order; loaded plugins not in it come after, by name.
    order: Vec<String>,
    /// `lua.plugin_text_limit`: characters of SMS text plugins see.
    plugin_text_limit: usize,
}

impl LuaHost {
    /// A host with no scripts, seeing `world` (which must list every configured output). The
    /// wall clock starts as the system's; see [`LuaHost::set_wall_clock`].
    pub fn new(opts: HostOptions, world: World) -> Self {
        let shared = Shared::new(
            world,
            opts.country_code.clone(),
            WallClock::new(Instant::now(), Local::now()),
        );
        Self {
            opts,
            shared: Arc::new(Mutex::new(shared)),
            plugins: BTreeMap::new(),
            rules: BTreeMap::new(),
            order: Vec::new(),
            plugin_text_limit: PLUGIN_TEXT_LIMIT,
        }
    }

    /// Sets how many characters of an SMS text dialect plugins see (`lua.plugin_text_limit`,
    /// default [`PLUGIN_TEXT_LIMIT`]); rules always get the whole text.
    pub fn set_plugin_text_limit(&mut self, limit: usize) {
        self.plugin_text_limit = limit;
    }

    /// The loaded scripts that have required the library file `path` (reloaded when it
    /// changes), plugins first.
    pub fn dependents(&self, path: &Path) -> Vec<(ScriptKind, String)> {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let plugins = self.plugins.iter().map(|(n, s)| (ScriptKind::Plugin, n, s));
        let rules = self.rules.iter().map(|(n, s)| (ScriptKind::Rule, n, s));
        plugins
            .chain(rules)
            .filter(|(_, _, s)| {
                s.libs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&path)
            })
            .map(|(kind, name, _)| (kind, name.clone()))
            .collect()
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn scripts(&self, kind: ScriptKind) -> &BTreeMap<String, Script> {
        match kind {
            ScriptKind::Plugin => &self.plugins,
            ScriptKind::Rule => &self.rules,
        }
    }

    fn scripts_mut(&mut self, kind: ScriptKind) -> &mut BTreeMap<String, Script> {
        match kind {
            ScriptKind::Plugin => &mut self.plugins,
            ScriptKind::Rule => &mut self.rules,
        }
    }

    /// Sets the reply budgets and the USSD allow-list (default: `[sms]`'s defaults).
    pub fn set_sms_policy(&mut self, policy: SmsPolicy) {
        self.shared().sms_policy = policy;
    }

    /// Sets the lock-out numbers (default: 5 wrong attempts within an hour lock out for an hour).
    pub fn set_lockout_policy(&mut self, policy: LockoutPolicy) {
        self.shared().lockouts.policy = policy;
    }

    /// Restores lock-outs saved in scope [`LOCKOUT_SCOPE`] (number → JSON RFC 3339 end time);
    /// ended ones are deleted by the next dispatch's commands.
    pub fn restore_lockouts(&mut self, saved: &BTreeMap<String, String>, now: Instant) {
        let mut shared = self.shared();
        let wall_now = shared.clock.at(now);
        for (number, json) in saved {
            let until = serde_json::from_str::<String>(json)
                .ok()
                .and_then(|s| DateTime::parse_from_rfc3339(&s).ok());
            match until.and_then(|u| (u.with_timezone(&Local) - wall_now).to_std().ok()) {
                // A saved end far in the future (a damaged row, a clock set wrong when it was
                // written) is no longer than a lock-out can be.
                Some(remaining) => {
                    let remaining = remaining.min(shared.lockouts.policy.window);
                    shared.lockouts.restore(number, remaining, now)
                }
                None => shared.commands.push(Command::KvSet {
                    scope: LOCKOUT_SCOPE.to_string(),
                    key: number.clone(),
                    value: None,
                }),
            }
        }
    }

    /// The wall-clock time at `now` (the app calls this before each dispatch with the system
    /// clock; tests with a fake one). Daily timers follow; after a jump of more than a minute
    /// (NTP after boot) they are rescheduled from the new time, without catching up.
    pub fn set_wall_clock(&mut self, now: Instant, wall: DateTime<Local>) {
        let clock = {
            let mut shared = self.shared();
            let predicted = shared.clock.at(now);
            shared.clock = WallClock::new(now, wall);
            let jumped = (predicted - wall).abs().to_std().unwrap_or_default() > clock::JUMP;
            (shared.clock, jumped)
        };
        let (clock, jumped) = clock;
        for script in self.plugins.values().chain(self.rules.values()) {
            for timer in script.ctx().timers.values_mut() {
                if let Repeat::Daily { at, next } = &mut timer.repeat {
                    if jumped {
                        *next = clock::next_daily(*at, wall);
                    }
                    timer.due = clock.instant_of(*next);
                }
            }
        }
    }

    /// Whether MQTT is enabled (`Some`) and connected, for `gw.mqtt.status()`.
    pub fn set_mqtt_connected(&mut self, connected: Option<bool>) {
        self.shared().mqtt_connected = connected;
    }

    /// Loads (or reloads) plugin `name` from `path` in a fresh state with `config` as
    /// `gw.config` and `data` (its persisted `gw.store`, key → JSON) — compiled, run and
    /// checked before it replaces a running version; on error the old one keeps running.
    /// On a reload the running version's store is carried over instead of `data`.
    ///
    /// Commands the script emits while loading (top level, `init`) are returned by the next
    /// dispatch or by [`LuaHost::take_commands`].
    pub fn load_plugin(
        &mut self,
        name: &str,
        path: &Path,
        config: &serde_json::Value,
        data: BTreeMap<String, String>,
        now: Instant,
    ) -> ScriptStatus {
        self.load_script(ScriptKind::Plugin, name, path, config, data, now)
    }

    /// Loads (or reloads) rule `name` from `path`, like [`LuaHost::load_plugin`]: `data` is its
    /// persisted store (scope `rule:<name>`, which also holds `gw.data`). Its `on.mqtt` topics
    /// are subscribed and its `on.timer` triggers scheduled from `now`.
    pub fn load_rule(
        &mut self,
        name: &str,
        path: &Path,
        config: &serde_json::Value,
        data: BTreeMap<String, String>,
        now: Instant,
    ) -> ScriptStatus {
        self.load_script(ScriptKind::Rule, name, path, config, data, now)
    }

    fn load_script(
        &mut self,
        kind: ScriptKind,
        name: &str,
        path: &Path,
        config: &serde_json::Value,
        data: BTreeMap<String, String>,
        now: Instant,
    ) -> ScriptStatus {
        let what = kind_word(kind);
        let old = self.scripts(kind).get(name);
        let had_old = old.is_some();
        let store = old.map(|s| s.ctx().store.clone()).unwrap_or(data);
        let generation = old.map_or(0, |s| s.generation);
        let (world_before, commands_before, events_before) = {
            let shared = self.shared();
            (
                shared.world.clone(),
                shared.commands.len(),
                shared.events.len(),
            )
        };
        let req = LoadRequest {
            kind,
            name,
            path,
            config,
            store,
            now,
            generation: generation + 1,
            run_init: true,
        };
        match load(&self.opts, &self.shared, req) {
            Ok(script) => {
                script.ctx().requested_outputs.clear();
                tracing::info!(
                    script = name,
                    generation = script.generation,
                    "{what} loaded"
                );
                // Dropping the old state drops its timers and callbacks with it.
                self.scripts_mut(kind).insert(name.to_string(), script);
                if kind == ScriptKind::Plugin && !self.order.iter().any(|n| n == name) {
                    self.order.push(name.to_string());
                }
                ScriptStatus {
                    kind,
                    name: name.to_string(),
                    generation: generation + 1,
                    error: None,
                }
            }
            Err(error) => {
                tracing::error!(
                    script = name,
                    "{what} not loaded{}: {error}",
                    if had_old {
                        ", the previous version keeps running"
                    } else {
                        ""
                    }
                );
                let mut shared = self.shared();
                shared.world = world_before;
                shared.commands.truncate(commands_before);
                shared.events.truncate(events_before);
                shared
                    .pending
                    .retain(|_, o| !o.is(kind, name, generation + 1));
                ScriptStatus {
                    kind,
                    name: name.to_string(),
                    generation,
                    error: Some(error),
                }
            }
        }
    }

    /// Stops plugin `name`; its timers never fire.
    pub fn unload(&mut self, name: &str) {
        if self.plugins.remove(name).is_some() {
            tracing::info!(script = name, "plugin unloaded");
        }
    }

    /// Stops rule `name`; its timers and callbacks never run.
    pub fn unload_rule(&mut self, name: &str) {
        if self.rules.remove(name).is_some() {
            tracing::info!(script = name, "rule unloaded");
        }
    }

    /// Plugin order: the first that handles an SMS or call wins. Names not loaded yet keep
    /// their place for when they are.
    pub fn set_order(&mut self, names: &[String]) {
        self.order = names.to_vec();
    }

    /// The loaded plugins, in dispatch order.
    pub fn plugin_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .order
            .iter()
            .filter(|n| self.plugins.contains_key(*n))
            .cloned()
            .collect();
        names.extend(
            self.plugins
                .keys()
                .filter(|n| !self.order.contains(n))
                .cloned(),
        );
        names
    }

    /// The loaded rules, in the order they run (by name).
    pub fn rule_names(&self) -> Vec<String> {
        self.rules.keys().cloned().collect()
    }

    /// The current status of plugin `name` (disabled plugins carry an error).
    pub fn status(&self, name: &str) -> Option<ScriptStatus> {
        self.status_of(ScriptKind::Plugin, name)
    }

    /// The current status of rule `name`.
    pub fn rule_status(&self, name: &str) -> Option<ScriptStatus> {
        self.status_of(ScriptKind::Rule, name)
    }

    fn status_of(&self, kind: ScriptKind, name: &str) -> Option<ScriptStatus> {
        self.scripts(kind).get(name).map(|s| ScriptStatus {
            kind,
            name: name.to_string(),
            generation: s.generation,
            error: s
                .disabled
                .then(|| disabled_message(&s.file, self.opts.disabled_retry_s)),
        })
    }

    /// Bytes the Lua state of a loaded script uses (for the benches and diagnostics).
    pub fn memory_used(&self, kind: ScriptKind, name: &str) -> Option<usize> {
        self.scripts(kind).get(name).map(|s| s.lua.used_memory())
    }

    /// Commands emitted outside a dispatch (while loading), in order.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.shared().commands)
    }

    /// Events raised outside a dispatch (grants while loading), in order.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.shared().events)
    }

    /// True while SMS from `sender` are ignored before any script sees them: it is locked out
    /// and not enrolled. (An enrolled sender is never locked out: failures claiming its number
    /// only suspend its credential-bearing commands, which `gw.auth.locked` tells plugins.)
    /// Calls are never refused for SMS failures.
    pub fn is_locked_out(&self, sender: &str, now: Instant) -> bool {
        let shared = self.shared();
        shared.sender_key(sender).is_some_and(|key| {
            shared.lockouts.is_locked(&key, now) && !shared.enrolment.is_enrolled(&key)
        })
    }

    /// True when some script granted `number` a role (`gw.auth.grant`).
    pub fn is_enrolled(&self, number: &str) -> bool {
        let shared = self.shared();
        shared
            .sender_key(number)
            .is_some_and(|key| shared.enrolment.is_enrolled(&key))
    }

    /// Numbers that get an SMS when the gateway is attacked (`security.alert_to`).
    pub fn set_security_alerts(&mut self, numbers: Vec<String>) {
        self.shared().alert_to = numbers;
    }

    /// Restores the grants saved in scope [`ENROLMENT_SCOPE`]; call before loading plugins so
    /// that their grants at load time are recognised as known.
    pub fn restore_enrolment(&mut self, saved: &BTreeMap<String, String>) {
        self.shared().enrolment.restore(saved);
    }

    /// Lifts the lock-out of `sender` (and forgets its failures), as `by` asked; the commands
    /// and events of the returned dispatch delete it from the store and publish it.
    pub fn unlock(&mut self, sender: &str, by: &str, now: Instant) -> Dispatch {
        self.expire_lockouts(now);
        {
            let mut shared = self.shared();
            match shared.sender_key(sender) {
                Some(key) => {
                    let was = shared.lockouts.unlock(&key);
                    tracing::info!(sender = %key, %by, was_locked = was, "lock-out lifted");
                    shared.commands.push(Command::KvSet {
                        scope: LOCKOUT_SCOPE.to_string(),
                        key: key.clone(),
                        value: None,
                    });
                    shared.events.push(Event::Security(Security::Unlocked {
                        number: key,
                        by: by.to_string(),
                    }));
                }
                None => tracing::warn!(%by, "unlock of an empty sender ignored"),
            }
        }
        self.finish(Dispatch::default())
    }

    /// Lifts every lock-out that is no longer in `saved` (scope [`LOCKOUT_SCOPE`]): after a
    /// SIGHUP, so that `gsmgw unlock` on the store reaches a running gateway.
    pub fn sync_lockouts(&mut self, saved: &BTreeMap<String, String>, now: Instant) {
        let mut shared = self.shared();
        for key in shared.lockouts.locked_keys(now) {
            if !saved.contains_key(&key) {
                shared.lockouts.unlock(&key);
                tracing::info!(sender = %key, "lock-out lifted (removed from the store)");
            }
        }
    }

    /// Offers `sms` to each plugin in order (the first whose `sms` hook returns true wins), then
    /// to every rule whose `on.sms` matches. A locked-out sender reaches nobody; an empty one
    /// reaches the rules only (it cannot be answered nor held to account).
    pub fn dispatch_sms(&mut self, sms: &IncomingSms, now: Instant) -> Dispatch {
        self.dispatch_sms_as(sms, false, now)
    }

    /// Like [`LuaHost::dispatch_sms`] for an SMS that waited too long to be a command
    /// (`sms.max_command_age_s`): no plugin sees it; rules see it with `ev.stale = true`.
    pub fn dispatch_stale_sms(&mut self, sms: &IncomingSms, now: Instant) -> Dispatch {
        self.dispatch_sms_as(sms, true, now)
    }

    fn dispatch_sms_as(&mut self, sms: &IncomingSms, stale: bool, now: Instant) -> Dispatch {
        self.expire_lockouts(now);
        let locked = {
            let shared = self.shared();
            shared
                .sender_key_of_kind(&sms.from, sms.sender_kind)
                .is_some_and(|key| {
                    shared.lockouts.is_locked(&key, now) && !shared.enrolment.is_enrolled(&key)
                })
        };
        if locked {
            tracing::debug!(from = %sms.from, "SMS ignored: the sender is locked out");
            return self.finish(Dispatch::default());
        }
        let current = Current {
            reply_to: Some(sms.from.clone()),
            call_id: None,
            sender: Some((sms.from.clone(), sms.sender_kind)),
        };
        let empty = self.shared().sender_key(&sms.from).is_none();
        let for_plugins = IncomingSms {
            text: plugin_text(&sms.text, self.plugin_text_limit).to_string(),
            ..sms.clone()
        };
        self.shared().sms_marks = Some(api::SmsMarks::default());
        let mut out = if empty {
            tracing::debug!("SMS without a sender: not offered to plugins");
            Dispatch::default()
        } else if stale {
            tracing::info!(from = %sms.from, "stale SMS (older than sms.max_command_age_s): not offered to plugins");
            Dispatch::default()
        } else {
            self.offer("sms", &HookArg::Sms(&for_plugins), current.clone(), now)
        };
        let ev = RuleEvent::Sms {
            sms: sms.clone(),
            handled_by: out.handled_by.clone(),
            stale,
            failed: None,
        };
        self.run_rules(&ev, now, &mut out);
        let marks = self.shared().sms_marks.take().unwrap_or_default();
        out.secrets = marks.secrets;
        out.credential_bearing = marks.credential_bearing;
        if !empty && !stale && out.handled_by.is_none() && !out.credential_bearing {
            self.offer_unhandled(&for_plugins, current, now, &mut out);
        }
        let mut out = self.finish(out);
        // An enrolled number's answers (a master's long LIST) count against the caps only.
        if !self.is_enrolled(&sms.from) {
            let mut shared = self.shared();
            let policy = shared.sms_policy.clone();
            let dropped = shared
                .stranger_budgets
                .apply(&policy, &sms.from, &mut out.commands, now);
            if dropped > 0 {
                tracing::warn!(from = %sms.from, dropped, "replies dropped: over the reply budget of a sender nobody enrolled (sms.reply_budget, sms.stranger_replies_per_hour)");
            }
        }
        out
    }

    /// Hands a quarantined SMS (its dispatch failed or was cut off too often) to the rules
    /// only, as `ev.failed = error`; plugins never see it again.
    pub fn dispatch_failed_sms(
        &mut self,
        sms: &IncomingSms,
        error: &str,
        now: Instant,
    ) -> Dispatch {
        let mut out = Dispatch::default();
        self.revive(now, &mut out);
        let ev = RuleEvent::Sms {
            sms: sms.clone(),
            handled_by: None,
            stale: false,
            failed: Some(error.to_string()),
        };
        self.run_rules(&ev, now, &mut out);
        self.finish(out)
    }

    /// Forwarding is decided here, after every plugin and rule has seen the SMS, and not by a
    /// plugin that runs first: only then is it known that nobody handled it and that no script
    /// found a credential in it. Every plugin with an `unhandled` hook gets it, in order.
    fn offer_unhandled(
        &mut self,
        sms: &IncomingSms,
        current: Current,
        now: Instant,
        out: &mut Dispatch,
    ) {
        for name in self.plugin_names() {
            self.call_hook(
                &name,
                "unhandled",
                &HookArg::Sms(sms),
                current.clone(),
                now,
                out,
            );
        }
    }

    /// Offers `call` to each plugin in order, then to the rules, like [`LuaHost::dispatch_sms`].
    /// SMS lock-outs do not apply: wrong codes by SMS must not lock the owner out of the gate
    /// its caller ID opens (docs/security.md).
    pub fn dispatch_call(&mut self, call: &Call, now: Instant) -> Dispatch {
        self.expire_lockouts(now);
        let current = Current {
            reply_to: call.from.clone(),
            call_id: Some(call.id),
            sender: None,
        };
        let mut out = self.offer("call", &HookArg::Call(call), current, now);
        let ev = RuleEvent::Call {
            call: call.clone(),
            handled_by: out.handled_by.clone(),
        };
        self.run_rules(&ev, now, &mut out);
        self.finish(out)
    }

    /// Updates the [`World`] from `ev`, then calls every plugin's `input`, `output`, `alarm` or
    /// `call_ended` hook and every rule that subscribed to it, or the callback waiting for a
    /// USSD or MQTT session result. SMS and ringing calls go through [`LuaHost::dispatch_sms`]
    /// and [`LuaHost::dispatch_call`] instead, so they are ignored here.
    pub fn dispatch_event(&mut self, ev: &Event, now: Instant) -> Dispatch {
        let mut out = Dispatch::default();
        self.revive(now, &mut out);
        self.expire_lockouts(now);
        let (hook, arg, current, rule_ev) = match ev {
            Event::InputChanged { name, on } => {
                self.shared().world.inputs.insert(name.clone(), *on);
                (
                    Some("input"),
                    HookArg::Switch { name, on: *on },
                    Current::default(),
                    Some(RuleEvent::Input {
                        name: name.clone(),
                        on: *on,
                    }),
                )
            }
            Event::OutputChanged { name, on } => {
                self.shared().world.outputs.insert(name.clone(), *on);
                (
                    Some("output"),
                    HookArg::Switch { name, on: *on },
                    Current::default(),
                    Some(RuleEvent::Output {
                        name: name.clone(),
                        on: *on,
                    }),
                )
            }
            Event::Modem(status) => {
                self.shared().world.modem = status.clone();
                let ev = RuleEvent::Modem(status.clone());
                (None, HookArg::None, Current::default(), Some(ev))
            }
            Event::Alarm { state, by } => {
                self.shared().world.alarm = *state;
                let ev = RuleEvent::Alarm {
                    state: state.as_str(),
                    by: by.clone(),
                };
                let arg = HookArg::Alarm {
                    state: state.as_str(),
                    by: by.as_deref(),
                };
                (Some("alarm"), arg, Current::default(), Some(ev))
            }
            Event::Mqtt { topic, payload } => {
                let ev = RuleEvent::Mqtt {
                    topic: topic.clone(),
                    payload: payload.clone(),
                };
                (None, HookArg::None, Current::default(), Some(ev))
            }
            Event::Lockout { number, until } => {
                let ev = RuleEvent::Lockout {
                    number: number.clone(),
                    until: until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                };
                (None, HookArg::None, Current::default(), Some(ev))
            }
            Event::CallEnded(call) => (
                Some("call_ended"),
                HookArg::Call(call),
                Current {
                    reply_to: call.from.clone(),
                    call_id: Some(call.id),
                    sender: None,
                },
                None,
            ),
            Event::UnlockRequest { number, by } => return self.unlock(number, by, now),
            Event::UssdResult { id, result } | Event::MqttSession { id, result } => {
                let (ok, detail) = match result {
                    Ok(d) => (true, d),
                    Err(d) => (false, d),
                };
                let arg = HookArg::Outcome {
                    ok,
                    detail: Some(detail),
                };
                self.run_callback(*id, &arg, now, &mut out);
                return self.finish(out);
            }
            Event::AlarmResult { id, result } => {
                let arg = HookArg::Outcome {
                    ok: result.is_ok(),
                    detail: result.as_ref().err().map(String::as_str),
                };
                self.run_callback(*id, &arg, now, &mut out);
                return self.finish(out);
            }
            _ => return self.finish(out),
        };
        if let Some(hook) = hook {
            for name in self.plugin_names() {
                self.call_hook(&name, hook, &arg, current.clone(), now, &mut out);
            }
        }
        if let Some(rule_ev) = rule_ev {
            self.run_rules(&rule_ev, now, &mut out);
        }
        self.finish(out)
    }

    /// When the next timer is due (or the next disabled script is tried again).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = self
            .plugins
            .values()
            .chain(self.rules.values())
            .filter(|s| !s.disabled)
            .filter_map(|s| s.ctx().timers.values().map(|t| t.due).min())
            .min();
        timers.into_iter().chain(self.next_revival()).min()
    }

    /// Runs every timer due at `now`, earliest first (each at most once per call): plugins'
    /// and rules' `gw.timer` callbacks and rules' `on.timer` triggers.
    pub fn handle_timeout(&mut self, now: Instant) -> Dispatch {
        let mut out = Dispatch::default();
        self.revive(now, &mut out);
        self.expire_lockouts(now);
        let mut due: Vec<DueTimer> = Vec::new();
        let plugins = self
            .plugin_names()
            .into_iter()
            .map(|n| (ScriptKind::Plugin, n));
        let rules = self.rule_names().into_iter().map(|n| (ScriptKind::Rule, n));
        for (rank, (kind, name)) in plugins.chain(rules).enumerate() {
            let Some(script) = self.scripts(kind).get(&name) else {
                continue;
            };
            if script.disabled {
                continue;
            }
            let ctx = script.ctx();
            for (id, timer) in ctx.timers.iter().filter(|(_, t)| t.due <= now) {
                due.push((timer.due, rank, *id, kind, name.clone(), script.generation));
            }
        }
        due.sort_by_key(|a| (a.0, a.1, a.2));
        let clock = self.shared().clock;
        for (_, _, id, kind, name, generation) in due {
            let Some(script) = self.scripts(kind).get(&name) else {
                continue;
            };
            // A callback of an older generation never runs.
            if script.generation != generation || script.disabled {
                continue;
            }
            let (trigger, one_shot) = {
                let mut ctx = script.ctx();
                let Some(timer) = ctx.timers.get_mut(&id) else {
                    continue;
                };
                let trigger = timer.trigger.clone();
                let keep = reschedule(timer, now, &clock);
                if !keep {
                    ctx.timers.remove(&id);
                }
                (trigger, !keep)
            };
            if let Some(spec) = trigger {
                self.trigger_rule(&name, &RuleEvent::Timer(spec), now, &mut out);
                continue;
            }
            let function = script
                .lua
                .named_registry_value::<Table>(TIMERS_REGISTRY_KEY)
                .and_then(|fns| {
                    let f = fns.raw_get::<Option<Function>>(id)?;
                    if one_shot {
                        fns.raw_set(id, Value::Nil)?;
                    }
                    Ok(f)
                });
            match function {
                Ok(Some(f)) => {
                    self.run(
                        kind,
                        &name,
                        &f,
                        &HookArg::None,
                        Current::default(),
                        now,
                        &mut out,
                    );
                }
                Ok(None) => {}
                Err(e) => out.errors.push(describe(&e, &script.file, &self.opts)),
            }
            if kind == ScriptKind::Rule {
                self.drain_queue(&name, now, &mut out);
            }
        }
        self.finish(out)
    }

    fn offer(&mut self, hook: &str, arg: &HookArg, current: Current, now: Instant) -> Dispatch {
        let mut out = Dispatch::default();
        self.revive(now, &mut out);
        for name in self.plugin_names() {
            if self.call_hook(&name, hook, arg, current.clone(), now, &mut out) {
                out.handled_by = Some(name);
                break;
            }
        }
        out
    }

    fn finish(&mut self, mut out: Dispatch) -> Dispatch {
        let mut shared = self.shared();
        out.commands = std::mem::take(&mut shared.commands);
        out.events = std::mem::take(&mut shared.events);
        out
    }

    /// Forgets ended lock-outs and deletes them from the store.
    fn expire_lockouts(&mut self, now: Instant) {
        let mut shared = self.shared();
        for number in shared.lockouts.expire(now) {
            tracing::info!(%number, "lock-out ended");
            shared.commands.push(Command::KvSet {
                scope: LOCKOUT_SCOPE.to_string(),
                key: number,
                value: None,
            });
        }
    }

    /// Runs every enabled rule that `ev` triggers, by name.
    fn run_rules(&mut self, ev: &RuleEvent, now: Instant, out: &mut Dispatch) {
        if self.rules.is_empty() {
            return;
        }
        let cc = self.opts.country_code.clone();
        let names: Vec<String> = self.rules.keys().cloned().collect();
        for name in names {
            let Some(script) = self.rules.get(&name) else {
                continue;
            };
            let Some(rule) = script.rule.as_ref().filter(|_| !script.disabled) else {
                continue;
            };
            // A `pattern` filter runs Lua (string.find) and spends from the budget.
            script.budget.reset();
            match rule.matches(ev, cc.as_deref()) {
                Ok(true) => self.trigger_rule(&name, ev, now, out),
                Ok(false) => {}
                Err(e) => self.failed(ScriptKind::Rule, &name, &e, oversize(ev), now, out),
            }
        }
    }

    /// Runs rule `name` for `ev`, or not, as its mode says.
    fn trigger_rule(&mut self, name: &str, ev: &RuleEvent, now: Instant, out: &mut Dispatch) {
        let Some(mode) = self
            .rules
            .get(name)
            .and_then(|s| s.rule.as_ref())
            .map(|r| r.mode)
        else {
            return;
        };
        if mode != Mode::Parallel && self.rule_pending(name) {
            match mode {
                Mode::Single => {
                    tracing::debug!(rule = name, "trigger ignored: the previous run is pending");
                    return;
                }
                Mode::Queued => {
                    if let Some(script) = self.rules.get_mut(name) {
                        if script.queue.len() < rules::MAX_QUEUED {
                            script.queue.push_back(ev.clone());
                        } else {
                            tracing::warn!(rule = name, "trigger dropped: the queue is full");
                        }
                    }
                    return;
                }
                Mode::Restart => self.cancel_pending(name),
                Mode::Parallel => {}
            }
        }
        self.execute_rule(name, ev, now, out);
    }

    fn execute_rule(&mut self, name: &str, ev: &RuleEvent, now: Instant, out: &mut Dispatch) {
        let Some(f) = self
            .rules
            .get(name)
            .and_then(|s| s.rule.as_ref())
            .map(|r| r.execute.clone())
        else {
            return;
        };
        self.run(
            ScriptKind::Rule,
            name,
            &f,
            &HookArg::Rule(ev),
            current_for(ev),
            now,
            out,
        );
    }

    /// Mode `queued`: runs waiting triggers while nothing of an earlier run is pending.
    fn drain_queue(&mut self, name: &str, now: Instant, out: &mut Dispatch) {
        while !self.rule_pending(name) {
            let Some(ev) = self.rules.get_mut(name).and_then(|s| {
                if s.disabled {
                    None
                } else {
                    s.queue.pop_front()
                }
            }) else {
                return;
            };
            self.execute_rule(name, &ev, now, out);
        }
    }

    /// True while rule `name` has `gw.timer` timers or callbacks waiting (its `on.timer`
    /// triggers do not count).
    fn rule_pending(&self, name: &str) -> bool {
        let Some(script) = self.rules.get(name) else {
            return false;
        };
        if script.ctx().timers.values().any(|t| t.trigger.is_none()) {
            return true;
        }
        self.shared()
            .pending
            .values()
            .any(|o| o.is(ScriptKind::Rule, name, script.generation))
    }

    /// Mode `restart`: cancels rule `name`'s timers and callbacks.
    fn cancel_pending(&mut self, name: &str) {
        let Some(script) = self.rules.get(name) else {
            return;
        };
        let timers: Vec<u64> = {
            let mut ctx = script.ctx();
            let ids: Vec<u64> = ctx
                .timers
                .iter()
                .filter(|(_, t)| t.trigger.is_none())
                .map(|(id, _)| *id)
                .collect();
            for id in &ids {
                ctx.timers.remove(id);
            }
            ids
        };
        let callbacks: Vec<u64> = {
            let mut shared = self.shared();
            let ids: Vec<u64> = shared
                .pending
                .iter()
                .filter(|(_, o)| o.is(ScriptKind::Rule, name, script.generation))
                .map(|(id, _)| *id)
                .collect();
            for id in &ids {
                shared.pending.remove(id);
            }
            ids
        };
        for (key, ids) in [
            (TIMERS_REGISTRY_KEY, timers),
            (CALLBACKS_REGISTRY_KEY, callbacks),
        ] {
            if let Ok(fns) = script.lua.named_registry_value::<Table>(key) {
                for id in ids {
                    let _ = fns.raw_set(id, Value::Nil);
                }
            }
        }
        tracing::debug!(
            rule = name,
            "pending timers and callbacks cancelled (mode restart)"
        );
    }

    /// Runs the callback waiting for request `id`, if its script's generation is still loaded.
    fn run_callback(&mut self, id: u64, arg: &HookArg, now: Instant, out: &mut Dispatch) {
        let Some(owner) = self.shared().pending.remove(&id) else {
            tracing::debug!(
                id,
                "result with no callback waiting (reloaded or cancelled)"
            );
            return;
        };
        let Some(script) = self.scripts(owner.kind).get(&owner.name) else {
            return;
        };
        if script.generation != owner.generation || script.disabled {
            return;
        }
        let function = script
            .lua
            .named_registry_value::<Table>(CALLBACKS_REGISTRY_KEY)
            .and_then(|fns| {
                let f = fns.raw_get::<Option<Function>>(id)?;
                fns.raw_set(id, Value::Nil)?;
                Ok(f)
            });
        match function {
            Ok(Some(f)) => {
                self.run(
                    owner.kind,
                    &owner.name,
                    &f,
                    arg,
                    owner.current.clone(),
                    now,
                    out,
                );
            }
            Ok(None) => {}
            Err(e) => out.errors.push(describe(&e, &script.file, &self.opts)),
        }
        if owner.kind == ScriptKind::Rule {
            self.drain_queue(&owner.name, now, out);
        }
    }

    /// Calls `hook` of plugin `name` if it has one; true when it returned a true value.
    fn call_hook(
        &mut self,
        name: &str,
        hook: &str,
        arg: &HookArg,
        current: Current,
        now: Instant,
        out: &mut Dispatch,
    ) -> bool {
        let Some(script) = self.plugins.get(name) else {
            return false;
        };
        if script.disabled {
            return false;
        }
        match script.hooks.raw_get::<Option<Function>>(hook) {
            Ok(Some(f)) => self.run(ScriptKind::Plugin, name, &f, arg, current, now, out),
            // Checked at load time; the table may have been changed since, treat as absent.
            _ => false,
        }
    }

    /// Runs `f` in script `name` with a fresh budget, counting failures.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        kind: ScriptKind,
        name: &str,
        f: &Function,
        arg: &HookArg,
        current: Current,
        now: Instant,
        out: &mut Dispatch,
    ) -> bool {
        let Some(script) = self.scripts_mut(kind).get_mut(name) else {
            return false;
        };
        {
            let mut ctx = script.ctx();
            ctx.now = now;
            ctx.current = current;
            ctx.commands_this_call = 0;
        }
        script.budget.reset();
        let result = arg.to_lua(&script.lua).and_then(|a| f.call::<Value>(a));
        {
            let mut ctx = script.ctx();
            ctx.current = Current::default();
            ctx.requested_outputs.clear();
        }
        match result {
            Ok(value) => {
                script.consecutive_failures = 0;
                !matches!(value, Value::Nil | Value::Boolean(false))
            }
            Err(e) => {
                let oversize = match arg {
                    HookArg::Sms(sms) => is_oversize(sms),
                    HookArg::Rule(ev) => oversize(ev),
                    _ => false,
                };
                self.failed(kind, name, &e, oversize, now, out);
                false
            }
        }
    }

    /// Reports a failed call of script `name` and disables it after too many in a row. A
    /// call that ran out of budget on oversize input (a stranger's long SMS) does not count:
    /// otherwise anyone could switch a plugin off by sending a few.
    fn failed(
        &mut self,
        kind: ScriptKind,
        name: &str,
        e: &mlua::Error,
        oversize_input: bool,
        now: Instant,
        out: &mut Dispatch,
    ) {
        let opts = self.opts.clone();
        let Some(script) = self.scripts_mut(kind).get_mut(name) else {
            return;
        };
        let message = describe(e, &script.file, &opts);
        tracing::error!(script = name, "{message}");
        out.errors.push(message);
        let overrun = script.budget.exceeded() || is_memory_error(e);
        // Give back what a memory bomb left behind before the next call.
        let _ = script.lua.gc_collect();
        if overrun && oversize_input {
            tracing::info!(
                script = name,
                "over budget on oversize input; not counted towards disabling the script"
            );
            return;
        }
        script.consecutive_failures += 1;
        if script.consecutive_failures >= MAX_CONSECUTIVE_FAILURES && !script.disabled {
            script.disabled = true;
            script.disabled_at = Some(now);
            let error = disabled_message(&script.file, opts.disabled_retry_s);
            tracing::error!(script = name, "{error}");
            out.statuses.push(ScriptStatus {
                kind,
                name: name.to_string(),
                generation: script.generation,
                error: Some(error),
            });
        }
    }

    /// When the next disabled script is due to be tried again.
    fn next_revival(&self) -> Option<Instant> {
        let cooldown = std::time::Duration::from_secs(self.opts.disabled_retry_s);
        self.plugins
            .values()
            .chain(self.rules.values())
            .filter_map(|s| s.disabled_at)
            .map(|at| api::later(at, cooldown))
            .min()
    }

    /// Enables again every script whose cool-down has passed (a bug that a later input
    /// avoids, or an outage of something it relies on, must not switch it off for good).
    fn revive(&mut self, now: Instant, out: &mut Dispatch) {
        let cooldown = std::time::Duration::from_secs(self.opts.disabled_retry_s);
        for kind in [ScriptKind::Plugin, ScriptKind::Rule] {
            for (name, script) in self.scripts_mut(kind).iter_mut() {
                let due = script
                    .disabled_at
                    .is_some_and(|at| api::later(at, cooldown) <= now);
                if !due {
                    continue;
                }
                script.disabled = false;
                script.disabled_at = None;
                script.consecutive_failures = 0;
                tracing::info!(script = %name, "disabled script enabled again after its cool-down");
                out.statuses.push(ScriptStatus {
                    kind,
                    name: name.clone(),
                    generation: script.generation,
                    error: None,
                });
            }
        }
    }
}

/// Longer than one SMS part: ordinary commands are shorter.
const OVERSIZE_SMS_CHARS: usize = 160;

fn is_oversize(sms: &IncomingSms) -> bool {
    sms.text.chars().nth(OVERSIZE_SMS_CHARS).is_some()
}

fn oversize(ev: &RuleEvent) -> bool {
    matches!(ev, RuleEvent::Sms { sms, .. } if is_oversize(sms))
}

fn is_memory_error(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            is_memory_error(cause)
        }
        _ => false,
    }
}

/// Moves a fired timer to its next time; false when it is done.
fn reschedule(timer: &mut Timer, now: Instant, clock: &WallClock) -> bool {
    match &mut timer.repeat {
        Repeat::Once => false,
        Repeat::Every(every) => {
            let next = api::later(timer.due, *every);
            timer.due = if next > now {
                next
            } else {
                api::later(now, *every)
            };
            true
        }
        Repeat::Daily { at, next } => {
            let after = (*next).max(clock.at(now));
            *next = clock::next_daily(*at, after);
            timer.due = clock.instant_of(*next);
            true
        }
    }
}

fn kind_word(kind: ScriptKind) -> &'static str {
    match kind {
        ScriptKind::Plugin => "plugin",
        ScriptKind::Rule => "rule",
    }
}

fn disabled_message(file: &str, retry_s: u64) -> String {
    format!("{file}: disabled after {MAX_CONSECUTIVE_FAILURES} failed calls in a row; tried again in {retry_s} s, or fix it and save to reload")
}

/// The name errors use for `path`: its file name.
fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Turns an mlua error into `file:line: message` (or `file: message` when Lua knows no line).
fn describe(err: &mlua::Error, file: &str, opts: &HostOptions) -> String {
    let message = match err {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::MemoryError(_) => {
            format!("out of memory (limit {} KiB)", opts.memory_limit_kb)
        }
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            return describe(cause, file, opts)
        }
        other => other.to_string(),
    };
    // mlua appends a traceback; the first part is what the user needs.
    let message = message
        .split("\nstack traceback:")
        .next()
        .unwrap_or_default()
        .trim_end();
    if message.starts_with(&format!("{file}:")) {
        message.to_string()
    } else {
        format!("{file}: {message}")
    }
}

/// What one load needs besides the host's settings.
struct LoadRequest<'a> {
    kind: ScriptKind,
    name: &'a str,
    path: &'a Path,
    config: &'a serde_json::Value,
    /// The `gw.store` contents to start with.
    store: BTreeMap<String, String>,
    now: Instant,
    /// The generation this load becomes if it succeeds.
    generation: u64,
    /// False for `gsmgw check`, where `init` would act without the real config.
    run_init: bool,
}

/// Builds a script's state, runs its file (and a plugin's `init`), and checks what it
/// returned.
fn load(
    opts: &HostOptions,
    shared: &Arc<Mutex<Shared>>,
    req: LoadRequest,
) -> Result<Script, String> {
    let LoadRequest {
        kind,
        name,
        path,
        config,
        store,
        now,
        generation,
        run_init,
    } = req;
    let file = file_name(path);
    let source = std::fs::read_to_string(path)
        .map_err(|e| format!("{file}: cannot read {}: {e}", path.display()))?;
    let (lua, budget) = sandbox::new_state(opts.limits()).map_err(|e| describe(&e, &file, opts))?;
    let ctx = Arc::new(Mutex::new(ScriptCtx {
        kind,
        name: name.to_string(),
        generation,
        now,
        current: Current::default(),
        store,
        timers: BTreeMap::new(),
        next_timer_id: 0,
        commands_this_call: 0,
        requested_outputs: BTreeMap::new(),
    }));
    let api = ApiContext {
        shared: Arc::clone(shared),
        script: Arc::clone(&ctx),
        config: Arc::new(config.clone()),
        limits: api::ApiLimits {
            caps: opts.caps,
            max_duration: std::time::Duration::from_secs(opts.max_duration_s),
        },
        budget: Arc::clone(&budget),
    };
    api::register_all(&lua, &api).map_err(|e| describe(&e, &file, opts))?;
    let libs = Libs::default();
    let lib_dir = path.parent().unwrap_or(Path::new(".")).join("lib");
    register_require(&lua, lib_dir, Arc::clone(&libs)).map_err(|e| describe(&e, &file, opts))?;

    budget.reset();
    let returned: Value = lua
        .load(source)
        .set_name(format!("={file}"))
        .set_mode(ChunkMode::Text)
        .eval()
        .map_err(|e| describe(&e, &file, opts))?;
    let mut script = Script {
        hooks: lua.create_table().map_err(|e| describe(&e, &file, opts))?,
        rule: None,
        queue: VecDeque::new(),
        lua: lua.clone(),
        budget: Arc::clone(&budget),
        ctx,
        file: file.clone(),
        libs,
        generation,
        consecutive_failures: 0,
        disabled: false,
        disabled_at: None,
    };
    let Value::Table(table) = returned else {
        return Err(match kind {
            ScriptKind::Plugin => format!(
                "{file}: a plugin must return a table of handlers ({{ sms = function(msg) … end, … }}), not {}",
                returned.type_name()
            ),
            ScriptKind::Rule => format!(
                "{file}: a rule must return a table ({{ on = {{ … }}, execute = function(gw, ev) … end }}), not {}",
                returned.type_name()
            ),
        });
    };
    if kind == ScriptKind::Rule {
        let rule = Rule::parse(&lua, &table).map_err(|e| format!("{file}: {e}"))?;
        api::store::register_data(&lua, &table).map_err(|e| describe(&e, &file, opts))?;
        start_rule(&script, &rule, shared, now);
        script.rule = Some(rule);
        script.hooks = table;
        return Ok(script);
    }
    for hook in HOOK_NAMES {
        match table.raw_get::<Value>(hook) {
            Ok(Value::Nil | Value::Function(_)) => {}
            Ok(other) => {
                return Err(format!(
                    "{file}: '{hook}' must be a function, not {}",
                    other.type_name()
                ))
            }
            Err(e) => return Err(describe(&e, &file, opts)),
        }
    }
    script.hooks = table;
    if run_init {
        if let Ok(Some(init)) = script.hooks.raw_get::<Option<Function>>("init") {
            budget.reset();
            init.call::<()>(()).map_err(|e| describe(&e, &file, opts))?;
        }
    }
    Ok(script)
}

/// `require(name)`: runs `lib/<name>.lua` from beside the script once, in the script's own
/// sandbox and under the budget of the call that requires it, and returns what it returned
/// (`true` for nothing). Names are plain words, so no path leads out of `lib/`.
fn register_require(lua: &Lua, lib_dir: std::path::PathBuf, libs: Libs) -> mlua::Result<()> {
    lua.set_named_registry_value(LOADED_REGISTRY_KEY, lua.create_table()?)?;
    let require = lua.create_function(move |lua, name: mlua::String| {
        let name = name.to_str()?.to_string();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(api::lua_error(
                lua,
                format!("require: {name:?} is not a library name (letters, digits, _ and -)"),
            ));
        }
        let loaded: Table = lua.named_registry_value(LOADED_REGISTRY_KEY)?;
        match loaded.raw_get::<Value>(name.as_str())? {
            Value::Nil => {}
            // Set while the library's own top level runs.
            Value::LightUserData(_) => {
                return Err(api::lua_error(
                    lua,
                    format!("require: lib/{name}.lua requires itself (a cycle)"),
                ))
            }
            value => return Ok(value),
        }
        let path = lib_dir.join(format!("{name}.lua"));
        let path = path.canonicalize().unwrap_or(path);
        {
            let mut libs = libs.lock().unwrap_or_else(|e| e.into_inner());
            // Recorded before reading: creating a missing library later reloads the script.
            if !libs.contains(&path) {
                libs.push(path.clone());
            }
        }
        let source = read_lib(&path).map_err(|e| {
            api::lua_error(lua, format!("require: cannot read lib/{name}.lua: {e}"))
        })?;
        loaded.raw_set(
            name.as_str(),
            Value::LightUserData(mlua::LightUserData(std::ptr::null_mut())),
        )?;
        let value = lua
            .load(source)
            .set_name(format!("=lib/{name}.lua"))
            .set_mode(ChunkMode::Text)
            .eval::<Value>();
        let value = match value {
            Ok(Value::Nil) => Value::Boolean(true),
            Ok(v) => v,
            Err(e) => {
                loaded.raw_set(name.as_str(), Value::Nil)?;
                return Err(e);
            }
        };
        loaded.raw_set(name.as_str(), &value)?;
        Ok(value)
    })?;
    lua.globals().set("require", require)
}

fn read_lib(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut source = String::new();
    std::fs::File::open(path)?
        .take(MAX_LIB_BYTES + 1)
        .read_to_string(&mut source)?;
    if source.len() as u64 > MAX_LIB_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_LIB_BYTES} bytes"
        )));
    }
    Ok(source)
}

/// Schedules a freshly loaded rule's `on.timer` triggers and subscribes its `on.mqtt` topics.
fn start_rule(script: &Script, rule: &Rule, shared: &Arc<Mutex<Shared>>, now: Instant) {
    let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
    let clock = shared.clock;
    let mut ctx = script.ctx();
    for (spec, timer) in &rule.on.timers {
        let (due, repeat) = match timer {
            TimerSpec::Every(every) => (api::later(now, *every), Repeat::Every(*every)),
            TimerSpec::At(at) => {
                let next = clock::next_daily(*at, clock.at(now));
                (clock.instant_of(next), Repeat::Daily { at: *at, next })
            }
        };
        ctx.next_timer_id += 1;
        let id = ctx.next_timer_id;
        ctx.timers.insert(
            id,
            Timer {
                due,
                repeat,
                trigger: Some(spec.clone()),
            },
        );
    }
    for topic in &rule.on.mqtt {
        shared.commands.push(Command::MqttSubscribe {
            topic: topic.clone(),
        });
    }
}

/// Compiles and runs the script at `path` in a throw-away sandbox and checks that it returns a
/// plugin table (for `gsmgw check`). Errors are `file:line: message`.
pub fn check_script(path: &Path, opts: &HostOptions) -> Result<(), String> {
    check(ScriptKind::Plugin, path, opts, &Checked::default())
}

/// Like [`check_script`] for a rule: it must return a valid rule table.
pub fn check_rule(path: &Path, opts: &HostOptions) -> Result<(), String> {
    check(ScriptKind::Rule, path, opts, &Checked::default())
}

/// What a script is checked against: the gateway it will run in (its outputs and inputs, its
/// own config section), so that its top-level code sees what it will see when loaded.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    pub world: World,
    pub config: serde_json::Value,
}

/// [`check_script`] / [`check_rule`] in the given surroundings.
pub fn check_in(
    kind: ScriptKind,
    path: &Path,
    opts: &HostOptions,
    around: &Checked,
) -> Result<(), String> {
    check(kind, path, opts, around)
}

fn check(
    kind: ScriptKind,
    path: &Path,
    opts: &HostOptions,
    around: &Checked,
) -> Result<(), String> {
    let shared = Arc::new(Mutex::new(Shared::new(
        around.world.clone(),
        opts.country_code.clone(),
        WallClock::new(Instant::now(), Local::now()),
    )));
    let name = file_name(path);
    let name = name.strip_suffix(".lua").unwrap_or(&name).to_string();
    let req = LoadRequest {
        kind,
        name: &name,
        path,
        config: &around.config,
        store: BTreeMap::new(),
        now: Instant::now(),
        generation: 1,
        run_init: false,
    };
    load(opts, &shared, req).map(|_| ())
}

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod marks_tests;
#[cfg(test)]
mod rule_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod unhandled_tests;
