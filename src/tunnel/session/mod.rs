//! One tunnel connection, driven on the tunnel thread's tokio runtime: [`connect`] opens it (TCP,
//! directly or through an HTTP CONNECT proxy, TLS for `https://` tunnel addresses, the WebSocket
//! handshake), then [`run`] starts the SSH client and [`serve`] drives it until the connection
//! ends, is stopped or goes idle. Each channel the server opens is handed to the handler as a
//! [`DuplexStream`](tokio::io::DuplexStream); two small pumps per channel ([`channels`]) move
//! data between it and the connection, within the SSH windows, so memory stays bounded per
//! channel. What SSH sends goes out as one WebSocket message per packet, as chisel's client
//! sends it.

mod channels;
mod connect;
mod serve;

use super::ssh::{self, Client};
use super::{Activity, Handler};
use crate::websocket::{self, Decoder, Encoder, Role};
use channels::{ChannelIo, Command};
use connect::{open, Stream};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

pub use connect::Target;

/// From the TCP connection to the server accepting our configuration (chisel's SSH timeout).
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Data chunks queued towards the connection, all channels together.
const QUEUED_CHUNKS: usize = 16;

/// Everything one connection needs.
pub struct Params {
    pub target: Target,
    /// `http://[user:password@]host:port` of an HTTP proxy.
    pub proxy: Option<String>,
    /// For `wss://` targets.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub fingerprint: String,
    /// chisel's `user:password`.
    pub credentials: String,
    /// The reverse port the server listens on for us.
    pub port: u16,
    pub keepalive: Duration,
    pub inactivity: Duration,
    pub max_channels: usize,
}

/// How a connection ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Stopped,
    Inactive,
}

#[derive(Debug)]
pub enum Error {
    Connect(String),
    Proxy(String),
    Tls(String),
    WebSocket(websocket::Error),
    Ssh(ssh::Error),
    Timeout(&'static str),
    /// The server closed the connection.
    Closed,
    KeepaliveLost,
    Io(std::io::Error),
}

impl Error {
    /// The server is not who the Edge key says: worth an error, not a warning.
    pub fn is_fingerprint(&self) -> bool {
        matches!(self, Error::Ssh(e) if e.is_fingerprint_mismatch())
    }
}

impl From<ssh::Error> for Error {
    fn from(e: ssh::Error) -> Self {
        Error::Ssh(e)
    }
}

impl From<websocket::Error> for Error {
    fn from(e: websocket::Error) -> Self {
        Error::WebSocket(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(e) => f.write_str(e),
            Error::Proxy(e) => write!(f, "proxy: {e}"),
            Error::Tls(e) => write!(f, "TLS: {e}"),
            Error::WebSocket(e) => e.fmt(f),
            Error::Ssh(e) => e.fmt(f),
            Error::Timeout(what) => write!(f, "timed out {what}"),
            Error::Closed => f.write_str("the tunnel server closed the connection"),
            Error::KeepaliveLost => {
                f.write_str("the tunnel server stopped answering keepalives (link down?)")
            }
            Error::Io(e) => write!(f, "connection error: {e}"),
        }
    }
}

/// The `config` request's JSON, field for field as chisel 1.10 encodes it. The server only
/// accepts `R:0.0.0.0:<port>` for our user; the remote side is informative.
pub fn config_json(port: u16) -> Vec<u8> {
    format!(
        r#"{{"Version":"0.0.0-src","Remotes":[{{"LocalHost":"0.0.0.0","LocalPort":"{port}","LocalProto":"tcp","RemoteHost":"127.0.0.1","RemotePort":"9001","RemoteProto":"tcp","Socks":false,"Reverse":true,"Stdio":false}}]}}"#
    )
    .into_bytes()
}

/// Connects and serves until stopped, idle or broken. `connected` is called once the server
/// accepted the configuration.
pub async fn run(
    params: &Params,
    handler: &Handler,
    activity: &Arc<Activity>,
    stop: &mut watch::Receiver<bool>,
    connected: impl FnOnce(),
) -> Result<End, Error> {
    let setup_deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    let opened = tokio::select! {
        opened = timeout(SETUP_TIMEOUT, open(params)) => opened,
        _ = stopped(stop) => return Ok(End::Stopped),
    };
    let (stream, leftover) =
        opened.map_err(|_| Error::Timeout("connecting to the tunnel server"))??;
    let client = Client::new(
        &params.fingerprint,
        &params.credentials,
        config_json(params.port),
        params.max_channels,
    )?;
    let (commands, command_rx) = mpsc::channel(QUEUED_CHUNKS);
    let mut session = Session {
        stream,
        client,
        decoder: Decoder::new(Role::Client),
        encoder: Encoder::new(Role::Client),
        wire: Vec::new(),
        channels: HashMap::new(),
        commands,
        handler: handler.clone(),
        activity: activity.clone(),
        awaiting_pong: false,
        ready: false,
        peer: params.target.url(),
    };
    session.received(&leftover)?;
    session.flush().await?;
    let mut connected = Some(connected);
    session
        .serve(params, command_rx, stop, setup_deadline, &mut connected)
        .await
}

/// Resolves once the tunnel is to stop (or its owner is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// The open connection, driven by [`serve`].
struct Session {
    stream: Stream,
    client: Client,
    decoder: Decoder,
    encoder: Encoder,
    /// WebSocket frames waiting to be written.
    wire: Vec<u8>,
    channels: HashMap<u32, ChannelIo>,
    commands: mpsc::Sender<Command>,
    handler: Handler,
    activity: Arc<Activity>,
    awaiting_pong: bool,
    ready: bool,
    /// The server's URL, for log lines.
    peer: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_the_json_chisel_sends() {
        let json: serde_json::Value = serde_json::from_slice(&config_json(51234)).unwrap();
        let remote = &json["Remotes"][0];
        assert_eq!(remote["LocalHost"], "0.0.0.0");
        assert_eq!(remote["LocalPort"], "51234");
        assert_eq!(remote["Reverse"], true);
        assert_eq!(json["Version"], "0.0.0-src");
    }
}
