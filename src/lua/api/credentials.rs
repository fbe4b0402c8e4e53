//! Which SMS carry a credential: `gw.auth.fail` and `gw.sms.secret` mark the message being
//! dispatched as credential-bearing, and the host never offers such a message to the
//! `unhandled` hooks that forward it.
//!
//! Both functions are wrapped here rather than changed where they are defined, so the mark
//! is set however `gw.auth` and `gw.sms` evolve; `gw.sms.secret` gets a marking-only
//! definition when `gw.sms` has none (masking is the business of `gw.sms` itself).

use mlua::MultiValue;

use super::*;

pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let gw: Table = lua.globals().get("gw")?;
    let auth: Table = gw.get("auth")?;
    let sms: Table = gw.get("sms")?;
    let fail: Function = auth.get("fail")?;
    auth.set("fail", marking(lua, ctx, Some(fail))?)?;
    let secret: Option<Function> = sms.get("secret")?;
    sms.set("secret", marking(lua, ctx, secret)?)?;
    Ok(())
}

/// A function that marks the current message as credential-bearing, then calls `inner` (if
/// any) with the same arguments and returns what it returns.
fn marking(lua: &Lua, ctx: &ApiContext, inner: Option<Function>) -> mlua::Result<Function> {
    let c = ctx.clone();
    lua.create_function(move |_, args: MultiValue| {
        c.shared().credential_bearing = true;
        match &inner {
            Some(f) => f.call::<MultiValue>(args),
            None => Ok(MultiValue::new()),
        }
    })
}
