//! The services and orphans steps: for each service in dependency order, outdated or surplus
//! containers stopped and removed (anonymous volumes kept for the successor), then each missing
//! container created once its dependencies are ready, connected to its other networks, and
//! started; then containers of services no longer in the file removed.

use super::error::{is_conflict, is_not_found, UpError};
use super::{Observed, Phase, Up};
use crate::compose::body;
use crate::compose::model::MountType;
use crate::docker::{self, Client};

impl Up {
    fn up_to_date(&self, c: &Observed) -> bool {
        let Some(s) = self.project.services.get(&c.service) else {
            return false;
        };
        c.number <= s.scale
            && c.hash == s.config_hash(&self.project)
            && self.image_ids.get(&s.image) == Some(&c.image)
    }

    pub(super) fn service(&mut self, docker: &Client, i: usize) -> Result<(), UpError> {
        let Some(key) = self.order.get(i).cloned() else {
            self.phase = Phase::Orphans;
            return Ok(());
        };
        let scale = self.project.services[&key].scale;
        // Outdated or surplus containers go first: stopped, then removed.
        if let Some(c) = self
            .observed
            .iter()
            .find(|c| c.service == key && !self.up_to_date(c))
            .cloned()
        {
            let slot = (key.clone(), c.number);
            let anonymous = self.project.services[&key]
                .volumes
                .iter()
                .any(|m| m.kind == MountType::Volume && m.source.is_empty());
            if anonymous && c.number <= scale && !self.inherited.iter().any(|(s, _)| *s == slot) {
                let mounts = match self.call(false, || docker.inspect_container(&c.id)) {
                    Ok(inspect) => inspect.mounts,
                    Err(e) if is_not_found(&e) => Vec::new(),
                    Err(e) => return Err(e.into()),
                };
                let volumes = mounts
                    .into_iter()
                    .filter(|m| m.kind == "volume")
                    .map(|m| (m.destination, m.name))
                    .collect();
                self.inherited.push((slot, volumes));
                return Ok(());
            }
            return self.remove(docker, &c, "recreating");
        }
        let pending = (1..=scale).find(|n| {
            !self
                .observed
                .iter()
                .any(|c| c.service == key && c.number == *n && c.running)
        });
        let Some(number) = pending else {
            self.phase = Phase::Services(i + 1);
            return Ok(());
        };
        if !self.dependencies_ready(docker, &key)? {
            return Ok(());
        }
        let existing = self
            .observed
            .iter()
            .position(|c| c.service == key && c.number == number);
        let Some(at) = existing else {
            return self.create(docker, &key, number);
        };
        if let Some((network, config)) = self.connects.pop() {
            self.call(true, || docker.connect_network(&network, &config))?;
            return Ok(());
        }
        let (id, name) = (self.observed[at].id.clone(), self.observed[at].name.clone());
        match self.call(true, || docker.start_container(&id)) {
            Ok(()) => {
                log::info!("started container {name}");
                self.observed[at].running = true;
            }
            // Removed meanwhile, or something it needs is gone (a network removed since it
            // was created): observe again, and in the second case make networks and volumes
            // again first.
            Err(e) if is_not_found(&e) => {
                if self.call(false, || docker.inspect_container(&id)).is_ok() {
                    log::info!("container {name} cannot start ({e}): checking the project's networks and volumes again");
                    self.prepared = false;
                }
                self.phase = Phase::Observe;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    fn create(&mut self, docker: &Client, key: &str, number: u32) -> Result<(), UpError> {
        let s = &self.project.services[key];
        let image_id = self.image_ids.get(&s.image).cloned().unwrap_or_default();
        let name = body::container_name(&self.project.name, key, s, number);
        let hash = s.config_hash(&self.project);
        let api = docker.api_version();
        let mut config = body::container(&self.project, key, number, &image_id, api);
        let slot = (key.to_owned(), number);
        if let Some((_, volumes)) = self.inherited.iter().find(|(s, _)| *s == slot) {
            inherit_anonymous_volumes(&mut config, volumes);
        }
        match self.call(true, || docker.create_container(Some(&name), &config)) {
            Ok(created) => {
                for warning in &created.warnings {
                    log::warn!("container {name}: {warning}");
                }
                log::info!("created container {name}");
                self.connects = body::later_networks(&self.project, key, number, api);
                self.observed.push(Observed {
                    id: created.id,
                    name,
                    service: key.to_owned(),
                    number,
                    hash,
                    image: image_id,
                    running: false,
                });
                Ok(())
            }
            // The name is taken: by one of ours (observe again), or by another container.
            Err(e) if is_conflict(&e) => {
                match self.call(false, || docker.inspect_container(&name)) {
                    Ok(other)
                        if other.config.labels.get(body::PROJECT) != Some(&self.project.name) =>
                    {
                        Err(UpError::Conflict(format!(
                            "the container name {name} is taken by a container of another project: remove or rename it"
                        )))
                    }
                    _ => {
                        self.phase = Phase::Observe;
                        Ok(())
                    }
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Stops `c` (one step), then removes it (the next).
    fn remove(&mut self, docker: &Client, c: &Observed, why: &str) -> Result<(), UpError> {
        let at = self.observed.iter().position(|o| o.id == c.id);
        let result = if c.running {
            self.call(true, || docker.stop_container(&c.id, None))
        } else {
            self.call(true, || docker.remove_container(&c.id, false, false))
        };
        match result {
            Ok(()) | Err(docker::Error::Docker { status: 404, .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(at) = at {
            if c.running {
                self.observed[at].running = false;
            } else {
                log::info!("{why}: removed container {}", c.name);
                self.observed.remove(at);
            }
        }
        Ok(())
    }

    pub(super) fn orphan(&mut self, docker: &Client) -> Result<(), UpError> {
        let orphan = self
            .observed
            .iter()
            .find(|c| {
                !self.project.services.contains_key(&c.service)
                    && !self.project.disabled.contains(&c.service)
            })
            .cloned();
        match orphan {
            Some(c) => self.remove(docker, &c, "orphan"),
            None => {
                self.phase = Phase::Done;
                Ok(())
            }
        }
    }
}

/// Gives the anonymous volume mounts of a create body the volumes the previous container had
/// at the same targets, so that recreating keeps their data.
fn inherit_anonymous_volumes(config: &mut serde_json::Value, volumes: &[(String, String)]) {
    let Some(mounts) = config["HostConfig"]["Mounts"].as_array_mut() else {
        return;
    };
    for mount in mounts {
        let anonymous = mount["Type"] == "volume" && mount.get("Source").is_none();
        let target = mount["Target"].as_str().unwrap_or_default().to_owned();
        if let Some((_, name)) = volumes
            .iter()
            .find(|(t, _)| *t == target)
            .filter(|_| anonymous)
        {
            mount["Source"] = serde_json::json!(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recreated_containers_keep_their_anonymous_volumes() {
        let mut config = serde_json::json!({"HostConfig": {"Mounts": [
            {"Type": "volume", "Target": "/cache"},
            {"Type": "volume", "Source": "p_data", "Target": "/data"},
            {"Type": "bind", "Source": "/srv", "Target": "/srv"},
        ]}});
        inherit_anonymous_volumes(
            &mut config,
            &[
                ("/cache".into(), "abc123".into()),
                ("/data".into(), "other".into()),
            ],
        );
        assert_eq!(
            config["HostConfig"]["Mounts"],
            serde_json::json!([
                {"Type": "volume", "Source": "abc123", "Target": "/cache"},
                {"Type": "volume", "Source": "p_data", "Target": "/data"},
                {"Type": "bind", "Source": "/srv", "Target": "/srv"},
            ])
        );
    }
}
