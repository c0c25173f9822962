//! `ps`: the project's containers with their state; [`aggregate`]: one status for the stack, by
//! the rules of Portainer's libstack (`pkg/libstack/compose/internal/composeplugin/status.go`).

use super::body;
use crate::docker::{self, Client};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub service: String,
    /// The container's name.
    pub name: String,
    /// Docker's: `created`, `running`, `restarting`, `paused`, `exited`, `removing`, `dead`.
    pub state: String,
    /// For `exited` and `dead`.
    pub exit_code: i64,
    /// `healthy`, `unhealthy`, `starting`, or empty without a healthcheck.
    pub health: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackStatus {
    Starting,
    Running,
    Completed,
    Removing,
    /// `service X exited with code N`.
    Error(String),
    /// No container.
    Removed,
}

impl fmt::Display for StackStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StackStatus::Starting => f.write_str("starting"),
            StackStatus::Running => f.write_str("running"),
            StackStatus::Completed => f.write_str("completed"),
            StackStatus::Removing => f.write_str("removing"),
            StackStatus::Error(e) => write!(f, "error: {e}"),
            StackStatus::Removed => f.write_str("removed"),
        }
    }
}

/// The containers of `project_name` (lower-cased, as compose does), by service and name. One
/// list call: the exit code is read from Docker's `Status` text (`Exited (2) 5 seconds ago`),
/// except for `created` containers, inspected: Docker records there the code of a start that
/// failed (127 for a missing executable), which the list does not show.
pub fn ps(docker: &Client, project_name: &str) -> Result<Vec<ServiceState>, docker::Error> {
    let filter = format!("{}={}", body::PROJECT, project_name.to_lowercase());
    let mut states: Vec<ServiceState> = docker
        .containers(true, &[("label", &filter)])?
        .into_iter()
        .map(|c| ServiceState {
            service: c.labels.get(body::SERVICE).cloned().unwrap_or_default(),
            name: c
                .names
                .first()
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default(),
            exit_code: exit_code(&c.status),
            health: health(&c.status).to_owned(),
            state: c.state,
        })
        .collect();
    for s in states.iter_mut().filter(|s| s.state == "created") {
        match docker.inspect_container(&s.name) {
            Ok(inspect) => s.exit_code = inspect.state.exit_code,
            // Removed since the list.
            Err(docker::Error::Docker { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    states.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
    Ok(states)
}

/// `N` of `Exited (N) ...`; 0 otherwise.
fn exit_code(status: &str) -> i64 {
    status
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(code, _)| code.parse().ok())
        .unwrap_or(0)
}

/// From `Up 5 seconds (healthy)`, `(health: starting)`, `(unhealthy)`.
fn health(status: &str) -> &'static str {
    if status.contains("(healthy)") {
        "healthy"
    } else if status.contains("(unhealthy)") {
        "unhealthy"
    } else if status.contains("(health: starting)") {
        "starting"
    } else {
        ""
    }
}

/// libstack's aggregation: any error → error; any starting → starting; any removing →
/// removing; all completed → completed; running and completed → running; none → removed.
/// A container left `created` by a start that failed (a non-zero exit code) is an error, as
/// the deploy that Portainer saw fail, rather than starting for ever.
pub fn aggregate(states: &[ServiceState]) -> StackStatus {
    if states.is_empty() {
        return StackStatus::Removed;
    }
    let (mut starting, mut removing, mut running, mut completed) = (0, 0, 0, 0);
    for s in states {
        match (s.state.as_str(), s.exit_code) {
            ("created", code) if code != 0 => {
                return StackStatus::Error(format!(
                    "service {} failed to start (exit code {code})",
                    s.service
                ))
            }
            ("created" | "restarting" | "paused", _) => starting += 1,
            ("running", _) => running += 1,
            ("removing", _) => removing += 1,
            // Podman says `stopped` for an exited container it has not cleaned up yet.
            ("exited" | "stopped", 0) => completed += 1,
            ("exited" | "stopped" | "dead", code) if code != 0 => {
                return StackStatus::Error(format!("service {} exited with code {code}", s.service))
            }
            // A dead container with code 0 counts as removed, as libstack has it.
            _ => {}
        }
    }
    if starting > 0 {
        StackStatus::Starting
    } else if removing > 0 {
        StackStatus::Removing
    } else if completed == states.len() {
        StackStatus::Completed
    } else if running + completed == states.len() {
        StackStatus::Running
    } else {
        StackStatus::Starting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(service: &str, state: &str, code: i64) -> ServiceState {
        ServiceState {
            service: service.into(),
            name: format!("p-{service}-1"),
            state: state.into(),
            exit_code: code,
            health: String::new(),
        }
    }

    #[test]
    fn status_text_gives_exit_code_and_health() {
        assert_eq!(exit_code("Exited (137) 2 minutes ago"), 137);
        assert_eq!(exit_code("Up 3 seconds"), 0);
        assert_eq!(health("Up 3 seconds (healthy)"), "healthy");
        assert_eq!(health("Up 1 second (health: starting)"), "starting");
        assert_eq!(health("Up 9 seconds (unhealthy)"), "unhealthy");
    }

    #[test]
    fn aggregation_follows_libstack() {
        assert_eq!(aggregate(&[]), StackStatus::Removed);
        let web = state("web", "running", 0);
        let done = state("migrate", "exited", 0);
        assert_eq!(
            aggregate(&[web.clone(), done.clone()]),
            StackStatus::Running
        );
        assert_eq!(
            aggregate(std::slice::from_ref(&done)),
            StackStatus::Completed
        );
        assert_eq!(
            aggregate(&[web.clone(), state("db", "created", 0)]),
            StackStatus::Starting
        );
        assert_eq!(
            aggregate(&[
                web.clone(),
                state("db", "exited", 2),
                state("x", "created", 0)
            ]),
            StackStatus::Error("service db exited with code 2".into())
        );
        assert_eq!(
            aggregate(&[web.clone(), state("db", "removing", 0)]),
            StackStatus::Removing
        );
        // Podman's `stopped`: exited, not cleaned up yet.
        assert_eq!(
            aggregate(&[web.clone(), state("once", "stopped", 0)]),
            StackStatus::Running
        );
        assert_eq!(
            aggregate(&[web.clone(), state("once", "stopped", 3)]),
            StackStatus::Error("service once exited with code 3".into())
        );
        assert_eq!(
            aggregate(&[web, state("broken", "created", 127)]),
            StackStatus::Error("service broken failed to start (exit code 127)".into())
        );
        // A dead container with code 0 is neither running nor completed.
        assert_eq!(
            aggregate(&[done, state("x", "dead", 0)]),
            StackStatus::Starting
        );
    }
}
