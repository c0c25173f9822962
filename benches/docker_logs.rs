//! Streaming container logs: 100 MB (100,000,000 bytes) of a container's stdout read through
//! the Docker client (demultiplexed, counted, dropped) and by `curl --unix-socket` (the raw
//! multiplexed stream into /dev/null), side by side: bytes, wall time, throughput, the reader's
//! CPU time (user + system) and its peak RSS. Each reader runs in its own child process, itself started by a child of
//! this binary that reports the reader's `ru_maxrss`, so a figure is that of the reader alone.
//!
//! Run: `cargo bench --bench docker_logs` (needs the Docker Engine, `curl` and
//! `/bin/busybox`). `DOCKER_LOGS_RUNS` sets how many times each reader runs (default 3).

#[path = "../tests/support/mod.rs"]
mod support;

use edge_agent::docker::{Client, Limits, LogsOptions};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Instant;
use support::docker::{engine, now, socket, unique, Container};

const BYTES: u64 = 100_000_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--measure") => measure(&args[1..]),
        Some("--read-logs") => read_logs(&args[1], &args[2]),
        _ => bench(),
    }
}

fn bench() {
    let client = engine();
    let runs: usize = std::env::var("DOCKER_LOGS_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let script = format!(
        "busybox yes 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwx | busybox head -c {BYTES}"
    );
    // The engine may rotate logs (Debian's default keeps 3 x 10 MB): keep all of these.
    let container = Container::with_host_config(
        &client,
        &unique("bench"),
        &["busybox", "sh", "-c", &script],
        false,
        serde_json::json!({
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "1g", "max-file": "1"}}
        }),
    );
    let since = now();
    let events = client
        .events(
            Some(since),
            &[("container", &container.id), ("event", "die")],
        )
        .expect("watch events");
    let started = Instant::now();
    client.start_container(&container.id).expect("start");
    for event in events {
        if event.expect("event").action == "die" {
            break;
        }
    }
    let state = client
        .inspect_container(&container.id)
        .expect("inspect")
        .state;
    assert_eq!(state.exit_code, 0, "the writer failed: {state:?}");
    println!(
        "container {} wrote {BYTES} bytes in {:.1} s; Docker {} (API {})",
        container.name,
        started.elapsed().as_secs_f64(),
        client.version().map(|v| v.version).unwrap_or_default(),
        client.api_version()
    );
    println!();
    println!("| reader | bytes | wall | MB/s | reader CPU | peak RSS |");
    println!("|---|---|---|---|---|---|");
    let socket = socket();
    let socket = socket.to_str().expect("UTF-8 socket path");
    let me = std::env::current_exe().expect("own path");
    let me = me.to_str().expect("UTF-8 path");
    let url = format!(
        "http://localhost/v{}/containers/{}/logs?stdout=1&stderr=1",
        client.api_version(),
        container.id
    );
    for _ in 0..runs {
        row(
            "edge-agent docker client (payload, demultiplexed)",
            &[me, "--read-logs", socket, &container.id],
        );
        row(
            "curl --unix-socket (raw multiplexed stream)",
            &[
                "curl",
                "-sS",
                "--unix-socket",
                socket,
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
                &url,
            ],
        );
    }
}

/// Runs `command` under `--measure` and prints its table row.
fn row(name: &str, command: &[&str]) {
    let me = std::env::current_exe().expect("own path");
    let out = Command::new(me)
        .arg("--measure")
        .args(command)
        .output()
        .expect("run the measuring child");
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<f64> = text
        .split_whitespace()
        .map(|f| f.parse().expect("a number"))
        .collect();
    assert!(
        out.status.success() && fields.len() == 4,
        "{name}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (bytes, wall, cpu, rss_kib) = (fields[0], fields[1], fields[2], fields[3]);
    println!(
        "| {name} | {bytes} | {wall:.2} s | {:.1} | {cpu:.2} s | {:.1} MiB |",
        bytes / wall / 1e6,
        rss_kib / 1024.0
    );
}

/// `--measure PROGRAM ARGS...`: runs it, prints the number it printed (bytes), its wall and CPU
/// times in seconds and its peak RSS in KiB (it is the only child of this process, so
/// `RUSAGE_CHILDREN` is its usage alone).
fn measure(command: &[String]) {
    let started = Instant::now();
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the reader");
    let mut printed = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut printed)
        .expect("read the reader's output");
    let status = child.wait().expect("wait for the reader");
    let wall = started.elapsed().as_secs_f64();
    assert!(status.success(), "{command:?} failed: {status}");
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    let cpu = usage.user_time() + usage.system_time();
    let cpu = cpu.tv_sec() as f64 + cpu.tv_usec() as f64 / 1e6;
    println!("{} {wall} {cpu} {}", printed.trim(), usage.max_rss());
}

/// `--read-logs SOCKET ID`: streams the container's logs through the client, prints the bytes.
fn read_logs(socket: &str, id: &str) {
    let client = Client::connect(socket, Limits::default()).expect("connect");
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        ..LogsOptions::default()
    };
    let mut logs = client.logs(id, &options).expect("logs");
    let mut bytes = 0;
    while let Some((_, data)) = logs.next().expect("read logs") {
        bytes += data.len();
    }
    println!("{bytes}");
}
