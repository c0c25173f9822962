//! Agent API benchmark: the shipped (`min-size`) agent binary, the chisel test server (Go's
//! x/crypto/ssh) and the real Docker Engine. Prints the latency of `GET /containers/json`
//! through tunnel and proxy against the Docker socket directly (p50 / p99 over 1000 requests,
//! each on one kept-alive connection), and the agent's RSS while 50 `logs?follow=1` streams
//! are open at once.
//!
//! Run: `cargo bench --bench api` (needs Go and Docker; `EDGE_AGENT_TEST_BIN` picks the binary).

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::agent::{proc_kib, Agent};
use support::api_client::{Connection, Signer};
use support::chisel::{credentials, free_port, ChiselServer, EDGE_ID, WAIT};
use support::{FakePortainer, Transport};

const REQUESTS: usize = 1000;
const STREAMS: usize = 50;

fn main() {
    let binary = support::agent::use_min_size_build();
    println!("agent: {}", binary.display());
    support::docker::engine();
    let chisel = ChiselServer::start(&[]);
    let portainer = FakePortainer::start(Transport::Plain);
    portainer.add_endpoint(3, Some(EDGE_ID));
    let port = free_port();
    portainer.set_tunnel(3, Some((port, credentials("user:pass", EDGE_ID))));
    let agent = Agent::new();
    let key = support::edge_key(&portainer.url(), &chisel.addr, &chisel.fingerprint, 3);
    let socket = support::docker::socket();
    agent.write_env(&format!(
        "EDGE_KEY={key}\nEDGE_ID={EDGE_ID}\nDOCKER_HOST=unix://{}\n",
        socket.display()
    ));
    let running = agent.spawn(&mut agent.command(&[]));
    chisel.wait_for("config ok", 1, WAIT);
    let signer = Signer::new(7, "Portainer-App");

    let path = "/v1.41/containers/json?all=1";
    let tunnel = latencies(&mut Connection::open(port), path, Some(&signer));
    let direct = latencies(&mut Connection::open_unix(&socket), path, None);
    println!();
    println!("| GET /containers/json ({REQUESTS} requests) | p50 | p99 |");
    println!("|---|---|---|");
    for (name, mut times) in [
        ("Docker socket directly", direct),
        ("through tunnel and agent", tunnel),
    ] {
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        println!(
            "| {name} | {:.2} ms | {:.2} ms |",
            ms(at(0.5)),
            ms(at(0.99))
        );
    }

    let idle = proc_kib(running.pid(), "status", "VmRSS");
    let name = support::docker::unique("bench");
    let logger = support::docker::docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &name,
        support::docker::IMAGE,
        "sh",
        "-c",
        "i=0; while true; do echo log line $i; i=$((i+1)); sleep 0.01; done",
    ]);
    assert!(
        logger.status.success(),
        "{}",
        String::from_utf8_lossy(&logger.stderr)
    );
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..STREAMS)
        .map(|_| {
            let (stop, received, signer, name) =
                (stop.clone(), received.clone(), signer.clone(), name.clone());
            std::thread::spawn(move || {
                let mut c = Connection::open(port);
                c.send(
                    "GET",
                    &format!("/v1.41/containers/{name}/logs?follow=1&stdout=1&tail=10"),
                    Some(&signer),
                    "",
                    b"",
                );
                assert_eq!(c.head().0, 200);
                let mut piece = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    match c.reader.read(&mut piece) {
                        Ok(n) if n > 0 => received.fetch_add(n as u64, Ordering::Relaxed),
                        _ => break,
                    };
                }
            })
        })
        .collect();
    let mut busy = 0;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(500));
        busy = busy.max(proc_kib(running.pid(), "status", "VmRSS"));
    }
    let peak = proc_kib(running.pid(), "status", "VmHWM");
    stop.store(true, Ordering::Relaxed);
    support::docker::docker(&["rm", "-f", &name]);
    for r in readers {
        let _ = r.join();
    }
    println!();
    println!("| agent RSS | KiB |");
    println!("|---|---|");
    println!("| tunnel open, after the latency runs | {idle} |");
    println!(
        "| {STREAMS} logs?follow streams for 5 s ({} KiB received in all) | {busy} |",
        received.load(Ordering::Relaxed) / 1024
    );
    println!("| peak (VmHWM) over the whole run | {peak} |");
}

fn latencies(c: &mut Connection, path: &str, signer: Option<&Signer>) -> Vec<Duration> {
    for _ in 0..50 {
        assert_eq!(c.request("GET", path, signer, b"").status, 200);
    }
    (0..REQUESTS)
        .map(|_| {
            let started = Instant::now();
            let answer = c.request("GET", path, signer, b"");
            assert_eq!(answer.status, 200);
            started.elapsed()
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
