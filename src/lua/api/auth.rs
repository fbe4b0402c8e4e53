//! `gw.auth`: password checks and the lock-out of senders that keep getting them wrong.

use super::*;

/// `gw.auth`: password checks and the lock-out of senders that keep getting them wrong.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "auth")?;
    m.set(
        "check",
        lua.create_function(
            |_, (given, expected): (Option<mlua::String>, Option<mlua::String>)| {
                Ok(match (given, expected) {
                    (Some(g), Some(e)) => constant_time_eq(&g.as_bytes(), &e.as_bytes()),
                    _ => false,
                })
            },
        )?,
    )?;
    let c = ctx.clone();
    m.set(
        "fail",
        lua.create_function(move |_, number: Option<String>| {
            let Some(number) = number.filter(|n| !is_withheld(Some(n))) else {
                return Ok(false);
            };
            let now = c.script().now;
            let mut shared = c.shared();
            let number = crate::phone::normalise(&number, shared.country_code.as_deref());
            let Some(until) = shared.lockouts.fail(&number, now) else {
                return Ok(shared.lockouts.is_locked(&number, now));
            };
            let until = shared.clock.at(until).to_utc();
            let failures = shared.lockouts.policy.failures;
            tracing::warn!(%number, until = %until.to_rfc3339(), "locked out after {failures} wrong passwords or codes: every SMS and call from it is ignored until then");
            let json = serde_json::Value::String(until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            shared.commands.push(Command::KvSet {
                scope: LOCKOUT_SCOPE.to_string(),
                key: number.clone(),
                value: Some(json.to_string()),
            });
            shared.events.push(Event::Lockout { number, until });
            Ok(true)
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "locked",
        lua.create_function(move |_, number: Option<String>| {
            let Some(number) = number else {
                return Ok(false);
            };
            let now = c.script().now;
            let shared = c.shared();
            let number = crate::phone::normalise(&number, shared.country_code.as_deref());
            Ok(shared.lockouts.is_locked(&number, now))
        })?,
    )?;
    Ok(())
}

/// Compares SHA-256 digests byte by byte without stopping early, so neither the position of
/// the first difference nor the length of the secret shows in the time taken.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}
