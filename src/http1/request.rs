//! The request head: request line, the caller's headers, `Content-Length` when there is a body.

use super::Error;

/// Appends `METHOD target HTTP/1.1`, the headers and `Content-Length` (when `content_length` is
/// set) and the blank line to `out`. The caller names every other header, `Host` included.
/// Refuses anything that would end a line early or split the request line.
pub fn write_request_head(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    content_length: Option<u64>,
) -> Result<(), Error> {
    if method.is_empty() || !method.bytes().all(is_token) {
        return Err(Error::InvalidRequest(format!("method {method:?}")));
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::InvalidRequest(format!("target {target:?}")));
    }
    for (name, value) in headers {
        if name.is_empty() || !name.bytes().all(is_token) {
            return Err(Error::InvalidRequest(format!("header name {name:?}")));
        }
        if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(Error::InvalidRequest(format!(
                "header {name} value {value:?}"
            )));
        }
    }
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(length) = content_length {
        out.extend_from_slice(format!("Content-Length: {length}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// RFC 9110 `tchar`.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        length: Option<u64>,
    ) -> Result<String, Error> {
        let mut out = Vec::new();
        write_request_head(&mut out, method, target, headers, length)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn writes_request_line_headers_and_length() {
        assert_eq!(
            head("GET", "/_ping", &[("Host", "docker")], None).unwrap(),
            "GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n"
        );
        assert_eq!(
            head(
                "POST",
                "/v1.41/containers/create?name=a%20b",
                &[("Host", "docker"), ("Content-Type", "application/json")],
                Some(2)
            )
            .unwrap(),
            "POST /v1.41/containers/create?name=a%20b HTTP/1.1\r\nHost: docker\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
        );
    }

    #[test]
    fn refuses_what_would_break_the_head() {
        for (method, target, header) in [
            ("GET", "/a b", ("Host", "docker")),
            ("GET", "/a\r\nX: y", ("Host", "docker")),
            ("GET", "relative", ("Host", "docker")),
            ("G T", "/", ("Host", "docker")),
            ("", "/", ("Host", "docker")),
            ("GET", "/", ("Host", "docker\r\nX-Injected: 1")),
            ("GET", "/", ("Ho st", "docker")),
            ("GET", "/", ("", "docker")),
        ] {
            let result = head(method, target, &[header], None);
            assert!(
                matches!(result, Err(Error::InvalidRequest(_))),
                "{method:?} {target:?} {header:?}: {result:?}"
            );
        }
    }
}
