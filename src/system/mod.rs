//! Process and OS plumbing: signals, systemd notifications, clock, randomness, log format.

pub mod clock;
pub mod logging;
pub mod random;
pub mod signals;
pub mod systemd;
