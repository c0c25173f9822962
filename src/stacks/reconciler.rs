//! The edge stack reconciler as a pure state machine: it compares what Portainer wants (the
//! poll's `[{ID, Version}]`) with what this agent has done (the persisted records) and names
//! the next bounded step of one stack ([`Work`]); the I/O shell (`super::run`) does it and hands
//! back the [`Outcome`]. Stacks take turns, so none waits for another longer than one step.
//! Statuses are emitted on transitions only, each once: a retried deploy reports nothing until
//! it succeeds (then 8, 1, 7) or fails differently.

use crate::portainer::poll_response::{StackRef, MAX_STACKS};
use crate::portainer::stack_status::Status;
use crate::state::StackRecord;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A failed payload fetch or removal: retried from 5 s up to 5 min.
const FETCH_RETRY: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(300));
/// A failed deploy: retried from 30 s up to 30 min while the version stays.
const DEPLOY_RETRY: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(1800));
/// While waiting for a deployed stack to run: a check per second, as libstack does.
pub const WAIT_CHECK: Duration = Duration::from_secs(1);
/// Once it runs: one check per stack per 30 s.
pub const WATCH_EVERY: Duration = Duration::from_secs(30);

/// The next step of one stack, for the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Get the payload of `version`, write the stack folder, name the project.
    Fetch { id: i64, version: i64 },
    /// Load the compose project from the folder and begin deploying it.
    Load {
        id: i64,
        project: String,
        entry_file: String,
    },
    /// One Docker call of the deploy begun by `Load`.
    Up { id: i64 },
    /// List the project's containers.
    Check { id: i64, project: String },
    /// Take the project down (when there is one) and remove the folder.
    Remove { id: i64, project: String },
}

impl Work {
    pub fn id(&self) -> i64 {
        match self {
            Work::Fetch { id, .. }
            | Work::Load { id, .. }
            | Work::Up { id }
            | Work::Check { id, .. }
            | Work::Remove { id, .. } => *id,
        }
    }
}

/// What a [`Work`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The folder is written; `project` is `edge_<name>` normalised, or why it cannot be.
    Fetched {
        name: String,
        project: Result<String, String>,
        entry_file: String,
        files_hash: String,
    },
    /// The payload or the compose file is refused: status 2 until a new version.
    Invalid(String),
    /// Could not fetch (server, link): tried again later, nothing reported.
    Unreachable(String),
    /// The project loaded; waiting for it to run may take this long.
    Loaded { wait: Duration },
    /// The deploy made one step and has more to do.
    Stepped,
    /// The deploy is done.
    Deployed,
    /// The deploy, the check or the removal failed in a way that may pass (Docker busy, an
    /// image missing): retried with backoff.
    Failed(String),
    /// What the containers of the project say.
    Seen(Seen),
    /// The project is down and the folder gone.
    Removed,
}

/// The project's containers, aggregated as libstack does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not yet running: what is still starting (for the message if it never does).
    Starting(String),
    Running,
    Completed,
    Error(String),
    /// No container at all.
    Gone,
}

/// A status to send, as decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub id: i64,
    pub version: i64,
    pub status: Status,
    pub error: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Fetch(i64),
    Load,
    Up,
    /// Deployed, waiting until this instant for it to run.
    Wait(Instant),
    Watch,
    /// This version cannot be deployed; nothing to do until another one.
    Broken,
    Remove,
}

#[derive(Debug)]
struct Stack {
    record: Option<StackRecord>,
    phase: Phase,
    due: Instant,
    /// Failed attempts at the current step (fetch, deploy or removal).
    failures: u32,
    /// Retrying a deploy: only a success or a new error is reported.
    quiet: bool,
    wait_limit: Duration,
    /// When this stack was last served: among stacks due at once, the one served longest ago
    /// goes first.
    served: u64,
}

pub struct Reconciler {
    stacks: BTreeMap<i64, Stack>,
    turns: u64,
    decided: Vec<Decided>,
    dirty: bool,
}

impl Reconciler {
    /// Picks up where the records say the agent was. `folder_exists(id)` tells whether a
    /// stack's files are still on disk. Statuses decided but not accepted by Portainer before
    /// the stop are sent again; nothing else is.
    pub fn new(
        records: BTreeMap<i64, StackRecord>,
        folder_exists: impl Fn(i64) -> bool,
        now: Instant,
    ) -> Reconciler {
        let mut decided = Vec::new();
        let stacks = records
            .into_iter()
            .map(|(id, record)| {
                if let Some(status) = record.status.filter(|s| record.sent != Some(*s)) {
                    decided.push(Decided {
                        id,
                        version: record.version,
                        status,
                        error: record.error.clone(),
                    });
                }
                let has_files = !record.files_hash.is_empty() && folder_exists(id);
                let (phase, quiet) = match record.status {
                    Some(Status::Removing | Status::Removed) => (Phase::Remove, false),
                    Some(Status::Error) if record.files_hash.is_empty() => (Phase::Broken, false),
                    _ if !has_files => (Phase::Fetch(record.version), false),
                    Some(Status::Running | Status::Completed) => (Phase::Watch, false),
                    Some(Status::Acknowledged) => (Phase::Load, false),
                    _ => (Phase::Load, true),
                };
                let stack = Stack {
                    record: Some(record),
                    phase,
                    due: now,
                    failures: 0,
                    quiet,
                    wait_limit: Duration::ZERO,
                    served: 0,
                };
                (id, stack)
            })
            .collect();
        Reconciler {
            stacks,
            turns: 0,
            decided,
            dirty: false,
        }
    }

    /// A poll's stack list: new and changed versions are fetched (a step in progress for an
    /// older version is given up at once), stacks no longer listed are removed. A list that is
    /// not `complete` (cut at [`MAX_STACKS`]) removes nothing, and takes new stacks only while
    /// fewer than that are here.
    pub fn desire(&mut self, wanted: &[StackRef], complete: bool, now: Instant) {
        let listed: BTreeMap<i64, i64> = wanted.iter().map(|s| (s.id, s.version)).collect();
        let ids: Vec<i64> = self.stacks.keys().copied().collect();
        for id in ids {
            if listed.contains_key(&id) || !complete {
                continue;
            }
            let Some(stack) = self.stacks.get_mut(&id) else {
                continue;
            };
            match &stack.record {
                None => {
                    self.stacks.remove(&id);
                }
                Some(_) if stack.phase == Phase::Remove => {}
                Some(record) => {
                    log::info!(
                        "edge stack {id} ({}) is no longer assigned: removing it",
                        record.name
                    );
                    stack.phase = Phase::Remove;
                    stack.due = now;
                    stack.failures = 0;
                    self.decide(id, Status::Removing, String::new());
                }
            }
        }
        for (&id, &version) in &listed {
            if !complete && !self.stacks.contains_key(&id) && self.stacks.len() >= MAX_STACKS {
                continue;
            }
            let stack = self.stacks.entry(id).or_insert_with(|| Stack {
                record: None,
                phase: Phase::Fetch(version),
                due: now,
                failures: 0,
                quiet: false,
                wait_limit: Duration::ZERO,
                served: 0,
            });
            let current = stack.record.as_ref().map(|r| r.version);
            let fetching = stack.phase == Phase::Fetch(version);
            let removing = stack.phase == Phase::Remove;
            if (current != Some(version) || removing) && !fetching {
                log::info!("edge stack {id}: version {version} to deploy");
                stack.phase = Phase::Fetch(version);
                stack.due = now;
                stack.failures = 0;
                stack.quiet = false;
            }
        }
    }

    /// The stack step due first, and when it is due.
    pub fn next(&self) -> Option<(Instant, Work)> {
        self.stacks
            .iter()
            .filter_map(|(&id, s)| {
                let record = s.record.as_ref();
                let project = || record.map(|r| r.project.clone()).unwrap_or_default();
                let work = match s.phase {
                    Phase::Fetch(version) => Work::Fetch { id, version },
                    Phase::Load => Work::Load {
                        id,
                        project: project(),
                        entry_file: record.map(|r| r.entry_file.clone()).unwrap_or_default(),
                    },
                    Phase::Up => Work::Up { id },
                    Phase::Wait(_) | Phase::Watch => Work::Check {
                        id,
                        project: project(),
                    },
                    Phase::Remove => Work::Remove {
                        id,
                        project: project(),
                    },
                    Phase::Broken => return None,
                };
                Some(((s.due, s.served), work))
            })
            .min_by_key(|(order, _)| *order)
            .map(|((due, _), work)| (due, work))
    }

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

    /// Statuses decided since the last call, in order.
    pub fn take_decided(&mut self) -> Vec<Decided> {
        std::mem::take(&mut self.decided)
    }

    /// The records when they changed since the last call.
    pub fn take_records(&mut self) -> Option<BTreeMap<i64, StackRecord>> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        Some(
            self.stacks
                .iter()
                .filter_map(|(id, s)| s.record.clone().map(|r| (*id, r)))
                .collect(),
        )
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

    /// Records and emits a status unless it is the one last decided.
    fn decide(&mut self, id: i64, status: Status, error: String) {
        let Some(stack) = self.stacks.get_mut(&id) else {
            return;
        };
        let refused = stack.phase == Phase::Broken;
        let Some(record) = stack.record.as_mut() else {
            return;
        };
        if record.status == Some(status) && record.error == error {
            return;
        }
        let name = if record.name.is_empty() {
            String::new()
        } else {
            format!(" ({})", record.name)
        };
        match status {
            // `refuse` logged it, saying that the version waits for another.
            Status::Error if refused => {}
            Status::Error => {
                log::warn!("edge stack {id}{name} v{}: error: {error}", record.version)
            }
            _ => log::info!("edge stack {id}{name} v{}: {status}", record.version),
        }
        record.status = Some(status);
        record.error.clone_from(&error);
        self.dirty = true;
        self.decided.push(Decided {
            id,
            version: record.version,
            status,
            error,
        });
    }
}

fn record_status(stack: &Stack) -> Option<Status> {
    stack.record.as_ref().and_then(|r| r.status)
}

/// `base` plus full jitter up to `base × 2^(failures-1)`, at most `cap`.
fn backoff((base, cap): (Duration, Duration), failures: u32, random: u64) -> Duration {
    base + crate::poller::backoff::full_jitter(
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
    use super::*;

    struct Run {
        r: Reconciler,
        now: Instant,
    }

    fn refs(list: &[(i64, i64)]) -> Vec<StackRef> {
        list.iter()
            .map(|&(id, version)| StackRef { id, version })
            .collect()
    }

    fn fetched(name: &str) -> Outcome {
        Outcome::Fetched {
            name: name.into(),
            project: Ok(format!("edge_{name}")),
            entry_file: "docker-compose.yml".into(),
            files_hash: "00000000000000aa".into(),
        }
    }

    impl Run {
        fn new() -> Run {
            Run::with(BTreeMap::new())
        }

        fn with(records: BTreeMap<i64, StackRecord>) -> Run {
            let now = Instant::now();
            Run {
                r: Reconciler::new(records, |_| true, now),
                now,
            }
        }

        fn want(&mut self, list: &[(i64, i64)]) {
            self.r.desire(&refs(list), true, self.now);
        }

        /// Runs the next step when it is due (jumping the clock forward), with `outcome`.
        fn step(&mut self, outcome: Outcome) -> Work {
            let (due, work) = self.r.next().expect("work to do");
            self.now = self.now.max(due);
            self.r.apply(&work, outcome, self.now, 0);
            work
        }

        fn statuses(&mut self) -> Vec<(i64, u8)> {
            self.r
                .take_decided()
                .iter()
                .map(|d| (d.id, d.status as u8))
                .collect()
        }

        /// A stack through a clean deploy up to `final_seen`.
        fn deploy(&mut self, name: &str, final_seen: Seen) {
            self.step(fetched(name));
            self.step(Outcome::Loaded {
                wait: Duration::from_secs(60),
            });
            self.step(Outcome::Stepped);
            self.step(Outcome::Deployed);
            self.step(Outcome::Seen(Seen::Starting("service web starting".into())));
            self.step(Outcome::Seen(final_seen));
        }

        fn record(&mut self, id: i64) -> StackRecord {
            self.r
                .stacks
                .get(&id)
                .and_then(|s| s.record.clone())
                .unwrap()
        }
    }

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
    fn stacks_take_turns() {
        let mut run = Run::new();
        run.want(&[(1, 1), (2, 1)]);
        let first = run.step(fetched("a"));
        let second = run.step(fetched("b"));
        assert_eq!((first.id(), second.id()), (1, 2));
        run.step(Outcome::Loaded {
            wait: Duration::ZERO,
        });
        run.step(Outcome::Loaded {
            wait: Duration::ZERO,
        });
        let ids: Vec<i64> = (0..4).map(|_| run.step(Outcome::Stepped).id()).collect();
        assert_eq!(ids, [1, 2, 1, 2]);
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
    fn unassigned_stacks_are_removed_9_then_4_and_forgotten() {
        let mut run = Run::new();
        run.want(&[(1, 1), (2, 1)]);
        run.deploy("a", Seen::Running);
        run.want(&[(2, 1)]);
        // Stack 2 was never fetched: it goes quietly when unlisted.
        run.want(&[]);
        assert_eq!(
            run.r.next().unwrap().1,
            Work::Remove {
                id: 1,
                project: "edge_a".into()
            }
        );
        run.step(Outcome::Failed("Docker is busy".into()));
        run.step(Outcome::Removed);
        let statuses = run.statuses();
        assert_eq!(&statuses[statuses.len() - 2..], [(1, 9), (1, 4)]);
        assert!(run.r.take_records().unwrap().is_empty());
        assert!(run.r.next().is_none());
    }

    #[test]
    fn a_list_cut_at_the_limit_removes_nothing_and_stays_bounded() {
        let mut run = Run::new();
        run.want(&[(1, 1)]);
        run.deploy("a", Seen::Running);
        run.statuses();
        // Portainer assigns more than MAX_STACKS: the answer keeps the first ones, and stack 1
        // is among those skipped.
        let first: Vec<(i64, i64)> = (100..100 + MAX_STACKS as i64).map(|id| (id, 1)).collect();
        run.r.desire(&refs(&first), false, run.now);
        assert!(
            !run.statuses().contains(&(1, 9)),
            "a deployed stack is not removed on a cut list"
        );
        assert_eq!(
            run.r.stacks.len(),
            MAX_STACKS,
            "no more than the limit are taken"
        );
        let others: Vec<(i64, i64)> = (500..500 + MAX_STACKS as i64).map(|id| (id, 1)).collect();
        run.r.desire(&refs(&others), false, run.now);
        assert_eq!(run.r.stacks.len(), MAX_STACKS, "still bounded");
        // The whole list again, without stack 1: now it is unassigned.
        run.want(&first[..10]);
        assert!(run.statuses().contains(&(1, 9)));
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

    fn record(status: Status, sent: Status) -> BTreeMap<i64, StackRecord> {
        BTreeMap::from([(
            1,
            StackRecord {
                version: 4,
                name: "web".into(),
                project: "edge_web".into(),
                entry_file: "docker-compose.yml".into(),
                files_hash: "00000000000000aa".into(),
                status: Some(status),
                error: String::new(),
                sent: Some(sent),
            },
        )])
    }

    #[test]
    fn after_a_restart_nothing_is_redeployed_or_reported_again() {
        let mut run = Run::with(record(Status::Running, Status::Running));
        run.want(&[(1, 4)]);
        assert!(matches!(run.r.next().unwrap().1, Work::Check { .. }));
        run.step(Outcome::Seen(Seen::Running));
        assert!(run.statuses().is_empty());
        // A stack removed while the agent was off goes on the first list.
        run.want(&[]);
        run.step(Outcome::Removed);
        assert_eq!(run.statuses(), [(1, 9), (1, 4)]);
    }

    #[test]
    fn after_a_restart_unsent_statuses_go_and_a_cut_deploy_is_finished() {
        let mut run = Run::with(record(Status::Running, Status::DeploymentReceived));
        assert_eq!(run.statuses(), [(1, 7)]);
        let mut run = Run::with(record(Status::Deploying, Status::Deploying));
        assert!(matches!(run.r.next().unwrap().1, Work::Load { .. }));
        run.step(Outcome::Loaded {
            wait: Duration::ZERO,
        });
        run.step(Outcome::Deployed);
        run.step(Outcome::Seen(Seen::Running));
        assert_eq!(run.statuses(), [(1, 1), (1, 7)]);
        // Files gone from the disk: fetched again, without a new history.
        let records = record(Status::Running, Status::Running);
        let mut run = Run {
            r: Reconciler::new(records, |_| false, Instant::now()),
            now: Instant::now(),
        };
        assert_eq!(run.r.next().unwrap().1, Work::Fetch { id: 1, version: 4 });
        run.step(fetched("web"));
        run.step(Outcome::Loaded {
            wait: Duration::ZERO,
        });
        run.step(Outcome::Deployed);
        run.step(Outcome::Seen(Seen::Running));
        assert!(run.statuses().is_empty());
    }
}
