//! The jobs Portainer assigns, kept on disk: at start from the state file (folders of unknown
//! jobs removed, `@reboot` jobs run once per boot), then from each poll answer (scripts of new
//! versions written, folders of removed jobs deleted, the list saved in the state file).

use super::cron::{self, Spec};
use super::runner::SCRIPT;
use super::{unix, Clock, Job, Worker};
use crate::portainer::poll_response::{Schedule, MAX_JOBS};
use crate::state::{JobRecord, State};
use crate::system::durable::{self, Disk};
use base64::Engine;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The boot during which `@reboot` jobs last ran.
const BOOT_MARK: &str = ".boot-id";

impl<C: Clock> Worker<C> {
    /// The jobs of the state file, and their folders: folders of unknown jobs are removed.
    pub(super) fn load(&mut self) {
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

    pub(super) fn job_dir(&self, id: i64) -> PathBuf {
        self.settings.dir.join(id.to_string())
    }

    /// A poll's jobs: new and changed ones written, unlisted ones removed. A list that is not
    /// `complete` (cut at [`MAX_JOBS`]) removes nothing, and takes new jobs only while fewer
    /// than that are here.
    pub(super) fn reconcile(&mut self, endpoint_id: i64, schedules: &[Schedule], complete: bool) {
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
}

fn every_from(spec: &Option<Spec>, now: i64) -> i64 {
    match spec {
        Some(Spec::Every(every)) => now + every.as_secs() as i64,
        _ => i64::MAX,
    }
}

/// The script, replaced whole ([`durable::replace`]): a run in progress keeps the old.
fn write_script(disk: &mut impl Disk, dir: &Path, script: &[u8]) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    durable::replace(disk, &dir.join(SCRIPT), script, 0o700)
}

pub(super) fn remove_folder(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("cannot remove {}: {e}", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::rig::{rig, schedule, utc, Rig};
    use super::*;
    use crate::poller::Consumer;
    use crate::portainer::poll_response::PollResponse;
    use std::time::{Duration, Instant};

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
