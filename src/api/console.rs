//! The Portainer UI's container console: `/websocket/exec?id=` and `/websocket/attach?id=`
//! (agent `http/handler/websocket/`). The WebSocket is bridged to Docker's hijacked
//! `POST /exec/{id}/start` (`{"Tty":true,"Detach":false}`) or
//! `POST /containers/{id}/attach?stdin=1&stdout=1&stderr=1&stream=1`: what the browser types
//! goes to Docker as it is; Docker's output comes back as text frames without invalid UTF-8
//! (as the Go agent's `validString`, except that a character cut between two reads is kept
//! whole), with a ping every 50 s.

use super::conn::{self, Conn};
use super::{reply, Next};
use crate::http1;
use crate::websocket::{self, Control, Decoder, Encoder, Role, OP_PING, OP_TEXT};
use std::io;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::time::timeout;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
}

const PING_EVERY: Duration = Duration::from_secs(50);
/// The Go agent reads Docker's output in pieces of this size, one text frame each.
const READ_SIZE: usize = 2048;
const EXEC_START: &str = r#"{"Tty":true,"Detach":false}"#;

pub async fn serve(
    conn: &mut Conn,
    head: &http1::RequestHead,
    kind: Kind,
    docker: &Path,
) -> io::Result<Next> {
    let id = head.query("id").unwrap_or_default();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return reply(
            conn,
            400,
            "Invalid query parameter: id (must be hexadecimal identifier)",
            "Invalid query parameter: id",
            Next::KeepAlive,
        )
        .await;
    }
    let accept = match websocket::accept(|name| head.header(name).map(str::to_owned)) {
        Ok(accept) => accept,
        Err(e) => {
            return reply(
                conn,
                400,
                "Not a WebSocket request",
                &e.to_string(),
                Next::Close,
            )
            .await
        }
    };
    let (mut docker_conn, early) = match hijack(kind, id, docker).await {
        Ok(hijacked) => hijacked,
        Err(why) => {
            log::warn!("console for {id}: {why}");
            let message = format!(
                "An error occurred during websocket {} hijack operation",
                if kind == Kind::Exec { "exec" } else { "attach" }
            );
            return reply(conn, 500, &message, &why, Next::Close).await;
        }
    };
    conn.write(accept.as_bytes()).await?;
    bridge(conn, &mut docker_conn, early).await;
    Ok(Next::Close)
}

/// Starts Docker's side: the hijacking request, up to its `101`. Returns the connection and
/// the output that came with the answer head.
async fn hijack(kind: Kind, id: &str, docker: &Path) -> Result<(UnixStream, Vec<u8>), String> {
    let mut stream = timeout(Duration::from_secs(5), UnixStream::connect(docker))
        .await
        .map_err(|_| "connecting to Docker timed out".to_owned())?
        .map_err(|e| format!("cannot reach Docker at {}: {e}", docker.display()))?;
    let (target, body) = match kind {
        Kind::Exec => (format!("/exec/{id}/start"), EXEC_START),
        Kind::Attach => (
            format!("/containers/{id}/attach?stdin=1&stdout=1&stderr=1&stream=1"),
            "",
        ),
    };
    let mut request = Vec::new();
    http1::write_request_head(
        &mut request,
        "POST",
        &target,
        &[
            ("Host", "docker"),
            ("Content-Type", "application/json"),
            ("Connection", "Upgrade"),
            ("Upgrade", "tcp"),
        ],
        Some(body.len() as u64),
    )
    .map_err(|e| e.to_string())?;
    request.extend_from_slice(body.as_bytes());
    conn::write(&mut stream, &request)
        .await
        .map_err(|e| e.to_string())?;
    let mut pending = Vec::new();
    let head = loop {
        if let Some(head) =
            http1::parse_response_head(&pending, 16 * 1024).map_err(|e| e.to_string())?
        {
            break head;
        }
        let read = timeout(
            Duration::from_secs(30),
            conn::fill(&mut stream, &mut pending),
        )
        .await
        .map_err(|_| "Docker did not answer within 30 s".to_owned())?;
        if read.map_err(|e| e.to_string())? == 0 {
            return Err("Docker closed the connection without answering".into());
        }
    };
    if head.status != 101 {
        let text = String::from_utf8_lossy(&pending[head.len..])
            .trim()
            .to_owned();
        return Err(format!(
            "unexpected response status code: {} {text}",
            head.status
        ));
    }
    pending.drain(..head.len);
    Ok((stream, pending))
}

/// Browser ↔ Docker until either side ends.
async fn bridge(conn: &mut Conn, docker_conn: &mut UnixStream, early: Vec<u8>) {
    let mut decoder = Decoder::new(Role::Server);
    let mut encoder = Encoder::new(Role::Server);
    let mut text = Utf8::default();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    let mut output = [0u8; READ_SIZE];
    let mut frames = Vec::new();
    let mut input = std::mem::take(&mut conn.buf);
    if !early.is_empty()
        && send_text(&mut encoder, &mut text, &early, conn)
            .await
            .is_err()
    {
        return;
    }
    loop {
        if !input.is_empty() {
            let mut data = Vec::new();
            let controls = match decoder.decode(&input, &mut data) {
                Ok(controls) => controls,
                Err(e) => {
                    log::debug!("console: {e}");
                    return;
                }
            };
            input.clear();
            if conn::write(docker_conn, &data).await.is_err() {
                return;
            }
            for control in controls {
                match control {
                    Control::Ping(payload) => {
                        frames.clear();
                        let _ = encoder.pong(&payload, &mut frames);
                        if conn.write(&frames).await.is_err() {
                            return;
                        }
                    }
                    Control::Close => {
                        frames.clear();
                        let _ = encoder.close(&mut frames);
                        let _ = conn.write(&frames).await;
                        return;
                    }
                }
            }
        }
        tokio::select! {
            read = conn::fill(&mut conn.rd, &mut input) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
            }
            read = docker_conn.read(&mut output) => {
                match read {
                    Ok(n) if n > 0 => {
                        if send_text(&mut encoder, &mut text, &output[..n], conn).await.is_err() {
                            return;
                        }
                    }
                    _ => {
                        frames.clear();
                        let _ = encoder.close(&mut frames);
                        let _ = conn.write(&frames).await;
                        return;
                    }
                }
            }
            _ = ping.tick() => {
                frames.clear();
                let _ = encoder.frame(OP_PING, b"", &mut frames);
                if conn.write(&frames).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn send_text(
    encoder: &mut Encoder,
    text: &mut Utf8,
    bytes: &[u8],
    conn: &mut Conn,
) -> io::Result<()> {
    let valid = text.push(bytes);
    if valid.is_empty() {
        return Ok(());
    }
    let mut frame = Vec::with_capacity(valid.len() + 4);
    encoder
        .frame(OP_TEXT, valid.as_bytes(), &mut frame)
        .map_err(|e| io::Error::other(e.to_string()))?;
    conn.write(&frame).await
}

/// Turns a byte stream into valid UTF-8: invalid bytes are dropped, and a character split
/// across two pieces is held until its end arrives.
#[derive(Default)]
struct Utf8 {
    carry: Vec<u8>,
}

impl Utf8 {
    fn push(&mut self, bytes: &[u8]) -> String {
        self.carry.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest = &self.carry[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    out.push_str(valid);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // Cannot fail: the prefix is valid by definition.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => rest = &after[bad..],
                        // An incomplete character at the end: wait for the rest.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.carry = rest.to_vec();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Utf8;

    #[test]
    fn invalid_bytes_are_dropped_and_split_characters_kept() {
        let mut text = Utf8::default();
        assert_eq!(text.push(b"ok \xff\xfe!"), "ok !");
        let euro = "€".as_bytes();
        assert_eq!(text.push(&euro[..1]), "");
        assert_eq!(text.push(&euro[1..]), "€");
        assert_eq!(text.push(b"\xe2\x82x"), "x", "a broken sequence is dropped");
    }
}
