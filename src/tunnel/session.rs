//! One tunnel connection, driven on the tunnel thread's tokio runtime: TCP (directly or through
//! an HTTP CONNECT proxy), TLS for `https://` tunnel addresses, the WebSocket handshake, then the
//! SSH client until the connection ends, is stopped or goes idle. Each channel the server opens
//! is handed to the handler as a [`DuplexStream`]; two small pumps per channel move data between
//! it and the connection, within the SSH windows, so memory stays bounded per channel. What SSH
//! sends goes out as one WebSocket message per packet, as chisel's client sends it.

use super::ssh::{self, Client, Event};
use super::{Activity, Handler};
use crate::http1::{self, ResponseHead};
use crate::websocket::{self, Control, Decoder, Encoder, Role, OP_BINARY};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep_until, timeout};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// From the TCP connection to the server accepting our configuration (chisel's SSH timeout).
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// An HTTP answer head (proxy or WebSocket handshake) larger than this is refused.
const MAX_HEAD: usize = 16 * 1024;
/// Buffered between the handler and the connection, per direction and channel, and the
/// largest data packet we send. 8 KiB costs the server no more per byte than 32 KiB packets
/// (`cargo bench --bench tunnel`) and keeps 50 busy channels within 8 MiB.
const CHANNEL_BUFFER: usize = 8 * 1024;
/// Data chunks queued towards the connection, all channels together.
const QUEUED_CHUNKS: usize = 16;
const READ_BUFFER: usize = 32 * 1024;
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

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Stream = Box<dyn Io>;

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

/// TCP, proxy and TLS, then the WebSocket handshake. Returns the stream and any bytes that
/// came after the handshake answer.
async fn open(params: &Params) -> Result<(Stream, Vec<u8>), Error> {
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

/// What the channel pumps ask of the connection.
enum Command {
    Data(u32, Vec<u8>),
    Consumed(u32, u32),
    Close(u32),
}

/// The connection's end of a channel.
struct ChannelIo {
    /// Data from the server, for the inbound pump; dropped at the server's EOF.
    inbound: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// What we may still send (the server's window).
    window: Arc<Semaphore>,
}

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

impl Session {
    async fn serve(
        &mut self,
        params: &Params,
        mut command_rx: mpsc::Receiver<Command>,
        stop: &mut watch::Receiver<bool>,
        setup_deadline: tokio::time::Instant,
        connected: &mut Option<impl FnOnce()>,
    ) -> Result<End, Error> {
        let mut buf = vec![0u8; READ_BUFFER];
        let mut keepalive = tokio::time::interval(params.keepalive);
        keepalive.reset();
        loop {
            let idle_deadline =
                tokio::time::Instant::from_std(self.activity.last() + params.inactivity);
            tokio::select! {
                _ = stopped(stop) => {
                    self.close().await;
                    return Ok(End::Stopped);
                }
                read = self.stream.read(&mut buf) => {
                    let n = read?;
                    if n == 0 {
                        return Err(Error::Closed);
                    }
                    self.received(&buf[..n])?;
                    if let Some(f) = connected.take_if(|_| self.ready) {
                        f();
                    }
                }
                Some(command) = command_rx.recv(), if self.client.can_send_data() => {
                    self.command(command);
                    // Take what else is queued, so one write carries it all.
                    while self.client.can_send_data() {
                        match command_rx.try_recv() {
                            Ok(command) => self.command(command),
                            Err(_) => break,
                        }
                    }
                }
                _ = keepalive.tick(), if self.ready => {
                    if self.awaiting_pong {
                        return Err(Error::KeepaliveLost);
                    }
                    self.awaiting_pong = true;
                    self.client.ping();
                    self.client.tick(Instant::now())?;
                }
                _ = sleep_until(setup_deadline), if !self.ready => {
                    return Err(Error::Timeout("waiting for the tunnel server to accept the connection"));
                }
                _ = sleep_until(idle_deadline), if self.ready => {
                    if self.activity.last().elapsed() >= params.inactivity {
                        self.close().await;
                        return Ok(End::Inactive);
                    }
                }
            }
            self.flush().await?;
        }
    }

    /// Feeds bytes from the server through WebSocket and SSH, and acts on the events.
    fn received(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let mut data = Vec::new();
        for control in self.decoder.decode(bytes, &mut data)? {
            match control {
                Control::Ping(payload) => self.encoder.pong(&payload, &mut self.wire)?,
                Control::Close => return Err(Error::Closed),
            }
        }
        if !data.is_empty() {
            self.client.feed(&data)?;
        }
        while let Some(event) = self.client.next_event() {
            self.event(event);
        }
        Ok(())
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Ready => self.ready = true,
            Event::Opened {
                id,
                window,
                max_packet,
            } => {
                self.activity.touch();
                let (ours, theirs) = tokio::io::duplex(CHANNEL_BUFFER);
                let (reader, writer) = tokio::io::split(ours);
                let (inbound, inbound_rx) = mpsc::unbounded_channel();
                let window = Arc::new(Semaphore::new(permits(0, window)));
                tokio::spawn(inbound_pump(id, inbound_rx, writer, self.commands.clone()));
                tokio::spawn(outbound_pump(
                    id,
                    reader,
                    window.clone(),
                    (max_packet as usize).clamp(1, ssh::MAX_PACKET as usize),
                    self.commands.clone(),
                ));
                tokio::spawn((self.handler)(theirs));
                self.channels.insert(
                    id,
                    ChannelIo {
                        inbound: Some(inbound),
                        window,
                    },
                );
            }
            Event::Data { id, data } => {
                self.activity.touch();
                if let Some(tx) = self.channels.get(&id).and_then(|c| c.inbound.as_ref()) {
                    let _ = tx.send(data);
                }
            }
            Event::Window { id, bytes } => {
                if let Some(c) = self.channels.get(&id) {
                    c.window
                        .add_permits(permits(c.window.available_permits(), bytes));
                }
            }
            Event::Eof { id } => {
                if let Some(c) = self.channels.get_mut(&id) {
                    c.inbound = None;
                }
            }
            Event::Closed { id } => {
                if let Some(c) = self.channels.remove(&id) {
                    c.window.close();
                }
            }
            Event::Pong => self.awaiting_pong = false,
            Event::TooManyChannels { max } => log::warn!(
                "tunnel to {}: the server opened more than {max} channels at once (the agent's limit): refusing more until some close",
                self.peer
            ),
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Data(id, data) => {
                self.activity.touch();
                self.client.send_data(id, &data);
            }
            Command::Consumed(id, n) => self.client.consumed(id, n),
            Command::Close(id) => self.client.close(id),
        }
    }

    /// Writes what SSH and WebSocket have to send: a WebSocket message per SSH packet, all in
    /// one write.
    async fn flush(&mut self) -> Result<(), Error> {
        let output = self.client.output();
        for packet in output.packets() {
            self.encoder.frame(OP_BINARY, packet, &mut self.wire)?;
        }
        output.clear();
        if !self.wire.is_empty() {
            self.stream.write_all(&self.wire).await?;
            self.wire.clear();
        }
        Ok(())
    }

    /// A clean end: SSH disconnect, WebSocket close, within a second.
    async fn close(&mut self) {
        self.client.disconnect("edge-agent closes the tunnel");
        let _ = self.encoder.close(&mut self.wire);
        let _ = timeout(Duration::from_secs(1), async {
            let _ = self.flush().await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}

/// The permits to add to a window semaphore holding `available` for `bytes` more of the
/// server's window. The client keeps windows within 2^32-1, which a semaphore holds on 64-bit
/// targets; on 32-bit ones it holds 2^29-1 at most (and panics beyond), so a larger window
/// is used up to that (chisel's server grants 2 MiB).
fn permits(available: usize, bytes: u32) -> usize {
    (bytes as usize).min(Semaphore::MAX_PERMITS - available)
}

/// Server data → handler, acknowledging what was delivered so the server may send more.
async fn inbound_pump(
    id: u32,
    mut data: mpsc::UnboundedReceiver<Vec<u8>>,
    mut writer: WriteHalf<DuplexStream>,
    commands: mpsc::Sender<Command>,
) {
    while let Some(chunk) = data.recv().await {
        if writer.write_all(&chunk).await.is_err() {
            return;
        }
        if commands
            .send(Command::Consumed(id, chunk.len() as u32))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// Handler output → server, never more than the server's window allows. Each read gets a
/// buffer of its own, sent on as the data, so a channel holds no buffer between reads.
async fn outbound_pump(
    id: u32,
    mut reader: ReadHalf<DuplexStream>,
    window: Arc<Semaphore>,
    max_packet: usize,
    commands: mpsc::Sender<Command>,
) {
    loop {
        // Wait until the server allows at least one byte.
        match window.acquire().await {
            Ok(permit) => drop(permit),
            Err(_) => return,
        }
        // The duplex never holds more than CHANNEL_BUFFER.
        let room = window
            .available_permits()
            .clamp(1, max_packet)
            .min(CHANNEL_BUFFER);
        let mut chunk = vec![0; room];
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        chunk.truncate(n);
        // Only this pump takes permits, so they are there.
        match window.try_acquire_many(n as u32) {
            Ok(permits) => permits.forget(),
            Err(_) => return,
        }
        if commands.send(Command::Data(id, chunk)).await.is_err() {
            return;
        }
    }
    let _ = commands.send(Command::Close(id)).await;
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
    fn config_is_the_json_chisel_sends() {
        let json: serde_json::Value = serde_json::from_slice(&config_json(51234)).unwrap();
        let remote = &json["Remotes"][0];
        assert_eq!(remote["LocalHost"], "0.0.0.0");
        assert_eq!(remote["LocalPort"], "51234");
        assert_eq!(remote["Reverse"], true);
        assert_eq!(json["Version"], "0.0.0-src");
    }

    #[test]
    fn window_permits_stop_at_what_a_semaphore_holds() {
        assert_eq!(permits(0, u32::MAX), u32::MAX as usize);
        let almost = Semaphore::MAX_PERMITS - 10;
        assert_eq!(permits(almost, u32::MAX), 10);
        Semaphore::new(almost).add_permits(permits(almost, u32::MAX));
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
