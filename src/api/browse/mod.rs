//! The volume browser and the host file browser, as the Go agent's `http/handler/browse/` and
//! `filesystem/filesystem.go` answer them: `ls`, `get`, `delete`, `rename` and `put` under
//! `/browse/` (volume in `?volumeID=`) and `/v1/browse/{volumeID}/`. With a volume, paths are
//! inside its `Mountpoint` as Docker reports it; without one, the UI's `/host/...` paths are the
//! host's `/...` (unless `EDGE_HOST_BROWSER=false`). Every path goes through [`confine`]. Here:
//! the routes, the root (a volume's or the host's) and the error answers; the operations are in
//! [`listing`], [`download`], [`entries`] (`delete`, `rename`) and [`upload`].
//!
//! File system calls run on tokio's blocking threads, each bounded by [`super::BLOCKING_TIMEOUT`] (a hung
//! mount costs a thread, not the tunnel). Downloads and uploads move through one buffer of
//! [`BUF`] bytes. An upload is written to a staging file in the agent's data folder (the UI
//! sends the file before the target folder), then renamed into place (copied first when the
//! target is another file system): the old file stays whole until the new one is complete
//! ([`staging`]).

mod download;
mod entries;
mod listing;
pub(crate) mod staging;
mod upload;

use super::confine::{self, Resolver, Root, Scope};
use super::conn::{Body, Conn};
use super::{blocking, method_not_allowed, reply, respond, Next};
use crate::docker::{Client, Limits};
use crate::http1::{self, Framing, RequestHead};
use download::{open_file, send_file};
use entries::{remove, rename};
use listing::list;
use serde::Deserialize;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use upload::put;

/// One download's or upload's buffer.
const BUF: usize = 64 * 1024;
/// The largest JSON body (`rename`).
const MAX_JSON: usize = 64 * 1024;

pub struct Browser {
    /// `EDGE_HOST_BROWSER`.
    pub host: bool,
    /// `EDGE_UPLOAD_MAX`.
    pub upload_max: u64,
    /// Uploads in progress, `<DATA_PATH>/uploads`.
    pub staging: PathBuf,
    pub docker: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Ls,
    Get,
    Delete,
    Rename,
    Put,
}

impl Op {
    /// Go's message for a failure of this operation.
    fn message(self) -> &'static str {
        match self {
            Op::Ls => "Unable to list files inside specified directory",
            Op::Get => "Unable to open file",
            Op::Delete => "Unable to remove file",
            Op::Rename => "Unable to rename file",
            Op::Put => "Error saving file to disk",
        }
    }
}

/// An error answer.
#[derive(Debug)]
struct Failure {
    status: u16,
    message: &'static str,
    details: String,
    /// Set once the request's body was read: the connection can go on.
    next: Option<Next>,
}

impl Failure {
    fn new(status: u16, message: &'static str, details: impl Into<String>) -> Failure {
        Failure {
            status,
            message,
            details: details.into(),
            next: None,
        }
    }

    /// The same, after the whole body was read.
    fn then(self, next: Next) -> Failure {
        Failure {
            next: Some(next),
            ..self
        }
    }

    fn payload(details: impl Into<String>) -> Failure {
        Failure::new(400, "Invalid request payload", details)
    }

    /// A file system error: an escape or a permission is `403`, a missing file `404`.
    fn fs(op: Op, e: io::Error) -> Failure {
        use nix::libc::*;
        let (status, details) = match e.raw_os_error() {
            _ if confine::is_escape(&e) => (
                403,
                "the path leads outside of the volume (through '..' or a symbolic link)".to_owned(),
            ),
            Some(EACCES | EPERM | EROFS) => (403, e.to_string()),
            Some(ENOENT | ENOTDIR) => (404, e.to_string()),
            Some(EINVAL | EISDIR | ENAMETOOLONG) => (400, e.to_string()),
            _ => (500, e.to_string()),
        };
        Failure::new(status, op.message(), details)
    }
}

pub async fn serve(
    browser: &Browser,
    conn: &mut Conn,
    head: &RequestHead,
    route: &str,
    v1: bool,
) -> io::Result<Next> {
    let after_error = match head.body() {
        Ok(Framing::None) => Next::KeepAlive,
        _ => Next::Close,
    };
    let rest = route.strip_prefix("/browse/").unwrap_or_default();
    let (volume, name) = if v1 {
        match rest.split_once('/') {
            Some((id, name)) => (http1::percent_decode(id), name),
            None => (None, rest),
        }
    } else {
        let id = head.query_decoded("volumeID").filter(|v| !v.is_empty());
        (id, rest)
    };
    let (op, method) = match name {
        "ls" => (Op::Ls, "GET"),
        "get" => (Op::Get, "GET"),
        "delete" => (Op::Delete, "DELETE"),
        "rename" => (Op::Rename, "PUT"),
        "put" => (Op::Put, "POST"),
        _ => {
            let details = format!("no route {route}");
            return reply(conn, 404, "Not found", &details, after_error).await;
        }
    };
    if head.method != method {
        return method_not_allowed(conn, after_error).await;
    }
    if v1 && volume.is_none() {
        let details = "Invalid volume identifier route variable";
        return reply(conn, 400, details, details, after_error).await;
    }
    let outcome = match root(browser, volume.as_deref(), op).await {
        Ok(root) => run(browser, conn, head, op, root, volume.as_deref()).await,
        Err(f) => Err(f),
    };
    match outcome {
        Ok(next) => Ok(next),
        Err(f) => {
            log::debug!(
                "agent API: {} {}: {}: {}",
                head.method,
                head.path(),
                f.message,
                f.details
            );
            let next = f.next.unwrap_or(after_error);
            reply(conn, f.status, f.message, &f.details, next).await
        }
    }
}

/// The volume's `Mountpoint`, or `/` for the host browser.
async fn root(browser: &Browser, volume: Option<&str>, op: Op) -> Result<Arc<Root>, Failure> {
    let (dir, scope) = match volume {
        Some(id) => {
            let socket = browser.docker.clone();
            let id = id.to_owned();
            let inspected = blocking(move || {
                Client::connect(socket, Limits::default()).and_then(|c| c.inspect_volume(&id))
            })
            .await
            .map_err(|e| Failure::new(500, op.message(), e.to_string()))?;
            let volume = inspected.map_err(|e| {
                let status = match &e {
                    crate::docker::Error::Docker { status: 404, .. } => 404,
                    _ => 500,
                };
                Failure::new(status, op.message(), e.to_string())
            })?;
            if !volume.mountpoint.starts_with('/') {
                let details = format!(
                    "volume {} (driver {}) has no local mount point",
                    volume.name, volume.driver
                );
                return Err(Failure::new(404, op.message(), details));
            }
            (PathBuf::from(volume.mountpoint), Scope::Beneath)
        }
        None if !browser.host => {
            return Err(Failure::new(
                403,
                "Host file browser is disabled",
                "EDGE_HOST_BROWSER=false on this device; volumes can still be browsed",
            ))
        }
        None => (PathBuf::from("/"), Scope::InRoot),
    };
    let opened = blocking(move || Root::open(&dir, scope, Resolver::detect())).await;
    match opened {
        Ok(Ok(root)) => Ok(Arc::new(root)),
        Ok(Err(e)) | Err(e) => Err(Failure::fs(op, e)),
    }
}

/// A path from the UI as one inside the root: the host browser's `/host/x` is `/x`.
fn inside(in_volume: bool, path: &str) -> String {
    if in_volume {
        return path.to_owned();
    }
    match path.strip_prefix("/host") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.to_owned(),
        _ => path.to_owned(),
    }
}

async fn run(
    browser: &Browser,
    conn: &mut Conn,
    head: &RequestHead,
    op: Op,
    root: Arc<Root>,
    volume: Option<&str>,
) -> Result<Next, Failure> {
    let in_volume = volume.is_some();
    // Changes are logged, one line each.
    let place = volume.map_or("the host".to_owned(), |v| format!("volume {v}"));
    let query_path = || match head.query_decoded("path") {
        Some(p) if !p.is_empty() => Ok(inside(in_volume, &p)),
        _ => Err(Failure::new(
            400,
            "Invalid query parameter: path",
            "Invalid query parameter: path",
        )),
    };
    let io_error = |e: io::Error| Failure::new(500, op.message(), e.to_string());
    match op {
        Op::Ls => {
            let path = query_path()?;
            let listing = blocking(move || list(&root, &path))
                .await
                .map_err(io_error)?
                .map_err(|e| Failure::fs(op, e))?;
            let body = String::from_utf8_lossy(&listing);
            respond(conn, 200, &body, Next::KeepAlive)
                .await
                .map_err(io_error)
        }
        Op::Get => {
            let path = query_path()?;
            let (file, size) = blocking(move || open_file(&root, &path))
                .await
                .map_err(io_error)?
                .map_err(|e| Failure::fs(op, e))?;
            let name = head
                .query_decoded("path")
                .and_then(|p| p.rsplit('/').next().map(str::to_owned))
                .unwrap_or_default();
            Ok(send_file(conn, file, size, &name).await)
        }
        Op::Delete => {
            let path = query_path()?;
            let removed = path.clone();
            blocking(move || remove(&root, &path))
                .await
                .map_err(io_error)?
                .map_err(|e| Failure::fs(op, e))?;
            log::info!("file browser: removed {removed} in {place}");
            respond(conn, 204, "", Next::KeepAlive)
                .await
                .map_err(io_error)
        }
        Op::Rename => {
            #[derive(Deserialize)]
            struct Payload {
                #[serde(rename = "CurrentFilePath", alias = "currentFilePath", default)]
                current: String,
                #[serde(rename = "NewFilePath", alias = "newFilePath", default)]
                new: String,
            }
            let framing = head.body().map_err(|e| Failure::payload(e.to_string()))?;
            let body = Body::new(framing)
                .read_all(conn, MAX_JSON)
                .await
                .map_err(|e| Failure::payload(e.to_string()))?;
            let keep = |f: Failure| f.then(Next::KeepAlive);
            let payload: Payload =
                serde_json::from_slice(&body).map_err(|e| keep(Failure::payload(e.to_string())))?;
            if payload.current.is_empty() {
                return Err(keep(Failure::payload("Current file path is invalid")));
            }
            if payload.new.is_empty() {
                return Err(keep(Failure::payload("New file path is invalid")));
            }
            let (from, to) = (
                inside(in_volume, &payload.current),
                inside(in_volume, &payload.new),
            );
            let what = format!("{from} to {to}");
            blocking(move || rename(&root, &from, &to))
                .await
                .map_err(|e| keep(io_error(e)))?
                .map_err(|e| keep(Failure::fs(op, e)))?;
            log::info!("file browser: renamed {what} in {place}");
            respond(conn, 204, "", Next::KeepAlive)
                .await
                .map_err(io_error)
        }
        Op::Put => put(browser, conn, head, root, in_volume, &place).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths() {
        assert_eq!(inside(false, "/host/etc/hosts"), "/etc/hosts");
        assert_eq!(inside(false, "/host"), "");
        assert_eq!(inside(false, "/hostname"), "/hostname");
        assert_eq!(inside(true, "/host/x"), "/host/x");
    }
}
