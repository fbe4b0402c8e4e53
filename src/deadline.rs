//! Instants computed from durations that come from outside (MQTT payloads, scripts, the config,
//! the modem). `Instant + Duration` panics on overflow ("overflow when adding duration to
//! instant"), and a panic there kills the owner task that computed it. [`Later::later`]
//! saturates instead: a duration too long to represent means "not in this process's lifetime".

use std::time::Duration;

/// How far ahead "never" is: far beyond any uptime, well inside every clock's range.
pub const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// An instant that a duration can be added to without panicking.
pub trait Later: Copy {
    /// `self + d`, or `None` when the clock cannot represent it.
    fn checked_later(self, d: Duration) -> Option<Self>;

    /// `self + d`, capped at [`FAR_FUTURE`] from `self`.
    fn later(self, d: Duration) -> Self {
        self.checked_later(d.min(FAR_FUTURE))
            // A clock whose range ends sooner still has an hour left in it.
            .or_else(|| self.checked_later(Duration::from_secs(3600)))
            .unwrap_or(self)
    }
}

impl Later for std::time::Instant {
    fn checked_later(self, d: Duration) -> Option<Self> {
        self.checked_add(d)
    }
}

impl Later for tokio::time::Instant {
    fn checked_later(self, d: Duration) -> Option<Self> {
        self.checked_add(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_duration_saturates_instead_of_panicking() {
        let now = std::time::Instant::now();
        let far = now.later(Duration::from_secs(u64::MAX));
        assert_eq!(far, now + FAR_FUTURE);
        let now = tokio::time::Instant::now();
        assert_eq!(now.later(Duration::MAX), now + FAR_FUTURE);
    }

    #[test]
    fn a_normal_duration_is_added_exactly() {
        let now = std::time::Instant::now();
        assert_eq!(
            now.later(Duration::from_millis(1500)),
            now + Duration::from_millis(1500)
        );
    }
}
