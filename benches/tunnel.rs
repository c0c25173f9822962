//! Tunnel benchmark: throughput through one channel and the memory of 50 busy channels.
//!
//! The tunnel runs in a child process (this binary, re-executed with `--child`) with an echo
//! handler, so its RSS is the tunnel's alone; this process plays Portainer through the chisel
//! test server (Go's x/crypto/ssh). Prints MB/s through one channel (both directions at once)
//! and the child's RSS idle and at its peak with 50 channels echoing at once.
//!
//! Run: `cargo bench --bench tunnel` (`TUNNEL_MB` sets the single-channel volume, default 256).

#[path = "../tests/support/mod.rs"]
mod support;

use edge_agent::tunnel::{Settings, Target, Tunnel};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::agent::proc_kib;
use support::chisel::*;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        return child(&args[2..]);
    }
    let mb: usize = std::env::var("TUNNEL_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let server = ChiselServer::start(&[]);
    let port = free_port();
    let mut child = Command::new(&args[0])
        .args([
            "--child",
            &server.addr,
            &server.fingerprint,
            &port.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut report = BufReader::new(child.stdout.take().unwrap()).lines();
    connect(port);
    std::thread::sleep(Duration::from_millis(300));
    let idle = proc_kib(pid, "status", "VmRSS");

    let started = Instant::now();
    echo_through(port, pattern(mb << 20, 1));
    let secs = started.elapsed().as_secs_f64();
    let after_one = proc_kib(pid, "status", "VmHWM");

    let per_channel = 4 << 20;
    let started = Instant::now();
    let workers: Vec<_> = (0..50)
        .map(|i| std::thread::spawn(move || echo_through(port, pattern(per_channel, i))))
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let fifty_secs = started.elapsed().as_secs_f64();
    drop(child.stdin.take());
    let peak: u64 = report
        .next()
        .and_then(|l| l.ok())
        .and_then(|l| l.strip_prefix("VmHWM ").and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    let _ = child.wait();

    println!("| measurement | figure |");
    println!("|---|---|");
    println!(
        "| one channel, {mb} MiB echoed (both directions at once) | {secs:.2} s, {:.1} MB/s each way |",
        (mb << 20) as f64 / 1e6 / secs
    );
    println!("| tunnel process RSS, open and idle | {idle} KiB |");
    println!("| tunnel process peak RSS after the single-channel run | {after_one} KiB |");
    println!(
        "| 50 channels × 4 MiB echoed at once | {fifty_secs:.2} s, {:.1} MB/s total each way |",
        (50 * per_channel) as f64 / 1e6 / fifty_secs
    );
    println!("| tunnel process peak RSS with 50 busy channels | {peak} KiB |");
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
