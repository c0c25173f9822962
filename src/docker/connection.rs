//! One exchange with Docker on a fresh Unix-socket connection: connect (bounded), send the
//! request, read the response head, then hand out the body piece by piece as the
//! [`crate::http1`] framing says. The connection's 16 KiB buffer is all the memory a body
//! takes, whatever its length.

use super::{ConnectError, Error};
use crate::http1::{self, ChunkedDecoder, Framing, ResponseHead};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The read buffer, which is also the longest response head accepted.
const BUFFER: usize = 16 * 1024;

/// How long reads may wait.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    /// The whole answer must have arrived by then (buffered calls).
    Until(Instant),
    /// Each read waits at most this long, for ever if `None` (streaming calls).
    Idle(Option<Duration>),
}

/// Connects with `timeout` bounding the wait for a backlogged listener (Linux honours the send
/// timeout in `connect` on Unix sockets); the same timeout then bounds every write.
fn connect(socket: &Path, timeout: Duration) -> Result<UnixStream, ConnectError> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| ConnectError::Other(e.into()))?;
    let stream = UnixStream::from(fd);
    stream
        .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(ConnectError::Other)?;
    let address = UnixAddr::new(socket).map_err(|e| ConnectError::Other(e.into()))?;
    match nix::sys::socket::connect(stream.as_raw_fd(), &address) {
        Ok(()) => Ok(stream),
        Err(nix::errno::Errno::ENOENT) => Err(ConnectError::Missing),
        Err(nix::errno::Errno::EACCES) => Err(ConnectError::PermissionDenied(Box::new(
            super::access::Access::of(socket),
        ))),
        Err(nix::errno::Errno::ECONNREFUSED) => Err(ConnectError::Refused),
        Err(nix::errno::Errno::EAGAIN) => Err(ConnectError::Timeout(timeout)),
        Err(e) => Err(ConnectError::Other(e.into())),
    }
}

/// A response whose head has been read; the body is read through [`Body::chunk`].
pub struct Body {
    stream: UnixStream,
    buf: Box<[u8]>,
    /// Received bytes not yet given to the framing.
    unread: Range<usize>,
    /// Body bytes handed out by `chunk` and not yet consumed.
    data: Range<usize>,
    framing: Remaining,
    wait: Wait,
    /// The timeout that applies, for errors.
    timeout: Duration,
    /// "METHOD path on socket", for errors.
    call: String,
}

#[derive(Debug)]
enum Remaining {
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
    Done,
}

/// Sends the request and reads the response head.
pub fn exchange(
    socket: &Path,
    request: &[u8],
    method: &str,
    call: String,
    timeout: Duration,
    wait: Wait,
) -> Result<(ResponseHead, Body), Error> {
    let stream = connect(socket, timeout).map_err(|reason| Error::Connect {
        socket: socket.to_owned(),
        reason,
    })?;
    let mut body = Body {
        stream,
        buf: vec![0; BUFFER].into_boxed_slice(),
        unread: 0..0,
        data: 0..0,
        framing: Remaining::Done,
        wait,
        timeout: match wait {
            Wait::Until(_) => timeout,
            Wait::Idle(idle) => idle.unwrap_or(timeout),
        },
        call,
    };
    if let Wait::Idle(idle) = wait {
        body.stream.set_read_timeout(idle).map_err(|e| body.io(e))?;
    }
    body.stream.write_all(request).map_err(|e| body.io(e))?;
    loop {
        let head = match http1::parse_response_head(&body.buf[body.unread.clone()], BUFFER) {
            Ok(Some(head)) => head,
            Ok(None) => {
                if body.fill()? == 0 {
                    return Err(Error::Truncated { call: body.call });
                }
                continue;
            }
            Err(error) => {
                return Err(Error::Protocol {
                    call: body.call,
                    error,
                })
            }
        };
        body.unread.start += head.len;
        // An interim answer (100 Continue...) is followed by the real one.
        if (100..200).contains(&head.status) && head.status != 101 {
            continue;
        }
        body.framing = match http1::framing(method, &head) {
            Ok(Framing::None) => Remaining::Done,
            Ok(Framing::Length(n)) => Remaining::Length(n),
            Ok(Framing::Chunked) => Remaining::Chunked(ChunkedDecoder::default()),
            Ok(Framing::Close) => Remaining::Close,
            Ok(Framing::Upgrade) => {
                return Err(Error::Unexpected {
                    call: body.call,
                    what: format!(
                        "HTTP {} switching to a raw stream (attach/exec), which this client does not handle",
                        head.status
                    ),
                })
            }
            Err(error) => {
                return Err(Error::Protocol {
                    call: body.call,
                    error,
                })
            }
        };
        return Ok((head, body));
    }
}

impl Body {
    pub fn call(&self) -> &str {
        &self.call
    }

    /// The next body bytes (those of the previous call until [`Body::consume`]d); empty at the
    /// end of the body. A body that ends early is [`Error::Truncated`].
    pub fn chunk(&mut self) -> Result<&[u8], Error> {
        while self.data.is_empty() {
            if let Remaining::Length(0) = self.framing {
                self.framing = Remaining::Done;
            }
            if let Remaining::Done = self.framing {
                return Ok(&[]);
            }
            if self.unread.is_empty() {
                self.unread = 0..0;
                if self.fill()? == 0 {
                    if let Remaining::Close = self.framing {
                        self.framing = Remaining::Done;
                        continue;
                    }
                    return Err(Error::Truncated {
                        call: self.call.clone(),
                    });
                }
            }
            let start = self.unread.start;
            match &mut self.framing {
                Remaining::Length(left) => {
                    let n = (*left).min(self.unread.len() as u64);
                    *left -= n;
                    // `n` is at most `unread.len()`, a usize.
                    self.data = start..start + n as usize;
                }
                Remaining::Close => self.data = self.unread.clone(),
                Remaining::Chunked(decoder) => {
                    let step = decoder
                        .decode(&self.buf[self.unread.clone()])
                        .map_err(|error| Error::Protocol {
                            call: self.call.clone(),
                            error,
                        })?;
                    self.data = start + step.data.start..start + step.data.end;
                    self.unread.start += step.consumed - step.data.len();
                    if decoder.is_done() {
                        self.framing = Remaining::Done;
                    }
                }
                Remaining::Done => {}
            }
            self.unread.start += self.data.len();
        }
        Ok(&self.buf[self.data.clone()])
    }

    /// Marks `n` bytes of the last [`Body::chunk`] as used.
    pub fn consume(&mut self, n: usize) {
        self.data.start = (self.data.start + n).min(self.data.end);
    }

    /// The whole body, refused past `limit` bytes.
    pub fn read_to_vec(mut self, limit: usize) -> Result<Vec<u8>, Error> {
        let too_large = |call: &str| Error::TooLarge {
            call: call.to_owned(),
            limit,
        };
        if matches!(self.framing, Remaining::Length(n) if n > limit as u64) {
            return Err(too_large(&self.call));
        }
        let mut out = Vec::new();
        loop {
            let chunk = self.chunk()?;
            if chunk.is_empty() {
                return Ok(out);
            }
            if out.len() + chunk.len() > limit {
                return Err(too_large(&self.call));
            }
            out.extend_from_slice(chunk);
            let n = chunk.len();
            self.consume(n);
        }
    }

    /// One read into the free end of the buffer; 0 at end of stream.
    fn fill(&mut self) -> Result<usize, Error> {
        if self.unread.end == self.buf.len() {
            // Only a head can fill the buffer, and a head that long was refused already.
            self.buf.copy_within(self.unread.clone(), 0);
            self.unread = 0..self.unread.len();
        }
        if let Wait::Until(deadline) = self.wait {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timed_out());
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| self.io(e))?;
        }
        loop {
            match self.stream.read(&mut self.buf[self.unread.end..]) {
                Ok(n) => {
                    self.unread.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    fn io(&self, error: io::Error) -> Error {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.timed_out(),
            _ => Error::Io {
                call: self.call.clone(),
                error,
            },
        }
    }

    fn timed_out(&self) -> Error {
        Error::Timeout {
            call: self.call.clone(),
            after: self.timeout,
        }
    }
}
