//! One run of a job: `/bin/sh script` in the job's folder, in its own process group, with cron's
//! environment; stdout and stderr go through a pipe into `output.log`, truncated at the start
//! and capped at [`MAX_LOG`] (the tail is kept, the cut noted in one line). A thread per run
//! copies the output, waits for the shell and reports the outcome.

use crate::system::durable;
use nix::sys::signal::{killpg, pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// What `output.log` keeps of a run.
pub const MAX_LOG: u64 = 1024 * 1024;
pub const SCRIPT: &str = "script";
pub const LOG: &str = "output.log";
/// Vixie cron's and the Go agent's cron file `PATH`.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin";

/// The environment of every run.
#[derive(Debug, Clone)]
pub struct Env {
    pub home: PathBuf,
    pub edge_id: String,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `exit status 0`, `killed by SIGTERM`, or why it could not run.
    pub status: String,
    pub success: bool,
    pub duration: Duration,
}

/// A run in progress.
pub struct Run {
    pid: Pid,
    pub started: SystemTime,
    /// Set, under the lock, just before the shell is reaped: while it is false the process
    /// group id cannot belong to anyone else.
    reaped: Arc<Mutex<bool>>,
}

impl Run {
    /// Starts the job in `dir`; `done` is called on the run's thread when it has ended.
    pub fn start(
        dir: &Path,
        env: &Env,
        done: impl FnOnce(Outcome) + Send + 'static,
    ) -> io::Result<Run> {
        let log_path = dir.join(LOG);
        let log = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)?;
        let (reader, writer) = io::pipe()?;
        let started = SystemTime::now();
        let began = Instant::now();
        let mut command = Command::new("/bin/sh");
        // SAFETY: between fork and exec the closure only calls pthread_sigmask, which is
        // async-signal-safe and allocates nothing. The agent blocks SIGTERM and SIGINT in every
        // thread (they are taken with sigwait); a job must not inherit that: jobs run by the
        // agent were seen with both blocked, so that SIGTERM could not stop them.
        unsafe {
            command.pre_exec(|| {
                pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                    .map_err(io::Error::from)
            });
        }
        let child = command
            .arg(SCRIPT)
            .current_dir(dir)
            .env_clear()
            .env("PATH", PATH)
            .env("SHELL", "/bin/sh")
            .env("HOME", &env.home)
            .env("PORTAINER_EDGE_ID", &env.edge_id)
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .process_group(0)
            .spawn()?;
        let pid = Pid::from_raw(child.id() as i32);
        let reaped = Arc::new(Mutex::new(false));
        let run = Run {
            pid,
            started,
            reaped: reaped.clone(),
        };
        std::thread::Builder::new()
            .name("job-run".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut child = child;
                let cut = copy_capped(reader, log, &log_path);
                // Wait without reaping, so the group id stays ours until `reaped` is set.
                let _ = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT);
                let status = {
                    let mut reaped = reaped.lock().unwrap_or_else(|p| p.into_inner());
                    *reaped = true;
                    child.wait()
                };
                let (status, success) = match status {
                    Ok(s) => (describe(s), s.success()),
                    Err(e) => (format!("unknown exit status ({e})"), false),
                };
                let status = match cut {
                    Ok(0) => status,
                    Ok(cut) => format!("{status}, output over 1 MiB ({cut} bytes cut)"),
                    Err(e) => format!("{status}, output not saved ({e})"),
                };
                done(Outcome {
                    status,
                    success,
                    duration: began.elapsed(),
                });
            })?;
        Ok(run)
    }

    /// Sends `signal` to the run's process group, unless it has ended.
    pub fn signal(&self, signal: Signal) {
        let reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
        if !*reaped {
            let _ = killpg(self.pid, signal);
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(s) => format!("killed by {}", s.as_str()),
            Err(_) => format!("killed by signal {signal}"),
        },
        (None, None) => "unknown exit status".into(),
    }
}

/// Copies the run's output into the log until every writer has closed it. The file may grow
/// to twice [`MAX_LOG`] before it is cut back; at the end it holds at most `MAX_LOG` bytes
/// (plus the note). Returns how many bytes were cut.
/// `size` counts the output bytes in the file.
fn copy_capped(mut from: impl Read, mut log: File, path: &Path) -> io::Result<u64> {
    let mut buffer = [0u8; 8192];
    let mut size = 0u64;
    let mut cut = 0u64;
    let mut failed = None;
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                failed.get_or_insert(e);
                break;
            }
        };
        // Once writing failed (disk full), keep draining so the job is not blocked.
        if failed.is_some() {
            continue;
        }
        if let Err(e) = log.write_all(&buffer[..n]) {
            failed = Some(e);
            continue;
        }
        size += n as u64;
        if size > 2 * MAX_LOG {
            match keep_tail(path, cut + size - MAX_LOG) {
                Ok((file, kept)) => {
                    cut += size - kept;
                    (log, size) = (file, kept);
                }
                Err(e) => failed = Some(e),
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if size > MAX_LOG {
        cut += size - keep_tail(path, cut + size - MAX_LOG)?.1;
    }
    Ok(cut)
}

/// Rewrites the log as a note line and its last [`MAX_LOG`] bytes (from a line start when one
/// is near); returns the file, positioned at its end, and the bytes of output it holds.
fn keep_tail(path: &Path, total_cut: u64) -> io::Result<(File, u64)> {
    let mut old = File::open(path)?;
    // The end of the file is output (a note from an earlier cut is at its start).
    old.seek(SeekFrom::End(-(MAX_LOG as i64)))?;
    let mut tail = Vec::with_capacity(MAX_LOG as usize);
    old.take(MAX_LOG).read_to_end(&mut tail)?;
    let start = match tail.iter().take(4096).position(|b| *b == b'\n') {
        Some(newline) => newline + 1,
        None => 0,
    };
    let dropped = total_cut + start as u64;
    let mut kept = format!("[edge-agent: output over 1 MiB; the first {dropped} bytes were cut]\n")
        .into_bytes();
    kept.extend_from_slice(&tail[start..]);
    durable::replace(&mut durable::Real::default(), path, &kept, 0o644)?;
    let file = OpenOptions::new().append(true).open(path)?;
    Ok((file, (tail.len() - start) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::sync::mpsc;

    fn run(script: &str) -> (tempfile::TempDir, Outcome, String) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SCRIPT), script).unwrap();
        let env = Env {
            home: "/home/test".into(),
            edge_id: "edge-1".into(),
        };
        let (tx, rx) = mpsc::channel();
        Run::start(dir.path(), &env, move |o| tx.send(o).unwrap()).unwrap();
        let outcome = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        let log = fs::read_to_string(dir.path().join(LOG)).unwrap();
        (dir, outcome, log)
    }

    #[test]
    fn runs_in_its_folder_with_cron_environment_and_both_streams() {
        let (dir, outcome, log) = run(
            "echo out; echo err >&2; pwd; echo \"$PATH|$SHELL|$HOME|$PORTAINER_EDGE_ID|$EDGE_KEY\"; exit 3\n",
        );
        assert_eq!(outcome.status, "exit status 3");
        assert!(!outcome.success);
        let pwd = dir.path().canonicalize().unwrap();
        assert_eq!(
            log,
            format!(
                "out\nerr\n{}\n{PATH}|/bin/sh|/home/test|edge-1|\n",
                pwd.display()
            )
        );
    }

    #[test]
    fn own_process_group_and_signals_reach_children() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SCRIPT), "sleep 30 & sleep 30\n").unwrap();
        let env = Env {
            home: "/".into(),
            edge_id: "e".into(),
        };
        let (tx, rx) = mpsc::channel();
        let run = Run::start(dir.path(), &env, move |o| tx.send(o).unwrap()).unwrap();
        assert_eq!(nix::unistd::getpgid(Some(run.pid)).unwrap(), run.pid);
        std::thread::sleep(Duration::from_millis(200));
        run.signal(Signal::SIGTERM);
        let outcome = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(outcome.status, "killed by SIGTERM");
        // Signalling an ended run does nothing.
        run.signal(Signal::SIGKILL);
    }

    #[test]
    fn output_over_the_cap_keeps_the_tail_and_says_so() {
        // 4 MiB of numbered lines, then a last line.
        let (_dir, outcome, log) = run(
            "i=0; while [ $i -lt 100000 ]; do echo \"line $i with some padding to be longer\"; i=$((i+1)); done; echo last\n",
        );
        assert!(outcome.success, "{outcome:?}");
        assert!(
            outcome
                .status
                .starts_with("exit status 0, output over 1 MiB ("),
            "{}",
            outcome.status
        );
        let (note, rest) = log.split_once('\n').unwrap();
        assert!(
            note.starts_with("[edge-agent: output over 1 MiB; the first "),
            "{note}"
        );
        assert!(rest.len() as u64 <= MAX_LOG && rest.len() as u64 > MAX_LOG - 4096);
        assert!(
            rest.starts_with("line "),
            "starts at a line: {}",
            &rest[..40]
        );
        assert!(rest.ends_with("line 99999 with some padding to be longer\nlast\n"));
    }
}
