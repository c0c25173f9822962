//! The Portainer Server's agent-facing HTTP API, as the Go agent 2.23 calls it: the status poll,
//! the global-key lookup, edge stack payloads and status reports, and edge job logs. One ureq
//! agent (keep-alive, small buffers, timeouts on every request) is reused for every call of a
//! client; the edge stack and job threads have clients of their own, so they never hold up the
//! poll.

mod container_engine;
pub mod hints;
pub mod poll_response;
pub mod proxy;
mod resolver;
pub mod stack_status;
pub mod tls;
pub mod versions;

use crate::config::{Config, GlobalKeyMeta};
use container_engine::ContainerEngine;
use poll_response::PollResponse;
use resolver::CachingResolver;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The Portainer protocol level we implement, sent as the Go agent's version: the server stores
/// it, decides stack formats by it (inline compose below 2.19) and its UI warns when it sorts
/// below the server's own version (docs/edge-protocol.md, "Versions").
pub const AGENT_VERSION: &str = "2.45.0";
/// `1` = Docker (standalone, Swarm, Podman).
pub const AGENT_PLATFORM: &str = "1";

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// An edge job log is up to 1 MiB.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Redirects followed per request (a loop ends there).
const MAX_REDIRECTS: u32 = 3;
/// A poll answer carries stack ids and job scripts; 1 MiB is far above any real one.
const MAX_POLL_BODY: u64 = 1024 * 1024;
const MAX_SMALL_BODY: u64 = 16 * 1024;
/// An edge stack payload: its files (at most 1 MiB, see `stacks::payload`) in base64 and JSON.
const MAX_STACK_PAYLOAD: u64 = 2 * 1024 * 1024;
/// The answer to a status report is the whole edge stack on 2.23 (which ignores
/// `X-Portainer-No-Body`), an empty body on 2.45 (which honours it); only a `null` matters.
const MAX_STATUS_ANSWER: u64 = 1024 * 1024;

#[derive(Debug)]
pub enum Error {
    /// No HTTP answer: DNS, connect, TLS, timeout, broken connection.
    Transport(String),
    /// The server answered with an unexpected status.
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The server answered 200 with something that is not a poll response.
    Body(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Transport(e) => f.write_str(e),
            Error::Status {
                status, message, ..
            } => write!(f, "HTTP {status}: {message}"),
            Error::Body(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// Worth trying again later (no answer, 5xx, 429), with the server's `Retry-After` if it
    /// sent one; `None` for a refusal that a retry would not change.
    pub fn retry(&self) -> Option<Option<Duration>> {
        match self {
            Error::Transport(_) => Some(None),
            Error::Status {
                status,
                retry_after,
                ..
            } if *status >= 500 || *status == 429 => Some(*retry_after),
            Error::Status { .. } | Error::Body(_) => None,
        }
    }
}

pub enum Poll {
    Fresh {
        response: PollResponse,
        etag: Option<String>,
    },
    /// 304: nothing changed since the response with this ETag.
    NotModified { etag: Option<String> },
}

/// Clones share one ureq agent: one rustls configuration and root store, one pool of idle
/// connections and one name cache for the poll, the edge stacks and the job logs. A request
/// never waits on another clone's (each takes a connection of its own when both are busy).
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    resolver: CachingResolver,
    base: String,
    edge_id: String,
    time_zone: String,
    engine: Arc<ContainerEngine>,
}

impl Client {
    pub fn new(
        config: &Config,
        portainer_url: &str,
        edge_id: &str,
    ) -> Result<Client, crate::portainer::tls::Error> {
        let docker_socket = config.docker_socket.clone();
        let proxy = crate::portainer::proxy::for_url(&config.proxies, portainer_url)
            // Validated when the configuration was read.
            .and_then(|url| ureq::Proxy::new(url).ok());
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(crate::portainer::tls::config(
                &config.tls,
                config.insecure_poll,
            )?)
            .proxy(proxy)
            .user_agent(format!("edge-agent/{}", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .max_redirects(MAX_REDIRECTS)
            // One for each clone: the poll, the edge stacks and the job logs.
            .max_idle_connections(3)
            .max_idle_connections_per_host(3)
            .max_response_header_size(16 * 1024)
            .input_buffer_size(16 * 1024)
            .output_buffer_size(4 * 1024)
            .build();
        let resolver = CachingResolver::default();
        let agent = ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::default(),
            resolver.clone(),
        );
        Ok(Client {
            agent,
            resolver,
            base: portainer_url.trim_end_matches('/').to_owned(),
            edge_id: edge_id.to_owned(),
            time_zone: go_time_zone(std::env::var("TZ").ok()),
            engine: Arc::new(ContainerEngine::new(docker_socket)),
        })
    }

    /// A failed exchange may mean the server moved: resolve its name again next time. A refused
    /// certificate comes with what to do about it, a limit with the limit.
    fn transport(&self, url: &str, e: ureq::Error) -> Error {
        self.transport_within(url, e, REQUEST_TIMEOUT)
    }

    /// The same for a request whose whole exchange had `timeout`.
    fn transport_within(&self, url: &str, e: ureq::Error, timeout: Duration) -> Error {
        self.resolver.forget();
        let what = match &e {
            ureq::Error::Timeout(ureq::Timeout::Connect) => {
                format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())
            }
            ureq::Error::Timeout(ureq::Timeout::Global) => format!(
                "no complete answer within {} s, the most this agent waits",
                timeout.as_secs()
            ),
            ureq::Error::TooManyRedirects => {
                format!("more than {MAX_REDIRECTS} redirects, the most this agent follows")
            }
            e => e.to_string(),
        };
        let advice = tls::advice(&e, tls::Peer::Portainer).or(match &e {
            ureq::Error::Io(io) => hints::connect(io.kind(), hints::Server::Portainer),
            ureq::Error::Timeout(ureq::Timeout::Connect) => {
                hints::connect(std::io::ErrorKind::TimedOut, hints::Server::Portainer)
            }
            ureq::Error::HostNotFound => Some(hints::NAME_NOT_FOUND),
            _ => None,
        });
        match advice {
            Some(advice) => Error::Transport(format!("cannot reach {url}: {what}; {advice}")),
            None => Error::Transport(format!("cannot reach {url}: {what}")),
        }
    }

    /// The body of a 200 answer, at most `limit` bytes: more is an error naming the limit, and
    /// the rest is never read (the connection is dropped).
    fn body(
        &self,
        url: &str,
        response: &mut ureq::http::Response<ureq::Body>,
        limit: u64,
    ) -> Result<Vec<u8>, Error> {
        response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => Error::Body(format!(
                    "{url} answered with more than {} KiB, the most this agent reads",
                    limit / 1024
                )),
                e => self.transport(url, e),
            })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /api/endpoints/{id}/edge/status` with the Go agent's headers (the container engine's
    /// once it is known).
    pub fn poll(&self, endpoint_id: i64, etag: Option<&str>) -> Result<Poll, Error> {
        let url = format!("{}/api/endpoints/{endpoint_id}/edge/status", self.base);
        let mut request = self
            .agent
            .get(&url)
            .header("If-None-Match", etag.unwrap_or(""))
            .header("Portainer-Agent", AGENT_VERSION)
            .header("X-PortainerAgent-EdgeID", &self.edge_id)
            .header("X-PortainerAgent-TimeZone", &self.time_zone)
            .header("Portainer-Agent-Platform", AGENT_PLATFORM)
            .header("X-PortainerAgent-Update-ID", "0");
        if let Some(engine) = self.engine.header_value() {
            request = request.header(container_engine::HEADER, engine);
        }
        let mut response = request.call().map_err(|e| self.transport(&url, e))?;
        let etag = response
            .headers()
            .get("ETag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match response.status().as_u16() {
            200 => {
                let body = self.body(&url, &mut response, MAX_POLL_BODY)?;
                let response = PollResponse::parse(&body).map_err(|e| {
                    Error::Body(format!(
                        "{url} answered 200 but not with a poll response ({e}): {}",
                        snippet(&body)
                    ))
                })?;
                Ok(Poll::Fresh { response, etag })
            }
            304 => Ok(Poll::NotModified { etag }),
            _ => Err(status_error(response)),
        }
    }

    /// `POST /api/endpoints/global-key`: the endpoint id the server has for our Edge ID.
    pub fn global_key(&self, meta: &GlobalKeyMeta) -> Result<i64, Error> {
        let url = format!("{}/api/endpoints/global-key", self.base);
        let body = global_key_body(meta);
        let mut response = self
            .agent
            .post(&url)
            .header("X-PortainerAgent-EdgeID", &self.edge_id)
            .header("Portainer-Agent", AGENT_VERSION)
            .header("Portainer-Agent-Platform", AGENT_PLATFORM)
            .content_type("application/json")
            .send(body.as_bytes())
            .map_err(|e| self.transport(&url, e))?;
        if response.status().as_u16() != 200 {
            return Err(status_error(response));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(rename = "endpointID", alias = "EndpointID", alias = "endpointId")]
            endpoint_id: i64,
        }
        let body = self.body(&url, &mut response, MAX_SMALL_BODY)?;
        match serde_json::from_slice::<Answer>(&body) {
            Ok(answer) if answer.endpoint_id > 0 => Ok(answer.endpoint_id),
            _ => Err(Error::Body(format!(
                "{url} answered 200 without an endpoint id: {}",
                snippet(&body)
            ))),
        }
    }

    /// `GET /api/endpoints/{id}/edge/stacks/{stack}?version=N`: the stack's payload, as sent.
    pub fn stack_payload(
        &self,
        endpoint_id: i64,
        stack_id: i64,
        version: i64,
    ) -> Result<Vec<u8>, Error> {
        let url = format!(
            "{}/api/endpoints/{endpoint_id}/edge/stacks/{stack_id}?version={version}",
            self.base
        );
        let mut response = self
            .agent
            .get(&url)
            .header("X-PortainerAgent-EdgeID", &self.edge_id)
            .call()
            .map_err(|e| self.transport(&url, e))?;
        if response.status().as_u16() != 200 {
            return Err(status_error(response));
        }
        self.body(&url, &mut response, MAX_STACK_PAYLOAD)
    }

    /// `PUT /api/edge_stacks/{stack}/status` with a body from `stack_status::body`.
    /// `Ok(false)`: the server answered `200 null`, it no longer knows the stack (2.23). Sends
    /// `X-Portainer-No-Body` as the Go agent does: 2.45 then answers `200` with no body whether
    /// or not it knows the stack, so there `Ok(true)` only means accepted or ignored.
    pub fn stack_status(&self, stack_id: i64, body: &str) -> Result<bool, Error> {
        let url = format!("{}/api/edge_stacks/{stack_id}/status", self.base);
        let mut response = self
            .agent
            .put(&url)
            .header("X-PortainerAgent-EdgeID", &self.edge_id)
            .header("X-Portainer-No-Body", "1")
            .send(body.as_bytes())
            .map_err(|e| self.transport(&url, e))?;
        if response.status().as_u16() != 200 {
            return Err(status_error(response));
        }
        let answer = response
            .body_mut()
            .with_config()
            .limit(MAX_STATUS_ANSWER)
            .read_to_vec()
            .unwrap_or_default();
        Ok(answer.trim_ascii() != b"null")
    }

    /// `POST /api/endpoints/{id}/edge/jobs/{job}/logs` with `{"FileContent": <log>}`, when a poll
    /// asked for an edge job's log (`CollectLogs`). Up to a few MiB: more time than a poll.
    pub fn job_logs(&self, endpoint_id: i64, job_id: i64, log: &str) -> Result<(), Error> {
        let url = format!(
            "{}/api/endpoints/{endpoint_id}/edge/jobs/{job_id}/logs",
            self.base
        );
        #[derive(serde::Serialize)]
        struct Body<'a> {
            #[serde(rename = "FileContent")]
            file_content: &'a str,
        }
        let body = serde_json::to_vec(&Body { file_content: log })
            .map_err(|e| Error::Body(format!("cannot encode the log of edge job {job_id}: {e}")))?;
        let response = self
            .agent
            .post(&url)
            .config()
            .timeout_global(Some(UPLOAD_TIMEOUT))
            .build()
            .header("X-PortainerAgent-EdgeID", &self.edge_id)
            .content_type("application/json")
            .send(&body[..])
            .map_err(|e| self.transport_within(&url, e, UPLOAD_TIMEOUT))?;
        match response.status().as_u16() {
            200 | 204 => Ok(()),
            _ => Err(status_error(response)),
        }
    }

    /// `GET /api/system/status`, a public route: reachability for `edge-agent check`, without
    /// touching this device's environment (a status poll would bind the Edge ID). Any HTTP
    /// status counts as reached; a 200's `Version` comes along when it is there.
    pub fn system_status(&self) -> Result<SystemStatus, Error> {
        let url = format!("{}/api/system/status", self.base);
        let mut response = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| self.transport(&url, e))?;
        let http = response.status().as_u16();
        #[derive(serde::Deserialize)]
        struct Status {
            #[serde(rename = "Version")]
            version: String,
        }
        let version = match http {
            200 => self
                .body(&url, &mut response, MAX_SMALL_BODY)
                .ok()
                .and_then(|body| serde_json::from_slice::<Status>(&body).ok())
                .map(|s| s.version),
            _ => None,
        };
        Ok(SystemStatus { http, version })
    }
}

/// What `GET /api/system/status` answered.
#[derive(Debug)]
pub struct SystemStatus {
    pub http: u16,
    /// `Version` of a 200 answer (`portainer:api/portainer.go` `Status`).
    pub version: Option<String>,
}

/// A status error with Portainer's `{"message","details"}` text when there is one.
fn status_error(mut response: ureq::http::Response<ureq::Body>) -> Error {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_SMALL_BODY)
        .read_to_vec()
        .unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Message {
        #[serde(default)]
        message: String,
        #[serde(default)]
        details: String,
    }
    let message = match serde_json::from_slice::<Message>(&body) {
        Ok(m) if !m.details.is_empty() && m.details != m.message => {
            format!("{}: {}", m.message, m.details)
        }
        Ok(m) if !m.message.is_empty() => m.message,
        _ => snippet(&body),
    };
    Error::Status {
        status,
        message,
        retry_after,
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = crate::system::clock::parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The first line of a body, shortened, for a log line.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return "(empty body)".into();
    }
    let mut cut: String = line.chars().take(120).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    cut
}

/// `{}` or, when any id is set, the three fields the Go agent sends (`MetaFields`).
fn global_key_body(meta: &GlobalKeyMeta) -> String {
    if *meta == GlobalKeyMeta::default() {
        return "{}".into();
    }
    serde_json::json!({
        "edgeGroupsIds": meta.edge_group_ids,
        "tagsIds": meta.tag_ids,
        "environmentGroupId": meta.environment_group_id.unwrap_or(0),
    })
    .to_string()
}

/// What Go's `time.Local.String()` says: `Local` without `TZ`, `UTC` for an empty `TZ`, else
/// the zone name.
fn go_time_zone(tz: Option<String>) -> String {
    match tz {
        None => "Local".into(),
        Some(tz) if tz.trim_start_matches(':').is_empty() => "UTC".into(),
        Some(tz) => tz.trim_start_matches(':').to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_5xx_and_429_are_retried_other_refusals_not() {
        let status = |status, retry_after| Error::Status {
            status,
            message: String::new(),
            retry_after,
        };
        let minute = Some(Duration::from_secs(60));
        assert_eq!(Error::Transport("reset".into()).retry(), Some(None));
        assert_eq!(status(503, minute).retry(), Some(minute));
        assert_eq!(status(429, None).retry(), Some(None));
        assert_eq!(status(403, None).retry(), None);
        assert_eq!(status(404, minute).retry(), None);
        assert_eq!(Error::Body("garbage".into()).retry(), None);
    }

    #[test]
    fn time_zone_like_go() {
        assert_eq!(go_time_zone(None), "Local");
        assert_eq!(go_time_zone(Some(String::new())), "UTC");
        assert_eq!(go_time_zone(Some(":Europe/Paris".into())), "Europe/Paris");
    }

    #[test]
    fn global_key_body_like_go() {
        assert_eq!(global_key_body(&GlobalKeyMeta::default()), "{}");
        let meta = GlobalKeyMeta {
            edge_group_ids: vec![1, 2],
            tag_ids: vec![],
            environment_group_id: Some(3),
        };
        assert_eq!(
            global_key_body(&meta),
            r#"{"edgeGroupsIds":[1,2],"environmentGroupId":3,"tagsIds":[]}"#
        );
    }

    #[test]
    fn snippets_are_short_single_lines() {
        assert_eq!(snippet(b""), "(empty body)");
        assert_eq!(snippet(b"<html>\n<body>"), "<html>");
        assert_eq!(snippet("x".repeat(500).as_bytes()).chars().count(), 121);
    }

    #[test]
    fn retry_after_forms() {
        let now = crate::system::clock::parse_http_date("Tue, 24 Nov 2026 02:52:25 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Tue, 24 Nov 2026 02:53:25 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Tue, 24 Nov 2026 02:50:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
