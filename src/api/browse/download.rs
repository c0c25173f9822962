//! `get`: a regular file inside the root (FIFOs and devices are refused), sent as the answer's
//! body [`BUF`] bytes at a time, with a `Content-Type` from its extension and a
//! `Content-Disposition` naming it.

use super::BUF;
use crate::api::confine::Root;
use crate::api::conn::Conn;
use crate::api::{blocking, Next, PORTAINER_HEADERS};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use std::fs::File;
use std::io::{self, Read};

/// A regular file, opened for reading, and its size. FIFOs and devices are refused (reading
/// them could block or never end).
pub(super) fn open_file(root: &Root, path: &str) -> io::Result<(File, u64)> {
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
pub(super) async fn send_file(conn: &mut Conn, file: File, size: u64, name: &str) -> Next {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_names() {
        assert_eq!(content_type("notes.TXT"), "text/plain; charset=utf-8");
        assert_eq!(content_type("blob"), "application/octet-stream");
        assert_eq!(disposition("a b.txt"), "attachment; filename=\"a b.txt\"");
        assert_eq!(
            disposition("é\"x"),
            "attachment; filename=\"__x\"; filename*=UTF-8''%C3%A9%22x"
        );
    }
}
