//! The poll loop against the fake Portainer server, through the real binary: the Go agent's
//! headers, ETag/304, check-in changes, change logging, global keys, 403, backoff and TLS.

mod support;

use std::time::Duration;
use support::agent::{Agent, Running};
use support::{FakePortainer, Fault, Recorded, Transport};

const WAIT: Duration = Duration::from_secs(10);

fn polls(requests: &[Recorded]) -> Vec<&Recorded> {
    requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/edge/status"))
        .collect()
}

/// Starts an agent with `env` lines after its key, against `server` endpoint `id`.
fn start(server: &FakePortainer, id: i64, env: &str) -> (Agent, Running) {
    let agent = Agent::new();
    agent.write_env(&format!("EDGE_KEY={}\n{env}", agent.key(server, id)));
    let running = agent.spawn(&mut agent.command(&[]));
    (agent, running)
}

fn wait_polls(server: &FakePortainer, n: usize) {
    assert!(
        server.wait_until(WAIT, |r| polls(r).len() >= n),
        "expected {n} polls, got {:?}",
        server
            .requests()
            .iter()
            .map(|r| (&r.method, &r.path, r.status))
            .collect::<Vec<_>>()
    );
}

#[test]
fn polls_with_the_go_agent_headers_and_a_persistent_edge_id() {
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(3, None);
    let (agent, running) = start(&server, 3, "");
    wait_polls(&server, 1);
    let requests = server.requests();
    let poll = polls(&requests)[0];
    assert_eq!(poll.path, "/api/endpoints/3/edge/status");
    assert_eq!(poll.status, 200);
    let edge_id = poll.header("X-PortainerAgent-EdgeID").unwrap().to_owned();
    assert_eq!(edge_id.len(), 36, "a generated UUID: {edge_id}");
    assert_eq!(poll.header("Portainer-Agent"), Some("2.45.0"));
    assert_eq!(poll.header("Portainer-Agent-Platform"), Some("1"));
    assert_eq!(poll.header("X-PortainerAgent-Update-ID"), Some("0"));
    assert!(poll.header("X-PortainerAgent-TimeZone").is_some());
    assert!(poll.header("If-None-Match").is_some());
    assert!(poll
        .header("User-Agent")
        .unwrap()
        .starts_with("edge-agent/"));
    running.wait_log(&format!("Edge ID {edge_id}"), WAIT);
    assert!(agent.state_text().contains(&edge_id));
    drop(running);

    // A restart keeps the identity: the server bound it and would refuse another.
    let again = agent.spawn(&mut agent.command(&[]));
    wait_polls(&server, 2);
    let requests = server.requests();
    let second = polls(&requests)[1];
    assert_eq!(
        second.header("X-PortainerAgent-EdgeID"),
        Some(edge_id.as_str())
    );
    assert_eq!(second.status, 200, "{}", again.log());
}

#[test]
fn etag_checkin_and_changes_are_logged_once() {
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(3, None);
    server.set_checkin(0.02);
    let (_agent, running) = start(&server, 3, "");
    wait_polls(&server, 10);
    running.wait_log("check-in interval is now 20ms (was 5s)", WAIT);
    let requests = server.requests();
    let p = polls(&requests);
    assert_eq!(p[0].status, 200);
    let etag = p[1].header("If-None-Match").unwrap().to_owned();
    assert!(
        !etag.is_empty(),
        "the second poll sends the ETag of the first answer"
    );
    assert!(
        p[1..].iter().all(|r| r.status == 304),
        "unchanged answers are 304"
    );

    server.set_stacks(3, &[(1, 3), (2, 1)]);
    server.set_tunnel(3, Some((51234, "Y3JlZHM".into())));
    let seen = polls(&server.requests()).len();
    wait_polls(&server, seen + 20);
    let log = running.log();
    assert_eq!(log.matches("edge stacks: 1 v3, 2 v1").count(), 1, "{log}");
    assert_eq!(
        log.matches("requires the tunnel (remote port 51234)")
            .count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("tunnel not required").count(), 1, "{log}");

    server.set_tunnel(3, None);
    running.wait_log("no longer requires the tunnel", WAIT);
    let lines = running.log().lines().count();
    assert!(lines < 15, "no per-poll noise at INFO:\n{}", running.log());
}

#[test]
fn global_key_is_resolved_once_and_remembered() {
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(7, Some("device-7"));
    let (agent, running) = start(&server, 0, "EDGE_ID=device-7\n");
    wait_polls(&server, 1);
    let requests = server.requests();
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/api/endpoints/global-key");
    assert_eq!(
        requests[0].header("X-PortainerAgent-EdgeID"),
        Some("device-7")
    );
    assert_eq!(polls(&requests)[0].path, "/api/endpoints/7/edge/status");
    running.wait_log("Portainer knows Edge ID device-7 as environment 7", WAIT);
    assert!(agent.state_text().contains("\"endpoint_id\":7"));
    drop(running);

    // After a restart, and while the server is failing, the learned id is used as is.
    server.set_fault(Some(Fault::Status(502)));
    let before = server.requests().len();
    let running = agent.spawn(&mut agent.command(&[]));
    assert!(server.wait_until(WAIT, |r| r.len() > before));
    running.wait_log("poll failed", WAIT);
    let requests = server.requests();
    assert_eq!(requests[before].path, "/api/endpoints/7/edge/status");
    assert!(agent.state_text().contains("\"endpoint_id\":7"));
}

#[test]
fn unknown_global_key_environment_is_reported() {
    let server = FakePortainer::start(Transport::Plain);
    let (_agent, running) = start(&server, 0, "EDGE_ID=nobody\n");
    running.wait_log("Unable to find the endpoint in the database", WAIT);
    assert!(polls(&server.requests()).is_empty());
}

#[test]
fn forbidden_is_logged_with_the_server_message_and_not_hammered() {
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(3, Some("the-real-device"));
    server.set_checkin(0.02);
    let (_agent, running) = start(&server, 3, "EDGE_ID=an-impostor\n");
    running.wait_log("Portainer refuses this agent", WAIT);
    let log = running.log();
    assert!(
        log.contains("ERROR") && log.contains("Permission denied to access environment"),
        "{log}"
    );
    assert!(
        log.contains("invalid Edge identifier") && log.contains("an-impostor"),
        "{log}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        polls(&server.requests()).len(),
        1,
        "a 403 is retried at the cap, not at once"
    );
}

#[test]
fn server_errors_back_off_then_recover_without_losing_state() {
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(3, None);
    server.set_checkin(0.02);
    let (agent, running) = start(&server, 3, "");
    wait_polls(&server, 3);
    let state = agent.state_text();

    server.set_fault(Some(Fault::Status(500)));
    let start = polls(&server.requests()).len();
    std::thread::sleep(Duration::from_secs(2));
    let failed = polls(&server.requests()).len() - start;
    // Without backoff this would be ~100 polls; with it, ceilings 40, 80, 160 ... ms.
    assert!((1..=15).contains(&failed), "{failed} attempts in 2 s");
    let log = running.log();
    assert_eq!(
        log.matches("poll failed: HTTP 500").count(),
        1,
        "repeated failures are logged once:\n{log}"
    );

    server.set_fault(None);
    running.wait_log("Portainer answers again after", Duration::from_secs(15));
    assert_eq!(agent.state_text(), state, "nothing forgotten or rewritten");
}

#[test]
fn retry_after_is_honoured() {
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(3, None);
    server.set_checkin(0.02);
    let (_agent, _running) = start(&server, 3, "");
    wait_polls(&server, 2);
    server.set_fault(Some(Fault::StatusRetryAfter(503, "1".into())));
    let start = polls(&server.requests()).len();
    wait_polls(&server, start + 3);
    let requests = server.requests();
    let p = polls(&requests);
    for pair in p[start..start + 3].windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(990), "retried after {gap:?}");
    }
}

#[test]
fn non_json_answer_is_a_clear_failure() {
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(3, None);
    server.set_fault(Some(Fault::Garbage));
    let (_agent, running) = start(&server, 3, "");
    running.wait_log("answered 200 but not with a poll response", WAIT);
    assert!(running.log().contains("<html>oops</html>"));
}

#[test]
fn tls_with_a_private_ca() {
    let server = FakePortainer::start(Transport::TlsCaSigned);
    server.add_endpoint(3, None);
    let ca = server.ca_pem_path().unwrap();
    let (_agent, running) = start(&server, 3, &format!("MTLS_SSL_CA={}\n", ca.display()));
    wait_polls(&server, 1);
    running.wait_log("polling https://localhost", WAIT);
}

#[test]
fn self_signed_is_refused_unless_insecure_poll() {
    let server = FakePortainer::start(Transport::TlsSelfSigned);
    server.add_endpoint(3, None);
    let (_agent, running) = start(&server, 3, "");
    running.wait_log("poll failed", WAIT);
    assert!(polls(&server.requests()).is_empty());
    let log = running.log();
    assert!(
        log.contains("UnknownIssuer")
            && log.contains("set EDGE_INSECURE_POLL=1 to accept it, or MTLS_SSL_CA=<"),
        "{log}"
    );
    drop(running);

    let (_agent, running) = start(&server, 3, "EDGE_INSECURE_POLL=1\n");
    wait_polls(&server, 1);
    running.wait_log("certificate is not verified", WAIT);
}

#[test]
fn mutual_tls_client_certificate() {
    let server = FakePortainer::start(Transport::TlsCaSignedClientAuth);
    server.add_endpoint(3, None);
    let ca = server.ca_pem_path().unwrap();
    let (cert, key) = server.client_cert_paths().unwrap();
    let (_agent, running) = start(&server, 3, &format!("MTLS_SSL_CA={}\n", ca.display()));
    running.wait_log("poll failed", WAIT);
    assert!(polls(&server.requests()).is_empty());
    drop(running);

    let env = format!(
        "MTLS_SSL_CA={}\nMTLS_SSL_CERT={}\nMTLS_SSL_KEY={}\n",
        ca.display(),
        cert.display(),
        key.display()
    );
    let (_agent, _running) = start(&server, 3, &env);
    wait_polls(&server, 1);
}

#[test]
fn mismatched_client_key_is_a_startup_error() {
    let server = FakePortainer::start(Transport::TlsCaSignedClientAuth);
    let (cert, _) = server.client_cert_paths().unwrap();
    let other = FakePortainer::start(Transport::TlsCaSignedClientAuth);
    let (_, other_key) = other.client_cert_paths().unwrap();
    let agent = Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nMTLS_SSL_CERT={}\nMTLS_SSL_KEY={}\n",
        agent.key(&server, 3),
        cert.display(),
        other_key.display()
    ));
    let out = agent.command(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MTLS_SSL_KEY do not form a usable client certificate"),
        "{err}"
    );
}
