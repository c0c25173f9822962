//! Dependencies: the order services are converged in, and whether a service's `depends_on`
//! conditions are met (started, healthy within its healthcheck's wait, or completed
//! successfully), one inspect or one pause of [`POLL`] per step.

use super::error::UpError;
use super::Up;
use crate::compose::model::{Condition, Project};
use crate::docker::Client;
use std::time::{Duration, Instant};

/// The pause between two checks of a dependency that is not ready yet (compose's 500 ms).
pub(super) const POLL: Duration = Duration::from_millis(500);
/// The shortest wait for a dependency to become healthy.
const HEALTHY_WAIT: Duration = Duration::from_secs(60);
/// The longest wait for a dependency to complete (`service_completed_successfully`).
const COMPLETION_WAIT: Duration = Duration::from_secs(300);

impl Up {
    /// Whether `key`'s dependencies meet their conditions; one inspect, or a pause, per call.
    pub(super) fn dependencies_ready(
        &mut self,
        docker: &Client,
        key: &str,
    ) -> Result<bool, UpError> {
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

/// Service keys with every service after its dependencies (load refused cycles), by name
/// otherwise.
pub(super) fn dependency_order(project: &Project) -> Vec<String> {
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
