//! Go `time.ParseDuration` syntax, as the Go agent reads `EDGE_INACTIVITY_TIMEOUT`.
//!
//! A duration is an optional sign and a sequence of decimal numbers with units, e.g. `300ms`,
//! `5m`, `1h30m`, `1.5h`. Valid units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`. A bare `0` is
//! accepted. Negative durations make no sense for a timeout and are refused.

use std::fmt;
use std::time::Duration;

#[derive(Debug, PartialEq, Eq)]
pub struct ParseError(&'static str);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

const UNITS: [(&str, u128); 7] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

pub fn parse(input: &str) -> Result<Duration, ParseError> {
    let mut rest = input.strip_prefix('+').unwrap_or(input);
    if rest.starts_with('-') {
        return Err(ParseError("a negative duration is not allowed"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(ParseError("the value is empty"));
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(ParseError("expected a number before each unit"));
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let Some(&(_, unit_ns)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                ParseError("missing unit (use ns, us, ms, s, m or h)")
            } else {
                ParseError("unknown unit (use ns, us, ms, s, m or h)")
            });
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| ParseError("number too large"))?
        };
        let mut part = whole
            .checked_mul(unit_ns)
            .ok_or(ParseError("duration too large"))?;
        let mut scale = unit_ns;
        for digit in fraction.bytes().take(20) {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        total_ns = total_ns
            .checked_add(part)
            .ok_or(ParseError("duration too large"))?;
        rest = tail;
    }
    let secs =
        u64::try_from(total_ns / 1_000_000_000).map_err(|_| ParseError("duration too large"))?;
    Ok(Duration::new(secs, (total_ns % 1_000_000_000) as u32))
}

/// Formats like Go's `Duration.String()` for whole seconds and above (`5m0s`, `1h30m0s`, `45s`),
/// falling back to milliseconds below a second, so logs read the way operators wrote them.
pub fn display(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let frac = d.subsec_millis();
    let s = if frac == 0 {
        format!("{s}s")
    } else {
        format!("{s}.{frac:03}s")
    };
    match (h, m) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_go_syntax() {
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse("2s500ms"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("+1s"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn refuses_what_go_refuses_and_negatives() {
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "1.2.3s",
            "-5m",
            "5 m",
            "s5",
            "99999999999999999999h",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn displays_like_go() {
        assert_eq!(display(Duration::from_secs(300)), "5m0s");
        assert_eq!(display(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(display(Duration::from_millis(2500)), "2.500s");
        assert_eq!(display(Duration::from_millis(10)), "10ms");
    }
}
