//! Edge jobs at rest: the `min-size` agent with 20 jobs scheduled (`m 3 * * *`, not due while
//! measured) next to one with none, both against the fake Portainer answering `"checkin": 3600`
//! (so that polls stay out of the figures). Prints, per agent, the wake-ups of the scheduler
//! thread (`jobs`: voluntary context switches, each a return from its sleep) and its CPU time
//! (`schedstat`, ns), both scaled to one hour, and RSS / anonymous memory.
//!
//! Run: `cargo bench --bench jobs` (about 3 minutes; `BENCH_JOBS_SECONDS` changes the 150 s
//! measured). `EDGE_AGENT_TEST_BIN=path` measures that binary instead.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::agent::{proc_kib, Agent, Running};
use support::{EdgeJob, FakePortainer, Transport};

fn main() {
    let seconds: u64 = std::env::var("BENCH_JOBS_SECONDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(150);
    let binary = support::agent::use_min_size_build();
    println!("binary: {}", binary.display());
    let server = FakePortainer::start(Transport::Plain);
    server.set_checkin(3600.0);
    let jobs: Vec<EdgeJob> = (1..=20)
        .map(|id| EdgeJob {
            id,
            cron: format!("{id} 3 * * *"),
            script: format!("echo job {id}\n"),
            version: 1,
            collect_logs: false,
        })
        .collect();
    let with = start(&server, 3, &jobs);
    let without = start(&server, 4, &[]);
    with.1
        .wait_log("edge job 20 v1 scheduled", Duration::from_secs(30));
    without
        .1
        .wait_log("edge jobs: none", Duration::from_secs(30));
    // Settle, then measure from a clean point.
    std::thread::sleep(Duration::from_secs(2));
    let before = [sample(&with.1), sample(&without.1)];
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let elapsed = started.elapsed().as_secs_f64();
    let after = [sample(&with.1), sample(&without.1)];
    println!("measured {elapsed:.0} s, scaled to one hour");
    println!();
    println!("| jobs scheduled | scheduler wake-ups / h | scheduler CPU / h | log thread wake-ups / h | RSS (KiB) | anonymous (KiB) |");
    println!("|---|---|---|---|---|---|");
    for (name, (b, a), running) in [
        ("20", (&before[0], &after[0]), &with.1),
        ("0", (&before[1], &after[1]), &without.1),
    ] {
        let per_hour = |x: u64| x as f64 * 3600.0 / elapsed;
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.0} | {} | {} |",
            per_hour(a.wakeups - b.wakeups),
            per_hour(a.cpu_ns - b.cpu_ns) / 1e6,
            per_hour(a.log_wakeups - b.log_wakeups),
            proc_kib(running.pid(), "status", "VmRSS"),
            proc_kib(running.pid(), "status", "RssAnon"),
        );
    }
}

fn start(server: &FakePortainer, id: i64, jobs: &[EdgeJob]) -> (Agent, Running) {
    server.add_endpoint(id, None);
    server.set_jobs(id, jobs);
    let agent = Agent::new();
    agent.write_env(&format!("EDGE_KEY={}\n", agent.key(server, id)));
    let running = agent.spawn(&mut agent.command(&[]));
    (agent, running)
}

struct Sample {
    wakeups: u64,
    cpu_ns: u64,
    log_wakeups: u64,
}

/// The `jobs` and `job-logs` threads' counters.
fn sample(running: &Running) -> Sample {
    let mut s = Sample {
        wakeups: 0,
        cpu_ns: 0,
        log_wakeups: 0,
    };
    let tasks = format!("/proc/{}/task", running.pid());
    for task in std::fs::read_dir(&tasks).expect("the agent runs") {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let switches = std::fs::read_to_string(path.join("status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        match comm.trim() {
            "jobs" => {
                s.wakeups = switches;
                s.cpu_ns = std::fs::read_to_string(path.join("schedstat"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
            "job-logs" => s.log_wakeups = switches,
            _ => {}
        }
    }
    s
}
