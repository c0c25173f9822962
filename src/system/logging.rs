//! One line per event on stderr. Under systemd (`JOURNAL_STREAM` set) the journal stamps the
//! time, so the line carries none; elsewhere it starts with a UTC timestamp. `RUST_LOG`, when
//! set, replaces the filter entirely (for debugging the libraries too).

use log::LevelFilter;
use std::io::Write;
use std::time::{Duration, Instant};

/// A failure that keeps happening is logged again at this pace, not at every attempt.
const REPEAT_EVERY: Duration = Duration::from_secs(3600);

/// How many different messages [`Repeats`] remembers; beyond that the one logged longest ago
/// is forgotten (and logged again when it comes back).
const REMEMBERED: usize = 8;

/// Decides whether a failure deserves a log line: a message not logged in the last hour. Each
/// message is remembered on its own, so failures that alternate between reasons (a request
/// signed with another key, then one whose signature does not verify) still log each reason
/// once an hour. The caller logs repeats in between at DEBUG, so a link that stays down does
/// not fill a small flash disk.
#[derive(Debug, Default)]
pub struct Repeats {
    logged: Vec<(String, Instant)>,
}

impl Repeats {
    pub fn fresh(&mut self, message: &str) -> bool {
        self.fresh_at(message, Instant::now())
    }

    pub fn fresh_at(&mut self, message: &str, now: Instant) -> bool {
        if let Some(entry) = self.logged.iter_mut().find(|(m, _)| m == message) {
            if now.saturating_duration_since(entry.1) < REPEAT_EVERY {
                return false;
            }
            entry.1 = now;
            return true;
        }
        if self.logged.len() == REMEMBERED {
            if let Some(oldest) = (0..self.logged.len()).min_by_key(|&i| self.logged[i].1) {
                self.logged.swap_remove(oldest);
            }
        }
        self.logged.push((message.to_owned(), now));
        true
    }
}

pub fn init(level: LevelFilter) {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(LevelFilter::Warn.min(level))
        .filter_module("edge_agent", level)
        .format(move |out, record| {
            if journal {
                writeln!(out, "{:<5} {}", record.level(), record.args())
            } else {
                let now = crate::system::clock::rfc3339(std::time::SystemTime::now());
                writeln!(out, "{now} {:<5} {}", record.level(), record.args())
            }
        });
    if let Ok(filter) = std::env::var("RUST_LOG") {
        builder.parse_filters(&filter);
    }
    // A second init (tests) is harmless.
    let _ = builder.try_init();
}

#[cfg(test)]
mod tests {
    use super::{Repeats, REMEMBERED, REPEAT_EVERY};
    use std::time::{Duration, Instant};

    #[test]
    fn alternating_reasons_are_each_logged_once_an_hour() {
        let mut repeats = Repeats::default();
        let start = Instant::now();
        let mut lines = 0;
        // Two refusals a second, alternating, for two hours.
        for tick in 0..2 * 3600 * 2 {
            let reason = if tick % 2 == 0 {
                "other key"
            } else {
                "bad signature"
            };
            if repeats.fresh_at(reason, start + Duration::from_millis(500 * tick)) {
                lines += 1;
            }
        }
        assert_eq!(lines, 4, "each reason at 0 h and at 1 h");
    }

    #[test]
    fn a_message_comes_back_after_the_hour_or_when_forgotten() {
        let mut repeats = Repeats::default();
        let t = Instant::now();
        assert!(repeats.fresh_at("down", t));
        assert!(!repeats.fresh_at("down", t + REPEAT_EVERY - Duration::from_secs(1)));
        assert!(repeats.fresh_at("down", t + REPEAT_EVERY));
        for n in 0..REMEMBERED {
            assert!(repeats.fresh_at(&format!("other {n}"), t + REPEAT_EVERY));
        }
        assert_eq!(repeats.logged.len(), REMEMBERED);
        assert!(
            repeats.fresh_at("down", t + REPEAT_EVERY + Duration::from_secs(1)),
            "the oldest of more than {REMEMBERED} reasons is forgotten"
        );
    }
}
