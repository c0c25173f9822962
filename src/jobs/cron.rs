//! Cron expressions as Vixie cron reads them, plus `@every <Go duration>` (Portainer's UI accepts
//! it). Pure: parsing, and matching a local civil minute.
//!
//! Five fields (minute, hour, day of month, month, day of week) of lists, ranges, steps
//! (`*/5`, `1-10/2`) and month / weekday names; 0 and 7 are Sunday. When both day fields are
//! restricted a day matches either (Vixie's OR rule); a field "is `*`" when it starts with `*`
//! (`*/2` too), as in Vixie's `entry.c`. A 6-field expression loses its first (seconds) field,
//! as Portainer's `edgejob_create.go` does before storing it.

use std::fmt;
use std::time::Duration;

/// What a job's expression asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Cron(Fields),
    /// `@every`: whole seconds, at least one (robfig/cron rounds the same way).
    Every(Duration),
    /// `@reboot`: once per boot of the device.
    Reboot,
}

/// One bit per allowed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    minute: u64,
    hour: u32,
    dom: u32,
    month: u16,
    /// Bits 0-6, Sunday = 0 (7 folded into 0).
    dow: u8,
    dom_star: bool,
    dow_star: bool,
    /// The minute or the hour field starts with `*`: Vixie's "wildcard" job, which is not
    /// caught up after a forward clock change and still runs during a backward one.
    wildcard: bool,
}

/// A local wall-clock minute, broken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    /// 0 = Sunday.
    pub weekday: u32,
}

impl Civil {
    /// The civil time of a local minute count (minutes since 1970-01-01 00:00 local).
    pub fn from_local_minute(minute: i64) -> Civil {
        let days = minute.div_euclid(1440);
        let of_day = minute.rem_euclid(1440) as u32;
        let (year, month, day) = crate::system::clock::civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: of_day / 60,
            minute: of_day % 60,
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct ParseError {
    /// `minute`, `hour`, `day of month`, `month`, `day of week`, or `expression`.
    pub field: &'static str,
    pub text: String,
    pub why: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field == "expression" {
            write!(f, "{:?}: {}", self.text, self.why)
        } else {
            write!(f, "{} field {:?}: {}", self.field, self.text, self.why)
        }
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Range {
    name: &'static str,
    low: u32,
    high: u32,
    /// Names for `low`, `low + 1`, ...
    names: &'static [&'static str],
}

const FIELDS: [Range; 5] = [
    Range {
        name: "minute",
        low: 0,
        high: 59,
        names: &[],
    },
    Range {
        name: "hour",
        low: 0,
        high: 23,
        names: &[],
    },
    Range {
        name: "day of month",
        low: 1,
        high: 31,
        names: &[],
    },
    Range {
        name: "month",
        low: 1,
        high: 12,
        names: &MONTHS,
    },
    Range {
        name: "day of week",
        low: 0,
        high: 7,
        names: &DAYS,
    },
];

pub fn parse(expression: &str) -> Result<Spec, ParseError> {
    let text = expression.trim();
    let whole = |why: &str| ParseError {
        field: "expression",
        text: text.to_owned(),
        why: why.to_owned(),
    };
    if let Some(rest) = text.strip_prefix('@') {
        let (word, argument) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let five = match word.to_ascii_lowercase().as_str() {
            "yearly" | "annually" => "0 0 1 1 *",
            "monthly" => "0 0 1 * *",
            "weekly" => "0 0 * * 0",
            "daily" | "midnight" => "0 0 * * *",
            "hourly" => "0 * * * *",
            "reboot" if argument.trim().is_empty() => return Ok(Spec::Reboot),
            "every" => {
                let every = crate::config::duration::parse(argument.trim())
                    .map_err(|e| whole(&format!("@every needs a Go duration such as 90s or 1h30m ({e})")))?;
                // Below a second is a second, and fractions are dropped (robfig/cron's `Every`).
                return Ok(Spec::Every(Duration::from_secs(every.as_secs().max(1))));
            }
            _ => {
                return Err(whole(
                    "unknown @ word (use @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, @reboot or @every <duration>)",
                ))
            }
        };
        if !argument.trim().is_empty() {
            return Err(whole(&format!("@{word} takes no argument")));
        }
        return parse(five);
    }
    let mut parts: Vec<&str> = text.split_whitespace().collect();
    if parts.len() == 6 {
        parts.remove(0);
    }
    if parts.len() != 5 {
        return Err(whole(&format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            parts.len()
        )));
    }
    let mut bits = [0u64; 5];
    for ((part, range), out) in parts.iter().zip(&FIELDS).zip(&mut bits) {
        *out = parse_field(part, range).map_err(|why| ParseError {
            field: range.name,
            text: (*part).to_owned(),
            why,
        })?;
    }
    let dow = bits[4] | (bits[4] >> 7);
    Ok(Spec::Cron(Fields {
        minute: bits[0],
        hour: bits[1] as u32,
        dom: bits[2] as u32,
        month: bits[3] as u16,
        dow: (dow & 0x7f) as u8,
        dom_star: parts[2].starts_with('*'),
        dow_star: parts[4].starts_with('*'),
        wildcard: parts[0].starts_with('*') || parts[1].starts_with('*'),
    }))
}

/// A comma-separated list of `*`, `n`, `n-m`, each but `n` with an optional `/step`.
fn parse_field(text: &str, range: &Range) -> Result<u64, String> {
    let mut bits = 0u64;
    for item in text.split(',') {
        let (span, step) = match item.split_once('/') {
            Some((span, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("step {step:?} is not a positive number"))?;
                (span, Some(step))
            }
            None => (item, None),
        };
        let (first, last) = if span == "*" {
            (range.low, range.high)
        } else if let Some((a, b)) = span.split_once('-') {
            let (a, b) = (value(a, range)?, value(b, range)?);
            if a > b {
                return Err(format!("range {span} goes backwards"));
            }
            (a, b)
        } else {
            if step.is_some() {
                return Err(format!(
                    "a step needs a range or * before it ({span}-{}/… or */…)",
                    range.high
                ));
            }
            let v = value(span, range)?;
            (v, v)
        };
        let mut v = first;
        while v <= last {
            bits |= 1 << v;
            v += step.unwrap_or(1);
        }
    }
    Ok(bits)
}

fn value(text: &str, range: &Range) -> Result<u32, String> {
    let v = if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
        text.parse::<u32>().unwrap_or(u32::MAX)
    } else {
        let lower = text.to_ascii_lowercase();
        match range.names.iter().position(|n| *n == lower) {
            Some(i) => range.low + i as u32,
            None if range.names.is_empty() => return Err(format!("{text:?} is not a number")),
            None => {
                return Err(format!(
                    "{text:?} is neither a number nor a name ({})",
                    range.names.join(", ")
                ))
            }
        }
    };
    if v < range.low || v > range.high {
        return Err(format!("{v} is out of range {}-{}", range.low, range.high));
    }
    Ok(v)
}

impl Fields {
    pub fn matches(&self, t: &Civil) -> bool {
        let dom = self.dom & (1 << t.day) != 0;
        let dow = self.dow & (1 << t.weekday) != 0;
        let day = if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        };
        self.minute & (1 << t.minute) != 0
            && self.hour & (1 << t.hour) != 0
            && self.month & (1 << t.month) != 0
            && day
    }

    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(expr: &str) -> Fields {
        match parse(expr) {
            Ok(Spec::Cron(f)) => f,
            other => panic!("{expr}: {other:?}"),
        }
    }

    fn at(year: i64, month: u32, day: u32, hour: u32, minute: u32) -> Civil {
        let days = crate::system::clock::days_from_civil(year, month, day);
        Civil::from_local_minute(days * 1440 + i64::from(hour * 60 + minute))
    }

    #[test]
    fn civil_minutes_know_their_weekday() {
        // 2026-12-01 is a Tuesday; 2024-02-29 a Thursday; 1970-01-01 a Thursday.
        assert_eq!(at(2026, 12, 1, 18, 5).weekday, 2);
        assert_eq!(at(2024, 2, 29, 0, 0).weekday, 4);
        assert_eq!(Civil::from_local_minute(0).weekday, 4);
        assert_eq!(Civil::from_local_minute(-1).weekday, 3);
        let t = at(2026, 12, 1, 18, 5);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute),
            (2026, 12, 1, 18, 5)
        );
    }

    #[test]
    fn table_of_forms() {
        let monday_noon = at(2026, 11, 30, 12, 0);
        let cases: [(&str, Civil, bool); 22] = [
            ("* * * * *", monday_noon, true),
            ("0 12 * * *", monday_noon, true),
            ("1 12 * * *", monday_noon, false),
            ("*/5 * * * *", at(2026, 11, 30, 12, 35), true),
            ("*/5 * * * *", at(2026, 11, 30, 12, 36), false),
            ("1-10/2 * * * *", at(2026, 11, 30, 12, 9), true),
            ("1-10/2 * * * *", at(2026, 11, 30, 12, 10), false),
            ("0,30 9-17 * * *", at(2026, 11, 30, 17, 30), true),
            ("0,30 9-17 * * *", at(2026, 11, 30, 18, 0), false),
            ("0 12 * nov mon", monday_noon, true),
            ("0 12 * NOV-DEC Mon-Fri", monday_noon, true),
            ("0 12 * jan-oct *", monday_noon, false),
            ("0 0 * * 0", at(2026, 11, 29, 0, 0), true),
            ("0 0 * * 7", at(2026, 11, 29, 0, 0), true),
            ("0 0 * * sun", at(2026, 11, 30, 0, 0), false),
            // OR rule: the 13th or any Friday.
            ("0 0 13 * 5", at(2026, 11, 13, 0, 0), true),
            ("0 0 13 * 5", at(2026, 11, 20, 0, 0), true),
            ("0 0 13 * 5", at(2026, 11, 21, 0, 0), false),
            // A day field starting with * is not "restricted": AND.
            ("0 0 */2 * 5", at(2026, 11, 20, 0, 0), false),
            ("0 0 */2 * 5", at(2026, 11, 27, 0, 0), true),
            // Seconds first: dropped.
            ("30 0 12 * * *", monday_noon, true),
            ("0 0 29 2 *", at(2024, 2, 29, 0, 0), true),
        ];
        for (expr, t, expected) in cases {
            assert_eq!(fields(expr).matches(&t), expected, "{expr} at {t:?}");
        }
    }

    #[test]
    fn at_words() {
        assert_eq!(fields("@yearly"), fields("0 0 1 1 *"));
        assert_eq!(fields("@annually"), fields("0 0 1 1 *"));
        assert_eq!(fields("@monthly"), fields("0 0 1 * *"));
        assert_eq!(fields("@weekly"), fields("0 0 * * 0"));
        assert_eq!(fields("@daily"), fields("0 0 * * *"));
        assert_eq!(fields("@midnight"), fields("0 0 * * *"));
        assert_eq!(fields("@hourly"), fields("0 * * * *"));
        assert_eq!(parse("@reboot"), Ok(Spec::Reboot));
        assert_eq!(
            parse("@every 90s"),
            Ok(Spec::Every(Duration::from_secs(90)))
        );
        assert_eq!(
            parse("@every 1h30m"),
            Ok(Spec::Every(Duration::from_secs(5400)))
        );
        assert_eq!(
            parse("@every 100ms"),
            Ok(Spec::Every(Duration::from_secs(1)))
        );
    }

    #[test]
    fn wildcard_is_vixie_star_on_minute_or_hour() {
        assert!(fields("* 3 * * *").is_wildcard());
        assert!(fields("*/5 3 * * *").is_wildcard());
        assert!(fields("0 * * * *").is_wildcard());
        assert!(!fields("30 2 * * *").is_wildcard());
        assert!(!fields("0-59 0-23 * * *").is_wildcard());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("61 * * * *", "minute field \"61\": 61 is out of range 0-59"),
            ("* 24 * * *", "hour field \"24\": 24 is out of range 0-23"),
            ("* * 0 * *", "day of month field \"0\": 0 is out of range 1-31"),
            ("* * * 13 *", "month field \"13\": 13 is out of range 1-12"),
            ("* * * * 8", "day of week field \"8\": 8 is out of range 0-7"),
            ("* * * foo *", "month field \"foo\": \"foo\" is neither a number nor a name (jan, feb, mar, apr, may, jun, jul, aug, sep, oct, nov, dec)"),
            ("*/0 * * * *", "minute field \"*/0\": step \"0\" is not a positive number"),
            ("5-1 * * * *", "minute field \"5-1\": range 5-1 goes backwards"),
            ("5/10 * * * *", "minute field \"5/10\": a step needs a range or * before it (5-59/… or */…)"),
            ("x * * * *", "minute field \"x\": \"x\" is not a number"),
            ("* * * *", "\"* * * *\": expected 5 fields (minute hour day-of-month month day-of-week), found 4"),
            ("1 2 3 4 5 6 7", "\"1 2 3 4 5 6 7\": expected 5 fields (minute hour day-of-month month day-of-week), found 7"),
            ("", "\"\": expected 5 fields (minute hour day-of-month month day-of-week), found 0"),
            ("@fortnightly", "\"@fortnightly\": unknown @ word (use @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, @reboot or @every <duration>)"),
            ("@daily 5", "\"@daily 5\": @daily takes no argument"),
            ("1,,2 * * * *", "minute field \"1,,2\": \"\" is not a number"),
        ];
        for (expr, message) in cases {
            assert_eq!(parse(expr).unwrap_err().to_string(), message, "{expr}");
        }
        assert!(parse("@every soon")
            .unwrap_err()
            .to_string()
            .contains("@every needs a Go duration"));
    }
}
