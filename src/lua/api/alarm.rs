//! `gw.alarm`: the alarm panel's state and requests to it.

use super::*;

/// `gw.alarm`: the alarm panel's state and requests to it.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "alarm")?;
    let c = ctx.clone();
    m.set(
        "state",
        lua.create_function(move |_, ()| Ok(c.shared().world.alarm.as_str()))?,
    )?;
    // Without `by`, the request is made in the name of the sender being handled, if any.
    let request = {
        let c = ctx.clone();
        move |action: AlarmAction, by: Option<String>, code: Option<String>| {
            let by = by.or_else(|| c.script().current.reply_to.clone());
            c.emit(Command::Alarm {
                action,
                by,
                code: code.map(Secret),
            });
        }
    };
    let r = request.clone();
    m.set(
        "arm",
        lua.create_function(
            move |lua, (mode, by, code): (String, Option<String>, Option<String>)| {
                let action = match mode.as_str() {
                    "away" => AlarmAction::ArmAway,
                    "home" => AlarmAction::ArmHome,
                    other => {
                        return Err(lua_error(
                            lua,
                            format!("gw.alarm.arm: mode {other:?} is not \"away\" or \"home\""),
                        ))
                    }
                };
                r(action, by, code);
                Ok(())
            },
        )?,
    )?;
    let r = request.clone();
    m.set(
        "disarm",
        lua.create_function(move |_, (by, code): (Option<String>, Option<String>)| {
            r(AlarmAction::Disarm, by, code);
            Ok(())
        })?,
    )?;
    let r = request;
    m.set(
        "trigger",
        lua.create_function(move |_, zone: Option<String>| {
            r(AlarmAction::Trigger, zone, None);
            Ok(())
        })?,
    )?;
    Ok(())
}
