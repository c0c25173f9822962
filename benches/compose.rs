//! The compose engine on a 10-service file (busybox-static containers on the project's default
//! network), next to Debian's docker-compose 1.29.2 on the same file and engine:
//! - time to running: `up` on an empty project until every container is started;
//! - a no-op `up` (nothing changed): time, Docker calls, and calls that changed something
//!   (must be 0);
//! - the same two for `docker-compose up -d`, and the ratios.
//!
//! Run: `cargo bench --bench compose` (needs the Docker Engine, `/bin/busybox`, and for the
//! comparison `docker-compose`, Debian package docker-compose). `COMPOSE_RUNS` sets the runs
//! (default 3); medians are printed.

#[path = "../tests/support/mod.rs"]
mod support;

use edge_agent::compose::{self, Source, Step, Up};
use std::process::Command;
use std::time::{Duration, Instant};
use support::docker::{engine, socket, unique, IMAGE};

const SERVICES: usize = 10;

fn main() {
    let Some(client) = engine() else { return };
    let runs: usize = std::env::var("COMPOSE_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let mut file = String::from("services:\n");
    for i in 0..SERVICES {
        file.push_str(&format!(
            "  s{i}:\n    image: {IMAGE}\n    command: busybox sleep 3600\n    stop_signal: SIGKILL\n    environment:\n      N: \"{i}\"\n"
        ));
    }
    let path = dir.path().join("docker-compose.yml");
    std::fs::write(&path, &file).unwrap();
    let v1 = Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok();
    if !v1 {
        eprintln!("docker-compose is missing (apt-get install docker-compose): no comparison");
    }

    let (mut ours_cold, mut ours_noop, mut theirs_cold, mut theirs_noop) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
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
        ours_cold.push(started.elapsed());
        cold_calls = up.calls();
        let running = compose::ps(&client, &name).unwrap();
        assert!(
            running.len() == SERVICES && running.iter().all(|s| s.state == "running"),
            "{running:?}"
        );

        let started = Instant::now();
        let mut up = Up::new(&compose::load(&source).unwrap());
        while up.step(&client).unwrap() == Step::Continue {}
        ours_noop.push(started.elapsed());
        (noop_calls, noop_changes) = (up.calls(), up.changes());
        compose::down(&client, &name, true).unwrap();

        if v1 {
            let name = unique("bench-v1").replace('-', "");
            let run = |args: &[&str]| {
                let started = Instant::now();
                let out = Command::new("docker-compose")
                    .args(["-p", &name, "-f", path.to_str().unwrap()])
                    .args(args)
                    .env("DOCKER_HOST", format!("unix://{}", socket().display()))
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "docker-compose {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                started.elapsed()
            };
            theirs_cold.push(run(&["up", "-d"]));
            theirs_noop.push(run(&["up", "-d"]));
            run(&["down", "-v"]);
        }
    }

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("compose engine, {SERVICES} services, {runs} runs (medians)");
    println!(
        "  time to running:  ours {:7.0} ms ({cold_calls} Docker calls)",
        ms(median(&mut ours_cold))
    );
    println!(
        "  no-op up:         ours {:7.0} ms ({noop_calls} Docker calls, {noop_changes} changes)",
        ms(median(&mut ours_noop))
    );
    if v1 {
        let (cold, noop) = (median(&mut theirs_cold), median(&mut theirs_noop));
        println!(
            "  time to running:  docker-compose 1.29.2 {:7.0} ms",
            ms(cold)
        );
        println!(
            "  no-op up:         docker-compose 1.29.2 {:7.0} ms",
            ms(noop)
        );
        println!(
            "  ratio ours / docker-compose: time to running {:.2}, no-op up {:.4}",
            ms(median(&mut ours_cold)) / ms(cold),
            ms(median(&mut ours_noop)) / ms(noop)
        );
    }
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}
