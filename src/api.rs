//! The agent API Portainer calls through the tunnel, one HTTP/1.1 connection per tunnel
//! channel. So far `/ping`, from which Portainer learns the agent API version; the Docker proxy
//! and the rest of the API come next.

use crate::portainer::{AGENT_PLATFORM, AGENT_VERSION};
use crate::tunnel::Handler;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// The Go agent's API version: `2` enables the volume browser and host panels in the UI.
const API_VERSION: &str = "2";
const MAX_HEAD: usize = 16 * 1024;
/// A kept-alive connection with no new request for this long is closed.
const IDLE: Duration = Duration::from_secs(120);

pub fn handler() -> Handler {
    Arc::new(|stream| Box::pin(serve(stream)))
}

async fn serve(mut stream: DuplexStream) {
    let mut buf = Vec::new();
    loop {
        let Some((ping, head_len)) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        buf.drain(..head_len);
        let response = if ping {
            format!(
                "HTTP/1.1 204 No Content\r\nPortainer-Agent: {AGENT_VERSION}\r\nPortainer-Agent-API-Version: {API_VERSION}\r\nPortainer-Agent-Platform: {AGENT_PLATFORM}\r\n\r\n"
            )
        } else {
            let body = r#"{"message":"Not implemented by this agent yet","details":"Not implemented by this agent yet"}"#;
            format!(
                "HTTP/1.1 501 Not Implemented\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        };
        if stream.write_all(response.as_bytes()).await.is_err() || !ping {
            return;
        }
    }
}

/// Reads a request head; `(is it GET/HEAD /ping, head length)`, or `None` when the connection
/// ends, idles out or sends something that is not HTTP.
async fn read_request(stream: &mut DuplexStream, buf: &mut Vec<u8>) -> Option<(bool, usize)> {
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(len) = request.parse(buf).ok()? {
            let path = request.path.unwrap_or_default();
            let ping = matches!(request.method, Some("GET" | "HEAD"))
                && matches!(path, "/ping" | "/v2/ping");
            return Some((ping, len));
        }
        if buf.len() >= MAX_HEAD {
            return None;
        }
        let n = tokio::time::timeout(IDLE, stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
