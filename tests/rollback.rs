//! Rolling back and forward between this build and the previous release (docs/upgrading.md):
//! each agent starts on the state file the other wrote and keeps the Edge ID it generated, the
//! endpoint, the pinned Portainer key, the edge stacks (no container recreated, no status sent
//! again) and the edge jobs (they keep running).
//!
//! The previous release's binary is built from this repository's history ([`PREVIOUS_RELEASE`],
//! `git archive` of that commit, `cargo build`) once, into
//! `<target>/previous-release/<commit>/edge-agent`, where later runs find it: the first run
//! takes a few minutes on 2 cores. A clone without that commit (a shallow CI checkout) fails
//! with what to fetch. Needs the Docker Engine, as tests/stacks.rs.

mod support;

use nix::sys::signal::Signal;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::agent::{Agent, Running};
use support::docker::{docker, engine, unique, Project, IMAGE};
use support::{EdgeJob, FakePortainer, Transport};

/// The commit of the release an upgrade from this build may be rolled back to: its agent must
/// start on this build's state file, and this build on its. Move it to each release's commit
/// when the release is tagged (docs/upgrading.md).
const PREVIOUS_RELEASE: &str = "6cbb6a1936e7616795c5c5bbbf55defa4c6fcc72";

const ENDPOINT: i64 = 3;
const PINNED: &str = "3059301306072a8648ce3d020106082a8648ce3d03010703420004aabbccdd";
const DEPLOY: Duration = Duration::from_secs(90);

fn git(repo: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .unwrap_or_else(|e| support::missing(&format!("git ({e})")))
}

/// The previous release's agent, built from git unless an earlier run left it in the target
/// folder.
fn previous_release() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo.join("target"), PathBuf::from);
    let folder = target.join("previous-release");
    let binary = folder.join(PREVIOUS_RELEASE).join("edge-agent");
    if binary.exists() {
        return binary;
    }
    let commit = format!("{PREVIOUS_RELEASE}^{{commit}}");
    if !git(repo, &["cat-file", "-e", &commit]).status.success() {
        let shallow = git(repo, &["rev-parse", "--is-shallow-repository"]);
        panic!(
            "commit {PREVIOUS_RELEASE} (tests/rollback.rs PREVIOUS_RELEASE) is not in {} \
             (shallow clone: {}): fetch it, e.g. `git fetch --unshallow` or `git fetch origin \
             {PREVIOUS_RELEASE}`, or check out with the full history",
            repo.display(),
            String::from_utf8_lossy(&shallow.stdout).trim()
        );
    }
    let source = folder.join("source");
    let build = folder.join("build");
    for old in [&source, &build] {
        if old.exists() {
            fs::remove_dir_all(old).unwrap();
        }
    }
    fs::create_dir_all(&source).unwrap();
    let archive = format!(
        "git -C '{}' archive --format=tar {PREVIOUS_RELEASE} | tar -x -C '{}'",
        repo.display(),
        source.display()
    );
    let unpacked = Command::new("sh").args(["-ec", &archive]).status().unwrap();
    assert!(unpacked.success(), "{archive} failed");
    let started = Instant::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--locked", "--bin", "edge-agent"])
        .current_dir(&source)
        .env("CARGO_TARGET_DIR", &build)
        .status()
        .expect("run cargo build");
    assert!(
        built.success(),
        "cargo build of {PREVIOUS_RELEASE} in {} failed",
        source.display()
    );
    eprintln!(
        "built the previous release {PREVIOUS_RELEASE} in {:.0?}",
        started.elapsed()
    );
    // Kept under its commit's name only once complete; the build folder (1 GB) is not kept.
    let partial = folder.join(format!("{PREVIOUS_RELEASE}.partial"));
    fs::create_dir_all(&partial).unwrap();
    fs::copy(build.join("debug/edge-agent"), partial.join("edge-agent")).unwrap();
    fs::rename(&partial, binary.parent().unwrap()).unwrap();
    fs::remove_dir_all(&source).unwrap();
    fs::remove_dir_all(&build).unwrap();
    binary
}

/// Encodes a state file body as format 2 (header line, then the JSON).
fn state_file(body: &serde_json::Value) -> Vec<u8> {
    let body = body.to_string();
    let mut crc = !0u32;
    for byte in body.bytes() {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    let mut file = format!("edge-agent-state 2 {:08x} {}\n", !crc, body.len()).into_bytes();
    file.extend_from_slice(body.as_bytes());
    file
}

fn state(agent: &Agent) -> serde_json::Value {
    let text = agent.state_text();
    let body = text.split_once('\n').map_or("", |(_, body)| body);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("state file: {e}\n{text}"))
}

fn compose(command: &str) -> String {
    format!(
        "services:\n  app:\n    image: {IMAGE}\n    command: [\"busybox\", \"sh\", \"-c\", \"{command}\"]\n    stop_grace_period: 1s\n"
    )
}

fn job(id: i64, runs: &Path) -> EdgeJob {
    EdgeJob {
        id,
        cron: "@every 1s".into(),
        script: format!("echo {id} >> {}\n", runs.display()),
        version: 1,
        collect_logs: false,
    }
}

/// How many times job `id` ran.
fn runs_of(runs: &Path, id: i64) -> usize {
    let text = fs::read_to_string(runs).unwrap_or_default();
    text.lines().filter(|l| *l == id.to_string()).count()
}

/// Waits until `done`; fails at once if the agent exits (it refused the state file, say).
fn wait(what: &str, running: &mut Running, done: impl Fn() -> bool) {
    let deadline = Instant::now() + DEPLOY;
    while !done() {
        assert!(Instant::now() < deadline, "{what}:\n{}", running.log());
        if let Some(status) = running.wait_exit(Duration::from_millis(100)) {
            panic!(
                "waiting for {what}, the agent exited: {status}\n{}",
                running.log()
            );
        }
    }
}

/// What must not change when the other agent takes over: the state's identity, endpoint, key,
/// stacks and jobs, each stack's reports and containers (IDs and start times).
#[derive(Debug, PartialEq)]
struct Kept {
    state: serde_json::Value,
    histories: Vec<Vec<u8>>,
    containers: Vec<(String, String, String)>,
}

fn kept(agent: &Agent, server: &FakePortainer, projects: &[(i64, &Project)]) -> Kept {
    let mut state = state(agent);
    // The Edge key is the env file's, whichever agent wrote it.
    state["edge_key"] = serde_json::Value::Null;
    let mut containers = Vec::new();
    for (_, project) in projects {
        for (name, id) in project.containers() {
            let out = docker(&["inspect", "-f", "{{.State.StartedAt}}", &id]);
            let started = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            containers.push((name, id, started));
        }
    }
    Kept {
        state,
        histories: projects
            .iter()
            .map(|(id, _)| server.stack_history(*id))
            .collect(),
        containers,
    }
}

/// Starts `command` on `agent`'s files and lets it poll a while: it must carry on with what is
/// there, polling with the same Edge ID and running the jobs, without deploying or reporting
/// anything.
fn takes_over(
    agent: &Agent,
    command: Command,
    server: &FakePortainer,
    projects: &[(i64, &Project)],
    runs: &Path,
    jobs: &[i64],
) -> Running {
    let before = kept(agent, server, projects);
    let edge_id = before.state["edge_id"]
        .as_str()
        .expect("an Edge ID in the state")
        .to_owned();
    let job_runs: Vec<usize> = jobs.iter().map(|id| runs_of(runs, *id)).collect();
    let (polls, seen) = (server.poll_count(), server.requests().len());
    let mut running = agent.spawn(&mut agent.command_of(command, &[]));
    wait("8 polls", &mut running, || server.poll_count() >= polls + 8);
    // The first check of a running stack is at once: a wrong one would have reported by now.
    std::thread::sleep(Duration::from_secs(2));
    for (id, count) in jobs.iter().zip(job_runs) {
        wait(&format!("job {id} runs again"), &mut running, || {
            runs_of(runs, *id) > count
        });
    }
    assert_eq!(kept(agent, server, projects), before, "{}", running.log());
    // Polls only, answered, with the same Edge ID: no payload fetched, no status sent.
    for request in &server.requests()[seen..] {
        let what = format!("{} {} -> {}", request.method, request.path, request.status);
        let path = request.path.split('?').next().unwrap_or_default();
        if path == "/api/system/status" {
            continue;
        }
        assert!(
            request.method == "GET" && path.ends_with("/edge/status"),
            "{what}\n{}",
            running.log()
        );
        assert!(matches!(request.status, 200 | 304), "{what}");
        assert_eq!(
            request.header("X-PortainerAgent-EdgeID"),
            Some(edge_id.as_str()),
            "{what}"
        );
    }
    running
}

fn stop(mut running: Running) {
    running.signal(Signal::SIGTERM);
    let status = running.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        running.log()
    );
}

#[test]
#[ignore = "needs git history, cargo, the Docker Engine and busybox-static (tests/run.sh)"]
fn previous_release_and_this_build_start_on_each_others_state_file() {
    let previous = previous_release();
    let _client = engine();
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(ENDPOINT, None);
    server.set_checkin(0.5);
    let (first, second) = (unique("roll1"), unique("roll2"));
    let (p1, p2) = (Project::for_stack(&first), Project::for_stack(&second));
    server.put_edge_stack(
        1,
        &first,
        &[("docker-compose.yml", &compose("exec busybox sleep 3600"))],
    );
    let agent = Agent::new();
    let runs = agent.dir.path().join("job-runs");
    // No EDGE_ID: each agent must use the one generated first, which the server binds.
    agent.write_env(&format!(
        "EDGE_KEY={}\nEDGE_TUNNEL=false\nLOG_LEVEL=DEBUG\nDOCKER_HOST=unix://{}\n",
        agent.key(&server, ENDPOINT),
        support::docker::socket().display()
    ));
    // Portainer's key as a signed request through the tunnel would have pinned it.
    fs::create_dir_all(&agent.data).unwrap();
    let seeded = serde_json::json!({ "server_key": PINNED });
    fs::write(agent.data.join("edge-agent.state"), state_file(&seeded)).unwrap();

    // 1. The previous release deploys stack 1 and schedules job 5.
    server.set_stacks(ENDPOINT, &[(1, 1)]);
    server.set_jobs(ENDPOINT, &[job(5, &runs)]);
    let mut running = agent.spawn(&mut agent.command_of(Command::new(&previous), &[]));
    wait("stack 1 running (3, 8, 1, 7)", &mut running, || {
        server.stack_history(1) == [3, 8, 1, 7]
    });
    wait("job 5 runs", &mut running, || runs_of(&runs, 5) > 0);
    stop(running);
    let written = state(&agent);
    assert_eq!(written["server_key"], PINNED, "{written}");
    assert_eq!(written["endpoint_id"], ENDPOINT, "{written}");
    assert!(written["edge_id"].is_string(), "{written}");

    // 2. This build on the previous release's file; it then deploys stack 2 and schedules job
    //    6, so that it writes the file in its turn.
    let only_first = [(1, &p1)];
    let mut running = takes_over(
        &agent,
        support::agent::binary(),
        &server,
        &only_first,
        &runs,
        &[5],
    );
    server.put_edge_stack(
        2,
        &second,
        &[("docker-compose.yml", &compose("exec busybox sleep 3601"))],
    );
    server.set_stacks(ENDPOINT, &[(1, 1), (2, 1)]);
    server.set_jobs(ENDPOINT, &[job(5, &runs), job(6, &runs)]);
    wait("stack 2 running (3, 8, 1, 7)", &mut running, || {
        server.stack_history(2) == [3, 8, 1, 7]
    });
    wait("job 6 runs", &mut running, || runs_of(&runs, 6) > 0);
    stop(running);

    // 3. The previous release back on this build's file.
    let both = [(1, &p1), (2, &p2)];
    let running = takes_over(
        &agent,
        Command::new(&previous),
        &server,
        &both,
        &runs,
        &[5, 6],
    );
    stop(running);
    let written = state(&agent);
    assert_eq!(written["server_key"], PINNED, "{written}");
    assert_eq!(
        written["stacks"].as_object().map(|s| s.len()),
        Some(2),
        "{written}"
    );
    println!(
        "histories after two hand-overs: {:?} {:?}",
        server.stack_history(1),
        server.stack_history(2)
    );
}
