//! The key setup page of a prestaged device: with `EDGE_SETUP_PAGE=true` and no Edge key
//! (neither configured nor saved), `run` serves the Go agent's page on plain HTTP at
//! `EDGE_SERVER_HOST:EDGE_SERVER_PORT` (portainer/agent `edge/http/edge.go`,
//! `static/index.html`, `cmd/agent/main.go`): `GET /` is a form posting `key` to `POST /init`.
//! A valid key is saved, answered with the Go agent's `Agent setup OK. You can close this page.`,
//! and the page closes; it also closes after [`LIMIT`] without one. [`answer`] is the pure part,
//! [`wait_for_key`] the I/O: one connection at a time, each request bounded in size and time.

use crate::config::edge_key::EdgeKey;
use crate::http1::{self, Framing, RequestHead};
use crate::system::signals::Termination;
use crate::system::systemd::Notifier;
use nix::sys::signal::Signal;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// How long the page stays open without a key: the Go agent's `DefaultEdgeSecurityShutdown`
/// (`agent.go`), not a setting there either.
pub const LIMIT: Duration = Duration::from_secs(15 * 60);
/// Most bytes of a request head.
const MAX_HEAD: usize = 8 * 1024;
/// Most bytes of a request body: the form holds one Edge key, about 200 characters.
const MAX_BODY: u64 = 8 * 1024;
/// How long one request may take to arrive, and its answer to leave.
const REQUEST_TIME: Duration = Duration::from_secs(10);
/// How long, and how many bytes at most, a refused request is read on after its answer.
const LINGER: Duration = Duration::from_secs(1);
const MAX_LINGER: usize = 256 * 1024;
/// How often the idle page looks for a connection, a signal or the end of its time.
const IDLE_POLL: Duration = Duration::from_millis(100);

const SET_UP: &str = "Agent setup OK. You can close this page.";

/// An answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub html: bool,
    pub body: String,
    /// `Allow: POST` for a wrong method.
    pub allow: Option<&'static str>,
}

impl Reply {
    fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            html: false,
            body: body.to_owned(),
            allow: None,
        }
    }

    /// The page with its form, and `problem` above it when there is one.
    fn page(status: u16, problem: Option<&str>) -> Reply {
        let problem = problem.map_or(String::new(), |p| {
            format!("<p class=\"problem\">{}</p>\n", escape(p))
        });
        Reply {
            status,
            html: true,
            body: PAGE.replace("{problem}", &problem),
            allow: None,
        }
    }

    /// The problem the page shows (for the log).
    fn body_problem(&self) -> &str {
        self.body
            .split_once("<p class=\"problem\">")
            .and_then(|(_, rest)| rest.split_once("</p>"))
            .map_or(&self.body, |(problem, _)| problem)
    }

    /// The whole response; `head_only` for `HEAD`.
    pub fn bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n{}Connection: close\r\n\r\n",
            self.status,
            http1::reason(self.status),
            match self.html {
                true => "text/html; charset=utf-8",
                false => "text/plain; charset=utf-8",
            },
            self.body.len(),
            self.allow.map_or(String::new(), |a| format!("Allow: {a}\r\n")),
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// What a request asks of the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Reply(Reply),
    /// A valid Edge key (its text, trimmed): save it, then answer [`accepted`].
    Key {
        text: String,
        key: EdgeKey,
    },
}

/// The page's answer to a request whose whole body is `body`.
pub fn answer(head: &RequestHead, body: &[u8]) -> Answer {
    match (head.method.as_str(), head.path()) {
        ("GET" | "HEAD", "/" | "/index.html") => Answer::Reply(Reply::page(200, None)),
        ("POST", "/init") => key_from(head, body),
        (_, "/init") => Answer::Reply(Reply {
            allow: Some("POST"),
            ..Reply::text(405, "Method not allowed: send the form with POST")
        }),
        (_, "/" | "/index.html") => Answer::Reply(Reply {
            allow: Some("GET, HEAD"),
            ..Reply::text(405, "Method not allowed")
        }),
        _ => Answer::Reply(Reply::text(404, "404 page not found")),
    }
}

/// The answer once the key is saved: the Go agent's.
pub fn accepted() -> Reply {
    Reply::text(200, SET_UP)
}

/// The answer when a valid key cannot be saved.
pub fn not_saved(problem: &str) -> Reply {
    Reply::page(
        500,
        Some(&format!(
            "The Edge key is valid but the agent cannot save it: {problem}"
        )),
    )
}

/// `POST /init`: the form field `key`, from the body (`application/x-www-form-urlencoded`) or
/// else the query, as Go's `Request.ParseForm` and `Form.Get` read it.
fn key_from(head: &RequestHead, body: &[u8]) -> Answer {
    let form = head
        .header("Content-Type")
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let from_body = match form {
        true => std::str::from_utf8(body).ok().and_then(|b| field(b, "key")),
        false => None,
    };
    let from_query = || {
        head.target
            .split_once('?')
            .and_then(|(_, q)| field(q, "key"))
    };
    let text = match from_body.or_else(from_query) {
        Some(text) if !text.trim().is_empty() => text.trim().to_owned(),
        _ => return Answer::Reply(Reply::page(
            400,
            Some("Missing key parameter: paste the Edge key Portainer shows for this environment"),
        )),
    };
    match EdgeKey::decode(&text) {
        Ok(key) => Answer::Key { text, key },
        Err(e) => Answer::Reply(Reply::page(
            400,
            Some(&format!("The Edge key is not valid: {e}")),
        )),
    }
}

/// The first value of `name` in `a=1&b=2` (`+` is a space, `%XX` escapes decoded).
fn field(form: &str, name: &str) -> Option<String> {
    let decode = |s: &str| http1::percent_decode(&s.replace('+', " "));
    form.split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(n, _)| decode(n).as_deref() == Some(name))
        .and_then(|(_, v)| decode(v))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The Go agent's `static/index.html` and `main.css` in one page, without the logo.
const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Portainer Edge Agent</title>
<style>
body { font-family: sans-serif; display: flex; justify-content: center; margin-top: 20vh; }
.panel { width: 400px; max-width: 95vw; display: flex; flex-direction: column; align-items: center; }
form { display: flex; width: 100%; gap: 4px; }
input[type=text] { flex: 1; }
.problem { color: #b00020; }
</style>
</head>
<body>
<div class="panel">
<h1>Portainer Edge Agent</h1>
{problem}<form action="/init" method="post">
<input type="text" name="key" placeholder="Enter Edge agent key..." autofocus>
<input type="submit" value="Submit">
</form>
</div>
</body>
</html>
"#;

/// [`LIMIT`]; in debug builds (the tests') `TEST_SETUP_PAGE_LIMIT` (a Go duration) instead when
/// set, so that a test sees the page close without waiting 15 minutes. Release builds have no
/// such variable: the limit is not a setting, as in the Go agent.
pub fn limit() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(limit) = std::env::var("TEST_SETUP_PAGE_LIMIT")
        .ok()
        .and_then(|v| crate::config::duration::parse(&v).ok())
    {
        return limit;
    }
    LIMIT
}

/// How the page ended.
#[derive(Debug)]
pub enum Outcome {
    /// A valid key (its text), saved.
    Key(String),
    /// [`LIMIT`] (or the limit given) passed without one.
    TimedOut,
    /// SIGTERM or SIGINT.
    Stopped(Signal),
}

#[derive(Debug)]
pub enum Error {
    Listen { addr: SocketAddr, source: io::Error },
    Signals(nix::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Listen { addr, source } => {
                write!(f, "cannot open the key setup page on {addr} (EDGE_SERVER_HOST, EDGE_SERVER_PORT): {source}; ")?;
                match source.kind() {
                    io::ErrorKind::PermissionDenied => f.write_str("ports below 1024 need root or CAP_NET_BIND_SERVICE; run as root or choose another EDGE_SERVER_PORT"),
                    io::ErrorKind::AddrInUse => f.write_str("another program uses this port; choose another EDGE_SERVER_PORT"),
                    _ => f.write_str("set EDGE_SERVER_HOST to an address of this device (or 0.0.0.0)"),
                }
            }
            Error::Signals(e) => write!(f, "cannot look for termination signals: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// Serves the page at `addr` until a valid key comes (after `save` kept it), `limit` passes,
/// or SIGTERM/SIGINT. systemd hears that the agent is up (it is, waiting) and gets its watchdog
/// pings meanwhile. The port is closed on return.
pub fn wait_for_key(
    addr: SocketAddr,
    limit: Duration,
    (termination, notifier): (&Termination, &Notifier),
    mut save: impl FnMut(&str) -> Result<(), String>,
) -> Result<Outcome, Error> {
    let listen = |source| Error::Listen { addr, source };
    let listener = TcpListener::bind(addr).map_err(listen)?;
    listener.set_nonblocking(true).map_err(listen)?;
    let deadline = Instant::now() + limit;
    log::warn!(
        "no Edge key: waiting for one on the setup page at http://{addr}/ for {}; anyone who can reach it can enrol this device",
        crate::config::duration::display(limit)
    );
    notifier.ready();
    loop {
        notifier.watchdog();
        if let Some(signal) = termination.pending().map_err(Error::Signals)? {
            return Ok(Outcome::Stopped(signal));
        }
        if Instant::now() >= deadline {
            return Ok(Outcome::TimedOut);
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Some(key) = serve(stream, peer, &mut save) {
                    return Ok(Outcome::Key(key));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(IDLE_POLL),
            Err(e) => {
                log::warn!("setup page: cannot accept a connection: {e}");
                std::thread::sleep(IDLE_POLL);
            }
        }
    }
}

/// One request on `stream`: its answer, and the key when it brought a valid one that `save` kept.
fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    save: &mut impl FnMut(&str) -> Result<(), String>,
) -> Option<String> {
    let deadline = Instant::now() + REQUEST_TIME;
    let (head, body) = match read_request(&mut stream, deadline) {
        Ok(request) => request,
        Err(Cut { reply, why }) => {
            log::info!("setup page: request from {peer} refused: {why}");
            if let Some(reply) = reply {
                send(&mut stream, &reply, false);
                linger(&mut stream);
            }
            return None;
        }
    };
    let head_only = head.method == "HEAD";
    let (reply, saved) = match answer(&head, &body) {
        Answer::Reply(reply) => {
            if head.path() == "/init" && reply.status == 400 {
                log::warn!(
                    "setup page: {peer} sent no valid Edge key: {}",
                    reply.body_problem()
                );
            }
            (reply, None)
        }
        Answer::Key { text, key } => match save(&text) {
            Ok(()) => {
                if key.was_padded {
                    log::warn!("setup page: the Edge key from {peer} is padded base64 ('=' at the end); Portainer keys are unpadded and the Go agent refuses this one, accepted anyway");
                }
                log::info!(
                    "setup page: {peer} entered an Edge key for {} (endpoint {}), saved; the page is closed",
                    key.portainer_url,
                    key.endpoint_id.map_or("global".to_owned(), |id| id.to_string())
                );
                (accepted(), Some(text))
            }
            Err(e) => {
                log::error!("setup page: the Edge key from {peer} cannot be saved: {e}");
                (not_saved(&e), None)
            }
        },
    };
    send(&mut stream, &reply, head_only);
    saved
}

/// A request refused before it is answered: why, and what to answer if anything.
struct Cut {
    reply: Option<Reply>,
    why: String,
}

/// The head and whole body of one request, all by `deadline` and within the size limits.
fn read_request(stream: &mut TcpStream, deadline: Instant) -> Result<(RequestHead, Vec<u8>), Cut> {
    let cut = |reply: Option<Reply>, why: String| Cut { reply, why };
    let mut buf = Vec::new();
    let head = loop {
        match http1::parse_request_head(&buf, MAX_HEAD) {
            Ok(Some(head)) => break head,
            Ok(None) => read_more(stream, &mut buf, deadline)?,
            Err(e) => return Err(cut(Some(Reply::text(400, &e.to_string())), e.to_string())),
        }
    };
    let wanted = match head.body() {
        Ok(Framing::None) => 0,
        Ok(Framing::Length(n)) if n <= MAX_BODY => n as usize,
        Ok(Framing::Length(n)) => {
            let why = format!("a body of {n} bytes, more than {MAX_BODY}");
            return Err(cut(Some(Reply::text(413, &why)), why));
        }
        Ok(_) => {
            let why = "a body without Content-Length".to_owned();
            return Err(cut(
                Some(Reply::text(400, "send the form with Content-Length")),
                why,
            ));
        }
        Err(e) => return Err(cut(Some(Reply::text(400, &e.to_string())), e.to_string())),
    };
    while buf.len() < head.len + wanted {
        read_more(stream, &mut buf, deadline)?;
    }
    let body = buf[head.len..head.len + wanted].to_vec();
    Ok((head, body))
}

/// Appends what `stream` has next to `buf`, waiting no later than `deadline`.
fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Result<(), Cut> {
    let slow = || Cut {
        reply: None,
        why: format!("not sent within {}s", REQUEST_TIME.as_secs()),
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(slow());
    }
    let mut chunk = [0u8; 2048];
    let read = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(left)))
        .and_then(|()| stream.read(&mut chunk));
    match read {
        Ok(0) => Err(Cut {
            reply: None,
            why: "closed before the request was complete".to_owned(),
        }),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(slow())
        }
        Err(e) => Err(Cut {
            reply: None,
            why: e.to_string(),
        }),
    }
}

/// Reads and drops what the client still sends, a bounded amount for a bounded time, so that
/// closing with unread input (which resets the connection) does not destroy the answer sent.
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut drained = 0;
    let mut chunk = [0u8; 2048];
    while drained < MAX_LINGER {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

fn send(stream: &mut TcpStream, reply: &Reply, head_only: bool) {
    let sent = stream
        .set_write_timeout(Some(REQUEST_TIME))
        .and_then(|()| stream.write_all(&reply.bytes(head_only)));
    if let Err(e) = sent {
        log::info!("setup page: cannot send the answer: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn request(text: &str) -> (RequestHead, Vec<u8>) {
        let head = http1::parse_request_head(text.as_bytes(), MAX_HEAD)
            .unwrap()
            .unwrap();
        let body = text.as_bytes()[head.len..].to_vec();
        (head, body)
    }

    fn answer_to(text: &str) -> Answer {
        let (head, body) = request(text);
        answer(&head, &body)
    }

    fn reply_to(text: &str) -> Reply {
        match answer_to(text) {
            Answer::Reply(reply) => reply,
            Answer::Key { .. } => panic!("a key from {text}"),
        }
    }

    fn post(body: &str) -> String {
        format!(
            "POST /init HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn key(id: i64) -> String {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(format!("https://p.example:9443|p.example:8000|fp|{id}"))
    }

    #[test]
    fn the_page_is_the_go_agents_form() {
        let reply = reply_to("GET / HTTP/1.1\r\nHost: gw\r\n\r\n");
        assert_eq!((reply.status, reply.html), (200, true));
        assert!(
            reply
                .body
                .contains(r#"<form action="/init" method="post">"#)
                && reply.body.contains(r#"name="key""#)
                && !reply.body.contains("{problem}"),
            "{}",
            reply.body
        );
        let bytes = String::from_utf8(reply.bytes(true)).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 200 OK\r\n") && bytes.ends_with("\r\n\r\n"));
        assert!(bytes.contains(&format!("Content-Length: {}\r\n", reply.body.len())));
    }

    #[test]
    fn a_valid_key_from_the_form_or_the_query_is_taken_trimmed() {
        let encoded = key(3).replace('+', "%2B").replace('/', "%2F");
        for text in [
            post(&format!("other=1&key=+{encoded}%0A")),
            format!("POST /init?key={encoded} HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        ] {
            match answer_to(&text) {
                Answer::Key { text, key: k } => {
                    assert_eq!(text, key(3));
                    assert_eq!(k.endpoint_id, Some(3));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            String::from_utf8(accepted().bytes(false))
                .unwrap()
                .rsplit("\r\n\r\n")
                .next(),
            Some("Agent setup OK. You can close this page.")
        );
    }

    #[test]
    fn a_missing_or_wrong_key_is_shown_on_the_page() {
        let reply = reply_to(&post("key="));
        assert_eq!(reply.status, 400);
        assert!(
            reply.body.contains("Missing key parameter"),
            "{}",
            reply.body
        );
        let reply = reply_to(&post("key=not-a-key%3Cb%3E"));
        assert_eq!((reply.status, reply.html), (400, true));
        assert!(
            reply
                .body
                .contains("The Edge key is not valid: it is not base64")
                && reply.body.contains(r#"<form action="/init""#),
            "{}",
            reply.body
        );
        assert_eq!(
            reply.body_problem(),
            "The Edge key is not valid: it is not base64; copy the whole key from Portainer (Environments &gt; your Edge environment)"
        );
        let wrong = base64::engine::general_purpose::STANDARD_NO_PAD.encode("https://p|t:1|fp|<b>");
        let reply = reply_to(&post(&format!("key={wrong}")));
        assert_eq!(
            reply.body_problem(),
            "The Edge key is not valid: its endpoint id &quot;&lt;b&gt;&quot; is not an integer"
        );
        // A body that is not a form is not read, as in Go.
        let text =
            "POST /init HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nkey=x";
        assert_eq!(reply_to(text).status, 400);
    }

    #[test]
    fn other_routes_and_methods() {
        let reply = reply_to("GET /init HTTP/1.1\r\n\r\n");
        assert_eq!((reply.status, reply.allow), (405, Some("POST")));
        assert!(String::from_utf8(reply.bytes(false))
            .unwrap()
            .contains("\r\nAllow: POST\r\n"));
        assert_eq!(reply_to("DELETE / HTTP/1.1\r\n\r\n").status, 405);
        assert_eq!(reply_to("GET /main.css HTTP/1.1\r\n\r\n").status, 404);
        assert_eq!(reply_to("GET /../etc/passwd HTTP/1.1\r\n\r\n").status, 404);
    }

    #[test]
    fn a_key_that_cannot_be_saved_says_so() {
        let reply = not_saved("disk full");
        assert_eq!(reply.status, 500);
        assert!(reply.body_problem().ends_with("cannot save it: disk full"));
    }
}
