//! The reverse tunnel Portainer asks for in its poll answers: chisel v3, SSH over a WebSocket to
//! the server's tunnel port. While Portainer says `REQUIRED` a thread runs a small tokio runtime
//! with the connection and reconnects with backoff when it drops (the Go agent gives up after
//! the first drop). When Portainer says `IDLE`, or nothing used the tunnel for
//! `EDGE_INACTIVITY_TIMEOUT`, the connection is closed cleanly and the thread ends: a closed
//! tunnel costs no thread and no socket.

mod credentials;
mod session;
mod ssh;

use crate::config::duration::display;
use crate::poller::Consumer;
use crate::portainer::poll_response::{PollResponse, TunnelStatus};
use crate::system::backoff;
use crate::system::logging::Repeats;
pub use session::Target;
use session::{End, Params};
#[cfg(fuzzing)]
pub(crate) use ssh::{
    negotiate, Algorithm, Cipher, Client as SshClient, Event as SshEvent, Reader, Writer,
};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::io::DuplexStream;
use tokio::sync::watch;

/// Serves one channel the server opened: a byte stream from one of Portainer's connections.
pub type Handler =
    Arc<dyn Fn(DuplexStream) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// chisel's server never pings (Portainer leaves `KeepAlive` unset), so the client keeps NAT
/// mappings alive and notices a dead link.
pub const KEEPALIVE: Duration = Duration::from_secs(30);
/// Connections Portainer may hold through the tunnel at once.
pub const MAX_CHANNELS: usize = 64;
/// Reconnection delays: full jitter up to this ceiling.
const RECONNECT_BASE: Duration = Duration::from_secs(1);
const RECONNECT_CAP: Duration = Duration::from_secs(60);
/// A connection that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);
/// How long closing waits for the clean SSH and WebSocket goodbye.
const CLOSE_WAIT: Duration = Duration::from_millis(1500);

/// When the tunnel last carried anything (a channel opened, data either way).
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    pub fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    pub fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

pub struct Settings {
    /// From the Edge key's tunnel address.
    pub target: Target,
    /// The tunnel server's key fingerprint from the Edge key.
    pub fingerprint: String,
    /// Decrypts the credentials in poll answers.
    pub edge_id: String,
    /// An HTTP proxy for the tunnel (`http://[user:password@]host:port`).
    pub proxy: Option<String>,
    /// CA certificates for an `https://` tunnel address (Mozilla's roots otherwise).
    pub ca_file: Option<PathBuf>,
    pub inactivity: Duration,
    pub keepalive: Duration,
}

pub struct Tunnel {
    settings: Settings,
    handler: Handler,
    activity: Arc<Activity>,
    current: Option<Running>,
    /// Credentials that did not decrypt, so the error is logged once per tunnel.
    refused: Option<String>,
}

struct Running {
    port: u16,
    credentials: String,
    stop: watch::Sender<bool>,
    /// Disconnected once the thread ended.
    done: mpsc::Receiver<()>,
}

impl Running {
    fn ended(&self) -> bool {
        matches!(self.done.try_recv(), Err(mpsc::TryRecvError::Disconnected))
    }
}

impl Tunnel {
    pub fn new(settings: Settings, handler: Handler) -> Tunnel {
        Tunnel {
            settings,
            handler,
            activity: Activity::new(),
            current: None,
            refused: None,
        }
    }

    /// Portainer says `REQUIRED` with this reverse port and credentials: open the tunnel, or
    /// keep it open. New parameters (Portainer reopened it) replace the connection; a tunnel
    /// closed for inactivity opens again, as the Go agent does.
    pub fn require(&mut self, port: u16, credentials: &str) {
        if let Some(running) = &self.current {
            let same = running.port == port && running.credentials == credentials;
            // An idle tunnel is closing (or closed) for inactivity.
            let idle = self.activity.last().elapsed() >= self.settings.inactivity;
            if same && !running.ended() && !idle {
                return;
            }
            if same {
                log::info!("Portainer still requires the tunnel: opening it again");
            }
            self.stop();
        }
        let credentials_text = credentials;
        let credentials = match credentials::decrypt(credentials, &self.settings.edge_id) {
            Ok(c) => c,
            Err(e) => {
                if self.refused.as_deref() != Some(credentials_text) {
                    log::error!("cannot open the tunnel: {e}");
                    self.refused = Some(credentials_text.to_owned());
                }
                return;
            }
        };
        let tls = if self.settings.target.secure {
            match crate::portainer::tls::tunnel_config(self.settings.ca_file.as_deref()) {
                Ok(config) => Some(Arc::new(config)),
                Err(e) => {
                    log::error!("cannot open the tunnel: {e}");
                    return;
                }
            }
        } else {
            None
        };
        let params = Params {
            target: self.settings.target.clone(),
            proxy: self.settings.proxy.clone(),
            tls,
            fingerprint: self.settings.fingerprint.clone(),
            credentials,
            port,
            keepalive: self.settings.keepalive,
            inactivity: self.settings.inactivity,
            max_channels: MAX_CHANNELS,
        };
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = mpsc::channel();
        let handler = self.handler.clone();
        let activity = self.activity.clone();
        // Go's agent counts the opening as activity.
        activity.touch();
        let spawned = std::thread::Builder::new()
            .name("tunnel".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                supervise(params, handler, activity, stop_rx);
                drop(done_tx);
            });
        match spawned {
            Ok(_) => {
                self.current = Some(Running {
                    port,
                    credentials: credentials_text.to_owned(),
                    stop,
                    done,
                });
            }
            Err(e) => log::error!("cannot start the tunnel thread: {e}"),
        }
    }

    /// Portainer says `IDLE`: close the tunnel if it is open.
    pub fn release(&mut self) {
        let open = self.current.as_ref().is_some_and(|r| !r.ended());
        self.stop();
        if open {
            log::info!("tunnel closed");
        }
    }

    fn stop(&mut self) {
        if let Some(running) = self.current.take() {
            let _ = running.stop.send(true);
            let _ = running.done.recv_timeout(CLOSE_WAIT);
        }
    }
}

/// `REQUIRED` opens (or keeps) the tunnel, `IDLE` closes it; anything else changes nothing.
impl Consumer for Tunnel {
    fn answer(&mut self, _endpoint_id: i64, response: &PollResponse) {
        match response.status {
            TunnelStatus::Required => self.require(response.port, &response.credentials),
            TunnelStatus::Idle => self.release(),
            TunnelStatus::Other(_) => {}
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The tunnel thread: connect, serve, reconnect with backoff, until stopped or idle.
fn supervise(
    params: Params,
    handler: Handler,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
) {
    // Blocking threads serve the agent API's file system and sysfs calls, a few at a time.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(4)
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("cannot start the tunnel runtime: {e}");
            return;
        }
    };
    let url = params.target.url();
    runtime.block_on(async {
        let mut failures = 0u32;
        let mut logged = Repeats::default();
        loop {
            let mut connected_at = None;
            let result = session::run(&params, &handler, &activity, &mut stop, || {
                log::info!(
                    "tunnel open: {url}, Portainer reaches this agent on its port {}",
                    params.port
                );
                connected_at = Some(Instant::now());
            })
            .await;
            let error = match result {
                Ok(End::Stopped) => return,
                Ok(End::Inactive) => {
                    log::info!(
                        "closing the tunnel: unused for {} (EDGE_INACTIVITY_TIMEOUT)",
                        display(params.inactivity)
                    );
                    return;
                }
                Err(e) => e,
            };
            if connected_at.is_some_and(|t| t.elapsed() >= STABLE) {
                failures = 0;
            }
            failures = failures.saturating_add(1);
            let delay = backoff::full_jitter(
                RECONNECT_BASE,
                failures,
                RECONNECT_CAP,
                crate::system::random::u64(),
            );
            let message = error.to_string();
            if logged.fresh(&message) {
                if error.is_fingerprint() {
                    log::error!("tunnel to {url}: {message}");
                } else {
                    log::warn!(
                        "tunnel to {url}: {message}; retrying while Portainer requires it (next in {})",
                        display(delay)
                    );
                }
            } else {
                log::debug!("tunnel to {url} failed again: {message}");
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = session::stopped(&mut stop) => return,
            }
        }
    });
}
