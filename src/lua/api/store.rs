//! `gw.store`: per-script data that survives reloads and restarts.

use super::*;

/// `gw.store`: per-script data that survives reloads and restarts.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
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
            let caps = c.limits.caps;
            let size = key.len() + json.as_ref().map_or(0, String::len);
            // Serialising was work outside the VM: charged by what it produced.
            c.charge_bytes(lua, "gw.store.set", size)?;
            if size > caps.store_value_bytes {
                return Err(lua_error(
                    lua,
                    format!(
                        "gw.store.set: key and value of {size} bytes (as JSON) are over lua.max_store_value_bytes ({})",
                        caps.store_value_bytes
                    ),
                ));
            }
            {
                let script = c.script();
                if json.is_some()
                    && !script.store.contains_key(&key)
                    && script.store.len() >= caps.store_keys
                {
                    return Err(lua_error(
                        lua,
                        format!(
                            "gw.store.set('{key}'): too many keys (lua.max_store_keys = {})",
                            caps.store_keys
                        ),
                    ));
                }
            }
            let scope = {
                let script = c.script();
                scope(script.kind, &script.name)
            };
            let command = Command::KvSet {
                scope,
                key: key.clone(),
                value: json.clone(),
            };
            c.try_emit(lua, "gw.store.set", command)?;
            let mut script = c.script();
            match json {
                Some(j) => script.store.insert(key, j),
                None => script.store.remove(&key),
            };
            Ok(())
        })?,
    )?;
    Ok(())
}

/// `gw.data` for a rule: reads fall back to the rule's `data` defaults; each assignment is
/// saved at once through `gw.store` (same scope and keys).
pub(crate) fn register_data(lua: &Lua, rule: &Table) -> mlua::Result<()> {
    let defaults = match rule.raw_get::<Value>("data")? {
        Value::Table(t) => t,
        _ => lua.create_table()?,
    };
    lua.load(
        r#"
        local defaults = ...
        local get, set = gw.store.get, gw.store.set
        gw.data = setmetatable({}, {
            __index = function(_, key)
                local value = get(key)
                if value == nil then return defaults[key] end
                return value
            end,
            __newindex = function(_, key, value) set(key, value) end,
        })
        "#,
    )
    .set_name("=gw.data")
    .call::<()>(defaults)
}
