//! `gw.output`: read and drive the named outputs.

use super::*;

/// `gw.output`: read and drive the named outputs.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "output")?;
    register_states(lua, &m, ctx, |w| &w.outputs)?;

    // What the running call asked for comes first, so a handler that switches an output and
    // then reports it reads its own request; everything else reads the confirmed state.
    let c = ctx.clone();
    m.set(
        "get",
        lua.create_function(move |_, name: String| {
            if let Some(on) = c.script().requested_outputs.get(&name) {
                return Ok(Some(*on));
            }
            Ok(c.shared().world.outputs.get(&name).copied())
        })?,
    )?;

    // One place validates the name and the duration and emits the command. The World is not
    // changed here: it follows the GPIO owner's `OutputChanged` events, so scripts never
    // report a relay as switched that the owner did not switch.
    let set = {
        let c = ctx.clone();
        move |lua: &Lua, name: String, on: Option<bool>, seconds: Option<f64>| -> mlua::Result<()> {
            let duration = seconds
                .map(|s| c.duration(lua, "gw.output", s))
                .transpose()?;
            let current = {
                let shared = c.shared();
                let Some(state) = shared.world.outputs.get(&name).copied() else {
                    let known: Vec<&str> =
                        shared.world.outputs.keys().map(String::as_str).collect();
                    return Err(lua_error(
                        lua,
                        format!("unknown output '{name}' (known: {})", known.join(", ")),
                    ));
                };
                state
            };
            let (requested, action) = match on {
                Some(on) => (on, OutputAction::Set { on, duration }),
                None => {
                    let seen = c.script().requested_outputs.get(&name).copied();
                    (!seen.unwrap_or(current), OutputAction::Toggle)
                }
            };
            c.try_emit(
                lua,
                "gw.output",
                Command::SetOutput {
                    name: name.clone(),
                    action,
                },
            )?;
            c.script().requested_outputs.insert(name, requested);
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
