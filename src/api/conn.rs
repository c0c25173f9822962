//! One HTTP/1.1 connection of the agent API (one tunnel channel), read through a buffer that
//! keeps what follows a head (a body, the next request) for whoever reads next, and the one
//! relay that moves a framed body from a reader to a writer without holding it.

use crate::http1::{self, ChunkedDecoder, Framing, RequestHead};
use std::io;
use std::time::{Duration, Instant};
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf,
};
use tokio::time::timeout;

/// The largest request head accepted (Portainer's are well under 2 KiB).
pub const MAX_HEAD: usize = 64 * 1024;
/// A kept-alive connection with no new request for this long is closed.
const IDLE: Duration = Duration::from_secs(120);
/// Once a head has started, all of it must arrive within this (slow-loris): Portainer's heads
/// are a few hundred bytes, seconds even on a very slow link.
const HEAD_TIME: Duration = Duration::from_secs(10);
/// A body read or a write that makes no progress for this long is abandoned.
pub const STALL: Duration = Duration::from_secs(300);
/// One read's worth: what a tunnel channel holds each way (its duplex), so a larger buffer would
/// not fill from the client; Docker's answers are read in pieces of the same size. With 50
/// busy channels every KiB here is 50 KiB of the agent's peak memory (`cargo bench --bench api`).
const CHUNK: usize = 8 * 1024;

pub struct Conn {
    pub rd: ReadHalf<DuplexStream>,
    pub wr: WriteHalf<DuplexStream>,
    /// Read but not yet used.
    pub buf: Vec<u8>,
}

/// What came in.
pub enum Incoming {
    Request(RequestHead),
    /// Closed or idle: nothing to answer.
    Gone,
    /// Not HTTP, too large or too slow: answer 400 and close.
    Bad(String),
}

impl Conn {
    pub fn new(stream: DuplexStream) -> Conn {
        let (rd, wr) = tokio::io::split(stream);
        Conn {
            rd,
            wr,
            buf: Vec::new(),
        }
    }

    pub async fn request(&mut self) -> Incoming {
        let mut started = (!self.buf.is_empty()).then(Instant::now);
        loop {
            match http1::parse_request_head(&self.buf, MAX_HEAD) {
                Ok(Some(head)) => {
                    self.buf.drain(..head.len);
                    return Incoming::Request(head);
                }
                Ok(None) => {}
                Err(e) => return Incoming::Bad(e.to_string()),
            }
            let limit = match started {
                None => IDLE,
                Some(t) => HEAD_TIME.saturating_sub(t.elapsed()),
            };
            match timeout(limit, fill(&mut self.rd, &mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Incoming::Gone,
                Ok(Ok(_)) => {
                    started.get_or_insert_with(Instant::now);
                }
                Err(_) if started.is_none() => return Incoming::Gone,
                Err(_) => {
                    return Incoming::Bad(format!(
                        "the request head did not arrive within {} s",
                        HEAD_TIME.as_secs()
                    ))
                }
            }
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        write(&mut self.wr, bytes).await
    }

    /// After an error answer, before closing: reads and drops what the client is still
    /// sending (for at most [`LINGER`] and [`LINGER_BYTES`]), so the close does not turn into a
    /// reset that would destroy the answer on its way.
    pub async fn linger(&mut self) {
        let _ = timeout(LINGER, async {
            let mut dropped = 0;
            while dropped < LINGER_BYTES {
                self.buf.clear();
                match fill(&mut self.rd, &mut self.buf).await {
                    Ok(n) if n > 0 => dropped += n,
                    _ => return,
                }
            }
        })
        .await;
        self.buf.clear();
    }
}

/// A request body as its bytes (lengths and chunks taken off), read through the connection's
/// buffer.
pub struct Body {
    framing: Framing,
    decoder: ChunkedDecoder,
}

impl Body {
    pub fn new(framing: Framing) -> Body {
        Body {
            framing,
            decoder: ChunkedDecoder::default(),
        }
    }

    /// Appends up to `max` body bytes to `out`; 0 at the end of the body. Fails when the body
    /// breaks or makes no progress for [`STALL`].
    pub async fn read(
        &mut self,
        conn: &mut Conn,
        out: &mut Vec<u8>,
        max: usize,
    ) -> io::Result<usize> {
        loop {
            match &mut self.framing {
                Framing::Length(left) if *left > 0 && !conn.buf.is_empty() => {
                    let n = (*left).min(conn.buf.len() as u64).min(max as u64) as usize;
                    out.extend_from_slice(&conn.buf[..n]);
                    conn.buf.drain(..n);
                    *left -= n as u64;
                    return Ok(n);
                }
                Framing::Length(0) => return Ok(0),
                Framing::Length(_) => {}
                Framing::Chunked if self.decoder.is_done() => return Ok(0),
                Framing::Chunked => {
                    let input = &conn.buf[..conn.buf.len().min(max.max(1))];
                    let decoded = self
                        .decoder
                        .decode(input)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                    let n = decoded.data.len();
                    out.extend_from_slice(&conn.buf[decoded.data]);
                    conn.buf.drain(..decoded.consumed);
                    if n > 0 {
                        return Ok(n);
                    }
                    if self.decoder.is_done() {
                        return Ok(0);
                    }
                    if decoded.consumed > 0 {
                        continue;
                    }
                }
                _ => return Ok(0),
            }
            let n = timeout(STALL, fill(&mut conn.rd, &mut conn.buf))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the body stalled"))??;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// The whole body, if it is at most `limit` bytes (`InvalidData` otherwise).
    pub async fn read_all(mut self, conn: &mut Conn, limit: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let room = limit + 1 - out.len();
            if self.read(conn, &mut out, room).await? == 0 {
                return Ok(out);
            }
            if out.len() > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the body is larger than {limit} bytes"),
                ));
            }
        }
    }
}

const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

/// Reads once more into `buf`; 0 at the end. Cancel-safe: interrupted (a `select!` took
/// another branch), it leaves `buf` as it was.
pub async fn fill(src: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < CHUNK / 4 {
        buf.reserve(CHUNK);
    }
    src.read_buf(buf).await
}

/// Writes everything, or fails when the peer takes nothing for [`STALL`].
pub async fn write(dst: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> io::Result<()> {
    timeout(STALL, dst.write_all(bytes))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the peer stopped reading"))?
}

/// Moves one body, as framed, from `src` (after what `pending` already holds) to `dst`,
/// unchanged: chunked bodies keep their chunks. Bytes after the body stay in `pending`. `stall`
/// bounds each read (`None`: wait as long as it takes, for answers that stream).
pub async fn relay(
    framing: Framing,
    src: &mut (impl AsyncRead + Unpin),
    pending: &mut Vec<u8>,
    dst: &mut (impl AsyncWrite + Unpin),
    stall: Option<Duration>,
) -> io::Result<()> {
    let mut more = async |pending: &mut Vec<u8>| -> io::Result<()> {
        let n = match stall {
            Some(limit) => timeout(limit, fill(src, pending))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the body stalled"))??,
            None => fill(src, pending).await?,
        };
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    };
    match framing {
        Framing::None | Framing::Upgrade => Ok(()),
        Framing::Length(mut left) => {
            while left > 0 {
                if pending.is_empty() {
                    more(pending).await?;
                }
                let n = (left.min(pending.len() as u64)) as usize;
                write(dst, &pending[..n]).await?;
                pending.drain(..n);
                left -= n as u64;
            }
            Ok(())
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            loop {
                let decoded = decoder
                    .decode(pending)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                write(dst, &pending[..decoded.consumed]).await?;
                pending.drain(..decoded.consumed);
                if decoder.is_done() {
                    return Ok(());
                }
                if pending.is_empty() {
                    more(pending).await?;
                }
            }
        }
        Framing::Close => {
            loop {
                write(dst, pending).await?;
                pending.clear();
                match more(pending).await {
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    other => other?,
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn relayed(
        framing: Framing,
        input: &[u8],
        stall: Option<Duration>,
    ) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let (mut feed, mut src) = tokio::io::duplex(64);
        let input = input.to_vec();
        tokio::spawn(async move {
            // A byte at a time: every split point.
            for b in input {
                if feed.write_all(&[b]).await.is_err() {
                    return;
                }
            }
        });
        let mut pending = Vec::new();
        let mut out = Vec::new();
        relay(framing, &mut src, &mut pending, &mut out, stall).await?;
        Ok((out, pending))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bodies_pass_unchanged_and_what_follows_stays() {
        let (out, _) = relayed(Framing::Length(5), b"hello", None).await.unwrap();
        assert_eq!(out, b"hello");
        let chunked = b"3\r\nabc\r\n0\r\n\r\n";
        let (out, _) = relayed(Framing::Chunked, chunked, None).await.unwrap();
        assert_eq!(out, chunked);
        let (out, _) = relayed(Framing::Close, b"to the end", None).await.unwrap();
        assert_eq!(out, b"to the end");

        let mut pending = b"2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n".to_vec();
        let mut out = Vec::new();
        let (_feed, mut src) = tokio::io::duplex(64);
        relay(Framing::Chunked, &mut src, &mut pending, &mut out, None)
            .await
            .unwrap();
        assert_eq!(pending, b"GET / HTTP/1.1\r\n", "the next request stays");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bodies_are_read_without_their_framing() {
        for (framing, input) in [
            (Framing::Length(11), &b"hello world"[..]),
            (
                Framing::Chunked,
                &b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"[..],
            ),
        ] {
            let (mut feed, stream) = tokio::io::duplex(64);
            let mut input = input.to_vec();
            input.extend_from_slice(b"NEXT");
            tokio::spawn(async move {
                for b in input {
                    if feed.write_all(&[b]).await.is_err() {
                        return;
                    }
                }
                std::future::pending::<()>().await;
            });
            let mut conn = Conn::new(stream);
            let mut body = Body::new(framing);
            let mut out = Vec::new();
            while body.read(&mut conn, &mut out, 3).await.unwrap() > 0 {}
            assert_eq!(out, b"hello world", "{framing:?}");
            let long = Body::new(Framing::Length(4)).read_all(&mut conn, 3).await;
            assert!(long.is_err(), "NEXT is over the limit");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn short_bodies_and_stalls_are_errors() {
        let err = relayed(Framing::Length(10), b"short", None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = relayed(Framing::Chunked, b"zz\r\n", None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let (_feed, mut src) = tokio::io::duplex(64);
        let err = relay(
            Framing::Length(1),
            &mut src,
            &mut Vec::new(),
            &mut Vec::new(),
            Some(Duration::from_millis(20)),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
