//! The chisel test server (`tests/chisel/main.go`, Go's x/crypto/ssh as in Portainer), built
//! with Debian's Go on first use, and what Portainer does around it: tunnel credentials.

use super::agent::{Agent, Running};
use super::{FakePortainer, Transport};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use edge_agent::tunnel::{Handler, Settings, Target, Tunnel};
use md5::{Digest, Md5};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Portainer's `encryptCredentials`: RawStd base64 of nonce || AES-256-GCM("user:pass") keyed
/// with the hex MD5 of the Edge ID.
pub fn credentials(user_pass: &str, edge_id: &str) -> String {
    let key: String = Md5::digest(edge_id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.as_bytes()).unwrap());
    let nonce = [3u8; 12];
    let mut data = user_pass.as_bytes().to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
        .unwrap();
    let mut blob = nonce.to_vec();
    blob.extend(data);
    STANDARD_NO_PAD.encode(blob)
}

/// The built server (a test that needs it fails when Go cannot build it).
fn binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chisel-test-server");
            let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/chisel");
            let built = Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg("main.go")
                .current_dir(&source)
                .env("GO111MODULE", "off")
                .env("GOPATH", "/usr/share/gocode")
                .status();
            match built {
                Ok(status) if status.success() => out,
                result => super::missing(&format!(
                    "cannot build the chisel test server ({result:?}); install golang-go golang-golang-x-crypto-dev golang-github-gorilla-websocket-dev"
                )),
            }
        })
        .clone()
}

/// The Python for `asyncssh_server.py`: `EDGE_AGENT_PYTHON` (`.ci/run` points it at a venv with
/// `tests/chisel/requirements.txt`) or `python3` (a test that needs it fails when it lacks
/// asyncssh or websockets).
fn python() -> PathBuf {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let python = std::env::var_os("EDGE_AGENT_PYTHON")
                .map_or_else(|| PathBuf::from("python3"), PathBuf::from);
            let found = Command::new(&python)
                .args(["-c", "import asyncssh, websockets"])
                .stderr(Stdio::null())
                .status();
            match found {
                Ok(status) if status.success() => python,
                result => super::missing(&format!(
                    "{python:?} cannot import asyncssh and websockets ({result:?}); pip install -r tests/chisel/requirements.txt and set EDGE_AGENT_PYTHON"
                )),
            }
        })
        .clone()
}

pub struct ChiselServer {
    child: Child,
    stdin: Option<ChildStdin>,
    pub addr: String,
    pub fingerprint: String,
    events: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl ChiselServer {
    /// Starts a server with these flags (see main.go).
    pub fn start(args: &[&str]) -> ChiselServer {
        Self::spawn(Command::new(binary()).args(args))
    }

    /// The same on Python's asyncssh (`asyncssh_server.py`, a subset of the flags): strict
    /// KEX and aes256-gcm, as Portainer's newer x/crypto.
    pub fn start_asyncssh(args: &[&str]) -> ChiselServer {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/chisel/asyncssh_server.py");
        Self::spawn(Command::new(python()).arg(script).args(args))
    }

    fn spawn(command: &mut Command) -> ChiselServer {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut header = || lines.next().unwrap().unwrap();
        let fingerprint = header().strip_prefix("fingerprint ").unwrap().to_owned();
        let addr = header().strip_prefix("listening ").unwrap().to_owned();
        let events = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.0.lock().unwrap().push(line);
                sink.1.notify_all();
            }
        });
        ChiselServer {
            child,
            stdin,
            addr,
            fingerprint,
            events,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn events(&self) -> Vec<String> {
        self.events.0.lock().unwrap().clone()
    }

    /// Waits until `count` events start with `prefix`; panics with all events after `timeout`.
    pub fn wait_for(&self, prefix: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut events = self.events.0.lock().unwrap();
        loop {
            if events.iter().filter(|e| e.starts_with(prefix)).count() >= count {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {count}× {prefix:?} in {:?}", *events);
            events = self.events.1.wait_timeout(events, left).unwrap().0;
        }
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e.starts_with(prefix))
            .count()
    }

    /// Ends every SSH connection, as a server restart would.
    pub fn drop_connections(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "drop").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for ChiselServer {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reference client of benches (`main.go -client`): chisel's client as far as the wire
/// goes, echoing every channel of the reverse `port` it asks `server` for.
pub struct GoClient {
    child: Child,
}

impl GoClient {
    /// Connected and configured.
    pub fn start(server: &ChiselServer, port: u16) -> GoClient {
        let mut child = Command::new(binary())
            .args(["-client", &format!("ws://{}/", server.addr)])
            .args(["-fingerprint", &server.fingerprint])
            .args(["-port", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok);
        assert_eq!(
            first.as_deref(),
            Some("client ready"),
            "the Go client failed"
        );
        GoClient { child }
    }
}

/// Dropping it stops the client (the end of its stdin) and waits for it to exit.
impl Drop for GoClient {
    fn drop(&mut self) {
        self.child.stdin.take();
        let _ = self.child.wait();
    }
}

pub const EDGE_ID: &str = "edge-test";
pub const WAIT: Duration = Duration::from_secs(10);

/// Settings for a tunnel to `server`: its fingerprint, the agent's keepalive, inactivity 5 min.
pub fn settings(server: &ChiselServer) -> Settings {
    Settings {
        target: Target::parse(&server.addr).unwrap(),
        fingerprint: server.fingerprint.clone(),
        edge_id: EDGE_ID.to_owned(),
        proxy: None,
        ca_file: None,
        inactivity: Duration::from_secs(300),
        keepalive: edge_agent::tunnel::KEEPALIVE,
    }
}

pub fn echo() -> Handler {
    Arc::new(|stream| {
        Box::pin(async move {
            let (mut r, mut w) = tokio::io::split(stream);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        })
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects as Portainer does to the reverse port, once the server listens on it.
pub fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(WAIT)).unwrap();
                return s;
            }
            Err(e) if Instant::now() > deadline => panic!("reverse port {port} never opened: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes `data` and reads it back through the echo handler, concurrently.
pub fn echo_through(port: u16, data: Vec<u8>) {
    let mut stream = connect(port);
    let mut writer = stream.try_clone().unwrap();
    let len = data.len();
    let sent = data.clone();
    let sender = std::thread::spawn(move || writer.write_all(&sent).unwrap());
    let mut back = vec![0u8; len];
    stream.read_exact(&mut back).unwrap();
    sender.join().unwrap();
    assert!(back == data, "echoed bytes differ");
}

/// A tunnel to `server` with an echo handler, required at a free port with the credentials
/// `user_pass` (as Portainer encrypts them), after `configure` changed its settings.
pub fn open_tunnel(
    server: &ChiselServer,
    user_pass: &str,
    configure: impl FnOnce(&mut Settings),
) -> (u16, Tunnel) {
    let port = free_port();
    let mut settings = settings(server);
    configure(&mut settings);
    let mut tunnel = Tunnel::new(settings, echo());
    tunnel.require(port, &credentials(user_pass, EDGE_ID));
    (port, tunnel)
}

/// The Go server started with `args`, and a tunnel to it with the right credentials.
pub fn started(args: &[&str]) -> (ChiselServer, u16, Tunnel) {
    let server = ChiselServer::start(args);
    let (port, tunnel) = open_tunnel(&server, "user:pass", |_| {});
    (server, port, tunnel)
}

/// The agent binary, told by a fake Portainer that the tunnel is REQUIRED (with credentials
/// encrypted for its Edge ID), with an Edge key naming `chisel` and `fingerprint`, and `env`
/// lines in its env file.
pub fn agent_with_tunnel(
    chisel: &ChiselServer,
    fingerprint: &str,
    env: &str,
) -> (FakePortainer, u16, Agent, Running) {
    let portainer = FakePortainer::start(Transport::Plain);
    portainer.add_endpoint(3, Some(EDGE_ID));
    portainer.set_checkin(0.05);
    let port = free_port();
    portainer.set_tunnel(3, Some((port, credentials("user:pass", EDGE_ID))));
    let agent = Agent::new();
    let key = super::edge_key(&portainer.url(), &chisel.addr, fingerprint, 3);
    agent.write_env(&format!("EDGE_KEY={key}\nEDGE_ID={EDGE_ID}\n{env}"));
    let running = agent.spawn(&mut agent.command(&[]));
    (portainer, port, agent, running)
}

/// An agent binary whose tunnel to a Go chisel server is open, its Docker socket the real
/// engine's, `env` added to its env file: everything between a test (playing Portainer) and
/// Docker.
pub struct Setup {
    pub port: u16,
    pub agent: Agent,
    pub running: Running,
    _chisel: ChiselServer,
    _portainer: FakePortainer,
}

pub fn agent_through_tunnel(env: &str) -> Setup {
    super::docker::engine();
    let docker = format!("unix://{}", super::docker::socket().display());
    agent_through_tunnel_on(&docker, env)
}

/// The same on the engine at `docker` (a `DOCKER_HOST` value).
pub fn agent_through_tunnel_on(docker: &str, env: &str) -> Setup {
    let chisel = ChiselServer::start(&[]);
    let (portainer, port, agent, running) = agent_with_tunnel(
        &chisel,
        &chisel.fingerprint,
        &format!("DOCKER_HOST={docker}\n{env}"),
    );
    chisel.wait_for("config ok", 1, WAIT);
    Setup {
        port,
        agent,
        running,
        _chisel: chisel,
        _portainer: portainer,
    }
}
