//! Soak: the `min-size` agent for `SOAK_MINUTES` (default 3) against the fake Portainer (check-in
//! 5 s), the chisel test server and the real Docker Engine, cycling through the phases of
//! [`CYCLE`]: healthy polls; the tunnel open with Portainer's Docker API calls through it, then
//! closed; 5xx bursts; the server down (connection refused, then accepting and never answering);
//! idle (no change at all). While Portainer is up and busy it asks for a job's log every minute
//! (the job runs every minute) and redeploys a stack (a new version) every 3 minutes. A run
//! shorter than a cycle (36 minutes) plays it faster, every phase shortened in proportion.
//!
//! Every minute it prints a row: the phases in it, the agent's VmRSS and VmHWM, open fds,
//! threads, CPU seconds (utime + stime) used in that minute, state-file saves in that minute
//! (inotify: every save renames a new file over `edge-agent.state`), status polls the server
//! received (and how many it answered 200/304), job logs and stack status reports accepted, and
//! Docker API calls through the tunnel (ok/failed). Then a summary: first and last rows, growth
//! of RSS, fds and threads, state-file saves per idle hour, and per outage the backoff: the
//! longest wait between poll attempts (against the cap of `src/system/backoff.rs`) and the time
//! from the server's return to the first successful poll (against one check-in plus the backoff
//! slot the agent was in). The agent runs with `LOG_LEVEL=DEBUG` so that each refused attempt
//! shows as a line (nothing reaches a server then).
//!
//! Run: `SOAK_MINUTES=70 nice cargo bench --bench soak` (needs Go, Docker and busybox-static).
//! `EDGE_AGENT_TEST_BIN=path` soaks that binary instead; `SOAK_AGENT_LOG=path` keeps the agent's
//! log there.

#[path = "../tests/support/mod.rs"]
mod support;

use edge_agent::backoff;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::agent::{proc_kib, Agent};
use support::api_client::{Connection, Signer};
use support::chisel::{credentials, free_port, ChiselServer, EDGE_ID};
use support::docker::{unique, Project, IMAGE};
use support::{EdgeJob, FakePortainer, Fault, Recorded, Transport};

const CHECKIN: Duration = Duration::from_secs(5);
const ENDPOINT: i64 = 3;
const STACK: i64 = 1;
const JOB: i64 = 1;
const TICK: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Healthy,
    Tunnel,
    Errors,
    Refused,
    Hang,
    Idle,
}

use Phase::*;

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Healthy => "healthy",
            Tunnel => "tunnel",
            Errors => "5xx",
            Refused => "refused",
            Hang => "hang",
            Idle => "idle",
        }
    }

    /// Portainer makes changes: a job log every minute, a new stack version every
    /// [`REDEPLOY_EVERY`] minutes.
    fn busy(self) -> bool {
        matches!(self, Healthy | Tunnel | Errors)
    }
}

/// One cycle, in minutes (36 in all). `5xx`: 20 s of 500, 502 or 503 to everything, then 10 s
/// of answers, in turn. `refused` then `hang` is one outage of 9 minutes, long enough for the
/// backoff to reach its cap; the healthy phase after it outlasts the longest wait (the cap) and
/// the changes made meanwhile, so that the agent is done with every change before `idle`.
const CYCLE: [(Phase, u32); 8] = [
    (Healthy, 3),
    (Tunnel, 3),
    (Errors, 2),
    (Healthy, 2),
    (Refused, 5),
    (Hang, 4),
    (Healthy, 7),
    (Idle, 10),
];
const REDEPLOY_EVERY: f64 = 3.0;

/// What the server does, as the agent sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Served {
    Up,
    Refused,
    Hang,
    Status(u16),
}

fn main() {
    let minutes: f64 = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n: &f64| *n > 0.0)
        .unwrap_or(3.0);
    let binary = support::agent::use_min_size_build();
    support::docker::engine();
    let cycle_minutes: u32 = CYCLE.iter().map(|(_, m)| m).sum();
    // Seconds per schedule minute.
    let unit = 60.0 * (minutes / f64::from(cycle_minutes)).min(1.0);
    let total = minutes * 60.0;
    let timeline = schedule(total, unit);
    println!(
        "soak: {} for {minutes} min, check-in {} s, one schedule minute = {unit:.1} s",
        binary.display(),
        CHECKIN.as_secs()
    );

    let chisel = ChiselServer::start(&[]);
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(ENDPOINT, Some(EDGE_ID));
    server.set_checkin(CHECKIN.as_secs_f64());
    let door = Door::start(server.port());
    let name = unique("soak");
    let project = Project::for_stack(&name);
    let mut job = EdgeJob {
        id: JOB,
        cron: "* * * * *".into(),
        script: "echo soak job run by $EDGE_ID; date; ls /\n".into(),
        version: 1,
        collect_logs: false,
    };
    server.set_jobs(ENDPOINT, std::slice::from_ref(&job));
    let agent = Agent::new();
    let key = support::edge_key(
        &format!("http://127.0.0.1:{}", door.port),
        &chisel.addr,
        &chisel.fingerprint,
        ENDPOINT,
    );
    agent.write_env(&format!(
        "EDGE_KEY={key}\nEDGE_ID={EDGE_ID}\nDOCKER_HOST=unix://{}\nLOG_LEVEL=DEBUG\n",
        support::docker::socket().display()
    ));
    let running = agent.spawn(&mut agent.command(&[]));
    let pid = running.pid();
    let saves = watch_saves(&agent.data);
    let failed_lines = follow_failures(running.log_path().to_owned());
    let tunnel_port = free_port();
    let tunnel_credentials = credentials("user:pass", EDGE_ID);
    let api = Arc::new(ApiCounts::default());

    let t0 = Instant::now();
    let mut served: Vec<(Instant, Served)> = vec![(t0, Served::Up)];
    let serve = |s: Served, served: &mut Vec<(Instant, Served)>| {
        if served.last().map(|l| l.1) == Some(s) {
            return;
        }
        door.set(match s {
            Served::Refused => DoorMode::Refuse,
            Served::Hang => DoorMode::Hang,
            _ => DoorMode::Open,
        });
        server.set_fault(match s {
            Served::Status(code) => Some(Fault::Status(code)),
            _ => None,
        });
        served.push((Instant::now(), s));
    };
    let mut version = 0;
    let mut next_redeploy = 0.0;
    let mut next_job_log = 0.0;
    let mut current: Option<usize> = None;
    let mut traffic: Option<(Arc<AtomicBool>, JoinHandle<()>)> = None;
    let mut rows: Vec<Row> = Vec::new();
    let mut before = Sample::take(pid);
    let ticks = clock_ticks();
    println!();
    println!("{}", Row::HEADER);
    println!("{}", Row::RULE);
    loop {
        let now = t0.elapsed().as_secs_f64();
        let minute = rows.len() + 1;
        let last_part = now >= total && ((minute - 1) as f64 * 60.0) < total - 1.0;
        if now >= minute as f64 * 60.0 || last_part {
            let after = Sample::take(pid);
            let from = t0 + Duration::from_secs_f64((minute - 1) as f64 * 60.0);
            let to = t0 + Duration::from_secs_f64(now);
            let requests = server.requests();
            let row = Row {
                minute,
                phases: phases_between(&timeline, (minute - 1) as f64 * 60.0, now),
                rss: after.rss,
                hwm: after.hwm,
                fds: after.fds,
                threads: after.threads,
                cpu: (after.cpu_ticks - before.cpu_ticks) as f64 / ticks,
                saves: count_in(&saves.lock().unwrap(), from, to),
                polls: polls(&requests, &door.hangs(), from, to),
                job_logs: accepted(&requests, "POST", "/logs", from, to),
                reports: accepted(&requests, "PUT", "/status", from, to),
                api: api.take(),
            };
            println!("{}", row.line());
            rows.push(row);
            before = after;
        }
        let Some(index) = timeline.iter().position(|(_, end, _)| now < *end) else {
            break;
        };
        let (start, _, phase) = timeline[index];
        if current != Some(index) {
            let was = current.map(|i| timeline[i].2);
            if was == Some(Tunnel) && phase != Tunnel {
                if let Some((stop, handle)) = traffic.take() {
                    stop.store(true, Ordering::Relaxed);
                    let _ = handle.join();
                }
                server.set_tunnel(ENDPOINT, None);
            }
            match phase {
                Refused => serve(Served::Refused, &mut served),
                Hang => serve(Served::Hang, &mut served),
                _ => serve(Served::Up, &mut served),
            }
            if phase == Tunnel && was != Some(Tunnel) {
                server.set_tunnel(ENDPOINT, Some((tunnel_port, tunnel_credentials.clone())));
                let stop = Arc::new(AtomicBool::new(false));
                let (s, a, n) = (stop.clone(), api.clone(), project.0.clone());
                let handle = std::thread::spawn(move || portainer_ui(tunnel_port, &n, &s, &a));
                traffic = Some((stop, handle));
            }
            current = Some(index);
        }
        if phase == Errors {
            let period = unit / 2.0;
            let k = ((now - start) / period).floor();
            let code = [500, 502, 503][k as usize % 3];
            let burst = now - start - k * period < period * 2.0 / 3.0;
            serve(
                if burst {
                    Served::Status(code)
                } else {
                    Served::Up
                },
                &mut served,
            );
        }
        if phase.busy() && now >= next_redeploy {
            version += 1;
            server.put_edge_stack(STACK, &name, &[("docker-compose.yml", &compose(version))]);
            server.set_stacks(ENDPOINT, &[(STACK, version)]);
            next_redeploy = now + REDEPLOY_EVERY * unit;
        }
        if phase.busy() && now >= next_job_log {
            job.collect_logs = true;
            server.set_jobs(ENDPOINT, std::slice::from_ref(&job));
            next_job_log = now + unit;
        }
        std::thread::sleep(TICK);
    }
    if let Some((stop, handle)) = traffic.take() {
        stop.store(true, Ordering::Relaxed);
        let _ = handle.join();
    }
    let end = Instant::now();
    serve(Served::Up, &mut served);
    summary(Summary {
        rows: &rows,
        timeline: &timeline,
        t0,
        end,
        saves: &saves.lock().unwrap(),
        served: &served,
        attempts: attempts(
            &server.requests(),
            &door.hangs(),
            &failed_lines.lock().unwrap(),
            &served,
            end,
        ),
    });
    let why = api.why.lock().unwrap();
    if !why.is_empty() {
        let list: Vec<String> = why.iter().map(|(w, n)| format!("{n}x {w}")).collect();
        println!("failed API calls through the tunnel: {}", list.join("; "));
    }
    let mut levels: BTreeMap<String, usize> = BTreeMap::new();
    let log = running.log();
    for line in log
        .lines()
        .filter(|l| l.contains("Portainer answers again"))
    {
        println!("agent: {line}");
    }
    for line in log.lines() {
        let level = line.split_whitespace().nth(1).unwrap_or("?");
        *levels.entry(level.to_owned()).or_default() += 1;
    }
    let levels: Vec<String> = levels.iter().map(|(l, n)| format!("{l} {n}")).collect();
    println!(
        "agent log (LOG_LEVEL=DEBUG): {} bytes, lines by level: {}",
        log.len(),
        levels.join(", ")
    );
    if let Some(copy) = std::env::var_os("SOAK_AGENT_LOG") {
        if let Err(e) = std::fs::write(&copy, &log) {
            println!("cannot copy the agent log to {copy:?}: {e}");
        }
    }
    drop(running);
    drop(project);
}

/// The phases of `CYCLE`, repeated, up to `total` seconds: `(start, end, phase)`.
fn schedule(total: f64, unit: f64) -> Vec<(f64, f64, Phase)> {
    let mut out = Vec::new();
    let mut t = 0.0;
    'cycles: loop {
        for (phase, minutes) in CYCLE {
            if t >= total {
                break 'cycles;
            }
            let end = (t + f64::from(minutes) * unit).min(total);
            out.push((t, end, phase));
            t = end;
        }
    }
    out
}

fn phases_between(timeline: &[(f64, f64, Phase)], from: f64, to: f64) -> String {
    let mut names: Vec<&str> = Vec::new();
    for (start, end, phase) in timeline {
        if *start < to && *end > from && names.last() != Some(&phase.name()) {
            names.push(phase.name());
        }
    }
    names.join("+")
}

/// One service; a new version changes its command and environment, so it is recreated.
fn compose(version: i64) -> String {
    format!(
        "services:\n  app:\n    image: {IMAGE}\n    command: [\"busybox\", \"sh\", \"-c\", \"echo version {version}; exec busybox sleep 86400\"]\n    environment:\n      SOAK_VERSION: \"{version}\"\n    stop_grace_period: 1s\n"
    )
}

struct Sample {
    rss: u64,
    hwm: u64,
    fds: usize,
    threads: u64,
    cpu_ticks: u64,
}

impl Sample {
    fn take(pid: i32) -> Sample {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // After the command's `)`: state is field 3, utime 14, stime 15.
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .map(|f| f.parse().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default();
        Sample {
            rss: proc_kib(pid, "status", "VmRSS"),
            hwm: proc_kib(pid, "status", "VmHWM"),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()),
            threads: proc_kib(pid, "status", "Threads"),
            cpu_ticks: fields.get(11).unwrap_or(&0) + fields.get(12).unwrap_or(&0),
        }
    }
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

struct Row {
    minute: usize,
    phases: String,
    rss: u64,
    hwm: u64,
    fds: usize,
    threads: u64,
    cpu: f64,
    saves: usize,
    polls: (usize, usize),
    job_logs: usize,
    reports: usize,
    api: (u64, u64),
}

impl Row {
    const HEADER: &str = "| min | phase | VmRSS KiB | VmHWM KiB | fds | threads | CPU s | state saves | polls (200/304) | job logs | stack reports | API calls via tunnel (failed) |";
    const RULE: &str = "|---|---|---|---|---|---|---|---|---|---|---|---|";

    fn line(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} | {} ({}) | {} | {} | {} ({}) |",
            self.minute,
            self.phases,
            self.rss,
            self.hwm,
            self.fds,
            self.threads,
            self.cpu,
            self.saves,
            self.polls.0,
            self.polls.1,
            self.job_logs,
            self.reports,
            self.api.0,
            self.api.1
        )
    }
}

fn count_in(times: &[Instant], from: Instant, to: Instant) -> usize {
    times.iter().filter(|t| **t >= from && **t < to).count()
}

fn is_poll(r: &Recorded) -> bool {
    r.method == "GET" && r.path.ends_with("/edge/status")
}

fn poll_ok(r: &Recorded) -> bool {
    matches!(r.status, 200 | 304)
}

/// Status polls that reached the server (or the hanging door) in `[from, to)`, and how many
/// were answered 200 or 304.
fn polls(
    requests: &[Recorded],
    hangs: &[(Instant, Option<Instant>)],
    from: Instant,
    to: Instant,
) -> (usize, usize) {
    let within = |t: Instant| t >= from && t < to;
    let answered: Vec<&Recorded> = requests
        .iter()
        .filter(|r| is_poll(r) && within(r.at))
        .collect();
    let hung = hangs.iter().filter(|(s, _)| within(*s)).count();
    (
        answered.len() + hung,
        answered.iter().filter(|r| poll_ok(r)).count(),
    )
}

fn accepted(
    requests: &[Recorded],
    method: &str,
    suffix: &str,
    from: Instant,
    to: Instant,
) -> usize {
    requests
        .iter()
        .filter(|r| {
            r.method == method
                && r.path.ends_with(suffix)
                && r.status == 200
                && r.at >= from
                && r.at < to
        })
        .count()
}

/// Every save of the state file: the agent renames a new file over `edge-agent.state`.
fn watch_saves(data: &Path) -> Arc<Mutex<Vec<Instant>>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !data.is_dir() {
        assert!(Instant::now() < deadline, "the agent never made {data:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).expect("inotify");
    inotify
        .add_watch(data, AddWatchFlags::IN_MOVED_TO)
        .expect("watch the data folder");
    let saves = Arc::new(Mutex::new(Vec::new()));
    let out = saves.clone();
    std::thread::spawn(move || {
        while let Ok(events) = inotify.read_events() {
            let now = Instant::now();
            for e in events {
                if e.name.as_deref() == Some(std::ffi::OsStr::new("edge-agent.state")) {
                    out.lock().unwrap().push(now);
                }
            }
        }
    });
    saves
}

/// When each `poll failed` line appeared in the agent's log (checked every 100 ms).
fn follow_failures(log: PathBuf) -> Arc<Mutex<Vec<Instant>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = lines.clone();
    std::thread::spawn(move || {
        let mut offset = 0;
        let mut partial = Vec::new();
        loop {
            std::thread::sleep(TICK);
            let Ok(mut file) = File::open(&log) else {
                continue;
            };
            if file.seek(SeekFrom::Start(offset)).is_err() {
                continue;
            }
            let mut fresh = Vec::new();
            let Ok(n) = file.read_to_end(&mut fresh) else {
                continue;
            };
            offset += n as u64;
            partial.extend_from_slice(&fresh);
            let now = Instant::now();
            let Some(last) = partial.iter().rposition(|b| *b == b'\n') else {
                continue;
            };
            let complete: Vec<u8> = partial.drain(..=last).collect();
            let failures = String::from_utf8_lossy(&complete)
                .lines()
                .filter(|l| l.contains(" poll failed"))
                .count();
            out.lock()
                .unwrap()
                .extend(std::iter::repeat_n(now, failures));
        }
    });
    lines
}

#[derive(Default)]
struct ApiCounts {
    ok: AtomicU64,
    failed: AtomicU64,
    /// What failed, how often: `GET /path status` or the panic of a broken connection.
    why: Mutex<BTreeMap<String, u64>>,
}

impl ApiCounts {
    fn take(&self) -> (u64, u64) {
        (
            self.ok.swap(0, Ordering::Relaxed),
            self.failed.swap(0, Ordering::Relaxed),
        )
    }

    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.why.lock().unwrap().entry(why).or_default() += 1;
    }
}

/// Portainer's UI on this environment while the tunnel is open: every second, one kept-alive
/// connection to the reverse port with the calls of the dashboard and of the pages of
/// `project`'s containers.
fn portainer_ui(port: u16, project: &str, stop: &AtomicBool, counts: &ApiCounts) {
    let signer = Signer::new(7, "Portainer-App");
    while !stop.load(Ordering::Relaxed) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let visit = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                one_visit(port, &signer, project, counts)
            }));
            if let Err(panic) = visit {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                counts.fail(format!("connection: {why}"));
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn one_visit(port: u16, signer: &Signer, project: &str, counts: &ApiCounts) {
    let mut c = Connection::open(port);
    let call = |c: &mut Connection, path: &str, signed: bool| {
        let answer = c.request("GET", path, signed.then_some(signer), b"");
        if (200..300).contains(&answer.status) {
            counts.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            let route = path.split('?').next().unwrap_or(path);
            counts.fail(format!("GET {route} {}", answer.status));
        }
        answer
    };
    call(&mut c, "/ping", false);
    for path in [
        "/v1.41/info",
        "/v1.41/version",
        "/v1.41/images/json",
        "/v1.41/volumes",
        "/v1.41/networks",
        "/host/info",
    ] {
        call(&mut c, path, true);
    }
    let containers = call(&mut c, "/v1.41/containers/json?all=1", true).json();
    let ours = containers
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["Labels"]["com.docker.compose.project"].as_str() == Some(project));
    for container in ours {
        let Some(id) = container["Id"].as_str() else {
            continue;
        };
        call(&mut c, &format!("/v1.41/containers/{id}/json"), true);
        call(
            &mut c,
            &format!("/v1.41/containers/{id}/logs?stdout=1&stderr=1&tail=100&timestamps=0"),
            true,
        );
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DoorMode {
    Open,
    Refuse,
    Hang,
}

/// The agent's way to the fake Portainer: open (forwarding), closed (no listener: connection
/// refused) or hanging (accepts, reads, never answers). Every change of mode ends every
/// connection through it, as a server going down or coming back does.
struct Door {
    port: u16,
    shared: Arc<DoorShared>,
}

struct DoorShared {
    backend: u16,
    /// The mode, under the lock that also holds the open connections.
    conns: Mutex<(DoorMode, BTreeMap<u64, Vec<TcpStream>>)>,
    next: AtomicU64,
    /// Status polls while hanging: when each came, when the agent gave up on it.
    hangs: Mutex<Vec<(Instant, Option<Instant>)>>,
}

impl Door {
    fn start(backend: u16) -> Door {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(DoorShared {
            backend,
            conns: Mutex::new((DoorMode::Open, BTreeMap::new())),
            next: AtomicU64::new(0),
            hangs: Mutex::new(Vec::new()),
        });
        let gate = shared.clone();
        std::thread::spawn(move || keep(Some(listener), port, &gate));
        Door { port, shared }
    }

    fn set(&self, mode: DoorMode) {
        let mut conns = self.shared.conns.lock().unwrap();
        conns.0 = mode;
        for (_, streams) in std::mem::take(&mut conns.1) {
            for s in streams {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    fn hangs(&self) -> Vec<(Instant, Option<Instant>)> {
        self.shared.hangs.lock().unwrap().clone()
    }
}

fn keep(mut listener: Option<TcpListener>, port: u16, shared: &Arc<DoorShared>) {
    loop {
        let mode = shared.conns.lock().unwrap().0;
        if mode == DoorMode::Refuse {
            listener = None;
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let Some(l) = &listener else {
            // The port is ours again (std sets SO_REUSEADDR).
            listener = TcpListener::bind(("127.0.0.1", port)).ok();
            if listener.is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
            continue;
        };
        let _ = l.set_nonblocking(true);
        match l.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let shared = shared.clone();
                std::thread::spawn(move || admit(stream, &shared));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn admit(client: TcpStream, shared: &DoorShared) {
    let id = shared.next.fetch_add(1, Ordering::Relaxed);
    let (mode, backend) = {
        let mut conns = shared.conns.lock().unwrap();
        let mode = conns.0;
        let mut streams = vec![client.try_clone().unwrap()];
        let backend = match mode {
            DoorMode::Refuse => {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            DoorMode::Hang => None,
            DoorMode::Open => {
                let Ok(backend) = TcpStream::connect(("127.0.0.1", shared.backend)) else {
                    return;
                };
                streams.push(backend.try_clone().unwrap());
                Some(backend)
            }
        };
        conns.1.insert(id, streams);
        (mode, backend)
    };
    match (mode, backend) {
        (DoorMode::Open, Some(mut backend)) => {
            let (mut from_backend, mut to_client) =
                (backend.try_clone().unwrap(), client.try_clone().unwrap());
            let back = std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_backend, &mut to_client);
                let _ = to_client.shutdown(Shutdown::Both);
            });
            let _ = std::io::copy(&mut (&client), &mut backend);
            let _ = backend.shutdown(Shutdown::Both);
            let _ = back.join();
        }
        _ => {
            let mut reader = BufReader::new(&client);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let poll = line.starts_with("GET ") && line.contains("/edge/status");
            let index = poll.then(|| {
                let mut hangs = shared.hangs.lock().unwrap();
                hangs.push((Instant::now(), None));
                hangs.len() - 1
            });
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
            if let Some(i) = index {
                shared.hangs.lock().unwrap()[i].1 = Some(Instant::now());
            }
        }
    }
    shared.conns.lock().unwrap().1.remove(&id);
}

/// A poll attempt as seen from outside: when it started and ended, and whether it succeeded.
#[derive(Clone, Copy)]
struct Attempt {
    start: Instant,
    end: Instant,
    ok: bool,
}

fn served_at(served: &[(Instant, Served)], t: Instant) -> Served {
    served
        .iter()
        .rev()
        .find(|(at, _)| *at <= t)
        .map_or(Served::Up, |s| s.1)
}

/// Every poll attempt: answered by the server, hung by the door, or refused (a `poll failed`
/// line while the door refused; the line shows up to 100 ms late).
fn attempts(
    requests: &[Recorded],
    hangs: &[(Instant, Option<Instant>)],
    failed_lines: &[Instant],
    served: &[(Instant, Served)],
    end: Instant,
) -> Vec<Attempt> {
    let mut all: Vec<Attempt> = requests
        .iter()
        .filter(|r| is_poll(r))
        .map(|r| Attempt {
            start: r.at,
            end: r.at,
            ok: poll_ok(r),
        })
        .collect();
    all.extend(hangs.iter().map(|(start, stop)| Attempt {
        start: *start,
        end: stop.unwrap_or(end),
        ok: false,
    }));
    all.extend(
        failed_lines
            .iter()
            .filter(|t| {
                served_at(
                    served,
                    t.checked_sub(Duration::from_millis(150)).unwrap_or(**t),
                ) == Served::Refused
            })
            .map(|t| Attempt {
                start: *t,
                end: *t,
                ok: false,
            }),
    );
    all.sort_by_key(|a| a.start);
    all
}

struct Summary<'a> {
    rows: &'a [Row],
    timeline: &'a [(f64, f64, Phase)],
    t0: Instant,
    end: Instant,
    saves: &'a [Instant],
    served: &'a [(Instant, Served)],
    attempts: Vec<Attempt>,
}

fn summary(s: Summary) {
    let (Some(first), Some(last)) = (s.rows.first(), s.rows.last()) else {
        return;
    };
    let at = |secs: f64| s.t0 + Duration::from_secs_f64(secs);
    println!();
    println!("summary over {} minutes", s.rows.len());
    println!("{}", Row::HEADER);
    println!("{}", Row::RULE);
    println!("{}", first.line());
    println!("{}", last.line());
    println!();
    let growth = |a: u64, b: u64| b as i64 - a as i64;
    println!(
        "first -> last row: VmRSS {} -> {} KiB ({:+}), fds {} -> {} ({:+}), threads {} -> {} ({:+}); highest VmHWM {} KiB",
        first.rss,
        last.rss,
        growth(first.rss, last.rss),
        first.fds,
        last.fds,
        growth(first.fds as u64, last.fds as u64),
        first.threads,
        last.threads,
        growth(first.threads, last.threads),
        last.hwm
    );
    // The same point of every cycle: the last row inside each idle phase.
    let idle_ends: Vec<&Row> = s
        .timeline
        .iter()
        .filter(|(_, _, p)| *p == Idle)
        .filter_map(|(start, end, _)| {
            s.rows.iter().rev().find(|r| {
                (r.minute as f64 * 60.0) <= end + 1.0 && (r.minute as f64 * 60.0) > *start
            })
        })
        .collect();
    if idle_ends.len() > 1 {
        let list: Vec<String> = idle_ends
            .iter()
            .map(|r| {
                format!(
                    "min {}: {} KiB, {} fds, {} threads",
                    r.minute, r.rss, r.fds, r.threads
                )
            })
            .collect();
        println!("at the end of each idle phase: {}", list.join("; "));
    }
    let mut idle_secs = 0.0;
    let mut idle_saves = 0;
    let mut per_phase = Vec::new();
    for (start, end, phase) in s.timeline {
        if *phase == Idle {
            idle_secs += end - start;
            let saves: Vec<f64> = s
                .saves
                .iter()
                .filter(|t| **t >= at(*start) && **t < at(*end))
                .map(|t| t.duration_since(at(*start)).as_secs_f64())
                .collect();
            idle_saves += saves.len();
            let first = saves
                .first()
                .map_or(String::new(), |f| format!(", the first {f:.0} s in"));
            per_phase.push(format!(
                "min {:.1}-{:.1}: {}{first}",
                start / 60.0,
                end / 60.0,
                saves.len()
            ));
        }
    }
    println!(
        "state-file saves in each idle phase: {}",
        per_phase.join("; ")
    );
    println!(
        "state-file saves: {} in all; {idle_saves} in {:.0} s of idle phases = {:.1} per idle hour (counted with inotify: IN_MOVED_TO of edge-agent.state)",
        s.saves.len(),
        idle_secs,
        if idle_secs > 0.0 {
            idle_saves as f64 * 3600.0 / idle_secs
        } else {
            0.0
        }
    );
    let cap = backoff::cap(CHECKIN);
    println!();
    println!(
        "backoff while the server was down (cap {} s at check-in {} s; slot after n failures = min(cap, check-in * 2^n)):",
        cap.as_secs(),
        CHECKIN.as_secs()
    );
    println!("| outage | from min | lasted s | failed attempts in a row | longest wait between attempts s | within cap | back -> first successful poll s | bound: check-in + slot s | within bound |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (kind, from, to) in outages(s.served, s.end) {
        // The agent's run of failures that this return ends: from its last success (which may
        // precede an earlier outage it had not recovered from) to its next one.
        let before = s
            .attempts
            .iter()
            .rev()
            .find(|a| a.ok && a.start < to)
            .copied();
        let after = s.attempts.iter().find(|a| a.ok && a.start >= to).copied();
        let since = before.map_or(s.t0, |a| a.start);
        let limit = after.map_or(s.end, |a| a.start);
        let mut seq: Vec<Attempt> = before.into_iter().collect();
        seq.extend(
            s.attempts
                .iter()
                .filter(|a| !a.ok && a.start > since && a.start < limit),
        );
        let failures = seq.iter().filter(|a| !a.ok).count() as u32;
        seq.extend(after);
        let longest = seq
            .windows(2)
            .map(|w| w[1].start.saturating_duration_since(w[0].end))
            .max()
            .unwrap_or_default();
        let slot = CHECKIN.saturating_mul(1u32 << failures.min(31)).min(cap);
        let bound = CHECKIN + slot;
        let (back, within) = match after {
            Some(a) => {
                let back = a.start.saturating_duration_since(to);
                (
                    format!("{:.1}", back.as_secs_f64()),
                    if back <= bound { "yes" } else { "NO" },
                )
            }
            None => ("none before the end".into(), "-"),
        };
        println!(
            "| {kind} | {:.1} | {:.0} | {failures} | {:.1} | {} | {back} | {:.0} | {within} |",
            from.duration_since(s.t0).as_secs_f64() / 60.0,
            to.duration_since(from).as_secs_f64(),
            longest.as_secs_f64(),
            if longest <= cap { "yes" } else { "NO" },
            bound.as_secs_f64(),
        );
    }
}

/// Spans in which the server was not up: `(what, from, to)`; refused then hang is one.
fn outages(served: &[(Instant, Served)], end: Instant) -> Vec<(String, Instant, Instant)> {
    let mut out: Vec<(String, Instant, Instant)> = Vec::new();
    let mut open: Option<(Vec<String>, Instant)> = None;
    for (at, state) in served {
        match (state, &mut open) {
            (Served::Up, Some(_)) => {
                let (kinds, from) = open.take().unwrap();
                out.push((kinds.join("+"), from, *at));
            }
            (Served::Up, None) => {}
            (other, o) => {
                let kind = match other {
                    Served::Status(code) => code.to_string(),
                    Served::Refused => "refused".into(),
                    _ => "hang".into(),
                };
                match o {
                    Some((kinds, _)) => {
                        if kinds.last() != Some(&kind) {
                            kinds.push(kind)
                        }
                    }
                    None => open = Some((vec![kind], *at)),
                }
            }
        }
    }
    if let Some((kinds, from)) = open {
        out.push((kinds.join("+"), from, end));
    }
    out
}
