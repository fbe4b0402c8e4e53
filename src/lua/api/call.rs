//! `gw.call`: reject, answer or hang up a call.

use super::*;

/// Builds the command for one `gw.call` function from a call id.
type CallCommand = fn(u64) -> Command;

/// `gw.call`: reject, answer or hang up a call.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
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
