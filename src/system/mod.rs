//! Process and OS plumbing: the retry backoff, signals, systemd notifications, clock, randomness, log format,
//! command output, durable file writes, bounded file reads, mail between threads.

pub mod backoff;
pub mod clock;
pub mod durable;
pub mod files;
pub mod logging;
pub mod mailbox;
pub mod output;
#[cfg(test)]
pub mod power_cut;
pub mod random;
pub mod signals;
pub mod systemd;
