//! The sandboxed Lua state: safe libraries only, a memory limit, and a per-call budget of
//! instructions and wall-clock time that covers everything a script can make the VM do.
//!
//! The budget hook is installed with the raw C API rather than `Lua::set_hook`: mlua's hook
//! only fires on the thread it was set on and switches itself off in coroutines, so a
//! `coroutine.wrap(function() while true do end end)()` would escape it. A raw hook set on the
//! main thread is inherited by every coroutine created from it (`lua_newthread` copies it).
//!
//! A C library function is one VM instruction however long it runs, so the hook alone cannot
//! see it. Each one whose cost grows with its arguments is therefore either replaced (the
//! pattern functions, see [`super::pattern`]) or wrapped so that it is charged to the budget
//! before it runs, by the count or size it is asked for (see `charge_library`). Finalizers
//! (`__gc`) run with hooks off, so scripts cannot set them. The wall-clock deadline, checked
//! by the hook and by every charge, is the backstop for what is still one instruction of
//! unbounded cost (comparing or concatenating strings of many megabytes).

use std::ffi::{c_int, c_void, CString};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::{ffi, Lua, LuaOptions, MultiValue, StdLib, Value};

/// How many VM instructions run between two budget checks. Small enough that a call stops
/// soon after its budget, large enough that the hook costs little.
const CHECK_EVERY: c_int = 1000;

/// A hook interval after which the next checks come every instruction: instructions this slow
/// are copying or comparing megabytes, and the deadline must not wait for a thousand more.
const SLOW_INTERVAL: Duration = Duration::from_millis(2);

/// Bytes that a library function may copy or scan for the price of one VM instruction: about
/// what a simple instruction costs in time when copying memory.
pub(crate) const BYTES_PER_INSTRUCTION: u64 = 16;

const WITHIN: u8 = 0;
const OUT_OF_INSTRUCTIONS: u8 = 1;
const PAST_DEADLINE: u8 = 2;
const OVER_COMMAND_CAP: u8 = 3;

/// The budget of the call that is running in one Lua state: VM instructions (and the work of
/// library functions, charged as instructions) and wall-clock time.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
    exceeded: AtomicU8,
    /// The call's wall-clock allowance.
    deadline: Duration,
    /// Nanoseconds since `epoch` at which the current call's time is up.
    due_ns: AtomicU64,
    /// When the hook last ran, in nanoseconds since `epoch`.
    last_check_ns: AtomicU64,
    epoch: Instant,
    /// The errors, built once: the hook raises them with `luaL_error`, which must not run
    /// while a Rust value with a destructor is alive.
    instructions_message: CString,
    deadline_message: CString,
    command_cap_message: CString,
}

impl Budget {
    fn new(limits: &Limits) -> Self {
        let (limit, deadline) = (limits.instruction_limit, limits.call_deadline);
        let instructions_message =
            format!("instruction limit exceeded (lua.instruction_limit = {limit})");
        let deadline_message = format!(
            "call deadline exceeded (lua.call_deadline_ms = {})",
            deadline.as_millis()
        );
        let command_cap_message = format!(
            "too many commands in one call (lua.max_commands_per_call = {})",
            limits.commands_per_call
        );
        Self {
            limit,
            used: AtomicU64::new(0),
            exceeded: AtomicU8::new(WITHIN),
            deadline,
            due_ns: AtomicU64::new(u64::MAX),
            last_check_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            instructions_message: CString::new(instructions_message).unwrap_or_default(),
            deadline_message: CString::new(deadline_message).unwrap_or_default(),
            command_cap_message: CString::new(command_cap_message).unwrap_or_default(),
        }
    }

    fn elapsed_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Starts a new call with the whole budget and a fresh deadline.
    pub fn reset(&self) {
        self.used.store(0, Ordering::Relaxed);
        self.exceeded.store(WITHIN, Ordering::Relaxed);
        let now = self.elapsed_ns();
        self.last_check_ns.store(now, Ordering::Relaxed);
        let allowance = u64::try_from(self.deadline.as_nanos()).unwrap_or(u64::MAX);
        self.due_ns
            .store(now.saturating_add(allowance), Ordering::Relaxed);
    }

    /// True when the current call ran out of instructions or time.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed) != WITHIN
    }

    /// Ends the current call at its next check: it issued more commands than allowed.
    pub(crate) fn trip_command_cap(&self) {
        let _ = self.exceeded.compare_exchange(
            WITHIN,
            OVER_COMMAND_CAP,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn message(&self) -> &CString {
        match self.exceeded.load(Ordering::Relaxed) {
            PAST_DEADLINE => &self.deadline_message,
            OVER_COMMAND_CAP => &self.command_cap_message,
            _ => &self.instructions_message,
        }
    }

    /// The error naming the limit the current call ran into.
    pub fn exceeded_message(&self) -> &str {
        self.message().to_str().unwrap_or("budget exceeded")
    }

    fn message_ptr(&self) -> *const std::ffi::c_char {
        self.message().as_ptr()
    }

    /// Checks the clock; true when the call is past its deadline.
    fn past_deadline(&self) -> bool {
        if self.elapsed_ns() > self.due_ns.load(Ordering::Relaxed) {
            let _ = self.exceeded.compare_exchange(
                WITHIN,
                PAST_DEADLINE,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return true;
        }
        false
    }

    /// Charges work done outside the VM (in a library function) as `instructions`; true when
    /// that exhausts the budget or the call is past its deadline.
    pub(crate) fn charge(&self, instructions: u64) -> bool {
        let used = self
            .used
            .fetch_add(instructions, Ordering::Relaxed)
            .saturating_add(instructions);
        if used > self.limit {
            let _ = self.exceeded.compare_exchange(
                WITHIN,
                OUT_OF_INSTRUCTIONS,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        self.past_deadline();
        self.exceeded()
    }
}

/// The registry slot holding the [`Budget`] pointer; its address is the key.
static BUDGET_KEY: u8 = 0;

fn budget_key() -> *const c_void {
    std::ptr::addr_of!(BUDGET_KEY).cast()
}

unsafe extern "C-unwind" fn budget_hook(state: *mut ffi::lua_State, _ar: *mut ffi::lua_Debug) {
    // No Rust value with a destructor may be alive here when `luaL_error` long-jumps out.
    ffi::lua_rawgetp(state, ffi::LUA_REGISTRYINDEX, budget_key());
    let budget = ffi::lua_touserdata(state, -1) as *const Budget;
    ffi::lua_pop(state, 1);
    if budget.is_null() {
        return;
    }
    let budget = &*budget;
    let counted = ffi::lua_gethookcount(state).max(1) as u64;
    if !budget.charge(counted) {
        let now = budget.elapsed_ns();
        let last = budget.last_check_ns.swap(now, Ordering::Relaxed);
        let slow = now.saturating_sub(last) > SLOW_INTERVAL.as_nanos() as u64;
        let every = if slow { 1 } else { CHECK_EVERY };
        if counted != every as u64 {
            // A previous call left this thread checking every instruction, or this one has
            // instructions so slow that the deadline needs checking after each.
            ffi::lua_sethook(state, Some(budget_hook), ffi::LUA_MASKCOUNT, every);
        }
        return;
    }
    // From now on every instruction of this call raises: a `pcall` inside a loop catches one
    // error, and the next instruction after it (outside that pcall) raises again.
    ffi::lua_sethook(state, Some(budget_hook), ffi::LUA_MASKCOUNT, 1);
    ffi::luaL_error(state, c"%s".as_ptr(), budget.message_ptr());
}

/// The limits a sandboxed state is built with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_limit_kb: usize,
    pub instruction_limit: u64,
    pub call_deadline: Duration,
    /// Only for the error message: the cap itself is counted by the API.
    pub commands_per_call: usize,
}

/// A fresh state with only the safe libraries, the memory limit and the budget hook.
pub fn new_state(limits: Limits) -> mlua::Result<(Lua, Arc<Budget>)> {
    let libs = StdLib::STRING
        | StdLib::TABLE
        | StdLib::MATH
        | StdLib::UTF8
        | StdLib::COROUTINE
        | StdLib::OS;
    let lua = Lua::new_with(libs, LuaOptions::default())?;
    restrict_globals(&lua)?;
    let budget = Arc::new(Budget::new(&limits));
    // The state keeps its own reference so that the pointer in the registry lives as long as
    // the state does, whoever drops what first.
    lua.set_app_data(Arc::clone(&budget));
    let ptr = Arc::as_ptr(&budget) as *mut c_void;
    // SAFETY: the closure only uses the Lua C API on the state it is given; the pointer stays
    // valid because the state's app data owns an `Arc` to it.
    unsafe {
        lua.exec_raw::<()>((), |state| {
            ffi::lua_pushlightuserdata(state, ptr);
            ffi::lua_rawsetp(state, ffi::LUA_REGISTRYINDEX, budget_key());
            ffi::lua_rawgeti(state, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_MAINTHREAD);
            let main = ffi::lua_tothread(state, -1);
            ffi::lua_pop(state, 1);
            if !main.is_null() {
                ffi::lua_sethook(main, Some(budget_hook), ffi::LUA_MASKCOUNT, CHECK_EVERY);
            }
        })?;
    }
    let memory_limit = limits.memory_limit_kb.saturating_mul(1024);
    super::pattern::install(&lua, Arc::clone(&budget), memory_limit)?;
    charge_library(&lua, Arc::clone(&budget))?;
    // Set last so that the libraries and the API fit whatever the limit.
    lua.set_memory_limit(memory_limit)?;
    Ok((lua, budget))
}

/// Converts a Lua-computed cost (a float: it may be huge or infinite) to instructions.
fn instructions(cost: f64) -> u64 {
    if cost.is_nan() || cost <= 0.0 {
        0
    } else if cost >= u64::MAX as f64 {
        u64::MAX
    } else {
        cost as u64
    }
}

/// Wraps every library function whose cost grows with its arguments so that the cost is
/// charged before it runs (and, for the strings it builds, by the size of the result).
fn charge_library(lua: &Lua, budget: Arc<Budget>) -> mlua::Result<()> {
    let b = Arc::clone(&budget);
    let charge = lua.create_function(move |_, cost: f64| {
        if b.charge(instructions(cost)) {
            return Err(mlua::Error::RuntimeError(b.exceeded_message().to_string()));
        }
        Ok(())
    })?;
    // `extra`, then every argument: one instruction each, and their string bytes.
    let b = budget;
    let charge_args = lua.create_function(move |_, args: MultiValue| {
        let mut args = args.into_iter();
        let extra = match args.next() {
            Some(Value::Number(n)) => instructions(n),
            Some(Value::Integer(n)) => u64::try_from(n).unwrap_or(0),
            _ => 0,
        };
        let (mut count, mut bytes) = (0u64, 0u64);
        for arg in args {
            count += 1;
            if let Value::String(s) = arg {
                bytes = bytes.saturating_add(s.as_bytes().len() as u64);
            }
        }
        let cost = extra
            .saturating_add(count)
            .saturating_add(bytes / BYTES_PER_INSTRUCTION);
        if b.charge(cost) {
            return Err(mlua::Error::RuntimeError(b.exceeded_message().to_string()));
        }
        Ok(())
    })?;
    lua.load(
        r##"
        local charge, charge_args = ...
        local type, tonumber, select, rawlen, rawget, error = type, tonumber, select, rawlen, rawget, error
        local string, table, utf8 = string, table, utf8
        local per = 16 -- bytes per instruction, as BYTES_PER_INSTRUCTION

        -- Floats throughout: integer arithmetic on hostile bounds wraps around.
        local function num(x, default)
            if type(x) == "number" or type(x) == "string" then
                local n = tonumber(x)
                if n then return n + 0.0 end
            end
            return default
        end
        local function span(i, j)
            if i == nil or j == nil or j < i then return 0 end
            return j - i + 1
        end
        local function len(s)
            if type(s) == "string" then return #s end
            return 0
        end
        -- `i`..`j` of a string of `n` bytes, negative from the end, clamped to it.
        local function slice(n, i, j)
            if i < 0 then i = n + i + 1 end
            if j < 0 then j = n + j + 1 end
            if i < 1 then i = 1 end
            if j > n then j = n end
            return span(i, j)
        end
        -- The result's bytes are charged after the call: its size is known only then.
        local function charged_result(r, ...)
            if type(r) == "string" then charge(#r / per) end
            return r, ...
        end
        local function wrap_result(lib, name, before)
            local f = lib[name]
            lib[name] = function(...)
                before(...)
                return charged_result(f(...))
            end
        end
        local function wrap(lib, name, before)
            local f = lib[name]
            lib[name] = function(...)
                before(...)
                return f(...)
            end
        end

        wrap(string, "rep", function(s, n, sep)
            n = num(n, 0)
            if n > 0 then charge(n / per + n * (len(s) + len(sep)) / per) end
        end)
        wrap(string, "byte", function(s, i, j)
            local a = num(i, 1)
            charge(slice(len(s), a, num(j, a)))
        end)
        wrap_result(string, "char", function(...) charge_args(0, ...) end)
        wrap_result(string, "format", function(...) charge_args(0, ...) end)
        -- Their work is the string they build: charged by its size, whatever the input's
        -- (a loop of `s:sub(i, i)` over a long text stays linear).
        local function nothing() end
        for _, name in ipairs({ "upper", "lower", "reverse", "sub" }) do
            wrap_result(string, name, nothing)
        end
        wrap_result(string, "pack", function(...) charge_args(0, ...) end)
        wrap(string, "unpack", function(fmt) charge_args(len(fmt), fmt) end)
        wrap(string, "packsize", function(fmt) charge_args(0, fmt) end)

        wrap_result(table, "concat", function(t, sep, i, j)
            if type(t) ~= "table" then return end
            local n = span(num(i, 1), num(j, rawlen(t) + 0.0))
            charge(n + n * len(sep) / per)
        end)
        wrap(table, "unpack", function(t, i, j)
            if type(t) ~= "table" then return end
            charge(span(num(i, 1), num(j, rawlen(t) + 0.0)))
        end)
        wrap(table, "move", function(a1, f, e) charge(span(num(f), num(e))) end)
        wrap(table, "insert", function(t, ...)
            if type(t) == "table" and select("#", ...) >= 2 then charge(rawlen(t)) end
        end)
        wrap(table, "remove", function(t, ...)
            if type(t) == "table" and select("#", ...) >= 1 then charge(rawlen(t)) end
        end)
        wrap(table, "sort", function(t)
            if type(t) ~= "table" then return end
            local n = rawlen(t) + 0.0
            charge(n * math.log(n + 1, 2))
        end)

        wrap_result(utf8, "char", function(...) charge_args(0, ...) end)
        wrap(utf8, "codepoint", function(s, i, j)
            local a = num(i, 1)
            charge(slice(len(s), a, num(j, a)) + len(s) / per)
        end)
        wrap(utf8, "len", function(s) charge_args(0, s) end)
        wrap(utf8, "offset", function(s) charge_args(0, s) end)

        local raw_tonumber = tonumber
        tonumber = function(x, ...)
            if type(x) == "string" then charge(#x / per) end
            return raw_tonumber(x, ...)
        end
        wrap_result(os, "date", function(fmt) charge_args(len(fmt), fmt) end)

        local raw_load = load
        load = function(chunk, ...)
            -- Compiling costs more per byte than copying.
            if type(chunk) == "string" then charge(#chunk / 4) end
            return raw_load(chunk, ...)
        end

        local raw_collect = collectgarbage
        collectgarbage = function(opt, ...)
            if opt == nil or opt == "collect" or opt == "step" then
                -- A full collection walks the whole heap.
                charge(raw_collect("count") * 1024 / 64)
            end
            return raw_collect(opt, ...)
        end

        -- Finalizers run with hooks off, outside any budget: a looping `__gc` would hang the
        -- gateway. Lua only registers one when the metatable has `__gc` as it is set, so a
        -- `__gc` added later never runs.
        local raw_setmetatable = setmetatable
        setmetatable = function(t, mt)
            if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
                error("setmetatable: __gc finalizers are not allowed in scripts (they would run outside the instruction budget)", 2)
            end
            return raw_setmetatable(t, mt)
        end
        "##,
    )
    .set_name("=sandbox")
    .call::<()>((charge, charge_args))
}

/// Removes or wraps everything that reaches outside the state.
fn restrict_globals(lua: &Lua) -> mlua::Result<()> {
    lua.load(
        r#"
        local raw_load, select, type, error = load, select, type, error
        local os_time, os_date, os_clock = os.time, os.date, os.clock
        local raw_collect = collectgarbage
        -- Text chunks only: crafted bytecode can break out of the VM.
        load = function(chunk, name, mode, ...)
            if select('#', ...) > 0 then
                return raw_load(chunk, name, "t", ...)
            end
            return raw_load(chunk, name, "t")
        end
        collectgarbage = function(opt, ...)
            opt = opt or "collect"
            if opt == "count" or opt == "collect" or opt == "step" then
                return raw_collect(opt, ...)
            end
            error("collectgarbage: option '" .. tostring(opt) .. "' is not allowed", 2)
        end
        os = { time = os_time, date = os_date, clock = os_clock }
        string.dump = nil
        dofile, loadfile, require, package, debug, io, warn, print = nil, nil, nil, nil, nil, nil, nil, nil
        "#,
    )
    .set_name("=sandbox")
    .exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> Lua {
        let limits = Limits {
            memory_limit_kb: 4096,
            instruction_limit: 100_000,
            call_deadline: Duration::from_millis(300),
            commands_per_call: 100,
        };
        match new_state(limits) {
            Ok((lua, _)) => lua,
            Err(e) => panic!("state: {e}"),
        }
    }

    #[test]
    fn dangerous_globals_are_gone() {
        let lua = state();
        let gone: bool = lua
            .load(
                "return io == nil and require == nil and package == nil and debug == nil \
                 and dofile == nil and loadfile == nil and string.dump == nil \
                 and os.execute == nil and os.remove == nil and os.exit == nil and os.getenv == nil",
            )
            .eval()
            .unwrap_or(false);
        assert!(gone);
    }

    #[test]
    fn safe_os_functions_remain() {
        let lua = state();
        let ok: bool = lua
            .load("return type(os.time()) == 'number' and type(os.date('%Y')) == 'string' and type(os.clock()) == 'number'")
            .eval()
            .unwrap_or(false);
        assert!(ok);
    }

    #[test]
    fn coroutine_loop_is_stopped_by_the_budget() {
        let lua = state();
        let r = lua
            .load("coroutine.wrap(function() while true do end end)()")
            .exec();
        let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("instruction limit exceeded"), "{msg}");
    }
}
