//! `edge-agent compose` as an operator types it, against the real Docker Engine: what `ps`
//! says after a failed `up` and for a project never deployed.

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

/// Brings the project down when dropped.
struct Down<'a>(&'a std::path::Path, &'a str);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        compose(self.0, self.1, &["down", "-v"]);
    }
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
