//! Volume browser uploads and downloads as Portainer makes them, through the real chisel 1.10.0
//! server, against the real chisel 1.10.0 client on the same server.
//!
//! One chisel server runs as Portainer runs it: reverse tunnels only, a user per endpoint
//! allowed only its own `R:0.0.0.0:<port>`, keepalive off. Two clients connect to it:
//! - ours: the shipped agent binary (`min-size`, or `EDGE_AGENT_TEST_BIN`), which a fake
//!   Portainer tells to open its tunnel (credentials encrypted for its Edge ID, the server's
//!   fingerprint in its Edge key), serving the agent API on each channel;
//! - the reference: `chisel client --fingerprint .. --auth .. R:<port>:127.0.0.1:<shim>`,
//!   forwarding each channel to a shim (this binary, re-executed with `--shim`) that serves
//!   the same agent API code (`edge_agent::api_alone`) on every TCP connection, copied into a
//!   DuplexStream as the tunnel hands channels over, on one current-thread runtime like the
//!   tunnel's. The shim is built with the bench profile, the agent with `min-size`: a bias
//!   against the agent.
//!
//! Each run uploads a file of `UPLOAD_MB` MiB into a Docker volume (`POST /v2/browse/put`,
//! multipart, signed as Portainer signs) through each client's reverse port, then downloads it
//! back (`GET /v2/browse/get`) and compares the bytes; the clients alternate which goes first.
//! Printed: medians of the runs in MB/s, the CPU the client side spent (the agent process, or
//! chisel's client and the shim together) per GB, the ratios ours / reference (of the medians,
//! then of each run), and each process's peak RSS.
//!
//! Run: `EDGE_AGENT_CHISEL=/path/to/chisel cargo bench --bench upload` (Docker Engine as for the
//! tests; `UPLOAD_MB`, default 64, and `UPLOAD_RUNS`, default 5).

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;
use support::agent::{proc_kib, Agent};
use support::api_client::{upload_body, Connection, Signer};
use support::chisel::{connect, credentials, free_port, EDGE_ID};
use support::{FakePortainer, Transport};

/// The endpoint the fake Portainer knows the agent as.
const ENDPOINT: i64 = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, env_file] = &args[..] {
        if flag == "--shim" {
            return shim(env_file.into());
        }
    }
    let Some(chisel) = std::env::var_os("EDGE_AGENT_CHISEL").map(PathBuf::from) else {
        eprintln!(
            "EDGE_AGENT_CHISEL is not set: this bench needs the real chisel 1.10.0 binary \
             (Portainer's tunnel server, and the reference client). Build it with Go 1.22 or \
             later from jpillora/chisel's v1.10.0 source (`go build` in a checkout of the tag) \
             and set EDGE_AGENT_CHISEL to the binary."
        );
        std::process::exit(2);
    };
    let env_usize = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
            .max(1)
    };
    let mb = env_usize("UPLOAD_MB", 64);
    let runs = env_usize("UPLOAD_RUNS", 5);
    let agent_binary = support::agent::use_min_size_build();
    println!("agent: {}", agent_binary.display());
    support::docker::engine();
    let volume = support::docker::unique("upload-bench");
    let created = support::docker::docker(&["volume", "create", &volume]);
    assert!(created.status.success(), "{created:?}");
    let _volume = Removed(volume.clone());

    let (ours_port, reference_port) = (free_port(), free_port());
    let server = Server::start(
        &chisel,
        &[
            ("agent:agent-pass", ours_port),
            ("ref:ref-pass", reference_port),
        ],
    );

    // Ours: the agent, told to open its tunnel by the fake Portainer.
    let portainer = FakePortainer::start(Transport::Plain);
    portainer.add_endpoint(ENDPOINT, Some(EDGE_ID));
    let tunnel = credentials("agent:agent-pass", EDGE_ID);
    portainer.set_tunnel(ENDPOINT, Some((ours_port, tunnel)));
    let key = support::edge_key(
        &portainer.url(),
        &server.addr,
        &server.fingerprint,
        ENDPOINT,
    );
    let docker = format!("unix://{}", support::docker::socket().display());
    let env = format!("EDGE_KEY={key}\nEDGE_ID={EDGE_ID}\nDOCKER_HOST={docker}\n");
    let agent = Agent::new();
    agent.write_env(&env);
    let running = agent.spawn(&mut agent.command(&[]));

    // The reference: chisel's client in front of the shim.
    let shim_home = Agent::new();
    let data = shim_home.data.display();
    shim_home.write_env(&format!("{env}DATA_PATH={data}\n"));
    let shim = Spawned::shim(&args[0], &shim_home.env_file);
    let client = Spawned::chisel_client(&chisel, &server, "ref:ref-pass", reference_port, &shim);
    drop(connect(ours_port));
    drop(connect(reference_port));

    let signer = Signer::new(7, "Portainer-App");
    let content = support::chisel::pattern(mb << 20, 5);
    let sides = [
        Side {
            name: "edge-agent (min-size) tunnel + API",
            port: ours_port,
            file: "ours.bin",
            pids: vec![running.pid() as u32],
        },
        Side {
            name: "chisel 1.10.0 client + API shim",
            port: reference_port,
            file: "reference.bin",
            pids: vec![client.pid, shim.pid],
        },
    ];
    let mut results: [Vec<Transfer>; 2] = [Vec::new(), Vec::new()];
    for run in 0..runs {
        for i in [run % 2, 1 - run % 2] {
            let t = sides[i].transfer(&volume, &signer, &content);
            results[i].push(t);
        }
    }
    let medians: Vec<Transfer> = results.iter().map(|r| median(r)).collect();

    let mbps = |secs: f64| content.len() as f64 / 1e6 / secs;
    let gb = content.len() as f64 / 1e9;
    println!(
        "\n{mb} MiB up and down through the volume browser, one chisel 1.10.0 server, medians of \
         {runs} interleaved runs\n"
    );
    println!(
        "| client | upload MB/s | download MB/s | client-side CPU s/GB up | client-side CPU s/GB down |"
    );
    println!("|---|---|---|---|---|");
    for (side, m) in sides.iter().zip(&medians) {
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {:.2} |",
            side.name,
            mbps(m.up_secs),
            mbps(m.down_secs),
            m.up_cpu / gb,
            m.down_cpu / gb
        );
    }
    let (ours, reference) = (&medians[0], &medians[1]);
    println!(
        "\nours / reference: upload {:.2}x, download {:.2}x (throughput); client-side CPU per \
         byte: upload {:.2}x, download {:.2}x",
        reference.up_secs / ours.up_secs,
        reference.down_secs / ours.down_secs,
        ours.up_cpu / reference.up_cpu,
        ours.down_cpu / reference.down_cpu
    );
    let each = |get: fn(&Transfer) -> f64| {
        let [o, r] = &results;
        o.iter()
            .zip(r)
            .map(|(o, r)| format!("{:.2}", get(r) / get(o)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "per run: upload {}; download {}",
        each(|t| t.up_secs),
        each(|t| t.down_secs)
    );
    let peak = |pid: u32| proc_kib(pid, "status", "VmHWM");
    println!(
        "peak RSS (VmHWM) over all runs: agent {} KiB; chisel client {} KiB, shim {} KiB",
        peak(running.pid() as u32),
        peak(client.pid),
        peak(shim.pid)
    );
    drop(client);
    drop(shim);
    drop(running);
}

/// One side of the comparison: a reverse port on the server, and the processes behind it.
struct Side {
    name: &'static str,
    port: u16,
    file: &'static str,
    pids: Vec<u32>,
}

/// One upload and download: wall seconds and client-side CPU seconds each.
struct Transfer {
    up_secs: f64,
    down_secs: f64,
    up_cpu: f64,
    down_cpu: f64,
}

impl Side {
    fn transfer(&self, volume: &str, signer: &Signer, content: &[u8]) -> Transfer {
        let (content_type, body) = upload_body(self.file, content, "/");
        let cpu = || self.pids.iter().map(|&p| cpu_secs(p)).sum::<f64>();
        let mut c = Connection::open(self.port);
        let (cpu0, started) = (cpu(), Instant::now());
        c.send(
            "POST",
            &format!("/v2/browse/put?volumeID={volume}"),
            Some(signer),
            &content_type,
            &body,
        );
        let put = c.answer("POST");
        let up_secs = started.elapsed().as_secs_f64();
        let up_cpu = cpu() - cpu0;
        assert_eq!(put.status, 204, "{}: upload: {}", self.name, put.text());
        drop(body);

        let (cpu0, started) = (cpu(), Instant::now());
        let path = format!("/v2/browse/get?volumeID={volume}&path=/{}", self.file);
        let got = c.request("GET", &path, Some(signer), b"");
        let down_secs = started.elapsed().as_secs_f64();
        let down_cpu = cpu() - cpu0;
        assert_eq!(got.status, 200, "{}: download: {}", self.name, got.text());
        assert!(
            got.body == content,
            "{}: the downloaded bytes differ",
            self.name
        );
        Transfer {
            up_secs,
            down_secs,
            up_cpu,
            down_cpu,
        }
    }
}

/// Each figure's median across the runs.
fn median(runs: &[Transfer]) -> Transfer {
    let mid = |f: fn(&Transfer) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Transfer {
        up_secs: mid(|t| t.up_secs),
        down_secs: mid(|t| t.down_secs),
        up_cpu: mid(|t| t.up_cpu),
        down_cpu: mid(|t| t.down_cpu),
    }
}

/// User + system CPU seconds of process `pid` so far (0 once it is gone).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which ends with the last ')': utime and stime are the
    // 12th and 13th of them.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: f64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    ticks / hz as f64
}

/// The chisel server as Portainer runs it: reverse remotes only, one user per endpoint allowed
/// its own port only (Portainer's `^R:0.0.0.0:<port>$`), a key seed, no keepalive.
struct Server {
    child: Child,
    addr: String,
    fingerprint: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(chisel: &Path, users: &[(&str, u16)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let users: serde_json::Map<String, serde_json::Value> = users
            .iter()
            .map(|(user, port)| {
                (
                    user.to_string(),
                    serde_json::json!([format!("^R:0.0.0.0:{port}$")]),
                )
            })
            .collect();
        let authfile = dir.path().join("users.json");
        std::fs::write(&authfile, serde_json::Value::Object(users).to_string()).unwrap();
        let port = free_port();
        let mut child = Command::new(chisel)
            .args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--reverse",
                "--keepalive",
                "0s",
                "--key",
                "upload-bench-seed",
            ])
            .arg("--authfile")
            .arg(&authfile)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start EDGE_AGENT_CHISEL ({chisel:?}): {e}"));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut fingerprint = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some((_, fp)) = line.split_once("Fingerprint ") {
                fingerprint = Some(fp.trim().to_owned());
            }
            if line.contains("Listening on") {
                break;
            }
        }
        // The rest of its log is read off, so it never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Server {
            child,
            addr: format!("127.0.0.1:{port}"),
            fingerprint: fingerprint.unwrap_or_else(|| {
                panic!("{chisel:?} printed no fingerprint: is EDGE_AGENT_CHISEL chisel 1.10.0?")
            }),
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process stopped and reaped when dropped.
struct Spawned {
    child: Child,
    pid: u32,
    /// The shim's listening port.
    port: u16,
}

impl Spawned {
    /// This binary as the shim, for the agent configuration in `env_file`.
    fn shim(program: &str, env_file: &Path) -> Spawned {
        let mut child = Command::new(program)
            .arg("--shim")
            .arg(env_file)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the shim did not start: {line:?}"));
        Spawned {
            pid: child.id(),
            child,
            port,
        }
    }

    /// `chisel client`, as a user of `server`, forwarding its reverse `port` to `shim`.
    fn chisel_client(
        chisel: &Path,
        server: &Server,
        auth: &str,
        port: u16,
        shim: &Spawned,
    ) -> Spawned {
        let child = Command::new(chisel)
            .args([
                "client",
                "--fingerprint",
                &server.fingerprint,
                "--auth",
                auth,
            ])
            .arg(format!("http://{}", server.addr))
            .arg(format!("R:{port}:127.0.0.1:{}", shim.port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Spawned {
            pid: child.id(),
            child,
            port,
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Docker volume, removed at the end.
struct Removed(String);

impl Drop for Removed {
    fn drop(&mut self) {
        support::docker::docker(&["volume", "rm", "-f", &self.0]);
    }
}

/// `--shim ENV_FILE`: the agent API for that configuration on a local TCP port (printed as
/// `listening PORT`), each connection copied into a DuplexStream for the handler, until stdin
/// closes.
fn shim(env_file: PathBuf) {
    let handler = edge_agent::api_alone(env_file).unwrap_or_else(|e| panic!("shim: {e}"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    // As the tunnel's runtime (src/tunnel/mod.rs): one thread, a few blocking threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(4)
        .enable_io()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let mut out = std::io::stdout();
        writeln!(out, "listening {port}").unwrap();
        out.flush().unwrap();
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            // The tunnel's channels are 8 KiB duplexes (src/tunnel/session/channels.rs).
            let (mut ours, theirs) = tokio::io::duplex(8 * 1024);
            tokio::spawn(handler(theirs));
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut ours).await;
            });
        }
    });
}
