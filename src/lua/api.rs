//! The `gw` global: one `register_<module>` function per API module, all listed in
//! [`register_all`]. `docs/lua-api.md` documents every function with an example.
//!
//! Callbacks reach the host through [`ApiContext`]: the shared [`World`] and command list, and
//! the calling script's own state (store, timers, the message being handled). Locks are held
//! only inside one callback and never while Lua runs, so they cannot deadlock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mlua::{DeserializeOptions, Function, Lua, LuaSerdeExt, SerializeOptions, Table, Value};

use super::World;
use crate::bus::{Command, OutputAction};
use crate::phone;

/// Where the host keeps the Lua functions of pending timers (id → function).
pub(crate) const TIMERS_REGISTRY_KEY: &str = "gsmgw.timers";

/// What every script shares: the world they read and the commands they emit.
#[derive(Debug)]
pub(crate) struct Shared {
    pub world: World,
    pub commands: Vec<Command>,
    pub country_code: Option<String>,
}

/// What a callback knows about the message being handled.
#[derive(Debug, Clone, Default)]
pub(crate) struct Current {
    /// The number `gw.sms.reply` answers to.
    pub reply_to: Option<String>,
    /// The call `gw.call.*` act on when no id is given.
    pub call_id: Option<u64>,
}

/// A pending `gw.timer`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timer {
    pub due: Instant,
    /// `Some` for `gw.timer.every`.
    pub every: Option<Duration>,
}

/// The per-script state the API works on.
#[derive(Debug)]
pub(crate) struct ScriptCtx {
    pub name: String,
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

    let c = ctx.clone();
    m.set(
        "get",
        lua.create_function(move |_, name: String| {
            Ok(c.shared().world.outputs.get(&name).copied())
        })?,
    )?;

    let c = ctx.clone();
    m.set(
        "names",
        lua.create_function(move |_, ()| {
            Ok(c.shared().world.outputs.keys().cloned().collect::<Vec<_>>())
        })?,
    )?;

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
    let c = ctx.clone();
    m.set(
        "get",
        lua.create_function(move |_, name: String| {
            Ok(c.shared().world.inputs.get(&name).copied())
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "names",
        lua.create_function(move |_, ()| {
            Ok(c.shared().world.inputs.keys().cloned().collect::<Vec<_>>())
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
                format!("plugin:{}", script.name)
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

/// `gw.timer`: run a function later, once or repeatedly.
pub(crate) fn register_timer(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "timer")?;
    for (name, repeat) in [("after", false), ("every", true)] {
        let c = ctx.clone();
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
                let id = {
                    let mut script = c.script();
                    script.next_timer_id += 1;
                    script.next_timer_id
                };
                let fns: Table = lua.named_registry_value(TIMERS_REGISTRY_KEY)?;
                fns.raw_set(id, f)?;
                let mut script = c.script();
                let due = script.now + delay;
                script.timers.insert(
                    id,
                    Timer {
                        due,
                        every: repeat.then_some(delay),
                    },
                );
                Ok(id)
            })?,
        )?;
    }
    let c = ctx.clone();
    m.set(
        "cancel",
        lua.create_function(move |lua, id: u64| {
            let existed = c.script().timers.remove(&id).is_some();
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
    Ok(())
}
