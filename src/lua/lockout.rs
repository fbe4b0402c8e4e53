//! Lock-out of senders that keep giving wrong passwords, codes or PINs (DESIGN.md "Security",
//! docs/security.md), and the record of who was granted authority (`gw.auth.grant`).
//!
//! Every non-empty sender is tracked: numbers normalised, alphanumeric IDs case-folded
//! ([`crate::phone::sender_key`]). `failures` wrong attempts within `window` lock a sender
//! out of SMS commands for `window`. A sender that some script enrolled is never locked out
//! of what its caller ID grants: the same count only suspends its credential-bearing SMS
//! commands and raises an alert, because failures "from" a number prove nothing about who
//! sent them. All failures together also spend a gateway-wide budget (`global_failures` per
//! `window`); while it is spent, credential-bearing commands from senders that are not
//! enrolled are suspended.
//!
//! Times are `Instant`s so that a wall-clock jump neither frees nor locks anyone; only the end
//! of a lock-out is persisted (as wall-clock time, converted back at start).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// The numbers of the lock-out rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Wrong attempts that lock a sender out.
    pub failures: u32,
    /// The window the failures must fall in, and how long the lock-out lasts.
    pub window: Duration,
    /// Wrong attempts from all senders together within `window` that spend the gateway-wide
    /// budget.
    pub global_failures: u32,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            failures: 5,
            window: Duration::from_secs(3600),
            global_failures: 20,
        }
    }
}

/// The key-value scope lock-outs are persisted in: key = sender key, value = JSON end time.
pub const LOCKOUT_SCOPE: &str = "gateway:lockout";

/// The key-value scope grants are persisted in: key = number, value = JSON
/// `{"<script scope>": ["<role>", …]}`.
pub const ENROLMENT_SCOPE: &str = "gateway:enrolled";

/// Senders whose recent failures are remembered at most; beyond it the oldest are forgotten
/// (a flood of made-up sender IDs must not grow memory without bound). The global budget
/// still counts every failure.
const MAX_TRACKED_SENDERS: usize = 4096;

/// What one failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Counted; the sender is not (yet) locked.
    Counted,
    /// The sender was already locked; nothing changed.
    AlreadyLocked,
    /// This failure locked a sender that is not enrolled out until then.
    Locked(Instant),
    /// This failure reached the limit for an enrolled sender: its credential-bearing SMS
    /// commands are suspended until then, and the owner must be told.
    Targeted(Instant),
}

/// Failures and lock-outs by sender key, and the gateway-wide budget.
#[derive(Debug, Default)]
pub(crate) struct Lockouts {
    pub policy: LockoutPolicy,
    failures: BTreeMap<String, VecDeque<Instant>>,
    locked: BTreeMap<String, Instant>,
    /// The most recent failures from everyone, at most `global_failures` of them.
    global: VecDeque<Instant>,
    /// When the budget was last reported spent: until then it is not reported again.
    budget_reported_until: Option<Instant>,
}

impl Lockouts {
    /// Records a wrong attempt by sender `key` (enrolled or not) at `now`.
    pub fn fail(&mut self, key: &str, enrolled: bool, now: Instant) -> Failure {
        self.count_globally(now);
        if self.is_locked(key, now) {
            return Failure::AlreadyLocked;
        }
        let window = self.policy.window;
        if !self.failures.contains_key(key) && self.failures.len() >= MAX_TRACKED_SENDERS {
            self.forget_stale(now);
            if self.failures.len() >= MAX_TRACKED_SENDERS {
                if let Some(oldest) = self.oldest_tracked() {
                    self.failures.remove(&oldest);
                }
            }
        }
        let recent = self.failures.entry(key.to_string()).or_default();
        while recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            recent.pop_front();
        }
        recent.push_back(now);
        if recent.len() < self.policy.failures.max(1) as usize {
            return Failure::Counted;
        }
        self.failures.remove(key);
        let until = later(now, window);
        self.locked.insert(key.to_string(), until);
        if enrolled {
            Failure::Targeted(until)
        } else {
            Failure::Locked(until)
        }
    }

    fn count_globally(&mut self, now: Instant) {
        let budget = self.policy.global_failures.max(1) as usize;
        self.global.push_back(now);
        while self.global.len() > budget {
            self.global.pop_front();
        }
    }

    /// `Some(until)` while the gateway-wide budget is spent: `global_failures` failures fell
    /// within the last `window`; it recovers `window` after the oldest of them.
    pub fn budget_spent(&self, now: Instant) -> Option<Instant> {
        let budget = self.policy.global_failures.max(1) as usize;
        if self.global.len() < budget {
            return None;
        }
        let until = later(*self.global.front()?, self.policy.window);
        (now < until).then_some(until)
    }

    /// `Some(until)` the first time the budget is seen spent (once per spell), to raise the
    /// alert once rather than for every failure after it.
    pub fn budget_newly_spent(&mut self, now: Instant) -> Option<Instant> {
        let until = self.budget_spent(now)?;
        if self.budget_reported_until.is_some_and(|u| now < u) {
            // Still the same spell: extend it so that a steady attack is reported once.
            self.budget_reported_until = Some(until);
            return None;
        }
        self.budget_reported_until = Some(until);
        Some(until)
    }

    /// True while `key` is locked out (or, for an enrolled sender, suspended).
    pub fn is_locked(&self, key: &str, now: Instant) -> bool {
        self.locked.get(key).is_some_and(|until| now < *until)
    }

    /// Lifts the lock-out of `key` and forgets its failures; true when there was one.
    pub fn unlock(&mut self, key: &str) -> bool {
        self.failures.remove(key);
        self.locked.remove(key).is_some()
    }

    /// Every sender locked out at `now`.
    pub fn locked_keys(&self, now: Instant) -> Vec<String> {
        self.locked
            .iter()
            .filter(|(_, until)| now < **until)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Forgets lock-outs that ended by `now` (returns their keys) and failures that no longer
    /// count.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let ended: Vec<String> = self
            .locked
            .iter()
            .filter(|(_, until)| now >= **until)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &ended {
            self.locked.remove(n);
        }
        self.forget_stale(now);
        ended
    }

    fn forget_stale(&mut self, now: Instant) {
        let window = self.policy.window;
        self.failures.retain(|_, recent| {
            recent
                .back()
                .is_some_and(|t| now.saturating_duration_since(*t) < window)
        });
    }

    fn oldest_tracked(&self) -> Option<String> {
        self.failures
            .iter()
            .filter_map(|(k, recent)| recent.back().map(|t| (*t, k)))
            .min()
            .map(|(_, k)| k.clone())
    }

    /// Restores a persisted lock-out with `remaining` time left, capped at the window (a clock
    /// set far back must not lock someone out for years).
    pub fn restore(&mut self, key: &str, remaining: Duration, now: Instant) {
        let remaining = remaining.min(self.policy.window);
        if !remaining.is_zero() {
            self.locked.insert(key.to_string(), later(now, remaining));
        }
    }
}

/// `at + d`, saturating far in the future instead of panicking on overflow.
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(10 * 365 * 86400))
}

/// Who was granted which role by which script, by normalised number.
#[derive(Debug, Default)]
pub(crate) struct Enrolment {
    grants: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl Enrolment {
    /// Records that `script` granted `role` to `number`; true when it is new.
    pub fn grant(&mut self, number: &str, script: &str, role: &str) -> bool {
        self.grants
            .entry(number.to_string())
            .or_default()
            .entry(script.to_string())
            .or_default()
            .insert(role.to_string())
    }

    /// Removes `role` (every role when `None`) that `script` granted `number`; true when
    /// something was removed.
    pub fn revoke(&mut self, number: &str, script: &str, role: Option<&str>) -> bool {
        let Some(by_script) = self.grants.get_mut(number) else {
            return false;
        };
        let removed = match (by_script.get_mut(script), role) {
            (Some(roles), Some(role)) => {
                let removed = roles.remove(role);
                if roles.is_empty() {
                    by_script.remove(script);
                }
                removed
            }
            (Some(_), None) => by_script.remove(script).is_some(),
            (None, _) => false,
        };
        if by_script.is_empty() {
            self.grants.remove(number);
        }
        removed
    }

    /// True when any script granted `number` any role.
    pub fn is_enrolled(&self, number: &str) -> bool {
        self.grants.contains_key(number)
    }

    /// The roles of `number` as persisted (JSON), or `None` when it has none left.
    pub fn json(&self, number: &str) -> Option<String> {
        self.grants
            .get(number)
            .and_then(|g| serde_json::to_string(g).ok())
    }

    /// Restores the grants saved in scope [`ENROLMENT_SCOPE`]; unreadable rows are skipped.
    pub fn restore(&mut self, saved: &BTreeMap<String, String>) {
        for (number, json) in saved {
            match serde_json::from_str::<BTreeMap<String, BTreeSet<String>>>(json) {
                Ok(g) if !g.is_empty() => {
                    self.grants.insert(number.clone(), g);
                }
                _ => tracing::warn!(%number, "unreadable saved grant skipped"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: &str = "+447700900123";

    #[test]
    fn five_failures_within_the_window_lock_out_and_the_lock_out_ends_after_it() {
        let t0 = Instant::now();
        let mut l = Lockouts::default();
        for i in 0..4 {
            assert_eq!(
                l.fail(N, false, t0 + Duration::from_secs(i * 60)),
                Failure::Counted
            );
        }
        let until = l.fail(N, false, t0 + Duration::from_secs(300));
        assert_eq!(until, Failure::Locked(t0 + Duration::from_secs(300 + 3600)));
        assert!(l.is_locked(N, t0 + Duration::from_secs(3899)));
        assert!(!l.is_locked(N, t0 + Duration::from_secs(3900)));
        assert_eq!(
            l.expire(t0 + Duration::from_secs(3900)),
            vec![N.to_string()]
        );
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut l = Lockouts::default();
        for i in 0..4 {
            l.fail(N, false, t0 + Duration::from_secs(i));
        }
        assert_eq!(
            l.fail(N, false, t0 + Duration::from_secs(3601)),
            Failure::Counted
        );
        assert!(!l.is_locked(N, t0 + Duration::from_secs(3601)));
    }

    #[test]
    fn a_restored_lock_out_is_capped_at_the_window() {
        let t0 = Instant::now();
        let mut l = Lockouts::default();
        l.restore(N, Duration::from_secs(10 * 365 * 86400), t0);
        assert!(l.is_locked(N, t0 + Duration::from_secs(3599)));
        assert!(!l.is_locked(N, t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn an_enrolled_sender_reaching_the_limit_is_targeted_not_locked_out() {
        let t0 = Instant::now();
        let mut l = Lockouts::default();
        for _ in 0..4 {
            assert_eq!(l.fail(N, true, t0), Failure::Counted);
        }
        assert_eq!(
            l.fail(N, true, t0),
            Failure::Targeted(t0 + Duration::from_secs(3600))
        );
        assert_eq!(l.fail(N, true, t0), Failure::AlreadyLocked);
    }

    #[test]
    fn the_global_budget_is_spent_by_many_senders_and_recovers_after_the_window() {
        let t0 = Instant::now();
        let mut l = Lockouts::default();
        for i in 0..19 {
            l.fail(&format!("sender{i}"), false, t0 + Duration::from_secs(i));
            assert_eq!(l.budget_spent(t0 + Duration::from_secs(i)), None);
        }
        let t = t0 + Duration::from_secs(19);
        l.fail("sender19", false, t);
        assert_eq!(l.budget_spent(t), Some(t0 + Duration::from_secs(3600)));
        assert_eq!(
            l.budget_newly_spent(t),
            Some(t0 + Duration::from_secs(3600))
        );
        assert_eq!(l.budget_newly_spent(t), None);
        assert_eq!(l.budget_spent(t0 + Duration::from_secs(3600)), None);
    }

    #[test]
    fn unlock_lifts_the_lock_out_and_forgets_the_failures() {
        let t0 = Instant::now();
        let mut l = Lockouts::default();
        for _ in 0..5 {
            l.fail(N, false, t0);
        }
        assert!(l.unlock(N));
        assert!(!l.is_locked(N, t0));
        assert_eq!(l.fail(N, false, t0), Failure::Counted);
        assert!(!l.unlock("nobody"));
    }

    #[test]
    fn a_flood_of_made_up_senders_keeps_the_tracked_set_bounded() {
        let t0 = Instant::now();
        let mut l = Lockouts::default();
        for i in 0..(MAX_TRACKED_SENDERS + 100) {
            l.fail(
                &format!("s{i}"),
                false,
                t0 + Duration::from_millis(i as u64),
            );
        }
        assert!(l.failures.len() <= MAX_TRACKED_SENDERS);
    }

    #[test]
    fn grants_are_per_script_and_role_and_revoking_the_last_unenrols() {
        let mut e = Enrolment::default();
        assert!(e.grant(N, "plugin:a", "master"));
        assert!(!e.grant(N, "plugin:a", "master"));
        assert!(e.grant(N, "plugin:b", "user"));
        assert!(e.revoke(N, "plugin:a", Some("master")));
        assert!(e.is_enrolled(N));
        assert!(!e.revoke(N, "plugin:a", None));
        assert!(e.revoke(N, "plugin:b", None));
        assert!(!e.is_enrolled(N));
        assert_eq!(e.json(N), None);
    }

    #[test]
    fn grants_survive_a_round_trip_through_the_store() {
        let mut e = Enrolment::default();
        e.grant(N, "plugin:a", "master");
        let saved = BTreeMap::from([(N.to_string(), e.json(N).unwrap())]);
        let mut back = Enrolment::default();
        back.restore(&saved);
        assert!(back.is_enrolled(N));
    }
}
