//! Opening a tunnel connection: chisel's address rules ([`Target`]), TCP (directly or through an
//! HTTP CONNECT proxy), TLS for `wss://` targets, then the WebSocket handshake for chisel's
//! protocol.

use super::{Error, Params};
use crate::http1::{self, ResponseHead};
use crate::websocket;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An HTTP answer head (proxy or WebSocket handshake) larger than this is refused.
const MAX_HEAD: usize = 16 * 1024;
/// The WebSocket protocol chisel's server requires.
const PROTOCOL: &str = "chisel-v3";

/// Where to connect: chisel's rules turn the Edge key's `host:port` into `ws://host:port/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub path: String,
    /// `wss://`, from an `https://` address.
    pub secure: bool,
}

impl Target {
    /// chisel's `NewClient`: `http://` is assumed, `http`/`https` become `ws`/`wss`, the
    /// default port is 80 or 443.
    pub fn parse(address: &str) -> Result<Target, String> {
        let with_scheme = if address.starts_with("http") {
            address.to_owned()
        } else {
            format!("http://{address}")
        };
        let (scheme, rest) = with_scheme
            .split_once("://")
            .ok_or_else(|| format!("tunnel address {address:?} is not host:port"))?;
        let secure = match scheme {
            "http" => false,
            "https" => true,
            _ => return Err(format!("tunnel address {address:?} has an unknown scheme")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port
                    .parse()
                    .map_err(|_| format!("tunnel address {address:?} has a bad port"))?;
                (host, port)
            }
            _ => (authority, if secure { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("tunnel address {address:?} has no host"));
        }
        Ok(Target {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            secure,
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.authority(), self.path)
    }
}

pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub(super) type Stream = Box<dyn Io>;

/// TCP, proxy and TLS, then the WebSocket handshake. Returns the stream and any bytes that
/// came after the handshake answer.
pub(super) async fn open(params: &Params) -> Result<(Stream, Vec<u8>), Error> {
    let target = &params.target;
    let proxy = params.proxy.as_deref().map(parse_proxy).transpose()?;
    let (host, port) = match &proxy {
        Some(p) => (p.host.as_str(), p.port),
        None => (target.host.as_str(), target.port),
    };
    let tcp = timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| Error::Connect(format!("cannot connect to {host}:{port}: timed out")))?
        .map_err(|e| Error::Connect(format!("cannot connect to {host}:{port}: {e}")))?;
    tcp.set_nodelay(true)?;
    let mut stream: Stream = Box::new(tcp);
    if let Some(proxy) = &proxy {
        let mut request = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n", target.authority());
        if let Some(auth) = &proxy.auth {
            request.push_str(&format!(
                "Proxy-Authorization: Basic {}\r\n",
                STANDARD.encode(auth)
            ));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let (head, leftover) = read_head(&mut stream).await.map_err(|e| match e {
            Error::Io(e) => Error::Proxy(e.to_string()),
            other => other,
        })?;
        if !(200..300).contains(&head.status) || !leftover.is_empty() {
            return Err(Error::Proxy(format!(
                "{host}:{port} answered HTTP {} to CONNECT {}",
                head.status,
                target.authority()
            )));
        }
    }
    if target.secure {
        let config = params
            .tls
            .clone()
            .ok_or_else(|| Error::Tls("no TLS configuration".into()))?;
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| Error::Tls(format!("{}: {e}", target.host)))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| {
                let advice = crate::portainer::tls::advice(&e, crate::portainer::tls::Peer::Tunnel);
                Error::Tls(match advice {
                    Some(advice) => format!("{}: {e}; {advice}", target.url()),
                    None => format!("{}: {e}", target.url()),
                })
            })?;
        stream = Box::new(tls);
    }
    let key = websocket::new_key()?;
    let request = websocket::request(&target.authority(), &target.path, &key, PROTOCOL);
    stream.write_all(request.as_bytes()).await?;
    let (head, leftover) = read_head(&mut stream).await?;
    let header = |name: &str| head.header(name).map(|v| v.trim().to_owned());
    websocket::check_response(head.status, header, &key, PROTOCOL)?;
    Ok((stream, leftover))
}

#[derive(Debug)]
struct Proxy {
    host: String,
    port: u16,
    auth: Option<String>,
}

fn parse_proxy(url: &str) -> Result<Proxy, Error> {
    let bad = |why: &str| Error::Proxy(format!("{url}: {why}"));
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// proxies (HTTP CONNECT) carry the tunnel"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (auth, hostport) = match authority.rsplit_once('@') {
        Some((auth, hostport)) => (Some(auth.to_owned()), hostport),
        None => (None, authority),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port"))?),
        None => (hostport, 80),
    };
    Ok(Proxy {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        auth,
    })
}

/// Reads an HTTP/1.1 answer head; returns it and the bytes that came after it.
async fn read_head(stream: &mut Stream) -> Result<(ResponseHead, Vec<u8>), Error> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(Error::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        match http1::parse_response_head(&buf, MAX_HEAD) {
            Ok(Some(head)) => {
                let after = buf.split_off(head.len);
                return Ok((head, after));
            }
            Ok(None) => {}
            Err(e) => return Err(Error::Connect(format!("the answer is not usable: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_chisels_rules() {
        let t = Target::parse("portainer.example.com:8000").unwrap();
        assert_eq!(t.url(), "ws://portainer.example.com:8000/");
        let t = Target::parse("https://portainer.example.com").unwrap();
        assert_eq!(t.url(), "wss://portainer.example.com:443/");
        assert!(t.secure);
        let t = Target::parse("http://[::1]:8000/tunnel").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 8000, "/tunnel")
        );
        assert!(Target::parse("host:eighty").is_err());
        assert!(Target::parse("ftp://host:21").is_err());
    }

    #[test]
    fn proxies() {
        let p = parse_proxy("http://user:pw@proxy.lan:3128").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.lan", 3128));
        assert_eq!(p.auth.as_deref(), Some("user:pw"));
        let err = parse_proxy("socks5://proxy.lan:1080")
            .unwrap_err()
            .to_string();
        assert!(err.contains("only http://"), "{err}");
    }
}
