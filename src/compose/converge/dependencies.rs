//! Dependencies: the order services are planned in, which services cannot start because a
//! dependency failed, and whether a service's `depends_on` conditions are met (healthy within
//! its healthcheck's wait, or completed successfully), checked by inspecting the dependency's
//! containers, with a pause of [`POLL`](super::containers::POLL) between two checks that found it not ready
//! (compose v2's `waitDependencies`, `pkg/compose/convergence.go`).

use super::containers::{Action, Answer};
use super::error::UpError;
use super::Up;
use crate::compose::model::{Condition, Healthcheck, Project};
use crate::docker::{self, ContainerState};
use std::time::{Duration, Instant};

/// The shortest wait for a dependency to become healthy.
const HEALTHY_WAIT: Duration = Duration::from_secs(60);
/// The longest wait for a dependency to complete (`service_completed_successfully`).
const COMPLETION_WAIT: Duration = Duration::from_secs(300);

/// A check's answer.
type Answered = Result<Answer, docker::Error>;

impl Up {
    /// `key`'s dependencies that are services of the project.
    pub(super) fn dependencies<'a>(&'a self, key: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.project.services[key]
            .depends_on
            .keys()
            .filter(|d| self.project.services.contains_key(*d))
            .map(String::as_str)
    }

    /// `key` failed, or will not be started because a dependency did not.
    pub(super) fn finished(&self, key: &str) -> bool {
        self.failed.iter().any(|(s, _)| s == key) || self.blocked.iter().any(|s| s == key)
    }

    /// Services whose dependency failed are not started (compose does not visit them), and
    /// neither are theirs: in dependency order, one pass reaches them all.
    pub(super) fn block_dependents_of_failures(&mut self) {
        for key in self.order.clone() {
            if self.finished(&key) {
                continue;
            }
            let failed = self
                .dependencies(&key)
                .find(|d| self.finished(d))
                .map(str::to_owned);
            if let Some(dep) = failed {
                log::warn!("service {key} is not started: its dependency {dep} did not start");
                self.blocked.push(key);
            }
        }
    }

    /// Inspections of the dependencies' containers whose condition for `key` is not known to
    /// be met.
    pub(super) fn checks(&self, key: &str) -> Vec<Action> {
        let mut checks = Vec::new();
        for (dep, d) in &self.project.services[key].depends_on {
            let pair = (key.to_owned(), dep.clone());
            if d.condition == Condition::Started || self.satisfied.contains(&pair) {
                continue;
            }
            let scale = self.project.services.get(dep).map_or(0, |s| s.scale);
            checks.extend(
                self.observed
                    .iter()
                    .filter(|c| c.service == *dep && c.number <= scale)
                    .map(|c| Action::Check {
                        service: key.to_owned(),
                        dep: dep.clone(),
                        id: c.id.clone(),
                    }),
            );
        }
        checks
    }

    /// Records the answers of a step's checks, by `(service, dependency, answer)`: a condition
    /// met by every container is satisfied, one that cannot be met fails the service (or is
    /// passed over with a warning when the dependency is not required). Whether any was
    /// settled.
    pub(super) fn record_checks(
        &mut self,
        checks: Vec<(String, String, Answered)>,
    ) -> Result<bool, UpError> {
        let mut settled = false;
        let mut grouped: Vec<((String, String), Vec<Answered>)> = Vec::new();
        for (key, dep, answer) in checks {
            match grouped.iter_mut().find(|(p, _)| p.0 == key && p.1 == dep) {
                Some((_, answers)) => answers.push(answer),
                None => grouped.push(((key, dep), vec![answer])),
            }
        }
        for ((key, dep), answers) in grouped {
            let since = self.since(&key, &dep);
            let d = &self.project.services[&key].depends_on[&dep];
            let (condition, required) = (d.condition, d.required);
            let wait = self.healthy_wait(&dep);
            let mut verdict = Ok(true);
            for answer in answers {
                let state = match answer {
                    Ok(Answer::State(state)) => state,
                    Ok(_) => continue,
                    Err(e) => {
                        return Err(UpError::Service {
                            service: dep,
                            error: Box::new(e.into()),
                        })
                    }
                };
                verdict = condition_met(condition, &state, &dep, &key, since.elapsed(), wait);
                if verdict.as_ref().map_or(true, |met| !met) {
                    break;
                }
            }
            let pair = (key.clone(), dep.clone());
            match verdict {
                Ok(false) => continue,
                Ok(true) => self.satisfied.push(pair),
                Err(e) if !required => {
                    log::warn!("{key}: optional dependency: {e}");
                    self.satisfied.push(pair);
                }
                Err(e) => {
                    log::error!("service {key}: dependency failed to start: {e}");
                    self.failed
                        .push((key.clone(), format!("dependency failed to start: {e}")));
                }
            }
            self.waiting
                .retain(|(p, _)| *p != (key.clone(), dep.clone()));
            settled = true;
        }
        Ok(settled)
    }

    /// When `key` started waiting for `dep`.
    fn since(&mut self, key: &str, dep: &str) -> Instant {
        let pair = (key.to_owned(), dep.to_owned());
        match self.waiting.iter().find(|(p, _)| *p == pair) {
            Some((_, since)) => *since,
            None => {
                let now = Instant::now();
                self.waiting.push((pair, now));
                now
            }
        }
    }

    /// The wait for `dep` to become healthy ([`healthy_wait`]).
    fn healthy_wait(&self, dep: &str) -> Duration {
        healthy_wait(
            &self.project.services[dep]
                .healthcheck
                .clone()
                .unwrap_or_default(),
        )
    }
}

/// The wait for a service with healthcheck `h` to become healthy: its start period and retries
/// (Docker's defaults where unset: 30 s interval and timeout, 3 retries), at least
/// [`HEALTHY_WAIT`]. Saturating: a file's durations and retries can be as large as it likes.
pub(super) fn healthy_wait(h: &Healthcheck) -> Duration {
    let or = |ns: u64, default: u64| if ns == 0 { default } else { ns };
    let secs = 1_000_000_000;
    let interval = or(h.interval, 30 * secs);
    let timeout = or(h.timeout, 30 * secs);
    let retries = h.retries.unwrap_or(3).max(1);
    let ns = interval
        .saturating_add(timeout)
        .saturating_mul(retries)
        .saturating_add(h.start_period);
    HEALTHY_WAIT.max(Duration::from_nanos(ns))
}

/// The dependencies a container's `com.docker.compose.depends_on` label names
/// (`db:service_healthy:true,...`), as `(service, condition, restart)`; as compose v2's
/// `projectFromName` reads it (`pkg/compose/compose.go`), a missing restart flag is `true`
/// (and an unknown or missing condition is taken as `service_started` here).
pub(super) fn label_dependencies(label: &str) -> Vec<(&str, Condition, bool)> {
    label
        .split(',')
        .filter_map(|d| {
            let mut parts = d.split(':');
            let service = parts.next().filter(|s| !s.is_empty())?;
            let condition = match parts.next() {
                Some("service_healthy") => Condition::Healthy,
                Some("service_completed_successfully") => Condition::CompletedSuccessfully,
                _ => Condition::Started,
            };
            let restart = parts.next() != Some("false");
            Some((service, condition, restart))
        })
        .collect()
}

/// Waits until every container of `ids` (those of `dep`) meets `condition` for `dependent`, as
/// compose v2's `start` and `restart` do before starting a service (`waitDependencies`):
/// inspected every [`POLL`](super::containers::POLL), for at most the healthcheck's
/// [`healthy_wait`] or [`COMPLETION_WAIT`]. A dependency without containers is an error.
pub(super) fn wait_for(
    docker: &docker::Client,
    dependent: &str,
    dep: &str,
    ids: &[&str],
    condition: Condition,
) -> Result<(), UpError> {
    if condition == Condition::Started {
        return Ok(());
    }
    if ids.is_empty() {
        return Err(UpError::Conflict(format!(
            "{dependent} is missing dependency {dep}: run up first"
        )));
    }
    let since = Instant::now();
    loop {
        let mut met = true;
        for id in ids {
            let inspect = docker.inspect_container(id)?;
            let h = inspect.config.healthcheck.unwrap_or_default();
            let ns = |n: i64| u64::try_from(n).unwrap_or(0);
            let wait = healthy_wait(&Healthcheck {
                interval: ns(h.interval),
                timeout: ns(h.timeout),
                start_period: ns(h.start_period),
                retries: (h.retries > 0).then(|| ns(h.retries)),
                ..Healthcheck::default()
            });
            let state = &inspect.state;
            if !condition_met(condition, state, dep, dependent, since.elapsed(), wait)? {
                met = false;
                break;
            }
        }
        if met {
            return Ok(());
        }
        std::thread::sleep(super::containers::POLL);
    }
}

/// Whether one container of `dep` meets `condition` for `dependent`: `Ok(false)` while it may
/// still, an error once it cannot.
fn condition_met(
    condition: Condition,
    state: &ContainerState,
    dep: &str,
    dependent: &str,
    waited: Duration,
    healthy_wait: Duration,
) -> Result<bool, UpError> {
    let service = dep.to_owned();
    match condition {
        Condition::Healthy => match state.health.as_ref().map(|h| h.status.as_str()) {
            None => Err(UpError::NoHealthcheck {
                service,
                dependent: dependent.to_owned(),
            }),
            Some("healthy") => Ok(true),
            Some("unhealthy") => Err(UpError::Unhealthy {
                service,
                after: waited,
            }),
            _ if !state.running => Err(UpError::Exited {
                service,
                code: state.exit_code,
            }),
            _ if waited > healthy_wait => Err(UpError::Unhealthy {
                service,
                after: waited,
            }),
            _ => Ok(false),
        },
        Condition::CompletedSuccessfully => match state.status.as_str() {
            "exited" | "dead" if state.exit_code == 0 => Ok(true),
            "exited" | "dead" => Err(UpError::Exited {
                service,
                code: state.exit_code,
            }),
            _ if waited > COMPLETION_WAIT => Err(UpError::NotCompleted {
                service,
                after: waited,
            }),
            _ => Ok(false),
        },
        Condition::Started => Ok(true),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_on_labels_are_read_as_compose_reads_them() {
        assert_eq!(
            label_dependencies("db:service_healthy:false,init:service_completed_successfully:true,cache:service_started,old"),
            [
                ("db", Condition::Healthy, false),
                ("init", Condition::CompletedSuccessfully, true),
                ("cache", Condition::Started, true),
                ("old", Condition::Started, true),
            ]
        );
        assert!(label_dependencies("").is_empty());
    }

    #[test]
    fn healthy_wait_follows_the_healthcheck_and_saturates() {
        let h = |interval: u64, timeout: u64, retries: Option<u64>, start_period: u64| {
            healthy_wait(&Healthcheck {
                interval,
                timeout,
                retries,
                start_period,
                ..Healthcheck::default()
            })
        };
        let s = 1_000_000_000;
        // Docker's defaults: 3 × (30 s + 30 s).
        assert_eq!(h(0, 0, None, 0), Duration::from_secs(180));
        assert_eq!(h(s, s, Some(2), 0), HEALTHY_WAIT);
        assert_eq!(h(60 * s, 10 * s, Some(2), 5 * s), Duration::from_secs(145));
        // A file may say `interval: 2540400h` and `retries: 9223372036854775807`: no overflow.
        assert_eq!(
            h(u64::MAX / 2, u64::MAX / 2, Some(u64::MAX), u64::MAX),
            Duration::from_nanos(u64::MAX)
        );
        assert_eq!(h(1, 1, Some(u64::MAX), 0), Duration::from_nanos(u64::MAX));
    }
}
