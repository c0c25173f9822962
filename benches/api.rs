//! Agent API benchmark: the shipped (`min-size`) agent binary, the chisel test server (Go's
//! x/crypto/ssh) and the real Docker Engine. Prints the latency of `GET /containers/json`
//! through tunnel and proxy against the Docker socket directly (p50 / p99 over 1000 requests,
//! each on one kept-alive connection), and the agent's peak RSS while 50 connections make API
//! requests at once, both ways: listings, `/info`, and a 64 KiB archive put into a container
//! and read back.
//!
//! Run: `cargo bench --bench api` (needs Go and Docker; `EDGE_AGENT_TEST_BIN` picks the binary).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use support::agent::{proc_kib, Agent};
use support::api_client::{Connection, Signer};
use support::chisel::{credentials, free_port, ChiselServer, EDGE_ID, WAIT};
use support::{FakePortainer, Transport};

const REQUESTS: usize = 1000;
/// Portainer's connections through the tunnel at once, each one channel.
const CLIENTS: usize = 50;
const ROUNDS: usize = 3;
/// The file each client uploads and downloads again, per round.
const PAYLOAD: usize = 64 * 1024;

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
    let created = support::docker::docker(&[
        "create",
        "--name",
        &name,
        support::docker::IMAGE,
        "busybox",
        "true",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let sampler = Sampler::start(running.pid());
    let started = Instant::now();
    let start = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (start, signer, name) = (start.clone(), signer.clone(), name.clone());
            std::thread::spawn(move || {
                let mut c = Connection::open(port);
                let file = format!("payload-{i}");
                let tar = tar_of(&file, &vec![b'x'; PAYLOAD]);
                start.wait();
                for _ in 0..ROUNDS {
                    for path in ["/containers/json?all=1", "/images/json", "/info"] {
                        let answer = c.request("GET", &format!("/v1.41{path}"), Some(&signer), b"");
                        assert_eq!(answer.status, 200, "GET {path}");
                    }
                    let put = format!("/v1.41/containers/{name}/archive?path=/");
                    assert_eq!(
                        c.request("PUT", &put, Some(&signer), &tar).status,
                        200,
                        "PUT {put}"
                    );
                    let get = format!("/v1.41/containers/{name}/archive?path=/{file}");
                    let answer = c.request("GET", &get, Some(&signer), b"");
                    assert_eq!(answer.status, 200, "GET {get}");
                    assert!(answer.body.len() > PAYLOAD, "the archive holds the file");
                }
            })
        })
        .collect();
    let failed = clients.into_iter().filter_map(|c| c.join().err()).count();
    let wall = started.elapsed();
    let busy = sampler.stop();
    let peak = proc_kib(running.pid(), "status", "VmHWM");
    support::docker::docker(&["rm", "-f", &name]);
    assert_eq!(failed, 0, "{failed} clients failed:\n{}", running.log());
    let requests = CLIENTS * ROUNDS * 5;
    println!();
    println!(
        "{CLIENTS} connections at once, each {ROUNDS} rounds of GET /containers/json, /images/json, /info, PUT and GET of a {} KiB archive: {requests} requests in {:.1} s",
        PAYLOAD / 1024,
        wall.as_secs_f64()
    );
    println!();
    println!("| agent | RSS (KiB) | anonymous (KiB) |");
    println!("|---|---|---|");
    println!("| tunnel open, after the latency runs | {idle} | |");
    println!(
        "| {CLIENTS} connections busy (highest sample, every 5 ms) | {} | {} |",
        busy.0, busy.1
    );
    println!("| peak (VmHWM) over the whole run | {peak} | |");
}

/// Samples the agent's RSS and anonymous memory every 5 ms, keeping the highest of each.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, u64)>,
}

impl Sampler {
    fn start(pid: i32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut most = (0, 0);
            while !flag.load(Ordering::Relaxed) {
                most.0 = most.0.max(proc_kib(pid, "status", "VmRSS"));
                most.1 = most.1.max(proc_kib(pid, "status", "RssAnon"));
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler")
    }
}

/// A tar archive holding one file `name` with `data` (ustar, as Docker reads it).
fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut head = [0u8; 512];
    head[..name.len()].copy_from_slice(name.as_bytes());
    let mut field =
        |at: usize, text: String| head[at..at + text.len()].copy_from_slice(text.as_bytes());
    field(100, "0000644\0".into());
    field(108, "0000000\0".into());
    field(116, "0000000\0".into());
    field(124, format!("{:011o}\0", data.len()));
    field(136, "00000000000\0".into());
    field(148, "        ".into());
    field(156, "0".into());
    field(257, "ustar\x0000".into());
    let sum: u32 = head.iter().map(|b| u32::from(*b)).sum();
    head[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut tar = head.to_vec();
    tar.extend_from_slice(data);
    tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
    tar
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
