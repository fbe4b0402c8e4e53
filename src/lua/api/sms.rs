//! `gw.sms`: send and reply.

use super::*;

/// `gw.sms`: send and reply.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "sms")?;
    let c = ctx.clone();
    m.set(
        "send",
        lua.create_function(move |lua, (to, text): (String, String)| {
            c.check_sms_text(lua, "gw.sms.send", &text)?;
            let cc = c.shared().country_code.clone();
            let to = crate::phone::normalise(&to, cc.as_deref());
            if to.is_empty() {
                return Err(lua_error(lua, "gw.sms.send: empty recipient"));
            }
            c.emit(Command::SendSms {
                to,
                text,
                request_id: None,
            });
            Ok(())
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "reply",
        lua.create_function(move |lua, text: String| {
            c.check_sms_text(lua, "gw.sms.reply", &text)?;
            let Some(to) = c.script().current.reply_to.clone() else {
                return Err(lua_error(
                    lua,
                    "gw.sms.reply: no sender to reply to here (use gw.sms.send(number, text))",
                ));
            };
            c.emit(Command::SendSms {
                to,
                text,
                request_id: None,
            });
            Ok(())
        })?,
    )?;
    Ok(())
}
