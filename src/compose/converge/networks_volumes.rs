//! The networks and volumes steps: each of the project's networks, then volumes, inspected by
//! name and created when missing; an external one must exist, a network of the same name made
//! for another key is a conflict, a volume made by someone else is used with a warning.

use super::error::{is_conflict, is_not_found, UpError};
use super::{Phase, Up};
use crate::compose::body;
use crate::docker::Client;

impl Up {
    pub(super) fn network(&mut self, docker: &Client, i: usize) -> Result<(), UpError> {
        let Some((key, network)) = self
            .project
            .networks
            .iter()
            .nth(i)
            .map(|(k, n)| (k.clone(), n.clone()))
        else {
            self.phase = Phase::Volumes(0);
            return Ok(());
        };
        match self.call(false, || docker.inspect_network(&network.name)) {
            Ok(found) => {
                if !network.external {
                    let label = found.labels.get(body::NETWORK).map_or("", String::as_str);
                    if found.labels.contains_key(body::PROJECT) && label != key {
                        return Err(UpError::Conflict(format!(
                            "network {} exists with label {}={label:?}, not {key:?}: remove it or declare it external: true",
                            network.name,
                            body::NETWORK
                        )));
                    }
                }
                self.phase = Phase::Networks(i + 1);
            }
            Err(e) if is_not_found(&e) && network.external => {
                return Err(UpError::Conflict(format!(
                    "network {} is declared external but does not exist: create it (docker network create {})",
                    network.name, network.name
                )))
            }
            Err(e) if is_not_found(&e) => {
                let config = body::network(&self.project, &key);
                match self.call(true, || docker.create_network(&config)) {
                    // Created by someone else meanwhile: inspect again.
                    Err(e) if is_conflict(&e) => {}
                    Err(e) => return Err(e.into()),
                    Ok(_) => log::info!("created network {}", network.name),
                }
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    pub(super) fn volume(&mut self, docker: &Client, i: usize) -> Result<(), UpError> {
        let Some((key, volume)) = self
            .project
            .volumes
            .iter()
            .nth(i)
            .map(|(k, v)| (k.clone(), v.clone()))
        else {
            self.prepared = true;
            self.phase = Phase::Services;
            return Ok(());
        };
        match self.call(false, || docker.inspect_volume(&volume.name)) {
            Ok(found) => {
                match found.labels.get(body::PROJECT) {
                    _ if volume.external => {}
                    None => log::warn!(
                        "volume {} exists but was not created by compose: using it (declare it external: true)",
                        volume.name
                    ),
                    Some(p) if *p != self.project.name => log::warn!(
                        "volume {} belongs to project {p}: using it (declare it external: true)",
                        volume.name
                    ),
                    Some(_) => {}
                }
                self.phase = Phase::Volumes(i + 1);
            }
            Err(e) if is_not_found(&e) && volume.external => {
                return Err(UpError::Conflict(format!(
                    "volume {} is declared external but does not exist: create it (docker volume create {})",
                    volume.name, volume.name
                )))
            }
            Err(e) if is_not_found(&e) => {
                let config = body::volume(&self.project, &key);
                self.call(true, || docker.create_volume(&config))?;
                log::info!("created volume {}", volume.name);
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}
