//! The edge stack reconciler as a pure state machine: it compares what Portainer wants (the
//! poll's `[{ID, Version}]`) with what this agent has done (the persisted records) and names
//! the next bounded step of one stack ([`Work`]); the I/O shell (`super::run`) does it and hands
//! back the [`Outcome`]. Stacks take turns, so none waits for another longer than one step.
//! Statuses are emitted on transitions only, each once: a retried deploy reports nothing until
//! it succeeds (then 8, 1, 7) or fails differently.
//!
//! This file holds the stacks' state, the poll's lists and the choice of the next step;
//! [`transitions`] applies the outcomes.

#[cfg(test)]
mod rig;
mod transitions;
mod work;

pub use work::{Outcome, Seen, Work};

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

#[cfg(test)]
mod tests {
    use super::rig::{fetched, refs, Run};
    use super::*;

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
