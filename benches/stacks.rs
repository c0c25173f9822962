//! Edge stacks benchmark: the `min-size` agent against the fake Portainer server and the real
//! Docker Engine, through a counting proxy on the Docker socket (`support::docker::HookedProxy`). Prints
//! - RSS before, at the peak of and after deploying a 10-service stack;
//! - for 5 deployed stacks left idle (`STACKS_IDLE_SECS`, default 120, polls every second):
//!   Docker calls per hour by route, and the CPU time of the `stacks` thread per reconcile pass
//!   (one pass per poll answer, plus the 30 s checks).
//!
//! Run: `cargo bench --bench stacks`. Needs Docker and `/bin/busybox` (busybox-static).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::agent::{proc_kib, Agent, Running};
use support::docker::{engine, unique, HookedProxy, Project, IMAGE};
use support::{FakePortainer, Transport};

const DEPLOY: Duration = Duration::from_secs(180);

fn main() {
    engine();
    support::agent::use_min_size_build();
    let idle_secs: u64 = std::env::var("STACKS_IDLE_SECS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(120);
    let proxy = DockerProxy::start();
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(1, None);
    server.set_checkin(1.0);
    let agent = Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nEDGE_ID=stacks-bench\nEDGE_TUNNEL=false\nDOCKER_HOST=unix://{}\n",
        agent.key(&server, 1),
        proxy.path.display()
    ));
    let running = agent.spawn(&mut agent.command(&[]));
    let pid = running.pid();
    while server.poll_count() < 3 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = proc_kib(pid, "status", "VmRSS");

    // A 10-service stack.
    let big = unique("ten");
    let _big_project = Project::for_stack(&big);
    let mut file = String::from("services:\n");
    for i in 0..10 {
        file.push_str(&format!(
            "  s{i}:\n    image: {IMAGE}\n    command: [\"busybox\", \"sleep\", \"3600\"]\n    stop_grace_period: 1s\n"
        ));
    }
    server.put_edge_stack(1, &big, &[("docker-compose.yml", &file)]);
    let calls_before = proxy.count();
    let started = Instant::now();
    server.set_stacks(1, &[(1, 1)]);
    let mut peak = 0;
    while server.stack_history(1) != [3, 8, 1, 7] {
        assert!(started.elapsed() < DEPLOY, "{}", running.log());
        peak = peak.max(proc_kib(pid, "status", "VmRSS"));
        std::thread::sleep(Duration::from_millis(5));
    }
    let deploy_time = started.elapsed();
    let deploy_calls = proxy.count() - calls_before;
    std::thread::sleep(Duration::from_secs(5));
    let after = proc_kib(pid, "status", "VmRSS");
    println!("10-service stack: deployed in {:.1} s with {deploy_calls} Docker calls (status history 3, 8, 1, 7)", deploy_time.as_secs_f64());
    println!("| RSS before (KiB) | peak while deploying (KiB, sampled every 5 ms) | VmHWM (KiB) | 5 s after running (KiB) |");
    println!("|---|---|---|---|");
    println!(
        "| {before} | {peak} | {} | {after} |",
        proc_kib(pid, "status", "VmHWM")
    );
    println!();
    remove_all(&server, &running, &[1]);

    // Five stacks, left idle.
    let names: Vec<String> = (0..5).map(|i| unique(&format!("idle{i}"))).collect();
    let _projects: Vec<Project> = names.iter().map(|n| Project::for_stack(n)).collect();
    let one = format!(
        "services:\n  app:\n    image: {IMAGE}\n    command: [\"busybox\", \"sleep\", \"3600\"]\n    stop_grace_period: 1s\n"
    );
    let ids: Vec<i64> = (10..15).collect();
    for (id, name) in ids.iter().zip(&names) {
        server.put_edge_stack(*id, name, &[("docker-compose.yml", &one)]);
    }
    server.set_stacks(1, &ids.iter().map(|id| (*id, 1)).collect::<Vec<_>>());
    let started = Instant::now();
    while !ids
        .iter()
        .all(|id| server.stack_history(*id) == [3, 8, 1, 7])
    {
        assert!(started.elapsed() < DEPLOY, "{}", running.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Past the first watch checks, then measure.
    std::thread::sleep(Duration::from_secs(2));
    let tid = thread_id(pid, "stacks").expect("the stacks thread");
    let (cpu0, polls0) = (thread_cpu(pid, &tid), server.poll_count());
    proxy.reset();
    let rss0 = proc_kib(pid, "status", "VmRSS");
    std::thread::sleep(Duration::from_secs(idle_secs));
    let (cpu1, polls1) = (thread_cpu(pid, &tid), server.poll_count());
    let calls = proxy.calls();
    let passes = (polls1 - polls0) as u64;
    let total: usize = calls.values().sum();
    let per_hour = |n: usize| n as f64 * 3600.0 / idle_secs as f64;
    println!("5 idle stacks over {idle_secs} s ({passes} poll answers, each a reconcile pass):");
    println!("| Docker calls | per hour | by route |");
    println!("|---|---|---|");
    let routes: Vec<String> = calls.iter().map(|(r, n)| format!("{r}: {n}")).collect();
    println!(
        "| {total} | {:.0} | {} |",
        per_hour(total),
        routes.join(", ")
    );
    println!(
        "stacks thread CPU: {:.1} ms in all, {:.1} µs per pass; RSS {rss0} KiB -> {} KiB",
        (cpu1 - cpu0) as f64 / 1e6,
        (cpu1 - cpu0) as f64 / 1e3 / passes.max(1) as f64,
        proc_kib(pid, "status", "VmRSS")
    );
    remove_all(&server, &running, &ids);
}

fn remove_all(server: &FakePortainer, running: &Running, ids: &[i64]) {
    server.set_stacks(1, &[]);
    let started = Instant::now();
    while !ids
        .iter()
        .all(|id| server.stack_history(*id).ends_with(&[9, 4]))
    {
        assert!(started.elapsed() < DEPLOY, "{}", running.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The id of the thread of `pid` named `name`.
fn thread_id(pid: i32, name: &str) -> Option<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .find_map(|t| {
            let tid = t.ok()?.file_name().into_string().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
            (comm.trim() == name).then_some(tid)
        })
}

/// Nanoseconds the thread ran (`schedstat`'s first field).
fn thread_cpu(pid: i32, tid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Counts the agent's Docker calls (one connection per call) by method and path, through a
/// [`HookedProxy`] on the engine's socket.
struct DockerProxy {
    _proxy: HookedProxy,
    path: PathBuf,
    calls: Arc<Mutex<Vec<String>>>,
}

impl DockerProxy {
    fn start() -> DockerProxy {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        let proxy = HookedProxy::start(move |method, path| {
            let path = path.split('?').next().unwrap_or("");
            let path = match path.strip_prefix("/v1.") {
                Some(rest) => rest.split_once('/').map_or(path, |(_, p)| p),
                None => path.trim_start_matches('/'),
            };
            seen.lock().unwrap().push(format!("{method} /{path}"));
        });
        DockerProxy {
            path: proxy.path.clone(),
            _proxy: proxy,
            calls,
        }
    }

    fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    fn reset(&self) {
        self.calls.lock().unwrap().clear();
    }

    /// `METHOD /path` (version prefix and query dropped) → count.
    fn calls(&self) -> BTreeMap<String, usize> {
        let mut by_route = BTreeMap::new();
        for line in self.calls.lock().unwrap().iter() {
            *by_route.entry(line.clone()).or_default() += 1;
        }
        by_route
    }
}
