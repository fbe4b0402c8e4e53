//! `gw.timer`: run a function later, repeatedly, or daily at a local time.

use super::*;

/// `gw.timer`: run a function later, repeatedly, or daily at a local time.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "timer")?;
    // One place stores the function and the schedule.
    let add = {
        let c = ctx.clone();
        move |lua: &Lua,
              f: Function,
              schedule: &dyn Fn(&ScriptCtx, &WallClock) -> (Instant, Repeat)|
              -> mlua::Result<u64> {
            let cap = c.limits.caps.timers;
            if c.script().timers.len() >= cap {
                return Err(lua_error(
                    lua,
                    format!("gw.timer: too many pending timers (lua.max_timers = {cap})"),
                ));
            }
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
        let c = ctx.clone();
        m.set(
            name,
            lua.create_function(move |lua, (seconds, f): (f64, Function)| {
                let delay = c.duration(lua, &format!("gw.timer.{name}"), seconds)?;
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
                    (later(script.now, delay), again)
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
