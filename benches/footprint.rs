//! Footprint benchmark: builds the `min-size` binary, runs it against the fake Portainer server
//! answering `"checkin": 0.01` for N polls (default 10,000; `FOOTPRINT_POLLS` to change), over
//! plain HTTP and over TLS, and prints binary size, RSS along the way, peak RSS, the anonymous
//! (heap and stacks) part and the proportional share (PSS: shared libraries count in part), and
//! CPU per poll.
//!
//! Run: `cargo footprint` (an alias of `cargo bench --bench footprint`). The binary is dropped
//! from the page cache before each run: the agent starts from it as from disk.
//! `EDGE_AGENT_TEST_BIN=path` measures that binary instead (a static musl build, say).
//!
//! Fails (exit 1) when RSS or anonymous memory at the end is over its budget in
//! `benches/footprint-budget.tsv` for the binary's linkage (static or dynamic) and transport.
//! CI runs it on the static x86_64 binary for 300 polls (packaging/ci.sh).
//!
//! `FOOTPRINT_RECORD=1` also writes the figures to `docs/footprint-idle.tsv` with the date and
//! commit, and README's footprint section from them.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::agent::{proc_kib, Agent};
use support::footprint::{self, Measured};
use support::{FakePortainer, Transport};

fn main() {
    let polls: usize = std::env::var("FOOTPRINT_POLLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let binary = support::agent::use_min_size_build();
    let size = std::fs::metadata(&binary).expect("built binary").len();
    println!(
        "binary: {} ({size} bytes, {:.2} MiB)",
        binary.display(),
        size as f64 / 1048576.0
    );
    println!();
    println!("| transport | polls | wall | RSS at 10% / 50% / 100% (KiB) | peak RSS (KiB) | anonymous / PSS at 100% (KiB) | CPU per poll |");
    println!("|---|---|---|---|---|---|---|");
    let linkage = linkage(&binary);
    let mut over = Vec::new();
    let mut rows = Vec::new();
    for (name, key, transport) in [
        ("http", "http", Transport::Plain),
        ("https (CA file)", "https", Transport::TlsCaSigned),
    ] {
        let (rss, anon, cpu_us) = measure(name, transport, polls);
        let (rss_budget, anon_budget) = budget(linkage, key);
        if rss > rss_budget || anon > anon_budget {
            over.push(format!(
                "{linkage} {key}: RSS {rss} KiB (budget {rss_budget}), anonymous {anon} KiB (budget {anon_budget})"
            ));
        }
        rows.push(Measured {
            date: command("date", &["-u", "+%F"]),
            commit: commit(),
            target: target(&binary),
            linkage: linkage.into(),
            bytes: size,
            polls,
            transport: key.into(),
            rss,
            anon,
            cpu_us,
        });
    }
    if std::env::var_os("FOOTPRINT_RECORD").is_some() {
        write(footprint::RECORD, &footprint::record(&rows));
        let readme = footprint::read("README.md");
        write(
            "README.md",
            &footprint::replace_section(&readme, &footprint::section(&rows)),
        );
        println!(
            "wrote {} and README.md's footprint section",
            footprint::RECORD
        );
    }
    if !over.is_empty() {
        eprintln!(
            "over the memory budget of {BUDGET}: {}; raising a budget needs a line in the change's closing note saying why",
            over.join("; ")
        );
        std::process::exit(1);
    }
}

const BUDGET: &str = "benches/footprint-budget.tsv";

fn write(path: &str, text: &str) {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::write(&full, text).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
}

/// What `program args` prints, trimmed; panics when it fails.
fn command(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The commit measured: HEAD, with `+changes` when what goes into the binary differs from it.
fn commit() -> String {
    let head = command("git", &["rev-parse", "--short=7", "HEAD"]);
    let changed = command(
        "git",
        &[
            "status",
            "--porcelain",
            "--",
            "src",
            "Cargo.toml",
            "Cargo.lock",
        ],
    );
    match changed.is_empty() {
        true => head,
        false => format!("{head}+changes"),
    }
}

/// The target triple of a `target/static/<triple>/min-size/edge-agent` binary, else `host`.
fn target(binary: &std::path::Path) -> String {
    let parts: Vec<String> = binary
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts
        .windows(2)
        .find(|pair| pair[0] == "static")
        .map_or_else(|| "host".to_owned(), |pair| pair[1].clone())
}

/// `static` or `dynamic`: whether the ELF binary has a program interpreter (PT_INTERP).
fn linkage(binary: &std::path::Path) -> &'static str {
    let elf = std::fs::read(binary).expect("read the binary");
    let field = |at: usize, len: usize| -> usize {
        let bytes = elf
            .get(at..at + len)
            .expect("a 64-bit little-endian ELF binary");
        bytes.iter().rev().fold(0, |n, b| n << 8 | usize::from(*b))
    };
    assert_eq!(
        elf.get(..5),
        Some(&b"\x7fELF\x02"[..]),
        "not a 64-bit ELF binary"
    );
    let (offset, size, count) = (field(0x20, 8), field(0x36, 2), field(0x38, 2));
    const PT_INTERP: usize = 3;
    match (0..count).any(|i| field(offset + i * size, 4) == PT_INTERP) {
        true => "dynamic",
        false => "static",
    }
}

/// The (RSS, anonymous) budget in KiB of `linkage` and `transport` in [`BUDGET`].
fn budget(linkage: &str, transport: &str) -> (u64, u64) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(BUDGET);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{BUDGET}: {e}"));
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() == 4 && f[0] == linkage && f[1] == transport)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .unwrap_or_else(|| {
            panic!("{BUDGET}: no line \"{linkage} {transport} <RSS KiB> <anonymous KiB>\"")
        })
}

/// Runs the agent for `polls` polls over `transport`; returns RSS and anonymous memory (KiB)
/// at the end, and CPU µs per poll.
fn measure(name: &str, transport: Transport, polls: usize) -> (u64, u64, f64) {
    evict(&support::agent::use_min_size_build());
    let server = FakePortainer::start(transport);
    server.add_endpoint(3, None);
    server.set_checkin(0.01);
    let agent = Agent::new();
    let mut env = format!("EDGE_KEY={}\n", agent.key(&server, 3));
    if let Some(ca) = server.ca_pem_path() {
        env.push_str(&format!("MTLS_SSL_CA={}\n", ca.display()));
    }
    agent.write_env(&env);
    let mut command = agent.command(&[]);
    command.env("LOG_LEVEL", "INFO");
    let running = agent.spawn(&mut command);
    let pid = running.pid();
    let started = Instant::now();
    let mut samples = Vec::new();
    for fraction in [0.1, 0.5, 1.0] {
        let target = (polls as f64 * fraction) as usize;
        let deadline = Instant::now() + Duration::from_secs(600);
        while server.poll_count() < target {
            assert!(
                Instant::now() < deadline,
                "agent stopped polling:\n{}",
                running.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        samples.push(proc_kib(pid, "status", "VmRSS"));
    }
    let wall = started.elapsed();
    let peak = proc_kib(pid, "status", "VmHWM");
    let anon = proc_kib(pid, "status", "RssAnon");
    let pss = proc_kib(pid, "smaps_rollup", "Pss");
    let cpu = cpu_time(pid);
    let done = server.poll_count();
    let cpu_us = cpu.as_secs_f64() * 1e6 / done as f64;
    println!(
        "| {name} | {done} | {:.1} s | {} | {peak} | {anon} / {pss} | {:.1} µs |",
        wall.as_secs_f64(),
        samples
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" / "),
        cpu_us
    );
    running.signal(nix::sys::signal::Signal::SIGTERM);
    (samples[2], anon, cpu_us)
}

/// Drops `binary` from the page cache, so that the agent starts from it as a device does at
/// boot, read from disk. Left there by the linker or a copy, its pages sit in other sizes, and
/// the kernel maps more of them around each page the agent touches: the same binary measured
/// 2,408 / 2,748 KiB (http / https) just built and 2,292 / 2,676 KiB read from disk.
fn evict(binary: &std::path::Path) {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    let file = std::fs::File::open(binary).expect("open the binary");
    // Written pages must be on disk before they can be dropped.
    file.sync_all().expect("sync the binary");
    posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
        .expect("drop the binary from the page cache");
}

/// User + system CPU time of the process so far.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at index 2 of /proc's list.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // Linux reports these in USER_HZ, which is 100 on every architecture we target.
    let per_second = 100;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}
