//! The poll's `Portainer-Agent-Container-Engine` header: `docker` or `podman`, as the Go agent
//! sends it on every poll (portainer/agent, edge/client/portainer_edge_client.go,
//! `GetEnvironmentStatus`). The Go agent takes it from `PODMAN=1`; this agent pings the engine
//! ([`Engine::detect`]) until it answers, and leaves the header out until then rather than name
//! the wrong engine.

use crate::docker::Engine;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const HEADER: &str = "Portainer-Agent-Container-Engine";

/// How long a poll waits for the engine's ping (a hung engine delays a poll once a minute at
/// most).
const DETECT_TIMEOUT: Duration = Duration::from_secs(2);
/// An engine that did not answer is asked again after this long.
const RETRY: Duration = Duration::from_secs(60);

/// The engine once known, and when it was last asked while unknown.
#[derive(Debug, Default)]
struct Known {
    engine: Option<Engine>,
    asked: Option<Instant>,
}

impl Known {
    /// The engine, asking `detect` when it is unknown and was not asked within [`RETRY`].
    fn engine(
        &mut self,
        now: Instant,
        detect: impl FnOnce() -> Result<Engine, String>,
    ) -> Option<Engine> {
        if self.engine.is_none() && self.asked.is_none_or(|at| now.duration_since(at) >= RETRY) {
            self.asked = Some(now);
            match detect() {
                Ok(engine) => self.engine = Some(engine),
                Err(e) => log::debug!("the poll does not name the container engine yet: {e}"),
            }
        }
        self.engine
    }
}

pub struct ContainerEngine {
    socket: PathBuf,
    known: Mutex<Known>,
}

impl ContainerEngine {
    pub fn new(socket: PathBuf) -> ContainerEngine {
        ContainerEngine {
            socket,
            known: Mutex::new(Known::default()),
        }
    }

    /// The header's value, `None` while the engine is unknown.
    pub fn header_value(&self) -> Option<&'static str> {
        let mut known = self.known.lock().ok()?;
        known
            .engine(Instant::now(), || {
                Engine::detect(&self.socket, DETECT_TIMEOUT).map_err(|e| e.to_string())
            })
            .map(Engine::header_value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_is_asked_until_it_answers_then_never_again() {
        let start = Instant::now();
        let mut known = Known::default();
        assert_eq!(known.engine(start, || Err("Docker is down".into())), None);
        let soon = start + RETRY / 2;
        assert_eq!(
            known.engine(soon, || panic!("asked again within a minute")),
            None
        );
        let later = start + RETRY;
        assert_eq!(
            known.engine(later, || Ok(Engine::Podman)),
            Some(Engine::Podman)
        );
        assert_eq!(
            known.engine(later + RETRY * 10, || panic!("asked again once known")),
            Some(Engine::Podman)
        );
    }
}
