//! Process and OS plumbing: signals, systemd notifications, clock, randomness, log format,
//! command output.

pub mod clock;
pub mod logging;
pub mod output;
pub mod random;
pub mod signals;
pub mod systemd;
