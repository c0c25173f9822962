//! Container output. Without a TTY, Docker multiplexes stdout and stderr into frames: an 8-byte
//! header (stream: 0 stdin, 1 stdout, 2 stderr; three zero bytes; big-endian payload length)
//! and the payload. [`Demux`] takes frames apart without I/O or copies; [`Logs`] runs a log
//! stream through it.

use super::connection::Body;
use super::Error;
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdin,
    Stdout,
    Stderr,
}

/// The multiplexed-stream state machine: feed it bytes, it says how many it used and where
/// payload bytes are among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demux {
    header: [u8; 8],
    /// Header bytes received so far.
    have: usize,
    stream: LogStream,
    /// Payload bytes of the current frame still to come.
    remaining: u32,
}

/// The result of one [`Demux::feed`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demuxed {
    /// How many input bytes were used; the rest must be fed again.
    pub consumed: usize,
    /// Payload bytes in the input (at the end of `..consumed`; may be empty), of `stream`.
    pub data: Range<usize>,
    pub stream: LogStream,
}

/// A frame header whose stream byte (or padding) is not Docker's: the output is not
/// multiplexed (a TTY container) or is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotMultiplexed(pub u8);

impl Default for Demux {
    fn default() -> Self {
        Demux {
            header: [0; 8],
            have: 0,
            stream: LogStream::Stdout,
            remaining: 0,
        }
    }
}

impl Demux {
    /// Reads frame headers until it reaches payload (returned, at most the rest of one frame)
    /// or the end of `input`.
    pub fn feed(&mut self, input: &[u8]) -> Result<Demuxed, NotMultiplexed> {
        let mut at = 0;
        while self.remaining == 0 {
            if at == input.len() {
                return Ok(Demuxed {
                    consumed: at,
                    data: at..at,
                    stream: self.stream,
                });
            }
            let n = (8 - self.have).min(input.len() - at);
            self.header[self.have..self.have + n].copy_from_slice(&input[at..at + n]);
            self.have += n;
            at += n;
            if self.have == 8 {
                self.have = 0;
                self.stream = match self.header {
                    [0, 0, 0, 0, ..] => LogStream::Stdin,
                    [1, 0, 0, 0, ..] => LogStream::Stdout,
                    [2, 0, 0, 0, ..] => LogStream::Stderr,
                    [s @ 0..=2, a, b, c, ..] => {
                        let bad = [a, b, c].into_iter().find(|&x| x != 0);
                        return Err(NotMultiplexed(bad.unwrap_or(s)));
                    }
                    [b, ..] => return Err(NotMultiplexed(b)),
                };
                let [.., a, b, c, d] = self.header;
                self.remaining = u32::from_be_bytes([a, b, c, d]);
            }
        }
        let n = (input.len() - at).min(self.remaining as usize);
        // `n` is at most `remaining`, a u32.
        self.remaining -= n as u32;
        Ok(Demuxed {
            consumed: at + n,
            data: at..at + n,
            stream: self.stream,
        })
    }

    /// True between frames: where a stream may end.
    pub fn at_frame_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }
}

/// A container's output as it streams from Docker; dropping it closes the connection.
pub struct Logs {
    body: Body,
    /// `None` for a TTY container, whose output is sent as is.
    demux: Option<Demux>,
    /// Bytes handed out by the last `next`.
    pending: usize,
}

impl Logs {
    pub(super) fn new(body: Body, tty: bool) -> Logs {
        Logs {
            body,
            demux: (!tty).then(Demux::default),
            pending: 0,
        }
    }

    /// The next piece of output and its stream (stdout for a TTY container); `None` at the end
    /// (when following: once the container stopped). Holds no more than one read buffer.
    #[allow(clippy::should_implement_trait)] // It lends its buffer, which Iterator cannot.
    pub fn next(&mut self) -> Result<Option<(LogStream, &[u8])>, Error> {
        self.body.consume(std::mem::take(&mut self.pending));
        loop {
            let chunk = self.body.chunk()?;
            if chunk.is_empty() {
                if self.demux.as_ref().is_some_and(|d| !d.at_frame_boundary()) {
                    return Err(Error::Truncated {
                        call: self.body.call().to_owned(),
                    });
                }
                return Ok(None);
            }
            let step = match &mut self.demux {
                None => Ok(Demuxed {
                    consumed: chunk.len(),
                    data: 0..chunk.len(),
                    stream: LogStream::Stdout,
                }),
                Some(demux) => demux.feed(chunk),
            };
            let step = step.map_err(|NotMultiplexed(byte)| Error::Unexpected {
                call: self.body.call().to_owned(),
                what: format!(
                    "byte {byte:#04x} where a log frame header should be: not Docker's multiplexed log format"
                ),
            })?;
            self.body.consume(step.data.start);
            if !step.data.is_empty() {
                self.pending = step.data.len();
                let chunk = self.body.chunk()?;
                return Ok(Some((step.stream, &chunk[..step.data.len()])));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![stream, 0, 0, 0];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Feeds `input` in pieces of `piece` bytes; returns what each stream got.
    fn demux_in_pieces(
        input: &[u8],
        piece: usize,
    ) -> Result<(Vec<u8>, Vec<u8>, bool), NotMultiplexed> {
        let mut demux = Demux::default();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for piece in input.chunks(piece) {
            let mut rest = piece;
            while !rest.is_empty() {
                let step = demux.feed(rest)?;
                assert_eq!(step.data.end, step.consumed);
                let target = match step.stream {
                    LogStream::Stderr => &mut err,
                    _ => &mut out,
                };
                target.extend_from_slice(&rest[step.data]);
                rest = &rest[step.consumed..];
            }
        }
        Ok((out, err, demux.at_frame_boundary()))
    }

    #[test]
    fn splits_stdout_and_stderr_whole_or_byte_by_byte() {
        let mut input = frame(1, b"out 0\n");
        input.extend(frame(2, b"err 0\n"));
        input.extend(frame(1, b""));
        input.extend(frame(1, &[b'x'; 70_000]));
        for piece in [1, 3, 8, 9, input.len()] {
            let (out, err, boundary) = demux_in_pieces(&input, piece).unwrap();
            assert_eq!(&out[..6], b"out 0\n", "piece {piece}");
            assert_eq!(out.len(), 70_006, "piece {piece}");
            assert_eq!(err, b"err 0\n", "piece {piece}");
            assert!(boundary, "piece {piece}");
        }
    }

    #[test]
    fn a_cut_frame_is_not_at_a_boundary() {
        let input = frame(1, b"hello");
        for end in 1..input.len() {
            let (_, _, boundary) = demux_in_pieces(&input[..end], 1).unwrap();
            assert!(!boundary, "cut after {end}");
        }
    }

    #[test]
    fn tty_output_is_not_multiplexed() {
        assert_eq!(
            demux_in_pieces(b"hello world\n", 64),
            Err(NotMultiplexed(b'h'))
        );
        assert_eq!(
            demux_in_pieces(&[1, 0, 7, 0, 0, 0, 0, 1, b'a'], 64),
            Err(NotMultiplexed(7))
        );
    }
}
