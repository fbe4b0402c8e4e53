//! Wall-clock time for a host that otherwise runs on `Instant`s: daily timers (`at 22:00`) and
//! lock-out end times need the local date and time, everything else needs a clock that never
//! jumps.
//!
//! The host keeps one anchor pair (an `Instant` and the wall-clock time at that instant) that
//! the app refreshes before each dispatch, so a test drives both clocks by hand.

use std::time::{Duration, Instant};

use chrono::{DateTime, Local, NaiveTime, TimeZone};

/// A wall-clock change larger than this (NTP setting the clock after boot, a manual change) is
/// a jump: daily timers are rescheduled instead of catching up.
pub(crate) const JUMP: Duration = Duration::from_secs(60);

/// The wall-clock time at one `Instant`; other instants are converted through it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    mono: Instant,
    wall: DateTime<Local>,
}

impl WallClock {
    pub fn new(mono: Instant, wall: DateTime<Local>) -> Self {
        Self { mono, wall }
    }

    /// The wall-clock time at `now`.
    pub fn at(&self, now: Instant) -> DateTime<Local> {
        match now.checked_duration_since(self.mono) {
            Some(ahead) => self.wall + chrono_duration(ahead),
            None => self.wall - chrono_duration(self.mono.duration_since(now)),
        }
    }

    /// The `Instant` at which the wall clock will show `wall` (now or earlier when it is past).
    pub fn instant_of(&self, wall: DateTime<Local>) -> Instant {
        match (wall - self.wall).to_std() {
            Ok(ahead) => super::api::later(self.mono, ahead),
            Err(_) => {
                let behind = (self.wall - wall).to_std().unwrap_or_default();
                self.mono.checked_sub(behind).unwrap_or(self.mono)
            }
        }
    }
}

fn chrono_duration(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// Parses `"22:00"` or `"22:00:30"` (24-hour local time).
pub(crate) fn parse_time_of_day(s: &str) -> Option<NaiveTime> {
    let s = s.trim();
    NaiveTime::parse_from_str(s, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M:%S"))
        .ok()
}

/// The first time after `after` at which the local clock shows `time`. On a day where `time`
/// does not exist (the spring-forward gap) it is an hour later; where it exists twice (autumn),
/// the first one.
pub(crate) fn next_daily(time: NaiveTime, after: DateTime<Local>) -> DateTime<Local> {
    let mut date = after.date_naive();
    // Three days always contain a later occurrence, DST or not.
    for _ in 0..3 {
        let naive = date.and_time(time);
        let candidate = Local.from_local_datetime(&naive).earliest().or_else(|| {
            Local
                .from_local_datetime(&(naive + chrono::TimeDelta::hours(1)))
                .earliest()
        });
        if let Some(c) = candidate.filter(|c| *c > after) {
            return c;
        }
        match date.succ_opt() {
            Some(next) => date = next,
            None => break,
        }
    }
    after + chrono::TimeDelta::days(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(h: u32, m: u32) -> DateTime<Local> {
        match Local.with_ymd_and_hms(2026, 6, 10, h, m, 0).single() {
            Some(t) => t,
            None => panic!("no such local time"),
        }
    }

    #[test]
    fn instants_and_wall_times_convert_both_ways() {
        let t0 = Instant::now();
        let clock = WallClock::new(t0, local(21, 0));
        assert_eq!(clock.at(t0 + Duration::from_secs(3600)), local(22, 0));
        assert_eq!(
            clock.instant_of(local(22, 0)),
            t0 + Duration::from_secs(3600)
        );
    }

    #[test]
    fn next_daily_is_today_when_still_ahead_and_tomorrow_when_past() {
        let at = parse_time_of_day("22:00");
        assert_eq!(at, NaiveTime::from_hms_opt(22, 0, 0));
        let Some(at) = at else { return };
        assert_eq!(next_daily(at, local(21, 0)), local(22, 0));
        assert_eq!(
            next_daily(at, local(22, 0)),
            local(22, 0) + chrono::TimeDelta::days(1)
        );
    }

    #[test]
    fn bad_times_of_day_are_refused() {
        for bad in ["25:00", "22", "ten", "22:61", ""] {
            assert_eq!(parse_time_of_day(bad), None, "{bad}");
        }
        assert_eq!(
            parse_time_of_day("07:30:15"),
            NaiveTime::from_hms_opt(7, 30, 15)
        );
    }
}
