//! `gw.auth`: credential checks, hashes, the lock-out of senders that keep getting them wrong,
//! and the record of who was granted authority (docs/security.md).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::*;
use crate::bus::{Security, SenderKind};
use crate::lua::lockout::{Failure, ENROLMENT_SCOPE};

/// `gw.auth`: credential checks, hashes, lock-out and grants.
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
    m.set(
        "hash",
        lua.create_function(|lua, secret: mlua::String| {
            hash(&secret.as_bytes()).map_err(|e| lua_error(lua, e))
        })?,
    )?;
    m.set(
        "verify",
        lua.create_function(
            |_, (secret, stored): (Option<mlua::String>, Option<mlua::String>)| {
                Ok(match (secret, stored) {
                    (Some(s), Some(h)) => verify(&s.as_bytes(), &h.to_string_lossy()),
                    _ => false,
                })
            },
        )?,
    )?;
    let c = ctx.clone();
    m.set(
        "fail",
        lua.create_function(move |_, sender: Option<String>| Ok(c.fail(sender.as_deref())))?,
    )?;
    let c = ctx.clone();
    m.set(
        "locked",
        lua.create_function(move |_, sender: Option<String>| Ok(c.sms_locked(sender.as_deref())))?,
    )?;
    let c = ctx.clone();
    m.set(
        "grant",
        lua.create_function(move |_, (number, role): (Option<String>, Option<String>)| {
            let (Some(number), Some(role)) = (number, role) else {
                return Ok(false);
            };
            Ok(c.grant(&number, &role))
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "revoke",
        lua.create_function(move |_, (number, role): (Option<String>, Option<String>)| {
            let Some(number) = number else {
                return Ok(false);
            };
            Ok(c.revoke(&number, role.as_deref()))
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "enrolled",
        lua.create_function(move |_, number: Option<String>| {
            Ok(number.is_some_and(|n| c.enrolled(&n)))
        })?,
    )?;
    Ok(())
}

impl ApiContext {
    /// `gw.auth.fail`: counts a wrong credential for `sender`; true when its SMS commands are
    /// now to be ignored.
    fn fail(&self, sender: Option<&str>) -> bool {
        let now = self.script().now;
        let key = sender.and_then(|s| self.key(s));
        let mut shared = self.shared();
        let Some(key) = key else {
            // An empty sender is not tracked, and gets nothing anyway.
            return true;
        };
        let enrolled = shared.enrolment.is_enrolled(&key);
        let window = shared.lockouts.policy.window;
        let failures = shared.lockouts.policy.failures;
        match shared.lockouts.fail(&key, enrolled, now) {
            Failure::Counted | Failure::AlreadyLocked => {}
            Failure::Locked(until) => {
                let until = shared.clock.at(until).to_utc();
                tracing::warn!(sender = %key, until = %until.to_rfc3339(), "locked out after {failures} wrong passwords or codes: its SMS are ignored until then");
                shared.persist_lockout(&key, until);
                shared.events.push(Event::Lockout {
                    number: key.clone(),
                    until,
                });
            }
            Failure::Targeted(until) => {
                let until = shared.clock.at(until).to_utc();
                tracing::warn!(number = %key, until = %until.to_rfc3339(), "{failures} wrong passwords or codes claimed the enrolled number {key}: its credential-bearing SMS commands are suspended until then; its caller ID still works");
                shared.persist_lockout(&key, until);
                shared.alert(&format!(
                    "gsmgw security: {failures} wrong codes in SMS claiming to be from {key}. Its SMS codes are suspended for {} min; calls still work. Unlock: gsmgw unlock {key}",
                    window.as_secs() / 60
                ));
                shared
                    .events
                    .push(Event::Security(Security::EnrolledTargeted {
                        number: key.clone(),
                        failures,
                        until,
                    }));
            }
        }
        if let Some(until) = shared.lockouts.budget_newly_spent(now) {
            let until = shared.clock.at(until).to_utc();
            let budget = shared.lockouts.policy.global_failures;
            tracing::warn!(until = %until.to_rfc3339(), "{budget} wrong passwords or codes within the lock-out window from all senders: SMS codes from numbers nobody enrolled are suspended until then");
            shared.alert(&format!(
                "gsmgw security: {budget} wrong codes by SMS within {} min. Codes from unknown senders are suspended; enrolled numbers still work.",
                window.as_secs() / 60
            ));
            shared.events.push(Event::Security(Security::BudgetSpent {
                failures: budget,
                until,
            }));
        }
        shared.sms_locked(&key, now)
    }

    /// `gw.auth.locked`.
    fn sms_locked(&self, sender: Option<&str>) -> bool {
        let now = self.script().now;
        let key = sender.and_then(|s| self.key(s));
        let shared = self.shared();
        match key {
            Some(key) => shared.sms_locked(&key, now),
            None => true,
        }
    }

    /// The normalised number `number` when it can hold authority: a real number (not a name,
    /// not a short code), and not the alphanumeric sender of the message being handled.
    fn real_number(&self, number: &str) -> Option<String> {
        if self.is_alphanumeric_sender(number) {
            return None;
        }
        let cc = self.shared().country_code.clone();
        let normalised = crate::phone::normalise(number, cc.as_deref());
        SenderKind::of(&normalised)
            .is_real_number()
            .then_some(normalised)
    }

    fn grant(&self, number: &str, role: &str) -> bool {
        let Some(number) = self.real_number(number) else {
            return false;
        };
        let script = self.script_scope();
        let mut shared = self.shared();
        if shared.enrolment.grant(&number, &script, role) {
            tracing::info!(%number, %role, %script, "authority granted");
            shared.persist_enrolment(&number);
            shared.events.push(Event::Security(Security::Granted {
                script,
                number,
                role: role.to_string(),
            }));
        }
        true
    }

    fn revoke(&self, number: &str, role: Option<&str>) -> bool {
        let cc = self.shared().country_code.clone();
        let number = crate::phone::normalise(number, cc.as_deref());
        let script = self.script_scope();
        let mut shared = self.shared();
        if !shared.enrolment.revoke(&number, &script, role) {
            return false;
        }
        tracing::info!(%number, role = role.unwrap_or("*"), %script, "authority revoked");
        shared.persist_enrolment(&number);
        shared.events.push(Event::Security(Security::Revoked {
            script,
            number,
            role: role.map(str::to_string),
        }));
        true
    }

    fn enrolled(&self, number: &str) -> bool {
        if self.is_alphanumeric_sender(number) {
            return false;
        }
        let shared = self.shared();
        shared
            .sender_key(number)
            .is_some_and(|k| shared.enrolment.is_enrolled(&k))
    }

    /// The lock-out key of `sender`: the SMS being handled says whether it is a name (kept as
    /// sent, case-folded: `00900123` sent as a name is not the number +900123).
    fn key(&self, sender: &str) -> Option<String> {
        if self.is_alphanumeric_sender(sender) {
            return Some(sender.trim().to_lowercase());
        }
        self.shared().sender_key(sender)
    }

    fn script_scope(&self) -> String {
        let script = self.script();
        scope(script.kind, &script.name)
    }
}

impl Shared {
    /// The key `sender`'s failures are counted under; `None` for an empty sender.
    pub(crate) fn sender_key(&self, sender: &str) -> Option<String> {
        crate::phone::sender_key(sender, self.country_code.as_deref())
    }

    /// [`Shared::sender_key`] knowing the sender's kind: a name is only case-folded.
    pub(crate) fn sender_key_of_kind(&self, sender: &str, kind: SenderKind) -> Option<String> {
        match kind {
            SenderKind::Alphanumeric if !sender.trim().is_empty() => {
                Some(sender.trim().to_lowercase())
            }
            _ => self.sender_key(sender),
        }
    }

    /// True when SMS commands from sender `key` must be ignored: locked out (or, enrolled,
    /// suspended), or the global budget is spent and it is not enrolled.
    pub(crate) fn sms_locked(&self, key: &str, now: Instant) -> bool {
        self.lockouts.is_locked(key, now)
            || (self.lockouts.budget_spent(now).is_some() && !self.enrolment.is_enrolled(key))
    }

    fn persist_lockout(&mut self, key: &str, until: chrono::DateTime<chrono::Utc>) {
        let json =
            serde_json::Value::String(until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        self.commands.push(Command::KvSet {
            scope: LOCKOUT_SCOPE.to_string(),
            key: key.to_string(),
            value: Some(json.to_string()),
        });
    }

    fn persist_enrolment(&mut self, number: &str) {
        let value = self.enrolment.json(number);
        self.commands.push(Command::KvSet {
            scope: ENROLMENT_SCOPE.to_string(),
            key: number.to_string(),
            value,
        });
    }

    /// Sends `text` to every `security.alert_to` number.
    pub(crate) fn alert(&mut self, text: &str) {
        for to in self.alert_to.clone() {
            self.commands.push(Command::SendSms {
                to,
                text: text.to_string(),
                request_id: None,
                // Strangers must not be able to spend the SMS that tell the owner about them.
                priority: true,
            });
        }
    }
}

/// An argon2id PHC string of `secret` with a fresh random salt.
pub(crate) fn hash(secret: &[u8]) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret, &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash: {e}"))
}

/// True when `secret` matches `stored`: an argon2 PHC string, or else a clear value (a
/// factory default from the config) compared in constant time.
pub(crate) fn verify(secret: &[u8], stored: &str) -> bool {
    if stored.starts_with("$argon2") {
        return match PasswordHash::new(stored) {
            Ok(parsed) => Argon2::default().verify_password(secret, &parsed).is_ok(),
            Err(_) => false,
        };
    }
    constant_time_eq(secret, stored.as_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_secret_only_and_is_salted() {
        let h = hash(b"1234").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(b"1234", &h));
        assert!(!verify(b"1235", &h));
        assert_ne!(h, hash(b"1234").unwrap());
    }

    #[test]
    fn a_clear_stored_value_is_compared_as_it_is() {
        assert!(verify(b"0000", "0000"));
        assert!(!verify(b"0000", "00000"));
        assert!(!verify(b"x", "$argon2id$broken"));
    }
}
