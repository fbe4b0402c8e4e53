//! `gw.modem`: what the modem reports.

use super::*;

/// `gw.modem`: what the modem reports.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "modem")?;
    let c = ctx.clone();
    m.set(
        "imei",
        lua.create_function(move |_, ()| Ok(c.shared().world.modem.imei.clone()))?,
    )?;
    let c = ctx.clone();
    m.set(
        "signal",
        lua.create_function(move |_, ()| Ok(c.shared().world.modem.signal_dbm))?,
    )?;
    let c = ctx.clone();
    m.set(
        "operator",
        lua.create_function(move |_, ()| Ok(c.shared().world.modem.operator.clone()))?,
    )?;
    let c = ctx.clone();
    m.set(
        "registered",
        lua.create_function(move |_, ()| Ok(c.shared().world.modem.registered))?,
    )?;
    // A code an SMS stored for later (David's daily CRE) is sent from a timer, where the
    // dispatch-time check cannot see it: the script asks the same allow-list itself.
    let c = ctx.clone();
    m.set(
        "ussd_allowed",
        lua.create_function(move |_, code: String| Ok(c.shared().sms_policy.ussd_allowed(&code)))?,
    )?;
    register_ussd(lua, ctx, &m)
}

/// `gw.modem.ussd`: the asynchronous part of `gw.modem`.
fn register_ussd(lua: &Lua, ctx: &ApiContext, m: &Table) -> mlua::Result<()> {
    let c = ctx.clone();
    m.set(
        "ussd",
        lua.create_function(move |lua, (code, f): (String, Option<Function>)| {
            let code = code.trim().to_string();
            if code.is_empty()
                || !code
                    .chars()
                    .all(|ch| ch.is_ascii_digit() || "*#+".contains(ch))
            {
                return Err(lua_error(
                    lua,
                    format!("gw.modem.ussd: {code:?} is not a USSD code like \"*100#\""),
                ));
            }
            let id = c.await_result(lua, f)?;
            let mut shared = c.shared();
            // A USSD code can move credit (airtime transfers): one that an SMS asks for must
            // be on the allow-list. The refusal reaches the callback like a network error.
            if shared.sms_marks.is_some() && !shared.sms_policy.ussd_allowed(&code) {
                tracing::warn!(%code, "USSD code asked for by an SMS refused: not in sms.ussd_allow");
                shared.events.push(Event::UssdResult {
                    id,
                    result: Err(format!("refused: {code} is not in sms.ussd_allow")),
                });
                return Ok(id);
            }
            shared.commands.push(Command::Ussd { id, code });
            Ok(id)
        })?,
    )
}
