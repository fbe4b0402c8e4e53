//! `gw.output`: read and drive the named outputs.

use super::*;

/// `gw.output`: read and drive the named outputs.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
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
