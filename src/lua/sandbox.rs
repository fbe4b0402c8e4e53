//! The sandboxed Lua state: safe libraries only, a memory limit and a per-call instruction
//! budget.
//!
//! The budget hook is installed with the raw C API rather than `Lua::set_hook`: mlua's hook
//! only fires on the thread it was set on and switches itself off in coroutines, so a
//! `coroutine.wrap(function() while true do end end)()` would escape it. A raw hook set on the
//! main thread is inherited by every coroutine created from it (`lua_newthread` copies it).

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use mlua::{ffi, Lua, LuaOptions, StdLib};

/// How many VM instructions run between two budget checks. Small enough that a call stops
/// soon after its budget, large enough that the hook costs little.
const CHECK_EVERY: c_int = 1000;

/// The instruction budget of the call that is running in one Lua state.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
    exceeded: AtomicBool,
}

impl Budget {
    fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
        }
    }

    /// Starts a new call with the whole budget.
    pub fn reset(&self) {
        self.used.store(0, Ordering::Relaxed);
        self.exceeded.store(false, Ordering::Relaxed);
    }

    /// True when the current call ran out of instructions.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// Charges work done outside the VM (in a C function) as `instructions`; true when that
    /// exhausts the budget. The hook then stops the call at its next check.
    fn charge(&self, instructions: u64) -> bool {
        let used = self.used.fetch_add(instructions, Ordering::Relaxed) + instructions;
        if used > self.limit {
            self.exceeded.store(true, Ordering::Relaxed);
        }
        self.exceeded()
    }
}

/// Bytes that `string.rep` may produce for the price of one VM instruction: about what a
/// simple instruction costs in time when copying memory.
const BYTES_PER_INSTRUCTION: u64 = 16;

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
    if !budget.exceeded() {
        let used = budget.used.fetch_add(counted, Ordering::Relaxed) + counted;
        if used <= budget.limit {
            if counted != CHECK_EVERY as u64 {
                // A previous call left this thread checking every instruction.
                ffi::lua_sethook(state, Some(budget_hook), ffi::LUA_MASKCOUNT, CHECK_EVERY);
            }
            return;
        }
        budget.exceeded.store(true, Ordering::Relaxed);
    }
    // From now on every instruction of this call raises: a `pcall` inside a loop catches one
    // error, and the next instruction after it (outside that pcall) raises again.
    ffi::lua_sethook(state, Some(budget_hook), ffi::LUA_MASKCOUNT, 1);
    ffi::luaL_error(state, c"instruction limit exceeded".as_ptr());
}

/// A fresh state with only the safe libraries, the memory limit and the budget hook.
pub fn new_state(
    memory_limit_kb: usize,
    instruction_limit: u64,
) -> mlua::Result<(Lua, Arc<Budget>)> {
    let libs = StdLib::STRING
        | StdLib::TABLE
        | StdLib::MATH
        | StdLib::UTF8
        | StdLib::COROUTINE
        | StdLib::OS;
    let lua = Lua::new_with(libs, LuaOptions::default())?;
    restrict_globals(&lua)?;
    let budget = Arc::new(Budget::new(instruction_limit));
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
    charge_string_rep(&lua, Arc::clone(&budget))?;
    // Set last so that the libraries and the API fit whatever the limit.
    lua.set_memory_limit(memory_limit_kb.saturating_mul(1024))?;
    Ok((lua, budget))
}

/// `string.rep` is one VM instruction however much it copies, so a loop of big `rep`s would run
/// for seconds within its instruction budget: charge it by the bytes it produces.
fn charge_string_rep(lua: &Lua, budget: Arc<Budget>) -> mlua::Result<()> {
    let string: mlua::Table = lua.globals().get("string")?;
    let rep: mlua::Function = string.get("rep")?;
    let charged = lua.create_function(
        move |_, (s, n, sep): (mlua::String, i64, Option<mlua::String>)| {
            let piece = s.as_bytes().len() + sep.as_ref().map_or(0, |sep| sep.as_bytes().len());
            let bytes = u64::try_from(n).unwrap_or(0).saturating_mul(piece as u64);
            if budget.charge(bytes / BYTES_PER_INSTRUCTION) {
                return Err(mlua::Error::RuntimeError(
                    "instruction limit exceeded".to_string(),
                ));
            }
            rep.call::<mlua::String>((s, n, sep))
        },
    )?;
    string.set("rep", charged)
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
        match new_state(4096, 100_000) {
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
