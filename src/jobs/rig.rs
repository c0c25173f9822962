//! (tests) The jobs thread on a fake clock (UTC), given schedules by a poll answer, and the
//! count of each job's runs.

use super::runner::SCRIPT;
use super::tz::Zone;
use super::{Answers, Clock, Jobs, Settings};
use crate::poller::Consumer;
use crate::portainer::poll_response::{PollResponse, Schedule};
use crate::state::{Persisted, Store};
use base64::Engine;
use std::fs;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct FakeClock(Arc<Mutex<SystemTime>>);

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

pub(super) fn utc(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> SystemTime {
    let days = crate::system::clock::days_from_civil(y, mo, d);
    UNIX_EPOCH + Duration::from_secs((days * 86_400 + h * 3600 + mi * 60 + s) as u64)
}

pub(super) fn schedule(id: i64, cron: &str) -> Schedule {
    Schedule {
        id,
        collect_logs: false,
        cron_expression: cron.into(),
        script: base64::engine::general_purpose::STANDARD_NO_PAD.encode("echo x >> count\n"),
        version: 1,
    }
}

pub(super) struct Rig {
    pub(super) data: tempfile::TempDir,
    now: Arc<Mutex<SystemTime>>,
    pub(super) jobs: Jobs,
    pub(super) answers: Answers,
}

impl Rig {
    pub(super) fn runs(&self, id: i64) -> usize {
        let count = self.data.path().join(format!("jobs/{id}/count"));
        fs::read_to_string(count)
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// Sets the clock and wakes the thread until job `id` has run `n` times in all.
    pub(super) fn at(&self, t: SystemTime, id: i64, n: usize) {
        *self.now.lock().unwrap() = t;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.runs(id) < n {
            assert!(
                Instant::now() < deadline,
                "job {id} ran {} times, not {n}",
                self.runs(id)
            );
            self.jobs.inbox.post(|_| {});
            std::thread::sleep(Duration::from_millis(20));
        }
        // Let the wake-up happen, and its other runs, if any, write their line.
        self.jobs.inbox.post(|_| {});
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(self.runs(id), n, "job {id} ran once per minute at most");
    }
}

/// The jobs thread at `start` (fake clock, UTC), given `schedules` by a poll answer.
pub(super) fn rig(start: SystemTime, schedules: Vec<Schedule>) -> (Rig, Arc<Persisted>) {
    let data = tempfile::tempdir().unwrap();
    let (store, state) = Store::open(data.path()).unwrap();
    let persisted = Arc::new(Persisted::new(store, state));
    let now = Arc::new(Mutex::new(start));
    let settings = Settings {
        dir: data.path().join("jobs"),
        zone: Zone::utc(),
        edge_id: "edge".into(),
    };
    let clock = FakeClock(now.clone());
    let (jobs, mut answers) =
        Jobs::start(settings, persisted.clone(), Box::new(|_, _| {}), clock).unwrap();
    let response = PollResponse {
        schedules,
        ..PollResponse::parse(b"{}").unwrap()
    };
    answers.answer(3, &response);
    let deadline = Instant::now() + Duration::from_secs(10);
    for s in &response.schedules {
        let script = data.path().join(format!("jobs/{}/{SCRIPT}", s.id));
        while !script.exists() {
            assert!(Instant::now() < deadline, "job {} not installed", s.id);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    (
        Rig {
            data,
            now,
            jobs,
            answers,
        },
        persisted,
    )
}
