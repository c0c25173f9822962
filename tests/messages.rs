//! What `check` and `run` say when an operator following README gets something wrong: a
//! missing key, a server that refuses connections, a Docker socket that is not there, settings
//! they want to see confirmed. Each message names the variable, file or peer at fault and what
//! to do, through the real binary.

mod support;

use std::net::TcpListener;
use std::time::Duration;
use support::agent::{key_for, Agent};
use support::fake_docker::{answer, ping, FakeDocker, Reply};
use support::{edge_key, FakePortainer, Transport};

/// A Docker Engine 20.10 that answers `_ping` and `/version`.
fn docker() -> FakeDocker {
    FakeDocker::start(|_, path| {
        if path.ends_with("/_ping") {
            ping("1.41")
        } else {
            Reply::Close(answer(
                "200 OK",
                "application/json",
                r#"{"Version":"20.10.24","ApiVersion":"1.41","MinAPIVersion":"1.12"}"#,
            ))
        }
    })
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn check(agent: &Agent, extra: &[&str]) -> (Option<i32>, String) {
    let out = agent
        .command(&[&["check"], extra].concat())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn line<'a>(text: &'a str, start: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{text}"))
}

#[test]
fn check_without_a_key_is_the_configuration_error_run_stops_on() {
    let docker = docker();
    let agent = Agent::new();
    agent.write_env(&format!(
        "DOCKER_HOST=unix://{}\n",
        docker.socket().display()
    ));
    let (code, text) = check(&agent, &[]);
    assert_eq!(code, Some(78), "{text}");
    assert!(line(&text, "Edge key:").contains("NOT set"), "{text}");
    assert_eq!(
        text.lines().last(),
        Some(
            "result: NOT OK: the configuration is not valid; `run` stops on it too (exit code 78)"
        ),
        "{text}"
    );
    let run = agent.command(&["run"]).output().unwrap();
    assert_eq!(run.status.code(), Some(78));
}

#[test]
fn an_invalid_value_also_ends_the_report_with_its_result() {
    let agent = Agent::new();
    agent.write_env("EDGE_UPLOAD_MAX=lots\n");
    let (code, text) = check(&agent, &[]);
    assert_eq!(code, Some(78), "{text}");
    assert!(line(&text, "configuration: NOT valid:").contains("EDGE_UPLOAD_MAX"));
    assert!(text
        .lines()
        .last()
        .unwrap_or_default()
        .starts_with("result: NOT OK"));
}

#[test]
fn check_lists_the_settings_it_read_and_hides_the_proxy_password() {
    let server = FakePortainer::start(Transport::Plain);
    let docker = docker();
    let agent = Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nDOCKER_HOST=unix://{}\nEDGE_INSECURE_POLL=1\n\
         HTTPS_PROXY=http://ops:s3cret-pass@proxy.lan:3128\nNO_PROXY=localhost\n\
         LOG_LEVEL=DEBUG\nEDGE_UPLOAD_MAX=512M\nEDGE_HOST_BROWSER=false\nEDGE_TUNNEL=false\n",
        key_for(&server.url(), 3),
        docker.socket().display()
    ));
    let (code, text) = check(&agent, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        line(&text, "polling:"),
        "polling: Portainer's certificate is not verified (EDGE_INSECURE_POLL=true)"
    );
    assert_eq!(
        line(&text, "proxy:"),
        "proxy: http://ops:****@proxy.lan:3128 for https:// URLs (HTTPS_PROXY), none for http:// URLs (HTTP_PROXY), not for localhost (NO_PROXY)"
    );
    assert!(!text.contains("s3cret"), "{text}");
    assert!(line(&text, "host browser:").starts_with("host browser: disabled"));
    assert!(line(&text, "uploads:").starts_with("uploads: at most 512 MiB a file"));
    assert_eq!(line(&text, "log level:"), "log level: DEBUG (LOG_LEVEL)");
    // The tunnel is off, so its port (nothing listens at 127.0.0.1:9) is not a failure.
    assert_eq!(
        line(&text, "tunnel server:"),
        "tunnel server: 127.0.0.1:9 not checked (the tunnel is disabled)"
    );
    assert_eq!(text.lines().last(), Some("result: OK"));
}

#[test]
fn refused_connections_say_what_to_check() {
    let docker = docker();
    let agent = Agent::new();
    let portainer = closed_port();
    let tunnel = closed_port();
    agent.write_env(&format!(
        "EDGE_KEY={}\nDOCKER_HOST=unix://{}\n",
        edge_key(
            &format!("http://127.0.0.1:{portainer}"),
            &format!("127.0.0.1:{tunnel}"),
            "fp",
            3
        ),
        docker.socket().display()
    ));
    let (code, text) = check(&agent, &[]);
    assert_eq!(code, Some(1), "{text}");
    let portainer = line(&text, "Portainer:");
    assert!(
        portainer.contains("NOT reachable")
            && portainer.contains("is Portainer running, and is its port open from here"),
        "{text}"
    );
    assert!(
        line(&text, "tunnel server:").contains("is its tunnel port (8000 unless changed) open"),
        "{text}"
    );

    // The running agent's poll failure says the same.
    let mut running = agent.spawn(&mut agent.command(&["run"]));
    running.wait_log("is Portainer running", Duration::from_secs(20));
    running.signal(nix::sys::signal::Signal::SIGTERM);
    running.wait_exit(Duration::from_secs(10));
}

#[test]
fn run_says_at_start_when_the_docker_socket_is_missing() {
    let server = FakePortainer::start(Transport::Plain);
    let agent = Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nDOCKER_HOST=unix:///nonexistent/docker.sock\nEDGE_TUNNEL=false\n",
        key_for(&server.url(), 3)
    ));
    server.add_endpoint(3, None);
    let mut running = agent.spawn(&mut agent.command(&["run"]));
    running.wait_log(
        "Docker: cannot connect to Docker socket /nonexistent/docker.sock: it does not exist",
        Duration::from_secs(20),
    );
    let log = running.log();
    let docker_line = log
        .lines()
        .find(|l| l.contains("Docker:"))
        .unwrap_or_default();
    assert!(
        docker_line.contains("WARN") && docker_line.contains("`edge-agent check` shows the same"),
        "{log}"
    );
    running.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(running.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn the_connectivity_check_passes_and_fails_as_the_go_agents_does() {
    let server = FakePortainer::start(Transport::Plain);
    let tunnel = TcpListener::bind("127.0.0.1:0").unwrap();
    let agent = Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nEDGE_CONNECTIVITY_CHECK=1\n",
        edge_key(
            &server.url(),
            &tunnel.local_addr().unwrap().to_string(),
            "fp",
            3
        )
    ));
    let out = agent.command(&[]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let url = server.url();
    let addr = tunnel.local_addr().unwrap();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            format!("CHECK (1/2): trying to reach the Portainer API server at {url}, waiting up to 15s..."),
            format!("PASS: Portainer API server is reachable at {url}"),
            format!("CHECK (2/2): trying to reach the Portainer tunnel server at {addr}, waiting up to 15s..."),
            format!("PASS: Portainer tunnel server is reachable at {addr}"),
            "RESULT: all 2 connectivity checks passed".to_owned(),
        ]
    );
    assert!(
        !agent.data.join("edge-agent.state").exists(),
        "it only checks"
    );

    // The UI's variables name other targets: a closed port fails, with what to check.
    let closed = closed_port();
    let out = agent
        .command(&[])
        .env(
            "EDGE_CONNECTIVITY_CHECK_URL",
            format!("http://127.0.0.1:{closed}"),
        )
        .env(
            "EDGE_CONNECTIVITY_CHECK_TUNNEL_ADDR",
            format!("127.0.0.1:{closed}"),
        )
        .env("EDGE_CONNECTIVITY_CHECK_TIMEOUT", "5s")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        line(&text, "FAIL: Failed to reach Portainer API server at")
            .contains("is Portainer running"),
        "{text}"
    );
    assert!(
        line(&text, "FAIL: Failed to reach Portainer tunnel server at").contains("tunnel port")
    );
    assert_eq!(
        text.lines().last(),
        Some("RESULT: connectivity checks failed, see the FAIL lines above")
    );

    // Without a key or a URL there is nothing to check.
    agent.write_env("EDGE_CONNECTIVITY_CHECK=1\n");
    let out = agent.command(&[]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("FAIL: Invalid connectivity check configuration:"),
        "{text}"
    );
}
