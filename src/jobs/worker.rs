//! The jobs thread's loop: it sleeps until the next minute boundary, `@every` time or kill
//! deadline, or until mail comes; then it records the runs that ended, takes a poll answer's
//! jobs (`super::assigned`), starts what is due, and stops runs (SIGTERM, SIGKILL 10 s later),
//! all of them when the agent stops.

use super::assigned::remove_folder;
use super::cron::Spec;
use super::runner::{Outcome, Run, SCRIPT};
use super::{unix, Active, Clock, Mail, Worker, LAST_RUN};
use crate::config::duration::display;
use crate::system::durable;
use nix::sys::signal::Signal;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A run asked to stop gets SIGTERM, then SIGKILL after this.
const KILL_AFTER: Duration = Duration::from_secs(10);

impl<C: Clock> Worker<C> {
    pub(super) fn run(mut self) {
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

    pub(super) fn stop_run(&mut self, serial: u64) {
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

    pub(super) fn launch(&mut self, id: i64) {
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

#[cfg(test)]
mod tests {
    use super::super::rig::{rig, schedule, utc};
    use std::time::Duration;

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
}
