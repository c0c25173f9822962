//! When cron jobs fire, as Vixie cron's main loop (`cron.c`) decides it: time is counted in local
//! wall-clock minutes and each wake-up compares the current minute with the last one handled.
//!
//! - one minute later: the jobs of that minute;
//! - 2 to 5 minutes later (a late wake-up): each job due in the missed minutes, once;
//! - 6 minutes to 3 hours later (daylight time began, an NTP step): "wildcard" jobs (minute or
//!   hour field `*…`) for the current minute, other jobs once if due in the skipped minutes: a
//!   skipped hour's 02:30 job runs once;
//! - the same minute or up to 3 hours earlier (daylight time ended): wildcard jobs only, and the
//!   last minute handled stays until the clock has caught up: a repeated hour's 02:30 job does
//!   not run twice;
//! - more than 3 hours either way (a device without RTC syncing NTP after boot): start over from
//!   the current minute, which runs as usual. Missed runs are never replayed.
//!
//! Pure: the clock and the zone are parameters.

use super::cron::{Civil, Fields};
use super::tz::Zone;

/// Beyond this, in local minutes, a clock change starts the count over.
const LARGE: i64 = 3 * 60;
/// Up to this, a forward step is a late wake-up: every job catches up.
const SMALL: i64 = 5;

/// Which local minutes a wake-up covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// First and last minute covered (inclusive).
    pub from: i64,
    pub to: i64,
    /// Wildcard jobs look at every covered minute, not only the last.
    pub wildcards_catch_up: bool,
    /// Fixed-time (not wildcard) jobs run at all.
    pub fixed: bool,
}

impl Tick {
    /// Whether a job with these fields runs on this tick (at most once).
    pub fn fires(&self, fields: &Fields) -> bool {
        let any =
            |from: i64, to: i64| (from..=to).any(|m| fields.matches(&Civil::from_local_minute(m)));
        if fields.is_wildcard() {
            if self.wildcards_catch_up {
                any(self.from, self.to)
            } else {
                any(self.to, self.to)
            }
        } else {
            self.fixed && any(self.from, self.to)
        }
    }
}

/// The count of local minutes handled so far.
#[derive(Debug, Clone)]
pub struct Clockwork {
    /// The latest minute handled ("virtual time").
    high: i64,
    /// The minute of the last wake-up, so that a second wake-up in it does nothing.
    last: i64,
}

impl Clockwork {
    /// Starts at `minute`, which counts as handled: a start does not run the current minute.
    pub fn new(minute: i64) -> Clockwork {
        Clockwork {
            high: minute,
            last: minute,
        }
    }

    /// The wake-up at local minute `now`; `None` when there is nothing to do.
    pub fn advance(&mut self, now: i64) -> Option<Tick> {
        if now == self.last {
            return None;
        }
        self.last = now;
        let diff = now - self.high;
        let tick = |from, wildcards_catch_up, fixed| Tick {
            from,
            to: now,
            wildcards_catch_up,
            fixed,
        };
        Some(if diff == 1 || !(-LARGE..=LARGE).contains(&diff) {
            self.high = now;
            tick(now, false, true)
        } else if diff > SMALL {
            let from = self.high + 1;
            self.high = now;
            tick(from, false, true)
        } else if diff > 0 {
            let from = self.high + 1;
            self.high = now;
            tick(from, true, true)
        } else {
            tick(now, false, false)
        })
    }
}

/// The next instant (UTC seconds, a minute boundary) after `now` at which a job with these
/// fields runs on a host whose clock runs normally in `zone`; `None` within 8 years (`0 0 30 2 *`).
pub fn next_run(fields: &Fields, zone: &Zone, now: i64) -> Option<i64> {
    let mut clockwork = Clockwork::new(zone.local_minute(now));
    let first = now.div_euclid(60) + 1;
    (first..first + 8 * 366 * 1440)
        .map(|minute| minute * 60)
        .find(|t| {
            clockwork
                .advance(zone.local_minute(*t))
                .is_some_and(|tick| tick.fires(fields))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::cron::{parse, Spec};
    use crate::system::clock::days_from_civil;
    use std::path::Path;

    fn fields(expr: &str) -> Fields {
        match parse(expr) {
            Ok(Spec::Cron(f)) => f,
            other => panic!("{expr}: {other:?}"),
        }
    }

    fn utc(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60
    }

    fn berlin() -> Zone {
        let zoneinfo = Path::new("/usr/share/zoneinfo");
        assert!(
            zoneinfo.join("Europe/Berlin").is_file(),
            "the tests need the tz database in /usr/share/zoneinfo (apt-get install tzdata)"
        );
        Zone::load(Some("Europe/Berlin"), zoneinfo, Path::new("/nonexistent")).unwrap()
    }

    /// Next runs from `start` (UTC), each as UTC `(y, mo, d, h, mi)`.
    fn runs(expr: &str, zone: &Zone, start: i64, n: usize) -> Vec<(i64, u32, u32, u32, u32)> {
        let f = fields(expr);
        let mut t = start;
        (0..n)
            .map(|_| {
                t = next_run(&f, zone, t).expect("a next run");
                let c = Civil::from_local_minute(t / 60);
                (c.year, c.month, c.day, c.hour, c.minute)
            })
            .collect()
    }

    #[test]
    fn next_runs_in_utc_across_month_ends_and_leap_days() {
        let utc0 = Zone::utc();
        let start = utc(2026, 1, 31, 23, 58);
        assert_eq!(
            runs("*/1 * * * *", &utc0, start, 3),
            [
                (2026, 1, 31, 23, 59),
                (2026, 2, 1, 0, 0),
                (2026, 2, 1, 0, 1)
            ]
        );
        assert_eq!(
            runs("0 0 31 * *", &utc0, start, 3),
            [
                (2026, 3, 31, 0, 0),
                (2026, 5, 31, 0, 0),
                (2026, 7, 31, 0, 0)
            ]
        );
        assert_eq!(
            runs("0 12 29 2 *", &utc0, start, 2),
            [(2028, 2, 29, 12, 0), (2032, 2, 29, 12, 0)]
        );
        // The OR rule: the 1st or Mondays.
        assert_eq!(
            runs("0 9 1 * mon", &utc0, utc(2026, 11, 27, 0, 0), 3),
            [
                (2026, 11, 30, 9, 0),
                (2026, 12, 1, 9, 0),
                (2026, 12, 7, 9, 0)
            ]
        );
        // Sunday as 0 and 7.
        let sundays = [(2026, 12, 6, 0, 0), (2026, 12, 13, 0, 0)];
        assert_eq!(runs("0 0 * * 0", &utc0, utc(2026, 12, 1, 0, 0), 2), sundays);
        assert_eq!(runs("0 0 * * 7", &utc0, utc(2026, 12, 1, 0, 0), 2), sundays);
        assert_eq!(runs("@yearly", &utc0, start, 1), [(2027, 1, 1, 0, 0)]);
        assert_eq!(next_run(&fields("0 0 30 2 *"), &utc0, start), None);
    }

    #[test]
    fn berlin_spring_forward_runs_the_skipped_hour_once() {
        // 2026-03-29: 02:00 CET is 03:00 CEST (01:00 UTC); 02:xx local never happens.
        let z = berlin();
        let before = utc(2026, 3, 28, 23, 0); // 00:00 CET
                                              // A fixed-time job in the skipped hour runs once, at 03:00 CEST (01:00 UTC).
        assert_eq!(
            runs("30 2 * * *", &z, before, 2),
            [(2026, 3, 29, 1, 0), (2026, 3, 30, 0, 30)]
        );
        // A wildcard job is not caught up: the next run after 01:59 CET is 03:00 CEST.
        assert_eq!(
            runs("*/15 * * * *", &z, utc(2026, 3, 29, 0, 50), 2),
            [(2026, 3, 29, 1, 0), (2026, 3, 29, 1, 15)]
        );
        assert_eq!(
            runs("0 * * * *", &z, utc(2026, 3, 29, 0, 30), 2),
            [(2026, 3, 29, 1, 0), (2026, 3, 29, 2, 0)]
        );
        // 03:30 local is unaffected: 01:30 UTC.
        assert_eq!(runs("30 3 * * *", &z, before, 1), [(2026, 3, 29, 1, 30)]);
    }

    #[test]
    fn berlin_fall_back_runs_the_repeated_hour_once() {
        // 2026-10-25: 03:00 CEST is 02:00 CET (01:00 UTC); 02:xx local happens twice.
        let z = berlin();
        let before = utc(2026, 10, 24, 22, 0); // 00:00 CEST
                                               // 02:30 runs in the first pass (00:30 UTC), not the second (01:30 UTC).
        assert_eq!(
            runs("30 2 * * *", &z, before, 2),
            [(2026, 10, 25, 0, 30), (2026, 10, 26, 1, 30)]
        );
        // Wildcard jobs run on both passes.
        assert_eq!(
            runs("30 * * * *", &z, before, 4),
            [
                (2026, 10, 24, 22, 30),
                (2026, 10, 24, 23, 30),
                (2026, 10, 25, 0, 30),
                (2026, 10, 25, 1, 30)
            ]
        );
        // 03:00 local comes after the repeated hour: 02:00 UTC.
        assert_eq!(runs("0 3 * * *", &z, before, 1), [(2026, 10, 25, 2, 0)]);
    }

    /// Wake-ups at given UTC instants; returns, per wake-up, whether the job fired.
    fn fired(expr: &str, zone: &Zone, start: i64, wakes: &[i64]) -> Vec<bool> {
        let f = fields(expr);
        let mut clockwork = Clockwork::new(zone.local_minute(start));
        wakes
            .iter()
            .map(|t| {
                clockwork
                    .advance(zone.local_minute(*t))
                    .is_some_and(|tick| tick.fires(&f))
            })
            .collect()
    }

    #[test]
    fn clock_jumps_years_forward_runs_once_and_not_every_missed_minute() {
        let z = Zone::utc();
        // Booted without RTC in 1970, NTP sets 2026.
        let boot = 10 * 60;
        let synced = utc(2026, 12, 1, 18, 0);
        assert_eq!(
            fired("* * * * *", &z, boot, &[boot + 60, synced, synced + 60]),
            [true, true, true]
        );
        // A daily job is not replayed for the missed years, nor run at the jump.
        assert_eq!(
            fired("0 3 * * *", &z, boot, &[synced, synced + 60]),
            [false, false]
        );
        // Two wake-ups in one minute: one run.
        assert_eq!(
            fired("* * * * *", &z, synced, &[synced + 60, synced + 90]),
            [true, false]
        );
    }

    #[test]
    fn clock_steps_back_hold_fixed_jobs_until_caught_up() {
        let z = Zone::utc();
        let t = utc(2026, 12, 1, 3, 0);
        // At 03:00 the 03:00 job ran; the clock is stepped back to 02:30 and runs on.
        let f = fields("0 3 * * *");
        let mut clockwork = Clockwork::new(z.local_minute(t) - 1);
        assert!(clockwork.advance(z.local_minute(t)).unwrap().fires(&f));
        let mut again = 0;
        for m in 0..=40 {
            let tick = clockwork.advance(z.local_minute(t - 30 * 60 + m * 60));
            again += usize::from(tick.is_some_and(|tick| tick.fires(&f)));
        }
        assert_eq!(again, 0, "03:00 must not run a second time");
        // A wildcard job keeps running meanwhile, once per minute.
        assert_eq!(
            fired("* * * * *", &z, t, &[t - 1800, t - 1800 + 20, t - 1740]),
            [true, false, true]
        );
        // Stepped back 5 hours: start over; 03:00 runs again the next time it comes.
        assert_eq!(
            fired(
                "0 3 * * *",
                &z,
                t,
                &[t - 5 * 3600, t - 5 * 3600 + 60, t + 86_400]
            ),
            [false, false, true]
        );
        assert_eq!(fired("0 23 * * *", &z, t, &[t - 4 * 3600]), [true]);
    }

    #[test]
    fn late_wake_up_catches_up_each_job_once() {
        let z = Zone::utc();
        let t = utc(2026, 12, 1, 12, 0);
        // Woke 4 minutes late: a job due at 12:02 runs; a per-minute job runs once, not 4 times.
        assert_eq!(fired("2 12 * * *", &z, t, &[t + 240]), [true]);
        assert_eq!(fired("* * * * *", &z, t, &[t + 240]), [true]);
        // 10 minutes late is a clock step: a wildcard job due meanwhile is not caught up.
        assert_eq!(
            fired("*/10 * * * *", &z, t + 60, &[t + 11 * 60 + 59]),
            [false]
        );
    }
}
