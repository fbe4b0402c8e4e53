//! `gw.alarm`: the alarm panel's state and requests to it, with the panel's answer.
//!
//! The host, not the request, says who asks: every request names the calling script as its
//! [`AlarmSource`], which the panel trusts (scripts authenticate their own users). `by` is a
//! label for logs and events.

use super::*;

/// `gw.alarm`: the alarm panel's state and requests to it.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "alarm")?;
    let c = ctx.clone();
    m.set(
        "state",
        lua.create_function(move |_, ()| Ok(c.shared().world.alarm.as_str()))?,
    )?;
    let c = ctx.clone();
    m.set(
        "arm",
        lua.create_function(move |lua, (mode, a, b): (String, Value, Value)| {
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
            let req = Request::parse(lua, "gw.alarm.arm", a, b)?;
            request(&c, lua, action, req)
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "disarm",
        lua.create_function(move |lua, (a, b): (Value, Value)| {
            let req = Request::parse(lua, "gw.alarm.disarm", a, b)?;
            request(&c, lua, AlarmAction::Disarm, req)
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "trigger",
        lua.create_function(move |lua, zone: Option<String>| {
            let req = Request {
                by: zone,
                ..Request::default()
            };
            request(&c, lua, AlarmAction::Trigger, req)
        })?,
    )?;
    Ok(())
}

/// The optional arguments of `arm` and `disarm`.
#[derive(Default)]
struct Request {
    by: Option<String>,
    code: Option<String>,
    callback: Option<Function>,
}

impl Request {
    /// `[opts [, callback]]` where opts is `{code = "…", by = "…"}`; also the older
    /// `[by [, code]]` strings and a callback right after the mode.
    fn parse(lua: &Lua, what: &str, a: Value, b: Value) -> mlua::Result<Request> {
        let mut req = Request::default();
        let mut callback_pos = b;
        match a {
            Value::Nil => {}
            Value::Table(opts) => {
                req.code = opts.raw_get("code")?;
                req.by = opts.raw_get("by")?;
            }
            Value::String(by) => {
                req.by = Some(by.to_str()?.to_string());
                if let Value::String(code) = &callback_pos {
                    req.code = Some(code.to_str()?.to_string());
                    callback_pos = Value::Nil;
                }
            }
            Value::Function(f) => {
                req.callback = Some(f);
                return Ok(req);
            }
            other => {
                return Err(lua_error(
                    lua,
                    format!(
                        "{what}: expected an options table {{code = …}}, not {}",
                        other.type_name()
                    ),
                ))
            }
        }
        match callback_pos {
            Value::Nil => {}
            Value::Function(f) => req.callback = Some(f),
            other => {
                return Err(lua_error(
                    lua,
                    format!(
                        "{what}: the callback must be a function, not {}",
                        other.type_name()
                    ),
                ))
            }
        }
        Ok(req)
    }
}

/// Emits the request in the calling script's name; its callback (if any) gets the answer.
fn request(c: &ApiContext, lua: &Lua, action: AlarmAction, req: Request) -> mlua::Result<()> {
    let (source, sender) = {
        let script = c.script();
        (
            AlarmSource::Script(scope(script.kind, &script.name)),
            script.current.reply_to.clone(),
        )
    };
    // Without a label, the sender being handled names who asked, else the script.
    let by = req.by.or(sender).or_else(|| match &source {
        AlarmSource::Script(name) => Some(name.clone()),
        AlarmSource::External => None,
    });
    let reply = match req.callback {
        Some(f) => Some(c.await_result(lua, Some(f))?),
        None => None,
    };
    c.emit(Command::Alarm {
        action,
        source,
        by,
        code: req.code.map(Secret),
        reply,
    });
    Ok(())
}
