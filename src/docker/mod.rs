//! The Docker Engine API on its Unix socket: blocking, one connection per call, HTTP/1.1 framed
//! by [`crate::http1`]. The API version is negotiated once ([`Client::connect`]); every read has
//! a size limit and a timeout ([`Limits`]), streaming calls hold at most one buffer of data.

mod access;
mod api;
mod connection;
mod engine;
mod logs;
pub mod registry_auth;
mod stream;

pub use access::{Access, Id};
pub use api::{
    ContainerConfig, ContainerInspect, ContainerState, ContainerSummary, Created, Event,
    EventActor, Health, HealthConfig, ImageInspect, ImageSummary, Info, LogsOptions, MountPoint,
    Network, Progress, RegistryAuth, Version, Volume,
};
pub use engine::Engine;
pub use logs::{LogStream, Logs};
pub use stream::JsonLines;

use crate::http1::{self, ResponseHead};
use connection::{Body, Wait};
use serde::de::DeserializeOwned;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The newest API version this client speaks: Docker 27's. Docker 29 refuses anything below
/// 1.44; older engines get their own version (Debian 12's Docker 20.10 speaks 1.41), and the
/// fields read here exist in all of them.
pub const API_VERSION: ApiVersion = ApiVersion {
    major: 1,
    minor: 47,
};

/// Most bytes of an error answer kept for its message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    pub major: u16,
    pub minor: u16,
}

impl ApiVersion {
    /// `"1.41"`.
    pub fn parse(text: &str) -> Option<ApiVersion> {
        let (major, minor) = text.trim().split_once('.')?;
        Some(ApiVersion {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Bounds for the calls of a [`Client`]; [`Client::with_limits`] changes them for some calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of a buffered answer (streaming answers are not buffered).
    pub body: usize,
    /// Connecting, sending, and the whole of a buffered exchange.
    pub timeout: Duration,
    /// The longest silence on a streaming call, its head included; `None`: wait for ever (logs
    /// that follow a quiet container, events). Drop the stream to stop it.
    pub stream_idle: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body: 1024 * 1024,
            timeout: Duration::from_secs(30),
            stream_idle: None,
        }
    }
}

/// Why the socket did not take the connection.
#[derive(Debug)]
pub enum ConnectError {
    Missing,
    PermissionDenied(Box<Access>),
    /// A socket file nobody listens on (Docker stopped), or not a socket at all.
    Refused,
    /// The listener's backlog stayed full (Docker hung).
    Timeout(Duration),
    Other(io::Error),
}

#[derive(Debug)]
pub enum Error {
    Connect {
        socket: PathBuf,
        reason: ConnectError,
    },
    /// No answer, or a streaming call quiet, for this long.
    Timeout { call: String, after: Duration },
    /// The connection failed after connecting (reset, broken pipe).
    Io { call: String, error: io::Error },
    /// The answer is not HTTP/1.1 as expected.
    Protocol { call: String, error: http1::Error },
    /// The connection closed before the end of the answer.
    Truncated { call: String },
    /// A buffered answer longer than the call's limit.
    TooLarge { call: String, limit: usize },
    /// Docker refused the call: its status and `{"message": ...}`.
    Docker {
        call: String,
        status: u16,
        message: String,
    },
    /// Docker reported a failure inside a streaming answer (`errorDetail`).
    Failed { call: String, message: String },
    /// An answer that is HTTP but not what the call expects.
    Unexpected { call: String, what: String },
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Missing => {
                f.write_str("it does not exist: is Docker running? is DOCKER_HOST right?")
            }
            ConnectError::PermissionDenied(access) => write!(f, "permission denied: {access}"),
            ConnectError::Refused => f.write_str(
                "connection refused: nothing listens there; is Docker running (systemctl status docker)?",
            ),
            ConnectError::Timeout(after) => write!(
                f,
                "Docker did not accept the connection within {after:?}: is dockerd hung (systemctl status docker)?"
            ),
            ConnectError::Other(e) => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect { socket, reason } => {
                write!(f, "cannot connect to Docker socket {}: {reason}", socket.display())
            }
            Error::Timeout { call, after } => write!(
                f,
                "no answer from Docker to {call} within {after:?}: is dockerd overloaded or hung (systemctl status docker)?"
            ),
            Error::Io { call, error } => {
                write!(f, "connection to Docker lost during {call}: {error}")
            }
            Error::Protocol { call, error } => write!(
                f,
                "the answer to {call} is not Docker's HTTP: {error}; is that socket Docker's?"
            ),
            Error::Truncated { call } => write!(
                f,
                "Docker closed the connection before the end of the answer to {call}: did dockerd restart?"
            ),
            Error::TooLarge { call, limit } => write!(
                f,
                "the answer to {call} is larger than the {limit} bytes allowed for it"
            ),
            Error::Docker {
                call,
                status,
                message,
            } => write!(f, "Docker refused {call}: HTTP {status}: {message}"),
            Error::Failed { call, message } => write!(f, "Docker failed during {call}: {message}"),
            Error::Unexpected { call, what } => {
                write!(f, "unexpected answer from Docker to {call}: {what}")
            }
        }
    }
}

impl std::error::Error for Error {}

/// A Docker Engine on a Unix socket, with the API version both sides speak. Cheap to clone;
/// every call opens its own connection.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    api: ApiVersion,
    limits: Limits,
    engine: Engine,
}

/// A buffered answer.
struct Answer {
    call: String,
    body: Vec<u8>,
}

impl Answer {
    fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Unexpected {
            call: self.call.clone(),
            what: format!("{e} in {}", snippet(&self.body)),
        })
    }
}

impl Client {
    /// Asks the engine its API version (`GET /_ping`, else `/version`) and settles on the
    /// lower of it and [`API_VERSION`]; the ping also tells Podman from Docker
    /// ([`Engine::of_ping`]). `limits` apply to that and to later calls.
    pub fn connect(socket: impl Into<PathBuf>, limits: Limits) -> Result<Client, Error> {
        let mut client = Client {
            socket: socket.into(),
            api: API_VERSION,
            limits,
            engine: Engine::Docker,
        };
        let (head, body) = client.open("GET", "/_ping", &[], None, false)?;
        let body = expect(head.status, body, &[200])?;
        client.engine = Engine::of_ping(&head);
        let server = match head.header("API-Version") {
            Some(text) => ApiVersion::parse(text).ok_or_else(|| Error::Unexpected {
                call: body.call().to_owned(),
                what: format!("API-Version {text:?}"),
            })?,
            // Engines before 1.25 have no API-Version header; they answer an unversioned path.
            None => {
                let version: Version = client.buffered("GET", "/version", None, &[200])?.json()?;
                ApiVersion::parse(&version.api_version).ok_or_else(|| Error::Unexpected {
                    call: format!("GET /version on {}", client.socket.display()),
                    what: format!("ApiVersion {:?}", version.api_version),
                })?
            }
        };
        client.api = server.min(API_VERSION);
        Ok(client)
    }

    /// The same engine with other limits, for the calls made through the copy.
    pub fn with_limits(&self, limits: Limits) -> Client {
        Client {
            limits,
            ..self.clone()
        }
    }

    /// The negotiated version used in every path (`/v1.NN/...`).
    pub fn api_version(&self) -> ApiVersion {
        self.api
    }

    /// Docker or Podman, as its ping said.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Sends `method` on `target` (already versioned or not) and reads the head.
    fn open(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        streaming: bool,
    ) -> Result<(ResponseHead, Body), Error> {
        let call = format!("{method} {target} on {}", self.socket.display());
        let mut all = vec![("Host", "docker"), ("Connection", "close")];
        if body.is_some() {
            all.push(("Content-Type", "application/json"));
        }
        all.extend_from_slice(headers);
        let mut request = Vec::with_capacity(256 + body.map_or(0, <[u8]>::len));
        if let Err(error) = http1::write_request_head(
            &mut request,
            method,
            target,
            &all,
            body.map(|b| b.len() as u64),
        ) {
            return Err(Error::Protocol { call, error });
        }
        request.extend_from_slice(body.unwrap_or_default());
        let wait = if streaming {
            Wait::Idle(self.limits.stream_idle)
        } else {
            Wait::Until(Instant::now() + self.limits.timeout)
        };
        connection::exchange(
            &self.socket,
            &request,
            method,
            call,
            self.limits.timeout,
            wait,
        )
    }

    /// A buffered call on the versioned `path`; a status outside `ok` is [`Error::Docker`].
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        ok: &[u16],
    ) -> Result<Answer, Error> {
        self.buffered(method, &format!("/v{}{path}", self.api), body, ok)
    }

    /// [`Client::call`] on `target` as it is.
    fn buffered(
        &self,
        method: &str,
        target: &str,
        body: Option<&serde_json::Value>,
        ok: &[u16],
    ) -> Result<Answer, Error> {
        let json = body.map(|b| b.to_string().into_bytes());
        let (head, body) = self.open(method, target, &[], json.as_deref(), false)?;
        let body = expect(head.status, body, ok)?;
        let call = body.call().to_owned();
        Ok(Answer {
            body: body.read_to_vec(self.limits.body)?,
            call,
        })
    }

    /// A streaming call on the versioned `path`; the answer must be 200.
    fn stream(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Body, Error> {
        let target = format!("/v{}{path}", self.api);
        let (head, body) = self.open(method, &target, headers, None, true)?;
        expect(head.status, body, &[200])
    }
}

/// `body` when `status` is one of `ok`, else Docker's error with its message.
fn expect(status: u16, body: Body, ok: &[u16]) -> Result<Body, Error> {
    if ok.contains(&status) {
        return Ok(body);
    }
    let call = body.call().to_owned();
    #[derive(serde::Deserialize)]
    struct Message {
        message: String,
    }
    let message = match body.read_to_vec(ERROR_BODY_LIMIT) {
        Ok(text) => serde_json::from_slice::<Message>(&text)
            .map(|m| m.message)
            .unwrap_or_else(|_| snippet(&text)),
        Err(e) => format!("(the message could not be read: {e})"),
    };
    Err(Error::Docker {
        call,
        status,
        message,
    })
}

/// The start of `bytes` as text, for messages.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    let text = text.trim();
    if bytes.len() > 200 {
        format!("{text:?}...")
    } else {
        format!("{text:?}")
    }
}
