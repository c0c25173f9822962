//! The Docker proxy: a request from Portainer goes to the Docker socket as it came (method,
//! path, query, headers, body), and Docker's answer comes back as it came plus the three
//! `Portainer-Agent` headers. Bodies stream both ways with backpressure and are never held
//! whole; after a `101` (attach or exec with `Upgrade: tcp`) the connection carries raw bytes
//! both ways until either side closes.
//!
//! The one change to the request is its `/vX.Y` API version prefix: it is kept when the engine
//! accepts that version and moved to the nearest one it accepts otherwise (an older Portainer
//! UI sends `/v1.41` to Docker 29, which refuses anything below 1.44). The range comes from the
//! engine's `/version`, asked again every [`RANGE_TTL`]. See docs/agent-api.md.

use super::conn::{self, Conn, STALL};
use super::{reply, Next, PORTAINER_HEADERS};
use crate::docker::{self, ApiVersion};
use crate::http1::{self, Framing, RequestHead, ResponseHead};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, DuplexStream, ReadHalf};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;
use tokio::time::timeout;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the engine's API version range is trusted (Portainer's UI caches `/version` as
/// long); an engine upgraded meanwhile is seen within that time.
const RANGE_TTL: Duration = Duration::from_secs(5 * 60);
/// How long an engine that did not tell its range is left alone before it is asked again.
const RANGE_RETRY: Duration = Duration::from_secs(5);
/// Docker's answer heads are small; this bounds a broken one.
const MAX_ANSWER_HEAD: usize = 64 * 1024;

/// How Docker's answer ended.
enum Answer {
    /// Fully relayed; the client may send another request.
    Complete,
    /// The body ran to the end of Docker's connection: the client's must end too.
    Closed,
    /// Switched protocols; Docker's bytes already read after the head follow.
    Upgraded(Vec<u8>),
}

enum Failure {
    /// Nothing was sent to the client yet: an error answer can still be given.
    BeforeHead(String),
    /// Part of the answer went out: all that is left is to close.
    Midway,
}

/// The API versions an engine accepts (`MinAPIVersion` to `ApiVersion` of its `/version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: ApiVersion,
    pub max: ApiVersion,
}

/// The Docker socket and what is known of its version range.
pub struct Engine {
    socket: PathBuf,
    /// When it was asked, and its answer (`None`: it did not answer).
    range: Mutex<Option<(Instant, Option<Range>)>>,
}

impl Engine {
    pub fn new(socket: PathBuf) -> Engine {
        Engine {
            socket,
            range: Mutex::new(None),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The engine's range, from the cache while it is fresh.
    async fn range(&self) -> Option<Range> {
        let cached = self.range.lock().ok().and_then(|cached| *cached);
        if let Some((asked, range)) = cached {
            let ttl = if range.is_some() {
                RANGE_TTL
            } else {
                RANGE_RETRY
            };
            if asked.elapsed() < ttl {
                return range;
            }
        }
        let socket = self.socket.clone();
        let limits = docker::Limits {
            timeout: CONNECT_TIMEOUT,
            ..docker::Limits::default()
        };
        let asked = super::blocking_within(2 * CONNECT_TIMEOUT, move || {
            let version = docker::Client::connect(&socket, limits)?.version()?;
            Ok::<_, docker::Error>(version)
        })
        .await;
        let range = match asked.map(|answer| answer.map_err(|e| e.to_string())) {
            Ok(Ok(version)) => range_of(&version.min_api_version, &version.api_version),
            Ok(Err(e)) => unknown_range(&e),
            Err(e) => unknown_range(&e.to_string()),
        };
        if let Ok(mut cached) = self.range.lock() {
            *cached = Some((Instant::now(), range));
        }
        range
    }
}

fn unknown_range(why: &str) -> Option<Range> {
    log::debug!(
        "Docker proxy: the engine's API versions are unknown ({why}): version prefixes go as sent"
    );
    None
}

/// `min` and `max` as `/version` gives them; `None` when either is not a version or they are
/// out of order.
fn range_of(min: &str, max: &str) -> Option<Range> {
    let range = Range {
        min: ApiVersion::parse(min)?,
        max: ApiVersion::parse(max)?,
    };
    (range.min <= range.max).then_some(range)
}

/// The version to send for one `asked` by the client: the same when the engine accepts it (or
/// its range is unknown), else the nearest end of its range.
fn version_to_send(asked: ApiVersion, range: Option<Range>) -> ApiVersion {
    match range {
        Some(Range { min, .. }) if asked < min => min,
        Some(Range { max, .. }) if asked > max => max,
        _ => asked,
    }
}

/// The request target for Docker: `path` as the client sent it (the agent API routes on
/// `unversioned`, the same without its version prefixes), `query` after it. A prefix that is no
/// version this agent can read is dropped, as the Go agent drops every prefix.
fn docker_target(
    path: &str,
    unversioned: &str,
    query: Option<&str>,
    range: Option<Range>,
) -> String {
    // `/v1.41` alone routes as `/`.
    let prefix = path.strip_suffix(unversioned).unwrap_or(path);
    let asked = prefix
        .strip_prefix("/v")
        .and_then(|p| p.split('/').next())
        .and_then(ApiVersion::parse);
    let mut target = match asked {
        Some(asked) => format!("/v{}{unversioned}", version_to_send(asked, range)),
        None => unversioned.to_owned(),
    };
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    target
}

/// Forwards one request; `unversioned` is its path without the version prefix.
pub async fn forward(
    conn: &mut Conn,
    head: &RequestHead,
    unversioned: &str,
    engine: &Engine,
) -> io::Result<Next> {
    let path = head.path();
    let range = if path.len() > unversioned.len() {
        engine.range().await
    } else {
        None
    };
    let query = head.target.split_once('?').map(|(_, query)| query);
    let target = docker_target(path, unversioned, query, range);
    let target = target.as_str();
    let docker = engine.socket();
    let body = match head.body() {
        Ok(body) => body,
        Err(e) => return reply(conn, 400, "Invalid request", &e.to_string(), Next::Close).await,
    };
    let after_error = if body == Framing::None {
        Next::KeepAlive
    } else {
        Next::Close
    };
    let mut out = Vec::new();
    let headers: Vec<(&str, &str)> = head
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if let Err(e) = http1::write_request_head(&mut out, &head.method, target, &headers, None) {
        return reply(conn, 400, "Invalid request", &e.to_string(), Next::Close).await;
    }
    let docker_conn = match connect(docker).await {
        Ok(c) => c,
        Err(e) => {
            log::warn!("cannot reach Docker at {}: {e}", docker.display());
            let details = format!("{e} ({})", docker.display());
            return reply(conn, 500, PROXY_ERROR, &details, after_error).await;
        }
    };
    let (mut from_docker, mut to_docker) = docker_conn.into_split();
    if let Err(e) = conn::write(&mut to_docker, &out).await {
        return reply(conn, 500, PROXY_ERROR, &e.to_string(), after_error).await;
    }

    let Conn { rd, wr, buf } = conn;
    let mut sent = body == Framing::None;
    let answer = {
        let upload = async {
            conn::relay(body, rd, buf, &mut to_docker, Some(STALL)).await?;
            sent = true;
            client_gone(rd, buf).await
        };
        tokio::select! {
            answer = relay_answer(&mut from_docker, wr, &head.method) => answer,
            // The client went away (or its body broke): drop Docker's side too.
            _ = upload => return Ok(Next::Close),
        }
    };
    match answer {
        Ok(Answer::Complete) if sent => Ok(Next::KeepAlive),
        Ok(Answer::Complete | Answer::Closed) => Ok(Next::Close),
        Ok(Answer::Upgraded(early)) => {
            pipe(rd, buf, wr, &mut from_docker, &mut to_docker, &early).await;
            Ok(Next::Close)
        }
        Err(Failure::BeforeHead(why)) => {
            log::warn!(
                "Docker answered {} {target} with something that is not HTTP: {why}",
                head.method
            );
            reply(conn, 502, PROXY_ERROR, &why, Next::Close).await
        }
        Err(Failure::Midway) => Ok(Next::Close),
    }
}

/// Go's agent says this when the socket fails.
const PROXY_ERROR: &str = "Unable to proxy the request via the Docker socket";

async fn connect(docker: &Path) -> io::Result<UnixStream> {
    timeout(CONNECT_TIMEOUT, UnixStream::connect(docker))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting timed out"))?
}

/// Resolves when the client closes its side, keeping what it sends meanwhile (a pipelined
/// request) for later; never resolves while that backlog is full.
async fn client_gone(rd: &mut ReadHalf<DuplexStream>, buf: &mut Vec<u8>) -> io::Result<()> {
    while buf.len() < conn::MAX_HEAD {
        if conn::fill(rd, buf).await? == 0 {
            return Ok(());
        }
    }
    std::future::pending().await
}

/// Relays Docker's answer: interim `1xx` heads, then the final head (with the Portainer
/// headers) and its body, as framed.
async fn relay_answer(
    from_docker: &mut OwnedReadHalf,
    wr: &mut tokio::io::WriteHalf<DuplexStream>,
    method: &str,
) -> Result<Answer, Failure> {
    let mut pending = Vec::new();
    let mut relayed = false;
    loop {
        let head = loop {
            match http1::parse_response_head(&pending, MAX_ANSWER_HEAD) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(_) if relayed => return Err(Failure::Midway),
                Err(e) => return Err(Failure::BeforeHead(e.to_string())),
            }
            match conn::fill(from_docker, &mut pending).await {
                Ok(0) | Err(_) if relayed => return Err(Failure::Midway),
                Ok(0) => {
                    return Err(Failure::BeforeHead(
                        "Docker closed the connection without answering".into(),
                    ))
                }
                Err(e) => return Err(Failure::BeforeHead(e.to_string())),
                Ok(_) => {}
            }
        };
        let framing = match http1::framing(method, &head) {
            Ok(framing) => framing,
            Err(e) if !relayed => return Err(Failure::BeforeHead(e.to_string())),
            Err(_) => return Err(Failure::Midway),
        };
        pending.drain(..head.len);
        conn::write(wr, &answer_head(&head))
            .await
            .map_err(|_| Failure::Midway)?;
        relayed = true;
        match framing {
            Framing::None if (100..200).contains(&head.status) => continue,
            Framing::Upgrade => return Ok(Answer::Upgraded(pending)),
            framing => {
                conn::relay(framing, from_docker, &mut pending, wr, None)
                    .await
                    .map_err(|_| Failure::Midway)?;
                return Ok(if framing == Framing::Close {
                    Answer::Closed
                } else {
                    Answer::Complete
                });
            }
        }
    }
}

/// Docker's head as the client gets it: the same status and headers, plus Portainer's.
fn answer_head(head: &ResponseHead) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n{PORTAINER_HEADERS}",
        head.status,
        http1::reason(head.status)
    );
    for (name, value) in &head.headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// After a protocol switch: bytes both ways, until either side ends (the tunnel has no
/// half-close, so neither does this).
async fn pipe(
    rd: &mut ReadHalf<DuplexStream>,
    buf: &mut Vec<u8>,
    wr: &mut tokio::io::WriteHalf<DuplexStream>,
    from_docker: &mut OwnedReadHalf,
    to_docker: &mut tokio::net::unix::OwnedWriteHalf,
    early: &[u8],
) {
    let up = async {
        to_docker.write_all(buf).await?;
        buf.clear();
        tokio::io::copy(rd, to_docker).await
    };
    let down = async {
        wr.write_all(early).await?;
        tokio::io::copy(from_docker, wr).await
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    let _ = wr.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> ApiVersion {
        ApiVersion::parse(text).unwrap()
    }

    /// Docker 29: 1.44 to 1.52.
    const DOCKER_29: Option<Range> = Some(Range {
        min: ApiVersion {
            major: 1,
            minor: 44,
        },
        max: ApiVersion {
            major: 1,
            minor: 52,
        },
    });

    #[test]
    fn a_version_the_engine_accepts_goes_as_sent() {
        assert_eq!(
            docker_target(
                "/v1.47/containers/json",
                "/containers/json",
                Some("all=1"),
                DOCKER_29
            ),
            "/v1.47/containers/json?all=1"
        );
        assert_eq!(
            docker_target("/v1.44/_ping", "/_ping", None, DOCKER_29),
            "/v1.44/_ping"
        );
    }

    #[test]
    fn a_version_below_the_engines_minimum_is_raised_to_it() {
        // An older Portainer UI on Docker 29, which would answer 400 "client version 1.41 is
        // too old".
        assert_eq!(
            docker_target(
                "/v1.41/containers/json",
                "/containers/json",
                Some("all=1"),
                DOCKER_29
            ),
            "/v1.44/containers/json?all=1"
        );
        assert_eq!(docker_target("/v1.41", "/", None, DOCKER_29), "/v1.44/");
    }

    #[test]
    fn a_version_above_the_engines_maximum_is_lowered_to_it() {
        let docker_20 = range_of("1.12", "1.41");
        assert_eq!(
            docker_target("/v1.47/info", "/info", None, docker_20),
            "/v1.41/info"
        );
    }

    #[test]
    fn unknown_ranges_and_unversioned_paths_go_as_sent() {
        assert_eq!(
            docker_target("/v1.41/info", "/info", None, None),
            "/v1.41/info"
        );
        assert_eq!(
            docker_target(
                "/containers/json",
                "/containers/json",
                Some("a=b"),
                DOCKER_29
            ),
            "/containers/json?a=b"
        );
        // Stacked prefixes: the first one counts.
        assert_eq!(
            docker_target("/v1.41/v1.40/info", "/info", None, DOCKER_29),
            "/v1.44/info"
        );
        // A prefix the Go agent strips but that names no version: dropped.
        assert_eq!(
            docker_target("/v1./info", "/info", None, DOCKER_29),
            "/info"
        );
    }

    #[test]
    fn ranges_come_from_version_fields() {
        assert_eq!(range_of("1.44", "1.52"), DOCKER_29);
        assert_eq!(range_of("1.52", "1.44"), None);
        assert_eq!(range_of("", "1.52"), None);
        assert_eq!(
            version_to_send(v("1.24"), range_of("1.24", "1.41")),
            v("1.24")
        );
    }
}
