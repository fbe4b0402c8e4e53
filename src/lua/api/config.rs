//! `gw.config`: the script's config section.

use super::*;

/// `gw.config`: the script's config section.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let gw: Table = lua.globals().get("gw")?;
    let config = match ctx.config.as_ref() {
        serde_json::Value::Null => Value::Table(lua.create_table()?),
        other => lua.to_value_with(other, to_lua_options())?,
    };
    gw.set("config", config)
}
