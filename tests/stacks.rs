//! Edge stacks end to end: the real binary against the fake Portainer server and the real
//! Docker Engine (skipped without one, failed under `CI=true`). Each test names its stacks
//! uniquely and removes what they made, also when it fails. The status histories the server
//! recorded are printed (`--nocapture` shows them). The key scenarios run against both status
//! rules the fake server knows (CE 2.23, which appends every report, and CE 2.45, which
//! de-duplicates, filters by `Version` and refuses unassigned stacks): `mod <scenario>` holds
//! one test per rule set.

mod support;

use std::time::{Duration, Instant};
use support::agent::{Agent, Running};
use support::docker::{docker, engine, unique, Project, IMAGE};
use support::{FakePortainer, Fault, Rules, Transport};

/// `fn $name(Rules)` run once per server: tests `$name::v2_23` and `$name::v2_45`.
macro_rules! on_both_servers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            #[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
            fn v2_23() {
                super::$name(super::Rules::V2_23)
            }
            #[test]
            #[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
            fn v2_45() {
                super::$name(super::Rules::V2_45)
            }
        }
    )*};
}

on_both_servers!(
    deploy_update_restart_and_removal_while_stopped,
    failures_are_reported_with_their_cause_and_a_fixed_version_deploys,
    a_failed_deploy_retried_ends_running,
    statuses_sent_while_the_server_is_down_arrive_in_order_once_each,
    reports_of_an_old_version_never_land_after_an_update,
    a_one_shot_stack_completes,
);

const DEPLOY: Duration = Duration::from_secs(90);
const ENDPOINT: i64 = 1;

fn inspect(container: &str, format: &str) -> String {
    let out = docker(&["inspect", "-f", format, container]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// An agent for endpoint 1 of `server`, polling every 0.5 s, without tunnel.
fn agent(server: &FakePortainer) -> Agent {
    let agent = Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nEDGE_ID=stacks-test-device\nEDGE_TUNNEL=false\nLOG_LEVEL=DEBUG\nDOCKER_HOST=unix://{}\n",
        agent.key(server, ENDPOINT),
        support::docker::socket().display()
    ));
    agent
}

fn server(rules: Rules) -> FakePortainer {
    let server = FakePortainer::start_with(Transport::Plain, rules);
    server.add_endpoint(ENDPOINT, None);
    server.set_checkin(0.5);
    server
}

/// Waits until stack `id`'s history is `expected`; fails with the history and the log.
fn wait_history(server: &FakePortainer, running: &Running, id: i64, expected: &[u8]) {
    let deadline = Instant::now() + DEPLOY;
    while Instant::now() < deadline {
        let history = server.stack_history(id);
        if history == expected {
            println!("stack {id} history: {history:?}");
            let reports = server.stack_reports(id);
            assert!(
                reports
                    .iter()
                    .all(|r| r.version > 0
                        && r.body.contains(&format!(",\"Version\":{}}}", r.version))),
                "every report carries the stack version: {reports:?}"
            );
            return;
        }
        assert!(
            history.len() < expected.len() || history[..expected.len()] != *expected,
            "stack {id}: history {history:?} went past {expected:?}\n{:?}\n{}",
            server.stack_reports(id),
            running.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "stack {id}: history {:?}, expected {expected:?}\n{:?}\n{}",
        server.stack_history(id),
        server.stack_reports(id),
        running.log()
    );
}

fn compose_v1() -> String {
    format!(
        r#"services:
  web:
    image: {IMAGE}
    command: ["busybox", "sh", "-c", "echo $$GREETING > /data/hello; exec busybox sleep 3600"]
    environment:
      GREETING: ${{GREETING}}
    stop_grace_period: 1s
    networks: [back]
    volumes: ["data:/data"]
  worker:
    image: {IMAGE}
    command: ["busybox", "sleep", "3600"]
    stop_grace_period: 1s
    networks: [back]
networks:
  back: {{}}
volumes:
  data: {{}}
"#
    )
}

fn deploy_update_restart_and_removal_while_stopped(rules: Rules) {
    let _client = engine();
    let server = server(rules);
    let name = unique("life");
    let project = Project::for_stack(&name);
    let p = &project.0;
    server.put_edge_stack(
        1,
        &name,
        &[
            ("docker-compose.yml", &compose_v1()),
            (".env", "GREETING=hello-from-env\n"),
        ],
    );
    server.set_stacks(ENDPOINT, &[(1, 1)]);
    let agent = agent(&server);
    let mut running = agent.spawn(&mut agent.command(&[]));

    // 1. Deploy: 3, 8, 1, 7; containers, labels, network and volume as compose makes them.
    wait_history(&server, &running, 1, &[3, 8, 1, 7]);
    let reports = server.stack_reports(1);
    assert!(
        reports[0]
            .body
            .starts_with(r#"{"Error":"","Status":3,"EndpointID":1,"Time":"#)
            && reports[0].body.ends_with(r#","Version":1}"#),
        "{}",
        reports[0].body
    );
    let containers = project.containers();
    let names: Vec<&str> = containers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [format!("{p}-web-1"), format!("{p}-worker-1")]);
    let web = format!("{p}-web-1");
    assert_eq!(
        inspect(
            &web,
            "{{index .Config.Labels \"com.docker.compose.service\"}}"
        ),
        "web"
    );
    assert_eq!(inspect(&web, "{{.State.Status}}"), "running");
    assert!(inspect(&web, "{{json .Config.Env}}").contains("GREETING=hello-from-env"));
    assert_eq!(project.listing("network"), [format!("{p}_back")]);
    assert_eq!(project.listing("volume"), [format!("{p}_data")]);
    let folder = agent.data.join("stacks/1");
    assert_eq!(
        std::fs::read_to_string(folder.join(".env")).unwrap(),
        "GREETING=hello-from-env\n"
    );
    let check = agent.command(&["check"]).output().unwrap();
    let check = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.contains(&format!("1 {name:?} version 1 ({p}): running (7)")),
        "{check}"
    );

    // 2. A new version changing one service: only it is recreated.
    server.put_edge_stack(
        1,
        &name,
        &[
            (
                "docker-compose.yml",
                &compose_v1().replace(
                    r#"["busybox", "sleep", "3600"]"#,
                    r#"["busybox", "sleep", "3601"]"#,
                ),
            ),
            (".env", "GREETING=hello-from-env\n"),
        ],
    );
    server.set_stacks(ENDPOINT, &[(1, 2)]);
    wait_history(&server, &running, 1, &[3, 8, 1, 7, 3, 8, 1, 7]);
    let versions: Vec<i64> = server.stack_reports(1).iter().map(|r| r.version).collect();
    assert_eq!(versions, [1, 1, 1, 1, 2, 2, 2, 2]);
    let updated = project.containers();
    assert_eq!(updated[0], containers[0], "web is kept");
    assert_eq!(updated[1].0, containers[1].0);
    assert_ne!(updated[1].1, containers[1].1, "worker is recreated");

    // 3. Restarts, after SIGTERM then SIGKILL: nothing recreated, nothing re-sent.
    let started = inspect(&web, "{{.State.StartedAt}}");
    for signal in [nix::sys::signal::SIGTERM, nix::sys::signal::SIGKILL] {
        running.signal(signal);
        running
            .wait_exit(Duration::from_secs(5))
            .expect("agent stops");
        running = agent.spawn(&mut agent.command(&[]));
        let polls = server.poll_count();
        assert!(
            server.wait_until(Duration::from_secs(20), |_| server.poll_count()
                >= polls + 8)
        );
        // The first check after a start is at once: a wrong one would have reported by now.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            server.stack_history(1),
            [3, 8, 1, 7, 3, 8, 1, 7],
            "{}",
            running.log()
        );
        assert_eq!(project.containers(), updated);
        assert_eq!(inspect(&web, "{{.State.StartedAt}}"), started);
    }
    println!(
        "stack 1 history after two restarts: {:?}",
        server.stack_history(1)
    );

    // 4. Removed on the server while the agent is stopped: removed on the first poll.
    running.signal(nix::sys::signal::SIGTERM);
    running
        .wait_exit(Duration::from_secs(5))
        .expect("agent stops");
    server.set_stacks(ENDPOINT, &[]);
    let running = agent.spawn(&mut agent.command(&[]));
    wait_history(&server, &running, 1, &[3, 8, 1, 7, 3, 8, 1, 7, 9, 4]);
    assert!(project.containers().is_empty());
    assert!(project.listing("network").is_empty());
    assert_eq!(
        project.listing("volume"),
        [format!("{p}_data")],
        "volumes are kept, as by the Go agent"
    );
    assert!(!folder.exists());
    running.wait_log("removed", Duration::from_secs(5));
}

fn failures_are_reported_with_their_cause_and_a_fixed_version_deploys(rules: Rules) {
    let _client = engine();
    let server = server(rules);
    let names: Vec<String> = (0..4).map(|i| unique(&format!("bad{i}"))).collect();
    let _projects: Vec<Project> = names.iter().map(|n| Project::for_stack(n)).collect();
    let service = |body: &str| format!("services:\n  app:\n    image: {IMAGE}\n{body}");
    let files = [
        "services:\n  app:\n    image: [unclosed\n".to_owned(),
        service("    imgae: typo\n"),
        "services:\n  app:\n    image: edge-agent-test/not-here:1\n".to_owned(),
        service("    command: [\"busybox\", \"sh\", \"-c\", \"exit 1\"]\n"),
    ];
    for (i, (name, file)) in names.iter().zip(&files).enumerate() {
        server.put_edge_stack(10 + i as i64, name, &[("docker-compose.yml", file)]);
    }
    // A name that climbs out of the stack folder, and a stack name compose cannot use.
    server.put_edge_stack(
        14,
        &unique("bad4"),
        &[("docker-compose.yml", &service("")), ("../escape", "x")],
    );
    server.put_edge_stack(15, "ÄÖ !", &[("docker-compose.yml", &service(""))]);
    let all: Vec<(i64, i64)> = (10..16).map(|id| (id, 1)).collect();
    server.set_stacks(ENDPOINT, &all);
    let agent = agent(&server);
    let running = agent.spawn(&mut agent.command(&[]));
    wait_history(&server, &running, 10, &[3, 2]);
    wait_history(&server, &running, 11, &[3, 2]);
    wait_history(&server, &running, 12, &[3, 8, 2]);
    wait_history(&server, &running, 13, &[3, 8, 1, 2]);
    wait_history(&server, &running, 14, &[2]);
    wait_history(&server, &running, 15, &[2]);
    let error = |id: i64| server.stack_reports(id).last().unwrap().error.clone();
    for id in 10..16 {
        println!("stack {id} error: {}", error(id));
    }
    assert!(
        error(10).starts_with("docker-compose.yml line 4"),
        "{}",
        error(10)
    );
    assert!(error(11).contains("imgae"), "{}", error(11));
    assert!(
        error(12).contains("edge-agent-test/not-here:1"),
        "{}",
        error(12)
    );
    assert!(error(13).contains("exited with code 1"), "{}", error(13));
    assert!(
        error(14).contains("\"../escape\" climbs out"),
        "{}",
        error(14)
    );
    assert!(!agent.data.join("escape").exists() && !agent.data.join("stacks/escape").exists());
    assert!(
        error(15).contains("no compose project name"),
        "{}",
        error(15)
    );

    // A fixed version deploys.
    server.put_edge_stack(
        10,
        &names[0],
        &[(
            "docker-compose.yml",
            &service(
                "    command: [\"busybox\", \"sleep\", \"3600\"]\n    stop_grace_period: 1s\n",
            ),
        )],
    );
    let mut fixed = all.clone();
    fixed[0].1 = 2;
    server.set_stacks(ENDPOINT, &fixed);
    wait_history(&server, &running, 10, &[3, 2, 3, 8, 1, 7]);
}

fn statuses_sent_while_the_server_is_down_arrive_in_order_once_each(rules: Rules) {
    let _client = engine();
    let server = server(rules);
    let name = unique("down");
    let project = Project::for_stack(&name);
    let file = format!(
        "services:\n  app:\n    image: {IMAGE}\n    command: [\"busybox\", \"sleep\", \"3600\"]\n    stop_grace_period: 1s\n"
    );
    server.put_edge_stack(20, &name, &[("docker-compose.yml", &file)]);
    server.fault_after_payload(Fault::Status(503));
    server.set_stacks(ENDPOINT, &[(20, 1)]);
    let agent = agent(&server);
    let running = agent.spawn(&mut agent.command(&[]));
    // The deploy goes on while the server is down.
    let deadline = Instant::now() + DEPLOY;
    while project.containers().is_empty()
        || inspect(&project.containers()[0].0, "{{.State.Status}}") != "running"
    {
        assert!(Instant::now() < deadline, "{}", running.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(server.stack_history(20).is_empty());
    let back = support::docker::now();
    server.set_fault(None);
    wait_history(&server, &running, 20, &[3, 8, 1, 7]);
    let reports = server.stack_reports(20);
    let times: Vec<i64> = reports.iter().map(|r| r.time).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(
        times.iter().all(|t| *t <= back),
        "times are when each status was reached: {times:?}, back at {back}"
    );
    // Nothing more comes later.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(server.stack_history(20), [3, 8, 1, 7]);
}

fn a_one_shot_stack_completes(rules: Rules) {
    let _client = engine();
    let server = server(rules);
    let name = unique("once");
    let _project = Project::for_stack(&name);
    let file =
        format!("services:\n  job:\n    image: {IMAGE}\n    command: [\"busybox\", \"true\"]\n");
    server.put_edge_stack(30, &name, &[("docker-compose.yml", &file)]);
    server.set_stacks(ENDPOINT, &[(30, 1)]);
    let agent = agent(&server);
    let running = agent.spawn(&mut agent.command(&[]));
    wait_history(&server, &running, 30, &[3, 8, 1, 13]);
}

/// An image missing at first: 3, 8, 2; present at the retry: running. 2.23 records the retry's
/// 8 and 1 again, 2.45 only the types not yet in the list; the last entry is 7 on both.
fn a_failed_deploy_retried_ends_running(rules: Rules) {
    let _client = engine();
    let server = server(rules);
    let name = unique("retry");
    let _project = Project::for_stack(&name);
    let image = format!("edge-agent-test/later-{}:1", name.to_lowercase());
    let _untag = Untag(image.clone());
    let file = format!(
        "services:\n  app:\n    image: {image}\n    command: [\"busybox\", \"sleep\", \"3600\"]\n    stop_grace_period: 1s\n"
    );
    server.put_edge_stack(40, &name, &[("docker-compose.yml", &file)]);
    server.set_stacks(ENDPOINT, &[(40, 1)]);
    let agent = agent(&server);
    let running = agent.spawn(&mut agent.command(&[]));
    wait_history(&server, &running, 40, &[3, 8, 2]);
    assert!(docker(&["tag", IMAGE, &image]).status.success());
    let expected: &[u8] = match rules {
        Rules::V2_23 => &[3, 8, 2, 8, 1, 7],
        Rules::V2_45 => &[3, 8, 2, 1, 7],
    };
    // The first retry comes 30 to 60 s after the failure.
    std::thread::sleep(Duration::from_secs(30));
    wait_history(&server, &running, 40, expected);
}

/// Removes a tag made by a test, also when it fails.
struct Untag(String);

impl Drop for Untag {
    fn drop(&mut self) {
        let _ = docker(&["rmi", &self.0]);
    }
}

/// Version 1 deploys while status reports fail (503), version 2 comes before the server takes
/// them again: only version 2's reports are recorded.
fn reports_of_an_old_version_never_land_after_an_update(rules: Rules) {
    let _client = engine();
    let server = server(rules);
    let name = unique("old");
    let project = Project::for_stack(&name);
    let file = |secs: u32| {
        format!(
            "services:\n  app:\n    image: {IMAGE}\n    command: [\"busybox\", \"sleep\", \"{secs}\"]\n    stop_grace_period: 1s\n"
        )
    };
    server.put_edge_stack(50, &name, &[("docker-compose.yml", &file(3600))]);
    server.set_fault_on("/api/edge_stacks/", Fault::Status(503));
    server.set_stacks(ENDPOINT, &[(50, 1)]);
    let agent = agent(&server);
    let running = agent.spawn(&mut agent.command(&[]));
    let up = |command: &str| {
        let deadline = Instant::now() + DEPLOY;
        loop {
            let containers = project.containers();
            if containers.len() == 1
                && inspect(&containers[0].0, "{{.State.Status}}") == "running"
                && inspect(&containers[0].0, "{{json .Config.Cmd}}").contains(command)
            {
                return;
            }
            assert!(Instant::now() < deadline, "{}", running.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    up("3600");
    running.wait_log("cannot report status", Duration::from_secs(10));
    server.put_edge_stack(50, &name, &[("docker-compose.yml", &file(3601))]);
    server.set_stacks(ENDPOINT, &[(50, 2)]);
    up("3601");
    server.set_fault(None);
    wait_history(&server, &running, 50, &[3, 8, 1, 7]);
    std::thread::sleep(Duration::from_secs(3));
    let reports = server.stack_reports(50);
    let versions: Vec<i64> = reports.iter().map(|r| r.version).collect();
    assert_eq!(versions, [2, 2, 2, 2], "{reports:?}");
}

#[test]
#[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
fn a_deploy_converges_through_409_and_404_races_on_the_real_engine() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let _client = engine();
    let server = server(Rules::V2_23);
    let name = unique("races");
    let project = Project::for_stack(&name);
    let p = project.0.clone();
    // Each race once, made real on the engine just before the agent's call reaches it.
    let done: Arc<[AtomicBool; 4]> = Arc::new(Default::default());
    let (flags, q) = (done.clone(), p.clone());
    let proxy = support::docker::HookedProxy::start(move |method, path| {
        let first = |i: usize| !flags[i].swap(true, Ordering::SeqCst);
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let id = |path: &str| path.split('/').nth(3).unwrap_or("").to_owned();
        if method == "POST"
            && path.ends_with("/containers/create")
            && query == format!("name={q}-web-1")
            && first(0)
        {
            // Someone else (a second compose) creates web-1, running, with a stale hash: 409.
            docker(&[
                "run",
                "-d",
                "--name",
                &format!("{q}-web-1"),
                "--label",
                &format!("com.docker.compose.project={q}"),
                "--label",
                "com.docker.compose.service=web",
                "--label",
                "com.docker.compose.container-number=1",
                "--label",
                "com.docker.compose.oneoff=False",
                "--label",
                "com.docker.compose.config-hash=stale",
                IMAGE,
                "busybox",
                "sleep",
                "3600",
            ]);
        } else if method == "POST" && path.ends_with("/stop") && first(1) {
            // Gone between the agent's listing and its stop (and its remove): 404, 404.
            docker(&["rm", "-f", &id(path)]);
        } else if method == "POST"
            && (path.ends_with("/connect") || path.ends_with("/start"))
            && first(2)
        {
            // A network of the created web-1 removed while connecting it (engines below API
            // 1.44 connect all but the first network after the create) or before its start:
            // the start fails with 404 "network ... not found".
            docker(&["network", "rm", &format!("{q}_front")]);
        }
    });
    let compose = format!(
        r#"services:
  web:
    image: {IMAGE}
    command: ["busybox", "sleep", "3600"]
    stop_grace_period: 1s
    networks: [back, front]
  worker:
    image: {IMAGE}
    command: ["busybox", "sleep", "3600"]
    stop_grace_period: 1s
    networks: [back]
networks:
  back: {{}}
  front: {{}}
"#
    );
    server.put_edge_stack(1, &name, &[("docker-compose.yml", &compose)]);
    server.set_stacks(ENDPOINT, &[(1, 1)]);
    let agent = Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nEDGE_ID=stacks-test-device\nEDGE_TUNNEL=false\nLOG_LEVEL=DEBUG\nDOCKER_HOST=unix://{}\n",
        agent.key(&server, ENDPOINT),
        proxy.path.display()
    ));
    let running = agent.spawn(&mut agent.command(&[]));
    // Converged in one deploy, reported as Portainer expects: 3, 8, 1, 7, no error.
    wait_history(&server, &running, 1, &[3, 8, 1, 7]);
    assert!(
        done.iter().take(3).all(|d| d.load(Ordering::SeqCst)),
        "every race happened"
    );
    assert!(
        running.log().contains(&format!(
            "container {p}-web-1 cannot start (Docker refused POST /v1."
        )),
        "{}",
        running.log()
    );
    // Nothing half-done: web-1 is ours (not the stale one), running, on both networks.
    let web = format!("{p}-web-1");
    assert_eq!(inspect(&web, "{{.State.Status}}"), "running");
    assert_ne!(
        inspect(
            &web,
            "{{index .Config.Labels \"com.docker.compose.config-hash\"}}"
        ),
        "stale"
    );
    let networks = inspect(
        &web,
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
    );
    assert_eq!(networks, format!("{p}_back {p}_front"));
    let names: Vec<String> = project.containers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, [web.clone(), format!("{p}-worker-1")]);
}
