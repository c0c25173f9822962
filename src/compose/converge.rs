//! `up` as a level-triggered reconciler: observe the project's containers by label, then take
//! one step at a time (one bounded Docker call, or a wait of at most [`POLL`]) toward the file:
//! images, networks, volumes, then each service in dependency order (remove what is outdated,
//! wait for its dependencies' conditions, create, connect, start), then orphans. A converge
//! interrupted at any step is completed by the next `up`, which observes again. And `down`.

use super::body;
use super::model::{Condition, MountType, Project};
use crate::docker::{self, Client, Limits};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// The pause between two checks of a dependency that is not ready yet (compose's 500 ms).
const POLL: Duration = Duration::from_millis(500);
/// The shortest wait for a dependency to become healthy.
const HEALTHY_WAIT: Duration = Duration::from_secs(60);
/// The longest wait for a dependency to complete (`service_completed_successfully`).
const COMPLETION_WAIT: Duration = Duration::from_secs(300);
/// The longest silence of a pull's progress stream.
const PULL_IDLE: Duration = Duration::from_secs(120);
/// Observations of the project allowed in one converge (a create conflict observes again).
const MAX_OBSERVE: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    Done,
}

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
        }
    }
}

impl std::error::Error for UpError {}

impl From<docker::Error> for UpError {
    fn from(e: docker::Error) -> Self {
        UpError::Docker(Box::new(e))
    }
}

/// A container of the project as listed.
#[derive(Debug, Clone)]
struct Observed {
    id: String,
    name: String,
    service: String,
    number: u32,
    hash: String,
    image: String,
    running: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Observe,
    Images(usize),
    Networks(usize),
    Volumes(usize),
    Services(usize),
    Orphans,
    Done,
}

/// A container's place: its service and number.
type Slot = (String, u32);

/// One converge of a project; see the module doc. Drop it to abandon the converge.
pub struct Up {
    project: Project,
    /// Service keys, dependencies first.
    order: Vec<String>,
    /// Distinct images with their pull policy (`always` if any service says so).
    images: Vec<(String, String)>,
    phase: Phase,
    observed: Vec<Observed>,
    observations: u32,
    /// Images, networks and volumes are done.
    prepared: bool,
    image_ids: BTreeMap<String, String>,
    pulled: Vec<(String, Duration)>,
    /// `(network, connect body)` still to do for a created container, before it starts.
    connects: Vec<(String, serde_json::Value)>,
    /// Anonymous volumes (target → volume name) of a container being recreated, by service and
    /// number, for its successor (compose's `inherit`).
    inherited: Vec<(Slot, Vec<(String, String)>)>,
    /// `(service, dependency)` pairs known to be satisfied.
    satisfied: Vec<(String, String)>,
    waiting: Option<(String, Instant)>,
    calls: usize,
    changes: usize,
}

fn is_not_found(e: &docker::Error) -> bool {
    matches!(e, docker::Error::Docker { status: 404, .. })
}

fn is_conflict(e: &docker::Error) -> bool {
    matches!(e, docker::Error::Docker { status: 409, .. })
}

impl Up {
    pub fn new(project: &Project) -> Up {
        let mut images: Vec<(String, String)> = Vec::new();
        for s in project.services.values() {
            match images.iter_mut().find(|(i, _)| *i == s.image) {
                Some((_, policy)) if s.pull_policy == "always" => *policy = s.pull_policy.clone(),
                Some(_) => {}
                None => images.push((s.image.clone(), s.pull_policy.clone())),
            }
        }
        Up {
            order: dependency_order(project),
            project: project.clone(),
            images,
            phase: Phase::Observe,
            observed: Vec::new(),
            observations: 0,
            prepared: false,
            image_ids: BTreeMap::new(),
            pulled: Vec::new(),
            connects: Vec::new(),
            inherited: Vec::new(),
            satisfied: Vec::new(),
            waiting: None,
            calls: 0,
            changes: 0,
        }
    }

    /// Docker calls made so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Calls that changed something (pull, create, connect, start, stop, remove).
    pub fn changes(&self) -> usize {
        self.changes
    }

    /// The next step toward the file.
    pub fn step(&mut self, docker: &Client) -> Result<Step, UpError> {
        match self.phase {
            Phase::Observe => self.observe(docker)?,
            Phase::Images(i) => self.image(docker, i)?,
            Phase::Networks(i) => self.network(docker, i)?,
            Phase::Volumes(i) => self.volume(docker, i)?,
            Phase::Services(i) => self.service(docker, i)?,
            Phase::Orphans => self.orphan(docker)?,
            Phase::Done => return Ok(Step::Done),
        }
        Ok(if self.phase == Phase::Done {
            Step::Done
        } else {
            Step::Continue
        })
    }

    fn call<T>(
        &mut self,
        change: bool,
        f: impl FnOnce() -> Result<T, docker::Error>,
    ) -> Result<T, docker::Error> {
        self.calls += 1;
        self.changes += usize::from(change);
        f()
    }

    fn observe(&mut self, docker: &Client) -> Result<(), UpError> {
        self.observations += 1;
        if self.observations > MAX_OBSERVE {
            return Err(UpError::Conflict(format!(
                "project {}: containers keep changing under us (another compose running?)",
                self.project.name
            )));
        }
        let filter = format!("{}={}", body::PROJECT, self.project.name);
        let oneoff = format!("{}=False", body::ONEOFF);
        let listed = self.call(false, || {
            docker.containers(true, &[("label", &filter), ("label", &oneoff)])
        })?;
        self.observed = listed
            .into_iter()
            .filter_map(|c| {
                let label = |k: &str| c.labels.get(k).cloned();
                Some(Observed {
                    name: c
                        .names
                        .first()
                        .map(|n| n.trim_start_matches('/').to_owned())
                        .unwrap_or_default(),
                    service: label(body::SERVICE)?,
                    number: label(body::NUMBER)?.parse().ok()?,
                    hash: label(body::CONFIG_HASH)?,
                    image: label(body::IMAGE).unwrap_or_default(),
                    running: c.state == "running" || c.state == "restarting",
                    id: c.id,
                })
            })
            .collect();
        // Images, networks and volumes are done once per converge; after a re-observation the
        // services are taken again from the first.
        self.phase = if self.prepared {
            Phase::Services(0)
        } else {
            Phase::Images(0)
        };
        Ok(())
    }

    /// Resolves image `i` to its id; pulls it when missing (or `pull_policy: always`).
    fn image(&mut self, docker: &Client, i: usize) -> Result<(), UpError> {
        let Some((image, policy)) = self.images.get(i).cloned() else {
            self.phase = Phase::Networks(0);
            return Ok(());
        };
        let pulled = self.pulled.iter().any(|(i, _)| *i == image);
        if policy == "always" && !pulled {
            return self.pull(docker, &image);
        }
        match self.call(false, || docker.inspect_image(&image)) {
            Ok(inspect) => {
                if let Some((_, took)) = self.pulled.iter().find(|(i, _)| *i == image) {
                    let (mb, ms) = (inspect.size.max(0) / 100_000, took.as_millis() / 100);
                    log::info!(
                        "pulled image {image} ({}.{} MB, {}.{} s)",
                        mb / 10,
                        mb % 10,
                        ms / 10,
                        ms % 10
                    );
                }
                self.image_ids.insert(image, inspect.id);
                self.phase = Phase::Images(i + 1);
                Ok(())
            }
            Err(e) if is_not_found(&e) && policy == "never" => Err(UpError::Pull {
                image,
                message: "it is not on this machine and pull_policy is never".into(),
            }),
            Err(e) if is_not_found(&e) && !pulled => self.pull(docker, &image),
            Err(e) => Err(e.into()),
        }
    }

    fn pull(&mut self, docker: &Client, image: &str) -> Result<(), UpError> {
        let started = Instant::now();
        let (name, tag) = split_reference(image);
        let streaming = docker.with_limits(Limits {
            stream_idle: Some(PULL_IDLE),
            ..Limits::default()
        });
        let failed = |message: String| UpError::Pull {
            image: image.to_owned(),
            message,
        };
        let progress = self
            .call(true, || streaming.pull(name, tag, None))
            .map_err(|e| failed(docker_message(&e)))?;
        for item in progress {
            item.map_err(|e| failed(docker_message(&e)))?;
        }
        self.pulled.push((image.to_owned(), started.elapsed()));
        Ok(())
    }

    fn network(&mut self, docker: &Client, i: usize) -> Result<(), UpError> {
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

    fn volume(&mut self, docker: &Client, i: usize) -> Result<(), UpError> {
        let Some((key, volume)) = self
            .project
            .volumes
            .iter()
            .nth(i)
            .map(|(k, v)| (k.clone(), v.clone()))
        else {
            self.prepared = true;
            self.phase = Phase::Services(0);
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

    fn up_to_date(&self, c: &Observed) -> bool {
        let Some(s) = self.project.services.get(&c.service) else {
            return false;
        };
        c.number <= s.scale
            && c.hash == s.config_hash()
            && self.image_ids.get(&s.image) == Some(&c.image)
    }

    fn service(&mut self, docker: &Client, i: usize) -> Result<(), UpError> {
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
        let hash = s.config_hash();
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

    fn orphan(&mut self, docker: &Client) -> Result<(), UpError> {
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

    /// Whether `key`'s dependencies meet their conditions; one inspect, or a pause, per call.
    fn dependencies_ready(&mut self, docker: &Client, key: &str) -> Result<bool, UpError> {
        let deps = self.project.services[key].depends_on.clone();
        for (dep, d) in deps {
            let pair = (key.to_owned(), dep.clone());
            if self.satisfied.contains(&pair) || d.condition == Condition::Started {
                continue;
            }
            let Some(c) = self.observed.iter().find(|c| c.service == dep).cloned() else {
                self.satisfied.push(pair);
                continue;
            };
            let state = self.call(false, || docker.inspect_container(&c.id))?.state;
            let since = match &self.waiting {
                Some((name, since)) if *name == dep => *since,
                _ => {
                    let now = Instant::now();
                    self.waiting = Some((dep.clone(), now));
                    now
                }
            };
            let ready = match d.condition {
                Condition::Healthy => match state.health.as_ref().map(|h| h.status.as_str()) {
                    None => Err(UpError::NoHealthcheck {
                        service: dep.clone(),
                        dependent: key.to_owned(),
                    }),
                    Some("healthy") => Ok(true),
                    Some("unhealthy") => Err(UpError::Unhealthy {
                        service: dep.clone(),
                        after: since.elapsed(),
                    }),
                    _ if !state.running => Err(UpError::Exited {
                        service: dep.clone(),
                        code: state.exit_code,
                    }),
                    _ if since.elapsed() > self.healthy_wait(&dep) => Err(UpError::Unhealthy {
                        service: dep.clone(),
                        after: since.elapsed(),
                    }),
                    _ => Ok(false),
                },
                Condition::CompletedSuccessfully => match state.status.as_str() {
                    "exited" | "dead" if state.exit_code == 0 => Ok(true),
                    "exited" | "dead" => Err(UpError::Exited {
                        service: dep.clone(),
                        code: state.exit_code,
                    }),
                    _ if since.elapsed() > COMPLETION_WAIT => Err(UpError::NotCompleted {
                        service: dep.clone(),
                        after: since.elapsed(),
                    }),
                    _ => Ok(false),
                },
                Condition::Started => Ok(true),
            };
            match ready {
                Ok(true) => {
                    self.waiting = None;
                    self.satisfied.push(pair);
                    continue;
                }
                Ok(false) => {
                    std::thread::sleep(POLL);
                    return Ok(false);
                }
                Err(e) if !d.required => {
                    log::warn!("{key}: optional dependency: {e}");
                    self.waiting = None;
                    self.satisfied.push(pair);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The wait for `dep` to become healthy: its healthcheck's start period and retries
    /// (Docker's defaults where unset: 30 s interval and timeout, 3 retries), at least a minute.
    fn healthy_wait(&self, dep: &str) -> Duration {
        let h = self.project.services[dep]
            .healthcheck
            .clone()
            .unwrap_or_default();
        let or = |ns: u64, default: u64| if ns == 0 { default } else { ns };
        let secs = 1_000_000_000;
        let interval = or(h.interval, 30 * secs);
        let timeout = or(h.timeout, 30 * secs);
        let retries = h.retries.unwrap_or(3).max(1);
        let ns = h.start_period + (interval + timeout) * retries;
        HEALTHY_WAIT.max(Duration::from_nanos(ns))
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

/// Docker's own message, without the call.
fn docker_message(e: &docker::Error) -> String {
    match e {
        docker::Error::Docker { message, .. } | docker::Error::Failed { message, .. } => {
            message.clone()
        }
        other => other.to_string(),
    }
}

/// `registry:5000/a/b:tag` → (`registry:5000/a/b`, `tag`); a digest is the tag Docker takes;
/// no tag is `latest`.
fn split_reference(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    let last = image.rfind('/').map_or(0, |i| i + 1);
    match image[last..].rfind(':') {
        Some(at) => (&image[..last + at], &image[last + at + 1..]),
        None => (image, "latest"),
    }
}

/// Service keys with every service after its dependencies (load refused cycles), by name
/// otherwise.
fn dependency_order(project: &Project) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    while order.len() < project.services.len() {
        let before = order.len();
        for (key, s) in &project.services {
            if !order.contains(key)
                && s.depends_on
                    .keys()
                    .all(|d| order.contains(d) || !project.services.contains_key(d))
            {
                order.push(key.clone());
            }
        }
        if order.len() == before {
            // A cycle slipped through: the rest in name order.
            order.extend(
                project
                    .services
                    .keys()
                    .filter(|k| !order.contains(k))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
    }
    order
}

/// Runs [`Up`] to the end.
pub fn up(docker: &Client, project: &Project) -> Result<(), UpError> {
    let mut up = Up::new(project);
    while up.step(docker)? == Step::Continue {}
    Ok(())
}

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

    #[test]
    fn image_references_split_as_docker_pulls_them() {
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(split_reference("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_reference("registry.lan:5000/a/b"),
            ("registry.lan:5000/a/b", "latest")
        );
        assert_eq!(
            split_reference("registry.lan:5000/a/b:2"),
            ("registry.lan:5000/a/b", "2")
        );
        assert_eq!(split_reference("a/b@sha256:abc"), ("a/b", "sha256:abc"));
    }
}
