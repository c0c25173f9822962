//! Name resolution for the Portainer client. ureq resolves the host before every request, even
//! when a kept-alive connection carries it, and with a timeout set it does so in a new thread:
//! one thread and one DNS query per poll, for nothing. This resolver remembers the answer until
//! a request fails (the server may have moved) or for at most [`REFRESH`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// An answer is used at most this long, failures or not.
pub const REFRESH: Duration = Duration::from_secs(600);

/// Cheap to clone: clones share one cache, so the client can [`forget`](Self::forget) what the
/// agent's copy remembers.
#[derive(Debug, Clone, Default)]
pub struct CachingResolver {
    cache: Arc<Mutex<Option<Entry>>>,
}

#[derive(Debug)]
struct Entry {
    authority: String,
    at: Instant,
    addrs: ResolvedSocketAddrs,
}

impl CachingResolver {
    /// Drops the remembered answer: the next request resolves the name again.
    pub fn forget(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Entry>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let authority = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or_default(),
            uri.authority().map_or("", |a| a.as_str())
        );
        if let Some(entry) = self.lock().as_ref() {
            if entry.authority == authority && entry.at.elapsed() < REFRESH {
                return Ok(entry.addrs.clone());
            }
        }
        let addrs = DefaultResolver::default().resolve(uri, config, timeout)?;
        *self.lock() = Some(Entry {
            authority,
            at: Instant::now(),
            addrs: addrs.clone(),
        });
        Ok(addrs)
    }
}
