//! Lock-out of senders that keep giving wrong passwords, codes or PINs (DESIGN.md "Security"):
//! `failures` wrong attempts within `window` and the number is ignored by every plugin and rule
//! for `window`.
//!
//! Times are `Instant`s so that a wall-clock jump neither frees nor locks anyone; only the end
//! of a lock-out is persisted (as wall-clock time, converted back at start).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// The numbers of the lock-out rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Wrong attempts that lock a sender out.
    pub failures: u32,
    /// The window the failures must fall in, and how long the lock-out lasts.
    pub window: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            failures: 5,
            window: Duration::from_secs(3600),
        }
    }
}

/// The key-value scope lock-outs are persisted in: key = number, value = JSON end time.
pub const LOCKOUT_SCOPE: &str = "gateway:lockout";

/// Failures and lock-outs by normalised number.
#[derive(Debug, Default)]
pub(crate) struct Lockouts {
    pub policy: LockoutPolicy,
    failures: BTreeMap<String, VecDeque<Instant>>,
    locked: BTreeMap<String, Instant>,
}

impl Lockouts {
    /// Records a wrong attempt by `number` at `now`; `Some(until)` when it locks the number out.
    pub fn fail(&mut self, number: &str, now: Instant) -> Option<Instant> {
        if self.is_locked(number, now) {
            return None;
        }
        let window = self.policy.window;
        let recent = self.failures.entry(number.to_string()).or_default();
        while recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            recent.pop_front();
        }
        recent.push_back(now);
        if recent.len() < self.policy.failures.max(1) as usize {
            return None;
        }
        self.failures.remove(number);
        let until = now + window;
        self.locked.insert(number.to_string(), until);
        Some(until)
    }

    /// True while `number` is locked out.
    pub fn is_locked(&self, number: &str, now: Instant) -> bool {
        self.locked.get(number).is_some_and(|until| now < *until)
    }

    /// Forgets lock-outs that ended by `now`; returns their numbers.
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
        ended
    }

    /// Restores a persisted lock-out with `remaining` time left, capped at the window (a clock
    /// set far back must not lock someone out for years).
    pub fn restore(&mut self, number: &str, remaining: Duration, now: Instant) {
        let remaining = remaining.min(self.policy.window);
        if !remaining.is_zero() {
            self.locked.insert(number.to_string(), now + remaining);
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
            assert_eq!(l.fail(N, t0 + Duration::from_secs(i * 60)), None);
        }
        let until = l.fail(N, t0 + Duration::from_secs(300));
        assert_eq!(until, Some(t0 + Duration::from_secs(300 + 3600)));
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
            l.fail(N, t0 + Duration::from_secs(i));
        }
        assert_eq!(l.fail(N, t0 + Duration::from_secs(3601)), None);
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
}
