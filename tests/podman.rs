//! The agent on Podman's Docker-compatible API: the engine named on polls and by `check` (fake
//! engines answering as Podman 4.3.1 and Docker 29 do), then on Debian's real `podman system
//! service` (tests/run.sh starts it): compose through `edge-agent compose`, an edge stack
//! through the reconciler, Portainer's calls and the console through the tunnel, `check`.
//! docs/podman.md lists what differs.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::agent::Agent;
use support::api_client::Signer;
use support::fake_docker::{answer, ping, FakeDocker, Reply};
use support::{scenarios, FakePortainer, Transport};

const WAIT: Duration = Duration::from_secs(10);

/// `GET /version` of Debian 12's Podman 4.3.1, trimmed.
const PODMAN_VERSION: &str = r#"{"Platform":{"Name":"linux/amd64/debian-12"},"Components":[{"Name":"Podman Engine","Version":"4.3.1","Details":{"APIVersion":"4.3.1","MinAPIVersion":"4.0.0"}},{"Name":"Conmon","Version":"conmon version 2.1.6"}],"Version":"4.3.1","ApiVersion":"1.41","MinAPIVersion":"1.24"}"#;
/// Docker 29's, trimmed.
const DOCKER_VERSION: &str = r#"{"Platform":{"Name":"Docker Engine - Community"},"Components":[{"Name":"Engine","Version":"29.1.2"},{"Name":"containerd","Version":"v2.2.0"}],"Version":"29.1.2","ApiVersion":"1.52","MinAPIVersion":"1.44"}"#;

/// Podman marks its answers, its ping's too, with `Libpod-Api-Version`.
const PODMAN_PING: &str = "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nLibpod-Api-Version: 4.3.1\r\nServer: Libpod/4.3.1 (linux)\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\r\nOK";

fn engine(version: &'static str, api: &'static str) -> FakeDocker {
    FakeDocker::start(move |_, path| {
        if !path.ends_with("/_ping") {
            Reply::Close(answer("200 OK", "application/json", version))
        } else if version == PODMAN_VERSION {
            Reply::Close(PODMAN_PING.as_bytes().to_vec())
        } else {
            ping(api)
        }
    })
}

/// The `Portainer-Agent-Container-Engine` header of the first poll of an agent on `docker`.
fn first_poll_engine(docker: &FakeDocker) -> Option<String> {
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(3, None);
    let agent = Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nDOCKER_HOST=unix://{}\n",
        agent.key(&server, 3),
        docker.socket().display()
    ));
    let _running = agent.spawn(&mut agent.command(&[]));
    let is_poll = |r: &support::Recorded| r.path.ends_with("/edge/status");
    assert!(server.wait_until(WAIT, |all| all.iter().any(is_poll)));
    let requests = server.requests();
    let poll = requests.iter().find(|r| is_poll(r)).unwrap();
    assert_eq!(poll.header("Portainer-Agent-Platform"), Some("1"));
    poll.header("Portainer-Agent-Container-Engine")
        .map(str::to_owned)
}

#[test]
fn polls_name_the_engine_that_answers() {
    let podman = engine(PODMAN_VERSION, "1.41");
    assert_eq!(first_poll_engine(&podman).as_deref(), Some("podman"));
    let docker = engine(DOCKER_VERSION, "1.52");
    assert_eq!(first_poll_engine(&docker).as_deref(), Some("docker"));
}

#[test]
fn polls_name_no_engine_while_none_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(3, None);
    let agent = Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nDOCKER_HOST=unix://{}\n",
        agent.key(&server, 3),
        dir.path().join("docker.sock").display()
    ));
    let _running = agent.spawn(&mut agent.command(&[]));
    let is_poll = |r: &support::Recorded| r.path.ends_with("/edge/status");
    assert!(server.wait_until(WAIT, |all| all.iter().any(is_poll)));
    let requests = server.requests();
    let poll = requests.iter().find(|r| is_poll(r)).unwrap();
    assert_eq!(poll.header("Portainer-Agent-Container-Engine"), None);
}

#[test]
fn check_names_podman_and_its_docker_api() {
    let podman = engine(PODMAN_VERSION, "1.41");
    let server = FakePortainer::start(Transport::Plain);
    let agent = Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nDOCKER_HOST=unix://{}\n",
        agent.key(&server, 3),
        podman.socket().display()
    ));
    let out = agent.command(&["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "Docker: {} reachable, Podman 4.3.1 (Docker API 1.41, using 1.41)",
            podman.socket().display()
        )),
        "{text}"
    );
}

fn podman_host() -> String {
    support::docker::use_podman();
    support::docker::engine();
    format!("unix://{}", support::docker::PODMAN_SOCKET)
}

#[test]
#[ignore = "needs Podman and busybox-static (tests/run.sh)"]
fn compose_on_podman() {
    let host = podman_host();
    let name = support::docker::unique("compose");
    // Podman runs healthchecks from systemd timers, which this machine may not have: run
    // them as the timer would, every second.
    let db = format!("{name}-db-1");
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let timer = std::thread::spawn(move || {
        while !stopped.load(Ordering::Relaxed) {
            let _ = Command::new("podman")
                .args(["healthcheck", "run", &db])
                .output();
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    scenarios::compose_up_ps_down(&host, &name, "[front, default]");
    stop.store(true, Ordering::Relaxed);
    timer.join().unwrap();
}

#[test]
#[ignore = "needs Podman and busybox-static (tests/run.sh)"]
fn an_edge_stack_deploys_and_goes_on_podman() {
    scenarios::edge_stack_deploys_and_goes(&podman_host(), "podman");
}

#[test]
#[ignore = "needs Podman, busybox-static and Go (tests/run.sh)"]
fn containers_and_console_on_podman() {
    let host = podman_host();
    let s = support::chisel::agent_through_tunnel_on(&host, "");
    let signer = Signer::new(7, "Portainer-App");
    // Podman 4.3 speaks 1.41; a newer Portainer's /v1.47 is lowered to it.
    scenarios::containers_and_console(s.port, &signer, "v1.41");
    scenarios::containers_and_console(s.port, &signer, "v1.47");
}

#[test]
#[ignore = "needs Podman and busybox-static (tests/run.sh)"]
fn check_on_podman() {
    let host = podman_host();
    let server = FakePortainer::start(Transport::Plain);
    let agent = Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nDOCKER_HOST={host}\n",
        agent.key(&server, 3)
    ));
    let out = agent.command(&["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("reachable, Podman ") && text.contains("(Docker API 1.41, using 1.41)"),
        "{text}"
    );
}
