//! A Docker 29 in front of the real engine: a Unix socket that checks every request's API
//! version as Docker 29's version middleware does (moby/moby, api/server/middleware/version.go,
//! `VersionMiddleware.WrapHandler`: below 1.44 or above 1.52 is a 400 with Docker's message, no
//! prefix means 1.52), answers `/_ping` and `/version` as Docker 29 does, and forwards the rest
//! to the real engine with the prefix moved to `/v1.41` (Debian 12's Docker 20.10 speaks no
//! newer; the calls the agent makes mean the same at both). Every request is recorded with the
//! status it got, so a test can prove that the agent only ever sent what Docker 29 takes.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub const MIN: (u16, u16) = (1, 44);
pub const MAX: (u16, u16) = (1, 52);

/// One request as Docker 29 saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// As sent, query included.
    pub target: String,
    pub status: u16,
}

impl Seen {
    /// The `/vX.Y` prefix, if any.
    pub fn version(&self) -> Option<(u16, u16)> {
        let rest = self.target.strip_prefix("/v")?;
        let (major, rest) = rest.split_once('.')?;
        let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
        Some((major.parse().ok()?, minor.parse().ok()?))
    }
}

pub struct Docker29 {
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Docker29 {
    pub fn start() -> Docker29 {
        super::docker::engine();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let recorded = recorded.clone();
                std::thread::spawn(move || serve(client, recorded));
            }
        });
        Docker29 {
            _dir: dir,
            socket,
            seen,
        }
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Asserts that Docker 29 refused nothing, and that every request but `unversioned` ones
    /// (paths starting with one of them) named a version it accepts. Returns how many there were.
    pub fn assert_all_accepted(&self, unversioned: &[&str]) -> usize {
        let seen = self.seen();
        for s in &seen {
            assert!(
                s.status < 400 || s.status == 404,
                "Docker 29 answered {} to {} {}; all: {seen:#?}",
                s.status,
                s.method,
                s.target
            );
            match s.version() {
                Some(v) => assert!(v >= MIN && v <= MAX, "{s:?}"),
                None => assert!(
                    unversioned.iter().any(|p| s.target.starts_with(p)),
                    "unversioned: {s:?}"
                ),
            }
        }
        seen.len()
    }
}

/// Docker 29's answer for a version it refuses, else `None`.
fn refusal(version: Option<(u16, u16)>) -> Option<String> {
    let (major, minor) = version?;
    let message = if (major, minor) < MIN {
        format!("client version {major}.{minor} is too old. Minimum supported API version is {}.{}, please upgrade your client to a newer version", MIN.0, MIN.1)
    } else if (major, minor) > MAX {
        format!(
            "client version {major}.{minor} is too new. Maximum supported API version is {}.{}",
            MAX.0, MAX.1
        )
    } else {
        return None;
    };
    Some(serde_json::json!({ "message": message }).to_string())
}

fn serve(mut client: UnixStream, recorded: Arc<Mutex<Vec<Seen>>>) {
    let Some(text) = super::docker::request_head(&mut client) else {
        return;
    };
    let mut parts = text.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut seen = Seen {
        method,
        target,
        status: 0,
    };
    let unversioned = match seen.version() {
        Some(_) => seen.target.splitn(3, '/').nth(2).unwrap_or_default(),
        None => seen.target.trim_start_matches('/'),
    }
    .to_owned();
    let path = unversioned.split('?').next().unwrap_or_default();
    let own = if let Some(body) = refusal(seen.version()) {
        Some((400, "application/json", body))
    } else if path == "_ping" {
        Some((200, "text/plain; charset=utf-8", "OK".to_owned()))
    } else if path == "version" {
        Some((200, "application/json", version_json()))
    } else {
        None
    };
    if let Some((status, content_type, body)) = own {
        seen.status = status;
        recorded.lock().unwrap().push(seen);
        let answer = format!(
            "HTTP/1.1 {status} {}\r\nApi-Version: {}.{}\r\nServer: Docker/29.1.2 (linux)\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            if status == 200 { "OK" } else { "Bad Request" },
            MAX.0,
            MAX.1,
            body.len()
        );
        let _ = client.write_all(answer.as_bytes());
        return;
    }
    // To the real engine, at the version it speaks.
    let rewritten = text.replacen(&seen.target, &format!("/v1.41/{unversioned}"), 1);
    let Ok(mut docker) = UnixStream::connect(super::docker::socket()) else {
        return;
    };
    if docker.write_all(rewritten.as_bytes()).is_err() {
        return;
    }
    let (Ok(mut from_docker), Ok(mut to_client)) = (docker.try_clone(), client.try_clone()) else {
        return;
    };
    let index = {
        let mut all = recorded.lock().unwrap();
        all.push(seen);
        all.len() - 1
    };
    let back = std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        let mut first = true;
        while let Ok(n) = from_docker.read(&mut buf) {
            if n == 0 || to_client.write_all(&buf[..n]).is_err() {
                break;
            }
            if first {
                first = false;
                let line = String::from_utf8_lossy(&buf[..n.min(16)]).into_owned();
                recorded.lock().unwrap()[index].status = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            }
        }
        let _ = to_client.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut client, &mut docker);
    let _ = docker.shutdown(std::net::Shutdown::Write);
    let _ = back.join();
}

/// `GET /version` as Docker 29.1 answers it, trimmed.
fn version_json() -> String {
    serde_json::json!({
        "Platform": {"Name": "Docker Engine - Community"},
        "Components": [
            {"Name": "Engine", "Version": "29.1.2", "Details": {"ApiVersion": "1.52", "MinAPIVersion": "1.44", "Os": "linux"}},
            {"Name": "containerd", "Version": "v2.2.0", "Details": {}},
        ],
        "Version": "29.1.2",
        "ApiVersion": "1.52",
        "MinAPIVersion": "1.44",
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": "6.1.0",
    })
    .to_string()
}
