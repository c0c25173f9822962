//! systemd's notify protocol without libsystemd: one datagram per state to `$NOTIFY_SOCKET`
//! (`READY=1`, `WATCHDOG=1`, `STOPPING=1`), the watchdog at half of `$WATCHDOG_USEC`.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
    started: Instant,
    /// Milliseconds since `started` of the last WATCHDOG=1, to send at most one per interval/2.
    last_watchdog_ms: AtomicU64,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.into_vec();
            let addr = match path.strip_prefix(b"@") {
                Some(name) => SocketAddr::from_abstract_name(name),
                None => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(&path)),
            };
            let socket = UnixDatagram::unbound();
            match (addr, socket) {
                (Ok(addr), Ok(socket)) => Some((socket, addr)),
                (Err(e), _) | (_, Err(e)) => {
                    log::warn!("NOTIFY_SOCKET is set but unusable ({e}); not notifying systemd");
                    None
                }
            }
        });
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|usec| *usec > 0)
            .filter(|_| {
                std::env::var("WATCHDOG_PID")
                    .map_or(true, |pid| pid.parse() == Ok(std::process::id()))
            })
            .map(|usec| Duration::from_micros(usec / 2));
        Notifier {
            target,
            watchdog,
            started: Instant::now(),
            last_watchdog_ms: AtomicU64::new(0),
        }
    }

    /// How often the poll loop must call [`Notifier::watchdog`], when systemd watches it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.target.is_some())
    }

    pub fn ready(&self) {
        self.send("READY=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// Sends `WATCHDOG=1` unless one went out less than half an interval ago.
    pub fn watchdog(&self) {
        let Some(interval) = self.watchdog_interval() else {
            return;
        };
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_watchdog_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < (interval / 2).as_millis() as u64 {
            return;
        }
        self.last_watchdog_ms.store(now.max(1), Ordering::Relaxed);
        self.send("WATCHDOG=1");
    }

    fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.target {
            if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
                log::debug!("systemd notify {message}: {e}");
            }
        }
    }
}
