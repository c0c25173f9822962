//! The compose engine against the real Docker Engine of this machine (skipped when there is
//! none, failed under `CI=true`): a project's life through up, change, orphan and down;
//! dependency failures; an interrupted converge finished by the next `up`, and a no-op `up`.
//! Projects have unique names and are brought down (volumes too) even when a test fails.

mod support;

use edge_agent::compose::{self, Project, Source, StackStatus, Step, Up};
use edge_agent::docker::Client;
use std::collections::BTreeMap;
use support::docker::{docker, engine, unique, IMAGE};

/// A project folder with its files, brought down with its volumes when dropped.
struct Stack {
    client: Client,
    dir: tempfile::TempDir,
    name: String,
}

impl Stack {
    fn new(client: &Client, what: &str) -> Stack {
        Stack {
            client: client.clone(),
            dir: tempfile::tempdir().unwrap(),
            name: unique(what),
        }
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.dir.path().join(file), text.replace("IMAGE", IMAGE)).unwrap();
    }

    fn load(&self, env: &[(&str, &str)]) -> Project {
        let source = Source {
            working_dir: self.dir.path().to_owned(),
            files: vec!["compose.yaml".into()],
            project_name: self.name.clone(),
            environment: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Source::default()
        };
        compose::load(&source).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Service → container id, of the containers listed by `ps`.
    fn ids(&self) -> BTreeMap<String, String> {
        compose::ps(&self.client, &self.name)
            .unwrap()
            .into_iter()
            .map(|s| {
                let id = self.client.inspect_container(&s.name).unwrap().id;
                (s.service, id)
            })
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Err(e) = compose::down(&self.client, &self.name, true) {
            eprintln!("could not bring test project {} down: {e}", self.name);
        }
    }
}

/// Each container's service and state, by service.
fn service_states(client: &Client, project: &str) -> Vec<(String, String)> {
    compose::ps(client, project)
        .unwrap()
        .into_iter()
        .map(|s| (s.service, s.state))
        .collect()
}

fn inspect(what: &str, name: &str, format: &str) -> String {
    let out = docker(&[what, "inspect", "--format", format, name]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

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
    command: [busybox, httpd, -f, -p, "8080", -h, /www]
    depends_on:
      db: {condition: service_healthy}
    networks: [front, default]
    volumes:
      - ./html:/www:ro
      - /cache
    env_file: web.env
    environment:
      GREETING: ${GREETING:-hello}
    stop_signal: SIGKILL
  debug:
    image: IMAGE
    command: busybox sleep 600
    profiles: [debug]
  once:
    image: IMAGE
    command: busybox true
volumes:
  data: {}
networks:
  front: {}
"#;

#[test]
#[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
fn project_up_change_orphan_and_down() {
    let client = engine();
    let stack = Stack::new(&client, "life");
    stack.write("compose.yaml", FILE);
    stack.write("web.env", "FROM_ENV_FILE=yes\n");
    std::fs::create_dir(stack.dir.path().join("html")).unwrap();

    compose::up(&client, &stack.load(&[])).unwrap();
    let states = compose::ps(&client, &stack.name).unwrap();
    let summary: Vec<(&str, &str)> = states
        .iter()
        .map(|s| (s.service.as_str(), s.state.as_str()))
        .collect();
    // The profile's service is not started; the one-shot completed.
    assert_eq!(
        summary,
        [("db", "running"), ("once", "exited"), ("web", "running")]
    );
    assert_eq!(compose::aggregate(&states), StackStatus::Running);

    // Names, labels, networks and mounts as compose makes them.
    let web = format!("{}-web-1", stack.name);
    let label = |k: &str| {
        inspect(
            "container",
            &web,
            &format!("{{{{index .Config.Labels \"{k}\"}}}}"),
        )
    };
    assert_eq!(label("com.docker.compose.project"), stack.name);
    assert_eq!(label("com.docker.compose.service"), "web");
    assert_eq!(label("com.docker.compose.container-number"), "1");
    assert_eq!(label("com.docker.compose.oneoff"), "False");
    assert_eq!(label("com.docker.compose.version"), "2.40.3");
    assert_eq!(
        label("com.docker.compose.depends_on"),
        "db:service_healthy:false"
    );
    assert_eq!(
        label("com.docker.compose.project.working_dir"),
        stack.dir.path().display().to_string()
    );
    assert_eq!(
        label("com.docker.compose.image"),
        client.inspect_image(IMAGE).unwrap().id
    );
    let env = inspect("container", &web, "{{json .Config.Env}}");
    assert!(
        env.contains("FROM_ENV_FILE=yes") && env.contains("GREETING=hello"),
        "{env}"
    );
    let aliases = inspect(
        "container",
        &web,
        &format!(
            "{{{{json (index .NetworkSettings.Networks \"{}_front\").Aliases}}}}",
            stack.name
        ),
    );
    assert!(
        aliases.starts_with(&format!("[\"{web}\",\"web\"")),
        "{aliases}"
    );
    assert_eq!(
        inspect(
            "volume",
            &format!("{}_data", stack.name),
            "{{index .Labels \"com.docker.compose.volume\"}}"
        ),
        "data"
    );
    let binds = inspect("container", &web, "{{json .HostConfig.Binds}}");
    assert_eq!(
        binds,
        format!("[\"{}/html:/www:ro\"]", stack.dir.path().display())
    );

    // A changed service is recreated, the others are left running untouched; the recreated
    // container keeps its anonymous volume.
    let out = docker(&["exec", &web, "busybox", "sh", "-c", "echo kept > /cache/f"]);
    assert!(out.status.success(), "{out:?}");
    let before = stack.ids();
    compose::up(&client, &stack.load(&[("GREETING", "changed")])).unwrap();
    let after = stack.ids();
    assert_ne!(before["web"], after["web"], "web's environment changed");
    assert_eq!(before["db"], after["db"], "db did not change");
    assert!(inspect("container", &web, "{{json .Config.Env}}").contains("GREETING=changed"));
    let out = docker(&["exec", &web, "busybox", "cat", "/cache/f"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n", "{out:?}");

    // A service removed from the file is an orphan: removed.
    stack.write(
        "compose.yaml",
        &FILE.replace("  once:\n    image: IMAGE\n    command: busybox true\n", ""),
    );
    compose::up(&client, &stack.load(&[("GREETING", "changed")])).unwrap();
    let services: Vec<String> = stack.ids().into_keys().collect();
    assert_eq!(services, ["db", "web"]);
    assert_eq!(stack.ids()["web"], after["web"]);

    // down keeps the named volume; down -v removes it.
    compose::down(&client, &stack.name, false).unwrap();
    assert!(compose::ps(&client, &stack.name).unwrap().is_empty());
    assert_eq!(compose::aggregate(&[]), StackStatus::Removed);
    assert!(client
        .inspect_network(&format!("{}_front", stack.name))
        .is_err());
    let volume = format!("{}_data", stack.name);
    assert!(client.inspect_volume(&volume).is_ok(), "down keeps volumes");
    compose::down(&client, &stack.name, true).unwrap();
    assert!(
        client.inspect_volume(&volume).is_err(),
        "down -v removes them"
    );
}

#[test]
#[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
fn failed_dependencies_are_reported() {
    let client = engine();
    let stack = Stack::new(&client, "deps");
    stack.write(
        "compose.yaml",
        "services:\n  migrate:\n    image: IMAGE\n    command: busybox sh -c 'exit 2'\n    network_mode: none\n\
         \x20 app:\n    image: IMAGE\n    command: busybox sleep 600\n    network_mode: none\n    depends_on:\n      migrate: {condition: service_completed_successfully}\n",
    );
    let e = compose::up(&client, &stack.load(&[])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "service app did not start: dependency failed to start: migrate exited with code 2"
    );
    let states = compose::ps(&client, &stack.name).unwrap();
    assert_eq!(
        compose::aggregate(&states),
        StackStatus::Error("service migrate exited with code 2".into())
    );

    let stack = Stack::new(&client, "sick");
    stack.write(
        "compose.yaml",
        "services:\n  db:\n    image: IMAGE\n    command: busybox sleep 600\n    network_mode: none\n    stop_signal: SIGKILL\n\
         \x20   healthcheck: {test: [CMD, busybox, \"false\"], interval: 1s, retries: 1}\n\
         \x20 app:\n    image: IMAGE\n    command: busybox sleep 600\n    network_mode: none\n    depends_on:\n      db: {condition: service_healthy}\n",
    );
    let e = compose::up(&client, &stack.load(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "service app did not start: dependency failed to start: db is unhealthy after "
        ),
        "{e}"
    );
    // As compose v2: every container is created, the dependent is not started.
    let states = service_states(&client, &stack.name);
    assert_eq!(
        states,
        [
            ("app".into(), "created".into()),
            ("db".into(), "running".into())
        ]
    );

    // A dependency that fails at once (no healthcheck to wait for): the services two and more
    // steps after the one that waits for it are created all the same, as v2 creates all before
    // starting any.
    let stack = Stack::new(&client, "nohealth");
    stack.write(
        "compose.yaml",
        "services:\n  db:\n    image: IMAGE\n    command: busybox sleep 600\n    network_mode: none\n    stop_signal: SIGKILL\n\
         \x20 app:\n    image: IMAGE\n    command: busybox sleep 600\n    network_mode: none\n    depends_on:\n      db: {condition: service_healthy}\n\
         \x20 web:\n    image: IMAGE\n    command: busybox sleep 600\n    network_mode: none\n    depends_on: [app]\n\
         \x20 proxy:\n    image: IMAGE\n    command: busybox sleep 600\n    network_mode: none\n    depends_on: [web]\n",
    );
    let e = compose::up(&client, &stack.load(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no healthcheck"), "{e}");
    let states = service_states(&client, &stack.name);
    assert_eq!(
        states,
        [
            ("app".into(), "created".into()),
            ("db".into(), "running".into()),
            ("proxy".into(), "created".into()),
            ("web".into(), "created".into())
        ]
    );
}

#[test]
#[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
fn a_service_that_fails_to_start_does_not_stop_the_others() {
    let client = engine();
    let stack = Stack::new(&client, "nostart");
    // `broken` cannot start (no such executable); `after` needs it; `solo` does not.
    stack.write(
        "compose.yaml",
        r#"
services:
  broken:
    image: IMAGE
    command: /nonexistent
    network_mode: none
  after:
    image: IMAGE
    command: busybox sleep 600
    network_mode: none
    depends_on: [broken]
  solo:
    image: IMAGE
    command: busybox sleep 600
    network_mode: none
    stop_signal: SIGKILL
"#,
    );
    let e = compose::up(&client, &stack.load(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "service broken did not start: container {}-broken-1 failed to start: ",
            stack.name
        )) && e.contains("/nonexistent"),
        "{e}"
    );
    let states = service_states(&client, &stack.name);
    assert_eq!(
        states,
        [
            ("after".into(), "created".into()),
            ("broken".into(), "created".into()),
            ("solo".into(), "running".into())
        ]
    );
}

/// Steps of `up` until `stop` says so; the converge is then abandoned.
fn steps_until(client: &Client, project: &Project, stop: impl Fn() -> bool) {
    let mut up = Up::new(project);
    while !stop() {
        assert_eq!(up.step(client).unwrap(), Step::Continue);
    }
}

#[test]
#[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
fn an_interrupted_up_is_completed_and_a_second_up_changes_nothing() {
    let client = engine();
    let stack = Stack::new(&client, "resume");
    let mut file = String::from("services:\n");
    for i in 0..4 {
        file.push_str(&format!(
            "  s{i}:\n    image: IMAGE\n    command: busybox sleep 600\n    stop_signal: SIGKILL\n"
        ));
    }
    stack.write("compose.yaml", &file);
    let project = stack.load(&[]);
    // Abandon the converge once the containers exist (created, not yet started).
    let name = stack.name.clone();
    let c = client.clone();
    steps_until(&client, &project, move || {
        !compose::ps(&c, &name).unwrap().is_empty()
    });
    let states = compose::ps(&client, &stack.name).unwrap();
    assert!(states.iter().all(|s| s.state == "created"), "{states:?}");
    assert_eq!(compose::aggregate(&states), StackStatus::Starting);

    compose::up(&client, &project).unwrap();
    let states = compose::ps(&client, &stack.name).unwrap();
    assert_eq!(states.len(), 4);
    assert!(states.iter().all(|s| s.state == "running"), "{states:?}");

    let ids = stack.ids();
    let mut up = Up::new(&project);
    while up.step(&client).unwrap() == Step::Continue {}
    assert_eq!(up.changes(), 0, "a second up changes nothing");
    assert_eq!(stack.ids(), ids);
}

#[test]
#[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
fn a_missing_image_is_pulled_and_a_failed_pull_names_it() {
    let client = engine();
    let stack = Stack::new(&client, "pull");
    // Nothing listens on 127.0.0.1:9: the pull fails, and nothing is created.
    stack.write(
        "compose.yaml",
        "services:\n  app:\n    image: 127.0.0.1:9/edge-agent-test/nothing:1\n    network_mode: none\n",
    );
    let e = compose::up(&client, &stack.load(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cannot pull image 127.0.0.1:9/edge-agent-test/nothing:1: ")
            && e.contains("127.0.0.1:9"),
        "{e}"
    );
    assert!(stack.ids().is_empty());
    // pull_policy: never does not try.
    stack.write(
        "compose.yaml",
        "services:\n  app:\n    image: 127.0.0.1:9/edge-agent-test/nothing:1\n    pull_policy: never\n",
    );
    let e = compose::up(&client, &stack.load(&[]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "cannot pull image 127.0.0.1:9/edge-agent-test/nothing:1: it is not on this machine and pull_policy is never"
    );
}

/// What docker-compose v2.40.3 created for the same file (`docker inspect`): the flow list
/// closed at its key's column, a literal `$`, a bare unset key, named volumes as binds unless
/// they need the Mount API, unknown volume options ignored, host settings.
#[test]
#[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
fn the_container_is_created_as_compose_2_40_creates_it() {
    let client = engine();
    let stack = Stack::new(&client, "v240");
    stack.write(
        "compose.yaml",
        "services:\n  a:\n    image: IMAGE\n    command: [\n      busybox, sleep, \"600\"\n    ]\n\
         \x20   network_mode: none\n    stop_signal: SIGKILL\n    uts: host\n    cgroup: private\n\
         \x20   environment:\n      - H=${UNSET:-$2a$14$$x}\n      - AUTH_TYPE\n\
         \x20   devices: [{source: /dev/null, target: /dev/xnull, permissions: r}]\n\
         \x20   volumes:\n      - data:/data\n      - data:/ro:ro\n      - data:/nc:nocopy\n\
         \x20     - ./host:/host:ro,cached\n      - data:/dl:delegated\n      - /anon\n\
         volumes: {data: {}}\n",
    );
    compose::up(&client, &stack.load(&[])).unwrap();
    let name = format!("{}-a-1", stack.name);
    let env = inspect("container", &name, "{{json .Config.Env}}");
    assert!(env.contains(r#""H=$2a$14$x""#), "{env}");
    assert!(env.contains(r#""AUTH_TYPE""#), "{env}");
    let data = format!("{}_data", stack.name);
    let binds = inspect("container", &name, "{{json .HostConfig.Binds}}");
    let host = stack.dir.path().join("host");
    let expected = [
        format!("{data}:/data:rw"),
        format!("{data}:/ro:ro"),
        format!("{}:/host:ro", host.display()),
        format!("{data}:/dl:rw"),
    ];
    assert_eq!(
        binds,
        serde_json::to_string(&expected).unwrap(),
        "v2.40.3 sends these as Binds"
    );
    let mounts = inspect("container", &name, "{{json .HostConfig.Mounts}}");
    let targets: Vec<&str> = mounts
        .split(r#""Target":""#)
        .skip(1)
        .map(|t| &t[..t.find('"').unwrap()])
        .collect();
    assert_eq!(targets, ["/nc", "/anon"], "{mounts}");
    assert!(mounts.contains(r#""NoCopy":true"#), "{mounts}");
    let modes = inspect(
        "container",
        &name,
        "{{range .Mounts}}{{.Destination}}={{.Mode}},{{.RW}} {{end}}",
    );
    for mode in ["/data=rw,true", "/ro=ro,false", "/dl=rw,true"] {
        assert!(modes.contains(mode), "{mode} in {modes}");
    }
    let host_config = inspect(
        "container",
        &name,
        "{{.HostConfig.UTSMode}} {{.HostConfig.CgroupnsMode}} {{json .HostConfig.Devices}}",
    );
    assert_eq!(
        host_config,
        r#"host private [{"PathOnHost":"/dev/null","PathInContainer":"/dev/xnull","CgroupPermissions":"r"}]"#
    );
}
