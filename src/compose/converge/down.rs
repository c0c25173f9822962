//! `down`: the project's containers, networks and (on request) volumes removed, found by the
//! project label. Containers go in reverse dependency order, read from their
//! `com.docker.compose.depends_on` label (compose v2's `InReverseDependencyOrder`,
//! `pkg/compose/down.go`): the services nothing left depends on together, on a bounded worker
//! set, so that containers slow to stop wait out their grace periods side by side.

use super::error::is_not_found;
use super::parallel;
use crate::compose::body;
use crate::docker::{self, Client, ContainerSummary};

/// Stops and removes the project's containers (each with its own stop signal and grace
/// period), then its networks, and with `remove_volumes` its volumes (anonymous ones too).
/// Whatever is already gone is not an error.
pub fn down(
    docker: &Client,
    project_name: &str,
    remove_volumes: bool,
) -> Result<(), docker::Error> {
    let project = project_name.to_lowercase();
    let filter = format!("{}={project}", body::PROJECT);
    let containers = docker.containers(true, &[("label", &filter)])?;
    for round in reverse_dependency_rounds(&containers) {
        let results = parallel::map(&round, parallel::STOPS, |c| {
            if matches!(c.state.as_str(), "running" | "restarting" | "paused") {
                gone(docker.stop_container(&c.id, None))?;
            }
            gone(docker.remove_container(&c.id, false, remove_volumes))?;
            log::info!("removed container {}", name(c));
            Ok(())
        });
        results.into_iter().collect::<Result<(), docker::Error>>()?;
    }
    for n in docker.networks(&[("label", &filter)])? {
        gone(docker.remove_network(&n.id))?;
        log::info!("removed network {}", n.name);
    }
    if remove_volumes {
        for v in docker.volumes(&[("label", &filter)])? {
            gone(docker.remove_volume(&v.name))?;
            log::info!("removed volume {}", v.name);
        }
    }
    Ok(())
}

fn gone(r: Result<(), docker::Error>) -> Result<(), docker::Error> {
    match r {
        Err(e) if is_not_found(&e) => Ok(()),
        other => other,
    }
}

pub(super) fn name(c: &ContainerSummary) -> &str {
    c.names
        .first()
        .map_or(c.id.as_str(), |n| n.trim_start_matches('/'))
}

/// The services a container's `depends_on` label names (`db:service_started:false,...`).
fn depends_on(c: &ContainerSummary) -> Vec<&str> {
    c.labels
        .get(body::DEPENDS_ON)
        .map(|l| {
            l.split(',')
                .filter_map(|d| d.split(':').next())
                .filter(|d| !d.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn service(c: &ContainerSummary) -> &str {
    c.labels.get(body::SERVICE).map_or("", String::as_str)
}

/// The containers in rounds: each round holds the services no container left after it
/// depends on (a dependency cycle, which load refuses, ends in one last round).
pub(super) fn reverse_dependency_rounds(
    containers: &[ContainerSummary],
) -> Vec<Vec<ContainerSummary>> {
    let mut left: Vec<&ContainerSummary> = containers.iter().collect();
    let mut rounds = Vec::new();
    while !left.is_empty() {
        let needed = |c: &&ContainerSummary| {
            left.iter()
                .any(|o| service(o) != service(c) && depends_on(o).contains(&service(c)))
        };
        let (mut round, rest): (Vec<&ContainerSummary>, Vec<&ContainerSummary>) =
            left.iter().partition(|c| !needed(c));
        if round.is_empty() {
            round = rest.clone();
        }
        left.retain(|c| !round.iter().any(|r| r.id == c.id));
        rounds.push(round.into_iter().cloned().collect());
    }
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, service: &str, depends_on: &str) -> ContainerSummary {
        let mut c = ContainerSummary {
            id: id.into(),
            ..ContainerSummary::default()
        };
        c.labels.insert(body::SERVICE.into(), service.into());
        c.labels.insert(body::DEPENDS_ON.into(), depends_on.into());
        c
    }

    #[test]
    fn dependents_go_before_their_dependencies_independent_ones_together() {
        let containers = [
            container("db1", "db", ""),
            container(
                "web1",
                "web",
                "db:service_healthy:false,cache:service_started:false",
            ),
            container("web2", "web", "db:service_healthy:false"),
            container("cache1", "cache", ""),
            container("solo1", "solo", ""),
        ];
        let ids: Vec<Vec<String>> = reverse_dependency_rounds(&containers)
            .into_iter()
            .map(|r| r.into_iter().map(|c| c.id).collect())
            .collect();
        assert_eq!(ids, [vec!["web1", "web2", "solo1"], vec!["db1", "cache1"]]);
    }
}
