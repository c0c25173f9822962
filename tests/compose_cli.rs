//! `edge-agent compose` as an operator types it, against the real Docker Engine: `stop`,
//! `start` and `restart` by service in dependency order, and what `ps` says after a failed
//! `up` and for a project never deployed.

mod support;

use std::process::Output;
use support::docker::{engine, unique, IMAGE};

/// `edge-agent compose -p NAME -f DIR/compose.yaml ARGS...`.
fn compose(dir: &std::path::Path, name: &str, args: &[&str]) -> Output {
    support::agent::binary()
        .args(["compose", "-p", name, "-f"])
        .arg(dir.join("compose.yaml"))
        .args(args)
        .output()
        .unwrap()
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
    let out = support::docker::docker(&[
        "inspect",
        "--format",
        "{{.State.Status}}",
        &format!("{name}-{service}-1"),
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
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
    engine();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("cli");
    let file = "services:\n  db:\n    image: IMAGE\n    command: busybox sleep 600\n    network_mode: none\n    stop_signal: SIGKILL\n\
                \x20 web:\n    image: IMAGE\n    command: busybox sleep 600\n    network_mode: none\n    stop_signal: SIGKILL\n    depends_on: [db]\n";
    std::fs::write(
        dir.path().join("compose.yaml"),
        file.replace("IMAGE", IMAGE),
    )
    .unwrap();
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
    engine();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("cli-ps");
    let file = "services:\n  broken:\n    image: IMAGE\n    command: /nonexistent\n    network_mode: none\n";
    std::fs::write(
        dir.path().join("compose.yaml"),
        file.replace("IMAGE", IMAGE),
    )
    .unwrap();
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
