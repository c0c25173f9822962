//! One line per event on stderr. Under systemd (`JOURNAL_STREAM` set) the journal stamps the
//! time, so the line carries none; elsewhere it starts with a UTC timestamp. `RUST_LOG`, when
//! set, replaces the filter entirely (for debugging the libraries too).

use log::LevelFilter;
use std::io::Write;

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
                let now = crate::clock::rfc3339(std::time::SystemTime::now());
                writeln!(out, "{now} {:<5} {}", record.level(), record.args())
            }
        });
    if let Ok(filter) = std::env::var("RUST_LOG") {
        builder.parse_filters(&filter);
    }
    // A second init (tests) is harmless.
    let _ = builder.try_init();
}
