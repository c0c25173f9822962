//! The key setup page of a prestaged device (docs/provisioning.md), through the real binary: an
//! agent started without a key and `EDGE_SETUP_PAGE=true` is enrolled by the page's form, polls
//! the fake Portainer, keeps the key over a restart; a wrong key gets the validation message on
//! the page; the page is gone once a key is set and after its time limit; each request is
//! bounded; without `EDGE_SETUP_PAGE` a missing key still stops `run` (exit 78).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};
use support::agent::{Agent, Running};
use support::chisel::free_port;
use support::{FakePortainer, Transport};

const WAIT: Duration = Duration::from_secs(10);
const SET_UP: &str = "Agent setup OK. You can close this page.";

/// An agent without a key whose setup page is on at 127.0.0.1:`port`, plus `extra` env lines.
fn prestaged(port: u16, extra: &str) -> Agent {
    let agent = Agent::new();
    agent.write_env(&format!(
        "EDGE_SETUP_PAGE=true\nEDGE_SERVER_HOST=127.0.0.1\nEDGE_SERVER_PORT={port}\nEDGE_TUNNEL=false\n{extra}"
    ));
    agent
}

/// Connects to the page once it listens; panics with the agent's log after [`WAIT`].
fn connect(port: u16, running: &Running) -> TcpStream {
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                return stream;
            }
            Err(e) if Instant::now() > deadline => {
                panic!("the setup page never opened: {e}\n{}", running.log())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Sends `request` and reads the answer to the end: its status and body.
fn exchange(port: u16, running: &Running, request: &[u8]) -> (u16, String) {
    let mut stream = connect(port, running);
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {answer:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// The form a browser posts.
fn post_key(port: u16, running: &Running, key: &str) -> (u16, String) {
    let body = format!(
        "key={}",
        key.replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    let request = format!(
        "POST /init HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(port, running, request.as_bytes())
}

fn assert_closed(port: u16, why: &str) {
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the setup page still answers {why}"
    );
}

/// `edge-agent check` prints `line` and exits with `code`.
fn assert_check(agent: &Agent, line: &str, code: i32) {
    let check = agent.command(&["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains(line), "no {line:?} in:\n{text}");
    assert_eq!(check.status.code(), Some(code), "{text}");
}

fn polls_of(server: &FakePortainer, id: i64) -> usize {
    let path = format!("/api/endpoints/{id}/edge/status");
    server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == path)
        .count()
}

fn wait_polls(server: &FakePortainer, id: i64, n: usize, running: &Running) {
    let path = format!("/api/endpoints/{id}/edge/status");
    let enough =
        |requests: &[support::Recorded]| requests.iter().filter(|r| r.path == path).count() >= n;
    assert!(
        server.wait_until(WAIT, enough),
        "no {n} polls of endpoint {id}:\n{}",
        running.log()
    );
}

fn stop(mut running: Running) {
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let status = running.wait_exit(WAIT);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", running.log());
}

#[test]
fn a_key_entered_on_the_page_enrols_the_agent_and_survives_a_restart() {
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(3, None);
    let port = free_port();
    let agent = prestaged(port, "");
    let running = agent.spawn(&mut agent.command(&["run"]));

    let (status, page) = exchange(port, &running, b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(r#"<form action="/init" method="post">"#) && page.contains(r#"name="key""#),
        "{page}"
    );
    assert_check(
        &agent,
        &format!("Edge key: not set yet, waiting for a key on the setup page at http://127.0.0.1:{port}/"),
        0,
    );
    assert_eq!(polls_of(&server, 3), 0, "it polls before it has a key");

    // A wrong key: the validation message on the page, which stays open.
    let (status, page) = post_key(port, &running, "not-an-edge-key!");
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("The Edge key is not valid: it is not base64")
            && page.contains(r#"<form action="/init""#),
        "{page}"
    );
    let (status, page) = post_key(port, &running, "");
    assert_eq!(status, 400);
    assert!(page.contains("Missing key parameter"), "{page}");

    let key = agent.key(&server, 3);
    let (status, answer) = post_key(port, &running, &key);
    assert_eq!((status, answer.as_str()), (200, SET_UP));
    wait_polls(&server, 3, 1, &running);
    assert_closed(port, "after a key was set");
    assert!(agent.state_text().contains(&key), "{}", agent.state_text());
    assert!(!running.log().contains(&key[8..40]), "{}", running.log());
    stop(running);

    // The restart polls with the saved key and opens no page.
    let before = polls_of(&server, 3);
    let running = agent.spawn(&mut agent.command(&["run"]));
    wait_polls(&server, 3, before + 1, &running);
    assert_closed(port, "after a restart with a saved key");
    assert!(!running.log().contains("setup page"), "{}", running.log());
    stop(running);
}

#[test]
fn the_page_closes_after_its_time_limit() {
    let port = free_port();
    let agent = prestaged(port, "");
    let mut command = agent.command(&["run"]);
    command.env("TEST_SETUP_PAGE_LIMIT", "2s");
    let mut running = agent.spawn(&mut command);
    connect(port, &running);
    let status = running.wait_exit(WAIT);
    assert_eq!(status.and_then(|s| s.code()), Some(78), "{}", running.log());
    assert!(
        running
            .log()
            .contains("no Edge key was entered on the setup page within 2s, so it is closed"),
        "{}",
        running.log()
    );
    assert_closed(port, "after its time limit");
    assert_check(
        &agent,
        &format!(
            "Edge key: NOT set, and the setup page at http://127.0.0.1:{port}/ does NOT answer"
        ),
        1,
    );

    // While it waits, systemd hears that it is up (TimeoutStartSec= would kill it otherwise)
    // and gets its watchdog pings; a stop while waiting is an orderly one.
    let socket_path = agent.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut command = agent.command(&["run"]);
    command
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000");
    let running = agent.spawn(&mut command);
    let mut messages = Vec::new();
    while messages.iter().filter(|m| *m == "WATCHDOG=1").count() < 2 {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a notify datagram");
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(messages[0], "READY=1", "{messages:?}");
    connect(port, &running);
    stop(running);
    assert_closed(port, "after a stop");
}

#[test]
fn without_edge_setup_page_a_missing_key_stops_run_as_before() {
    let port = free_port();
    let agent = Agent::new();
    agent.write_env(&format!("EDGE_SERVER_PORT={port}\n"));
    let out = agent.command(&["run"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("EDGE_SERVER_PORT (")
            && err.contains("is ignored: the key setup page is off (EDGE_SETUP_PAGE=false)")
            && err.contains("EDGE_KEY is not set")
            && err.contains("set EDGE_SETUP_PAGE=true to enter the key on a web page"),
        "{err}"
    );
    assert_closed(port, "without EDGE_SETUP_PAGE");
}

#[test]
fn oversized_and_slow_requests_are_cut() {
    let port = free_port();
    let agent = prestaged(port, "");
    let running = agent.spawn(&mut agent.command(&["run"]));

    let huge_head = format!(
        "GET / HTTP/1.1\r\nHost: gw\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let (status, body) = exchange(port, &running, huge_head.as_bytes());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("longer than 8192 bytes"), "{body}");
    let huge_body =
        "POST /init HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\nkey=";
    let (status, body) = exchange(port, &running, huge_body.as_bytes());
    assert_eq!(status, 413, "{body}");

    // A request that never ends is cut after 10 s, and the page answers again.
    let mut slow = connect(port, &running);
    slow.write_all(b"POST /init HTTP/1.1\r\nContent-Length: 40\r\n\r\nkey=")
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = slow.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        matches!(read, Ok(0))
            && waited >= Duration::from_secs(9)
            && waited < Duration::from_secs(15),
        "{read:?} after {waited:?}"
    );
    let (status, _) = exchange(port, &running, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(status, 200);
    assert!(
        running.log().contains("not sent within 10s"),
        "{}",
        running.log()
    );
    stop(running);
}
