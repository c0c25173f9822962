//! How the outcome of a step moves its stack on: the next phase, a retry with backoff, and the
//! statuses decided on the way.

use super::{Outcome, Phase, Reconciler, Seen, Stack, Work};
use super::{DEPLOY_RETRY, FETCH_RETRY, WAIT_CHECK, WATCH_EVERY};
use crate::portainer::stack_status::Status;
use crate::state::StackRecord;
use std::time::{Duration, Instant};

impl Reconciler {
    /// The outcome of `work`, done at `now`; `random` jitters retries.
    pub fn apply(&mut self, work: &Work, outcome: Outcome, now: Instant, random: u64) {
        let id = work.id();
        let Some(stack) = self.stacks.get_mut(&id) else {
            return;
        };
        self.turns += 1;
        stack.served = self.turns;
        // The poll changed the plan while the step ran: its outcome is moot.
        let expected = match (work, stack.phase) {
            (Work::Fetch { version, .. }, Phase::Fetch(v)) => *version == v,
            (Work::Load { .. }, Phase::Load)
            | (Work::Up { .. }, Phase::Up)
            | (Work::Check { .. }, Phase::Wait(_) | Phase::Watch)
            | (Work::Remove { .. }, Phase::Remove) => true,
            _ => false,
        };
        if !expected {
            return;
        }
        match (stack.phase, outcome) {
            (
                Phase::Fetch(version),
                Outcome::Fetched {
                    name,
                    project,
                    entry_file,
                    files_hash,
                },
            ) => {
                let project = project.and_then(|p| match self.project_owner(&p, id) {
                    Some(other) => Err(format!(
                        "the compose project name {p} is already used by edge stack {other}; give the stacks names that differ in more than case and punctuation"
                    )),
                    None => Ok(p),
                });
                let project = match project {
                    Ok(p) => p,
                    Err(why) => return self.refuse(id, version, why),
                };
                let Some(stack) = self.stacks.get_mut(&id) else {
                    return;
                };
                let same_version = stack.record.as_ref().map(|r| r.version) == Some(version);
                let record = stack.record.get_or_insert_with(StackRecord::default);
                let renamed = !record.project.is_empty() && record.project != project;
                if renamed {
                    log::warn!(
                        "edge stack {id}: renamed from {} to {project}; the old project is left as it is",
                        record.project
                    );
                }
                let (status, error) = if same_version {
                    (record.status, record.error.clone())
                } else {
                    // A new version starts a new history on the server.
                    (None, String::new())
                };
                *record = StackRecord {
                    version,
                    name,
                    project,
                    entry_file,
                    files_hash,
                    status,
                    error,
                    sent: record.sent,
                };
                stack.phase = Phase::Load;
                stack.due = now;
                stack.failures = 0;
                self.dirty = true;
                if same_version && record_status(stack).is_some() {
                    // Files lost on the device, same version: redeploy without a new history.
                    stack.quiet = true;
                } else {
                    stack.quiet = false;
                    self.decide(id, Status::Acknowledged, String::new());
                }
            }
            (Phase::Fetch(version), Outcome::Invalid(why)) => self.refuse(id, version, why),
            (Phase::Fetch(version), Outcome::Unreachable(why)) => {
                retry_later(
                    stack,
                    FETCH_RETRY,
                    now,
                    random,
                    format_args!("edge stack {id}: cannot get version {version} ({why})"),
                );
            }
            (Phase::Load, Outcome::Loaded { wait }) => {
                stack.wait_limit = wait;
                stack.phase = Phase::Up;
                stack.due = now;
                if !stack.quiet {
                    self.decide(id, Status::Deploying, String::new());
                }
            }
            (Phase::Load, Outcome::Invalid(why)) => {
                stack.phase = Phase::Broken;
                stack.quiet = false;
                log::error!("edge stack {id}: {why}");
                self.decide(id, Status::Error, why);
            }
            (Phase::Up, Outcome::Stepped) => stack.due = now,
            (Phase::Up, Outcome::Deployed) => {
                stack.phase = Phase::Wait(now + stack.wait_limit);
                stack.due = now + WAIT_CHECK;
                if !stack.quiet {
                    self.decide(id, Status::DeploymentReceived, String::new());
                }
            }
            (Phase::Load | Phase::Up, Outcome::Failed(why)) => {
                self.deploy_failed(id, why, now, random)
            }
            (Phase::Wait(deadline), outcome) => match outcome {
                Outcome::Seen(Seen::Running) => self.succeeded(id, Status::Running, now),
                Outcome::Seen(Seen::Completed) => self.succeeded(id, Status::Completed, now),
                Outcome::Seen(Seen::Error(why)) => self.deploy_failed(id, why, now, random),
                Outcome::Seen(Seen::Starting(what)) if now >= deadline => {
                    let limit = stack.wait_limit.as_secs();
                    self.deploy_failed(id, format!("{what} after {limit} s"), now, random)
                }
                Outcome::Seen(Seen::Gone) if now >= deadline => self.deploy_failed(
                    id,
                    "no container of the stack is left (removed outside the agent?)".into(),
                    now,
                    random,
                ),
                Outcome::Failed(why) if now >= deadline => self.deploy_failed(id, why, now, random),
                _ => stack.due = now + WAIT_CHECK,
            },
            (Phase::Watch, outcome) => {
                stack.due = now + WATCH_EVERY;
                match outcome {
                    Outcome::Seen(Seen::Running) => {
                        self.observed(id, Status::Running, String::new())
                    }
                    Outcome::Seen(Seen::Completed) => {
                        self.observed(id, Status::Completed, String::new())
                    }
                    Outcome::Seen(Seen::Error(why)) => self.observed(id, Status::Error, why),
                    Outcome::Seen(Seen::Gone) => {
                        log::warn!("edge stack {id}: its containers are gone; deploying it again");
                        stack.phase = Phase::Load;
                        stack.quiet = true;
                        stack.due = now;
                    }
                    Outcome::Failed(why) => log::debug!("edge stack {id}: check failed: {why}"),
                    _ => {}
                }
            }
            (Phase::Remove, Outcome::Removed) => {
                let name = stack
                    .record
                    .as_ref()
                    .map(|r| r.name.clone())
                    .unwrap_or_default();
                log::info!("edge stack {id} ({name}) removed");
                self.decide(id, Status::Removed, String::new());
                self.stacks.remove(&id);
                self.dirty = true;
            }
            (Phase::Remove, Outcome::Failed(why)) => {
                retry_later(
                    stack,
                    FETCH_RETRY,
                    now,
                    random,
                    format_args!("edge stack {id}: cannot remove it ({why})"),
                );
            }
            (phase, outcome) => {
                log::debug!("edge stack {id}: {outcome:?} ignored in {phase:?}");
            }
        }
    }

    fn project_owner(&self, project: &str, id: i64) -> Option<i64> {
        self.stacks
            .iter()
            .find(|(other, s)| {
                **other != id && s.record.as_ref().is_some_and(|r| r.project == project)
            })
            .map(|(other, _)| *other)
    }

    /// `version` cannot be deployed: status 2, and nothing more until another version. What
    /// runs from an earlier version keeps running (and its project is kept for removal).
    fn refuse(&mut self, id: i64, version: i64, why: String) {
        let Some(stack) = self.stacks.get_mut(&id) else {
            return;
        };
        log::error!("edge stack {id}: version {version} refused: {why}");
        let record = stack.record.get_or_insert_with(StackRecord::default);
        if record.version != version {
            record.status = None;
        }
        record.version = version;
        record.files_hash.clear();
        stack.phase = Phase::Broken;
        stack.quiet = false;
        self.dirty = true;
        self.decide(id, Status::Error, why);
    }

    fn deploy_failed(&mut self, id: i64, why: String, now: Instant, random: u64) {
        let Some(stack) = self.stacks.get_mut(&id) else {
            return;
        };
        stack.quiet = true;
        stack.phase = Phase::Load;
        retry_later(
            stack,
            DEPLOY_RETRY,
            now,
            random,
            format_args!("edge stack {id}: deploy failed: {why}"),
        );
        self.decide(id, Status::Error, why);
    }

    fn succeeded(&mut self, id: i64, status: Status, now: Instant) {
        let Some(stack) = self.stacks.get_mut(&id) else {
            return;
        };
        let last = record_status(stack);
        if stack.quiet && last != Some(status) {
            let missing: &[Status] = match last {
                Some(Status::Deploying) => &[Status::DeploymentReceived],
                Some(Status::DeploymentReceived | Status::Running | Status::Completed) => &[],
                _ => &[Status::Deploying, Status::DeploymentReceived],
            };
            for s in missing {
                self.decide(id, *s, String::new());
            }
        }
        let Some(stack) = self.stacks.get_mut(&id) else {
            return;
        };
        stack.quiet = false;
        stack.failures = 0;
        stack.phase = Phase::Watch;
        stack.due = now + WATCH_EVERY;
        self.decide(id, status, String::new());
    }

    /// A change seen while watching a deployed stack.
    fn observed(&mut self, id: i64, status: Status, error: String) {
        self.decide(id, status, error);
    }
}

fn record_status(stack: &Stack) -> Option<Status> {
    stack.record.as_ref().and_then(|r| r.status)
}

/// `base` plus full jitter up to `base × 2^(failures-1)`, at most `cap`.
fn backoff((base, cap): (Duration, Duration), failures: u32, random: u64) -> Duration {
    base + crate::system::backoff::full_jitter(
        base,
        failures.saturating_sub(1),
        cap.saturating_sub(base),
        random,
    )
}

/// One more failure of `stack`'s step: it is due again after a jittered wait from `schedule`.
/// The first failure in a row is a warning naming `what` failed and the wait; repeats are logged
/// at debug only.
fn retry_later(
    stack: &mut Stack,
    schedule: (Duration, Duration),
    now: Instant,
    random: u64,
    what: std::fmt::Arguments<'_>,
) {
    stack.failures += 1;
    let delay = backoff(schedule, stack.failures, random);
    stack.due = now + delay;
    let wait = crate::config::duration::display(delay);
    if stack.failures == 1 {
        log::warn!("{what}; trying again in {wait}");
    } else {
        log::debug!("{what}; trying again in {wait}");
    }
}

#[cfg(test)]
mod tests {
    use super::super::rig::{fetched, Run};
    use super::*;

    #[test]
    fn a_new_stack_goes_3_8_1_7_and_is_then_only_watched() {
        let mut run = Run::new();
        run.want(&[(1, 1)]);
        assert_eq!(run.r.next().unwrap().1, Work::Fetch { id: 1, version: 1 });
        run.deploy("web", Seen::Running);
        assert_eq!(run.statuses(), [(1, 3), (1, 8), (1, 1), (1, 7)]);
        let records = run.r.take_records().unwrap();
        assert_eq!(records[&1].project, "edge_web");
        assert_eq!(records[&1].status, Some(Status::Running));
        // The same list again changes nothing; the next step is a check 30 s later.
        run.want(&[(1, 1)]);
        let (due, work) = run.r.next().unwrap();
        assert_eq!(
            work,
            Work::Check {
                id: 1,
                project: "edge_web".into()
            }
        );
        assert_eq!(due - run.now, WATCH_EVERY);
        run.step(Outcome::Seen(Seen::Running));
        assert!(run.statuses().is_empty());
        assert!(run.r.take_records().is_none(), "nothing to write");
    }

    #[test]
    fn one_shot_services_complete_and_crashes_while_watched_are_reported() {
        let mut run = Run::new();
        run.want(&[(1, 1), (2, 1)]);
        run.step(fetched("a"));
        run.step(fetched("b"));
        run.statuses();
        let mut run2 = Run::new();
        run2.want(&[(5, 1)]);
        run2.deploy("job", Seen::Completed);
        assert_eq!(run2.statuses(), [(5, 3), (5, 8), (5, 1), (5, 13)]);
        let mut run3 = Run::new();
        run3.want(&[(6, 1)]);
        run3.deploy("web", Seen::Running);
        run3.statuses();
        run3.step(Outcome::Seen(Seen::Error(
            "service web exited with code 3".into(),
        )));
        run3.step(Outcome::Seen(Seen::Error(
            "service web exited with code 3".into(),
        )));
        assert_eq!(run3.statuses(), [(6, 2)]);
        assert_eq!(run3.record(6).error, "service web exited with code 3");
        run3.step(Outcome::Seen(Seen::Running));
        assert_eq!(run3.statuses(), [(6, 7)]);
    }

    #[test]
    fn a_failed_deploy_reports_once_retries_quietly_then_reports_success() {
        let mut run = Run::new();
        run.want(&[(1, 1)]);
        run.step(fetched("web"));
        run.step(Outcome::Loaded {
            wait: Duration::from_secs(60),
        });
        let missing = "image \"x:1\" is not on this device and cannot be pulled: no registry";
        run.step(Outcome::Failed(missing.into()));
        assert_eq!(run.statuses(), [(1, 3), (1, 8), (1, 2)]);
        // The retry comes 30 s to 60 s later, loading again without a status.
        let (due, work) = run.r.next().unwrap();
        assert!(matches!(work, Work::Load { .. }));
        assert!(due - run.now >= DEPLOY_RETRY.0, "{:?}", due - run.now);
        run.step(Outcome::Loaded {
            wait: Duration::from_secs(60),
        });
        run.step(Outcome::Failed(missing.into()));
        assert!(
            run.statuses().is_empty(),
            "the same failure is not reported again"
        );
        run.step(Outcome::Loaded {
            wait: Duration::from_secs(60),
        });
        run.step(Outcome::Failed("Docker is busy".into()));
        assert_eq!(run.statuses(), [(1, 2)], "a new cause is");
        run.step(Outcome::Loaded {
            wait: Duration::from_secs(60),
        });
        run.step(Outcome::Deployed);
        run.step(Outcome::Seen(Seen::Running));
        assert_eq!(run.statuses(), [(1, 8), (1, 1), (1, 7)]);
    }

    #[test]
    fn waiting_gives_up_at_the_limit_with_what_was_starting() {
        let mut run = Run::new();
        run.want(&[(1, 1)]);
        run.step(fetched("web"));
        run.step(Outcome::Loaded {
            wait: Duration::from_secs(90),
        });
        run.step(Outcome::Deployed);
        run.statuses();
        for _ in 0..89 {
            run.step(Outcome::Seen(Seen::Starting("service db unhealthy".into())));
        }
        assert!(run.statuses().is_empty());
        run.step(Outcome::Seen(Seen::Starting("service db unhealthy".into())));
        run.step(Outcome::Seen(Seen::Starting("service db unhealthy".into())));
        assert_eq!(run.statuses(), [(1, 2)]);
        assert_eq!(run.record(1).error, "service db unhealthy after 90 s");
    }

    #[test]
    fn a_new_version_supersedes_the_deploy_in_progress() {
        let mut run = Run::new();
        run.want(&[(1, 1)]);
        run.step(fetched("web"));
        run.step(Outcome::Loaded {
            wait: Duration::ZERO,
        });
        let (_, up) = run.r.next().unwrap();
        run.want(&[(1, 2)]);
        // The step that was running when the poll came is moot.
        run.r.apply(&up, Outcome::Deployed, run.now, 0);
        assert_eq!(run.r.next().unwrap().1, Work::Fetch { id: 1, version: 2 });
        run.deploy("web", Seen::Running);
        assert_eq!(
            run.statuses(),
            [(1, 3), (1, 8), (1, 3), (1, 8), (1, 1), (1, 7)]
        );
        assert_eq!(run.record(1).version, 2);
    }

    #[test]
    fn refused_versions_wait_for_the_next_one() {
        let mut run = Run::new();
        run.want(&[(1, 1)]);
        run.step(Outcome::Invalid(
            "file name \"/etc/passwd\" is absolute".into(),
        ));
        assert_eq!(run.statuses(), [(1, 2)]);
        assert!(run.r.next().is_none());
        run.want(&[(1, 2)]);
        run.step(fetched("web"));
        run.step(Outcome::Invalid(
            "docker-compose.yml line 3: unknown key \"imgae\"".into(),
        ));
        assert_eq!(run.statuses(), [(1, 3), (1, 2)]);
        assert!(run.r.next().is_none());
        // The same error text for a new version is a new report.
        run.want(&[(1, 3)]);
        run.step(fetched("web"));
        run.step(Outcome::Invalid(
            "docker-compose.yml line 3: unknown key \"imgae\"".into(),
        ));
        assert_eq!(run.statuses(), [(1, 3), (1, 2)]);
    }

    #[test]
    fn project_names_must_differ_after_normalisation() {
        let mut run = Run::new();
        run.want(&[(1, 1), (2, 1)]);
        run.step(fetched("web"));
        run.step(fetched("web"));
        assert_eq!(run.statuses(), [(1, 3), (2, 2)]);
        assert!(run.record(2).error.contains("already used by edge stack 1"));
        let mut run = Run::new();
        run.want(&[(3, 1)]);
        run.step(Outcome::Fetched {
            name: "".into(),
            project: Err("no letter or digit in the name".into()),
            entry_file: "docker-compose.yml".into(),
            files_hash: "1".into(),
        });
        assert_eq!(run.statuses(), [(3, 2)]);
    }

    #[test]
    fn fetch_failures_retry_without_status() {
        let mut run = Run::new();
        run.want(&[(1, 1)]);
        run.step(Outcome::Unreachable("HTTP 503".into()));
        run.step(Outcome::Unreachable("HTTP 503".into()));
        assert!(run.statuses().is_empty());
        let (due, _) = run.r.next().unwrap();
        assert!(due > run.now);
        run.step(fetched("web"));
        assert_eq!(run.statuses(), [(1, 3)]);
    }
}
