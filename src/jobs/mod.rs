//! Edge jobs: Portainer's scheduled scripts, run by the agent's own cron (the Go agent writes
//! `/etc/cron.d/portainer_agent` for the host's cron, which gateways often lack).
//!
//! The poll loop hands each answer's `schedules` to [`Answers`], which passes it on through a
//! one-slot mailbox (the latest answer wins) to the jobs thread. That thread is level-triggered:
//! it makes `DATA_PATH/jobs/<id>/` match the list (script written on a new version, folder
//! removed with the job, a running instance stopped first), keeps the list in the state file so
//! that a device that restarts offline runs its jobs on, wakes at minute boundaries (and at
//! `@every` times) to start what is due, and hands log requests to the uploader thread.

mod cron;
mod runner;
mod schedule;
pub mod tz;
mod upload;

use crate::config::duration::display;
use crate::poller::Consumer;
use crate::portainer::poll_response::{PollResponse, Schedule, MAX_JOBS};
use crate::state::{JobRecord, Persisted, State};
use crate::system::durable::{self, Disk};
use crate::system::mailbox::Mailbox;
use base64::Engine;
use cron::Spec;
use nix::sys::signal::Signal;
use runner::{Env, Outcome, Run, SCRIPT};
use schedule::Clockwork;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tz::Zone;

#[cfg(fuzzing)]
pub use cron::{parse as parse_cron, Civil, Spec as CronSpec};
pub use upload::Uploader;

/// A run asked to stop gets SIGTERM, then SIGKILL after this.
const KILL_AFTER: Duration = Duration::from_secs(10);
/// Each job's last run: `<start, unix seconds> <duration, ms> <status>`.
const LAST_RUN: &str = "last-run";
/// The boot during which `@reboot` jobs last ran.
const BOOT_MARK: &str = ".boot-id";

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

impl<C: Clock> Worker<C> {
    fn run(mut self) {
        self.load();
        loop {
            let mail = self.wait();
            for (serial, outcome) in mail.finished {
                self.finished(serial, outcome);
            }
            if let Some((endpoint_id, schedules, complete)) = mail.answer {
                self.reconcile(endpoint_id, &schedules, complete);
            }
            if mail.stop {
                return self.shutdown();
            }
            self.tick();
            self.kill_overdue();
        }
    }

    /// Sleeps until the next minute boundary, `@every` time or kill deadline, or until mail.
    fn wait(&self) -> Mail {
        let now = self.clock.now();
        let now_s = unix(now);
        let mut due = (now_s.div_euclid(60) + 1) * 60;
        for job in self.jobs.values() {
            if let Some(Spec::Every(_)) = job.spec {
                due = due.min(job.next_every);
            }
        }
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let to_due = Duration::from_secs(due.max(now_s) as u64).saturating_sub(since_epoch)
            + Duration::from_millis(1);
        let mut timeout = to_due.min(Duration::from_secs(61));
        for active in &self.active {
            if let Some(at) = active.kill_at {
                timeout = timeout.min(at.saturating_duration_since(Instant::now()));
            }
        }
        let until = Instant::now() + timeout;
        let mut mail = self.inbox.wait(Some(until), |mail| {
            mail.answer.is_some() || !mail.finished.is_empty() || mail.stop
        });
        std::mem::take(&mut *mail)
    }

    /// The jobs of the state file, and their folders: folders of unknown jobs are removed.
    fn load(&mut self) {
        let saved = self.persisted.read(|s| s.jobs.clone());
        let now = unix(self.clock.now());
        if let Ok(entries) = fs::read_dir(&self.settings.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let known = name
                    .to_str()
                    .and_then(|n| n.parse::<i64>().ok())
                    .map(|id| saved.contains_key(&id));
                if known == Some(false) {
                    remove_folder(&entry.path());
                }
            }
        }
        for (id, record) in saved {
            let script = self.job_dir(id).join(SCRIPT);
            let spec = if script.is_file() {
                self.parse(id, &record.expression)
            } else {
                log::warn!(
                    "edge job {id}: its script is missing; it runs again once Portainer sends it"
                );
                None
            };
            self.jobs.insert(
                id,
                Job {
                    version: record.version,
                    expression: record.expression,
                    next_every: every_from(&spec, now),
                    spec,
                    run: None,
                },
            );
        }
        if !self.jobs.is_empty() {
            log::info!(
                "edge jobs: {} scheduled from the state file (times in {})",
                self.jobs.len(),
                self.settings.zone.name
            );
        }
        self.reboot_jobs();
    }

    /// `@reboot` jobs run at the agent's first start in each boot of the device.
    fn reboot_jobs(&mut self) {
        let mut boot = String::new();
        let read = fs::File::open("/proc/sys/kernel/random/boot_id")
            .and_then(|f| f.take(64).read_to_string(&mut boot));
        if read.is_err() {
            return;
        }
        let mark = self.settings.dir.join(BOOT_MARK);
        let mut last = String::new();
        let _ = fs::File::open(&mark).and_then(|f| f.take(64).read_to_string(&mut last));
        if last.trim() == boot.trim() {
            return;
        }
        if let Err(e) = fs::write(&mark, &boot) {
            log::warn!(
                "cannot write {}: {e}; @reboot jobs may run again at the next start",
                mark.display()
            );
        }
        let due: Vec<i64> = self
            .jobs
            .iter()
            .filter(|(_, job)| job.spec == Some(Spec::Reboot))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.launch(id);
        }
    }

    fn parse(&self, id: i64, expression: &str) -> Option<Spec> {
        match cron::parse(expression) {
            Ok(spec) => Some(spec),
            Err(e) => {
                log::error!("edge job {id}: cron expression {e}; this job does not run until Portainer sends a valid one");
                None
            }
        }
    }

    fn job_dir(&self, id: i64) -> PathBuf {
        self.settings.dir.join(id.to_string())
    }

    /// A poll's jobs: new and changed ones written, unlisted ones removed. A list that is not
    /// `complete` (cut at [`MAX_JOBS`]) removes nothing, and takes new jobs only while fewer
    /// than that are here.
    fn reconcile(&mut self, endpoint_id: i64, schedules: &[Schedule], complete: bool) {
        let gone: Vec<i64> = self
            .jobs
            .keys()
            .filter(|id| complete && !schedules.iter().any(|s| s.id == **id))
            .copied()
            .collect();
        for id in gone {
            self.remove(id);
        }
        for schedule in schedules {
            if !complete && !self.jobs.contains_key(&schedule.id) && self.jobs.len() >= MAX_JOBS {
                continue;
            }
            let same = self.jobs.get(&schedule.id).is_some_and(|job| {
                job.version == schedule.version
                    && job.expression == schedule.cron_expression
                    && self.job_dir(schedule.id).join(SCRIPT).is_file()
            });
            if !same {
                self.install(schedule);
            }
        }
        let mut records = BTreeMap::new();
        for (id, job) in &self.jobs {
            let record = JobRecord {
                version: job.version,
                expression: job.expression.clone(),
            };
            records.insert(*id, record);
        }
        if self.persisted.read(|s: &State| s.jobs != records) {
            if let Err(e) = self.persisted.update(|s| s.jobs = records) {
                log::error!("{e}; the edge jobs are saved with the next change");
            }
        }
        for schedule in schedules.iter().filter(|s| s.collect_logs) {
            (self.request_log)(endpoint_id, schedule.id);
        }
    }

    /// A new job, or a new version: stops its run in progress and writes the script.
    fn install(&mut self, schedule: &Schedule) {
        let now = unix(self.clock.now());
        let id = schedule.id;
        let previous = self.jobs.remove(&id);
        let run = previous.as_ref().and_then(|job| job.run);
        if let Some(serial) = run {
            self.stop_run(serial);
        }
        let script = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(schedule.script.trim_end_matches('='));
        let spec = match script {
            Err(e) => {
                log::error!("edge job {id} v{}: its script is not valid base64 ({e}); this job does not run", schedule.version);
                None
            }
            Ok(script) => {
                match write_script(&mut durable::Real::default(), &self.job_dir(id), &script) {
                    Err(e) => {
                        log::error!("edge job {id}: cannot write its script in {}: {e}; this job does not run", self.job_dir(id).display());
                        None
                    }
                    Ok(()) => self.parse(id, &schedule.cron_expression),
                }
            }
        };
        if spec.is_some() {
            match &previous {
                Some(old) => log::info!(
                    "edge job {id} updated: v{} -> v{} ({})",
                    old.version,
                    schedule.version,
                    schedule.cron_expression
                ),
                None => log::info!(
                    "edge job {id} v{} scheduled ({})",
                    schedule.version,
                    schedule.cron_expression
                ),
            }
        }
        self.jobs.insert(
            id,
            Job {
                version: schedule.version,
                expression: schedule.cron_expression.clone(),
                next_every: every_from(&spec, now),
                spec,
                run,
            },
        );
    }

    fn remove(&mut self, id: i64) {
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        log::info!("edge job {id} removed");
        match job.run {
            Some(serial) => {
                if let Some(active) = self.active.iter_mut().find(|a| a.serial == serial) {
                    active.remove_after = true;
                }
                self.stop_run(serial);
            }
            None => remove_folder(&self.job_dir(id)),
        }
    }

    fn stop_run(&mut self, serial: u64) {
        if let Some(active) = self.active.iter_mut().find(|a| a.serial == serial) {
            if active.kill_at.is_none() {
                active.run.signal(Signal::SIGTERM);
                active.kill_at = Some(Instant::now() + KILL_AFTER);
            }
        }
    }

    fn kill_overdue(&mut self) {
        let now = Instant::now();
        for active in &mut self.active {
            if active.kill_at.is_some_and(|at| at <= now) {
                log::warn!(
                    "edge job {}: still running 10 s after SIGTERM; sending SIGKILL",
                    active.job
                );
                active.run.signal(Signal::SIGKILL);
                // Not again: the run ends now.
                active.kill_at = Some(now + Duration::from_secs(3600));
            }
        }
    }

    /// Starts what is due at this wake-up.
    fn tick(&mut self) {
        let now = unix(self.clock.now());
        let tick = self.clockwork.advance(self.settings.zone.local_minute(now));
        let mut due = Vec::new();
        for (id, job) in &mut self.jobs {
            match &job.spec {
                Some(Spec::Cron(fields)) if tick.is_some_and(|t| t.fires(fields)) => due.push(*id),
                Some(Spec::Every(every)) => {
                    let every = every.as_secs() as i64;
                    if now >= job.next_every {
                        due.push(*id);
                        job.next_every = now + every;
                    } else if job.next_every > now + every {
                        // The clock went back.
                        job.next_every = now + every;
                    }
                }
                _ => {}
            }
        }
        for id in due {
            self.launch(id);
        }
    }

    fn launch(&mut self, id: i64) {
        let dir = self.job_dir(id);
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if let Some(active) = job
            .run
            .and_then(|serial| self.active.iter().find(|a| a.serial == serial))
        {
            log::warn!(
                "edge job {id}: the run started at {} is still going; this one is skipped",
                crate::system::clock::rfc3339(active.run.started)
            );
            return;
        }
        self.serial += 1;
        let serial = self.serial;
        let inbox = self.inbox.clone();
        let done = move |outcome| inbox.post(|mail| mail.finished.push((serial, outcome)));
        match Run::start(&dir, &self.env, done) {
            Ok(run) => {
                log::debug!("edge job {id}: started");
                job.run = Some(serial);
                self.active.push(Active {
                    serial,
                    job: id,
                    run,
                    kill_at: None,
                    remove_after: false,
                });
            }
            Err(e) => {
                log::error!(
                    "edge job {id}: cannot start /bin/sh {SCRIPT} in {}: {e}",
                    dir.display()
                );
                let status = format!("not started ({e})");
                write_last_run(&dir, SystemTime::now(), Duration::ZERO, &status);
            }
        }
    }

    fn finished(&mut self, serial: u64, outcome: Outcome) {
        let Some(index) = self.active.iter().position(|a| a.serial == serial) else {
            return;
        };
        let active = self.active.swap_remove(index);
        let id = active.job;
        let line = format!(
            "edge job {id} finished: {} after {}",
            outcome.status,
            display(outcome.duration)
        );
        if outcome.success {
            log::info!("{line}");
        } else {
            log::warn!("{line}");
        }
        let dir = self.job_dir(id);
        if active.remove_after && !self.jobs.contains_key(&id) {
            remove_folder(&dir);
            return;
        }
        write_last_run(&dir, active.run.started, outcome.duration, &outcome.status);
        if let Some(job) = self.jobs.get_mut(&id) {
            if job.run == Some(serial) {
                job.run = None;
            }
        }
    }

    /// Agent stop: SIGTERM to every run, SIGKILL to those still going after 10 s.
    fn shutdown(mut self) {
        if self.active.is_empty() {
            return;
        }
        log::info!("stopping {} edge job run(s)", self.active.len());
        let serials: Vec<u64> = self.active.iter().map(|a| a.serial).collect();
        for serial in &serials {
            self.stop_run(*serial);
        }
        for (deadline, signal) in [
            (Instant::now() + KILL_AFTER, Some(Signal::SIGKILL)),
            (Instant::now() + KILL_AFTER + Duration::from_secs(1), None),
        ] {
            while !self.active.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let mut mail = self.inbox.wait(Some(deadline), |m| !m.finished.is_empty());
                let finished = std::mem::take(&mut mail.finished);
                drop(mail);
                for (serial, outcome) in finished {
                    self.finished(serial, outcome);
                }
            }
            if let Some(signal) = signal {
                for active in &self.active {
                    log::warn!(
                        "edge job {}: still running 10 s after SIGTERM; sending SIGKILL",
                        active.job
                    );
                    active.run.signal(signal);
                }
            }
        }
    }
}

fn every_from(spec: &Option<Spec>, now: i64) -> i64 {
    match spec {
        Some(Spec::Every(every)) => now + every.as_secs() as i64,
        _ => i64::MAX,
    }
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

/// The script, replaced whole ([`durable::replace`]): a run in progress keeps the old.
fn write_script(disk: &mut impl Disk, dir: &Path, script: &[u8]) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    durable::replace(disk, &dir.join(SCRIPT), script, 0o700)
}

fn remove_folder(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("cannot remove {}: {e}", dir.display()),
    }
}

fn write_last_run(dir: &Path, started: SystemTime, took: Duration, status: &str) {
    let line = format!("{} {} {status}\n", unix(started), took.as_millis());
    let written = durable::replace(
        &mut durable::Real::default(),
        &dir.join(LAST_RUN),
        line.as_bytes(),
        0o600,
    );
    if let Err(e) = written {
        log::debug!("cannot record the last run in {}: {e}", dir.display());
    }
}

/// For `edge-agent check`: each job of the state file, its next run and its last run.
pub fn report(data_path: &Path, state: &State) -> Vec<String> {
    let (zone, warning) = Zone::from_env();
    let mut lines = Vec::new();
    if let Some(warning) = warning {
        lines.push(format!("warning: {warning}"));
    }
    let now = unix(SystemTime::now());
    let local = |t: i64| {
        let c = cron::Civil::from_local_minute(zone.local_minute(t));
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            c.year, c.month, c.day, c.hour, c.minute
        )
    };
    for (id, record) in &state.jobs {
        let next = match cron::parse(&record.expression) {
            Err(e) => format!("NOT scheduled: {e}"),
            Ok(Spec::Cron(fields)) => match schedule::next_run(&fields, &zone, now) {
                Some(t) => format!("next run {} {}", local(t), zone.name),
                None => "never runs (no such date)".into(),
            },
            Ok(Spec::Every(every)) => format!("every {}", display(every)),
            Ok(Spec::Reboot) => "at each boot".into(),
        };
        let dir = data_path.join("jobs").join(id.to_string());
        let mut line = String::new();
        let read =
            fs::File::open(dir.join(LAST_RUN)).and_then(|f| f.take(4096).read_to_string(&mut line));
        let last = read.ok().and_then(|_| {
            let mut parts = line.trim_end().splitn(3, ' ');
            let started: i64 = parts.next()?.parse().ok()?;
            let ms: u64 = parts.next()?.parse().ok()?;
            Some(format!(
                "last run {} {}: {} after {}",
                local(started),
                zone.name,
                parts.next()?,
                display(Duration::from_millis(ms))
            ))
        });
        lines.push(format!(
            "job {id} v{} ({}): {next}; {}",
            record.version,
            record.expression,
            last.unwrap_or_else(|| "not run yet".into())
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Store;
    use std::sync::Mutex;

    struct FakeClock(Arc<Mutex<SystemTime>>);

    impl Clock for FakeClock {
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap()
        }
    }

    fn utc(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> SystemTime {
        let days = crate::system::clock::days_from_civil(y, mo, d);
        UNIX_EPOCH + Duration::from_secs((days * 86_400 + h * 3600 + mi * 60 + s) as u64)
    }

    fn schedule(id: i64, cron: &str) -> Schedule {
        Schedule {
            id,
            collect_logs: false,
            cron_expression: cron.into(),
            script: base64::engine::general_purpose::STANDARD_NO_PAD.encode("echo x >> count\n"),
            version: 1,
        }
    }

    struct Rig {
        data: tempfile::TempDir,
        now: Arc<Mutex<SystemTime>>,
        jobs: Jobs,
        answers: Answers,
    }

    impl Rig {
        fn runs(&self, id: i64) -> usize {
            let count = self.data.path().join(format!("jobs/{id}/count"));
            fs::read_to_string(count)
                .unwrap_or_default()
                .lines()
                .count()
        }

        /// Sets the clock and wakes the thread until job `id` has run `n` times in all.
        fn at(&self, t: SystemTime, id: i64, n: usize) {
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
    fn rig(start: SystemTime, schedules: Vec<Schedule>) -> (Rig, Arc<Persisted>) {
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

    #[test]
    fn a_list_cut_at_the_limit_removes_no_job_and_installs_at_most_the_limit() {
        let (mut rig, _) = rig(utc(2026, 12, 1, 12, 0, 0), vec![schedule(1, "@daily")]);
        // Job folders are named by id (beside them: `.boot-id`).
        let folders = |rig: &Rig| {
            std::fs::read_dir(rig.data.path().join("jobs"))
                .unwrap()
                .filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    name.to_str().is_some_and(|n| n.parse::<i64>().is_ok())
                })
                .count()
        };
        let until = |rig: &Rig, what: &str, done: &dyn Fn(&Rig) -> bool| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !done(rig) {
                assert!(
                    Instant::now() < deadline,
                    "{what}: {} folders",
                    folders(rig)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        let cut = |ids: std::ops::Range<i64>| PollResponse {
            schedules: ids.map(|id| schedule(id, "@daily")).collect(),
            schedules_listed: 1000,
            ..PollResponse::parse(b"{}").unwrap()
        };
        rig.answers.answer(3, &cut(100..100 + MAX_JOBS as i64));
        until(&rig, "the first cut list", &|r| folders(r) == MAX_JOBS);
        assert!(rig.data.path().join("jobs/1").is_dir(), "job 1 is kept");
        assert!(!rig
            .data
            .path()
            .join(format!("jobs/{}", 99 + MAX_JOBS))
            .exists());
        rig.answers.answer(3, &cut(500..500 + MAX_JOBS as i64));
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(folders(&rig), MAX_JOBS, "still at most the limit");
        // The whole list, without job 1: now it is removed.
        let whole = PollResponse {
            schedules: (100..110).map(|id| schedule(id, "@daily")).collect(),
            schedules_listed: 10,
            ..PollResponse::parse(b"{}").unwrap()
        };
        rig.answers.answer(3, &whole);
        until(&rig, "the whole list", &|r| folders(r) == 10);
        assert!(!rig.data.path().join("jobs/1").exists());
        rig.jobs.stop();
    }

    #[test]
    fn every_counts_from_arrival_and_survives_the_clock_going_back() {
        let t = utc(2026, 12, 1, 12, 0, 0);
        let (rig, _) = rig(t, vec![schedule(5, "@every 30s")]);
        let at = |s: u64| t + Duration::from_secs(s);
        rig.at(at(29), 5, 0);
        rig.at(at(30), 5, 1);
        rig.at(at(45), 5, 1);
        rig.at(at(60), 5, 2);
        // Back an hour: the next run is 30 s away, not an hour and a half.
        let back = t - Duration::from_secs(3600);
        rig.at(back, 5, 2);
        rig.at(back + Duration::from_secs(30), 5, 3);
        rig.jobs.stop();
    }

    #[test]
    fn thread_follows_the_injected_clock_through_jumps() {
        let (rig, persisted) = rig(
            utc(2026, 12, 1, 12, 0, 30),
            vec![schedule(1, "* * * * *"), schedule(2, "0 12 * * *")],
        );

        rig.at(utc(2026, 12, 1, 12, 1, 0), 1, 1);
        assert_eq!(rig.runs(2), 0);
        let saved = persisted.read(|s| s.jobs.clone());
        assert_eq!(saved[&2].expression, "0 12 * * *", "{saved:?}");
        // Later in the same minute: nothing.
        rig.at(utc(2026, 12, 1, 12, 1, 40), 1, 1);
        // NTP jumps three years ahead: one run of the current minute, no replay.
        rig.at(utc(2029, 12, 1, 12, 0, 0), 1, 2);
        assert_eq!(rig.runs(2), 1);
        // Stepped back half an hour: per-minute jobs go on, the 12:00 job does not run again.
        rig.at(utc(2029, 12, 1, 11, 30, 0), 1, 3);
        rig.at(utc(2029, 12, 1, 12, 0, 0), 1, 4);
        rig.at(utc(2029, 12, 1, 12, 0, 30), 1, 4);
        assert_eq!(rig.runs(2), 1);
        rig.jobs.stop();
    }

    /// Three versions of a job's script, cut at every step: the script is the one before the
    /// write in progress (none before the first) or the new one, whole; never torn.
    #[test]
    fn every_power_cut_of_a_script_write_leaves_the_old_or_the_new_script() {
        use crate::system::power_cut::{self, Recorder};
        let scripts = ["", "echo one\n", "echo two; echo and more\n", "exit 3\n"];
        let mut recorder = Recorder::new();
        let dir = recorder.root().join("jobs/4");
        fs::create_dir_all(&dir).unwrap();
        recorder.start();
        let mut ends = Vec::new();
        for script in &scripts[1..] {
            write_script(&mut recorder, &dir, script.as_bytes()).unwrap();
            ends.push(recorder.steps());
        }
        let points = power_cut::each_image(&recorder, |image, cut| {
            let v = ends.iter().position(|end| cut.after <= *end).unwrap();
            let found = fs::read_to_string(image.join("jobs/4").join(SCRIPT)).unwrap_or_default();
            assert!(
                found == scripts[v] || found == scripts[v + 1],
                "{cut}: {found:?}"
            );
        });
        eprintln!(
            "job script: {points} power cuts over {} steps of {} writes",
            recorder.steps(),
            ends.len()
        );
        assert!(points > 3 * 10, "{points}");
    }
}
