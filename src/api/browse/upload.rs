//! `put`: the multipart body's `file` part is written to a staging file, at most
//! `EDGE_UPLOAD_MAX` bytes and never leaving less than [`RESERVE`] free; its `Path` field names
//! the target folder, into which the staged file is then moved ([`super::staging`]). A failed
//! upload's staging file is removed.

use super::staging::{move_into, stage, RESERVE};
use super::{inside, Browser, Failure, Op, BUF};
use crate::api::confine::Root;
use crate::api::conn::{Body, Conn};
use crate::api::multipart::{self, Event, Parser};
use crate::api::{blocking, respond, Next};
use crate::http1::{Framing, RequestHead};
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// The largest form field (`Path`).
const MAX_FIELD: usize = 4096;
/// What may follow the multipart body's last boundary before the connection is given up.
const MAX_EPILOGUE: usize = 64 * 1024;

/// What the multipart body said.
struct Upload {
    file: File,
    filename: Option<String>,
    path: Option<String>,
}

pub(super) async fn put(
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
                // Filled up, so the file is written BUF bytes at a time: each write is a trip
                // to a blocking thread, which costs more than the write (a channel's reads are
                // 8 KiB).
                while buf.len() < BUF {
                    let room = BUF - buf.len();
                    if body.read(conn, &mut buf, room).await.map_err(broken)? == 0 {
                        at_end = true;
                        break;
                    }
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
