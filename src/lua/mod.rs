//! The Lua host for dialect plugins: one sandboxed state per script, dispatch of SMS, calls
//! and events in plugin order, timers, and hot reload that keeps the old version on error.
//!
//! The host is synchronous and deterministic: the app owns it in one task, passes `now` in,
//! and executes the returned [`Dispatch::commands`] in order. Nothing here sleeps or spawns.
//!
//! Layout: [`sandbox`] builds a safe state with memory and instruction budgets; [`api`]
//! registers the `gw` global (documented in `docs/lua-api.md`); this file loads scripts and
//! routes work to them.

mod api;
pub mod watch;
mod sandbox;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use mlua::{ChunkMode, Function, Lua, Table, Value};

use crate::bus::{Call, Command, Event, IncomingSms, ModemStatus, ScriptKind, ScriptStatus};
use api::{ApiContext, Current, ScriptCtx, Shared, TIMERS_REGISTRY_KEY};
use sandbox::Budget;

/// Calls in a row that may fail before a script is disabled.
const MAX_CONSECUTIVE_FAILURES: u32 = 5;

/// The hooks a plugin table may have; anything else in it is ignored.
const HOOK_NAMES: [&str; 6] = ["sms", "call", "call_ended", "input", "output", "init"];

/// Limits and settings shared by every script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOptions {
    /// Memory one script's state may use, in KiB.
    pub memory_limit_kb: usize,
    /// VM instructions one call (hook, timer callback, load) may run.
    pub instruction_limit: u64,
    /// Digits of the home country code (`"44"`), for `gw.phone` and `gw.sms.send`.
    pub country_code: Option<String>,
}

impl From<&crate::config::LuaConfig> for HostOptions {
    fn from(c: &crate::config::LuaConfig) -> Self {
        Self {
            memory_limit_kb: c.memory_limit_kb,
            instruction_limit: c.instruction_limit,
            country_code: None,
        }
    }
}

/// What scripts can read about the gateway; the host keeps it up to date from events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct World {
    /// Every configured output (only these names can be driven) and its last known state.
    pub outputs: BTreeMap<String, bool>,
    pub inputs: BTreeMap<String, bool>,
    pub modem: ModemStatus,
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
}

/// One loaded generation of a script.
struct Script {
    // Dropped before `lua`: handles into a state go first.
    hooks: Table,
    lua: Lua,
    budget: Arc<Budget>,
    ctx: Arc<Mutex<ScriptCtx>>,
    file: String,
    generation: u64,
    consecutive_failures: u32,
    disabled: bool,
}

impl Script {
    fn ctx(&self) -> MutexGuard<'_, ScriptCtx> {
        self.ctx.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The argument a hook is called with, built inside the script's own state.
enum HookArg<'a> {
    None,
    Sms(&'a IncomingSms),
    Call(&'a Call),
    Switch { name: &'a str, on: bool },
}

impl HookArg<'_> {
    fn to_lua(&self, lua: &Lua) -> mlua::Result<Value> {
        if let HookArg::None = self {
            return Ok(Value::Nil);
        }
        let t = lua.create_table()?;
        match self {
            HookArg::None => {}
            HookArg::Sms(sms) => {
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
                t.set("incomplete", sms.incomplete)?;
            }
            HookArg::Call(call) => {
                t.set("from", call.from.as_deref())?;
                t.set("id", call.id)?;
            }
            HookArg::Switch { name, on } => {
                t.set("name", *name)?;
                t.set("on", *on)?;
            }
        }
        Ok(Value::Table(t))
    }
}

/// Runs dialect plugins.
pub struct LuaHost {
    opts: HostOptions,
    shared: Arc<Mutex<Shared>>,
    scripts: BTreeMap<String, Script>,
    /// Preferred order; loaded plugins not in it come after, by name.
    order: Vec<String>,
}

impl LuaHost {
    /// A host with no plugins, seeing `world` (which must list every configured output).
    pub fn new(opts: HostOptions, world: World) -> Self {
        let shared = Shared {
            world,
            commands: Vec::new(),
            country_code: opts.country_code.clone(),
        };
        Self {
            opts,
            shared: Arc::new(Mutex::new(shared)),
            scripts: BTreeMap::new(),
            order: Vec::new(),
        }
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
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
        let old = self.scripts.get(name);
        let store = old.map(|s| s.ctx().store.clone()).unwrap_or(data);
        let generation = old.map_or(0, |s| s.generation);
        let (world_before, commands_before) = {
            let shared = self.shared();
            (shared.world.clone(), shared.commands.len())
        };
        let req = LoadRequest {
            name,
            path,
            config,
            store,
            now,
            run_init: true,
        };
        match load(&self.opts, &self.shared, req) {
            Ok(mut script) => {
                script.generation = generation + 1;
                tracing::info!(
                    script = name,
                    generation = script.generation,
                    "plugin loaded"
                );
                // Dropping the old state drops its timers with it.
                self.scripts.insert(name.to_string(), script);
                if !self.order.iter().any(|n| n == name) {
                    self.order.push(name.to_string());
                }
                ScriptStatus {
                    kind: ScriptKind::Plugin,
                    name: name.to_string(),
                    generation: generation + 1,
                    error: None,
                }
            }
            Err(error) => {
                tracing::error!(
                    script = name,
                    "plugin not loaded{}: {error}",
                    if old.is_some() {
                        ", the previous version keeps running"
                    } else {
                        ""
                    }
                );
                let mut shared = self.shared();
                shared.world = world_before;
                shared.commands.truncate(commands_before);
                ScriptStatus {
                    kind: ScriptKind::Plugin,
                    name: name.to_string(),
                    generation,
                    error: Some(error),
                }
            }
        }
    }

    /// Stops plugin `name`; its timers never fire.
    pub fn unload(&mut self, name: &str) {
        if self.scripts.remove(name).is_some() {
            tracing::info!(script = name, "plugin unloaded");
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
            .filter(|n| self.scripts.contains_key(*n))
            .cloned()
            .collect();
        names.extend(
            self.scripts
                .keys()
                .filter(|n| !self.order.contains(n))
                .cloned(),
        );
        names
    }

    /// The current status of plugin `name` (disabled plugins carry an error).
    pub fn status(&self, name: &str) -> Option<ScriptStatus> {
        self.scripts.get(name).map(|s| ScriptStatus {
            kind: ScriptKind::Plugin,
            name: name.to_string(),
            generation: s.generation,
            error: s.disabled.then(|| disabled_message(&s.file)),
        })
    }

    /// Commands emitted outside a dispatch (while loading), in order.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.shared().commands)
    }

    /// Offers `sms` to each plugin in order; the first whose `sms` hook returns true wins.
    pub fn dispatch_sms(&mut self, sms: &IncomingSms, now: Instant) -> Dispatch {
        let current = Current {
            reply_to: Some(sms.from.clone()),
            call_id: None,
        };
        self.offer("sms", &HookArg::Sms(sms), current, now)
    }

    /// Offers `call` to each plugin in order; the first whose `call` hook returns true wins.
    pub fn dispatch_call(&mut self, call: &Call, now: Instant) -> Dispatch {
        let current = Current {
            reply_to: call.from.clone(),
            call_id: Some(call.id),
        };
        self.offer("call", &HookArg::Call(call), current, now)
    }

    /// Updates the [`World`] from `ev`, then calls every plugin's `input`, `output` or
    /// `call_ended` hook. SMS and ringing calls go through [`LuaHost::dispatch_sms`] and
    /// [`LuaHost::dispatch_call`] instead, so they are ignored here.
    pub fn dispatch_event(&mut self, ev: &Event, now: Instant) -> Dispatch {
        let mut out = Dispatch::default();
        let (hook, arg, current) = match ev {
            Event::InputChanged { name, on } => {
                self.shared().world.inputs.insert(name.clone(), *on);
                (
                    "input",
                    HookArg::Switch { name, on: *on },
                    Current::default(),
                )
            }
            Event::OutputChanged { name, on } => {
                self.shared().world.outputs.insert(name.clone(), *on);
                (
                    "output",
                    HookArg::Switch { name, on: *on },
                    Current::default(),
                )
            }
            Event::Modem(status) => {
                self.shared().world.modem = status.clone();
                return self.finish(out);
            }
            Event::CallEnded(call) => (
                "call_ended",
                HookArg::Call(call),
                Current {
                    reply_to: call.from.clone(),
                    call_id: Some(call.id),
                },
            ),
            _ => return self.finish(out),
        };
        for name in self.plugin_names() {
            self.call_hook(&name, hook, &arg, current.clone(), now, &mut out);
        }
        self.finish(out)
    }

    /// When the next timer is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.scripts
            .values()
            .filter(|s| !s.disabled)
            .filter_map(|s| s.ctx().timers.values().map(|t| t.due).min())
            .min()
    }

    /// Runs every timer due at `now`, earliest first (each at most once per call).
    pub fn handle_timeout(&mut self, now: Instant) -> Dispatch {
        let mut out = Dispatch::default();
        let mut due = Vec::new();
        for (rank, name) in self.plugin_names().into_iter().enumerate() {
            let Some(script) = self.scripts.get(&name) else {
                continue;
            };
            if script.disabled {
                continue;
            }
            let ctx = script.ctx();
            for (id, timer) in ctx.timers.iter().filter(|(_, t)| t.due <= now) {
                due.push((timer.due, rank, *id, name.clone(), script.generation));
            }
        }
        due.sort();
        for (_, _, id, name, generation) in due {
            let Some(script) = self.scripts.get(&name) else {
                continue;
            };
            // A callback of an older generation never runs.
            if script.generation != generation || script.disabled {
                continue;
            }
            let function = {
                let mut ctx = script.ctx();
                let Some(timer) = ctx.timers.get_mut(&id) else {
                    continue;
                };
                let one_shot = match timer.every {
                    Some(every) => {
                        let next = timer.due + every;
                        timer.due = if next > now { next } else { now + every };
                        false
                    }
                    None => ctx.timers.remove(&id).is_some(),
                };
                drop(ctx);
                script
                    .lua
                    .named_registry_value::<Table>(TIMERS_REGISTRY_KEY)
                    .and_then(|fns| {
                        let f = fns.raw_get::<Option<Function>>(id)?;
                        if one_shot {
                            fns.raw_set(id, Value::Nil)?;
                        }
                        Ok(f)
                    })
            };
            match function {
                Ok(Some(f)) => {
                    self.run(&name, &f, &HookArg::None, Current::default(), now, &mut out);
                }
                Ok(None) => {}
                Err(e) => {
                    out.errors
                        .push(describe(&e, &script_file(&self.scripts, &name), &self.opts))
                }
            }
        }
        self.finish(out)
    }

    fn offer(&mut self, hook: &str, arg: &HookArg, current: Current, now: Instant) -> Dispatch {
        let mut out = Dispatch::default();
        for name in self.plugin_names() {
            if self.call_hook(&name, hook, arg, current.clone(), now, &mut out) {
                out.handled_by = Some(name);
                break;
            }
        }
        self.finish(out)
    }

    fn finish(&mut self, mut out: Dispatch) -> Dispatch {
        out.commands = self.take_commands();
        out
    }

    /// Calls `hook` of script `name` if it has one; true when it returned a true value.
    fn call_hook(
        &mut self,
        name: &str,
        hook: &str,
        arg: &HookArg,
        current: Current,
        now: Instant,
        out: &mut Dispatch,
    ) -> bool {
        let Some(script) = self.scripts.get(name) else {
            return false;
        };
        if script.disabled {
            return false;
        }
        match script.hooks.raw_get::<Option<Function>>(hook) {
            Ok(Some(f)) => self.run(name, &f, arg, current, now, out),
            // Checked at load time; the table may have been changed since, treat as absent.
            _ => false,
        }
    }

    /// Runs `f` in script `name` with a fresh budget, counting failures.
    fn run(
        &mut self,
        name: &str,
        f: &Function,
        arg: &HookArg,
        current: Current,
        now: Instant,
        out: &mut Dispatch,
    ) -> bool {
        let Some(script) = self.scripts.get_mut(name) else {
            return false;
        };
        {
            let mut ctx = script.ctx();
            ctx.now = now;
            ctx.current = current;
        }
        script.budget.reset();
        let result = arg.to_lua(&script.lua).and_then(|a| f.call::<Value>(a));
        script.ctx().current = Current::default();
        match result {
            Ok(value) => {
                script.consecutive_failures = 0;
                !matches!(value, Value::Nil | Value::Boolean(false))
            }
            Err(e) => {
                let message = describe(&e, &script.file, &self.opts);
                tracing::error!(script = name, "{message}");
                out.errors.push(message);
                // Give back what a memory bomb left behind before the next call.
                let _ = script.lua.gc_collect();
                script.consecutive_failures += 1;
                if script.consecutive_failures >= MAX_CONSECUTIVE_FAILURES {
                    script.disabled = true;
                    let error = disabled_message(&script.file);
                    tracing::error!(script = name, "{error}");
                    out.statuses.push(ScriptStatus {
                        kind: ScriptKind::Plugin,
                        name: name.to_string(),
                        generation: script.generation,
                        error: Some(error),
                    });
                }
                false
            }
        }
    }
}

fn script_file(scripts: &BTreeMap<String, Script>, name: &str) -> String {
    scripts
        .get(name)
        .map_or_else(|| name.to_string(), |s| s.file.clone())
}

fn disabled_message(file: &str) -> String {
    format!("{file}: disabled after {MAX_CONSECUTIVE_FAILURES} failed calls in a row; fix it and save to reload")
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
    name: &'a str,
    path: &'a Path,
    config: &'a serde_json::Value,
    /// The `gw.store` contents to start with.
    store: BTreeMap<String, String>,
    now: Instant,
    /// False for `gsmgw check`, where `init` would act without the real config.
    run_init: bool,
}

/// Builds a script's state, runs its file and `init`, and checks what it returned.
fn load(
    opts: &HostOptions,
    shared: &Arc<Mutex<Shared>>,
    req: LoadRequest,
) -> Result<Script, String> {
    let LoadRequest {
        name,
        path,
        config,
        store,
        now,
        run_init,
    } = req;
    let file = file_name(path);
    let source = std::fs::read_to_string(path)
        .map_err(|e| format!("{file}: cannot read {}: {e}", path.display()))?;
    let (lua, budget) = sandbox::new_state(opts.memory_limit_kb, opts.instruction_limit)
        .map_err(|e| describe(&e, &file, opts))?;
    let ctx = Arc::new(Mutex::new(ScriptCtx {
        name: name.to_string(),
        now,
        current: Current::default(),
        store,
        timers: BTreeMap::new(),
        next_timer_id: 0,
    }));
    let api = ApiContext {
        shared: Arc::clone(shared),
        script: Arc::clone(&ctx),
        config: Arc::new(config.clone()),
    };
    api::register_all(&lua, &api).map_err(|e| describe(&e, &file, opts))?;

    budget.reset();
    let returned: Value = lua
        .load(source)
        .set_name(format!("={file}"))
        .set_mode(ChunkMode::Text)
        .eval()
        .map_err(|e| describe(&e, &file, opts))?;
    let Value::Table(hooks) = returned else {
        return Err(format!(
            "{file}: a plugin must return a table of handlers ({{ sms = function(msg) … end, … }}), not {}",
            returned.type_name()
        ));
    };
    for hook in HOOK_NAMES {
        match hooks.raw_get::<Value>(hook) {
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
    if !run_init {
        return Ok(Script {
            hooks,
            lua,
            budget,
            ctx,
            file,
            generation: 0,
            consecutive_failures: 0,
            disabled: false,
        });
    }
    if let Ok(Some(init)) = hooks.raw_get::<Option<Function>>("init") {
        budget.reset();
        init.call::<()>(()).map_err(|e| describe(&e, &file, opts))?;
    }
    Ok(Script {
        hooks,
        lua,
        budget,
        ctx,
        file,
        generation: 0,
        consecutive_failures: 0,
        disabled: false,
    })
}

/// Compiles and runs the script at `path` in a throw-away sandbox and checks that it returns a
/// plugin table (for `gsmgw check`). Errors are `file:line: message`.
pub fn check_script(path: &Path, opts: &HostOptions) -> Result<(), String> {
    let shared = Arc::new(Mutex::new(Shared {
        world: World::default(),
        commands: Vec::new(),
        country_code: opts.country_code.clone(),
    }));
    let name = file_name(path);
    let name = name.strip_suffix(".lua").unwrap_or(&name).to_string();
    let req = LoadRequest {
        name: &name,
        path,
        config: &serde_json::Value::Null,
        store: BTreeMap::new(),
        now: Instant::now(),
        run_init: false,
    };
    load(opts, &shared, req).map(|_| ())
}

#[cfg(test)]
mod tests;
