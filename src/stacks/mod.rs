//! Edge stacks: what Portainer assigns to this environment, deployed with the compose engine
//! and reported back as the UI expects (see `docs/edge-stacks.md`). The poll thread hands each
//! answer's stack list to a mailbox that holds only the latest one ([`Stacks`], the poll's
//! [`Consumer`]); the `stacks` thread runs the [`reconciler`] one bounded step at a time, and
//! the [`reporter`] thread sends the statuses.

mod folder;
mod payload;
mod reconciler;
mod reporter;

#[cfg(fuzzing)]
pub use payload::Payload as StackPayload;

use crate::compose::{self, ServiceState, StackStatus};
use crate::docker;
use crate::poller::Consumer;
use crate::portainer::poll_response::{PollResponse, StackRef};
use crate::portainer::{self, Client};
use crate::state::{Persisted, StackRecord};
use crate::system::mailbox::Mailbox;
use payload::Payload;
use reconciler::{Outcome, Reconciler, Seen, Work};
use reporter::{Report, Reporter};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long waiting for a deployed stack to run may take at least (libstack's one minute).
const MIN_WAIT: Duration = Duration::from_secs(60);
/// The Go agent's variable naming the device in compose files.
const EDGE_ID_VARIABLE: &str = "PORTAINER_EDGE_ID";

/// The latest poll answer not yet taken by the stacks thread.
struct Answer {
    endpoint_id: i64,
    /// `None`: the server said nothing about stacks (`null`), keep the list.
    stacks: Option<Vec<StackRef>>,
    /// The list is all the server assigns (not cut at `MAX_STACKS`).
    complete: bool,
}

/// The poll's side: puts each answer in the mailbox and returns.
pub struct Stacks {
    mailbox: Arc<Mailbox<Option<Answer>>>,
}

impl Consumer for Stacks {
    fn answer(&mut self, endpoint_id: i64, response: &PollResponse) {
        self.mailbox.post(|latest| {
            // A `null` list after an unread list keeps that list.
            let (stacks, complete) = match &response.stacks {
                Some(list) => (Some(list.clone()), response.stacks_complete()),
                None => latest
                    .take()
                    .map_or((None, true), |a| (a.stacks, a.complete)),
            };
            *latest = Some(Answer {
                endpoint_id,
                stacks,
                complete,
            });
        });
    }
}

pub struct Settings {
    pub data_path: PathBuf,
    pub docker_socket: PathBuf,
    pub edge_id: String,
}

impl Stacks {
    /// Starts the stacks and status threads, with a Portainer client of their own.
    pub fn start(
        settings: Settings,
        client: Client,
        persisted: Arc<Persisted>,
    ) -> std::io::Result<Stacks> {
        let client = Arc::new(client);
        let reporter = Reporter::start(client.clone(), persisted.clone())?;
        let mailbox = Arc::new(Mailbox::default());
        let shell = Shell {
            root: settings.data_path.join("stacks"),
            docker_socket: settings.docker_socket,
            docker: None,
            edge_id: settings.edge_id,
            client,
            endpoint_id: 0,
            ups: BTreeMap::new(),
        };
        let thread_mailbox = mailbox.clone();
        std::thread::Builder::new()
            .name("stacks".into())
            // HTTP and TLS as the poll thread, plus the compose loader's recursion (64 levels).
            .stack_size(1024 * 1024)
            .spawn(move || run(shell, &thread_mailbox, &persisted, &reporter))?;
        Ok(Stacks { mailbox })
    }
}

fn run(
    mut shell: Shell,
    mailbox: &Mailbox<Option<Answer>>,
    persisted: &Persisted,
    reporter: &Reporter,
) {
    let mut machine: Option<Reconciler> = None;
    let mut until: Option<Instant> = None;
    loop {
        if let Some(answer) = mailbox.take(until, Option::take) {
            shell.endpoint_id = answer.endpoint_id;
            // The first answer gives the endpoint id statuses need: only then does work begin.
            let m = machine.get_or_insert_with(|| {
                let records = persisted.read(|s| s.stacks.clone());
                let root = shell.root.clone();
                // A write cut by a crash or power cut is put right before anything uses it.
                for id in records.keys() {
                    if let Err(e) = folder::recover(&root, *id) {
                        log::warn!("edge stack {id}: {e}; it is written again");
                    }
                }
                Reconciler::new(
                    records,
                    |id| folder::path(&root, id).is_dir(),
                    Instant::now(),
                )
            });
            if let Some(list) = &answer.stacks {
                m.desire(list, answer.complete, Instant::now());
            }
        }
        let Some(m) = machine.as_mut() else {
            continue;
        };
        flush(m, &shell, persisted, reporter);
        until = match m.next() {
            Some((due, work)) if due <= Instant::now() => {
                let outcome = shell.execute(&work);
                m.apply(&work, outcome, Instant::now(), crate::system::random::u64());
                flush(m, &shell, persisted, reporter);
                Some(Instant::now())
            }
            Some((due, _)) => Some(due),
            None => None,
        };
    }
}

/// Saves changed records, then hands the decided statuses to the reporter (in this order, so
/// that the reporter finds the record of the version it reports on).
fn flush(m: &mut Reconciler, shell: &Shell, persisted: &Persisted, reporter: &Reporter) {
    if let Some(records) = m.take_records() {
        let saved = persisted.update(|s| {
            let old = std::mem::take(&mut s.stacks);
            s.stacks = records
                .into_iter()
                .map(|(id, r)| {
                    let sent = old
                        .get(&id)
                        .filter(|o| o.version == r.version)
                        .and_then(|o| o.sent);
                    (id, StackRecord { sent, ..r })
                })
                .collect();
        });
        if let Err(e) = saved {
            log::error!("{e}; the edge stack change is kept in memory and saved at the next one");
        }
    }
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for d in m.take_decided() {
        reporter.send(Report {
            stack: d.id,
            version: d.version,
            endpoint_id: shell.endpoint_id,
            status: d.status,
            error: d.error,
            time,
        });
    }
}

/// Does the reconciler's steps: Portainer, the stack folders, the compose engine.
struct Shell {
    root: PathBuf,
    docker_socket: PathBuf,
    docker: Option<docker::Client>,
    edge_id: String,
    client: Arc<Client>,
    endpoint_id: i64,
    /// Deploys in progress, one Docker call per step.
    ups: BTreeMap<i64, compose::Up>,
}

impl Shell {
    fn execute(&mut self, work: &Work) -> Outcome {
        match work {
            Work::Fetch { id, version } => {
                self.ups.remove(id);
                self.fetch(*id, *version)
            }
            Work::Load {
                id,
                project,
                entry_file,
            } => self.load(*id, project, entry_file),
            Work::Up { id } => self.up(*id),
            Work::Check { project, .. } => match self
                .docker()
                .and_then(|d| compose::ps(d, project).map_err(|e| e.to_string()))
            {
                Ok(states) => Outcome::Seen(seen(&states)),
                Err(e) => Outcome::Failed(e),
            },
            Work::Remove { id, project } => {
                self.ups.remove(id);
                if !project.is_empty() {
                    let down = self
                        .docker()
                        .and_then(|d| compose::down(d, project, false).map_err(|e| e.to_string()));
                    if let Err(e) = down {
                        return Outcome::Failed(e);
                    }
                }
                match folder::remove(&self.root, *id) {
                    Ok(()) => Outcome::Removed,
                    Err(e) => Outcome::Failed(e.to_string()),
                }
            }
        }
    }

    fn fetch(&mut self, id: i64, version: i64) -> Outcome {
        let body = match self.client.stack_payload(self.endpoint_id, id, version) {
            Ok(body) => body,
            Err(e @ portainer::Error::Body(_)) => return Outcome::Invalid(e.to_string()),
            Err(e) => return Outcome::Unreachable(e.to_string()),
        };
        let payload = match Payload::parse(&body) {
            Ok(p) => p,
            Err(e) => return Outcome::Invalid(e.to_string()),
        };
        let project = project_name(&payload.name);
        if let Err(e) = folder::write(&self.root, id, &payload) {
            return Outcome::Unreachable(e.to_string());
        }
        Outcome::Fetched {
            files_hash: payload.files_hash(),
            entry_file: payload.entry_file,
            name: payload.name,
            project,
        }
    }

    fn load(&mut self, id: i64, project: &str, entry_file: &str) -> Outcome {
        self.ups.remove(&id);
        let mut environment: BTreeMap<String, String> = std::env::vars().collect();
        environment.insert(EDGE_ID_VARIABLE.into(), self.edge_id.clone());
        let folder = folder::path(&self.root, id);
        let source = compose::Source {
            working_dir: folder.clone(),
            files: vec![entry_file.into()],
            project_name: project.to_owned(),
            environment,
            env_file: None,
        };
        match compose::load(&source) {
            Ok(loaded) => {
                for warning in &loaded.warnings {
                    log::warn!("edge stack {id}: {warning}");
                }
                let wait = wait_limit(&loaded);
                self.ups.insert(id, compose::Up::new(&loaded));
                Outcome::Loaded { wait }
            }
            // The operator knows the file by its name in Portainer, not by the device's path.
            Err(e) => {
                Outcome::Invalid(e.to_string().replace(&format!("{}/", folder.display()), ""))
            }
        }
    }

    fn up(&mut self, id: i64) -> Outcome {
        if let Err(e) = self.docker() {
            return Outcome::Failed(e);
        }
        let (Some(docker), Some(up)) = (self.docker.as_ref(), self.ups.get_mut(&id)) else {
            return Outcome::Failed("the deploy was interrupted; starting it again".into());
        };
        match up.step(docker) {
            Ok(compose::Step::Continue) => Outcome::Stepped,
            Ok(compose::Step::Done) => {
                self.ups.remove(&id);
                Outcome::Deployed
            }
            Err(e) => {
                self.ups.remove(&id);
                Outcome::Failed(e.to_string())
            }
        }
    }

    /// The Docker client, connected on first use (and again after a failed connect).
    fn docker(&mut self) -> Result<&docker::Client, String> {
        if self.docker.is_none() {
            let client = docker::Client::connect(&self.docker_socket, docker::Limits::default())
                .map_err(|e| e.to_string())?;
            self.docker = Some(client);
        }
        self.docker.as_ref().ok_or_else(String::new)
    }
}

/// `edge_<name>` as compose normalises project names; a name with nothing usable is refused.
fn project_name(name: &str) -> Result<String, String> {
    if compose::normalize_project_name(name).is_empty() {
        return Err(format!(
            "the stack name {name:?} gives no compose project name: use lowercase letters, digits, '-' or '_'"
        ));
    }
    Ok(compose::normalize_project_name(&format!("edge_{name}")))
}

/// libstack's one minute, or longer when healthchecks need it to report healthy:
/// `start_period + retries × interval` (Docker's defaults: 30 s, 3 retries).
fn wait_limit(project: &compose::Project) -> Duration {
    const SECOND_NS: u64 = 1_000_000_000;
    project
        .services
        .values()
        .filter_map(|s| s.healthcheck.as_ref())
        .filter(|h| h.test.first().map(String::as_str) != Some("NONE"))
        .map(|h| {
            let interval = if h.interval == 0 {
                30 * SECOND_NS
            } else {
                h.interval
            };
            let retries = h.retries.unwrap_or(3);
            Duration::from_nanos(
                h.start_period
                    .saturating_add(retries.saturating_mul(interval)),
            )
        })
        .fold(MIN_WAIT, Duration::max)
}

/// The aggregate, with healthchecks: a running container is not "running" for the stack until
/// its healthcheck passes.
fn seen(states: &[ServiceState]) -> Seen {
    let not_healthy = states
        .iter()
        .find(|s| s.state == "running" && (s.health == "starting" || s.health == "unhealthy"));
    match compose::aggregate(states) {
        StackStatus::Running => match not_healthy {
            Some(s) if s.health == "unhealthy" => {
                Seen::Starting(format!("service {} unhealthy", s.service))
            }
            Some(s) => Seen::Starting(format!("service {} not yet healthy", s.service)),
            None => Seen::Running,
        },
        StackStatus::Completed => Seen::Completed,
        StackStatus::Error(e) => Seen::Error(e),
        StackStatus::Removed => Seen::Gone,
        StackStatus::Starting | StackStatus::Removing => {
            let what = states
                .iter()
                .find(|s| s.state != "running" && s.state != "exited")
                .map_or_else(
                    || "the stack is still starting".to_owned(),
                    |s| format!("service {} still {}", s.service, s.state),
                );
            Seen::Starting(what)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(service: &str, state: &str, code: i64, health: &str) -> ServiceState {
        ServiceState {
            service: service.into(),
            name: format!("edge_x-{service}-1"),
            state: state.into(),
            exit_code: code,
            health: health.into(),
        }
    }

    #[test]
    fn the_mailbox_keeps_the_latest_list_and_null_keeps_an_unread_one() {
        let mut stacks = Stacks {
            mailbox: Arc::new(Mailbox::default()),
        };
        let answer = |json: &str| PollResponse::parse(json.as_bytes()).unwrap();
        stacks.answer(3, &answer(r#"{"stacks":[{"ID":1,"Version":1}]}"#));
        stacks.answer(3, &answer(r#"{"stacks":[{"ID":1,"Version":2}]}"#));
        stacks.answer(4, &answer(r#"{"stacks":null}"#));
        let taken = stacks.mailbox.take(Some(Instant::now()), Option::take);
        let taken = taken.unwrap();
        assert_eq!(taken.endpoint_id, 4);
        assert_eq!(taken.stacks, Some(vec![StackRef { id: 1, version: 2 }]));
        assert!(stacks
            .mailbox
            .take(Some(Instant::now()), Option::take)
            .is_none());
        stacks.answer(4, &answer(r#"{"stacks":[]}"#));
        let taken = stacks.mailbox.take(None, Option::take);
        assert_eq!(taken.unwrap().stacks, Some(vec![]));
    }

    #[test]
    fn project_names_are_normalised_or_refused() {
        assert_eq!(project_name("Web App").unwrap(), "edge_webapp");
        assert_eq!(project_name("my-stack_2").unwrap(), "edge_my-stack_2");
        let err = project_name("ÄÖ !").unwrap_err();
        assert!(err.contains("ÄÖ !"), "{err}");
    }

    #[test]
    fn running_waits_for_healthchecks_and_says_who_is_late() {
        let web = state("web", "running", 0, "");
        assert_eq!(seen(std::slice::from_ref(&web)), Seen::Running);
        assert_eq!(
            seen(&[web.clone(), state("db", "running", 0, "unhealthy")]),
            Seen::Starting("service db unhealthy".into())
        );
        assert_eq!(
            seen(&[web.clone(), state("db", "running", 0, "starting")]),
            Seen::Starting("service db not yet healthy".into())
        );
        assert_eq!(
            seen(&[web.clone(), state("db", "restarting", 0, "")]),
            Seen::Starting("service db still restarting".into())
        );
        assert_eq!(
            seen(&[web, state("db", "exited", 3, "")]),
            Seen::Error("service db exited with code 3".into())
        );
        assert_eq!(seen(&[state("job", "exited", 0, "")]), Seen::Completed);
        assert_eq!(seen(&[]), Seen::Gone);
    }

    #[test]
    fn the_wait_grows_with_healthchecks() {
        let project = |health: &str| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(
                dir.path().join("docker-compose.yml"),
                format!("services:\n  db:\n    image: x\n{health}"),
            )
            .unwrap();
            compose::load(&compose::Source {
                working_dir: dir.path().to_owned(),
                files: vec!["docker-compose.yml".into()],
                project_name: "edge_x".into(),
                ..compose::Source::default()
            })
            .unwrap()
        };
        assert_eq!(wait_limit(&project("")), MIN_WAIT);
        let slow = "    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 20s\n      retries: 5\n      start_period: 40s\n";
        assert_eq!(wait_limit(&project(slow)), Duration::from_secs(140));
        let defaults =
            "    healthcheck:\n      test: [\"CMD\", \"true\"]\n      start_period: 1m\n";
        assert_eq!(wait_limit(&project(defaults)), Duration::from_secs(150));
        let off = "    healthcheck:\n      disable: true\n";
        assert_eq!(wait_limit(&project(off)), MIN_WAIT);
    }
}
