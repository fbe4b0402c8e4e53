//! `gw.sms`: send and reply (with the priority reserve), and marking the secrets of the SMS
//! being handled.

use super::*;

/// `gw.sms`: send, reply, secret.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "sms")?;
    let c = ctx.clone();
    m.set(
        "send",
        lua.create_function(
            move |lua, (to, text, opts): (String, String, Option<Table>)| {
                let priority = priority(lua, "gw.sms.send", opts)?;
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
                    priority,
                });
                Ok(())
            },
        )?,
    )?;
    let c = ctx.clone();
    m.set(
        "reply",
        lua.create_function(move |lua, (text, opts): (String, Option<Table>)| {
            let priority = priority(lua, "gw.sms.reply", opts)?;
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
                priority,
            });
            Ok(())
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "secret",
        lua.create_function(move |_, s: Option<mlua::String>| {
            let mut shared = c.shared();
            let Some(marks) = shared.sms_marks.as_mut() else {
                // Not handling an SMS: there is nothing to mask.
                return Ok(false);
            };
            marks.credential_bearing = true;
            if let Some(s) = s.map(|s| s.to_string_lossy()).filter(|s| !s.is_empty()) {
                if !marks.secrets.contains(&s) {
                    marks.secrets.push(s);
                }
            }
            Ok(true)
        })?,
    )?;
    Ok(())
}

/// `{priority = true}` from a send/reply options table.
fn priority(lua: &Lua, what: &str, opts: Option<Table>) -> mlua::Result<bool> {
    let Some(opts) = opts else {
        return Ok(false);
    };
    match opts.raw_get::<Value>("priority")? {
        Value::Nil | Value::Boolean(false) => Ok(false),
        Value::Boolean(true) => Ok(true),
        other => Err(lua_error(
            lua,
            format!(
                "{what}: opts.priority must be true or false, not {}",
                other.type_name()
            ),
        )),
    }
}

/// Makes `gw.auth.fail` mark the SMS being handled as credential-bearing (contract C): a
/// message that counted a credential failure carries a credential, right or wrong, and must
/// never be forwarded. Wraps whatever `gw.auth.fail` the auth module registered.
pub(crate) fn mark_failures(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let gw: Table = lua.globals().get("gw")?;
    let Ok(auth) = gw.get::<Table>("auth") else {
        return Ok(());
    };
    let Ok(fail) = auth.get::<Function>("fail") else {
        return Ok(());
    };
    let c = ctx.clone();
    auth.set(
        "fail",
        lua.create_function(move |_, args: mlua::MultiValue| {
            if let Some(marks) = c.shared().sms_marks.as_mut() {
                marks.credential_bearing = true;
            }
            fail.call::<mlua::MultiValue>(args)
        })?,
    )
}
