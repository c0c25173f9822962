//! Running the real `edge-agent` binary in a private folder, with a clean environment.
//!
//! `EDGE_AGENT_TEST_BIN=path` tests another build of the agent (a static ARM binary, say) and
//! `EDGE_AGENT_TEST_RUNNER=program` runs it through that program (`qemu-arm-static`); see
//! `cross/build-static.sh test`.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The agent under test, without arguments: this build's binary unless the environment names
/// another one.
pub fn binary() -> Command {
    let bin = std::env::var_os("EDGE_AGENT_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_edge-agent").into());
    match std::env::var_os("EDGE_AGENT_TEST_RUNNER").filter(|r| !r.is_empty()) {
        Some(runner) => {
            let mut command = Command::new(runner);
            command.arg(bin);
            command
        }
        None => Command::new(bin),
    }
}

/// For benches: the size-optimised build as shipped (`--profile min-size`), built now, becomes
/// the agent every [`binary`] runs, unless `EDGE_AGENT_TEST_BIN` already names one. Call it
/// first thing in `main`, before any thread starts. Returns the binary's path.
pub fn use_min_size_build() -> PathBuf {
    if let Some(named) = std::env::var_os("EDGE_AGENT_TEST_BIN") {
        return named.into();
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--locked",
            "--profile",
            "min-size",
            "--bin",
            "edge-agent",
        ])
        .current_dir(&manifest)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --profile min-size failed");
    let binary = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| manifest.join("target"), PathBuf::from)
        .join("min-size/edge-agent");
    std::env::set_var("EDGE_AGENT_TEST_BIN", &binary);
    binary
}

/// A `Field:   123 kB` figure of `/proc/<pid>/<file>` (`status`, `smaps_rollup`), in KiB;
/// 0 when the process or the field is gone.
pub fn proc_kib(pid: impl std::fmt::Display, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// An Edge key for `url`, with the tunnel address `127.0.0.1:9` (nothing listens there).
pub fn key_for(url: &str, endpoint_id: i64) -> String {
    super::edge_key(url, "127.0.0.1:9", "fp", endpoint_id)
}

pub struct Agent {
    pub dir: tempfile::TempDir,
    pub env_file: PathBuf,
    pub data: PathBuf,
}

impl Default for Agent {
    fn default() -> Self {
        Self::new()
    }
}

impl Agent {
    pub fn new() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let env_file = dir.path().join("edge-agent.env");
        fs::write(&env_file, "").unwrap();
        let data = dir.path().join("data");
        Agent {
            dir,
            env_file,
            data,
        }
    }

    /// An Edge key pointing at `server` (its tunnel address is the server's port too).
    pub fn key(&self, server: &super::FakePortainer, endpoint_id: i64) -> String {
        super::edge_key(
            &server.url(),
            &format!("127.0.0.1:{}", server.port()),
            "fp",
            endpoint_id,
        )
    }

    /// Writes the env file, mode 0600 as README's `install -m 600` makes it.
    pub fn write_env(&self, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        fs::write(&self.env_file, text).unwrap();
        fs::set_permissions(&self.env_file, fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// `edge-agent --env-file <ours> --data <ours> <args>` with an environment holding nothing
    /// of the caller's but `PATH`.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_of(binary(), args)
    }

    /// [`Agent::command`] running another build of the agent (an older release's, say).
    pub fn command_of(&self, mut command: Command, args: &[&str]) -> Command {
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--env-file")
            .arg(&self.env_file)
            .arg("--data")
            .arg(&self.data)
            .args(args);
        command
    }

    /// Starts the agent in the background; its stderr goes to a file read by [`Running::log`].
    pub fn spawn(&self, command: &mut Command) -> Running {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let log_path = self.dir.path().join(format!("agent-{run}.log"));
        let log = fs::File::create(&log_path).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Running {
            child: Some(child),
            log_path,
        }
    }

    pub fn env_text(&self) -> String {
        fs::read_to_string(&self.env_file).unwrap_or_default()
    }

    pub fn state_text(&self) -> String {
        fs::read_to_string(self.data.join("edge-agent.state")).unwrap_or_default()
    }
}

pub struct Running {
    child: Option<Child>,
    log_path: PathBuf,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The file the agent's stderr goes to (for benches that follow it as it grows).
    pub fn log_path(&self) -> &std::path::Path {
        &self.log_path
    }

    /// Waits until the log contains `needle`; panics with the log after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("log never showed {needle:?}:\n{}", self.log());
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Waits for the process to exit, up to `timeout`; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
