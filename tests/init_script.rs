//! The BusyBox init script (packaging/edge-agent.init) run by BusyBox's sh with the real agent
//! and the fake Portainer: at first boot (no Edge key) the agent exits 78 and is not restarted
//! until the env file changes; killed, it is started again; `stop` ends the supervisor and the
//! agent within the grace period; the agent's lines and the supervisor's reach the log. The
//! script's paths (binary, env file, pid file, FIFO) are pointed at a private folder, and
//! `logger` at a file.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{FakePortainer, Transport};

const BUSYBOX: &str = "/bin/busybox";
/// The script's stop grace period (its GRACE): the unit's TimeoutStopSec=.
const GRACE: Duration = Duration::from_secs(15);

struct Script {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Script {
    /// The script with its paths in a private folder.
    fn new() -> Script {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut text = fs::read_to_string(root.join("packaging/edge-agent.init")).unwrap();
        let d = dir.path().display();
        for (line, ours) in [
            (
                "\nDAEMON=/usr/bin/edge-agent\n".to_owned(),
                format!("\nDAEMON={}\n", env!("CARGO_BIN_EXE_edge-agent")),
            ),
            (
                "\nENV_FILE=/etc/edge-agent/edge-agent.env\n".to_owned(),
                format!("\nENV_FILE={d}/edge-agent.env\n"),
            ),
            (
                "\nPIDFILE=/var/run/edge-agent.pid\n".to_owned(),
                format!("\nPIDFILE={d}/edge-agent.pid\n"),
            ),
            (
                "\nFIFO=/var/run/edge-agent.log\n".to_owned(),
                format!("\nFIFO={d}/edge-agent.log\n"),
            ),
            (
                "\tlogger -t edge-agent <\"$FIFO\" >/dev/null 2>&1 &\n".to_owned(),
                format!("\tcat <\"$FIFO\" >>{d}/syslog 2>&1 &\n"),
            ),
            (format!("\nGRACE={}\n", GRACE.as_secs()), String::new()),
        ] {
            assert!(text.contains(&line), "the script has no {line:?}");
            if !ours.is_empty() {
                text = text.replace(&line, &ours);
            }
        }
        let path = dir.path().join("S70edge-agent");
        fs::write(&path, text).unwrap();
        Script { dir, path }
    }

    fn run(&self, action: &str) -> String {
        let out = Command::new(BUSYBOX)
            .arg("sh")
            .arg(&self.path)
            .arg(action)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap_or_else(|e| support::missing(&format!("{BUSYBOX} ({e})")));
        assert!(out.status.success(), "{action}: {out:?}\n{}", self.syslog());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn file(&self, name: &str) -> String {
        fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn syslog(&self) -> String {
        self.file("syslog")
    }

    fn supervisor(&self) -> i32 {
        self.file("edge-agent.pid").trim().parse().unwrap()
    }

    fn wait(&self, what: &str, timeout: Duration, done: impl Fn() -> bool) {
        let deadline = Instant::now() + timeout;
        while !done() {
            assert!(Instant::now() < deadline, "{what}:\n{}", self.syslog());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A process's state letter and parent, from `/proc/<pid>/stat`; `None` once it is gone.
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// Running (not a zombie left for a PID 1 that reaps late).
fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z')
}

/// The live children of `parent`.
fn children(parent: i32) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| stat(*pid).is_some_and(|(state, ppid)| ppid == parent && state != 'Z'))
        .collect()
}

#[test]
#[ignore = "needs busybox-static (tests/run.sh)"]
fn supervises_the_agent_as_the_systemd_units_do_and_stops_within_the_grace_period() {
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(3, None);
    server.set_checkin(0.2);
    let script = Script::new();
    let env_file = script.dir.path().join("edge-agent.env");
    let data = script.dir.path().join("data");
    let template =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/edge-agent.env"))
            .unwrap();
    let first_boot = format!(
        "{template}DATA_PATH={}\nEDGE_TUNNEL=false\nHTTPS_PROXY=\"http://127.0.0.1:9\"\n",
        data.display()
    );
    fs::write(&env_file, &first_boot).unwrap();

    // 1. First boot: no Edge key, exit 78, no restart loop.
    assert_eq!(script.run("start"), "Starting edge-agent: OK\n");
    let supervisor = script.supervisor();
    script.wait(
        "the agent's exit 78 logged",
        Duration::from_secs(10),
        || script.syslog().contains("exited with code 78"),
    );
    let log = script.syslog();
    assert!(log.contains("EDGE_KEY is not set"), "{log}");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        script.syslog().matches("exited with code 78").count(),
        1,
        "{}",
        script.syslog()
    );
    assert!(alive(supervisor));
    assert_eq!(server.poll_count(), 0);

    // 2. Saving the key starts it (checked every 5 s): it polls.
    let key = support::agent::key_for(&server.url(), 3);
    fs::write(
        &env_file,
        first_boot.replace("\nEDGE_KEY=\n", &format!("\nEDGE_KEY={key}\n")),
    )
    .unwrap();
    script.wait(
        "polls after the key is saved",
        Duration::from_secs(10),
        || server.poll_count() > 0,
    );
    let agent = children(supervisor);
    assert_eq!(agent.len(), 1, "{agent:?}");
    // The env file's lines are the agent's environment too (quotes removed), as systemd's
    // EnvironmentFile= makes them: job scripts get the same proxies.
    let environ = fs::read(format!("/proc/{}/environ", agent[0])).unwrap();
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|v| v == b"HTTPS_PROXY=http://127.0.0.1:9"),
        "{}",
        String::from_utf8_lossy(&environ)
    );

    // 3. Killed: started again 10 s later.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent[0]),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    script.wait("the restart logged", Duration::from_secs(5), || {
        script
            .syslog()
            .contains("exited with code 137; starting it again in 10 s")
    });
    let polls = server.poll_count();
    script.wait("polls after the restart", Duration::from_secs(15), || {
        server.poll_count() > polls
    });
    let restarted = children(supervisor);
    assert!(restarted.len() == 1 && restarted != agent, "{restarted:?}");

    // 4. stop: the agent and the supervisor end, well within the grace period.
    let started = Instant::now();
    assert_eq!(script.run("stop"), "Stopping edge-agent: OK\n");
    let took = started.elapsed();
    assert!(took < GRACE, "stop took {took:?}");
    assert!(!alive(restarted[0]) && !alive(supervisor));
    assert!(!script.dir.path().join("edge-agent.pid").exists());
    assert_eq!(script.run("stop"), "Stopping edge-agent: not running\n");
    println!("stop took {took:.1?}");
}
