//! One line per event on stderr. Under systemd (`JOURNAL_STREAM` set) the journal stamps the
//! time, so the line carries none; elsewhere it starts with a UTC timestamp. `RUST_LOG`, when
//! set, replaces the filter entirely (for debugging the libraries too).

use log::LevelFilter;
use std::io::Write;
use std::time::{Duration, Instant};

/// A failure that keeps happening is logged again at this pace, not at every attempt.
const REPEAT_EVERY: Duration = Duration::from_secs(3600);

/// Decides whether a failure deserves a log line: a message different from the last one, or
/// the same an hour after it was last logged. The caller logs repeats in between at DEBUG, so a
/// link that stays down does not fill a small flash disk.
#[derive(Debug, Default)]
pub struct Repeats {
    last: String,
    at: Option<Instant>,
}

impl Repeats {
    pub fn fresh(&mut self, message: &str) -> bool {
        if message == self.last && self.at.is_some_and(|t| t.elapsed() < REPEAT_EVERY) {
            return false;
        }
        message.clone_into(&mut self.last);
        self.at = Some(Instant::now());
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
    #[test]
    fn repeats_are_suppressed_until_the_message_changes() {
        let mut repeats = super::Repeats::default();
        assert!(repeats.fresh("down"));
        assert!(!repeats.fresh("down"));
        assert!(repeats.fresh("refused"));
        assert!(repeats.fresh("down"));
    }
}
