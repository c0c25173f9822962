//! `stop`, `start` and `restart` of a project's existing containers, all of them or those of
//! the services named: dependents stopped before their dependencies, dependencies started and
//! restarted before their dependents (compose v2's `pkg/compose/stop.go`, `start.go`,
//! `restart.go`), each round of independent services side by side on a bounded worker set.
//! A service is started or restarted once its dependencies meet the conditions of its
//! `depends_on` label (healthy, completed successfully), as v2's `waitDependencies`, bounded as
//! `up` bounds them. Nothing is created: `up` does that.

use super::dependencies::{label_dependencies, wait_for};
use super::down::{name, reverse_dependency_rounds, service};
use super::error::{is_not_found, UpError};
use super::parallel;
use crate::compose::body;
use crate::docker::{Client, ContainerSummary};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Stop,
    Start,
    Restart,
}

/// Stops, starts or restarts the containers of `services` (every service when empty) of
/// `project_name`; a service named without a container is an error, as in compose.
pub fn lifecycle(
    docker: &Client,
    project_name: &str,
    services: &[String],
    what: Lifecycle,
) -> Result<(), UpError> {
    let project = project_name.to_lowercase();
    let filter = format!("{}={project}", body::PROJECT);
    let oneoff = format!("{}=False", body::ONEOFF);
    let all = docker.containers(true, &[("label", &filter), ("label", &oneoff)])?;
    let containers: Vec<ContainerSummary> = all
        .iter()
        .filter(|c| services.is_empty() || services.iter().any(|s| s == service(c)))
        .cloned()
        .collect();
    if let Some(missing) = services
        .iter()
        .find(|s| !containers.iter().any(|c| service(c) == s.as_str()))
    {
        return Err(UpError::Conflict(format!(
            "service {missing} has no container in project {project}: run up first"
        )));
    }
    let mut rounds = reverse_dependency_rounds(&containers);
    if what != Lifecycle::Stop {
        rounds.reverse();
    }
    for round in rounds {
        if what != Lifecycle::Stop {
            wait_dependencies(docker, &all, &round, what)?;
        }
        let results = parallel::map(&round, parallel::STOPS, |c| {
            let running = matches!(c.state.as_str(), "running" | "restarting" | "paused");
            let result = match what {
                Lifecycle::Stop if running => docker.stop_container(&c.id, None),
                Lifecycle::Start if !running => docker.start_container(&c.id),
                Lifecycle::Restart => docker.restart_container(&c.id, None),
                _ => return Ok(()),
            };
            match result {
                Ok(()) => {
                    log::info!("{what:?}: container {}", name(c));
                    Ok(())
                }
                Err(e) if what == Lifecycle::Stop && is_not_found(&e) => Ok(()),
                Err(e) => Err(UpError::Service {
                    service: service(c).to_owned(),
                    error: Box::new(UpError::Conflict(format!("container {}: {e}", name(c)))),
                }),
            }
        });
        results.into_iter().collect::<Result<(), UpError>>()?;
    }
    Ok(())
}

/// Before a round is started or restarted: each of its services waits for the conditions its
/// containers' `depends_on` label puts on their dependencies (for `restart`, only those with
/// `restart: true`, as v2's `restart.go`), when it has a container to act on.
fn wait_dependencies(
    docker: &Client,
    all: &[ContainerSummary],
    round: &[ContainerSummary],
    what: Lifecycle,
) -> Result<(), UpError> {
    let mut waited: Vec<&str> = Vec::new();
    for c in round {
        let running = matches!(c.state.as_str(), "running" | "restarting" | "paused");
        let key = service(c);
        if waited.contains(&key) || (what == Lifecycle::Start && running) {
            continue;
        }
        waited.push(key);
        let label = c.labels.get(body::DEPENDS_ON).map_or("", String::as_str);
        for (dep, condition, restart) in label_dependencies(label) {
            if what == Lifecycle::Restart && !restart {
                continue;
            }
            let ids: Vec<&str> = all
                .iter()
                .filter(|d| service(d) == dep)
                .map(|d| d.id.as_str())
                .collect();
            wait_for(docker, key, dep, &ids, condition).map_err(|e| UpError::Service {
                service: key.to_owned(),
                error: Box::new(UpError::Conflict(format!(
                    "depends_on {dep} ({}): {e}",
                    condition.as_str()
                ))),
            })?;
        }
    }
    Ok(())
}
