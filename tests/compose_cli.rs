//! `edge-agent compose` as an operator types it, against the real Docker Engine: `stop`,
//! `start` and `restart` by service in dependency order, `start` waiting for `depends_on`
//! conditions, `logs` as compose v2 prints them, `pull` from a private registry, and what `ps`
//! says after a failed `up` and for a project never deployed.

mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::docker::{docker, engine, unique, IMAGE};

/// `edge-agent compose -p NAME -f DIR/compose.yaml ARGS...`, not run yet.
fn command(dir: &std::path::Path, name: &str, args: &[&str]) -> Command {
    let mut command = support::agent::binary();
    command
        .args(["compose", "-p", name, "-f"])
        .arg(dir.join("compose.yaml"))
        .args(args);
    command
}

fn compose(dir: &std::path::Path, name: &str, args: &[&str]) -> Output {
    command(dir, name, args).output().unwrap()
}

/// The engine checked, and a folder and project name for a test.
fn setup(what: &str) -> (tempfile::TempDir, String) {
    engine();
    (tempfile::tempdir().unwrap(), unique(what))
}

/// Writes `DIR/compose.yaml` with [`IMAGE`] for `IMAGE`.
fn write(dir: &std::path::Path, file: &str) {
    std::fs::write(dir.join("compose.yaml"), file.replace("IMAGE", IMAGE)).unwrap();
}

/// `docker inspect --format FORMAT NAME-SERVICE-1`.
fn inspect(name: &str, service: &str, format: &str) -> String {
    let out = docker(&[
        "inspect",
        "--format",
        format,
        &format!("{name}-{service}-1"),
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Waits (at most 20 s) until `NAME-SERVICE-1` is in `state`.
fn wait_state(name: &str, service: &str, state: &str) {
    let started = Instant::now();
    while inspect(name, service, "{{.State.Status}}") != state {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{name}-{service}-1 is not {state} after 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Service → state, by `docker inspect` of `NAME-SERVICE-1`.
fn state(name: &str, service: &str) -> String {
    inspect(name, service, "{{.State.Status}}")
}

/// Brings the project down when dropped.
struct Down<'a>(&'a std::path::Path, &'a str);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        compose(self.0, self.1, &["down", "-v"]);
    }
}

#[test]
#[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
fn stop_start_restart_by_service() {
    let (dir, name) = setup("cli");
    let file = "services:\n  db:\n    image: IMAGE\n    command: busybox sleep 600\n    network_mode: none\n    stop_signal: SIGKILL\n\
                \x20 web:\n    image: IMAGE\n    command: busybox sleep 600\n    network_mode: none\n    stop_signal: SIGKILL\n    depends_on: [db]\n";
    write(dir.path(), file);
    let _down = Down(dir.path(), &name);
    let up = compose(dir.path(), &name, &["up", "-d"]);
    assert!(up.status.success(), "{}", text(&up));

    let stop = compose(dir.path(), &name, &["stop", "web"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert_eq!(
        (state(&name, "db"), state(&name, "web")),
        ("running".into(), "exited".into())
    );
    let stop = compose(dir.path(), &name, &["stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert_eq!(state(&name, "db"), "exited");

    let start = compose(dir.path(), &name, &["start"]);
    assert!(start.status.success(), "{}", text(&start));
    assert_eq!(
        (state(&name, "db"), state(&name, "web")),
        ("running".into(), "running".into())
    );

    let restart = compose(dir.path(), &name, &["restart", "db"]);
    assert!(restart.status.success(), "{}", text(&restart));
    assert_eq!(state(&name, "db"), "running");

    let missing = compose(dir.path(), &name, &["stop", "nothing"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing).contains("service nothing has no container in project"),
        "{}",
        text(&missing)
    );
}

#[test]
#[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
fn ps_after_a_failed_up_and_for_a_project_never_deployed() {
    let (dir, name) = setup("cli-ps");
    let file = "services:\n  broken:\n    image: IMAGE\n    command: /nonexistent\n    network_mode: none\n";
    write(dir.path(), file);
    let never = compose(dir.path(), &name, &["ps"]);
    assert!(never.status.success(), "{}", text(&never));
    assert!(
        text(&never).contains(&format!(
            "project {name} has no containers: not deployed, or brought down"
        )),
        "{}",
        text(&never)
    );

    let _down = Down(dir.path(), &name);
    let up = compose(dir.path(), &name, &["up", "-d"]);
    assert_eq!(up.status.code(), Some(1), "{}", text(&up));
    assert!(
        text(&up).contains("service broken did not start"),
        "{}",
        text(&up)
    );
    let ps = compose(dir.path(), &name, &["ps"]);
    assert!(
        text(&ps).contains(&format!(
            "stack {name}: error: service broken failed to start (exit code 127)"
        )),
        "{}",
        text(&ps)
    );
}

#[test]
#[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
fn logs_as_compose_v2_prints_them() {
    let (dir, name) = setup("cli-logs");
    let long = "busybox head -c 20000 /dev/zero | busybox tr '\\\\0' x";
    write(
        dir.path(),
        &format!(
            "services:\n  web:\n    image: IMAGE\n    network_mode: none\n    command: [busybox, sh, -c, \"echo out1; busybox usleep 200000; echo err1 >&2; {long}; echo; printf partial\"]\n\
             \x20 longername:\n    image: IMAGE\n    network_mode: none\n    command: [busybox, echo, hello]\n\
             \x20 tick:\n    image: IMAGE\n    network_mode: none\n    command: [busybox, sh, -c, \"echo start; busybox sleep 2; echo done; exit 3\"]\n\
             \x20 sleeper:\n    image: IMAGE\n    network_mode: none\n    stop_signal: SIGKILL\n    command: [busybox, sh, -c, \"echo up; exec busybox sleep 600\"]\n\
             \x20 chatter:\n    image: IMAGE\n    network_mode: none\n    stop_signal: SIGKILL\n    command: [busybox, sh, -c, \"while true; do echo tick; busybox usleep 100000; done\"]\n"
        ),
    );
    let _down = Down(dir.path(), &name);
    let up = compose(dir.path(), &name, &["up", "-d"]);
    assert!(up.status.success(), "{}", text(&up));
    wait_state(&name, "web", "exited");
    wait_state(&name, "longername", "exited");

    // Every line after the container's name padded to the longest (`longername-1`) plus one;
    // stderr on stdout too; the 20,000-byte line cut; the last line without `\n` printed.
    let logs = compose(dir.path(), &name, &["logs"]);
    assert!(logs.status.success(), "{}", text(&logs));
    let stdout = String::from_utf8_lossy(&logs.stdout).into_owned();
    let web: Vec<&str> = stdout.lines().filter(|l| l.starts_with("web-1 ")).collect();
    let cut = format!(
        "web-1         | {} [line cut at 16 KiB]",
        "x".repeat(16 * 1024)
    );
    assert_eq!(
        web,
        [
            "web-1         | out1",
            "web-1         | err1",
            cut.as_str(),
            "web-1         | partial"
        ],
        "{stdout}"
    );
    assert!(stdout.contains("longername-1  | hello\n"), "{stdout}");
    assert!(stdout.contains("sleeper-1     | up\n"), "{stdout}");

    // One service, its last line: the prefix is as wide as its own name plus one.
    let tail = compose(dir.path(), &name, &["logs", "--tail", "1", "web"]);
    assert_eq!(String::from_utf8_lossy(&tail.stdout), "web-1  | partial\n");
    // Docker's timestamps, after the prefix.
    let stamped = compose(dir.path(), &name, &["logs", "-t", "-n", "1", "longername"]);
    let stamped = String::from_utf8_lossy(&stamped.stdout).into_owned();
    assert!(
        stamped.starts_with("longername-1  | 20") && stamped.ends_with("Z hello\n"),
        "{stamped}"
    );
    let unknown = compose(dir.path(), &name, &["logs", "nothing"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown).contains("no such service: nothing"),
        "{}",
        text(&unknown)
    );

    // -f ends when the container stops, saying how, with exit 0.
    let restart = compose(dir.path(), &name, &["restart", "tick"]);
    assert!(restart.status.success(), "{}", text(&restart));
    let started = Instant::now();
    let follow = compose(dir.path(), &name, &["logs", "-f", "tick"]);
    assert!(follow.status.success(), "{}", text(&follow));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it did not follow"
    );
    let followed = String::from_utf8_lossy(&follow.stdout).into_owned();
    assert!(
        followed.ends_with("tick-1  | start\ntick-1  | done\ntick-1 exited with code 3\n"),
        "{followed}"
    );

    // Ctrl-C ends -f on a running container with 130, as v2.
    let child = command(dir.path(), &name, &["logs", "-f", "sleeper"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "sleeper-1  | up\n");

    // `logs -f | head -1`: once the reader is gone, -f ends at the next line, with exit 0,
    // though the container goes on printing.
    let mut child = command(dir.path(), &name, &["logs", "-f", "chatter"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    let mut stdout = child.stdout.take().unwrap();
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    assert_eq!(&first, b"chatter-1  | tic");
    drop(stdout);
    let closed = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if closed.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("logs -f still running 10 s after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    assert_eq!(state(&name, "chatter"), "running");
}

#[test]
#[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
fn start_waits_for_healthy_and_completed_dependencies() {
    let (dir, name) = setup("cli-wait");
    write(
        dir.path(),
        "services:\n  db:\n    image: IMAGE\n    network_mode: none\n    stop_signal: SIGKILL\n\
         \x20   command: [busybox, sh, -c, \"busybox rm -f /tmp/ready; busybox sleep 2; busybox touch /tmp/ready; exec busybox sleep 600\"]\n\
         \x20   healthcheck: {test: [CMD, busybox, test, -f, /tmp/ready], interval: 1s, retries: 30}\n\
         \x20 init:\n    image: IMAGE\n    network_mode: none\n    environment: {CODE: \"${CODE:-0}\"}\n\
         \x20   command: [busybox, sh, -c, \"busybox sleep 2; exit $$CODE\"]\n\
         \x20 web:\n    image: IMAGE\n    network_mode: none\n    stop_signal: SIGKILL\n    command: busybox sleep 600\n\
         \x20   depends_on:\n      db: {condition: service_healthy}\n      init: {condition: service_completed_successfully}\n",
    );
    let _down = Down(dir.path(), &name);
    let up = compose(dir.path(), &name, &["up", "-d"]);
    assert!(up.status.success(), "{}", text(&up));
    let stop = compose(dir.path(), &name, &["stop"]);
    assert!(stop.status.success(), "{}", text(&stop));

    // db needs 2 s to be healthy, init 2 s to complete: web starts after both.
    let start = compose(dir.path(), &name, &["start"]);
    assert!(start.status.success(), "{}", text(&start));
    assert_eq!(state(&name, "web"), "running");
    assert_eq!(inspect(&name, "db", "{{.State.Health.Status}}"), "healthy");
    let finished = inspect(&name, "init", "{{.State.FinishedAt}}");
    let web_started = inspect(&name, "web", "{{.State.StartedAt}}");
    assert!(
        web_started[..19] >= finished[..19],
        "web started at {web_started}, before init finished at {finished}"
    );

    // An up that recreates init, which now fails, fails too, though web keeps running (v2's
    // start phase checks the conditions of running services too).
    let failing_up = || {
        let up = command(dir.path(), &name, &["up", "-d"])
            .env("CODE", "3")
            .output()
            .unwrap();
        assert_eq!(up.status.code(), Some(1), "{}", text(&up));
        up
    };
    let up = failing_up();
    assert!(
        text(&up).contains(
            "service web did not start: dependency failed to start: init exited with code 3"
        ),
        "{}",
        text(&up)
    );
    assert_eq!(state(&name, "web"), "running");

    // init fails: web is not started, and the error names it, init and the condition.
    let stop = compose(dir.path(), &name, &["stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    failing_up();
    assert_eq!(state(&name, "web"), "exited");
    let start = compose(dir.path(), &name, &["start"]);
    assert_eq!(start.status.code(), Some(1), "{}", text(&start));
    assert!(
        text(&start).contains(
            "service web: depends_on init (service_completed_successfully): init exited with code 3"
        ),
        "{}",
        text(&start)
    );
    assert_eq!(state(&name, "web"), "exited");
}

#[test]
#[ignore = "needs the Docker Engine, busybox-static and docker-registry (tests/run.sh)"]
fn pull_with_the_docker_cli_credentials() {
    use support::registry::Registry;
    let (dir, name) = setup("cli-pull");
    let registry = Registry::start();
    let host = &registry.host;
    let image = format!("{host}/edge-agent-test/cli-pull:{}", std::process::id());
    registry.push(&image);
    struct Rmi<'a>(&'a str);
    impl Drop for Rmi<'_> {
        fn drop(&mut self) {
            docker(&["rmi", self.0]);
        }
    }
    let _rmi = Rmi(&image);
    let config = tempfile::tempdir().unwrap();
    registry.login_config(config.path());
    let missing = format!("{host}/edge-agent-test/missing:1");
    write(
        dir.path(),
        &format!(
            "services:\n  app:\n    image: {image}\n  copy:\n    image: {image}\n  local:\n    image: IMAGE\n    pull_policy: never\n\
             \x20 zz-missing:\n    image: {missing}\n"
        ),
    );
    let pull = |args: &[&str]| {
        command(dir.path(), &name, args)
            .env("DOCKER_CONFIG", config.path())
            .output()
            .unwrap()
    };

    let out = pull(&["pull", "app", "copy", "local"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        " app Pulling\n app Pulled\n copy Skipped - Image is already being pulled by app\n local Skipped\n"
    );
    let present = docker(&["image", "inspect", &image]);
    assert!(present.status.success(), "{image} was not pulled");

    // An image the registry does not have: exit 1, naming it and the registry's answer.
    let out = pull(&["pull"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains(&format!(" zz-missing Error cannot pull image {missing}: "))
            && said.contains(&format!(
                "edge-agent compose: cannot pull image {missing}: "
            ))
            && said.contains("not found"),
        "{said}"
    );
    let out = pull(&["pull", "--ignore-pull-failures", "zz-missing"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(" zz-missing Error "), "{}", text(&out));
}
