//! `gw.log`: log lines tagged with the script name.

use super::*;

/// Logs one `gw.log` line: script name, message.
type LogLine = fn(&str, &str);

/// `gw.log`: log lines tagged with the script name.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "log")?;
    let levels: [(&str, LogLine); 4] = [
        ("debug", |script, msg| tracing::debug!(script, "{msg}")),
        ("info", |script, msg| tracing::info!(script, "{msg}")),
        ("warn", |script, msg| tracing::warn!(script, "{msg}")),
        ("error", |script, msg| tracing::error!(script, "{msg}")),
    ];
    for (level, log) in levels {
        let c = ctx.clone();
        m.set(
            level,
            lua.create_function(move |_, values: mlua::Variadic<Value>| {
                let msg = values
                    .iter()
                    .map(|v| {
                        v.to_string()
                            .unwrap_or_else(|_| format!("<{}>", v.type_name()))
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                let name = c.script().name.clone();
                log(&name, &msg);
                Ok(())
            })?,
        )?;
    }
    // `print` is gone with stdout; sending it to the log keeps quick debugging working.
    let info: Function = m.get("info")?;
    lua.globals().set("print", info)?;
    Ok(())
}
