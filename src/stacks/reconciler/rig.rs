//! (tests) A reconciler driven step by step: poll lists, outcomes, a clock that jumps to the
//! next due step, and the statuses decided.

use super::{Outcome, Reconciler, Seen, Work};
use crate::portainer::poll_response::StackRef;
use crate::state::StackRecord;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub(super) struct Run {
    pub(super) r: Reconciler,
    pub(super) now: Instant,
}

pub(super) fn refs(list: &[(i64, i64)]) -> Vec<StackRef> {
    list.iter()
        .map(|&(id, version)| StackRef { id, version })
        .collect()
}

pub(super) fn fetched(name: &str) -> Outcome {
    Outcome::Fetched {
        name: name.into(),
        project: Ok(format!("edge_{name}")),
        entry_file: "docker-compose.yml".into(),
        files_hash: "00000000000000aa".into(),
    }
}

impl Run {
    pub(super) fn new() -> Run {
        Run::with(BTreeMap::new())
    }

    pub(super) fn with(records: BTreeMap<i64, StackRecord>) -> Run {
        let now = Instant::now();
        Run {
            r: Reconciler::new(records, |_| true, now),
            now,
        }
    }

    pub(super) fn want(&mut self, list: &[(i64, i64)]) {
        self.r.desire(&refs(list), true, self.now);
    }

    /// Runs the next step when it is due (jumping the clock forward), with `outcome`.
    pub(super) fn step(&mut self, outcome: Outcome) -> Work {
        let (due, work) = self.r.next().expect("work to do");
        self.now = self.now.max(due);
        self.r.apply(&work, outcome, self.now, 0);
        work
    }

    pub(super) fn statuses(&mut self) -> Vec<(i64, u8)> {
        self.r
            .take_decided()
            .iter()
            .map(|d| (d.id, d.status as u8))
            .collect()
    }

    /// A stack through a clean deploy up to `final_seen`.
    pub(super) fn deploy(&mut self, name: &str, final_seen: Seen) {
        self.step(fetched(name));
        self.step(Outcome::Loaded {
            wait: Duration::from_secs(60),
        });
        self.step(Outcome::Stepped);
        self.step(Outcome::Deployed);
        self.step(Outcome::Seen(Seen::Starting("service web starting".into())));
        self.step(Outcome::Seen(final_seen));
    }

    pub(super) fn record(&mut self, id: i64) -> StackRecord {
        self.r
            .stacks
            .get(&id)
            .and_then(|s| s.record.clone())
            .unwrap()
    }
}
