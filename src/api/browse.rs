//! The volume browser and the host file browser, as the Go agent's `http/handler/browse/` and
//! `filesystem/filesystem.go` answer them: `ls`, `get`, `delete`, `rename` and `put` under
//! `/browse/` (volume in `?volumeID=`) and `/v1/browse/{volumeID}/`. With a volume, paths are
//! inside its `Mountpoint` as Docker reports it; without one, the UI's `/host/...` paths are the
//! host's `/...` (unless `EDGE_HOST_BROWSER=false`). Every path goes through [`confine`].
//!
//! File system calls run on tokio's blocking threads, each bounded by [`super::BLOCKING_TIMEOUT`] (a hung
//! mount costs a thread, not the tunnel). Downloads and uploads move through one buffer of
//! [`BUF`] bytes. An upload is written to a staging file in the agent's data folder (the UI
//! sends the file before the target folder), then renamed into place (copied first when the
//! target is another file system): the old file stays whole until the new one is complete.

use super::confine::{self, Resolver, Root, Scope};
use super::conn::{Body, Conn};
use super::multipart::{self, Event, Parser};
use super::{blocking, method_not_allowed, reply, respond, Next, PORTAINER_HEADERS};
use crate::docker::{Client, Limits};
use crate::http1::{self, Framing, RequestHead};
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, Mode, SFlag};
use nix::unistd::{fchown, unlinkat, Gid, Uid, UnlinkatFlags};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One download's or upload's buffer.
const BUF: usize = 64 * 1024;
/// The largest directory listing (about 40,000 entries).
const MAX_LISTING: usize = 4 * 1024 * 1024;
/// The largest form field (`Path`) and JSON body (`rename`).
const MAX_FIELD: usize = 4096;
const MAX_JSON: usize = 64 * 1024;
/// An upload never leaves less than this free on the file system it is written to.
const RESERVE: u64 = 16 * 1024 * 1024;
/// What may follow the multipart body's last boundary before the connection is given up.
const MAX_EPILOGUE: usize = 64 * 1024;

pub struct Browser {
    /// `EDGE_HOST_BROWSER`.
    pub host: bool,
    /// `EDGE_UPLOAD_MAX`.
    pub upload_max: u64,
    /// Uploads in progress, `<DATA_PATH>/uploads`.
    pub staging: PathBuf,
    pub docker: PathBuf,
}

impl Browser {
    /// Removes what uploads cut short by a crash or power cut left behind.
    pub fn clean_staging(&self) {
        let Ok(entries) = std::fs::read_dir(&self.staging) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(STAGED) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

const STAGED: &str = "upload-";

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

/// One entry of a listing (`filesystem.FileInfo`): `Size` and `ModTime` (Unix seconds) of the
/// entry itself, a symbolic link included.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct FileInfo<'a> {
    name: &'a str,
    size: i64,
    dir: bool,
    mod_time: i64,
}

fn list(root: &Root, path: &str) -> io::Result<Vec<u8>> {
    let fd = root.open_path(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let at = fd.try_clone()?;
    let mut dir = nix::dir::Dir::from_fd(fd)?;
    let mut out = b"[".to_vec();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        // An entry removed meanwhile is left out.
        let Ok(st) = fstatat(&at, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        if out.len() > 1 {
            out.push(b',');
        }
        // `time_t` is 32 bits on 32-bit musl targets.
        #[allow(clippy::useless_conversion)]
        let mod_time: i64 = st.st_mtime.into();
        let info = FileInfo {
            name: &name.to_string_lossy(),
            size: st.st_size,
            dir: SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR,
            mod_time,
        };
        serde_json::to_writer(&mut out, &info).map_err(io::Error::other)?;
        if out.len() > MAX_LISTING {
            return Err(io::Error::other(format!(
                "the listing is larger than {} MiB",
                MAX_LISTING >> 20
            )));
        }
    }
    out.push(b']');
    Ok(out)
}

/// A regular file, opened for reading, and its size. FIFOs and devices are refused (reading
/// them could block or never end).
fn open_file(root: &Root, path: &str) -> io::Result<(File, u64)> {
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let file = File::from(root.open_path(path, flags)?);
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(Errno::EISDIR.into());
    }
    if !meta.is_file() {
        return Err(io::Error::from_raw_os_error(nix::libc::EINVAL));
    }
    Ok((file, meta.len()))
}

/// The file as the answer's body, [`BUF`] bytes at a time.
async fn send_file(conn: &mut Conn, file: File, size: u64, name: &str) -> Next {
    let head = format!(
        "HTTP/1.1 200 OK\r\n{PORTAINER_HEADERS}Content-Type: {}\r\nContent-Length: {size}\r\nContent-Disposition: {}\r\n\r\n",
        content_type(name),
        disposition(name),
    );
    if conn.write(head.as_bytes()).await.is_err() {
        return Next::Close;
    }
    let mut buf = vec![0u8; BUF];
    let mut file = file;
    let mut left = size;
    while left > 0 {
        let want = left.min(BUF as u64) as usize;
        let read = blocking(move || {
            let n = file.read(&mut buf[..want]);
            (file, buf, n)
        })
        .await;
        let n = match read {
            Ok((f, b, Ok(n))) if n > 0 => {
                (file, buf) = (f, b);
                n
            }
            // Shrunk, unreadable or hung: the answer cannot be completed.
            _ => return Next::Close,
        };
        if conn.write(&buf[..n]).await.is_err() {
            return Next::Close;
        }
        left -= n as u64;
    }
    Next::KeepAlive
}

/// By extension (the common types of Go's `mime` table), else bytes.
fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("txt" | "log" | "conf" | "cfg" | "ini" | "env" | "md") => "text/plain; charset=utf-8",
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("xml") => "text/xml; charset=utf-8",
        Some("yml" | "yaml") => "application/yaml",
        Some("csv") => "text/csv; charset=utf-8",
        Some("pdf") => "application/pdf",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("webp") => "image/webp",
        Some("gz" | "tgz") => "application/gzip",
        Some("tar") => "application/x-tar",
        Some("zip") => "application/zip",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// `attachment` with the name: plain ASCII in `filename`, the exact name in `filename*`.
fn disposition(name: &str) -> String {
    let plain: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    if plain == name {
        return format!("attachment; filename=\"{plain}\"");
    }
    let mut exact = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            exact.push(char::from(b));
        } else {
            exact.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{plain}\"; filename*=UTF-8''{exact}")
}

/// `os.Remove`: a file, a link (not what it points to) or an empty folder.
fn remove(root: &Root, path: &str) -> io::Result<()> {
    let (dir, name) = root.parent(path)?;
    match unlinkat(&dir, name.as_str(), UnlinkatFlags::NoRemoveDir) {
        Err(Errno::EISDIR) => Ok(unlinkat(&dir, name.as_str(), UnlinkatFlags::RemoveDir)?),
        other => Ok(other?),
    }
}

/// `os.Rename`: replaces a file at `to`; links are moved, not followed.
fn rename(root: &Root, from: &str, to: &str) -> io::Result<()> {
    let (from_dir, from_name) = root.parent(from)?;
    let (to_dir, to_name) = root.parent(to)?;
    Ok(renameat(
        &from_dir,
        from_name.as_str(),
        &to_dir,
        to_name.as_str(),
    )?)
}

/// What the multipart body said.
struct Upload {
    file: File,
    filename: Option<String>,
    path: Option<String>,
}

async fn put(
    browser: &Browser,
    conn: &mut Conn,
    head: &RequestHead,
    root: Arc<Root>,
    in_volume: bool,
    changed: &str,
) -> Result<Next, Failure> {
    let op = Op::Put;
    let io_error = |e: io::Error| Failure::new(500, op.message(), e.to_string());
    let framing = head.body().map_err(|e| Failure::payload(e.to_string()))?;
    if framing == Framing::None {
        return Err(Failure::payload("http: no such file"));
    }
    let boundary = multipart::boundary(head.header("Content-Type").unwrap_or_default())
        .map_err(|e| Failure::payload(e.to_string()))?;
    let staging = browser.staging.clone();
    let (staged_name, file, free) = blocking(move || stage(&staging))
        .await
        .map_err(io_error)?
        .map_err(io_error)?;
    let limit = browser.upload_max.min(free.saturating_sub(RESERVE));
    let too_large = |what: String| Failure::new(413, "File too large", what);
    let over = |limit: u64| {
        if limit == browser.upload_max {
            format!("the file is larger than EDGE_UPLOAD_MAX ({limit} bytes)")
        } else {
            format!(
                "the file is larger than the space left in {} ({limit} bytes, keeping {} MiB free)",
                browser.staging.display(),
                RESERVE >> 20
            )
        }
    };
    let received = match framing {
        // The body is the file and a few hundred bytes of form around it.
        Framing::Length(n)
            if n > limit + 2 * multipart::MAX_PART_HEAD as u64 + MAX_FIELD as u64 =>
        {
            Err(too_large(over(limit)))
        }
        _ => receive(conn, framing, &boundary, file, limit)
            .await
            .map_err(|e| match e {
                Received::TooLarge => too_large(over(limit)),
                Received::Failed(f) => f,
            }),
    };
    let staged = browser.staging.join(&staged_name);
    let (upload, next) = match received {
        Ok(done) => done,
        Err(f) => {
            let _ = blocking(move || std::fs::remove_file(staged)).await;
            return Err(f);
        }
    };
    let outcome = place(root, in_volume, upload, staged.clone()).await;
    if outcome.is_err() {
        let _ = blocking(move || std::fs::remove_file(staged)).await;
    }
    let written = outcome.map_err(|f| f.then(next))?;
    log::info!("file browser: wrote {written} in {changed}");
    respond(conn, 204, "", next).await.map_err(io_error)
}

/// A new staging file, and the free space where it is.
fn stage(staging: &Path) -> io::Result<(String, File, u64)> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(staging)?;
    let name = format!("{STAGED}{:016x}", crate::system::random::u64());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(staging.join(&name))?;
    let free = free_space(&file)?;
    Ok((name, file, free))
}

fn free_space(fd: impl std::os::fd::AsFd) -> io::Result<u64> {
    let st = nix::sys::statvfs::fstatvfs(fd)?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

enum Received {
    TooLarge,
    Failed(Failure),
}

/// Reads the multipart body: the part `file` into `file`, at most `limit` bytes; the field
/// `Path`. Other parts are read and dropped.
async fn receive(
    conn: &mut Conn,
    framing: Framing,
    boundary: &str,
    file: File,
    limit: u64,
) -> Result<(Upload, Next), Received> {
    #[derive(PartialEq)]
    enum Into {
        File,
        Path,
        Nothing,
    }
    let bad = |e: multipart::Error| Received::Failed(Failure::payload(e.to_string()));
    let broken = |e: io::Error| {
        Received::Failed(Failure::payload(format!("the request body broke off: {e}")))
    };
    let mut body = Body::new(framing);
    let mut parser = Parser::new(boundary);
    let mut buf = Vec::with_capacity(BUF);
    let mut upload = Upload {
        file,
        filename: None,
        path: None,
    };
    let mut into = Into::Nothing;
    let mut field = Vec::new();
    let mut size = 0u64;
    let mut at_end = false;
    loop {
        let (used, event) = parser.feed(&buf, at_end).map_err(bad)?;
        match event {
            Event::More if used == 0 => {
                if buf.len() == BUF {
                    return Err(bad(multipart::Error::PartHeadTooLarge));
                }
                let room = BUF - buf.len();
                if body.read(conn, &mut buf, room).await.map_err(broken)? == 0 {
                    at_end = true;
                }
            }
            Event::More => {}
            Event::PartEnd => {
                if into == Into::Path {
                    upload.path = Some(String::from_utf8_lossy(&field).into_owned());
                }
                into = Into::Nothing;
            }
            Event::Part(part) => {
                into = if part.name == "file"
                    && part.filename.is_some()
                    && upload.filename.is_none()
                {
                    upload.filename = part.filename;
                    Into::File
                } else if part.name == "Path" && upload.path.is_none() {
                    Into::Path
                } else {
                    Into::Nothing
                };
            }
            Event::Data(range) => match into {
                Into::File => {
                    size += range.len() as u64;
                    if size > limit {
                        return Err(Received::TooLarge);
                    }
                    let (mut f, b) = (upload.file, buf);
                    let (f, b, written) = blocking(move || {
                        let written = f.write_all(&b[range]);
                        (f, b, written)
                    })
                    .await
                    .map_err(|e| {
                        Received::Failed(Failure::new(500, Op::Put.message(), e.to_string()))
                    })?;
                    (upload.file, buf) = (f, b);
                    written.map_err(|e| Received::Failed(Failure::fs(Op::Put, e)))?;
                }
                Into::Path => {
                    field.extend_from_slice(&buf[range]);
                    if field.len() > MAX_FIELD {
                        return Err(Received::Failed(Failure::payload(format!(
                            "the Path field is longer than {MAX_FIELD} bytes"
                        ))));
                    }
                }
                Into::Nothing => {}
            },
            Event::End => break,
        }
        buf.drain(..used);
    }
    // An epilogue, if any, is read off (a little of it) so the connection can go on.
    let mut rest = Vec::new();
    let mut next = Next::KeepAlive;
    loop {
        rest.clear();
        match body.read(conn, &mut rest, BUF).await {
            Ok(0) => break,
            Ok(n) if n <= MAX_EPILOGUE => {}
            _ => {
                next = Next::Close;
                break;
            }
        }
    }
    Ok((upload, next))
}

/// Moves the staged upload to `Path`/`filename`, in place of what was there (whose mode and
/// owner it takes), creating the folders that are missing. Returns where it went.
async fn place(
    root: Arc<Root>,
    in_volume: bool,
    upload: Upload,
    staged: PathBuf,
) -> Result<String, Failure> {
    let op = Op::Put;
    let Some(filename) = upload.filename else {
        return Err(Failure::payload("http: no such file"));
    };
    let Some(path) = upload.path else {
        return Err(Failure::payload("invalid file path"));
    };
    if matches!(filename.as_str(), "" | "." | "..") || filename.len() > 255 {
        return Err(Failure::new(
            400,
            "Invalid filename",
            format!("{filename:?} is not a file name"),
        ));
    }
    let dir_path = inside(in_volume, &path);
    let written = format!("{}/{filename}", dir_path.trim_end_matches('/'));
    let file = upload.file;
    blocking(move || move_into(&root, &dir_path, &filename, file, &staged))
        .await
        .map_err(|e| Failure::new(500, op.message(), e.to_string()))?
        .map_err(|e| Failure::fs(op, e))?;
    Ok(written)
}

fn move_into(root: &Root, dir_path: &str, name: &str, file: File, staged: &Path) -> io::Result<()> {
    file.sync_all()?;
    let dir = root.create_dirs(dir_path)?;
    let (mode, owner) = match fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
            return Err(Errno::EISDIR.into())
        }
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG => {
            (st.st_mode & 0o7777, Some((st.st_uid, st.st_gid)))
        }
        _ => (0o644, None),
    };
    let adopt = |f: &File| -> io::Result<()> {
        fchmod(f, Mode::from_bits_truncate(mode))?;
        if let Some((uid, gid)) = owner {
            fchown(f, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
        }
        Ok(())
    };
    adopt(&file)?;
    let staging_dir = nix::fcntl::open(
        staged.parent().unwrap_or(Path::new("/")),
        confine::dir_flags(),
        Mode::empty(),
    )?;
    let staged_name = staged.file_name().unwrap_or_default();
    match renameat(&staging_dir, staged_name, &dir, name) {
        Ok(()) => return sync_dir(&dir),
        Err(Errno::EXDEV) => {}
        Err(e) => return Err(e.into()),
    }
    // Another file system: a copy next to the target, then the same rename.
    let size = file.metadata()?.len();
    let copy_name = format!(
        ".{name}.edge-agent-{:08x}",
        crate::system::random::u64() as u32
    );
    let copy_fd: OwnedFd = openat(
        &dir,
        copy_name.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    let mut copy = File::from(copy_fd);
    let copied = (|| -> io::Result<()> {
        if free_space(&copy)?.saturating_sub(RESERVE) < size {
            return Err(Errno::ENOSPC.into());
        }
        let mut source = File::open(staged)?;
        let mut buf = vec![0u8; BUF];
        loop {
            let n = source.read(&mut buf)?;
            if n == 0 {
                break;
            }
            copy.write_all(&buf[..n])?;
        }
        copy.sync_all()?;
        adopt(&copy)?;
        renameat(&dir, copy_name.as_str(), &dir, name)?;
        Ok(())
    })();
    if copied.is_err() {
        let _ = unlinkat(&dir, copy_name.as_str(), UnlinkatFlags::NoRemoveDir);
        return copied;
    }
    std::fs::remove_file(staged)?;
    sync_dir(&dir)
}

/// Makes a rename in `dir` last through a power cut.
fn sync_dir(dir: &OwnedFd) -> io::Result<()> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    File::from(fd).sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// An upload staged in `staging` replaces a longer file in `target`, whole.
    fn replaces_whole(staging: &Path, target: &Path) {
        std::fs::write(target.join("f"), vec![b'A'; 10_000]).unwrap();
        std::fs::set_permissions(target.join("f"), std::fs::Permissions::from_mode(0o604)).unwrap();
        let (name, mut file, _) = stage(staging).unwrap();
        file.write_all(b"new").unwrap();
        let root = Root::open(target, Scope::Beneath, Resolver::detect()).unwrap();
        move_into(&root, "/", "f", file, &staging.join(&name)).unwrap();
        assert_eq!(std::fs::read(target.join("f")).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(target.join("f")).unwrap().mode() & 0o7777,
            0o604
        );
        assert_eq!(
            std::fs::read_dir(staging).unwrap().count(),
            0,
            "staged file gone"
        );
        assert_eq!(
            std::fs::read_dir(target).unwrap().count(),
            1,
            "no copy left"
        );
    }

    #[test]
    fn uploads_replace_files_by_rename_or_across_file_systems() {
        let data = tempfile::tempdir().unwrap();
        let staging = data.path().join("uploads");
        let same = tempfile::tempdir().unwrap();
        replaces_whole(&staging, same.path());
        // /dev/shm is a tmpfs on Linux: another file system than the temporary folder.
        let other = tempfile::tempdir_in("/dev/shm").unwrap();
        let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
        assert_ne!(dev(other.path()), dev(data.path()), "need two file systems");
        replaces_whole(&staging, other.path());
    }

    #[test]
    fn host_paths_and_names() {
        assert_eq!(inside(false, "/host/etc/hosts"), "/etc/hosts");
        assert_eq!(inside(false, "/host"), "");
        assert_eq!(inside(false, "/hostname"), "/hostname");
        assert_eq!(inside(true, "/host/x"), "/host/x");
        assert_eq!(content_type("notes.TXT"), "text/plain; charset=utf-8");
        assert_eq!(content_type("blob"), "application/octet-stream");
        assert_eq!(disposition("a b.txt"), "attachment; filename=\"a b.txt\"");
        assert_eq!(
            disposition("é\"x"),
            "attachment; filename=\"__x\"; filename*=UTF-8''%C3%A9%22x"
        );
    }
}
