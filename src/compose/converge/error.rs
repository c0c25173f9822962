//! What stops a converge ([`UpError`]), and the Docker answers the steps tell apart: not found
//! (404) and conflict (409).

use crate::docker;
use std::fmt;
use std::time::Duration;

#[derive(Debug)]
pub enum UpError {
    /// Boxed: a small `Result` keeps every step's code small.
    Docker(Box<docker::Error>),
    Pull {
        image: String,
        message: String,
    },
    /// A dependency is unhealthy, or not healthy within the wait.
    Unhealthy {
        service: String,
        after: Duration,
    },
    /// A `service_healthy` dependency without a healthcheck.
    NoHealthcheck {
        service: String,
        dependent: String,
    },
    /// A dependency exited (with a non-zero code for `service_completed_successfully`).
    Exited {
        service: String,
        code: i64,
    },
    /// A dependency still running after the completion wait.
    NotCompleted {
        service: String,
        after: Duration,
    },
    /// Something that must be fixed outside: a name taken, an external resource missing.
    Conflict(String),
    /// A call for one service failed.
    Service {
        service: String,
        error: Box<UpError>,
    },
    /// Services that did not start, with why (every other service was converged).
    NotStarted(Vec<(String, String)>),
}

impl fmt::Display for UpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpError::Docker(e) => write!(f, "{e}"),
            UpError::Pull { image, message } => write!(f, "cannot pull image {image}: {message}"),
            UpError::Unhealthy { service, after } => {
                write!(f, "{service} is unhealthy after {} s", after.as_secs())
            }
            UpError::NoHealthcheck { service, dependent } => write!(
                f,
                "{dependent} waits for {service} to be healthy, but {service} has no healthcheck"
            ),
            UpError::Exited { service, code } => {
                write!(f, "{service} exited with code {code}")
            }
            UpError::NotCompleted { service, after } => {
                write!(f, "{service} has not completed after {} s", after.as_secs())
            }
            UpError::Conflict(message) => f.write_str(message),
            UpError::Service { service, error } => write!(f, "service {service}: {error}"),
            UpError::NotStarted(failed) => {
                for (i, (service, why)) in failed.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "; " };
                    write!(f, "{sep}service {service} did not start: {why}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for UpError {}

impl From<docker::Error> for UpError {
    fn from(e: docker::Error) -> Self {
        UpError::Docker(Box::new(e))
    }
}

pub(super) fn is_not_found(e: &docker::Error) -> bool {
    matches!(e, docker::Error::Docker { status: 404, .. })
}

pub(super) fn is_conflict(e: &docker::Error) -> bool {
    matches!(e, docker::Error::Docker { status: 409, .. })
}
