//! A fake Portainer Server for end-to-end tests, answering as Portainer CE 2.23 does
//! (`docs/edge-protocol.md`, `docs/edge-stacks.md` and the server sources cited there): the status poll with its 403s,
//! 400 without the platform header, Edge ID binding and ETag/304; the global-key lookup; the
//! public system status; edge stack payloads and status reports with the server's validation
//! (`200 null` for an unknown stack); edge jobs in the poll and their log route
//! (`endpointedge_job_logs.go`). Served over plain HTTP or TLS (self-signed, CA-signed,
//! CA-signed with client certificates required), with faults on demand. Every request is
//! recorded, and every accepted status report kept in order.
//!
//! Not simulated: the tunnel opening by itself on the first poll (tests open and close it with
//! [`FakePortainer::set_tunnel`]).

#![allow(dead_code)] // Each test binary uses a different part of it.

pub mod agent;
pub mod api_client;
pub mod chisel;
pub mod docker;
pub mod docker29;
pub mod fake_docker;
pub mod footprint;
pub mod registry;
pub mod scenarios;
pub mod state_file;
pub mod vm;

use base64::Engine;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A tool a test needs is missing. Such tests are `#[ignore]`d with the reason, so a plain
/// `cargo test` lists them as ignored; once asked for (`--include-ignored`, as `tests/run.sh`
/// does after installing the tools), a missing tool fails the test.
pub fn missing(why: &str) -> ! {
    panic!("{why} (tests/run.sh installs what the tests need)")
}

/// `base64.RawStdEncoding("<url>|<tunnel>|<fingerprint>|<endpoint id>")`, as Portainer makes it.
pub fn edge_key(url: &str, tunnel: &str, fingerprint: &str, endpoint_id: i64) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(format!("{url}|{tunnel}|{fingerprint}|{endpoint_id}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Plain,
    TlsSelfSigned,
    TlsCaSigned,
    TlsCaSignedClientAuth,
}

/// What the server does instead of answering properly, for every request while set.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Reads the request and never answers.
    Hang,
    /// Answers this status with a Portainer error body.
    Status(u16),
    /// The same, with a `Retry-After` header.
    StatusRetryAfter(u16, String),
    /// Answers 200 with an HTML page.
    Garbage,
    /// Answers 200 with this body (JSON or not).
    Answer(Vec<u8>),
    /// Answers 200 with a `Content-Length` of `size` bytes: `prefix`, then `fill` bytes, streamed
    /// in 64 KiB writes for as long as the client reads; the bytes written are counted
    /// ([`FakePortainer::streamed`]).
    Huge {
        prefix: Vec<u8>,
        fill: u8,
        size: u64,
    },
    /// Answers 200 with a chunked body that never ends (counted as `Huge`).
    Endless,
    /// Writes a whole answer, head first, one byte per second.
    Trickle,
    /// Answers 302 to the path that was asked for.
    RedirectLoop,
}

/// One request as the server saw it, with the status it answered (0: none, it hung).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub status: u16,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An edge job as the poll lists it (`Script` is sent as unpadded base64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeJob {
    pub id: i64,
    pub cron: String,
    pub script: String,
    pub version: i64,
    pub collect_logs: bool,
}

#[derive(Default)]
struct Endpoint {
    /// Bound on the first poll unless pre-set (Portainer's "enforce Edge ID").
    edge_id: Option<String>,
    stacks: Vec<(i64, i64)>,
    jobs: Vec<EdgeJob>,
    /// Remote port and encrypted credentials while the tunnel is required.
    tunnel: Option<(u16, String)>,
    /// The ETag of the last 200 answer; cleared by every change, as Portainer's `cache.Del`.
    etag: Option<String>,
}

/// An edge stack as the server stores it: what `StackPayload` is made of.
struct EdgeStack {
    name: String,
    entry_file: String,
    /// `(name, content, is_file, permissions)`.
    files: Vec<(String, Vec<u8>, bool, u32)>,
}

/// Which Portainer's status rules the fake server applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// CE 2.23: every valid status report is appended, `X-Portainer-No-Body` ignored.
    V2_23,
    /// CE 2.45 (`edgestack_status_update.go`): 403 for a stack not assigned to the environment
    /// (but for 9 Removing and 4 Removed), a report whose `Version` is older than the stack's
    /// ignored, a status type already in the environment's list not appended again, the lists
    /// cleared when the stack's version changes, `X-Portainer-No-Body` honoured; and the job log
    /// route answers 500 for a job no longer targeting the environment.
    V2_45,
}

/// One status report the server accepted (on 2.45: appended to the environment's list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackReport {
    pub stack: i64,
    pub endpoint_id: i64,
    pub status: u8,
    pub error: String,
    pub time: i64,
    /// `Version` as sent (0 when absent).
    pub version: i64,
    /// The request body as sent.
    pub body: String,
}

struct World {
    endpoints: BTreeMap<i64, Endpoint>,
    checkin: f64,
    fault: Option<Fault>,
    /// `fault` applies only to paths containing this, when set.
    fault_on: Option<String>,
    /// Becomes `fault` once a stack payload has been served.
    fault_after_payload: Option<Fault>,
    requests: Vec<Recorded>,
    edge_stacks: BTreeMap<i64, EdgeStack>,
    reports: Vec<StackReport>,
    /// Uploaded edge job logs: `(environment, job)` → `FileContent`, the last one kept.
    job_logs: BTreeMap<(i64, i64), String>,
    /// Status the job log route answers instead of storing the log.
    job_log_fault: Option<u16>,
    rules: Rules,
    /// 2.45: `(stack, environment)` → the stack version the list is for, and its status types.
    lists: BTreeMap<(i64, i64), (i64, Vec<u8>)>,
}

struct Inner {
    world: Mutex<World>,
    recorded: Condvar,
    polls: AtomicUsize,
    /// Body bytes written by `Huge` and `Endless` faults.
    streamed: AtomicU64,
    stop: AtomicBool,
    connections: Mutex<Vec<TcpStream>>,
    tls: Mutex<Certificates>,
}

/// The TLS configuration new connections get (`None`: plain HTTP), and the one
/// [`FakePortainer::swap_certificate`] put aside.
struct Certificates {
    current: Option<Arc<rustls::ServerConfig>>,
    aside: Option<Arc<rustls::ServerConfig>>,
}

impl Inner {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct FakePortainer {
    inner: Arc<Inner>,
    addr: SocketAddr,
    scheme: &'static str,
    /// Holds the PEM files below.
    _files: tempfile::TempDir,
    ca_pem: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
}

impl FakePortainer {
    pub fn start(transport: Transport) -> FakePortainer {
        FakePortainer::start_with(transport, Rules::V2_23)
    }

    /// A server applying CE 2.45's rules (see [`Rules::V2_45`]).
    pub fn start_245(transport: Transport) -> FakePortainer {
        FakePortainer::start_with(transport, Rules::V2_45)
    }

    pub fn start_with(transport: Transport, rules: Rules) -> FakePortainer {
        let files = tempfile::tempdir().unwrap();
        let tls = tls::setup(transport, files.path());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            world: Mutex::new(World {
                endpoints: BTreeMap::new(),
                checkin: 5.0,
                fault: None,
                fault_on: None,
                fault_after_payload: None,
                requests: Vec::new(),
                edge_stacks: BTreeMap::new(),
                reports: Vec::new(),
                job_logs: BTreeMap::new(),
                job_log_fault: None,
                rules,
                lists: BTreeMap::new(),
            }),
            recorded: Condvar::new(),
            polls: AtomicUsize::new(0),
            streamed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
            tls: Mutex::new(Certificates {
                current: tls.as_ref().map(|t| t.config.clone()),
                aside: None,
            }),
        });
        let accept_inner = inner.clone();
        std::thread::spawn(move || accept(listener, accept_inner));
        FakePortainer {
            inner,
            addr,
            scheme: if tls.is_some() { "https" } else { "http" },
            ca_pem: tls.as_ref().and_then(|t| t.ca_pem.clone()),
            client_cert: tls.and_then(|t| t.client_cert),
            _files: files,
        }
    }

    /// `http://127.0.0.1:<port>`, or `https://localhost:<port>` (the certificate's name).
    pub fn url(&self) -> String {
        match self.scheme {
            "https" => format!("https://localhost:{}", self.addr.port()),
            _ => format!("http://{}", self.addr),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The CA's certificate (PEM), or the self-signed certificate itself.
    pub fn ca_pem_path(&self) -> Option<PathBuf> {
        self.ca_pem.clone()
    }

    /// A client certificate and key signed by the server's CA.
    pub fn client_cert_paths(&self) -> Option<(PathBuf, PathBuf)> {
        self.client_cert.clone()
    }

    /// From now on the server presents a certificate of another CA (same names), as after a
    /// botched renewal; open connections are closed. [`FakePortainer::restore_certificate`]
    /// undoes it.
    pub fn swap_certificate(&self) {
        let mut tls = self.inner.tls.lock().unwrap();
        let original = tls.current.take().expect("a TLS server");
        tls.current = Some(tls::other_ca_config());
        tls.aside = Some(original);
        drop(tls);
        self.close_connections();
    }

    pub fn restore_certificate(&self) {
        let mut tls = self.inner.tls.lock().unwrap();
        if let Some(original) = tls.aside.take() {
            tls.current = Some(original);
        }
        drop(tls);
        self.close_connections();
    }

    fn close_connections(&self) {
        for c in self.inner.connections.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Creates environment `id`, with its Edge ID already bound when `edge_id` is given.
    pub fn add_endpoint(&self, id: i64, edge_id: Option<&str>) {
        self.inner.world().endpoints.insert(
            id,
            Endpoint {
                edge_id: edge_id.map(str::to_owned),
                ..Endpoint::default()
            },
        );
    }

    /// The global check-in interval (seconds; Portainer sends an integer, the agent decodes a
    /// float, so fractions exercise short intervals).
    pub fn set_checkin(&self, seconds: f64) {
        let mut world = self.inner.world();
        world.checkin = seconds;
        world.endpoints.values_mut().for_each(|e| e.etag = None);
    }

    pub fn set_stacks(&self, id: i64, stacks: &[(i64, i64)]) {
        self.change(id, |e| e.stacks = stacks.to_vec());
    }

    pub fn set_jobs(&self, id: i64, jobs: &[EdgeJob]) {
        self.change(id, |e| e.jobs = jobs.to_vec());
    }

    /// The jobs of environment `id` as the server has them now (`CollectLogs` is cleared by an
    /// upload, as Portainer does).
    pub fn jobs(&self, id: i64) -> Vec<EdgeJob> {
        self.inner.world().endpoints[&id].jobs.clone()
    }

    pub fn job_log(&self, env: i64, job: i64) -> Option<String> {
        self.inner.world().job_logs.get(&(env, job)).cloned()
    }

    /// The job log route answers this status (Portainer's error body) while set.
    pub fn set_job_log_fault(&self, status: Option<u16>) {
        self.inner.world().job_log_fault = status;
    }

    /// `Some((port, credentials))`: the tunnel is required; `None`: idle.
    pub fn set_tunnel(&self, id: i64, tunnel: Option<(u16, String)>) {
        self.change(id, |e| e.tunnel = tunnel);
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        let mut world = self.inner.world();
        world.fault = fault;
        world.fault_on = None;
    }

    /// `fault` for the requests whose path contains `path_part` only.
    pub fn set_fault_on(&self, path_part: &str, fault: Fault) {
        let mut world = self.inner.world();
        world.fault = Some(fault);
        world.fault_on = Some(path_part.to_owned());
    }

    /// Body bytes written so far by `Huge` and `Endless` faults.
    pub fn streamed(&self) -> u64 {
        self.inner.streamed.load(Ordering::Relaxed)
    }

    /// From the next stack payload served on, every request gets `fault` (the server goes
    /// down right after the agent fetched a stack), until [`FakePortainer::set_fault`].
    pub fn fault_after_payload(&self, fault: Fault) {
        self.inner.world().fault_after_payload = Some(fault);
    }

    /// Creates or replaces edge stack `id` with these files (mode 0644; the entry file is
    /// `docker-compose.yml`). Which environments get it, at which version, is
    /// [`FakePortainer::set_stacks`].
    pub fn put_edge_stack(&self, id: i64, name: &str, files: &[(&str, &str)]) {
        let files = files
            .iter()
            .map(|(n, c)| (n.to_string(), c.as_bytes().to_vec(), true, 0o644))
            .collect();
        self.put_edge_stack_entries(id, name, "docker-compose.yml", files);
    }

    /// The same with every entry given: `(name, content, is_file, permissions)`.
    pub fn put_edge_stack_entries(
        &self,
        id: i64,
        name: &str,
        entry_file: &str,
        files: Vec<(String, Vec<u8>, bool, u32)>,
    ) {
        self.inner.world().edge_stacks.insert(
            id,
            EdgeStack {
                name: name.to_owned(),
                entry_file: entry_file.to_owned(),
                files,
            },
        );
    }

    /// The server deletes edge stack `id`: reports about it get `200 null`.
    pub fn delete_edge_stack(&self, id: i64) {
        self.inner.world().edge_stacks.remove(&id);
    }

    /// Every status report accepted for stack `id`, in order (Removed included, which the
    /// server applies by deleting the environment's entry).
    pub fn stack_reports(&self, id: i64) -> Vec<StackReport> {
        let world = self.inner.world();
        world
            .reports
            .iter()
            .filter(|r| r.stack == id)
            .cloned()
            .collect()
    }

    /// The statuses of [`FakePortainer::stack_reports`].
    pub fn stack_history(&self, id: i64) -> Vec<u8> {
        self.stack_reports(id).iter().map(|r| r.status).collect()
    }

    fn change(&self, id: i64, f: impl FnOnce(&mut Endpoint)) {
        let mut world = self.inner.world();
        let endpoint = world.endpoints.get_mut(&id).expect("add_endpoint first");
        f(endpoint);
        endpoint.etag = None;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.world().requests.clone()
    }

    /// Status polls answered so far (cheap, for long runs).
    pub fn poll_count(&self) -> usize {
        self.inner.polls.load(Ordering::Relaxed)
    }

    /// Waits until `done` holds for the recorded requests; `false` after `timeout`.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&[Recorded]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut world = self.inner.world();
        loop {
            if done(&world.requests) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            world = self
                .inner
                .recorded
                .wait_timeout(world, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for FakePortainer {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        // Wake the acceptor, then end every open connection.
        let _ = TcpStream::connect(self.addr);
        self.close_connections();
    }
}

fn accept(listener: TcpListener, inner: Arc<Inner>) {
    for stream in listener.incoming() {
        if inner.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if let Ok(clone) = stream.try_clone() {
            inner.connections.lock().unwrap().push(clone);
        }
        // The clone above keeps the socket open: the connection ends when `serve` returns only
        // once it is shut down.
        let closer = stream.try_clone().ok();
        let inner = inner.clone();
        let tls = inner.tls.lock().unwrap().current.clone();
        std::thread::spawn(move || {
            match tls {
                None => serve(stream, &inner),
                Some(config) => {
                    if let Ok(conn) = rustls::ServerConnection::new(config) {
                        serve(rustls::StreamOwned::new(conn, stream), &inner);
                    }
                }
            }
            if let Some(closer) = closer {
                let _ = closer.shutdown(std::net::Shutdown::Both);
            }
        });
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    fn json(status: u16, body: String) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body: body.into_bytes(),
        }
    }

    /// Portainer's error shape (`pkg/libhttp/error`).
    fn error(status: u16, message: &str, details: &str) -> Response {
        let mut r = Response::json(
            status,
            serde_json::json!({"message": message, "details": details}).to_string(),
        );
        r.headers.push(("X-Content-Type-Options", "nosniff".into()));
        r
    }
}

/// Serves requests on one connection (keep-alive) until the client closes it.
fn serve(stream: impl Read + Write, inner: &Inner) {
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        let fault = {
            let world = inner.world();
            let applies = world
                .fault_on
                .as_ref()
                .is_none_or(|part| request.path.contains(part.as_str()));
            world.fault.clone().filter(|_| applies)
        };
        let response = match fault {
            Some(fault @ (Fault::Huge { .. } | Fault::Endless | Fault::Trickle)) => {
                record(inner, &request, 200);
                let _ = stream_fault(reader.get_mut(), &fault, inner);
                return;
            }
            Some(Fault::RedirectLoop) => Response {
                status: 302,
                headers: vec![("Location", request.path.clone())],
                body: Vec::new(),
            },
            Some(Fault::Answer(body)) => Response {
                status: 200,
                headers: vec![("Content-Type", "application/json".into())],
                body,
            },
            Some(Fault::Hang) => {
                record(inner, &request, 0);
                while !inner.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Some(Fault::Status(status)) => {
                Response::error(status, "Unexpected error", "Injected fault")
            }
            Some(Fault::StatusRetryAfter(status, after)) => {
                let mut r = Response::error(status, "Unexpected error", "Injected fault");
                r.headers.push(("Retry-After", after));
                r
            }
            Some(Fault::Garbage) => Response {
                status: 200,
                headers: vec![("Content-Type", "text/html".into())],
                body: b"<html>oops</html>".to_vec(),
            },
            None => route(&request, inner),
        };
        record(inner, &request, response.status);
        if write_response(reader.get_mut(), &response).is_err() {
            return;
        }
    }
}

/// The answers of the streaming faults; ends with the first failed write (the client gave up),
/// when the fault is cleared (the connection closes mid-answer) or when the server stops.
fn stream_fault(out: &mut impl Write, fault: &Fault, inner: &Inner) -> std::io::Result<()> {
    let blanks = [b' '; 64 * 1024];
    let alive = || !inner.stop.load(Ordering::Relaxed) && inner.world().fault.is_some();
    match fault {
        Fault::Huge { prefix, fill, size } => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
            )?;
            out.write_all(prefix)?;
            let filler = [*fill; 64 * 1024];
            let mut left = size.saturating_sub(prefix.len() as u64);
            while left > 0 && alive() {
                let n = left.min(filler.len() as u64) as usize;
                out.write_all(&filler[..n])?;
                inner.streamed.fetch_add(n as u64, Ordering::Relaxed);
                left -= n as u64;
            }
        }
        Fault::Endless => {
            out.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            )?;
            while alive() {
                write!(out, "{:x}\r\n", blanks.len())?;
                out.write_all(&blanks)?;
                out.write_all(b"\r\n")?;
                inner
                    .streamed
                    .fetch_add(blanks.len() as u64, Ordering::Relaxed);
            }
        }
        _ => {
            let body = r#"{"status":"IDLE","port":0,"schedules":[],"checkin":1,"credentials":"","stacks":[]}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            for byte in answer.as_bytes() {
                if !alive() {
                    break;
                }
                out.write_all(std::slice::from_ref(byte))?;
                out.flush()?;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    out.flush()
}

fn record(inner: &Inner, request: &Request, status: u16) {
    if request.method == "GET" && request.path.ends_with("/edge/status") {
        inner.polls.fetch_add(1, Ordering::Relaxed);
    }
    inner.world().requests.push(Recorded {
        method: request.method.clone(),
        path: request.path.clone(),
        headers: request.headers.clone(),
        status,
        at: Instant::now(),
    });
    inner.recorded.notify_all();
}

/// One HTTP/1.1 request head and its `Content-Length` body (up to 8 MiB); `None` at EOF or on
/// anything malformed, which ends the connection.
fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':')?;
        headers.push((name.to_owned(), value.trim().to_owned()));
        if headers.len() > 100 {
            return None;
        }
    }
    let mut request = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    let length: u64 = request
        .header("Content-Length")
        .map_or(Some(0), |v| v.parse().ok())?;
    reader
        .take(length.min(8 << 20))
        .read_to_end(&mut request.body)
        .ok()?;
    Some(request)
}

fn write_response(out: &mut impl Write, response: &Response) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\n",
        response.status,
        reason(response.status),
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(&response.body)?;
    out.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

const DENIED: &str = "Permission denied to access environment. The device has not been trusted yet";

fn route(request: &Request, inner: &Inner) -> Response {
    let path = request.path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["api", "endpoints", id, "edge", "status"]) => status(request, id, inner),
        ("POST", ["api", "endpoints", "global-key"]) => global_key(request, inner),
        ("GET", ["api", "endpoints", id, "edge", "stacks", stack]) => {
            stack_payload(request, id, stack, inner)
        }
        ("PUT", ["api", "edge_stacks", stack, "status"]) => stack_status(request, stack, inner),
        ("POST", ["api", "endpoints", id, "edge", "jobs", job, "logs"]) => {
            job_logs(request, id, job, inner)
        }
        ("GET", ["api", "system", "status"]) => Response::json(
            200,
            r#"{"Version":"2.45.0","InstanceID":"fake-portainer"}"#.into(),
        ),
        _ => Response {
            status: 404,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body: b"404 page not found\n".to_vec(),
        },
    }
}

/// `GET /api/endpoints/{id}/edge/status`, in the order of `endpointedge_status_inspect.go`.
fn status(request: &Request, id: &str, inner: &Inner) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return Response::error(
            400,
            "Invalid environment identifier route variable",
            "Invalid environment identifier route variable",
        );
    };
    let mut world = inner.world();
    let checkin = world.checkin;
    // The ETag check comes before any authorisation.
    let cached = world.endpoints.get(&id).and_then(|e| e.etag.clone());
    if let (Some(etag), Some(wanted)) = (&cached, request.header("If-None-Match")) {
        let tokens: Vec<&str> = wanted.split(',').collect();
        if !tokens[0].is_empty() && tokens.contains(&etag.as_str()) {
            return Response {
                status: 304,
                headers: vec![("ETag", etag.clone())],
                body: Vec::new(),
            };
        }
    }
    let Some(endpoint) = world.endpoints.get_mut(&id) else {
        return Response::error(
            403,
            DENIED,
            &format!("Unable to retrieve endpoint heartbeat. Environment ID: {id}"),
        );
    };
    let name = format!("env-{id}");
    let edge_id = request.header("X-PortainerAgent-EdgeID").unwrap_or("");
    if edge_id.is_empty() {
        return Response::error(
            403,
            DENIED,
            &format!("Unauthorized Edge endpoint operation: missing Edge identifier. Environment name: {name}"),
        );
    }
    if endpoint
        .edge_id
        .as_deref()
        .is_some_and(|bound| bound != edge_id)
    {
        return Response::error(
            403,
            DENIED,
            &format!("Unauthorized Edge endpoint operation: invalid Edge identifier. Environment name: {name}"),
        );
    }
    if !matches!(request.header("Portainer-Agent-Platform"), Some("1" | "2")) {
        return Response::error(
            400,
            "agent platform header is not valid",
            &format!(
                "Edge polling error: agent platform header is missing. Environment name: {name}"
            ),
        );
    }
    endpoint.edge_id.get_or_insert_with(|| edge_id.to_owned());
    let body = status_body(endpoint, checkin);
    let etag = format!("{:x}", fnv32a(body.as_bytes()));
    endpoint.etag = Some(etag.clone());
    let mut response = Response::json(200, body);
    response.headers.push(("ETag", etag));
    response
}

/// `POST /api/endpoints/{id}/edge/jobs/{job}/logs`: stores `FileContent`, clears the job's
/// `CollectLogs` and the environment's ETag, answers `200 null`.
fn job_logs(request: &Request, id: &str, job: &str, inner: &Inner) -> Response {
    let mut world = inner.world();
    let rules = world.rules;
    if let Some(status) = world.job_log_fault {
        return Response::error(status, "Unexpected error", "Injected fault");
    }
    let Some((id, endpoint)) = id
        .parse::<i64>()
        .ok()
        .and_then(|id| Some((id, world.endpoints.get_mut(&id)?)))
    else {
        return Response::error(
            404,
            "Unable to find an environment with the specified identifier inside the database",
            "",
        );
    };
    let edge_id = request.header("X-PortainerAgent-EdgeID").unwrap_or("");
    if endpoint.edge_id.as_deref() != Some(edge_id) {
        return Response::error(403, "Permission denied to access environment", edge_id);
    }
    let Ok(job) = job.parse::<i64>() else {
        return Response::error(400, "Invalid edge job identifier route variable", job);
    };
    #[derive(serde::Deserialize)]
    struct Payload {
        #[serde(rename = "FileContent")]
        file_content: String,
    }
    let Ok(payload) = serde_json::from_slice::<Payload>(&request.body) else {
        return Response::error(400, "Invalid request payload", "");
    };
    let Some(found) = endpoint.jobs.iter_mut().find(|j| j.id == job) else {
        if rules == Rules::V2_45 {
            return Response::error(
                500,
                "Unable to verify if the edge job is assigned to the environment",
                "edge job not assigned to the environment",
            );
        }
        return Response::error(
            404,
            "Unable to find an edge job with the specified identifier inside the database",
            "",
        );
    };
    found.collect_logs = false;
    endpoint.etag = None;
    world.job_logs.insert((id, job), payload.file_content);
    Response::json(200, "null".into())
}

/// The JSON keys in the server's order, arrays never `null`, no trailing newline.
fn status_body(endpoint: &Endpoint, checkin: f64) -> String {
    let (status, port, credentials) = match &endpoint.tunnel {
        Some((port, credentials)) => ("REQUIRED", *port, credentials.as_str()),
        None => ("IDLE", 0, ""),
    };
    let stacks: Vec<String> = endpoint
        .stacks
        .iter()
        .map(|(id, version)| format!(r#"{{"ID":{id},"Version":{version}}}"#))
        .collect();
    let schedules: Vec<String> = endpoint
        .jobs
        .iter()
        .map(|j| {
            serde_json::json!({
                "Id": j.id,
                "CollectLogs": j.collect_logs,
                "CronExpression": j.cron,
                "Script": base64::engine::general_purpose::STANDARD_NO_PAD.encode(&j.script),
                "Version": j.version,
            })
            .to_string()
        })
        .collect();
    format!(
        r#"{{"status":"{status}","port":{port},"schedules":[{}],"checkin":{checkin},"credentials":"{credentials}","stacks":[{}]}}"#,
        schedules.join(","),
        stacks.join(",")
    )
}

/// `POST /api/endpoints/global-key`: CE only looks the Edge ID up.
fn global_key(request: &Request, inner: &Inner) -> Response {
    let edge_id = request.header("X-PortainerAgent-EdgeID").unwrap_or("");
    if edge_id.is_empty() {
        return Response::error(400, "Invalid Edge ID", "The Edge ID cannot be empty");
    }
    let world = inner.world();
    let found = world
        .endpoints
        .iter()
        .find(|(_, e)| e.edge_id.as_deref() == Some(edge_id));
    match found {
        Some((id, _)) => Response::json(200, format!(r#"{{"endpointID":{id}}}"#)),
        None => Response::error(
            404,
            "Unable to find the endpoint in the database",
            "Unable to find the endpoint in the database",
        ),
    }
}

/// The environment's Edge ID check of the bouncer (`AuthorizedEdgeEndpointOperation`).
fn edge_id_refused(request: &Request, endpoint: &Endpoint) -> Option<Response> {
    let edge_id = request.header("X-PortainerAgent-EdgeID").unwrap_or("");
    if edge_id.is_empty() || endpoint.edge_id.as_deref().is_some_and(|b| b != edge_id) {
        return Some(Response::error(
            403,
            "Permission denied to access environment",
            "Unauthorized Edge endpoint operation: invalid Edge identifier",
        ));
    }
    None
}

/// `GET /api/endpoints/{id}/edge/stacks/{stackId}` (`endpointedge_stack_inspect.go`): the
/// `StackPayload` CE fills (Go field names, the others zero); `?version` is ignored.
fn stack_payload(request: &Request, id: &str, stack: &str, inner: &Inner) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return Response::error(400, "Invalid environment identifier route variable", "");
    };
    let mut world = inner.world();
    let Some(endpoint) = world.endpoints.get(&id) else {
        return Response::error(
            404,
            "Unable to find an environment with the specified identifier inside the database",
            "",
        );
    };
    if let Some(refused) = edge_id_refused(request, endpoint) {
        return refused;
    }
    let Ok(stack) = stack.parse::<i64>() else {
        return Response::error(400, "Invalid edge stack identifier route variable", "");
    };
    let Some(edge_stack) = world.edge_stacks.get(&stack) else {
        return Response::error(
            404,
            "Unable to find an edge stack with the specified identifier inside the database",
            "",
        );
    };
    let entries: Vec<serde_json::Value> = edge_stack
        .files
        .iter()
        .map(|(name, content, is_file, permissions)| {
            serde_json::json!({
                "Name": name,
                "Content": if *is_file { base64::engine::general_purpose::STANDARD.encode(content) } else { String::new() },
                "IsFile": is_file,
                "Permissions": permissions,
            })
        })
        .collect();
    let body = serde_json::json!({
        "ID": 0, "Name": edge_stack.name, "StackFileContent": "", "DirEntries": entries,
        "EntryFileName": edge_stack.entry_file, "Namespace": "default", "Version": 0,
        "RollbackTo": null, "RegistryCredentials": null, "PrePullImage": false,
        "RePullImage": false, "RetryDeploy": false, "EdgeUpdateID": 0,
        "SupportRelativePath": false, "FilesystemPath": "", "EnvVars": null,
        "ReadyRePullImage": false,
    });
    if let Some(fault) = world.fault_after_payload.take() {
        world.fault = Some(fault);
    }
    Response::json(200, body.to_string())
}

/// `PUT /api/edge_stacks/{id}/status` (`edgestack_status_update.go`), validated as the server
/// does; an unknown stack is `200 null` (2.45: after the environment checks, and no body when
/// asked for none). The rest as [`Rules`] says.
fn stack_status(request: &Request, stack: &str, inner: &Inner) -> Response {
    let Ok(stack) = stack.parse::<i64>() else {
        return Response::error(400, "Invalid stack identifier route variable", "");
    };
    #[derive(serde::Deserialize)]
    struct Payload {
        #[serde(rename = "Error", default)]
        error: String,
        #[serde(rename = "Status")]
        status: Option<u8>,
        #[serde(rename = "EndpointID", default)]
        endpoint_id: i64,
        #[serde(rename = "Time", default)]
        time: i64,
        #[serde(rename = "Version", default)]
        version: i64,
    }
    let invalid = |details: String| Response::error(400, "Invalid request payload", &details);
    let payload: Payload = match serde_json::from_slice(&request.body) {
        Ok(p) => p,
        Err(e) => return invalid(e.to_string()),
    };
    let Some(status) = payload.status else {
        return invalid(format!(
            "Edge polling error: invalid status. Environment ID: {}",
            payload.endpoint_id
        ));
    };
    if payload.endpoint_id == 0 {
        return invalid("Invalid EnvironmentID".into());
    }
    if status == 2 && payload.error.is_empty() {
        return invalid("Error message is mandatory when status is error".into());
    }
    let mut world = inner.world();
    let rules = world.rules;
    let no_body = rules == Rules::V2_45 && request.header("X-Portainer-No-Body") == Some("1");
    if rules == Rules::V2_23 && !world.edge_stacks.contains_key(&stack) {
        return Response::json(200, "null".into());
    }
    let Some(endpoint) = world.endpoints.get(&payload.endpoint_id) else {
        return Response::error(404, "Unable to find the environment", "");
    };
    if let Some(refused) = edge_id_refused(request, endpoint) {
        return refused;
    }
    // The stack's version as this environment's poll lists it; `None`: not assigned.
    let assigned = endpoint
        .stacks
        .iter()
        .find(|(id, _)| *id == stack)
        .map(|(_, v)| *v);
    if !world.edge_stacks.contains_key(&stack) {
        let body = if no_body { "" } else { "null" };
        return Response::json(200, body.into());
    }
    let report = StackReport {
        stack,
        endpoint_id: payload.endpoint_id,
        status,
        error: payload.error,
        time: payload.time,
        version: payload.version,
        body: String::from_utf8_lossy(&request.body).into_owned(),
    };
    if rules == Rules::V2_45 {
        let removal = matches!(status, 4 | 9);
        if assigned.is_none() && !removal {
            return Response::error(
                403,
                "Permission denied to update status for this Edge stack",
                "",
            );
        }
        let current = assigned.unwrap_or(0);
        let key = (stack, payload.endpoint_id);
        let list = world.lists.entry(key).or_default();
        if list.0 != current {
            // `updateStackVersion` clears every environment's list.
            *list = (current, Vec::new());
        }
        if payload.version > 0 && payload.version < current {
            // Ignored, answered as accepted.
        } else if status == 4 {
            world.lists.remove(&key);
            world.reports.push(report);
        } else if !list.1.contains(&status) {
            list.1.push(status);
            world.reports.push(report);
        }
    } else {
        world.reports.push(report);
    }
    if no_body {
        return Response::json(200, String::new());
    }
    let name = world
        .edge_stacks
        .get(&stack)
        .map(|s| s.name.clone())
        .unwrap_or_default();
    Response::json(
        200,
        serde_json::json!({"Id": stack, "Name": name}).to_string(),
    )
}

fn fnv32a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

pub mod tls {
    //! Certificates made with rcgen at server start, and the rustls server configuration.

    use super::Transport;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    pub struct Tls {
        pub config: Arc<rustls::ServerConfig>,
        pub ca_pem: Option<PathBuf>,
        pub client_cert: Option<(PathBuf, PathBuf)>,
    }

    const NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

    pub fn setup(transport: Transport, dir: &Path) -> Option<Tls> {
        if transport == Transport::Plain {
            return None;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
        let leaf_key = KeyPair::generate().unwrap();
        if transport == Transport::TlsSelfSigned {
            let cert = CertificateParams::new(names)
                .unwrap()
                .self_signed(&leaf_key)
                .unwrap();
            let chain = vec![cert.der().clone()];
            // Like Portainer's own certificate: no CA, so it may be its own MTLS_SSL_CA.
            let pem = dir.join("self-signed.pem");
            std::fs::write(&pem, cert.pem()).unwrap();
            return Some(Tls {
                config: finish(builder.with_no_client_auth(), chain, &leaf_key),
                ca_pem: Some(pem),
                client_cert: None,
            });
        }
        let ca = new_ca();
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let chain = vec![leaf.der().clone(), ca.der().clone()];
        let (builder, client_cert) = if transport == Transport::TlsCaSignedClientAuth {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der().clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            let client_key = KeyPair::generate().unwrap();
            let client = CertificateParams::new(vec!["edge-agent".to_string()])
                .unwrap()
                .signed_by(&client_key, &ca)
                .unwrap();
            let (cert_path, key_path) = (dir.join("client.pem"), dir.join("client.key"));
            std::fs::write(&cert_path, client.pem()).unwrap();
            std::fs::write(&key_path, client_key.serialize_pem()).unwrap();
            (
                builder.with_client_cert_verifier(verifier),
                Some((cert_path, key_path)),
            )
        } else {
            (builder.with_no_client_auth(), None)
        };
        Some(Tls {
            config: finish(builder, chain, &leaf_key),
            ca_pem: Some(ca_pem),
            client_cert,
        })
    }

    /// A server configuration for localhost whose certificate comes from a CA of its own.
    pub fn other_ca_config() -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap();
        let ca = new_ca();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        finish(
            builder.with_no_client_auth(),
            vec![leaf.der().clone(), ca.der().clone()],
            &key,
        )
    }

    fn new_ca() -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "edge-agent test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    /// PEM files for a server outside this process: `(CA, certificate chain, key)`, the
    /// certificate valid for localhost and 127.0.0.1.
    pub fn server_pems(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let ca = new_ca();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let paths = (
            dir.join("ca.pem"),
            dir.join("server.pem"),
            dir.join("server.key"),
        );
        std::fs::write(&paths.0, ca.pem()).unwrap();
        std::fs::write(&paths.1, leaf.pem() + &ca.pem()).unwrap();
        std::fs::write(&paths.2, key.serialize_pem()).unwrap();
        paths
    }

    fn finish(
        builder: rustls::ConfigBuilder<rustls::ServerConfig, rustls::server::WantsServerCert>,
        chain: Vec<CertificateDer<'static>>,
        key: &KeyPair,
    ) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Arc::new(builder.with_single_cert(chain, key).unwrap())
    }
}
