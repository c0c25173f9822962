//! The poll loop: ask Portainer for this environment's status every check-in interval, reuse the
//! previous answer on 304, back off when the server or the link is bad, and log what changed
//! (once, not every poll). The endpoint id, Edge ID and deployed state survive any failure.

use crate::config::duration::display;
use crate::config::GlobalKeyMeta;
use crate::identity::Identity;
use crate::portainer::poll_response::{PollResponse, StackRef, TunnelStatus, MAX_JOBS, MAX_STACKS};
use crate::portainer::{Client, Error, Poll};
use crate::state::Persisted;
use crate::system::backoff;
use crate::system::logging::Repeats;
use crate::system::systemd::Notifier;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A part of the agent that acts on Portainer's answers (the tunnel; later stacks and jobs).
/// Called on the poll thread after every successful poll (a 304 repeats the previous answer):
/// it must return promptly, handing any slow work to the part's own thread, so that it never
/// delays the next poll.
pub trait Consumer: Send {
    fn answer(&mut self, endpoint_id: i64, response: &PollResponse);
}

/// The Go agent's interval before the server has told us its check-in.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

pub struct Poller {
    client: Client,
    identity: Identity,
    meta: GlobalKeyMeta,
    persisted: Arc<Persisted>,
    interval: Duration,
    /// The last 200 answer and its ETag, reused on 304.
    cached: Option<(String, PollResponse)>,
    /// What was last logged, to log changes only.
    seen: Option<Seen>,
    failures: Failures,
    /// What the agent could not take of an answer as sent (a `checkin` out of bounds, lists
    /// over the limits), logged once (again after an hour), not at every poll.
    overruled: Repeats,
    /// A global key's endpoint id is looked up again after the server refused it.
    recheck_endpoint: bool,
    consumers: Vec<Box<dyn Consumer>>,
    /// `EDGE_TUNNEL`: whether a `REQUIRED` answer is acted upon (for the log line).
    tunnel_enabled: bool,
}

/// While polls keep failing, an INFO line this often says so with the count and the next
/// attempt: a failure's own message is logged once an hour ([`Repeats`]), so that an operator
/// reading the journal still sees that the link is down without a line at every poll.
const REMIND_EVERY: Duration = Duration::from_secs(600);

#[derive(Default)]
struct Failures {
    count: u32,
    since: Option<Instant>,
    logged: Repeats,
    /// When the last line about these failures (the message itself or a reminder) was logged.
    last_line: Option<Instant>,
}

/// What the log says of one more failed poll.
#[derive(Debug, PartialEq)]
enum Line {
    /// The failure's message: new, or not logged for an hour.
    Message,
    /// "still failing": [`REMIND_EVERY`] since the last line.
    Reminder,
    /// Nothing above DEBUG.
    Quiet,
}

impl Failures {
    /// Counts one more failure with `message` at `now` and says what to log.
    fn record(&mut self, message: &str, now: Instant) -> Line {
        self.count += 1;
        self.since.get_or_insert(now);
        let line = if self.logged.fresh_at(message, now) {
            Line::Message
        } else if self
            .last_line
            .is_none_or(|t| now.saturating_duration_since(t) >= REMIND_EVERY)
        {
            Line::Reminder
        } else {
            Line::Quiet
        };
        if line != Line::Quiet {
            self.last_line = Some(now);
        }
        line
    }
}

#[derive(PartialEq)]
struct Seen {
    tunnel: (TunnelStatus, u16),
    stacks: Vec<StackRef>,
    jobs: Vec<(i64, i64, String, bool)>,
}

impl Poller {
    pub fn new(
        client: Client,
        identity: Identity,
        meta: GlobalKeyMeta,
        persisted: Arc<Persisted>,
        consumers: Vec<Box<dyn Consumer>>,
        tunnel_enabled: bool,
    ) -> Poller {
        Poller {
            client,
            identity,
            meta,
            persisted,
            interval: DEFAULT_INTERVAL,
            cached: None,
            seen: None,
            failures: Failures::default(),
            overruled: Repeats::default(),
            recheck_endpoint: false,
            consumers,
            tunnel_enabled,
        }
    }

    /// Polls until `stop` fires (a message or the sender dropped).
    pub fn run(mut self, stop: &Receiver<()>, notifier: &Notifier) {
        loop {
            notifier.watchdog();
            let delay = self.step();
            if sleep(delay, stop, notifier) {
                return;
            }
        }
    }

    /// One poll; returns the delay before the next.
    pub fn step(&mut self) -> Duration {
        match self.attempt() {
            Ok(()) => self.interval,
            Err(e) => self.failed(e),
        }
    }

    fn attempt(&mut self) -> Result<(), Error> {
        let endpoint_id = self.endpoint_id()?;
        let etag = self.cached.as_ref().map(|(etag, _)| etag.as_str());
        let (etag, response) = match self.client.poll(endpoint_id, etag)? {
            Poll::Fresh { response, etag } => (etag, response),
            Poll::NotModified { etag } => match self.cached.take() {
                Some((cached, response)) if etag.as_ref().is_none_or(|e| *e == cached) => {
                    (Some(cached), response)
                }
                _ => return Err(Error::Body(
                    "the server answered 304 Not Modified for a response this agent does not have"
                        .into(),
                )),
            },
        };
        self.succeeded(endpoint_id, &response);
        self.cached = etag.map(|etag| (etag, response));
        Ok(())
    }

    /// The endpoint id to poll, asking the server through the global-key route when the key is
    /// global and the id is not known (or was refused). A known id is never dropped because the
    /// lookup failed.
    fn endpoint_id(&mut self) -> Result<i64, Error> {
        let known = self.identity.endpoint_id;
        if let (Some(id), false) = (known, self.recheck_endpoint) {
            return Ok(id);
        }
        self.recheck_endpoint = false;
        match self.client.global_key(&self.meta) {
            Ok(id) => {
                if known != Some(id) {
                    log::info!(
                        "Portainer knows Edge ID {} as environment {id}",
                        self.identity.edge_id
                    );
                    self.identity.endpoint_id = Some(id);
                    self.cached = None;
                    if let Err(e) = self.persisted.update(|s| s.endpoint_id = Some(id)) {
                        log::error!(
                            "{e}; the change is kept in memory and saved at the next change"
                        );
                    }
                }
                Ok(id)
            }
            Err(e) => match known {
                Some(id) => {
                    log::debug!("global-key lookup failed ({e}); keeping environment {id}");
                    Ok(id)
                }
                None => Err(e),
            },
        }
    }

    fn succeeded(&mut self, endpoint_id: i64, response: &PollResponse) {
        let failures = std::mem::take(&mut self.failures);
        if failures.count > 0 {
            let down = failures.since.map(|t| t.elapsed()).unwrap_or_default();
            log::info!(
                "Portainer answers again after {} failed poll(s) over {}",
                failures.count,
                display(down)
            );
        }
        if self.seen.is_none() {
            log::info!(
                "polling {} as environment {endpoint_id} with Edge ID {}",
                self.client.base_url(),
                self.identity.edge_id
            );
        }
        match overruled(response, self.interval) {
            Some(what) if self.overruled.fresh(&what) => log::warn!("{what}"),
            Some(_) => {}
            None => self.overruled = Repeats::default(),
        }
        if let Some(interval) = response.checkin_interval() {
            if interval != self.interval {
                log::info!(
                    "check-in interval is now {} (was {})",
                    display(interval),
                    display(self.interval)
                );
                self.interval = interval;
            }
        }
        self.log_changes(response);
        for consumer in &mut self.consumers {
            consumer.answer(endpoint_id, response);
        }
    }

    fn log_changes(&mut self, response: &PollResponse) {
        let mut stacks = match (&response.stacks, &self.seen) {
            (Some(stacks), _) => stacks.clone(),
            // `null`: the server says nothing about stacks; keep what we knew.
            (None, Some(seen)) => seen.stacks.clone(),
            (None, None) => Vec::new(),
        };
        stacks.sort_by_key(|s| s.id);
        let mut jobs: Vec<_> = response
            .schedules
            .iter()
            .map(|j| (j.id, j.version, j.cron_expression.clone(), j.collect_logs))
            .collect();
        jobs.sort();
        let now = Seen {
            tunnel: (response.status.clone(), response.port),
            stacks,
            jobs,
        };
        let before = self.seen.take();
        if before.as_ref().map(|b| &b.tunnel) != Some(&now.tunnel) {
            match &now.tunnel {
                (TunnelStatus::Required, port) if self.tunnel_enabled => {
                    log::info!("Portainer requires the tunnel (remote port {port})")
                }
                (TunnelStatus::Required, _) => log::warn!(
                    "Portainer requires the tunnel, but EDGE_TUNNEL=false: Portainer cannot reach this environment"
                ),
                (TunnelStatus::Idle, _) if before.is_some() => {
                    log::info!("Portainer no longer requires the tunnel")
                }
                (TunnelStatus::Idle, _) => log::info!("tunnel not required"),
                (TunnelStatus::Other(s), _) => {
                    log::info!("tunnel status {s:?} (no action, as the Go agent)")
                }
            }
        }
        if before.as_ref().map(|b| &b.stacks) != Some(&now.stacks) {
            let list: Vec<String> = now
                .stacks
                .iter()
                .map(|s| format!("{} v{}", s.id, s.version))
                .collect();
            log::info!("edge stacks: {}", listing(&list));
        }
        if before.as_ref().map(|b| &b.jobs) != Some(&now.jobs) {
            let list: Vec<String> = now
                .jobs
                .iter()
                .map(|(id, version, cron, logs)| {
                    let logs = if *logs { ", collect logs" } else { "" };
                    format!("{id} v{version} ({cron}{logs})")
                })
                .collect();
            log::info!("edge jobs: {}", listing(&list));
        }
        self.seen = Some(now);
    }

    fn failed(&mut self, error: Error) -> Duration {
        let message = error.to_string();
        let line = self.failures.record(&message, Instant::now());
        let f = &self.failures;
        let forbidden = matches!(error, Error::Status { status: 403, .. });
        let delay = if forbidden {
            if self.identity.key.endpoint_id.is_none() {
                self.recheck_endpoint = true;
            }
            backoff::cap(self.interval)
        } else {
            let retry_after = match &error {
                Error::Status { retry_after, .. } => *retry_after,
                _ => None,
            };
            backoff::delay(
                self.interval,
                f.count,
                retry_after,
                crate::system::random::u64(),
            )
        };
        match line {
            Line::Message if forbidden => log::error!(
                "Portainer refuses this agent ({message}). Check that the environment exists and that its Edge ID is {} (set EDGE_ID to the one Portainer shows); retrying every {}",
                self.identity.edge_id,
                display(delay)
            ),
            Line::Message => log::warn!(
                "poll failed: {message}; retrying with backoff (next in {}, at most every {})",
                display(delay),
                display(backoff::cap(self.interval))
            ),
            Line::Reminder => log::info!(
                "polls still failing: {} in a row over the last {} ({message}); next attempt in {}",
                f.count,
                display(round_to_seconds(
                    f.since.map(|t| t.elapsed()).unwrap_or_default()
                )),
                display(delay)
            ),
            Line::Quiet => log::debug!(
                "poll failed again ({}): next in {}",
                f.count,
                display(delay)
            ),
        }
        delay
    }
}

/// `d` without its fraction of a second, for a log line.
fn round_to_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// What of `response` the agent does not take as sent, in one line: a `checkin` it cannot use
/// or clamps, lists longer than it handles.
fn overruled(response: &PollResponse, interval: Duration) -> Option<String> {
    let mut what: Vec<String> = response.checkin_problem(interval).into_iter().collect();
    for (listed, kind, most) in [
        (response.stacks_listed, "edge stacks", MAX_STACKS),
        (response.schedules_listed, "edge jobs", MAX_JOBS),
    ] {
        if listed > most {
            what.push(format!(
                "Portainer assigns {listed} {kind}; only the first {most} are handled, the most this agent runs (none already here is removed while the list is that long)"
            ));
        }
    }
    (!what.is_empty()).then(|| what.join("; "))
}

/// Lists longer than this are cut in log lines.
const LOGGED_ITEMS: usize = 16;

/// `none`, the items, or the first [`LOGGED_ITEMS`] and how many there are: one short line.
fn listing(list: &[String]) -> String {
    match list.len() {
        0 => "none".into(),
        n if n > LOGGED_ITEMS => {
            format!("{}, … ({n} in all)", list[..LOGGED_ITEMS].join(", "))
        }
        _ => list.join(", "),
    }
}

/// Sleeps for `delay`, feeding the systemd watchdog; `true` when asked to stop.
fn sleep(delay: Duration, stop: &Receiver<()>, notifier: &Notifier) -> bool {
    let deadline = Instant::now() + delay;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let slice = notifier.watchdog_interval().map_or(left, |w| w.min(left));
        match stop.recv_timeout(slice) {
            Err(RecvTimeoutError::Timeout) => notifier.watchdog(),
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Failures, Line, REMIND_EVERY};
    use std::time::{Duration, Instant};

    /// A failure every 5 s for two hours, always the same reason.
    fn lines_over_two_hours() -> Vec<(u64, Line)> {
        let mut failures = Failures::default();
        let start = Instant::now();
        (0..2 * 3600 / 5)
            .map(|n| {
                let at = Duration::from_secs(5 * n);
                (
                    at.as_secs(),
                    failures.record("connection refused", start + at),
                )
            })
            .filter(|(_, line)| *line != Line::Quiet)
            .collect()
    }

    #[test]
    fn a_long_outage_says_so_every_ten_minutes_and_repeats_its_reason_hourly() {
        let lines = lines_over_two_hours();
        let minutes: Vec<(u64, &Line)> = lines.iter().map(|(s, l)| (s / 60, l)).collect();
        assert_eq!(
            minutes,
            [
                (0, &Line::Message),
                (10, &Line::Reminder),
                (20, &Line::Reminder),
                (30, &Line::Reminder),
                (40, &Line::Reminder),
                (50, &Line::Reminder),
                (60, &Line::Message),
                (70, &Line::Reminder),
                (80, &Line::Reminder),
                (90, &Line::Reminder),
                (100, &Line::Reminder),
                (110, &Line::Reminder),
            ]
        );
        assert_eq!(REMIND_EVERY, Duration::from_secs(600));
    }

    #[test]
    fn the_count_and_start_cover_the_whole_outage() {
        let mut failures = Failures::default();
        let start = Instant::now();
        for n in 0..10 {
            failures.record("timed out", start + Duration::from_secs(n));
        }
        assert_eq!(failures.count, 10);
        assert_eq!(failures.since, Some(start));
    }
}
