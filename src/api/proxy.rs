//! The Docker proxy: a request from Portainer goes to the Docker socket as it came (method,
//! path without the `/vX.Y` prefix, query, headers, body), and Docker's answer comes back as it
//! came plus the three `Portainer-Agent` headers. Bodies stream both ways with backpressure and
//! are never held whole; after a `101` (attach or exec with `Upgrade: tcp`) the connection
//! carries raw bytes both ways until either side closes.

use super::conn::{self, Conn, STALL};
use super::{reply, Next, PORTAINER_HEADERS};
use crate::http1::{self, Framing, RequestHead, ResponseHead};
use std::io;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, DuplexStream, ReadHalf};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;
use tokio::time::timeout;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
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

pub async fn forward(
    conn: &mut Conn,
    head: &RequestHead,
    target: &str,
    docker: &Path,
) -> io::Result<Next> {
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
