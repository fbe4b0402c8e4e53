//! `gw.input`: read the named inputs.

use super::*;

/// `gw.input`: read the named inputs.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "input")?;
    register_states(lua, &m, ctx, |w| &w.inputs)
}
