//! The agent API end to end: the chisel test server (Go's x/crypto/ssh) → the agent binary →
//! the real Docker Engine, with requests signed as Portainer signs them. Containers, logs and
//! stats streams, the console (WebSocket and hijacked exec), a failed pull's error, the agent's
//! own routes, and refusals: unsigned, forged, another key after the pin, a wrong secret, an
//! oversized head, a slow-loris head.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};
use support::api_client::{Answer, Connection, Signer};
use support::chisel::{agent_through_tunnel, WAIT};

fn portainer() -> Signer {
    Signer::new(7, "Portainer-App")
}

/// Removes a container made through the API, whatever happens.
struct Remove(String);

impl Drop for Remove {
    fn drop(&mut self) {
        support::docker::docker(&["rm", "-f", &self.0]);
    }
}

fn assert_agent_headers(answer: &Answer) {
    assert_eq!(
        answer.header("Portainer-Agent"),
        Some("2.45.0"),
        "{}",
        answer.head
    );
    assert_eq!(answer.header("Portainer-Agent-API-Version"), Some("2"));
    assert_eq!(answer.header("Portainer-Agent-Platform"), Some("1"));
}

#[test]
#[ignore = "needs the Docker Engine, busybox-static and Go (tests/run.sh)"]
fn docker_through_the_tunnel_and_the_pin_is_kept() {
    let s = agent_through_tunnel("");
    let signer = portainer();
    let mut c = Connection::open(s.port);
    // Portainer's snapshot calls, on one kept-alive connection.
    for path in [
        "/v1.41/_ping",
        "/v1.41/version",
        "/v1.41/info",
        "/v1.41/containers/json?all=1",
        "/v1.41/images/json",
        "/v1.41/volumes",
        "/v1.41/networks",
    ] {
        let answer = c.request("GET", path, Some(&signer), b"");
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        assert_agent_headers(&answer);
        assert!(
            answer.header("Api-Version").is_some(),
            "Docker's own headers come along"
        );
    }
    let images = c
        .request("GET", "/v1.41/images/json", Some(&signer), b"")
        .json();
    assert!(
        images.to_string().contains(support::docker::IMAGE),
        "{images}"
    );
    assert!(
        s.agent.state_text().contains(&signer.key),
        "the key is pinned in the state file"
    );
    s.running
        .wait_log("Portainer's public key is now pinned", WAIT);
}

#[test]
#[ignore = "needs the Docker Engine, busybox-static and Go (tests/run.sh)"]
fn container_lifecycle_logs_stats_and_console() {
    let s = agent_through_tunnel("");
    let signer = portainer();
    let mut c = Connection::open(s.port);
    let name = support::docker::unique("api");
    let create = serde_json::json!({
        "Image": support::docker::IMAGE,
        "Cmd": ["sh", "-c", "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done"],
        "Tty": true,
        "HostConfig": {"NetworkMode": "none"},
    });
    let created = c.request(
        "POST",
        &format!("/v1.41/containers/create?name={name}"),
        Some(&signer),
        create.to_string().as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["Id"].as_str().unwrap().to_owned();
    let _remove = Remove(id.clone());
    let started = c.request(
        "POST",
        &format!("/v1.41/containers/{id}/start"),
        Some(&signer),
        b"",
    );
    assert_eq!(started.status, 204, "{}", started.text());

    // logs?follow=1 streams: lines keep coming on the open answer.
    let mut logs = Connection::open(s.port);
    logs.send(
        "GET",
        &format!("/v1.41/containers/{id}/logs?follow=1&stdout=1&stderr=1"),
        Some(&signer),
        "",
        b"",
    );
    let (status, _) = logs.head();
    assert_eq!(status, 200);
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !String::from_utf8_lossy(&seen).contains("line 12") {
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&seen)
        );
        let mut piece = [0u8; 512];
        let n = logs.reader.read(&mut piece).unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&piece[..n]);
    }
    drop(logs);

    // stats?stream=1: a JSON document about every second, for a few seconds.
    let mut stats = Connection::open(s.port);
    stats.send(
        "GET",
        &format!("/v1.41/containers/{id}/stats?stream=1"),
        Some(&signer),
        "",
        b"",
    );
    assert_eq!(stats.head().0, 200);
    let mut text = Vec::new();
    while text.windows(8).filter(|w| w == b"\"read\":\"").count() < 3 {
        let mut piece = [0u8; 4096];
        let n = stats.reader.read(&mut piece).unwrap();
        assert!(n > 0);
        text.extend_from_slice(&piece[..n]);
    }
    drop(stats);

    // The console: an exec instance, then Portainer's /websocket/exec.
    let exec = |c: &mut Connection| {
        let body = serde_json::json!({"Cmd": ["sh", "-c", "echo hello from exec"], "AttachStdin": true, "AttachStdout": true, "AttachStderr": true, "Tty": true});
        let answer = c.request(
            "POST",
            &format!("/v1.41/containers/{id}/exec"),
            Some(&signer),
            body.to_string().as_bytes(),
        );
        assert_eq!(answer.status, 201, "{}", answer.text());
        answer.json()["Id"].as_str().unwrap().to_owned()
    };
    let exec_id = exec(&mut c);
    let mut ws = Connection::open(s.port);
    ws.send(
        "GET",
        &format!("/websocket/exec?id={exec_id}&endpointId=3"),
        Some(&signer),
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        b"",
    );
    let (status, head) = ws.head();
    assert_eq!(status, 101, "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    let mut console = String::new();
    while !console.contains("hello from exec") {
        let (opcode, payload) = read_frame(&mut ws);
        if opcode == 8 {
            break;
        }
        assert_eq!(opcode, 1, "Docker's output comes as text frames");
        console.push_str(std::str::from_utf8(&payload).unwrap());
    }
    assert!(console.contains("hello from exec"), "{console:?}");

    // The same through the plain proxy: Docker's hijacked exec start, piped after the 101.
    let exec_id = exec(&mut c);
    let mut raw = Connection::open(s.port);
    let body = br#"{"Detach":false,"Tty":true}"#;
    raw.send(
        "POST",
        &format!("/v1.41/exec/{exec_id}/start"),
        Some(&signer),
        "Connection: Upgrade\r\nUpgrade: tcp\r\n",
        body,
    );
    let (status, head) = raw.head();
    assert_eq!(status, 101, "{head}");
    let mut output = Vec::new();
    let _ = raw.reader.read_to_end(&mut output);
    assert!(
        String::from_utf8_lossy(&output).contains("hello from exec"),
        "{output:?}"
    );

    let removed = c.request(
        "DELETE",
        &format!("/v1.41/containers/{id}?force=1"),
        Some(&signer),
        b"",
    );
    assert_eq!(removed.status, 204, "{}", removed.text());
}

/// One server frame (unmasked): opcode and payload.
fn read_frame(c: &mut Connection) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    c.reader.read_exact(&mut head).unwrap();
    assert_eq!(head[1] & 0x80, 0, "a server does not mask");
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            c.reader.read_exact(&mut b).unwrap();
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            c.reader.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    c.reader.read_exact(&mut payload).unwrap();
    (head[0] & 0x0f, payload)
}

#[test]
#[ignore = "needs the Docker Engine, busybox-static and Go (tests/run.sh)"]
fn a_failed_pull_answers_as_docker_does() {
    let s = agent_through_tunnel("");
    let path = "/images/create?fromImage=registry.invalid/edge-agent/none&tag=1";
    let mut c = Connection::open(s.port);
    let through = c.request("POST", &format!("/v1.41{path}"), Some(&portainer()), b"");
    assert_agent_headers(&through);
    // The same request straight to the socket.
    let mut direct = std::os::unix::net::UnixStream::connect(support::docker::socket()).unwrap();
    write!(
        direct,
        "POST /v1.41{path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    direct.read_to_string(&mut text).unwrap();
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(through.status, status, "{}", through.text());
    assert!(
        through.text().contains("registry.invalid"),
        "{}",
        through.text()
    );
    assert!(
        text.contains(through.text().trim()),
        "the error comes back intact:\n{}\n{text}",
        through.text()
    );
}

#[test]
#[ignore = "needs the Docker Engine, busybox-static and Go (tests/run.sh)"]
fn the_agents_own_routes() {
    let s = agent_through_tunnel("");
    let mut c = Connection::open(s.port);
    let ping = c.request("GET", "/ping", None, b"");
    assert_eq!(ping.status, 204);
    assert_agent_headers(&ping);
    assert_eq!(c.request("GET", "/v2/ping", None, b"").status, 204);
    let agents = c.request("GET", "/v2/agents", Some(&portainer()), b"");
    assert_eq!(agents.status, 503, "{}", agents.text());
    let key = c.request("GET", "/key", None, b"");
    assert_eq!(key.status, 200);
    assert!(
        key.header("Portainer-Agent").is_none(),
        "no agent headers on /key"
    );
    let text = key.json()["key"].as_str().unwrap().to_owned();
    assert!(
        s.agent.env_text().contains(&text),
        "the key as configured: {text}"
    );
    assert_eq!(
        c.request("POST", "/key", None, br#"{"Key":"x"}"#).status,
        409
    );
}

#[test]
#[ignore = "needs the Docker Engine, busybox-static and Go (tests/run.sh)"]
fn unsigned_forged_and_foreign_requests_are_refused() {
    let s = agent_through_tunnel("");
    let mut c = Connection::open(s.port);
    let unsigned = c.request("GET", "/v1.41/containers/json", None, b"");
    assert_eq!(unsigned.status, 403);
    assert_eq!(
        unsigned.json()["message"],
        "Missing request signature headers"
    );
    assert_agent_headers(&unsigned);

    let real = portainer();
    let other = Signer::new(9, "Portainer-App");
    let forged = Signer {
        key: real.key.clone(),
        signature: other.signature.clone(),
    };
    let answer = c.request("GET", "/v1.41/containers/json", Some(&forged), b"");
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json()["message"], "Invalid request signature");
    assert!(
        !s.agent.state_text().contains(&real.key),
        "a forgery pins nothing"
    );

    assert_eq!(
        c.request("GET", "/v1.41/containers/json", Some(&real), b"")
            .status,
        200
    );
    // Pinned: another Portainer's valid signature is refused.
    assert_eq!(
        c.request("GET", "/v1.41/containers/json", Some(&other), b"")
            .status,
        403
    );
    s.running.wait_log(
        "refused a request signed with a public key other than the pinned one",
        WAIT,
    );
}

#[test]
#[ignore = "needs the Docker Engine, busybox-static and Go (tests/run.sh)"]
fn with_a_secret_only_its_signature_passes() {
    let s = agent_through_tunnel("AGENT_SECRET=s3cret\n");
    let mut c = Connection::open(s.port);
    let default_message = portainer();
    assert_eq!(
        c.request("GET", "/v1.41/_ping", Some(&default_message), b"")
            .status,
        403
    );
    assert_eq!(
        c.request("GET", "/v1.41/_ping", Some(&Signer::new(7, "s3cret")), b"")
            .status,
        200
    );
    assert_eq!(
        c.request("GET", "/v1.41/_ping", Some(&Signer::new(8, "s3cret")), b"")
            .status,
        200
    );
}

#[test]
#[ignore = "needs the Docker Engine, busybox-static and Go (tests/run.sh)"]
fn an_oversized_or_dribbled_head_is_refused() {
    let s = agent_through_tunnel("");
    let mut c = Connection::open(s.port);
    let big = format!("X-Filler: {}\r\n", "a".repeat(70 * 1024));
    c.send("GET", "/v1.41/_ping", Some(&portainer()), &big, b"");
    let answer = c.answer("GET");
    assert_eq!(answer.status, 400, "{}", answer.text());
    let mut rest = Vec::new();
    assert_eq!(
        c.reader.read_to_end(&mut rest).unwrap(),
        0,
        "then the connection is closed"
    );

    // Slow-loris: a head that never ends is cut off.
    let mut slow = Connection::open(s.port);
    slow.writer
        .write_all(b"GET /v1.41/_ping HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(3));
        if slow.writer.write_all(b"X-Slow: 1\r\n").is_err() {
            break;
        }
    }
    let answer = slow.answer("GET");
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(
        answer.text().contains("did not arrive"),
        "{}",
        answer.text()
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    // Garbage is answered 400 too.
    let mut junk = Connection::open(s.port);
    junk.writer
        .write_all(b"\x16\x03\x01 not http\r\n\r\n")
        .unwrap();
    assert_eq!(junk.answer("GET").status, 400);
}

#[test]
#[ignore = "needs the Docker Engine, busybox-static and Go (tests/run.sh)"]
fn refusals_alternating_between_two_reasons_log_each_reason_once() {
    let s = agent_through_tunnel("");
    let mut c = Connection::open(s.port);
    let real = portainer();
    assert_eq!(
        c.request("GET", "/v1.41/_ping", Some(&real), b"").status,
        200
    );
    let other = Signer::new(9, "Portainer-App");
    let forged = Signer {
        key: real.key.clone(),
        signature: other.signature.clone(),
    };
    // About a minute of refusals, ten a second, alternating: another key than the pinned one,
    // then a signature that does not verify. Counted, not timed, so a loaded machine sends as
    // many (it only takes longer).
    let start = Instant::now();
    let mut refused = 0;
    while refused < 520 {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "{refused} refusals in 10 minutes"
        );
        for signer in [&other, &forged] {
            assert_eq!(
                c.request("GET", "/v1.41/_ping", Some(signer), b"").status,
                403
            );
            refused += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = s.running.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused a request"))
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "{refused} refusals logged as:\n{}",
        lines.join("\n")
    );
    assert!(
        lines[0].contains("a public key other than the pinned one"),
        "{lines:?}"
    );
    assert!(lines[1].contains("does not verify"), "{lines:?}");
}
