//! HTTP/1.1 framing without I/O: the project's one implementation, for the blocking Docker
//! client and the agent API served through the tunnel (its requests, and the Docker answers it
//! relays). The socket is the caller's business: it writes what [`write_request_head`]
//! produced, feeds what it reads to [`parse_request_head`] or [`parse_response_head`], asks
//! [`RequestHead::body`] or [`framing`] how the body ends, and runs chunked bodies through a
//! [`ChunkedDecoder`].

mod chunked;
mod fields;
mod request;
mod response;

pub use chunked::ChunkedDecoder;
pub use request::{parse_request_head, percent_decode, write_request_head, RequestHead};
pub use response::{framing, parse_response_head, Framing, ResponseHead};

use std::fmt;

/// The reason phrase for `status` (clients ignore it; a well-known one reads better in logs).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Longest chunk-size line (size, extensions, CRLF) accepted.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer bytes after the last chunk accepted (they are skipped).
pub const MAX_TRAILERS: usize = 16 * 1024;
/// Most header fields in a head.
pub const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A method, target or header that would break the request line or a header line.
    InvalidRequest(String),
    /// No complete head within this many bytes.
    HeadTooLarge(usize),
    /// Not an HTTP/1.x head; the text is httparse's reason and the first bytes.
    MalformedHead(String),
    /// A request `Transfer-Encoding` other than chunked last (RFC 9112 §6.3).
    BadTransferEncoding(String),
    /// `Content-Length` that is not a number, or several different ones.
    BadContentLength(String),
    /// A chunk-size line that is not hexadecimal digits (with optional extensions).
    BadChunkSize(u8),
    /// A chunk-size line longer than [`MAX_CHUNK_LINE`].
    ChunkLineTooLong,
    /// A chunk's data not followed by CRLF, or a line ended by CR without LF.
    MissingCrlf,
    /// More than [`MAX_TRAILERS`] bytes of trailers.
    TrailersTooLarge,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidRequest(what) => write!(f, "cannot send this request: {what}"),
            Error::HeadTooLarge(limit) => {
                write!(f, "the HTTP head is longer than {limit} bytes")
            }
            Error::MalformedHead(what) => write!(f, "not HTTP/1.1 ({what})"),
            Error::BadContentLength(value) => write!(f, "invalid Content-Length {value:?}"),
            Error::BadTransferEncoding(value) => {
                write!(f, "unsupported Transfer-Encoding {value:?} (only chunked)")
            }
            Error::BadChunkSize(byte) => write!(
                f,
                "invalid chunked body: byte {:?} in a chunk size",
                char::from(*byte)
            ),
            Error::ChunkLineTooLong => write!(
                f,
                "invalid chunked body: chunk-size line longer than {MAX_CHUNK_LINE} bytes"
            ),
            Error::MissingCrlf => f.write_str("invalid chunked body: missing CRLF"),
            Error::TrailersTooLarge => write!(
                f,
                "invalid chunked body: trailers longer than {MAX_TRAILERS} bytes"
            ),
        }
    }
}

impl std::error::Error for Error {}
