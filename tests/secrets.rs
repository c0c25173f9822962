//! No secret reaches the log, at any level: a full run (poll, tunnel, signed API calls with
//! AGENT_SECRET, refusals, registry credentials through the Docker proxy and the Docker Hub
//! route) at DEBUG, then again after a restart with `RUST_LOG=trace` (every library too), and
//! both logs are searched for each secret.

mod support;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use nix::sys::signal::Signal;
use std::time::Duration;
use support::api_client::{Connection, Signer};
use support::chisel::{agent_through_tunnel, credentials, WAIT};

const SECRET: &str = "agent-secret-5bd1c0";
const REGISTRY_PASSWORD: &str = "registry-password-9f3e";

/// What Portainer sends through the tunnel: signed calls, a pull with registry credentials, a
/// Docker Hub check with them, and refused requests.
fn traffic(port: u16, signer: &Signer) -> Vec<String> {
    let auth = STANDARD.encode(format!(
        r#"{{"username":"fleet","password":"{REGISTRY_PASSWORD}","serveraddress":"registry.example.com"}}"#
    ));
    let mut c = Connection::open(port);
    assert_eq!(
        c.request("GET", "/v1.41/_ping", Some(signer), b"").status,
        200
    );
    c.send(
        "POST",
        "/v1.41/images/create?fromImage=registry.example.com/absent&tag=1",
        Some(signer),
        &format!("X-Registry-Auth: {auth}\r\nContent-Length: 0\r\n"),
        b"",
    );
    let pull = c.answer("POST");
    assert!(pull.status >= 200, "{}", pull.text());
    let mut c = Connection::open(port);
    let hub =
        format!(r#"{{"Authentication":true,"Username":"fleet","Password":"{REGISTRY_PASSWORD}"}}"#);
    c.send("POST", "/dockerhub", Some(signer), "", hub.as_bytes());
    let _ = c.answer("POST");
    let mut c = Connection::open(port);
    let forged = Signer::new(7, "not the secret");
    assert_eq!(
        c.request("GET", "/v1.41/_ping", Some(&forged), b"").status,
        403
    );
    vec![auth, forged.signature, signer.signature.clone()]
}

#[test]
#[ignore = "needs the Docker Engine, busybox-static and Go (tests/run.sh)"]
fn no_secret_is_logged_at_debug_or_trace() {
    let mut s = agent_through_tunnel(&format!("LOG_LEVEL=DEBUG\nAGENT_SECRET={SECRET}\n"));
    let signer = Signer::new(7, SECRET);
    let mut secrets = traffic(s.port, &signer);
    s.running.signal(Signal::SIGTERM);
    assert!(s.running.wait_exit(WAIT).is_some(), "{}", s.running.log());
    let mut logs = s.running.log();

    let mut trace = s.agent.command(&[]);
    trace.env("RUST_LOG", "trace");
    s.running = s.agent.spawn(&mut trace);
    s.running.wait_log("tunnel open", WAIT);
    secrets.extend(traffic(s.port, &signer));
    std::thread::sleep(Duration::from_millis(300));
    logs.push_str(&s.running.log());

    let env = s.agent.env_text();
    let edge_key = env
        .lines()
        .find_map(|l| l.strip_prefix("EDGE_KEY="))
        .expect("the setup writes an Edge key");
    secrets.extend([
        edge_key.to_owned(),
        SECRET.to_owned(),
        REGISTRY_PASSWORD.to_owned(),
        // The tunnel credentials, as the poll answer carries them and in clear.
        credentials("user:pass", support::chisel::EDGE_ID),
        "user:pass".to_owned(),
    ]);
    assert!(
        logs.contains("DEBUG") && logs.contains("TRACE"),
        "both runs logged at their level:\n{logs}"
    );
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "the log shows the secret {secret:?}:\n{logs}"
        );
    }
}
