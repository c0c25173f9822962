//! Status reports to Portainer, sent in order per stack by a thread of their own, so a slow or
//! absent server never holds up a deploy (the Go agent retries every 5 s while holding its stack
//! manager). Transport errors, 5xx and 429 are retried with jittered backoff (never sooner than a Retry-After); other refusals
//! (403 untrusted or, on 2.45, a stack no longer assigned to this environment; 404 unknown
//! environment; 400) are final: the refused report and what is queued after it for the same
//! stack version (Removing and Removed excepted, which 2.45 accepts for unassigned stacks) are
//! dropped, logged once per stack version. What is queued for an
//! older version of a stack, or before its removal, is dropped unsent: Portainer resets a
//! stack's history on a new version and deletes it on removal.

use crate::portainer::stack_status::{self, Status};
use crate::portainer::Client;
use crate::state::Persisted;
use crate::system::backoff;
use crate::system::logging::Repeats;
use crate::system::mailbox::Mailbox;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reports kept per stack; beyond that the oldest go (one stack flapping for days offline).
const PER_STACK: usize = 8;
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub stack: i64,
    pub version: i64,
    pub endpoint_id: i64,
    pub status: Status,
    pub error: String,
    /// Unix seconds when the status was reached (kept through retries).
    pub time: i64,
}

/// What is waiting to be sent (pure: tested without a server).
#[derive(Default)]
struct Queue {
    stacks: BTreeMap<i64, VecDeque<Report>>,
    /// The stack last sent from, so that stacks take turns.
    last: Option<i64>,
}

impl Queue {
    fn push(&mut self, report: Report) {
        let queue = self.stacks.entry(report.stack).or_default();
        let ends = matches!(report.status, Status::Removing | Status::Removed);
        queue.retain(|r| r.version == report.version && !ends);
        queue.push_back(report);
        if queue.len() > PER_STACK {
            queue.pop_front();
        }
    }

    /// The next report to send: the first of the stack after the last one served.
    fn next(&self) -> Option<&Report> {
        let after = self.last.map_or(i64::MIN, |l| l.saturating_add(1));
        self.stacks
            .range(after..)
            .chain(self.stacks.range(..after))
            .find_map(|(_, q)| q.front())
    }

    /// `report` was refused for good: what else is queued for its stack version goes too, but
    /// for Removing and Removed (2.45 takes those even for a stack no longer assigned).
    fn refused(&mut self, report: &Report) {
        self.done(report);
        if let Some(queue) = self.stacks.get_mut(&report.stack) {
            queue.retain(|r| {
                r.version != report.version
                    || matches!(r.status, Status::Removing | Status::Removed)
            });
            if queue.is_empty() {
                self.stacks.remove(&report.stack);
            }
        }
    }

    /// `report` is done with (sent, or refused for good) unless something replaced it.
    fn done(&mut self, report: &Report) {
        self.last = Some(report.stack);
        if let Some(queue) = self.stacks.get_mut(&report.stack) {
            if queue.front() == Some(report) {
                queue.pop_front();
            }
            if queue.is_empty() {
                self.stacks.remove(&report.stack);
            }
        }
    }
}

#[derive(Clone)]
pub struct Reporter {
    queue: Arc<Mailbox<Queue>>,
}

impl Reporter {
    /// Starts the sending thread.
    pub fn start(client: Arc<Client>, persisted: Arc<Persisted>) -> std::io::Result<Reporter> {
        let queue = Arc::new(Mailbox::default());
        let thread = Arc::clone(&queue);
        std::thread::Builder::new()
            .name("stack-status".into())
            // The poll thread's size: the same HTTP and TLS code runs here.
            .stack_size(256 * 1024)
            .spawn(move || send_loop(&thread, &client, &persisted))?;
        Ok(Reporter { queue })
    }

    pub fn send(&self, report: Report) {
        self.queue.post(|q| q.push(report));
    }
}

fn send_loop(queue: &Mailbox<Queue>, client: &Client, persisted: &Persisted) {
    let mut failures = 0u32;
    let mut logged = Repeats::default();
    let mut retry_at: Option<Instant> = None;
    // Stack versions whose refusal was logged: one line each, not one per status.
    let mut refused = std::collections::BTreeSet::new();
    loop {
        // A retry's delay is waited out whatever arrives meanwhile: the head report goes first.
        if let Some(at) = retry_at {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
        }
        let Some(report) = queue.take(None, |q| q.next().cloned()) else {
            continue;
        };
        let body = stack_status::body(
            report.status,
            &report.error,
            report.endpoint_id,
            report.time,
            report.version,
        );
        match client.stack_status(report.stack, &body) {
            Ok(known) => {
                if failures > 0 {
                    log::info!(
                        "edge stack statuses are accepted again after {failures} failed report(s)"
                    );
                }
                failures = 0;
                retry_at = None;
                if !known {
                    log::info!(
                        "edge stack {}: Portainer no longer knows it (status {} not recorded)",
                        report.stack,
                        report.status
                    );
                }
                log::debug!("edge stack {}: reported {}", report.stack, report.status);
                let _ = persisted.update(|s| {
                    if let Some(r) = s.stacks.get_mut(&report.stack) {
                        if r.version == report.version {
                            r.sent = Some(report.status);
                        }
                    }
                });
                queue.post(|q| q.done(&report));
            }
            Err(e) if e.retry().is_some() => {
                failures += 1;
                // Never sooner than the server's Retry-After, as the poll and the job logs.
                let delay = backoff::not_before(
                    RETRY_BASE
                        + backoff::full_jitter(
                            RETRY_BASE,
                            failures,
                            RETRY_CAP - RETRY_BASE,
                            crate::system::random::u64(),
                        ),
                    e.retry().flatten(),
                );
                retry_at = Some(Instant::now() + delay);
                let message = e.to_string();
                if logged.fresh(&message) {
                    log::warn!(
                        "edge stack {}: cannot report status {} ({message}); retrying in the background",
                        report.stack,
                        report.status
                    );
                }
            }
            Err(e) => {
                if refused.insert((report.stack, report.version)) {
                    log::error!(
                        "edge stack {} version {}: Portainer refused status {} ({e}); this and later statuses of this version are dropped (check that the stack is still assigned to this environment's edge groups)",
                        report.stack,
                        report.version,
                        report.status
                    );
                }
                queue.post(|q| q.refused(&report));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(stack: i64, version: i64, status: Status) -> Report {
        Report {
            stack,
            version,
            endpoint_id: 1,
            status,
            error: String::new(),
            time: 0,
        }
    }

    fn drain(q: &mut Queue) -> Vec<(i64, i64, u8)> {
        let mut out = Vec::new();
        while let Some(r) = q.next().cloned() {
            out.push((r.stack, r.version, r.status as u8));
            q.done(&r);
        }
        out
    }

    #[test]
    fn in_order_per_stack_taking_turns() {
        let mut q = Queue::default();
        for s in [
            Status::Acknowledged,
            Status::Deploying,
            Status::DeploymentReceived,
        ] {
            q.push(report(1, 1, s));
        }
        q.push(report(2, 5, Status::Acknowledged));
        assert_eq!(drain(&mut q), [(1, 1, 3), (2, 5, 3), (1, 1, 8), (1, 1, 1)]);
    }

    #[test]
    fn a_new_version_or_a_removal_drops_what_is_unsent() {
        let mut q = Queue::default();
        q.push(report(1, 1, Status::Acknowledged));
        q.push(report(1, 1, Status::Deploying));
        q.push(report(1, 2, Status::Acknowledged));
        assert_eq!(drain(&mut q), [(1, 2, 3)]);
        q.push(report(1, 2, Status::Deploying));
        q.push(report(1, 2, Status::Removing));
        q.push(report(1, 2, Status::Removed));
        assert_eq!(drain(&mut q), [(1, 2, 4)]);
    }

    #[test]
    fn a_report_replaced_while_in_flight_is_not_popped_twice() {
        let mut q = Queue::default();
        q.push(report(1, 1, Status::Running));
        let in_flight = q.next().cloned().unwrap();
        q.push(report(1, 2, Status::Acknowledged));
        q.done(&in_flight);
        assert_eq!(drain(&mut q), [(1, 2, 3)]);
    }

    #[test]
    fn a_refusal_drops_the_rest_of_the_version_but_removals() {
        let mut q = Queue::default();
        q.push(report(1, 1, Status::Acknowledged));
        q.push(report(1, 1, Status::Deploying));
        q.push(report(2, 1, Status::Acknowledged));
        let first = q.next().cloned().unwrap();
        q.refused(&first);
        q.push(report(1, 1, Status::Removing));
        assert_eq!(drain(&mut q), [(2, 1, 3), (1, 1, 9)]);
        q.push(report(3, 1, Status::Running));
        let first = q.next().cloned().unwrap();
        q.refused(&first);
        assert_eq!(drain(&mut q), []);
    }

    #[test]
    fn bounded_per_stack() {
        let mut q = Queue::default();
        for _ in 0..20 {
            q.push(report(1, 1, Status::Running));
        }
        assert_eq!(drain(&mut q).len(), PER_STACK);
    }
}
