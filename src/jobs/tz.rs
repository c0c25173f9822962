//! The host's local time as cron sees it: `TZ` (a zone name, `:name`, a file path or a POSIX
//! rule such as `CET-1CEST,M3.5.0,M10.5.0/3`), else `/etc/localtime`, else UTC. Zone files are
//! TZif (RFC 8536, versions 1 to 4): the transition table, and the POSIX rule in the footer for
//! times after the last transition (slim zone files rely on it). Pure apart from [`Zone::from_env`].

use std::fmt;
use std::io::Read;
use std::path::Path;

/// Zone files are a few KiB; anything larger is not one.
const MAX_FILE: u64 = 256 * 1024;
const ZONEINFO: &str = "/usr/share/zoneinfo";

#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub name: String,
    /// Transition instants (UTC seconds), ascending, and the offset from each on.
    transitions: Vec<(i64, i32)>,
    /// Offset before the first transition.
    initial: i32,
    /// After the last transition.
    rule: Option<Rule>,
}

/// A POSIX `TZ` rule: standard offset and, optionally, daylight time between two dates.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rule {
    /// Seconds east of UTC.
    std: i32,
    dst: Option<(i32, Date, Date)>,
}

/// A rule's date and the local time of day (seconds, may be negative or past 24 h).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Date {
    /// `Mm.w.d`: day `d` (0 = Sunday) of week `w` (5 = last) of month `m`.
    Month(u32, u32, u32, i32),
    /// `Jn`: day 1-365, February 29 never counted.
    Julian(u32, i32),
    /// `n`: day 0-365, February 29 counted.
    Ordinal(u32, i32),
}

#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            name: "UTC".into(),
            transitions: Vec::new(),
            initial: 0,
            rule: None,
        }
    }

    /// The host's zone, as the C library picks it; a zone that cannot be read is UTC, with the
    /// reason for a log line.
    pub fn from_env() -> (Zone, Option<String>) {
        let tz = std::env::var("TZ").ok();
        match Zone::load(
            tz.as_deref(),
            Path::new(ZONEINFO),
            Path::new("/etc/localtime"),
        ) {
            Ok(zone) => (zone, None),
            Err(e) => (Zone::utc(), Some(format!("{e}; edge jobs use UTC"))),
        }
    }

    /// `tz` as the `TZ` variable (`None`: unset), names looked up in `zoneinfo`.
    pub fn load(tz: Option<&str>, zoneinfo: &Path, localtime: &Path) -> Result<Zone, Error> {
        let tz = match tz {
            None => {
                return match std::fs::metadata(localtime) {
                    Ok(_) => Zone::read(localtime, "localtime"),
                    Err(_) => Ok(Zone::utc()),
                }
            }
            Some(tz) => tz.strip_prefix(':').unwrap_or(tz),
        };
        if tz.is_empty() {
            return Ok(Zone::utc());
        }
        let path = if tz.starts_with('/') {
            Path::new(tz).to_owned()
        } else {
            zoneinfo.join(tz)
        };
        let safe_name = !tz.split('/').any(|c| c == "..");
        if safe_name && path.is_file() {
            return Zone::read(&path, tz);
        }
        match parse_rule(tz) {
            Some(rule) => Ok(Zone {
                name: tz.to_owned(),
                transitions: Vec::new(),
                initial: rule.std,
                rule: Some(rule),
            }),
            None => Err(Error(format!(
                "TZ={tz} is neither a zone in {} nor a POSIX time zone rule",
                zoneinfo.display()
            ))),
        }
    }

    fn read(path: &Path, name: &str) -> Result<Zone, Error> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE).read_to_end(&mut bytes))
            .map_err(|e| {
                Error(format!(
                    "cannot read time zone file {}: {e}",
                    path.display()
                ))
            })?;
        parse_tzif(&bytes, name).map_err(|why| {
            Error(format!(
                "time zone file {} is not a usable TZif file ({why})",
                path.display()
            ))
        })
    }

    /// Seconds east of UTC at instant `t` (UTC seconds).
    pub fn offset(&self, t: i64) -> i32 {
        let after = self.transitions.partition_point(|(at, _)| *at <= t);
        match (after, &self.rule) {
            (n, Some(rule)) if n == self.transitions.len() => rule.offset(t),
            (0, _) => self.initial,
            (n, _) => self.transitions[n - 1].1,
        }
    }

    /// Minutes since 1970-01-01 00:00 local time, at instant `t`.
    pub fn local_minute(&self, t: i64) -> i64 {
        (t + i64::from(self.offset(t))).div_euclid(60)
    }
}

impl Rule {
    fn offset(&self, t: i64) -> i32 {
        let Some((dst, start, end)) = self.dst else {
            return self.std;
        };
        let (year, _, _) =
            crate::system::clock::civil_from_days((t + i64::from(self.std)).div_euclid(86_400));
        // Each change happens at a local time of the offset in force before it.
        let begins = start.local(year) - i64::from(self.std);
        let ends = end.local(year) - i64::from(dst);
        let in_dst = if begins < ends {
            begins <= t && t < ends
        } else {
            !(ends <= t && t < begins)
        };
        if in_dst {
            dst
        } else {
            self.std
        }
    }
}

impl Date {
    /// Local seconds since the epoch of this date's change in `year`.
    fn local(&self, year: i64) -> i64 {
        use crate::system::clock::days_from_civil;
        let jan1 = days_from_civil(year, 1, 1);
        let leap = days_from_civil(year, 3, 1) - days_from_civil(year, 2, 1) == 29;
        let (days, time) = match *self {
            Date::Month(m, w, d, time) => {
                let first = days_from_civil(year, m, 1);
                let next = if m == 12 {
                    days_from_civil(year + 1, 1, 1)
                } else {
                    days_from_civil(year, m + 1, 1)
                };
                let weekday = (first + 4).rem_euclid(7);
                let mut day =
                    first + (i64::from(d) - weekday).rem_euclid(7) + 7 * (i64::from(w) - 1);
                while day >= next {
                    day -= 7;
                }
                (day, time)
            }
            Date::Julian(n, time) => {
                let n = i64::from(n);
                (jan1 + n - 1 + i64::from(leap && n >= 60), time)
            }
            Date::Ordinal(n, time) => (jan1 + i64::from(n), time),
        };
        days * 86_400 + i64::from(time)
    }
}

pub fn parse_tzif(bytes: &[u8], name: &str) -> Result<Zone, &'static str> {
    let ((version, counts), body) = header(bytes)?;
    let (zone, rest) = if version >= b'2' {
        // Skip the 32-bit block; the 64-bit one follows with its own header.
        let skip = block_len(&counts, 4);
        let v2 = body.get(skip..).ok_or("truncated")?;
        let ((_, counts), body) = header(v2)?;
        let zone = block(body, &counts, 8, name)?;
        (zone, body.get(block_len(&counts, 8)..).ok_or("truncated")?)
    } else {
        (block(body, &counts, 4, name)?, &[][..])
    };
    let footer = std::str::from_utf8(rest).map_err(|_| "bad footer")?;
    let rule = footer
        .strip_prefix('\n')
        .and_then(|f| f.split('\n').next())
        .filter(|f| !f.is_empty())
        .map(|f| parse_rule(f).ok_or("bad footer rule"))
        .transpose()?;
    Ok(Zone { rule, ..zone })
}

/// `[isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt]`
type Counts = [usize; 6];

fn header(bytes: &[u8]) -> Result<((u8, Counts), &[u8]), &'static str> {
    if bytes.len() < 44 || &bytes[..4] != b"TZif" {
        return Err("no TZif header");
    }
    let mut counts = [0usize; 6];
    for (i, c) in counts.iter_mut().enumerate() {
        let at = 20 + 4 * i;
        *c = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
    }
    if counts[4] == 0 {
        return Err("no local time types");
    }
    Ok(((bytes[4], counts), &bytes[44..]))
}

fn block_len(c: &Counts, time: usize) -> usize {
    let [isut, isstd, leap, timecnt, typecnt, charcnt] = *c;
    timecnt * time + timecnt + typecnt * 6 + charcnt + leap * (time + 4) + isstd + isut
}

fn block(body: &[u8], c: &Counts, time: usize, name: &str) -> Result<Zone, &'static str> {
    if body.len() < block_len(c, time) {
        return Err("truncated");
    }
    let (timecnt, typecnt) = (c[3], c[4]);
    let types_at = timecnt * time + timecnt;
    let utoff = |i: usize| -> Option<i32> {
        let at = types_at + i.checked_mul(6)?;
        (i < typecnt)
            .then(|| i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]))
    };
    let mut transitions = Vec::with_capacity(timecnt);
    for i in 0..timecnt {
        let at = &body[i * time..(i + 1) * time];
        let instant = if time == 8 {
            i64::from_be_bytes([at[0], at[1], at[2], at[3], at[4], at[5], at[6], at[7]])
        } else {
            i64::from(i32::from_be_bytes([at[0], at[1], at[2], at[3]]))
        };
        let kind = usize::from(body[timecnt * time + i]);
        transitions.push((instant, utoff(kind).ok_or("bad type index")?));
    }
    Ok(Zone {
        name: name.to_owned(),
        transitions,
        // RFC 8536: type 0 applies before the first transition.
        initial: utoff(0).ok_or("bad type index")?,
        rule: None,
    })
}

/// `std offset [dst [offset] [,start[/time],end[/time]]]`; offsets are POSIX (west positive).
fn parse_rule(text: &str) -> Option<Rule> {
    let mut s = text;
    zone_name(&mut s)?;
    let std = -hms(&mut s)?;
    if s.is_empty() {
        return Some(Rule { std, dst: None });
    }
    zone_name(&mut s)?;
    let dst = if s.is_empty() || s.starts_with(',') {
        std + 3600
    } else {
        -hms(&mut s)?
    };
    // No rule: the US rule of POSIX's default (`M3.2.0,M11.1.0`).
    let (start, end) = match s.strip_prefix(',') {
        None if s.is_empty() => (Date::Month(3, 2, 0, 7200), Date::Month(11, 1, 0, 7200)),
        None => return None,
        Some(rest) => {
            s = rest;
            let start = date(&mut s)?;
            s = s.strip_prefix(',')?;
            let end = date(&mut s)?;
            (start, end)
        }
    };
    s.is_empty().then_some(Rule {
        std,
        dst: Some((dst, start, end)),
    })
}

fn zone_name(s: &mut &str) -> Option<()> {
    let len = if let Some(quoted) = s.strip_prefix('<') {
        quoted.find('>')? + 2
    } else {
        s.find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(s.len())
    };
    (len >= 3).then(|| *s = &s[len..])
}

/// `[+-]hh[:mm[:ss]]` in seconds.
fn hms(s: &mut &str) -> Option<i32> {
    let negative = s.starts_with('-');
    *s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let mut total = 0i32;
    for (i, scale) in [3600, 60, 1].into_iter().enumerate() {
        if i > 0 {
            match s.strip_prefix(':') {
                Some(rest) => *s = rest,
                None => break,
            }
        }
        let len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        if len == 0 || len > 3 {
            return None;
        }
        total += s[..len].parse::<i32>().ok()? * scale;
        *s = &s[len..];
    }
    Some(if negative { -total } else { total })
}

fn date(s: &mut &str) -> Option<Date> {
    let number = |s: &mut &str| -> Option<u32> {
        let len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let n = s.get(..len)?.parse().ok()?;
        *s = &s[len..];
        Some(n)
    };
    let kind = if let Some(rest) = s.strip_prefix('M') {
        *s = rest;
        let m = number(s)?;
        *s = s.strip_prefix('.')?;
        let w = number(s)?;
        *s = s.strip_prefix('.')?;
        let d = number(s)?;
        ((1..=12).contains(&m) && (1..=5).contains(&w) && d <= 6).then_some(0)?;
        Date::Month(m, w, d, 7200)
    } else if let Some(rest) = s.strip_prefix('J') {
        *s = rest;
        let n = number(s)?;
        (1..=365).contains(&n).then_some(0)?;
        Date::Julian(n, 7200)
    } else {
        let n = number(s)?;
        (n <= 365).then_some(0)?;
        Date::Ordinal(n, 7200)
    };
    let time = match s.strip_prefix('/') {
        Some(rest) => {
            *s = rest;
            hms(s)?
        }
        None => 7200,
    };
    Some(match kind {
        Date::Month(m, w, d, _) => Date::Month(m, w, d, time),
        Date::Julian(n, _) => Date::Julian(n, time),
        Date::Ordinal(n, _) => Date::Ordinal(n, time),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::clock::days_from_civil;

    /// UTC seconds of a UTC civil time.
    pub fn utc(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60
    }

    pub fn berlin() -> Zone {
        let zoneinfo = Path::new(ZONEINFO);
        assert!(
            zoneinfo.join("Europe/Berlin").is_file(),
            "the tests need the tz database in {ZONEINFO} (apt-get install tzdata)"
        );
        Zone::load(Some("Europe/Berlin"), zoneinfo, Path::new("/nonexistent")).unwrap()
    }

    #[test]
    fn berlin_from_the_tz_database() {
        let z = berlin();
        assert_eq!(z.offset(utc(2026, 1, 15, 12, 0)), 3600);
        assert_eq!(z.offset(utc(2026, 7, 15, 12, 0)), 7200);
        // 2026-03-29 01:00 UTC: 02:00 CET becomes 03:00 CEST.
        assert_eq!(z.offset(utc(2026, 3, 29, 0, 59)), 3600);
        assert_eq!(z.offset(utc(2026, 3, 29, 1, 0)), 7200);
        // 2026-10-25 01:00 UTC: 03:00 CEST becomes 02:00 CET.
        assert_eq!(z.offset(utc(2026, 10, 25, 0, 59)), 7200);
        assert_eq!(z.offset(utc(2026, 10, 25, 1, 0)), 3600);
        // Far past the table: the footer rule.
        assert_eq!(z.offset(utc(2100, 3, 28, 0, 59)), 3600);
        assert_eq!(z.offset(utc(2100, 3, 28, 1, 0)), 7200);
        assert_eq!(z.offset(utc(2100, 10, 31, 1, 0)), 3600);
    }

    #[test]
    fn posix_rules_in_tz() {
        let none = Path::new("/nonexistent");
        let z = Zone::load(Some("CET-1CEST,M3.5.0,M10.5.0/3"), none, none).unwrap();
        assert_eq!(
            z,
            Zone {
                name: z.name.clone(),
                ..berlin_rule_only()
            }
        );
        assert_eq!(z.offset(utc(2026, 3, 29, 1, 0)), 7200);
        assert_eq!(z.offset(utc(2026, 10, 25, 0, 59)), 7200);
        assert_eq!(z.offset(utc(2026, 10, 25, 1, 0)), 3600);
        // Southern hemisphere: daylight time across the new year.
        let z = Zone::load(Some("AEST-10AEDT,M10.1.0,M4.1.0/3"), none, none).unwrap();
        assert_eq!(z.offset(utc(2026, 1, 10, 0, 0)), 11 * 3600);
        assert_eq!(z.offset(utc(2026, 6, 10, 0, 0)), 10 * 3600);
        let z = Zone::load(Some("<+0330>-3:30"), none, none).unwrap();
        assert_eq!(z.offset(0), 12_600);
        let z = Zone::load(Some("EST5EDT"), none, none).unwrap();
        assert_eq!(z.offset(utc(2026, 7, 1, 0, 0)), -4 * 3600);
        assert_eq!(Zone::load(Some(""), none, none).unwrap(), Zone::utc());
        assert_eq!(Zone::load(None, none, none).unwrap(), Zone::utc());
        let e = Zone::load(Some("Mars/Olympus"), none, none).unwrap_err();
        assert!(e.to_string().contains("TZ=Mars/Olympus is neither"), "{e}");
    }

    fn berlin_rule_only() -> Zone {
        Zone {
            name: String::new(),
            transitions: Vec::new(),
            initial: 3600,
            rule: Some(Rule {
                std: 3600,
                dst: Some((
                    7200,
                    Date::Month(3, 5, 0, 7200),
                    Date::Month(10, 5, 0, 10_800),
                )),
            }),
        }
    }

    #[test]
    fn damaged_zone_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = std::fs::read(Path::new(ZONEINFO).join("Europe/Berlin")).unwrap();
        for (name, bytes) in [
            ("empty", &b""[..]),
            (
                "html",
                b"<html>not a zone</html> padding padding padding padding",
            ),
            ("cut", &good[..good.len() / 2]),
        ] {
            std::fs::write(dir.path().join(name), bytes).unwrap();
            let e = Zone::load(Some(name), dir.path(), dir.path()).unwrap_err();
            assert!(
                e.to_string().contains("not a usable TZif file"),
                "{name}: {e}"
            );
        }
    }
}
