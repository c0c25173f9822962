//! The services and orphans steps. Each step plans, from what is observed, every Docker call
//! that can be made now ([`Action`]), runs them on a bounded worker set ([`parallel`]), then
//! records the answers. A service's containers are replaced (outdated or surplus ones stopped
//! and removed, anonymous volumes kept for the successor) and created once its dependencies'
//! containers exist, connected to their other networks, and started once its dependencies
//! have started and met their conditions (compose v2's `InDependencyOrder`, with independent
//! services side by side). A service that fails to start does not stop the others: its
//! dependents are not started, and `up` reports it at the end. Then containers of services no
//! longer in the file are removed.

use super::error::{is_conflict, is_not_found, UpError};
use super::{parallel, Connect, Observed, Phase, Up};
use crate::compose::model::MountType;
use crate::compose::{body, hash};
use crate::docker::{self, Client, ContainerState};

/// The pause between two checks of a dependency that is not ready yet (compose's 500 ms).
pub(super) const POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// One Docker call a step can make.
#[derive(Debug, Clone)]
pub(super) enum Action {
    /// Reads the anonymous volumes of an outdated container before it goes.
    Inherit(Observed),
    Stop(Observed),
    Remove(Observed, &'static str),
    Create(Box<Create>),
    Connect(Connect),
    Start(Observed),
    /// Inspects container `id` of `dep`, for the condition `service` puts on it.
    Check {
        service: String,
        dep: String,
        id: String,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Create {
    service: String,
    number: u32,
    name: String,
    config: serde_json::Value,
}

/// A call's answer, read by [`Up::record`].
pub(super) enum Answer {
    Done,
    Mounts(Vec<(String, String)>),
    Created(docker::Created),
    /// The create's name is taken: by a container of this project (`true`) or not.
    NameTaken(bool),
    /// Start says not found (Docker's words): the container still exists (something it needs
    /// is gone), or not.
    Missing(bool, String),
    State(ContainerState),
}

impl Up {
    fn up_to_date(&self, c: &Observed) -> bool {
        let Some(s) = self.project.services.get(&c.service) else {
            return false;
        };
        c.number <= s.scale
            && c.hash == hash::config_hash(&self.project, s)
            && self.image_ids.get(&s.image) == Some(&c.image)
    }

    /// Every container of `key` exists, is up to date and connected.
    pub(super) fn created(&self, key: &str) -> bool {
        let scale = self.project.services.get(key).map_or(0, |s| s.scale);
        let mine = |c: &&Observed| c.service == key;
        self.observed
            .iter()
            .filter(mine)
            .all(|c| self.up_to_date(c))
            && (1..=scale).all(|n| self.observed.iter().filter(mine).any(|c| c.number == n))
            && !self.connects.iter().any(|c| c.service == key)
    }

    /// `key` is created and all its containers were started.
    pub(super) fn started(&self, key: &str) -> bool {
        self.created(key) && self.observed.iter().all(|c| c.service != key || c.running)
    }

    /// The calls that can be made now for the services, in dependency order. As compose
    /// creates every service's containers before it starts any (`create`, then `start`), a
    /// service whose dependency failed is still created, only not started.
    fn plan(&mut self) -> Vec<Action> {
        self.block_dependents_of_failures();
        let mut actions = Vec::new();
        for key in self.order.clone() {
            if !self.dependencies(&key).all(|d| self.created(d)) {
                continue;
            }
            let before = actions.len();
            self.replace_and_create(&key, &mut actions);
            if actions.len() == before {
                actions.extend(
                    self.connects
                        .iter()
                        .filter(|c| c.service == key)
                        .cloned()
                        .map(Action::Connect),
                );
            }
            if actions.len() == before && !self.finished(&key) && !self.started(&key) {
                self.start(&key, &mut actions);
            } else if actions.len() == before
                && !self.finished(&key)
                && self.dependencies(&key).all(|d| self.started(d))
            {
                // A running service's conditions are checked too, as v2's start phase
                // (`startService` calls `waitDependencies` whatever the containers' state);
                // a service already failed or blocked is not checked again.
                actions.extend(self.checks(&key));
            }
        }
        actions
    }

    fn replace_and_create(&self, key: &str, actions: &mut Vec<Action>) {
        let s = &self.project.services[key];
        let anonymous = s
            .volumes
            .iter()
            .any(|m| m.kind == MountType::Volume && m.source.is_empty());
        let before = actions.len();
        for c in self.observed.iter().filter(|c| c.service == key) {
            if self.up_to_date(c) {
                continue;
            }
            let slot = (key.to_owned(), c.number);
            actions.push(
                if anonymous
                    && c.number <= s.scale
                    && !self.inherited.iter().any(|(s, _)| *s == slot)
                {
                    Action::Inherit(c.clone())
                } else if c.running {
                    Action::Stop(c.clone())
                } else {
                    Action::Remove(c.clone(), "recreating")
                },
            );
        }
        if actions.len() > before {
            return;
        }
        for number in 1..=s.scale {
            if !self
                .observed
                .iter()
                .any(|c| c.service == key && c.number == number)
            {
                actions.push(Action::Create(Box::new(self.create_body(key, number))));
            }
        }
    }

    fn create_body(&self, key: &str, number: u32) -> Create {
        let s = &self.project.services[key];
        let image_id = self.image_ids.get(&s.image).cloned().unwrap_or_default();
        let mut config = body::container(&self.project, key, number, &image_id, self.api);
        let slot = (key.to_owned(), number);
        if let Some((_, volumes)) = self.inherited.iter().find(|(s, _)| *s == slot) {
            inherit_anonymous_volumes(&mut config, volumes);
        }
        Create {
            service: key.to_owned(),
            number,
            name: body::container_name(&self.project.name, key, s, number),
            config,
        }
    }

    /// Starts `key`'s stopped containers once every dependency has started and met its
    /// condition; checks the conditions not known to be met first.
    fn start(&mut self, key: &str, actions: &mut Vec<Action>) {
        if !self.dependencies(key).all(|d| self.started(d)) {
            return;
        }
        let checks = self.checks(key);
        if !checks.is_empty() {
            actions.extend(checks);
            return;
        }
        actions.extend(
            self.observed
                .iter()
                .filter(|c| c.service == key && !c.running)
                .cloned()
                .map(Action::Start),
        );
    }

    pub(super) fn services(&mut self, docker: &Client) -> Result<(), UpError> {
        let actions = self.plan();
        if actions.is_empty() {
            self.phase = Phase::Orphans;
            return Ok(());
        }
        self.run(docker, actions)
    }

    pub(super) fn orphans(&mut self, docker: &Client) -> Result<(), UpError> {
        let actions: Vec<Action> = self
            .observed
            .iter()
            .filter(|c| {
                !self.project.services.contains_key(&c.service)
                    && !self.project.disabled.contains(&c.service)
            })
            .map(|c| match c.running {
                true => Action::Stop(c.clone()),
                false => Action::Remove(c.clone(), "orphan"),
            })
            .collect();
        if !actions.is_empty() {
            return self.run(docker, actions);
        }
        self.phase = Phase::Done;
        match self.failed.is_empty() {
            true => Ok(()),
            false => Err(UpError::NotStarted(std::mem::take(&mut self.failed))),
        }
    }

    /// Makes the calls side by side, then records their answers; the first error that stops
    /// the converge is returned once every answer is recorded. A step that only found
    /// dependencies not ready yet waits [`POLL`] before the next.
    fn run(&mut self, docker: &Client, actions: Vec<Action>) -> Result<(), UpError> {
        let only_checks = actions.iter().all(|a| matches!(a, Action::Check { .. }));
        self.calls += actions.len();
        self.changes += actions
            .iter()
            .filter(|a| !matches!(a, Action::Inherit(_) | Action::Check { .. }))
            .count();
        let answers = parallel::map(&actions, parallel::CALLS, |a| call(docker, a));
        let mut first_error = None;
        let mut checks = Vec::new();
        for (action, answer) in actions.into_iter().zip(answers) {
            let recorded = match (action, answer) {
                (Action::Check { service, dep, .. }, answer) => {
                    checks.push((service, dep, answer));
                    Ok(())
                }
                (action, answer) => self.record(action, answer),
            };
            if let Err(e) = recorded {
                first_error.get_or_insert(e);
            }
        }
        if !checks.is_empty() && !self.record_checks(checks)? && only_checks {
            std::thread::sleep(POLL);
        }
        first_error.map_or(Ok(()), Err)
    }

    fn record(
        &mut self,
        action: Action,
        answer: Result<Answer, docker::Error>,
    ) -> Result<(), UpError> {
        let at = |observed: &[Observed], id: &str| observed.iter().position(|o| o.id == id);
        match (action, answer) {
            (Action::Inherit(c), Ok(Answer::Mounts(volumes))) => {
                self.inherited.push(((c.service, c.number), volumes));
            }
            (Action::Stop(c), Ok(_)) => {
                if let Some(i) = at(&self.observed, &c.id) {
                    self.observed[i].running = false;
                }
            }
            (Action::Remove(c, why), Ok(_)) => {
                log::info!("{why}: removed container {}", c.name);
                self.observed.retain(|o| o.id != c.id);
            }
            (Action::Create(create), Ok(Answer::Created(created))) => {
                let Create {
                    service,
                    number,
                    name,
                    ..
                } = *create;
                for warning in &created.warnings {
                    log::warn!("container {name}: {warning}");
                }
                log::info!("created container {name}");
                let s = &self.project.services[&service];
                for (network, config) in
                    body::later_networks(&self.project, &service, number, self.api)
                {
                    self.connects.push(Connect {
                        service: service.clone(),
                        network,
                        config,
                    });
                }
                self.observed.push(Observed {
                    id: created.id,
                    name,
                    number,
                    hash: hash::config_hash(&self.project, s),
                    image: self.image_ids.get(&s.image).cloned().unwrap_or_default(),
                    running: false,
                    service,
                });
            }
            (Action::Create(create), Ok(Answer::NameTaken(false))) => {
                return Err(UpError::Conflict(format!(
                    "service {}: the container name {} is taken by a container of another project: remove or rename it",
                    create.service, create.name
                )));
            }
            (Action::Connect(c), Ok(_)) => self
                .connects
                .retain(|o| o.network != c.network || o.config != c.config),
            (Action::Start(c), Ok(Answer::Done)) => {
                log::info!("started container {}", c.name);
                if let Some(i) = at(&self.observed, &c.id) {
                    self.observed[i].running = true;
                }
            }
            // Removed meanwhile, or something it needs is gone (a network removed since it
            // was created): observe again, and in the second case make networks and volumes
            // again first.
            (Action::Start(c), Ok(Answer::Missing(exists, why))) => {
                if exists {
                    log::info!("container {} cannot start ({why}): checking the project's networks and volumes again", c.name);
                    self.prepared = false;
                }
                self.phase = Phase::Observe;
            }
            (Action::Start(c), Err(e)) => {
                log::error!(
                    "service {}: container {} failed to start: {e}",
                    c.service,
                    c.name
                );
                let message = format!("container {} failed to start: {e}", c.name);
                self.failed.push((c.service, message));
            }
            // A name taken by one of ours, a container gone: observe again.
            (Action::Create(_), Ok(_)) | (_, Ok(_)) => self.phase = Phase::Observe,
            (Action::Create(c), Err(e)) => {
                return Err(UpError::Service {
                    service: c.service,
                    error: Box::new(e.into()),
                })
            }
            (Action::Inherit(c) | Action::Stop(c) | Action::Remove(c, _), Err(e)) => {
                return Err(UpError::Service {
                    service: c.service,
                    error: Box::new(e.into()),
                })
            }
            (Action::Connect(c), Err(e)) => {
                return Err(UpError::Service {
                    service: c.service,
                    error: Box::new(e.into()),
                })
            }
            (Action::Check { .. }, _) => {}
        }
        Ok(())
    }
}

/// One call; what is already gone is not an error for stop and remove.
fn call(docker: &Client, action: &Action) -> Result<Answer, docker::Error> {
    let gone = |r: Result<(), docker::Error>| match r {
        Err(e) if !is_not_found(&e) => Err(e),
        _ => Ok(Answer::Done),
    };
    match action {
        Action::Inherit(c) => match docker.inspect_container(&c.id) {
            Ok(inspect) => Ok(Answer::Mounts(
                inspect
                    .mounts
                    .into_iter()
                    .filter(|m| m.kind == "volume")
                    .map(|m| (m.destination, m.name))
                    .collect(),
            )),
            Err(e) if is_not_found(&e) => Ok(Answer::Mounts(Vec::new())),
            Err(e) => Err(e),
        },
        Action::Stop(c) => gone(docker.stop_container(&c.id, None)),
        Action::Remove(c, _) => gone(docker.remove_container(&c.id, false, false)),
        Action::Create(c) => match docker.create_container(Some(&c.name), &c.config) {
            Ok(created) => Ok(Answer::Created(created)),
            Err(e) if is_conflict(&e) => {
                let ours = docker.inspect_container(&c.name).map_or(true, |other| {
                    other.config.labels.get(body::PROJECT).map(String::as_str)
                        == c.config["Labels"][body::PROJECT].as_str()
                });
                Ok(Answer::NameTaken(ours))
            }
            Err(e) => Err(e),
        },
        Action::Connect(c) => docker
            .connect_network(&c.network, &c.config)
            .map(|()| Answer::Done),
        Action::Start(c) => match docker.start_container(&c.id) {
            Ok(()) => Ok(Answer::Done),
            Err(e) if is_not_found(&e) => Ok(Answer::Missing(
                docker.inspect_container(&c.id).is_ok(),
                e.to_string(),
            )),
            Err(e) => Err(e),
        },
        Action::Check { id, .. } => docker.inspect_container(id).map(|i| Answer::State(i.state)),
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
