//! The response head (parsed by httparse) and how its body is framed (RFC 9112 §6.3, plus
//! Docker's hijacked attach/exec streams).

use super::{fields, Error, MAX_HEADERS};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// In the order received; values are UTF-8 with invalid bytes replaced.
    pub headers: Vec<(String, String)>,
    /// Bytes of the input the head took, blank line included: the body starts there.
    pub len: usize,
}

impl ResponseHead {
    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        fields::first(&self.headers, name)
    }
}

/// Parses a response head at the start of `buf`. `Ok(None)`: incomplete, read more (unless
/// `buf` already holds `limit` bytes, which is an error).
pub fn parse_response_head(buf: &[u8], limit: usize) -> Result<Option<ResponseHead>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let scanned = &buf[..buf.len().min(limit)];
    match response.parse(scanned) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(ResponseHead {
            status: response.code.unwrap_or_default(),
            headers: fields::collect(response.headers),
            len,
        })),
        Ok(httparse::Status::Partial) if scanned.len() >= limit => Err(Error::HeadTooLarge(limit)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(fields::malformed(e, buf)),
    }
}

/// How the body after a response head ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`: run it through a [`super::ChunkedDecoder`].
    Chunked,
    /// Everything until the server closes the connection.
    Close,
    /// The connection now carries another protocol in both directions: `101 Switching
    /// Protocols`, or Docker's hijacked attach/exec answer (a 2xx with `Connection: Upgrade`, or
    /// with a raw-stream content type and neither length nor transfer coding).
    Upgrade,
}

/// Docker's content types for hijacked and log streams.
const DOCKER_STREAMS: [&str; 2] = [
    "application/vnd.docker.raw-stream",
    "application/vnd.docker.multiplexed-stream",
];

/// The framing of the body that answers a `method` request with `head`.
pub fn framing(method: &str, head: &ResponseHead) -> Result<Framing, Error> {
    let status = head.status;
    if status == 101 {
        return Ok(Framing::Upgrade);
    }
    if (100..200).contains(&status) || status == 204 || status == 304 || method == "HEAD" {
        return Ok(Framing::None);
    }
    let chunked = fields::elements(&head.headers, "Transfer-Encoding").last();
    if (200..300).contains(&status) {
        let upgrade = fields::elements(&head.headers, "Connection")
            .any(|e| e.eq_ignore_ascii_case("upgrade"));
        let raw_stream = head.header("Content-Type").is_some_and(|t| {
            DOCKER_STREAMS
                .iter()
                .any(|s| t.trim().eq_ignore_ascii_case(s))
        });
        let unframed = chunked.is_none()
            && fields::elements(&head.headers, "Content-Length")
                .next()
                .is_none();
        if upgrade || (raw_stream && unframed) {
            return Ok(Framing::Upgrade);
        }
    }
    // A transfer coding wins over Content-Length; without chunked last, the body runs to close.
    if let Some(last) = chunked {
        return Ok(if last.eq_ignore_ascii_case("chunked") {
            Framing::Chunked
        } else {
            Framing::Close
        });
    }
    Ok(fields::content_length(&head.headers)?.map_or(Framing::Close, Framing::Length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> ResponseHead {
        parse_response_head(text.as_bytes(), 16 * 1024)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn parses_a_complete_head_and_leaves_the_body() {
        let text = "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK";
        let parsed = head(text);
        assert_eq!(parsed.status, 200);
        assert_eq!(parsed.header("api-version"), Some("1.41"));
        assert_eq!(parsed.header("Missing"), None);
        assert_eq!(&text[parsed.len..], "OK");
    }

    #[test]
    fn incomplete_head_asks_for_more_byte_by_byte() {
        let text = b"HTTP/1.1 204 No Content\r\nServer: Docker\r\n\r\n";
        for end in 0..text.len() {
            assert_eq!(parse_response_head(&text[..end], 1024), Ok(None), "{end}");
        }
        assert_eq!(
            parse_response_head(text, 1024).unwrap().unwrap().len,
            text.len()
        );
    }

    #[test]
    fn a_head_longer_than_the_limit_is_an_error() {
        let text = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(100));
        assert_eq!(
            parse_response_head(&text.as_bytes()[..64], 64),
            Err(Error::HeadTooLarge(64))
        );
        assert_eq!(
            parse_response_head(text.as_bytes(), 64),
            Err(Error::HeadTooLarge(64))
        );
        assert!(parse_response_head(text.as_bytes(), 200).unwrap().is_some());
    }

    #[test]
    fn garbage_is_malformed() {
        for garbage in [
            "SSH-2.0-OpenSSH_9.2\r\n",
            "HTTP/1.1 2x0 OK\r\n\r\n",
            "\u{0}\u{1}\u{2}",
        ] {
            let result = parse_response_head(garbage.as_bytes(), 1024);
            assert!(
                matches!(&result, Err(Error::MalformedHead(m)) if m.contains("starts with")),
                "{garbage:?}: {result:?}"
            );
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let text = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(matches!(
            parse_response_head(text.as_bytes(), 16 * 1024),
            Err(Error::MalformedHead(_))
        ));
    }

    #[test]
    fn framing_follows_method_status_and_headers() {
        let cases = [
            ("GET", "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n", Framing::Length(12)),
            ("GET", "HTTP/1.1 200 OK\r\nContent-Length: 12, 12\r\n", Framing::Length(12)),
            ("GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n", Framing::Chunked),
            // Transfer-Encoding wins over Content-Length.
            (
                "GET",
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, Chunked\r\n",
                Framing::Chunked,
            ),
            ("GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n", Framing::Close),
            ("GET", "HTTP/1.1 200 OK\r\n", Framing::Close),
            ("GET", "HTTP/1.0 500 Oops\r\n", Framing::Close),
            ("HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n", Framing::None),
            ("POST", "HTTP/1.1 204 No Content\r\n", Framing::None),
            ("POST", "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n", Framing::None),
            ("GET", "HTTP/1.1 100 Continue\r\n", Framing::None),
            ("GET", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: tcp\r\n", Framing::Upgrade),
            // Docker's hijack, with and without an upgrade requested.
            (
                "POST",
                "HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n",
                Framing::Upgrade,
            ),
            (
                "POST",
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n",
                Framing::Upgrade,
            ),
            (
                "POST",
                "HTTP/1.1 200 OK\r\nConnection: keep-alive, Upgrade\r\n",
                Framing::Upgrade,
            ),
            // Logs have the same content type, but are a chunked body.
            (
                "GET",
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\nTransfer-Encoding: chunked\r\n",
                Framing::Chunked,
            ),
            (
                "GET",
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/vnd.docker.raw-stream\r\n",
                Framing::Close,
            ),
        ];
        for (method, text, expected) in cases {
            let parsed = head(&format!("{text}\r\n"));
            assert_eq!(framing(method, &parsed), Ok(expected), "{method} {text:?}");
        }
    }

    #[test]
    fn bad_content_length_is_an_error() {
        for value in ["-1", "12a", "", "1, 2", "99999999999999999999999"] {
            let parsed = head(&format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\n"
            ));
            let result = framing("GET", &parsed);
            // An empty value has no element, so it is no length at all.
            if value.is_empty() {
                assert_eq!(result, Ok(Framing::Close));
            } else {
                assert!(
                    matches!(result, Err(Error::BadContentLength(_))),
                    "{value:?}: {result:?}"
                );
            }
        }
        let parsed = head("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(
            framing("GET", &parsed),
            Err(Error::BadContentLength("1, 2".into()))
        );
    }
}
