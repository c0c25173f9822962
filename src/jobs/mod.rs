//! Edge jobs: Portainer's scheduled scripts, run by the agent's own cron (the Go agent writes
//! `/etc/cron.d/portainer_agent` for the host's cron, which gateways often lack).
//!
//! The poll loop hands each answer's `schedules` to [`Answers`], which passes it on through a
//! one-slot mailbox (the latest answer wins) to the jobs thread. That thread is level-triggered:
//! it makes `DATA_PATH/jobs/<id>/` match the list (script written on a new version, folder
//! removed with the job, a running instance stopped first), keeps the list in the state file so
//! that a device that restarts offline runs its jobs on, wakes at minute boundaries (and at
//! `@every` times) to start what is due, and hands log requests to the uploader thread.
//!
//! This file holds what the agent starts and the thread's state; the thread's loop and runs are
//! in [`worker`], the list of jobs it keeps on disk in [`assigned`], and what `edge-agent check`
//! says of them in [`check`].

mod assigned;
mod check;
mod cron;
#[cfg(test)]
mod rig;
mod runner;
mod schedule;
pub mod tz;
mod upload;
mod worker;

use crate::poller::Consumer;
use crate::portainer::poll_response::{PollResponse, Schedule};
use crate::state::Persisted;
use crate::system::mailbox::Mailbox;
use cron::Spec;
use runner::{Env, Outcome, Run};
use schedule::Clockwork;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tz::Zone;

pub use check::report;
#[cfg(fuzzing)]
pub use cron::{parse as parse_cron, Civil, Spec as CronSpec};
pub use upload::Uploader;

/// Each job's last run: `<start, unix seconds> <duration, ms> <status>`.
const LAST_RUN: &str = "last-run";

/// Where the jobs thread gets the time: the system clock, or a test's.
pub trait Clock: Send + 'static {
    fn now(&self) -> SystemTime;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

pub struct Settings {
    /// `DATA_PATH/jobs`.
    pub dir: PathBuf,
    pub zone: Zone,
    pub edge_id: String,
}

impl Settings {
    pub fn new(data_path: &Path, edge_id: &str) -> Settings {
        let (zone, warning) = Zone::from_env();
        if let Some(warning) = warning {
            log::warn!("{warning}");
        }
        Settings {
            dir: data_path.join("jobs"),
            zone,
            edge_id: edge_id.to_owned(),
        }
    }
}

#[derive(Default)]
struct Mail {
    /// The latest poll answer not yet handled: endpoint id, schedules, and whether they are
    /// all the server assigns (not cut at `MAX_JOBS`).
    answer: Option<(i64, Vec<Schedule>, bool)>,
    /// Runs that ended: run serial and outcome.
    finished: Vec<(u64, Outcome)>,
    stop: bool,
}

/// The poll loop's side: hands the schedules over when they changed or ask for logs.
pub struct Answers {
    inbox: Arc<Mailbox<Mail>>,
    /// Endpoint id, `(id, version, expression)` of each job and completeness last handed over.
    last: Option<Brief>,
}

type Brief = (i64, Vec<(i64, i64, String)>, bool);

impl Consumer for Answers {
    fn answer(&mut self, endpoint_id: i64, response: &PollResponse) {
        let brief: Vec<_> = response
            .schedules
            .iter()
            .map(|s| (s.id, s.version, s.cron_expression.clone()))
            .collect();
        let asks_logs = response.schedules.iter().any(|s| s.collect_logs);
        let complete = response.schedules_complete();
        let now = Some((endpoint_id, brief, complete));
        if now == self.last && !asks_logs {
            return;
        }
        self.last = now;
        let schedules = response.schedules.clone();
        self.inbox
            .post(|mail| mail.answer = Some((endpoint_id, schedules, complete)));
    }
}

/// The jobs thread, to stop it.
pub struct Jobs {
    inbox: Arc<Mailbox<Mail>>,
    thread: Option<JoinHandle<()>>,
}

impl Jobs {
    /// Loads the jobs of the state file and starts scheduling them; `request_log(endpoint,
    /// job)` is called when a poll asks for a job's log (the [`Uploader`]).
    pub fn start(
        settings: Settings,
        persisted: Arc<Persisted>,
        request_log: Box<dyn Fn(i64, i64) + Send>,
        clock: impl Clock,
    ) -> io::Result<(Jobs, Answers)> {
        let inbox = Arc::new(Mailbox::default());
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&settings.dir)?;
        let env = Env {
            home: home(),
            edge_id: settings.edge_id.clone(),
        };
        let worker = Worker {
            clockwork: Clockwork::new(settings.zone.local_minute(unix(clock.now()))),
            clock,
            settings,
            env,
            persisted,
            inbox: inbox.clone(),
            request_log,
            jobs: BTreeMap::new(),
            active: Vec::new(),
            serial: 0,
        };
        let thread = std::thread::Builder::new()
            .name("jobs".into())
            .stack_size(128 * 1024)
            .spawn(move || worker.run())?;
        Ok((
            Jobs {
                inbox: inbox.clone(),
                thread: Some(thread),
            },
            Answers { inbox, last: None },
        ))
    }

    /// Stops the runs in progress (SIGTERM, SIGKILL after 10 s) and the thread.
    pub fn stop(mut self) {
        self.inbox.post(|mail| mail.stop = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Job {
    version: i64,
    expression: String,
    /// `None`: the job does not run (bad expression, script missing or undecodable).
    spec: Option<Spec>,
    /// For `@every`: the next run, unix seconds.
    next_every: i64,
    /// The serial of its run in progress.
    run: Option<u64>,
}

struct Active {
    serial: u64,
    job: i64,
    run: Run,
    kill_at: Option<Instant>,
    /// The job was removed: its folder goes when the run has ended.
    remove_after: bool,
}

/// The jobs thread's state.
struct Worker<C: Clock> {
    clock: C,
    settings: Settings,
    env: Env,
    persisted: Arc<Persisted>,
    inbox: Arc<Mailbox<Mail>>,
    request_log: Box<dyn Fn(i64, i64) + Send>,
    jobs: BTreeMap<i64, Job>,
    clockwork: Clockwork,
    /// Runs in progress (a few at most).
    active: Vec<Active>,
    serial: u64,
}

/// Unix seconds (negative before 1970, which a device without RTC may well report).
fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    }
}

/// The agent user's home, as cron sets `HOME`: from the user database, else `$HOME`, else `/`.
fn home() -> PathBuf {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
        .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/"))
}
