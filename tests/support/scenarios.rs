//! The agent's key paths, to run on engines other than the test machine's Docker (Docker 29,
//! Podman): a compose project through `edge-agent compose`, an edge stack through the agent's
//! reconciler, and Portainer's container calls and console through the tunnel. Each takes the
//! engine as a `DOCKER_HOST` value.

use super::api_client::{Connection, Signer};
use super::docker::{unique, IMAGE};
use std::io::Read;
use std::time::{Duration, Instant};

/// A small project: a healthchecked service with a named volume, one that waits for it on
/// NETWORKS, and a one-shot.
const FILE: &str = r#"
services:
  db:
    image: IMAGE
    command: busybox sh -c "echo up > /data/state; exec busybox sleep 600"
    volumes: [data:/data]
    healthcheck:
      test: busybox test -f /data/state
      interval: 1s
      retries: 10
    stop_grace_period: 1s
  web:
    image: IMAGE
    command: busybox sleep 600
    depends_on:
      db: {condition: service_healthy}
    networks: NETWORKS
    stop_signal: SIGKILL
  once:
    image: IMAGE
    command: busybox true
volumes:
  data: {}
networks:
  front: {}
"#;

/// `edge-agent compose` with `args` in `dir`, on `docker_host`: exit code and output.
pub fn compose(docker_host: &str, dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = super::agent::binary()
        .arg("compose")
        .args(args)
        .current_dir(dir)
        .env("DOCKER_HOST", docker_host)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Removes the project whatever happens.
struct Down<'a> {
    host: &'a str,
    dir: &'a std::path::Path,
    name: &'a str,
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        compose(self.host, self.dir, &["-p", self.name, "down", "-v"]);
    }
}

/// `up -d`, `ps`, `up -d` again (nothing to do), `down -v` of project `name`, with its second
/// service on `networks` (`[front, default]`): each succeeds and says so.
pub fn compose_up_ps_down(docker_host: &str, name: &str, networks: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = FILE.replace("IMAGE", IMAGE).replace("NETWORKS", networks);
    std::fs::write(dir.path().join("compose.yaml"), file).unwrap();
    let _down = Down {
        host: docker_host,
        dir: dir.path(),
        name,
    };
    let (code, text) = compose(docker_host, dir.path(), &["-p", name, "up", "-d"]);
    assert_eq!(code, 0, "up: {text}");
    let (code, ps) = compose(docker_host, dir.path(), &["-p", name, "ps"]);
    assert_eq!(code, 0, "ps: {ps}");
    for service in ["db", "web"] {
        assert!(
            ps.lines()
                .any(|l| l.contains(&format!("{name}-{service}-1")) && l.contains("running")),
            "{service} is not running: {ps}"
        );
    }
    // The one-shot has completed (Podman may still call it `stopped`).
    assert!(ps.contains(&format!("stack {name}: running")), "{ps}");
    let (code, text) = compose(docker_host, dir.path(), &["-p", name, "up", "-d"]);
    assert_eq!(code, 0, "second up: {text}");
    assert!(
        !text.contains("created container"),
        "nothing changed: {text}"
    );
    let (code, text) = compose(docker_host, dir.path(), &["-p", name, "down", "-v"]);
    assert_eq!(code, 0, "down: {text}");
    let (_, ps) = compose(docker_host, dir.path(), &["-p", name, "ps"]);
    assert!(!ps.contains(&format!("{name}-db-1")), "{ps}");
}

/// Portainer's calls at `version` (`v1.41`): list, create, start, an exec in the console
/// WebSocket and one through the plain proxy (hijacked), removal. Returns the container's id.
pub fn containers_and_console(port: u16, signer: &Signer, version: &str) -> String {
    let mut c = Connection::open(port);
    let listed = c.request(
        "GET",
        &format!("/{version}/containers/json?all=1"),
        Some(signer),
        b"",
    );
    assert_eq!(listed.status, 200, "{}", listed.text());
    let create = serde_json::json!({
        "Image": IMAGE,
        "Cmd": ["busybox", "sleep", "600"],
        "Tty": true,
        "HostConfig": {"NetworkMode": "none"},
    });
    let created = c.request(
        "POST",
        &format!("/{version}/containers/create?name={}", unique("console")),
        Some(signer),
        create.to_string().as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["Id"].as_str().unwrap().to_owned();
    let _remove = Remove {
        port,
        signer,
        target: format!("/{version}/containers/{id}?force=1"),
    };
    let started = c.request(
        "POST",
        &format!("/{version}/containers/{id}/start"),
        Some(signer),
        b"",
    );
    assert_eq!(started.status, 204, "{}", started.text());
    // Portainer's log view of the container.
    let logs = c.request(
        "GET",
        &format!("/{version}/containers/{id}/logs?stdout=1&stderr=1&tail=100&timestamps=0"),
        Some(signer),
        b"",
    );
    assert_eq!(logs.status, 200, "{}", logs.text());
    let exec = |c: &mut Connection| {
        let body = serde_json::json!({"Cmd": ["busybox", "sh", "-c", "echo hello from exec"], "AttachStdin": true, "AttachStdout": true, "AttachStderr": true, "Tty": true});
        let answer = c.request(
            "POST",
            &format!("/{version}/containers/{id}/exec"),
            Some(signer),
            body.to_string().as_bytes(),
        );
        assert_eq!(answer.status, 201, "{}", answer.text());
        answer.json()["Id"].as_str().unwrap().to_owned()
    };

    let exec_id = exec(&mut c);
    let mut ws = Connection::open(port);
    ws.send(
        "GET",
        &format!("/websocket/exec?id={exec_id}&endpointId=3"),
        Some(signer),
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        b"",
    );
    let (status, head) = ws.head();
    assert_eq!(status, 101, "{head}");
    let mut console = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&console).contains("hello from exec") {
        assert!(Instant::now() < deadline, "{console:?}");
        let mut piece = [0u8; 512];
        let n = ws.reader.read(&mut piece).unwrap();
        assert!(n > 0, "{console:?}");
        console.extend_from_slice(&piece[..n]);
    }

    let exec_id = exec(&mut c);
    let mut raw = Connection::open(port);
    raw.send(
        "POST",
        &format!("/{version}/exec/{exec_id}/start"),
        Some(signer),
        "Connection: Upgrade\r\nUpgrade: tcp\r\n",
        br#"{"Detach":false,"Tty":true}"#,
    );
    let (status, head) = raw.head();
    assert_eq!(status, 101, "{head}");
    let mut output = Vec::new();
    let _ = raw.reader.read_to_end(&mut output);
    assert!(
        String::from_utf8_lossy(&output).contains("hello from exec"),
        "{output:?}"
    );
    id
}

/// Removes a container through the API (`target` is the `DELETE`'s).
struct Remove<'a> {
    port: u16,
    signer: &'a Signer,
    target: String,
}

impl Drop for Remove<'_> {
    fn drop(&mut self) {
        let mut c = Connection::open(self.port);
        let removed = c.request("DELETE", &self.target, Some(self.signer), b"");
        if removed.status != 204 && !std::thread::panicking() {
            panic!("{}: {}", self.target, removed.text());
        }
    }
}

/// An edge stack deployed by the agent (polling the fake Portainer, no tunnel), then removed:
/// the status history says deploying, deployed, running, removing, removed; every poll names
/// `engine` (`docker`, `podman`).
pub fn edge_stack_deploys_and_goes(docker_host: &str, engine: &str) {
    let server = super::FakePortainer::start(super::Transport::Plain);
    server.add_endpoint(1, None);
    server.set_checkin(0.5);
    let name = unique("stack");
    let _project = super::docker::Project::for_stack(&name);
    let file = format!(
        "services:\n  web:\n    image: {IMAGE}\n    command: [\"busybox\", \"sleep\", \"3600\"]\n    stop_grace_period: 1s\n"
    );
    server.put_edge_stack(1, &name, &[("docker-compose.yml", &file)]);
    server.set_stacks(1, &[(1, 1)]);
    let agent = super::agent::Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nEDGE_TUNNEL=false\nDOCKER_HOST={docker_host}\n",
        agent.key(&server, 1)
    ));
    let running = agent.spawn(&mut agent.command(&[]));
    let wait_history = |expected: &[u8]| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while server.stack_history(1) != expected {
            assert!(
                Instant::now() < deadline,
                "history {:?}, expected {expected:?}\n{:?}\n{}",
                server.stack_history(1),
                server.stack_reports(1),
                running.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_history(&[3, 8, 1, 7]);
    server.set_stacks(1, &[]);
    wait_history(&[3, 8, 1, 7, 9, 4]);
    let engines: Vec<_> = server
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/edge/status"))
        .map(|r| {
            r.header("Portainer-Agent-Container-Engine")
                .map(str::to_owned)
        })
        .collect();
    assert!(
        engines.iter().all(|e| e.as_deref() == Some(engine)),
        "{engines:?}"
    );
}
