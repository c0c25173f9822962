//! `down`: the project's containers, networks and (on request) volumes removed, found by the
//! project label.

use super::error::is_not_found;
use crate::compose::body;
use crate::docker::{self, Client};

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
    let gone = |r: Result<(), docker::Error>| match r {
        Err(e) if is_not_found(&e) => Ok(()),
        other => other,
    };
    for c in docker.containers(true, &[("label", &filter)])? {
        let name = c
            .names
            .first()
            .map_or(c.id.as_str(), |n| n.trim_start_matches('/'));
        if c.state == "running" || c.state == "restarting" || c.state == "paused" {
            gone(docker.stop_container(&c.id, None))?;
        }
        gone(docker.remove_container(&c.id, false, remove_volumes))?;
        log::info!("removed container {name}");
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
