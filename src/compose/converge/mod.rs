//! `up` as a level-triggered reconciler: observe the project's containers by label, then take
//! one step at a time toward the file: [`images`], then [`networks_volumes`] (one bounded
//! Docker call a step), then the services and the orphans ([`containers`]: each step makes
//! every call the dependency graph allows now, at most [`parallel::CALLS`] at once, or waits
//! at most [`POLL`](containers::POLL) for a dependency's condition). A converge interrupted
//! at any step is completed by the next `up`, which observes again. And [`down()`].

mod containers;
mod dependencies;
mod down;
mod error;
mod images;
mod lifecycle;
mod networks_volumes;
pub(super) mod parallel;

pub use down::down;
pub use error::UpError;
pub use images::pull;
pub use lifecycle::{lifecycle, Lifecycle};

use super::body;
use super::model::Project;
use crate::docker::{self, ApiVersion, Client};
use dependencies::dependency_order;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Observations of the project allowed in one converge (a create conflict observes again).
const MAX_OBSERVE: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    Done,
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
    Services,
    Orphans,
    Done,
}

/// A container's place: its service and number.
type Slot = (String, u32);

/// A network to connect a created container of `service` to, before it starts.
#[derive(Debug, Clone)]
struct Connect {
    service: String,
    network: String,
    /// The `POST /networks/{network}/connect` body, which names the container.
    config: serde_json::Value,
}

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
    /// Networks still to connect created containers to.
    connects: Vec<Connect>,
    /// Anonymous volumes (target → volume name) of a container being recreated, by service and
    /// number, for its successor (compose's `inherit`).
    inherited: Vec<(Slot, Vec<(String, String)>)>,
    /// `(service, dependency)` pairs known to be satisfied.
    satisfied: Vec<(String, String)>,
    /// When each `(service, dependency)` pair being checked was first checked.
    waiting: Vec<((String, String), Instant)>,
    /// Services that failed to start, with why.
    failed: Vec<(String, String)>,
    /// Services not started because a dependency failed.
    blocked: Vec<String>,
    /// The Engine API version, for create bodies.
    api: ApiVersion,
    calls: usize,
    changes: usize,
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
            waiting: Vec::new(),
            failed: Vec::new(),
            blocked: Vec::new(),
            api: docker::API_VERSION,
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
            Phase::Services => {
                self.api = docker.api_version();
                self.services(docker)?
            }
            Phase::Orphans => self.orphans(docker)?,
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
        self.failed.clear();
        self.blocked.clear();
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
            Phase::Services
        } else {
            Phase::Images(0)
        };
        Ok(())
    }
}

/// Runs [`Up`] to the end.
pub fn up(docker: &Client, project: &Project) -> Result<(), UpError> {
    let mut up = Up::new(project);
    while up.step(docker)? == Step::Continue {}
    Ok(())
}
