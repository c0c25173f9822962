//! What an operator sees at startup: configuration errors, first-boot identity, state-file
//! recovery, and `edge-agent check`, through the real binary.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use support::agent::{key_for, Agent};
use support::fake_docker::{answer, ping, FakeDocker, Reply};

#[test]
fn bad_value_names_variable_file_and_line_and_leaves_state_alone() {
    let agent = Agent::new();
    agent.write_env(&format!(
        "# first boot\nEDGE_KEY={}\nEDGE_INSECURE_POLL=maybe\n",
        key_for("https://portainer.example:9443", 3)
    ));
    let out = agent.command(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("EDGE_INSECURE_POLL=\"maybe\"")
            && err.contains(&format!("{} line 3", agent.env_file.display()))
            && err.contains("true or false"),
        "{err}"
    );
    assert!(
        !agent.data.exists(),
        "a configuration error must not create DATA_PATH"
    );
}

#[test]
fn damaged_key_is_explained() {
    let agent = Agent::new();
    agent.write_env("EDGE_KEY=aHR0cHM6Ly9wb3J0YWluZXI6OTQ0M3xwb3J0YWluZXI6ODAwMA\n");
    let out = agent.command(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("EDGE_KEY") && err.contains("2 '|'-separated fields, expected 4"),
        "{err}"
    );
}

#[test]
fn missing_key_tells_the_operator_what_to_put_where() {
    let agent = Agent::new();
    agent.write_env("EDGE_KEY=\n");
    let out = agent.command(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("EDGE_KEY is not set") && err.contains(&agent.env_file.display().to_string()),
        "{err}"
    );
}

#[test]
fn unwritable_data_path_is_a_startup_error() {
    let agent = Agent::new();
    fs::write(agent.dir.path().join("file"), b"").unwrap();
    agent.write_env(&format!("EDGE_KEY={}\n", key_for("http://127.0.0.1:9", 3)));
    let out = agent
        .command(&[
            "--data",
            &agent.dir.path().join("file/sub").display().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DATA_PATH") && err.contains("file/sub"),
        "{err}"
    );
}

#[test]
fn check_reports_key_fields_and_unreachable_server() {
    let agent = Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nEDGE_ID=device-7\nEDGE_FUTURE=1\n",
        key_for("http://127.0.0.1:9", 0)
    ));
    let out = agent.command(&["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for expected in [
        "unknown setting EDGE_FUTURE",
        "Portainer URL:      http://127.0.0.1:9",
        "tunnel server:      127.0.0.1:9",
        "endpoint id:        0 (global key",
        "Edge ID: device-7 (from",
        "Portainer: NOT reachable",
        "result: NOT OK",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!agent.data.exists(), "check must not write anything");
}

/// A fake Docker 20.10 that answers what `check` asks.
fn fake_docker() -> FakeDocker {
    FakeDocker::start(|_, path| match path {
        "/_ping" => ping("1.41"),
        _ => Reply::Close(answer(
            "200 OK",
            "application/json",
            r#"{"Version":"20.10.24","ApiVersion":"1.41","MinAPIVersion":"1.12"}"#,
        )),
    })
}

#[test]
fn check_passes_against_a_reachable_server() {
    let server = support::FakePortainer::start(support::Transport::Plain);
    let docker = fake_docker();
    let agent = Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nDOCKER_HOST=unix://{}\n",
        agent.key(&server, 3),
        docker.socket().display()
    ));
    let out = agent.command(&["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("reachable (HTTP 200), Portainer 2.45.0 (supported: 2.23 to 2.45)")
            && text.contains("result: OK"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Docker: {} reachable, Docker Engine 20.10.24 (API 1.41, using 1.41)",
            docker.socket().display()
        )),
        "{text}"
    );
}

#[test]
fn check_fails_without_docker_and_says_what_to_look_at() {
    let server = support::FakePortainer::start(support::Transport::Plain);
    let agent = Agent::new();
    let socket = agent.dir.path().join("docker.sock");
    agent.write_env(&format!(
        "EDGE_KEY={}\nDOCKER_HOST=unix://{}\n",
        agent.key(&server, 3),
        socket.display()
    ));
    let out = agent.command(&["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "Docker: NOT reachable: cannot connect to Docker socket {}: it does not exist: is Docker running? is DOCKER_HOST right?",
            socket.display()
        )) && text.contains("result: NOT OK"),
        "{text}"
    );
}

#[test]
#[ignore = "needs root, to run the agent as another user (tests/run.sh)"]
fn check_names_the_socket_owner_when_permission_is_denied() {
    if !nix::unistd::getuid().is_root() {
        support::missing("only root can run the agent as another user here");
    }
    let docker = fake_docker();
    // The socket as Docker leaves it: root:root (here), mode 0660; the agent runs as nobody.
    std::fs::set_permissions(docker.socket(), std::fs::Permissions::from_mode(0o660)).unwrap();
    std::fs::set_permissions(
        docker.socket().parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let agent = Agent::new();
    agent.write_env(&format!(
        "DOCKER_HOST=unix://{}\n",
        docker.socket().display()
    ));
    std::fs::set_permissions(agent.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // It holds no secret: nobody may read it.
    std::fs::set_permissions(&agent.env_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut command = agent.command(&["check"]);
    // std drops root's supplementary groups along with the uid.
    command.uid(65534).gid(65534);
    let out = command.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // No Edge key: a configuration error (78, as `run` exits), after the Docker line.
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(
        text.contains("permission denied: the socket belongs to user root and group root with mode 0660, and edge-agent runs as uid 65534"),
        "{text}"
    );
    assert!(text.contains("to group root (usermod -aG root "), "{text}");
}

#[test]
fn help_and_version() {
    let out = support::agent::binary().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("EDGE_INACTIVITY_TIMEOUT"),
        "{text}"
    );
    let out = support::agent::binary().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("edge-agent "));
    let out = support::agent::binary()
        .arg("--edge-idd=x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
