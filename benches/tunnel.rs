//! Tunnel benchmark: throughput and CPU through one channel, against a reference client, and
//! the memory of 50 busy channels.
//!
//! The tunnel runs in a child process (this binary, re-executed with `--child`) with an echo
//! handler, so its RSS and CPU are the tunnel's alone; this process plays Portainer through the
//! chisel test server (Go's x/crypto/ssh, reading WebSocket messages as chisel 1.10's server
//! does). The same transfer then goes through the test server's reference client
//! (`main.go -client`: Go's SSH client writing one WebSocket message per SSH write, as
//! chisel's client does), so the server's CPU for our traffic has a reference on this machine.
//! Each run has a server of its own; CPU times are user + system of the whole process, read
//! from this process's children's rusage as each child is reaped.
//!
//! Run: `cargo bench --bench tunnel` (`TUNNEL_MB` sets the single-channel volume, default 256;
//! `TUNNEL_RUNS` how many interleaved runs of each client, default 3, whose medians are shown).

#[path = "../tests/support/mod.rs"]
mod support;

use edge_agent::tunnel::{Settings, Target, Tunnel};
use nix::sys::resource::{getrusage, UsageWho};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::agent::proc_kib;
use support::chisel::*;

/// One transfer: wall time, and the CPU seconds of the client (agent or reference) and server.
struct Run {
    secs: f64,
    client_cpu: f64,
    server_cpu: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        return child(&args[2..]);
    }
    let mb: usize = std::env::var("TUNNEL_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let bytes = mb << 20;

    let runs: usize = std::env::var("TUNNEL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let (mut ours, mut reference) = (Vec::new(), Vec::new());
    let (mut idle, mut after_one) = (0, 0);
    for _ in 0..runs {
        let server = ChiselServer::start(&[]);
        let port = free_port();
        let mut tunnel = spawn_tunnel(&args[0], &server, port);
        connect(port);
        std::thread::sleep(Duration::from_millis(300));
        idle = idle.max(proc_kib(tunnel.id(), "status", "VmRSS"));
        let secs = timed(|| echo_through(port, pattern(bytes, 1)));
        after_one = after_one.max(proc_kib(tunnel.id(), "status", "VmHWM"));
        ours.push(Run {
            secs,
            client_cpu: cpu_to_reap(|| stop(&mut tunnel)),
            server_cpu: cpu_to_reap(|| drop(server)),
        });

        let server = ChiselServer::start(&[]);
        let port = free_port();
        let client = GoClient::start(&server, port);
        connect(port);
        let secs = timed(|| echo_through(port, pattern(bytes, 1)));
        reference.push(Run {
            secs,
            client_cpu: cpu_to_reap(|| drop(client)),
            server_cpu: cpu_to_reap(|| drop(server)),
        });
    }
    let (ours, reference) = (median(ours), median(reference));

    let server = ChiselServer::start(&[]);
    let port = free_port();
    let mut tunnel = spawn_tunnel(&args[0], &server, port);
    let mut report = BufReader::new(tunnel.stdout.take().unwrap()).lines();
    connect(port);
    let per_channel = 4 << 20;
    let fifty_secs = timed(|| {
        let workers: Vec<_> = (0..50)
            .map(|i| std::thread::spawn(move || echo_through(port, pattern(per_channel, i))))
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    });
    drop(tunnel.stdin.take());
    let peak: u64 = report
        .next()
        .and_then(|l| l.ok())
        .and_then(|l| l.strip_prefix("VmHWM ").and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    stop(&mut tunnel);

    // Payload carried, both directions together.
    let gb = 2.0 * bytes as f64 / 1e9;
    let mbps = |run: &Run| bytes as f64 / 1e6 / run.secs;
    println!("Medians of {runs} interleaved runs.\n");
    println!("| {mb} MiB echoed through one channel | MB/s each way | client CPU s | server CPU s | client CPU s/GB | server CPU s/GB |");
    println!("|---|---|---|---|---|---|");
    for (name, run) in [
        ("edge-agent", &ours),
        ("reference client (chisel's traffic)", &reference),
    ] {
        println!(
            "| {name} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
            mbps(run),
            run.client_cpu,
            run.server_cpu,
            run.client_cpu / gb,
            run.server_cpu / gb
        );
    }
    println!(
        "\nedge-agent / reference: server CPU per byte {:.2}x, throughput {:.2}x\n",
        ours.server_cpu / reference.server_cpu,
        mbps(&ours) / mbps(&reference)
    );
    println!("| measurement | figure |");
    println!("|---|---|");
    println!("| tunnel process RSS, open and idle (largest of the runs) | {idle} KiB |");
    println!(
        "| tunnel process peak RSS after the single-channel run (largest) | {after_one} KiB |"
    );
    println!(
        "| 50 channels × 4 MiB echoed at once | {fifty_secs:.2} s, {:.1} MB/s total each way |",
        (50 * per_channel) as f64 / 1e6 / fifty_secs
    );
    println!("| tunnel process peak RSS with 50 busy channels | {peak} KiB |");
}

/// The tunnel child (`--child`), connected to `server`, serving the reverse `port`.
fn spawn_tunnel(program: &str, server: &ChiselServer, port: u16) -> Child {
    Command::new(program)
        .args([
            "--child",
            &server.addr,
            &server.fingerprint,
            &port.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Ends the tunnel child (the end of its stdin) and reaps it.
fn stop(tunnel: &mut Child) {
    drop(tunnel.stdin.take());
    let _ = tunnel.wait();
}

/// Each figure's median across the runs.
fn median(runs: Vec<Run>) -> Run {
    let mid = |f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Run {
        secs: mid(|r| r.secs),
        client_cpu: mid(|r| r.client_cpu),
        server_cpu: mid(|r| r.server_cpu),
    }
}

fn timed(f: impl FnOnce()) -> f64 {
    let started = Instant::now();
    f();
    started.elapsed().as_secs_f64()
}

/// The CPU seconds (user + system) of the child that `reap` ends and waits for.
fn cpu_to_reap(reap: impl FnOnce()) -> f64 {
    let children = || {
        let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        secs(usage.user_time()) + secs(usage.system_time())
    };
    let before = children();
    reap();
    children() - before
}

/// The tunnel alone: open it, echo every channel, report the peak RSS when stdin closes.
fn child(args: &[String]) {
    let [addr, fingerprint, port] = args else {
        panic!("--child ADDR FINGERPRINT PORT");
    };
    let settings = Settings {
        target: Target::parse(addr).unwrap(),
        fingerprint: fingerprint.clone(),
        edge_id: EDGE_ID.into(),
        proxy: None,
        ca_file: None,
        inactivity: Duration::from_secs(3600),
        keepalive: Duration::from_secs(30),
    };
    let mut tunnel = Tunnel::new(settings, echo());
    tunnel.require(port.parse().unwrap(), &credentials("user:pass", EDGE_ID));
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "VmHWM {}",
        proc_kib(std::process::id(), "status", "VmHWM")
    );
    let _ = out.flush();
}
