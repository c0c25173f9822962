//! The agent killed with SIGKILL at random moments while it saves its state rapidly: every
//! restart finds a valid state file with the pinned Portainer key, the Edge key and ID, and
//! the endpoint id once learned.
//!
//! The fake server makes the agent write often: a global key (endpoint id 0) that it resolves
//! and saves, a check-in of 10 ms, and a list of edge jobs and stacks that changes every 20 ms
//! (each change is a job script and a state write; a stack with an invalid compose file is
//! fetched, written and reported as an error, three state writes, without Docker). The
//! Portainer key is pinned in the state file the agent starts from, as a signed request
//! through the tunnel would have left it (that needs the chisel server, tests/tunnel.rs); each
//! save rewrites the whole state, so losing it would show.
//!
//! `EDGE_AGENT_KILLS` (default 1000) sets the number of kills; the figures are printed
//! (`cargo test --test sigkill -- --nocapture`).

mod support;

use nix::sys::signal::Signal;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::agent::Agent;
use support::state_file::{decode, encode, Random};
use support::{EdgeJob, FakePortainer, Transport};

const EDGE_ID: &str = "5e0a3c1f-sigkill";
const PINNED: &str = "3059301306072a8648ce3d020106082a8648ce3d03010703420004aabbccdd";
const STATE: &str = "edge-agent.state";

#[test]
fn every_restart_after_a_sigkill_finds_a_valid_state() {
    let kills: usize = std::env::var("EDGE_AGENT_KILLS")
        .ok()
        .map(|v| v.parse().expect("EDGE_AGENT_KILLS is a number"))
        .unwrap_or(1000);
    let server = Arc::new(FakePortainer::start(Transport::Plain));
    server.add_endpoint(3, Some(EDGE_ID));
    server.set_checkin(0.01);
    server.put_edge_stack(
        1,
        "web",
        &[("docker-compose.yml", "services:\n  web:\n    portz: 80\n")],
    );
    let agent = Agent::new();
    let key = support::agent::key_for(&server.url(), 0);
    agent.write_env(&format!(
        "EDGE_KEY={key}\nEDGE_ID={EDGE_ID}\nDOCKER_HOST=unix://{}/no-docker.sock\n",
        agent.dir.path().display()
    ));
    fs::create_dir_all(&agent.data).unwrap();
    let seeded = serde_json::json!({
        "edge_key": key, "edge_id": EDGE_ID, "endpoint_id": null, "server_key": PINNED,
        "stacks": {}, "jobs": {},
    });
    fs::write(agent.data.join(STATE), encode(&seeded)).unwrap();

    // The server's lists change every 20 ms: jobs and the stack come and go, versions rise.
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut version = 1;
            while !stop.load(Ordering::Relaxed) {
                let job = |id, version| EdgeJob {
                    id,
                    cron: "0 0 1 1 *".into(),
                    script: format!("echo {version}\n"),
                    version,
                    collect_logs: false,
                };
                let jobs = match version % 3 {
                    0 => vec![],
                    1 => vec![job(1, version)],
                    _ => vec![job(1, version), job(2, version)],
                };
                server.set_jobs(3, &jobs);
                let stacks = if version % 4 < 2 {
                    vec![(1, version)]
                } else {
                    vec![]
                };
                server.set_stacks(3, &stacks);
                version += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let mut random = Random::from_clock();
    let seed = random.0;
    let temp = agent.data.join(format!("{STATE}.tmp"));
    let backup = agent.data.join(format!("{STATE}.bak"));
    let (mut mid_save, mut between_renames, mut changed, mut from_backup) = (0, 0, 0, 0);
    let mut endpoint_learned = false;
    let mut before = fs::read(agent.data.join(STATE)).unwrap();
    let started = Instant::now();
    for kill in 1..=kills {
        let mut running = agent.spawn(&mut agent.command(&[]));
        std::thread::sleep(Duration::from_micros(random.below(150_000)));
        running.signal(Signal::SIGKILL);
        running.wait_exit(Duration::from_secs(10)).expect("killed");
        let log = running.log();
        for bad in [
            "is damaged",
            "empty state",
            "cannot read state file",
            "newer",
        ] {
            assert!(!log.contains(bad), "start {kill} found a bad state:\n{log}");
        }
        from_backup += usize::from(log.contains("using the last good copy"));

        mid_save += usize::from(temp.exists());
        let main = agent.data.join(STATE);
        let state = if main.exists() {
            fs::read(&main)
                .map_err(|e| e.to_string())
                .and_then(|b| decode(&b))
        } else {
            between_renames += 1;
            fs::read(&backup)
                .map_err(|e| e.to_string())
                .and_then(|b| decode(&b))
        }
        .unwrap_or_else(|e| panic!("after kill {kill} (seed {seed}): {e}"));
        assert_eq!(state["server_key"], PINNED, "after kill {kill}: {state}");
        assert_eq!(
            state["edge_key"],
            key.as_str(),
            "after kill {kill}: {state}"
        );
        assert_eq!(state["edge_id"], EDGE_ID, "after kill {kill}: {state}");
        if state["endpoint_id"] == 3 {
            endpoint_learned = true;
        } else {
            assert!(
                !endpoint_learned,
                "after kill {kill}: endpoint id lost: {state}"
            );
        }
        let now = fs::read(&main).unwrap_or_default();
        changed += usize::from(now != before);
        before = now;
    }
    let took = started.elapsed();

    // One more start, stopped properly: it polls with what it saved.
    let polls = server.poll_count();
    let mut running = agent.spawn(&mut agent.command(&[]));
    assert!(server.wait_until(Duration::from_secs(10), |_| server.poll_count() > polls + 3));
    running.signal(Signal::SIGTERM);
    running.wait_exit(Duration::from_secs(10)).expect("stops");
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    let state = decode(&fs::read(agent.data.join(STATE)).unwrap()).unwrap();
    assert_eq!(state["server_key"], PINNED, "{state}");
    assert_eq!(state["endpoint_id"], 3, "{state}");
    assert!(endpoint_learned);
    eprintln!(
        "{kills} SIGKILLs, {} restarts in {took:.1?} (seed {seed}): {changed} runs changed the state file, \
         {mid_save} kills left a temporary state file (mid-save), {between_renames} came between the two renames \
         ({from_backup} starts used the backup); every restart found a valid state",
        kills + 1
    );
    assert!(changed > kills / 4, "the agent saved too rarely: {changed}");
}
