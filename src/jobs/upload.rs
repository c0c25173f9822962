//! Edge job logs to Portainer, on a thread of their own so that neither the poll loop nor the
//! scheduler waits on the network. One pending upload per job at most (a poll that asks again
//! while one is pending adds nothing); transport errors and 5xx are retried with the poll's
//! backoff, other refusals are logged and dropped (the next poll that asks queues it again).
//! Portainer 2.45 answers 500 "Unable to verify if the edge job is assigned to the environment"
//! for a job no longer targeting this environment: final too, not retried.

use super::runner::{LOG, MAX_LOG};
use crate::poller::DEFAULT_INTERVAL;
use crate::portainer::Client;
use crate::system::backoff;
use crate::system::mailbox::Mailbox;
use std::collections::VecDeque;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// What is read of a log: the log itself and a run's note line, with room to spare (a run in
/// progress may have written up to twice [`MAX_LOG`] before it is cut back).
const MAX_READ: u64 = 2 * MAX_LOG + 4096;

#[derive(Default)]
struct Queue {
    /// `(endpoint id, job id)`, the first one being uploaded.
    pending: VecDeque<(i64, i64)>,
    stop: bool,
}

pub struct Uploader {
    queue: Arc<Mailbox<Queue>>,
    thread: Option<JoinHandle<()>>,
}

impl Uploader {
    /// Uploads logs of the jobs in `dir` (`<dir>/<id>/output.log`) through `client`.
    pub fn start(client: Client, dir: PathBuf) -> std::io::Result<Uploader> {
        let queue = Arc::new(Mailbox::default());
        let worker = Arc::clone(&queue);
        let thread = std::thread::Builder::new()
            .name("job-logs".into())
            .stack_size(128 * 1024)
            .spawn(move || work(&worker, &client, &dir))?;
        Ok(Uploader {
            queue,
            thread: Some(thread),
        })
    }

    /// Queues job `job`'s log for environment `endpoint`, unless it is already pending.
    pub fn request(&self, endpoint: i64, job: i64) {
        self.queue.post(|q| {
            if !q.pending.contains(&(endpoint, job)) {
                q.pending.push_back((endpoint, job));
            }
        });
    }
}

impl Drop for Uploader {
    /// Stops at once; an upload in flight is abandoned with the thread.
    fn drop(&mut self) {
        self.queue.post(|q| q.stop = true);
        drop(self.thread.take());
    }
}

fn work(queue: &Mailbox<Queue>, client: &Client, dir: &std::path::Path) {
    let mut failures = 0u32;
    let mut logged = crate::system::logging::Repeats::default();
    loop {
        // The first pending upload, or `None` once stopped.
        let next = queue.take(None, |q| match q.stop {
            true => Some(None),
            false => q.pending.front().map(|first| Some(*first)),
        });
        let Some(Some((endpoint, job))) = next else {
            return;
        };
        let log = read_log(&dir.join(job.to_string()).join(LOG));
        let retry = match client.job_logs(endpoint, job, &log) {
            Ok(()) => {
                log::info!(
                    "edge job {job}: log sent to Portainer ({} bytes)",
                    log.len()
                );
                None
            }
            Err(e) => match e.retry() {
                Some(_) if unassigned(&e) => {
                    log::warn!("edge job {job}: Portainer refused its log ({e}): the job no longer targets this environment; not sent again unless Portainer asks again");
                    None
                }
                Some(retry_after) => {
                    failures += 1;
                    let delay = backoff::delay(
                        DEFAULT_INTERVAL,
                        failures,
                        retry_after,
                        crate::system::random::u64(),
                    );
                    if logged.fresh(&e.to_string()) {
                        log::warn!("edge job {job}: cannot send its log to Portainer ({e}); retrying with backoff");
                    }
                    Some(delay)
                }
                None => {
                    log::warn!("edge job {job}: Portainer refused its log ({e}); it is sent again when Portainer asks again");
                    None
                }
            },
        };
        match retry {
            None => {
                failures = 0;
                logged = Default::default();
                queue.post(|q| {
                    q.pending.pop_front();
                });
            }
            // Until the delay is over, or the uploader stops (seen by the next `take`).
            Some(delay) => {
                let _ = queue.take(Some(Instant::now() + delay), |q| q.stop.then_some(()));
            }
        }
    }
}

/// 2.45's answer for a job that no longer targets the environment (`endpointedge_job_logs.go`):
/// a 500 that no retry changes.
fn unassigned(e: &crate::portainer::Error) -> bool {
    matches!(e, crate::portainer::Error::Status { status: 500, message, .. }
        if message.starts_with("Unable to verify if the edge job is assigned to the environment"))
}

/// The log as text (invalid UTF-8 replaced, as Go's `string(bytes)` in JSON); empty when the
/// job never ran, as the Go agent sends.
fn read_log(path: &std::path::Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(file) = std::fs::File::open(path) {
        if let Err(e) = file.take(MAX_READ).read_to_end(&mut bytes) {
            log::warn!("cannot read {}: {e}; sending what was read", path.display());
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portainer::Error;

    fn status(status: u16, message: &str) -> Error {
        Error::Status {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    #[test]
    fn only_the_unassigned_500_is_final() {
        assert!(unassigned(&status(
            500,
            "Unable to verify if the edge job is assigned to the environment: not found"
        )));
        assert!(!unassigned(&status(500, "Unexpected error")));
        assert!(!unassigned(&status(
            502,
            "Unable to verify if the edge job is assigned to the environment"
        )));
        assert!(!unassigned(&Error::Transport("reset".into())));
    }
}
