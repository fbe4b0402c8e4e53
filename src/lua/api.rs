//! The `gw` global: one `register_<module>` function per API module, all listed in
//! [`register_all`]. `docs/lua-api.md` documents every function with an example.
//!
//! Callbacks reach the host through [`ApiContext`]: the shared [`World`] and command list, and
//! the calling script's own state (store, timers, the message being handled). Locks are held
//! only inside one callback and never while Lua runs, so they cannot deadlock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Local, NaiveTime};
use mlua::{DeserializeOptions, Function, Lua, LuaSerdeExt, SerializeOptions, Table, Value};
use sha2::{Digest, Sha256};

use super::clock::{self, WallClock};
use super::lockout::{Lockouts, LOCKOUT_SCOPE};
use super::World;
use crate::bus::{AlarmAction, Command, Event, OutputAction, ScriptKind, Secret};
use crate::phone;

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
    pub clock: WallClock,
    /// `None` when MQTT is disabled.
    pub mqtt_connected: Option<bool>,
    /// The last request id given out (USSD, MQTT sessions); unique for the host's lifetime.
    pub next_request_id: u64,
    /// Requests whose callback waits for the result, by id.
    pub pending: BTreeMap<u64, Owner>,
}

impl Shared {
    pub fn new(world: World, country_code: Option<String>, clock: WallClock) -> Self {
        Self {
            world,
            commands: Vec::new(),
            events: Vec::new(),
            country_code,
            lockouts: Lockouts::default(),
            clock,
            mqtt_connected: None,
            next_request_id: 0,
            pending: BTreeMap::new(),
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
}

impl Owner {
    pub fn is(&self, kind: ScriptKind, name: &str, generation: u64) -> bool {
        self.kind == kind && self.name == name && self.generation == generation
    }
}

/// What a callback knows about the message being handled.
#[derive(Debug, Clone, Default)]
pub(crate) struct Current {
    /// The number `gw.sms.reply` answers to.
    pub reply_to: Option<String>,
    /// The call `gw.call.*` act on when no id is given.
    pub call_id: Option<u64>,
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
}

/// The handles one script's callbacks hold.
#[derive(Clone)]
pub(crate) struct ApiContext {
    pub shared: Arc<Mutex<Shared>>,
    pub script: Arc<Mutex<ScriptCtx>>,
    pub config: Arc<serde_json::Value>,
}

impl ApiContext {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        // Callbacks never panic while holding it, so a poisoned lock still holds sound data.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn script(&self) -> MutexGuard<'_, ScriptCtx> {
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, command: Command) {
        self.shared().commands.push(command);
    }

    /// Registers `f` (if any) to run when the result of request `id` arrives.
    fn await_result(&self, lua: &Lua, f: Option<Function>) -> mlua::Result<u64> {
        let owner = {
            let script = self.script();
            Owner {
                kind: script.kind,
                name: script.name.clone(),
                generation: script.generation,
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

fn duration(lua: &Lua, seconds: f64) -> mlua::Result<Duration> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        lua_error(
            lua,
            format!("invalid duration {seconds} s: give seconds >= 0"),
        )
    })
}

/// Creates the `gw` global with every module. The one place modules are listed.
pub(crate) fn register_all(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    lua.globals().set("gw", lua.create_table()?)?;
    lua.set_named_registry_value(TIMERS_REGISTRY_KEY, lua.create_table()?)?;
    lua.set_named_registry_value(CALLBACKS_REGISTRY_KEY, lua.create_table()?)?;
    register_output(lua, ctx)?;
    register_input(lua, ctx)?;
    register_sms(lua, ctx)?;
    register_call(lua, ctx)?;
    register_log(lua, ctx)?;
    register_config(lua, ctx)?;
    register_store(lua, ctx)?;
    register_timer(lua, ctx)?;
    register_phone(lua, ctx)?;
    register_modem(lua, ctx)?;
    register_alarm(lua, ctx)?;
    register_mqtt(lua, ctx)?;
    register_auth(lua, ctx)?;
    Ok(())
}

fn module(lua: &Lua, name: &str) -> mlua::Result<Table> {
    let gw: Table = lua.globals().get("gw")?;
    let table = lua.create_table()?;
    gw.set(name, &table)?;
    Ok(table)
}

/// `gw.output`: read and drive the named outputs.
pub(crate) fn register_output(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "output")?;
    register_states(lua, &m, ctx, |w| &w.outputs)?;

    // One place validates the name, updates the world and emits the command.
    let set = {
        let c = ctx.clone();
        move |lua: &Lua, name: String, on: Option<bool>, seconds: Option<f64>| -> mlua::Result<()> {
            let duration = seconds.map(|s| duration(lua, s)).transpose()?;
            let mut shared = c.shared();
            let Some(state) = shared.world.outputs.get_mut(&name) else {
                let known: Vec<&str> = shared.world.outputs.keys().map(String::as_str).collect();
                return Err(lua_error(
                    lua,
                    format!("unknown output '{name}' (known: {})", known.join(", ")),
                ));
            };
            let action = match on {
                Some(on) => {
                    *state = on;
                    OutputAction::Set { on, duration }
                }
                None => {
                    *state = !*state;
                    OutputAction::Toggle
                }
            };
            shared.commands.push(Command::SetOutput { name, action });
            Ok(())
        }
    };

    let f = set.clone();
    m.set(
        "set",
        lua.create_function(
            move |lua, (name, on, seconds): (String, bool, Option<f64>)| {
                f(lua, name, Some(on), seconds)
            },
        )?,
    )?;
    let f = set.clone();
    m.set(
        "on",
        lua.create_function(move |lua, (name, seconds): (String, Option<f64>)| {
            f(lua, name, Some(true), seconds)
        })?,
    )?;
    let f = set.clone();
    m.set(
        "off",
        lua.create_function(move |lua, (name, seconds): (String, Option<f64>)| {
            f(lua, name, Some(false), seconds)
        })?,
    )?;
    let f = set.clone();
    m.set(
        "toggle",
        lua.create_function(move |lua, name: String| f(lua, name, None, None))?,
    )?;
    let f = set;
    m.set(
        "pulse",
        lua.create_function(move |lua, (name, seconds): (String, f64)| {
            f(lua, name, Some(true), Some(seconds))
        })?,
    )?;
    Ok(())
}

/// `gw.input`: read the named inputs.
pub(crate) fn register_input(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "input")?;
    register_states(lua, &m, ctx, |w| &w.inputs)
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

/// `gw.sms`: send and reply.
pub(crate) fn register_sms(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "sms")?;
    let c = ctx.clone();
    m.set(
        "send",
        lua.create_function(move |lua, (to, text): (String, String)| {
            let cc = c.shared().country_code.clone();
            let to = phone::normalise(&to, cc.as_deref());
            if to.is_empty() {
                return Err(lua_error(lua, "gw.sms.send: empty recipient"));
            }
            c.emit(Command::SendSms {
                to,
                text,
                request_id: None,
            });
            Ok(())
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "reply",
        lua.create_function(move |lua, text: String| {
            let Some(to) = c.script().current.reply_to.clone() else {
                return Err(lua_error(
                    lua,
                    "gw.sms.reply: no sender to reply to here (use gw.sms.send(number, text))",
                ));
            };
            c.emit(Command::SendSms {
                to,
                text,
                request_id: None,
            });
            Ok(())
        })?,
    )?;
    Ok(())
}

/// Builds the command for one `gw.call` function from a call id.
type CallCommand = fn(u64) -> Command;

/// Logs one `gw.log` line: script name, message.
type LogLine = fn(&str, &str);

/// `gw.call`: reject, answer or hang up a call.
pub(crate) fn register_call(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "call")?;
    let actions: [(&str, CallCommand); 3] = [
        ("reject", |call_id| Command::RejectCall { call_id }),
        ("answer", |call_id| Command::AnswerCall { call_id }),
        ("hangup", |call_id| Command::HangUp { call_id }),
    ];
    for (name, make) in actions {
        let c = ctx.clone();
        m.set(
            name,
            lua.create_function(move |lua, id: Option<u64>| {
                let Some(id) = id.or(c.script().current.call_id) else {
                    return Err(lua_error(
                        lua,
                        format!("gw.call.{name}: no call being handled here; pass the call id"),
                    ));
                };
                c.emit(make(id));
                Ok(())
            })?,
        )?;
    }
    Ok(())
}

/// `gw.log`: log lines tagged with the script name.
pub(crate) fn register_log(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "log")?;
    let levels: [(&str, LogLine); 4] = [
        ("debug", |script, msg| tracing::debug!(script, "{msg}")),
        ("info", |script, msg| tracing::info!(script, "{msg}")),
        ("warn", |script, msg| tracing::warn!(script, "{msg}")),
        ("error", |script, msg| tracing::error!(script, "{msg}")),
    ];
    for (level, log) in levels {
        let c = ctx.clone();
        m.set(
            level,
            lua.create_function(move |_, values: mlua::Variadic<Value>| {
                let msg = values
                    .iter()
                    .map(|v| {
                        v.to_string()
                            .unwrap_or_else(|_| format!("<{}>", v.type_name()))
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                let name = c.script().name.clone();
                log(&name, &msg);
                Ok(())
            })?,
        )?;
    }
    // `print` is gone with stdout; sending it to the log keeps quick debugging working.
    let info: Function = m.get("info")?;
    lua.globals().set("print", info)?;
    Ok(())
}

/// `gw.config`: the script's config section.
pub(crate) fn register_config(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let gw: Table = lua.globals().get("gw")?;
    let config = match ctx.config.as_ref() {
        serde_json::Value::Null => Value::Table(lua.create_table()?),
        other => lua.to_value_with(other, to_lua_options())?,
    };
    gw.set("config", config)
}

/// `gw.store`: per-script data that survives reloads and restarts.
pub(crate) fn register_store(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "store")?;
    let c = ctx.clone();
    m.set(
        "get",
        lua.create_function(move |lua, key: String| {
            let Some(json) = c.script().store.get(&key).cloned() else {
                return Ok(Value::Nil);
            };
            match serde_json::from_str::<serde_json::Value>(&json) {
                Ok(value) => lua.to_value_with(&value, to_lua_options()),
                Err(e) => {
                    tracing::warn!(script = %c.script().name, key, "stored value is not JSON, ignored: {e}");
                    Ok(Value::Nil)
                }
            }
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "set",
        lua.create_function(move |lua, (key, value): (String, Value)| {
            let json = match value {
                Value::Nil => None,
                value => {
                    let json: serde_json::Value = lua
                        .from_value_with(value, DeserializeOptions::new())
                        .map_err(|e| {
                            lua_error(lua, format!("gw.store.set('{key}'): not storable: {e}"))
                        })?;
                    Some(json.to_string())
                }
            };
            let scope = {
                let mut script = c.script();
                match &json {
                    Some(j) => script.store.insert(key.clone(), j.clone()),
                    None => script.store.remove(&key),
                };
                scope(script.kind, &script.name)
            };
            c.emit(Command::KvSet {
                scope,
                key,
                value: json,
            });
            Ok(())
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

/// `gw.data` for a rule: reads fall back to the rule's `data` defaults; each assignment is
/// saved at once through `gw.store` (same scope and keys).
pub(crate) fn register_data(lua: &Lua, rule: &Table) -> mlua::Result<()> {
    let defaults = match rule.raw_get::<Value>("data")? {
        Value::Table(t) => t,
        _ => lua.create_table()?,
    };
    lua.load(
        r#"
        local defaults = ...
        local get, set = gw.store.get, gw.store.set
        gw.data = setmetatable({}, {
            __index = function(_, key)
                local value = get(key)
                if value == nil then return defaults[key] end
                return value
            end,
            __newindex = function(_, key, value) set(key, value) end,
        })
        "#,
    )
    .set_name("=gw.data")
    .call::<()>(defaults)
}

/// `gw.timer`: run a function later, repeatedly, or daily at a local time.
pub(crate) fn register_timer(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "timer")?;
    // One place stores the function and the schedule.
    let add = {
        let c = ctx.clone();
        move |lua: &Lua,
              f: Function,
              schedule: &dyn Fn(&ScriptCtx, &WallClock) -> (Instant, Repeat)|
              -> mlua::Result<u64> {
            let clock = c.shared().clock;
            let id = {
                let mut script = c.script();
                script.next_timer_id += 1;
                script.next_timer_id
            };
            let fns: Table = lua.named_registry_value(TIMERS_REGISTRY_KEY)?;
            fns.raw_set(id, f)?;
            let mut script = c.script();
            let (due, repeat) = schedule(&script, &clock);
            script.timers.insert(
                id,
                Timer {
                    due,
                    repeat,
                    trigger: None,
                },
            );
            Ok(id)
        }
    };
    for (name, repeat) in [("after", false), ("every", true)] {
        let add = add.clone();
        m.set(
            name,
            lua.create_function(move |lua, (seconds, f): (f64, Function)| {
                let delay = duration(lua, seconds)?;
                if repeat && delay.is_zero() {
                    return Err(lua_error(
                        lua,
                        "gw.timer.every: the interval must be more than 0 s",
                    ));
                }
                add(lua, f, &|script, _| {
                    let again = if repeat {
                        Repeat::Every(delay)
                    } else {
                        Repeat::Once
                    };
                    (script.now + delay, again)
                })
            })?,
        )?;
    }
    m.set(
        "at",
        lua.create_function(move |lua, (time, f): (String, Function)| {
            let Some(at) = clock::parse_time_of_day(&time) else {
                return Err(lua_error(
                    lua,
                    format!("gw.timer.at: {time:?} is not a time of day like \"22:00\""),
                ));
            };
            add(lua, f, &|script, clock| {
                let next = clock::next_daily(at, clock.at(script.now));
                (clock.instant_of(next), Repeat::Daily { at, next })
            })
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "cancel",
        lua.create_function(move |lua, id: u64| {
            let mut script = c.script();
            // A rule's own `on.timer` triggers are not the script's to cancel.
            if script.timers.get(&id).is_some_and(|t| t.trigger.is_some()) {
                return Ok(false);
            }
            let existed = script.timers.remove(&id).is_some();
            drop(script);
            let fns: Table = lua.named_registry_value(TIMERS_REGISTRY_KEY)?;
            fns.raw_set(id, Value::Nil)?;
            Ok(existed)
        })?,
    )?;
    Ok(())
}

/// `gw.phone`: normalise and compare numbers.
pub(crate) fn register_phone(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "phone")?;
    let c = ctx.clone();
    m.set(
        "normalise",
        lua.create_function(move |_, n: String| {
            let cc = c.shared().country_code.clone();
            Ok(phone::normalise(&n, cc.as_deref()))
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "same",
        lua.create_function(move |_, (a, b): (Option<String>, Option<String>)| {
            let cc = c.shared().country_code.clone();
            Ok(match (a, b) {
                (Some(a), Some(b)) => phone::same(&a, &b, cc.as_deref(), None),
                _ => false,
            })
        })?,
    )?;
    m.set(
        "withheld",
        lua.create_function(|_, n: Option<String>| Ok(is_withheld(n.as_deref())))?,
    )?;
    let c = ctx.clone();
    m.set(
        "in_list",
        lua.create_function(
            move |_, (n, list, digits): (Option<String>, Option<Vec<String>>, Option<usize>)| {
                let cc = c.shared().country_code.clone();
                let Some(n) = n.filter(|n| !is_withheld(Some(n))) else {
                    return Ok(false);
                };
                Ok(list
                    .unwrap_or_default()
                    .iter()
                    .any(|entry| phone::same(&n, entry, cc.as_deref(), digits)))
            },
        )?,
    )?;
    m.set(
        "same_last_digits",
        lua.create_function(
            move |_, (a, b, n): (Option<String>, Option<String>, usize)| {
                Ok(match (a, b) {
                    (Some(a), Some(b)) => phone::same(&a, &b, None, Some(n)),
                    _ => false,
                })
            },
        )?,
    )?;
    Ok(())
}

/// `gw.modem`: what the modem reports.
pub(crate) fn register_modem(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "modem")?;
    let c = ctx.clone();
    m.set(
        "imei",
        lua.create_function(move |_, ()| Ok(c.shared().world.modem.imei.clone()))?,
    )?;
    let c = ctx.clone();
    m.set(
        "signal",
        lua.create_function(move |_, ()| Ok(c.shared().world.modem.signal_dbm))?,
    )?;
    let c = ctx.clone();
    m.set(
        "operator",
        lua.create_function(move |_, ()| Ok(c.shared().world.modem.operator.clone()))?,
    )?;
    let c = ctx.clone();
    m.set(
        "registered",
        lua.create_function(move |_, ()| Ok(c.shared().world.modem.registered))?,
    )?;
    register_ussd(lua, ctx, &m)
}

/// True for a caller ID that identifies nobody: absent, empty, or without digits
/// ("anonymous", "withheld").
fn is_withheld(number: Option<&str>) -> bool {
    number.map_or(true, |n| phone::digits(n).is_empty())
}

/// `gw.modem.ussd`: the asynchronous part of `gw.modem`.
fn register_ussd(lua: &Lua, ctx: &ApiContext, m: &Table) -> mlua::Result<()> {
    let c = ctx.clone();
    m.set(
        "ussd",
        lua.create_function(move |lua, (code, f): (String, Option<Function>)| {
            let code = code.trim().to_string();
            if code.is_empty()
                || !code
                    .chars()
                    .all(|ch| ch.is_ascii_digit() || "*#+".contains(ch))
            {
                return Err(lua_error(
                    lua,
                    format!("gw.modem.ussd: {code:?} is not a USSD code like \"*100#\""),
                ));
            }
            let id = c.await_result(lua, f)?;
            c.emit(Command::Ussd { id, code });
            Ok(id)
        })?,
    )
}

/// `gw.alarm`: the alarm panel's state and requests to it.
pub(crate) fn register_alarm(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "alarm")?;
    let c = ctx.clone();
    m.set(
        "state",
        lua.create_function(move |_, ()| Ok(c.shared().world.alarm.as_str()))?,
    )?;
    // Without `by`, the request is made in the name of the sender being handled, if any.
    let request = {
        let c = ctx.clone();
        move |action: AlarmAction, by: Option<String>, code: Option<String>| {
            let by = by.or_else(|| c.script().current.reply_to.clone());
            c.emit(Command::Alarm {
                action,
                by,
                code: code.map(Secret),
            });
        }
    };
    let r = request.clone();
    m.set(
        "arm",
        lua.create_function(
            move |lua, (mode, by, code): (String, Option<String>, Option<String>)| {
                let action = match mode.as_str() {
                    "away" => AlarmAction::ArmAway,
                    "home" => AlarmAction::ArmHome,
                    other => {
                        return Err(lua_error(
                            lua,
                            format!("gw.alarm.arm: mode {other:?} is not \"away\" or \"home\""),
                        ))
                    }
                };
                r(action, by, code);
                Ok(())
            },
        )?,
    )?;
    let r = request.clone();
    m.set(
        "disarm",
        lua.create_function(move |_, (by, code): (Option<String>, Option<String>)| {
            r(AlarmAction::Disarm, by, code);
            Ok(())
        })?,
    )?;
    let r = request;
    m.set(
        "trigger",
        lua.create_function(move |_, zone: Option<String>| {
            r(AlarmAction::Trigger, zone, None);
            Ok(())
        })?,
    )?;
    Ok(())
}

/// `gw.mqtt`: publish and subscribe under the gateway's prefix, on-demand sessions.
pub(crate) fn register_mqtt(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "mqtt")?;
    let c = ctx.clone();
    m.set(
        "publish",
        lua.create_function(
            move |lua, (topic, payload, retain): (String, Value, Option<bool>)| {
                check_topic(lua, "gw.mqtt.publish", &topic)?;
                let payload = match payload {
                    Value::String(s) => s.as_bytes().to_vec(),
                    Value::Nil => Vec::new(),
                    Value::Table(_) | Value::Boolean(_) | Value::Integer(_) | Value::Number(_) => {
                        let json: serde_json::Value = lua
                            .from_value_with(payload, DeserializeOptions::new())
                            .map_err(|e| {
                                lua_error(
                                    lua,
                                    format!("gw.mqtt.publish: payload is not JSON-like: {e}"),
                                )
                            })?;
                        json.to_string().into_bytes()
                    }
                    other => {
                        return Err(lua_error(
                            lua,
                            format!(
                                "gw.mqtt.publish: a {} cannot be published",
                                other.type_name()
                            ),
                        ))
                    }
                };
                c.emit(Command::MqttPublish {
                    topic,
                    payload,
                    retain: retain.unwrap_or(false),
                });
                Ok(())
            },
        )?,
    )?;
    let c = ctx.clone();
    m.set(
        "subscribe",
        lua.create_function(move |lua, topic: String| {
            check_topic(lua, "gw.mqtt.subscribe", &topic)?;
            c.emit(Command::MqttSubscribe { topic });
            Ok(())
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "connect_for",
        lua.create_function(move |lua, (seconds, f): (f64, Option<Function>)| {
            let seconds = duration(lua, seconds)?;
            if seconds.is_zero() {
                return Err(lua_error(lua, "gw.mqtt.connect_for: give seconds > 0"));
            }
            // Whole seconds, rounded up: asking for 0.5 s must not mean 0.
            let seconds = seconds.as_secs() + u64::from(seconds.subsec_nanos() > 0);
            let id = c.await_result(lua, f)?;
            c.emit(Command::MqttConnect { id, seconds });
            Ok(id)
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "status",
        lua.create_function(move |lua, ()| {
            let connected = c.shared().mqtt_connected;
            let t = lua.create_table()?;
            t.set("enabled", connected.is_some())?;
            t.set("connected", connected.unwrap_or(false))?;
            Ok(t)
        })?,
    )?;
    Ok(())
}

fn check_topic(lua: &Lua, function: &str, topic: &str) -> mlua::Result<()> {
    crate::mqtt::check_suffix(topic).map_err(|e| {
        lua_error(
            lua,
            format!(
                "{function}: {e} (give a topic under the gateway prefix, like \"sms/forward\")"
            ),
        )
    })
}

/// `gw.auth`: password checks and the lock-out of senders that keep getting them wrong.
pub(crate) fn register_auth(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "auth")?;
    m.set(
        "check",
        lua.create_function(
            |_, (given, expected): (Option<mlua::String>, Option<mlua::String>)| {
                Ok(match (given, expected) {
                    (Some(g), Some(e)) => constant_time_eq(&g.as_bytes(), &e.as_bytes()),
                    _ => false,
                })
            },
        )?,
    )?;
    let c = ctx.clone();
    m.set(
        "fail",
        lua.create_function(move |_, number: Option<String>| {
            let Some(number) = number.filter(|n| !is_withheld(Some(n))) else {
                return Ok(false);
            };
            let now = c.script().now;
            let mut shared = c.shared();
            let number = phone::normalise(&number, shared.country_code.as_deref());
            let Some(until) = shared.lockouts.fail(&number, now) else {
                return Ok(shared.lockouts.is_locked(&number, now));
            };
            let until = shared.clock.at(until).to_utc();
            let failures = shared.lockouts.policy.failures;
            tracing::warn!(%number, until = %until.to_rfc3339(), "locked out after {failures} wrong passwords or codes: every SMS and call from it is ignored until then");
            let json = serde_json::Value::String(until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            shared.commands.push(Command::KvSet {
                scope: LOCKOUT_SCOPE.to_string(),
                key: number.clone(),
                value: Some(json.to_string()),
            });
            shared.events.push(Event::Lockout { number, until });
            Ok(true)
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "locked",
        lua.create_function(move |_, number: Option<String>| {
            let Some(number) = number else {
                return Ok(false);
            };
            let now = c.script().now;
            let shared = c.shared();
            let number = phone::normalise(&number, shared.country_code.as_deref());
            Ok(shared.lockouts.is_locked(&number, now))
        })?,
    )?;
    Ok(())
}

/// Compares SHA-256 digests byte by byte without stopping early, so neither the position of
/// the first difference nor the length of the secret shows in the time taken.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}
