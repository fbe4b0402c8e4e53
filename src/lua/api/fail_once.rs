//! One SMS counts at most one credential failure per sender, however many plugins find a
//! wrong credential in it: dialects whose command shapes overlap (David's `<code>,…` and
//! password-comma's `<password>,…#`) would otherwise lock a sender out after fewer wrong
//! messages than `lua.lockout_failures` says.

use super::*;

/// Wraps `gw.auth.fail` (after every other wrapper, so this one runs first): within an SMS
/// dispatch, a sender already counted gets no second failure, only the answer `gw.auth.locked`
/// gives.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let gw: Table = lua.globals().get("gw")?;
    let auth: Table = gw.get("auth")?;
    let fail: Function = auth.get("fail")?;
    let locked: Function = auth.get("locked")?;
    let c = ctx.clone();
    auth.set(
        "fail",
        lua.create_function(move |_, sender: Value| {
            let key = match &sender {
                Value::String(s) => Some(s.to_string_lossy().trim().to_lowercase()),
                _ => None,
            };
            let again = {
                let mut shared = c.shared();
                match (shared.sms_marks.as_mut(), key) {
                    (Some(marks), Some(key)) => {
                        marks.credential_bearing = true;
                        if marks.failed_senders.contains(&key) {
                            true
                        } else {
                            marks.failed_senders.push(key);
                            false
                        }
                    }
                    _ => false,
                }
            };
            if again {
                locked.call::<Value>(sender)
            } else {
                fail.call::<Value>(sender)
            }
        })?,
    )
}
