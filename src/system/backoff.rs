//! When to try again after a failed poll, status report, job log upload or tunnel connection: `min(cap, interval * 2^failures)` with full jitter,
//! never earlier than the server's `Retry-After`. Pure functions, so the bounds are testable.

use std::time::Duration;

/// The longest wait between attempts, unless the check-in interval itself is longer.
pub const CAP: Duration = Duration::from_secs(300);
/// A `Retry-After` beyond this is treated as this: a wrong header must not park a device for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

pub fn cap(interval: Duration) -> Duration {
    CAP.max(interval)
}

/// Uniform in `[0, min(cap, base * 2^failures)]` (full jitter); `random` is any random u64.
pub fn full_jitter(base: Duration, failures: u32, cap: Duration, random: u64) -> Duration {
    let ceiling = base.saturating_mul(1u32 << failures.min(31)).min(cap);
    let ceiling_ms = ceiling.as_millis() as u64;
    Duration::from_millis(random % (ceiling_ms + 1))
}

/// Delay before the next poll after `failures` consecutive failures (1 for the first): full
/// jitter up to [`cap`], never earlier than the server's `Retry-After`.
pub fn delay(
    interval: Duration,
    failures: u32,
    retry_after: Option<Duration>,
    random: u64,
) -> Duration {
    not_before(
        full_jitter(interval, failures, cap(interval), random),
        retry_after,
    )
}

/// `delay`, or the server's `Retry-After` when that is later (at most [`MAX_RETRY_AFTER`]).
pub fn not_before(delay: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(wait) => delay.max(wait.min(MAX_RETRY_AFTER)),
        None => delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE: Duration = Duration::from_secs(5);

    #[test]
    fn ceiling_doubles_then_stops_at_the_cap() {
        // With random = u64::MAX the jitter lands near the ceiling; check the ceiling itself by
        // asking for every failure count with the largest random that maps to it.
        let ceiling = |n: u32| {
            let c = FIVE.saturating_mul(1u32 << n.min(31)).min(CAP).as_millis() as u64;
            delay(FIVE, n, None, c)
        };
        assert_eq!(ceiling(1), Duration::from_secs(10));
        assert_eq!(ceiling(2), Duration::from_secs(20));
        assert_eq!(ceiling(5), Duration::from_secs(160));
        assert_eq!(ceiling(6), CAP);
        assert_eq!(ceiling(60), CAP, "no overflow after many failures");
    }

    #[test]
    fn full_jitter_stays_within_bounds_and_spreads() {
        let mut seen_low = false;
        let mut seen_high = false;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let d = delay(FIVE, 3, None, x);
            assert!(d <= Duration::from_secs(40), "{d:?}");
            seen_low |= d < Duration::from_secs(4);
            seen_high |= d > Duration::from_secs(36);
        }
        assert!(seen_low && seen_high, "jitter must cover the whole range");
    }

    #[test]
    fn retry_after_is_a_floor_but_bounded() {
        assert_eq!(
            delay(FIVE, 1, Some(Duration::from_secs(90)), 0),
            Duration::from_secs(90)
        );
        assert_eq!(
            delay(FIVE, 1, Some(Duration::from_secs(86_400)), 0),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn long_checkin_raises_the_cap() {
        let hour = Duration::from_secs(3600);
        assert_eq!(cap(hour), hour);
        assert!(delay(hour, 4, None, u64::MAX) <= hour);
    }
}
