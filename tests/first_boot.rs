//! An operator's first boot, following README.md: what `edge-agent check` and `run` say about a
//! missing or mistyped env file, a self-signed Portainer certificate, and output to a closed
//! pipe, through the real binary.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::agent::{key_for, Agent};
use support::{FakePortainer, Transport};

#[test]
fn check_names_the_fix_for_a_self_signed_portainer_certificate() {
    let server = FakePortainer::start(Transport::TlsSelfSigned);
    let agent = Agent::new();
    agent.write_env(&format!("EDGE_KEY={}\n", agent.key(&server, 3)));
    let out = agent.command(&["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let portainer = text
        .lines()
        .find(|l| l.starts_with("Portainer:"))
        .unwrap_or_default();
    assert!(
        portainer.contains("NOT reachable")
            && portainer.contains("UnknownIssuer")
            && portainer.contains("set EDGE_INSECURE_POLL=1 to accept it, or MTLS_SSL_CA=<"),
        "{text}"
    );

    // Both fixes work.
    for fix in [
        "EDGE_INSECURE_POLL=1".to_owned(),
        format!("MTLS_SSL_CA={}", server.ca_pem_path().unwrap().display()),
    ] {
        agent.write_env(&format!("EDGE_KEY={}\n{fix}\n", agent.key(&server, 3)));
        let out = agent.command(&["check"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("Portainer: {} reachable (HTTP 200)", server.url())),
            "{fix}:\n{text}"
        );
    }
}

#[test]
fn a_missing_env_file_says_where_the_template_is() {
    let agent = Agent::new();
    std::fs::remove_file(&agent.env_file).unwrap();
    let out = agent.command(&["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(
        text.contains(&format!(
            "configuration: NOT valid: env file {0} does not exist; create it from the template in the sources: install -D -m 600 packaging/edge-agent.env {0}",
            agent.env_file.display()
        )),
        "{text}"
    );
}

#[test]
fn check_without_env_file_says_none_was_read() {
    let default = std::path::Path::new("/etc/edge-agent/edge-agent.env");
    let dir = tempfile::tempdir().unwrap();
    let out = support::agent::binary()
        .env_clear()
        .env("DATA_PATH", dir.path())
        .env("EDGE_KEY", key_for("http://127.0.0.1:9", 3))
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    // This machine may have a real agent's file; then check must say it read it.
    let expected = match default.exists() {
        false => "configuration: valid (no env file read: /etc/edge-agent/edge-agent.env does not exist; settings from the environment and options only)",
        true => "configuration: valid (env file /etc/edge-agent/edge-agent.env)",
    };
    assert_eq!(first, expected, "{text}");
}

#[test]
fn every_configuration_error_is_reported_at_once() {
    let agent = Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nEDGE_INACTIVITY_TIMEOUT=30s # close sooner\nLOG_LEVEL=\"DEBUG\" # while testing\n",
        key_for("http://127.0.0.1:9", 3)
    ));
    let out = agent.command(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    let env = agent.env_file.display();
    assert_eq!(
        lines,
        [
            format!("edge-agent: configuration error: {env} line 2: ' #' in a value: comments must be on their own line, because systemd reads this file too and would keep the comment in the value (quote the value if the '#' is part of it)"),
            format!("edge-agent: configuration error: {env} line 3: text after the closing quote: comments must be on their own line, because systemd reads this file too and would add that text to the value"),
        ],
        "{err}"
    );
    let out = agent.command(&["check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("configuration: NOT valid: "))
            .count(),
        2,
        "{text}"
    );
}

/// Runs `command` with its stdout (or, `closed_stdout` false, its stderr) a pipe whose reader is
/// gone, as in `edge-agent check | head -0`. Returns its exit code and what it wrote on the
/// other stream.
fn with_closed_pipe(mut command: Command, closed_stdout: bool) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    match closed_stdout {
        true => command.stdout(writer).stderr(Stdio::piped()),
        false => command.stderr(writer).stdout(Stdio::piped()),
    };
    let mut child = command.stdin(Stdio::null()).spawn().unwrap();
    let mut said = String::new();
    match (child.stdout.take(), child.stderr.take()) {
        (Some(mut other), _) => other.read_to_string(&mut said),
        (_, Some(mut other)) => other.read_to_string(&mut said),
        (None, None) => unreachable!("one stream is piped"),
    }
    .unwrap();
    (child.wait().unwrap().code(), said)
}

#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    let agent = Agent::new();
    agent.write_env(&format!("EDGE_KEY={}\n", key_for("http://127.0.0.1:9", 3)));
    let mut check = agent.command(&["check"]);
    check.env("DOCKER_HOST", "unix:///nonexistent.sock");
    let mut bad = agent.command(&["check"]);
    bad.arg("--log-level=LOUD");
    let mut help = support::agent::binary();
    help.arg("--help");
    let mut version = support::agent::binary();
    version.arg("--version");
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("compose.yaml"),
        "services:\n  web:\n    image: busybox\n",
    )
    .unwrap();
    let mut compose_config = support::agent::binary();
    compose_config
        .args(["compose", "config"])
        .current_dir(project.path());
    let mut compose_help = support::agent::binary();
    compose_help.args(["compose", "--help"]);
    for (name, command, code) in [
        ("check", check, 1),
        ("check of a bad configuration", bad, 78),
        ("--help", help, 0),
        ("--version", version, 0),
        ("compose config", compose_config, 0),
        ("compose --help", compose_help, 0),
    ] {
        let (status, stderr) = with_closed_pipe(command, true);
        assert_eq!(status, Some(code), "{name}: {stderr}");
        assert_eq!(stderr, "", "{name}");
    }
    let (status, stdout) = with_closed_pipe(agent.command(&["--log-level=LOUD"]), false);
    assert_eq!(status, Some(78), "{stdout}");
    let mut usage = support::agent::binary();
    usage.arg("--edge-idd=x");
    assert_eq!(with_closed_pipe(usage, false).0, Some(64));
}

#[test]
fn a_wss_tunnel_to_a_self_signed_server_names_mtls_ssl_ca() {
    use support::chisel::{credentials, free_port, EDGE_ID};
    // A TLS server with a self-signed certificate where the Edge key says the tunnel is: the
    // handshake fails before any SSH, so no chisel server is needed.
    let tunnel_server = FakePortainer::start(Transport::TlsSelfSigned);
    let portainer = FakePortainer::start(Transport::Plain);
    portainer.add_endpoint(3, Some(EDGE_ID));
    portainer.set_checkin(0.05);
    portainer.set_tunnel(3, Some((free_port(), credentials("user:pass", EDGE_ID))));
    let agent = Agent::new();
    let tunnel = format!("https://localhost:{}", tunnel_server.port());
    let key = support::edge_key(&portainer.url(), &tunnel, "fp", 3);
    agent.write_env(&format!("EDGE_KEY={key}\nEDGE_ID={EDGE_ID}\n"));
    let running = agent.spawn(&mut agent.command(&[]));
    running.wait_log("UnknownIssuer", Duration::from_secs(10));
    let log = running.log();
    assert!(
        log.contains("set MTLS_SSL_CA=<PEM file of the CA that signed it, or of the self-signed certificate> (EDGE_INSECURE_POLL does not apply to the tunnel)"),
        "{log}"
    );
}
