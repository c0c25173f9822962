//! A fake Docker Engine on a Unix socket in a temporary folder, answering scripted bytes, for
//! what a real engine will not do on demand: bad framing, stalls, resets. Requests are
//! recorded.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What the server does with one request.
pub enum Reply {
    /// Reads the whole request, writes these bytes and closes.
    Close(Vec<u8>),
    /// Reads the whole request, writes these bytes, then waits for the client to hang up.
    Stall(Vec<u8>),
    /// Reads only the request line, writes these bytes and closes with the rest of the request
    /// unread: the client's next read fails with "connection reset".
    Reset(Vec<u8>),
    /// Reads the whole request, writes this head, then `size` bytes of chunked body in 8 KiB
    /// chunks (as long as the client reads), then the last chunk.
    Endless { head: Vec<u8>, size: usize },
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct FakeDocker {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    requests: Arc<Mutex<Vec<Request>>>,
}

type Script = dyn Fn(&str, &str) -> Reply + Send + Sync;

impl FakeDocker {
    /// Serves until dropped (the listener thread ends with the test process). `script` gets
    /// the method and path of every request.
    pub fn start(script: impl Fn(&str, &str) -> Reply + Send + Sync + 'static) -> FakeDocker {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let recorded = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (script, recorded) = (script.clone(), recorded.clone());
                std::thread::spawn(move || serve(stream, &*script, &recorded));
            }
        });
        FakeDocker {
            _dir: dir,
            socket,
            requests,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The requests read in full, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// `GET /_ping` as Docker answers it, with this `API-Version`.
pub fn ping(api_version: &str) -> Reply {
    Reply::Close(
        format!("HTTP/1.1 200 OK\r\nApi-Version: {api_version}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\r\nOK")
            .into_bytes(),
    )
}

/// A complete answer with a `Content-Length` body.
pub fn answer(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A head announcing a chunked body.
pub fn chunked_head(content_type: &str) -> String {
    format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n")
}

/// `data` as one chunk.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

fn serve(mut stream: UnixStream, script: &Script, recorded: &Mutex<Vec<Request>>) {
    // The request line, a byte at a time so nothing after it is read yet.
    let mut line = Vec::new();
    let mut byte = [0u8];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => return,
        }
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let reply = script(&method, &path);
    if let Reply::Reset(bytes) = reply {
        let _ = stream.write_all(&bytes);
        return;
    }
    let (headers, body) = read_rest(&mut stream);
    recorded.lock().unwrap().push(Request {
        method,
        path,
        headers,
        body,
    });
    match reply {
        Reply::Close(bytes) => {
            let _ = stream.write_all(&bytes);
        }
        Reply::Stall(bytes) => {
            let _ = stream.write_all(&bytes);
            let _ = stream.read(&mut byte);
        }
        Reply::Endless { head, size } => {
            let _ = stream.write_all(&head);
            let piece = chunk(&[b'x'; 8192]);
            let mut sent = 0;
            while sent < size {
                if stream.write_all(&piece).is_err() {
                    return;
                }
                sent += 8192;
            }
            let _ = stream.write_all(b"0\r\n\r\n");
        }
        Reply::Reset(_) => {}
    }
}

/// The header lines after the request line and a `Content-Length` body.
fn read_rest(stream: &mut UnixStream) -> (Vec<(String, String)>, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") && head != b"\r\n" {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let headers: Vec<(String, String)> = String::from_utf8_lossy(&head)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    let _ = stream.read_exact(&mut body);
    (headers, body)
}
