//! The agent API Portainer calls through the tunnel: each tunnel channel is one HTTP/1.1
//! connection (several requests in turn), served in-process. Routing follows the Go agent's
//! `http/handler/handler.go`: `/key` (no signature, no agent headers), `/ping` and `/v2/ping`
//! (no signature), then, behind Portainer's signature, `/agents` (503 on a standalone engine),
//! the console WebSockets, `/host/info`, the volume and host browsers (`/browse/*`),
//! `/dockerhub`, and the Docker proxy for everything else. Routes are matched without the
//! Docker API version prefix (`/v1.41`), as the Go agent does; the proxy forwards it (see
//! [`proxy`]).

pub(crate) mod browse;
mod confine;
mod conn;
mod console;
mod dockerhub;
mod host;
mod multipart;
mod proxy;
pub mod signature;

#[cfg(fuzzing)]
pub use multipart::{boundary, Event as MultipartEvent, Parser as MultipartParser};

use crate::api::signature::{Verdict, Verifier, PUBLIC_KEY_HEADER, SIGNATURE_HEADER};
use crate::config::edge_key::EdgeKey;
use crate::config::Config;
use crate::http1::{self, Framing, RequestHead};
use crate::state::Persisted;
use crate::system::logging::Repeats;
use crate::tunnel::Handler;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use conn::{Conn, Incoming};
use console::Kind;
use std::any::Any;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::DuplexStream;

/// On every answer but `/key`'s. API version `2` (the Go agent's) enables the volume browser
/// and host panels in the UI.
const PORTAINER_HEADERS: &str = concat!(
    "Portainer-Agent: 2.45.0\r\n",
    "Portainer-Agent-API-Version: 2\r\n",
    "Portainer-Agent-Platform: 1\r\n"
);

/// What one connection does after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

pub struct Api {
    verifier: Verifier,
    docker: PathBuf,
    engine: proxy::Engine,
    key: EdgeKey,
    persisted: Arc<Persisted>,
    refused: Mutex<Repeats>,
    browser: browse::Browser,
    hub: dockerhub::DockerHub,
}

impl Api {
    pub fn new(
        verifier: Verifier,
        config: &Config,
        key: EdgeKey,
        persisted: Arc<Persisted>,
    ) -> Api {
        let browser = browse::Browser {
            host: config.host_browser,
            upload_max: config.upload_max,
            staging: config.data_path.join("uploads"),
            docker: config.docker_socket.clone(),
        };
        browser.clean_staging();
        Api {
            verifier,
            docker: config.docker_socket.clone(),
            engine: proxy::Engine::new(config.docker_socket.clone()),
            key,
            persisted,
            refused: Mutex::new(Repeats::default()),
            browser,
            hub: dockerhub::DockerHub::new(&config.proxies),
        }
    }
}

/// A blocking call (file system, Docker's client, sysfs) that takes longer is abandoned.
const BLOCKING_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `f` on one of the runtime's blocking threads, for at most [`BLOCKING_TIMEOUT`].
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    blocking_within(BLOCKING_TIMEOUT, f).await
}

/// The same for at most `limit`.
async fn blocking_within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let out = run_blocking(
        limit,
        Box::new(move || Box::new(f()) as Box<dyn Any + Send>),
    )
    .await?;
    out.downcast::<T>()
        .map(|value| *value)
        .map_err(|_| io::Error::other("a blocking call returned another type"))
}

/// A blocking job with its result type erased: tokio's task machinery is instantiated once
/// for all of them, not once per closure (a few KiB of binary each).
type Job = Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>;

async fn run_blocking(limit: Duration, job: Job) -> io::Result<Box<dyn Any + Send>> {
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(job)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(io::Error::other(e.to_string())),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {limit:?} (a hung file system or peer?)"),
        )),
    }
}

pub fn handler(api: Arc<Api>) -> Handler {
    Arc::new(move |stream| {
        let api = api.clone();
        Box::pin(async move { serve(&api, stream).await })
    })
}

async fn serve(api: &Api, stream: DuplexStream) {
    let mut conn = Conn::new(stream);
    loop {
        let head = match conn.request().await {
            Incoming::Request(head) => head,
            Incoming::Gone => return,
            Incoming::Bad(why) => {
                log::debug!("agent API: refused a request: {why}");
                let _ = reply(&mut conn, 400, "Invalid request", &why, Next::Close).await;
                return;
            }
        };
        let close = head.has("Connection", "close");
        let next = route(api, &mut conn, &head).await;
        log::debug!("agent API: {} {} ({next:?})", head.method, head.target);
        if close || !matches!(next, Ok(Next::KeepAlive)) {
            return;
        }
    }
}

async fn route(api: &Api, conn: &mut Conn, head: &RequestHead) -> io::Result<Next> {
    // An error answer leaves an unread body behind: the connection cannot go on.
    let after_error = match head.body() {
        Ok(Framing::None) => Next::KeepAlive,
        _ => Next::Close,
    };
    if head.path().starts_with("/key") {
        return key(api, conn, head, after_error).await;
    }
    let path = strip_version(head.path());
    let v1 = path.starts_with("/v1/");
    let route = path
        .strip_prefix("/v1")
        .or_else(|| path.strip_prefix("/v2"))
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path);
    if path == "/ping" || path == "/v2/ping" {
        return match head.method.as_str() {
            "GET" | "HEAD" => respond(conn, 204, "", after_error).await,
            _ => method_not_allowed(conn, after_error).await,
        };
    }
    match api.verifier.check(
        head.header(PUBLIC_KEY_HEADER),
        head.header(SIGNATURE_HEADER),
    ) {
        Verdict::Valid => {}
        Verdict::Missing => {
            return reply(
                conn,
                403,
                "Missing request signature headers",
                "Unauthorized",
                after_error,
            )
            .await
        }
        Verdict::Invalid(why) => {
            let message = format!("refused a request signed with {why}");
            let fresh = api
                .refused
                .lock()
                .map(|mut r| r.fresh(&message))
                .unwrap_or(true);
            if fresh {
                log::warn!(
                    "agent API: {message}; if Portainer was reinstalled, give this device the new Edge key (that also forgets the old server key)"
                );
            }
            return reply(
                conn,
                403,
                "Invalid request signature",
                "Unauthorized",
                after_error,
            )
            .await;
        }
    }
    match route {
        "/websocket/exec" => console::serve(conn, head, Kind::Exec, &api.docker).await,
        "/websocket/attach" => console::serve(conn, head, Kind::Attach, &api.docker).await,
        r if r.starts_with("/agents") => {
            reply(
                conn,
                503,
                "Agent management is not available when running the agent on a standalone engine",
                "Agent management is disabled",
                after_error,
            )
            .await
        }
        "/host/info" => host_info(conn, head, after_error).await,
        "/dockerhub" => dockerhub::serve(&api.hub, conn, head).await,
        r if r.starts_with("/browse/") => browse::serve(&api.browser, conn, head, r, v1).await,
        r if ["/host", "/browse", "/dockerhub"]
            .iter()
            .any(|p| r.starts_with(p)) =>
        {
            let details = format!("no route {r}");
            reply(conn, 404, "Not found", &details, after_error).await
        }
        r if ["/websocket", "/kubernetes"]
            .iter()
            .any(|p| r.starts_with(p)) =>
        {
            reply(
                conn,
                501,
                "Not supported by edge-agent",
                "This agent serves Docker standalone: Kubernetes routes are not served",
                after_error,
            )
            .await
        }
        _ => proxy::forward(conn, head, path, &api.engine).await,
    }
}

/// `GET /host/info` from the host's sysfs; a disk listing error is Go's `500`.
async fn host_info(conn: &mut Conn, head: &RequestHead, after_error: Next) -> io::Result<Next> {
    if head.method != "GET" {
        return method_not_allowed(conn, after_error).await;
    }
    let info = blocking(|| host::info(std::path::Path::new("/")))
        .await
        .and_then(|read| read)
        .and_then(|info| serde_json::to_string(&info).map_err(io::Error::other));
    match info {
        Ok(body) => respond(conn, 200, &body, Next::KeepAlive).await,
        Err(e) => {
            let details = e.to_string();
            reply(
                conn,
                500,
                "Unable to retrieve host information",
                &details,
                after_error,
            )
            .await
        }
    }
}

/// `/key`: the Edge key as the Go agent re-encodes it, with the endpoint id in use; setting a
/// key is refused, one is always set. No signature and no agent headers, as in the Go agent.
async fn key(
    api: &Api,
    conn: &mut Conn,
    head: &RequestHead,
    after_error: Next,
) -> io::Result<Next> {
    let (status, body) = match head.method.as_str() {
        "GET" => {
            let id = api
                .persisted
                .read(|s| s.endpoint_id)
                .or(api.key.endpoint_id)
                .unwrap_or(0);
            let k = &api.key;
            let text = format!(
                "{}|{}|{}|{id}",
                k.portainer_url, k.tunnel_addr, k.fingerprint
            );
            let body = serde_json::json!({ "key": STANDARD_NO_PAD.encode(text) });
            (200, body.to_string())
        }
        "POST" => (
            409,
            error_body(
                "An Edge key is already associated to this agent",
                "Edge key already associated",
            ),
        ),
        _ => (405, error_body("Method not allowed", "Method not allowed")),
    };
    let next = if status == 200 {
        Next::KeepAlive
    } else {
        after_error
    };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        http1::reason(status),
        body.len()
    );
    conn.write(format!("{head}{body}").as_bytes()).await?;
    Ok(next)
}

/// Portainer's error shape (`pkg/libhttp/error`): `details` starts with a capital.
fn error_body(message: &str, details: &str) -> String {
    serde_json::json!({ "message": message, "details": details }).to_string()
}

/// An error answer from the agent itself.
async fn reply(
    conn: &mut Conn,
    status: u16,
    message: &str,
    details: &str,
    next: Next,
) -> io::Result<Next> {
    respond(conn, status, &error_body(message, details), next).await
}

/// `405`, for a route asked with a method it does not serve.
async fn method_not_allowed(conn: &mut Conn, next: Next) -> io::Result<Next> {
    reply(conn, 405, "Method not allowed", "Method not allowed", next).await
}

/// An answer with the agent headers and, unless empty, a JSON body.
async fn respond(conn: &mut Conn, status: u16, body: &str, next: Next) -> io::Result<Next> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\n{PORTAINER_HEADERS}",
        http1::reason(status)
    );
    if !body.is_empty() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    if next == Next::Close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head.push_str(body);
    conn.write(head.as_bytes()).await?;
    if next == Next::Close {
        conn.linger().await;
    }
    Ok(next)
}

/// Drops Docker API version prefixes (`/v1.41`) at the start of a path, as the Go agent's
/// `(/v[0-9]\.[0-9]*)?` does (which also cuts them out of the middle of a path, say from a
/// container named `v1.2`: that part is not copied).
fn strip_version(mut path: &str) -> &str {
    loop {
        let Some(rest) = path.strip_prefix("/v") else {
            return path;
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let after = &rest[digits..];
        let Some(after) = after.strip_prefix('.').filter(|_| digits == 1) else {
            return path;
        };
        let minor = after.bytes().take_while(u8::is_ascii_digit).count();
        let after = &after[minor..];
        if !(after.is_empty() || after.starts_with('/')) {
            return path;
        }
        path = if after.is_empty() { "/" } else { after };
    }
}

#[cfg(test)]
mod tests {
    use super::{strip_version, PORTAINER_HEADERS};
    use crate::portainer::{AGENT_PLATFORM, AGENT_VERSION};

    #[test]
    fn agent_headers_say_what_the_poll_says() {
        assert!(PORTAINER_HEADERS.contains(&format!("Portainer-Agent: {AGENT_VERSION}\r\n")));
        assert!(PORTAINER_HEADERS.contains(&format!("Platform: {AGENT_PLATFORM}\r\n")));
    }

    #[test]
    fn version_prefixes_go() {
        assert_eq!(strip_version("/v1.41/containers/json"), "/containers/json");
        assert_eq!(strip_version("/v1.47/_ping"), "/_ping");
        assert_eq!(strip_version("/v2/ping"), "/v2/ping");
        assert_eq!(strip_version("/v1/websocket/exec"), "/v1/websocket/exec");
        assert_eq!(
            strip_version("/containers/v1.2/json"),
            "/containers/v1.2/json"
        );
        assert_eq!(strip_version("/v1.41"), "/");
        assert_eq!(strip_version("/version"), "/version");
    }
}
