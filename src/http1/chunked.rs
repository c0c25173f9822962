//! `Transfer-Encoding: chunked` decoding as a state machine: feed it whatever bytes arrived, it
//! says how many it used and where the body bytes among them are. It copies nothing and keeps
//! no buffer, so the caller's read buffer is the only memory a body takes.

use super::{Error, MAX_CHUNK_LINE, MAX_TRAILERS};
use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes of the current chunk-size line, or of all trailers.
    seen: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size; `digits` so far.
    Size {
        size: u64,
        digits: u8,
    },
    /// `;name=value` or whitespace after the size, skipped up to CR.
    Extension {
        size: u64,
    },
    /// CR seen at the end of the size line.
    SizeLf {
        size: u64,
    },
    /// This many data bytes of the current chunk still to come.
    Data(u64),
    DataCr,
    DataLf,
    /// A trailer line (skipped); `empty` while nothing is on it yet.
    Trailer {
        empty: bool,
    },
    TrailerLf {
        empty: bool,
    },
    /// The last chunk and the trailers are read: bytes after this belong to what follows.
    Done,
}

/// The result of one [`ChunkedDecoder::decode`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// How many input bytes were used; the rest must be fed again.
    pub consumed: usize,
    /// Where the body bytes are in the input (within `..consumed`; may be empty).
    pub data: Range<usize>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size { size: 0, digits: 0 },
            seen: 0,
        }
    }
}

impl ChunkedDecoder {
    /// True once the whole body, last chunk and trailers included, went through.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads framing bytes until it reaches chunk data (returned, at most one chunk's worth),
    /// the end of `input`, or the end of the body.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, Error> {
        let mut at = 0;
        while at < input.len() {
            match self.state {
                State::Done => break,
                State::Data(remaining) => {
                    let available = (input.len() - at) as u64;
                    let n = remaining.min(available);
                    let left = remaining - n;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    // `n` is at most `available`, a usize.
                    let end = at + n as usize;
                    return Ok(Decoded {
                        consumed: end,
                        data: at..end,
                    });
                }
                _ => {
                    self.step(input[at])?;
                    at += 1;
                }
            }
        }
        Ok(Decoded {
            consumed: at,
            data: at..at,
        })
    }

    fn step(&mut self, byte: u8) -> Result<(), Error> {
        if matches!(
            self.state,
            State::Size { .. } | State::Extension { .. } | State::SizeLf { .. }
        ) {
            self.seen += 1;
            if self.seen > MAX_CHUNK_LINE {
                return Err(Error::ChunkLineTooLong);
            }
        }
        if matches!(self.state, State::Trailer { .. } | State::TrailerLf { .. }) {
            self.seen += 1;
            if self.seen > MAX_TRAILERS {
                return Err(Error::TrailersTooLarge);
            }
        }
        self.state = match (self.state, byte) {
            (State::Size { size, digits }, _) if byte.is_ascii_hexdigit() => {
                // 16 hex digits fill a u64; more would overflow.
                if digits == 16 {
                    return Err(Error::BadChunkSize(byte));
                }
                let value = char::from(byte).to_digit(16).unwrap_or_default();
                State::Size {
                    size: size << 4 | u64::from(value),
                    digits: digits + 1,
                }
            }
            (State::Size { size, digits }, b'\r') if digits > 0 => State::SizeLf { size },
            (State::Size { size, digits }, b';' | b' ' | b'\t') if digits > 0 => {
                State::Extension { size }
            }
            (State::Size { .. }, _) => return Err(Error::BadChunkSize(byte)),
            (State::Extension { size }, b'\r') => State::SizeLf { size },
            (State::Extension { .. }, b'\n') => return Err(Error::MissingCrlf),
            (state @ State::Extension { .. }, _) => state,
            (State::SizeLf { size }, b'\n') => {
                self.seen = 0;
                if size == 0 {
                    State::Trailer { empty: true }
                } else {
                    State::Data(size)
                }
            }
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size { size: 0, digits: 0 },
            (State::Trailer { empty }, b'\r') => State::TrailerLf { empty },
            (State::Trailer { .. }, b'\n') => return Err(Error::MissingCrlf),
            (State::Trailer { .. }, _) => State::Trailer { empty: false },
            (State::TrailerLf { empty: true }, b'\n') => State::Done,
            (State::TrailerLf { empty: false }, b'\n') => State::Trailer { empty: true },
            (State::SizeLf { .. } | State::DataCr | State::DataLf | State::TrailerLf { .. }, _) => {
                return Err(Error::MissingCrlf)
            }
            // `decode` handles these without calling `step`.
            (state @ (State::Data(_) | State::Done), _) => state,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `piece` bytes as a reader would (unused bytes are fed again
    /// with the next piece); returns the body, whether it ended, and the bytes left after it.
    fn decode_in_pieces(input: &[u8], piece: usize) -> Result<(Vec<u8>, bool, usize), Error> {
        let mut decoder = ChunkedDecoder::default();
        let mut body = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut fed = 0;
        loop {
            let take = piece.min(input.len() - fed);
            pending.extend_from_slice(&input[fed..fed + take]);
            fed += take;
            loop {
                let step = decoder.decode(&pending)?;
                assert!(step.data.end <= step.consumed);
                // At most one chunk's data per call, and never more than was fed.
                body.extend_from_slice(&pending[step.data.clone()]);
                pending.drain(..step.consumed);
                if step.data.is_empty() || pending.is_empty() || decoder.is_done() {
                    break;
                }
            }
            if decoder.is_done() || fed == input.len() {
                return Ok((body, decoder.is_done(), pending.len() + input.len() - fed));
            }
        }
    }

    const BODY: &[u8] =
        b"5\r\nhello\r\n1;name=value\r\n \r\n10 \r\n0123456789abcdef\r\n0\r\n\r\nNEXT";

    #[test]
    fn decodes_whole_and_byte_by_byte_alike() {
        for piece in [1, 2, 3, 7, BODY.len()] {
            let (body, done, left) = decode_in_pieces(BODY, piece).unwrap();
            assert_eq!(body, b"hello 0123456789abcdef", "piece {piece}");
            assert!(done, "piece {piece}");
            // What follows the body is not consumed.
            assert_eq!(left, 4, "piece {piece}");
        }
    }

    #[test]
    fn data_comes_back_one_chunk_at_a_time_without_copies() {
        let mut decoder = ChunkedDecoder::default();
        let step = decoder.decode(BODY).unwrap();
        assert_eq!(&BODY[step.data.clone()], b"hello");
        assert_eq!(step.consumed, 8);
        let rest = &BODY[step.consumed..];
        let step = decoder.decode(rest).unwrap();
        assert_eq!(&rest[step.data], b" ");
    }

    #[test]
    fn trailers_are_skipped() {
        let input = b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n";
        for piece in [1, input.len()] {
            let (body, done, left) = decode_in_pieces(input, piece).unwrap();
            assert_eq!((body.as_slice(), done, left), (&b"abc"[..], true, 0));
        }
    }

    #[test]
    fn uppercase_hex_and_large_sizes() {
        let mut decoder = ChunkedDecoder::default();
        let step = decoder.decode(b"FFFFFFFFFFFFFFFF\r\nab").unwrap();
        assert_eq!(step.data.len(), 2);
        assert!(!decoder.is_done());
    }

    #[test]
    fn truncated_body_is_not_done() {
        for end in 0..BODY.len() - 4 {
            let (_, done, _) = decode_in_pieces(&BODY[..end], 1).unwrap();
            assert!(!done, "ended after {end} bytes");
        }
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let long_line = format!("1;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        let big_trailers = format!("0\r\n{}\r\n\r\n", "x".repeat(MAX_TRAILERS));
        let cases: [(&[u8], Error); 9] = [
            (b"x\r\n", Error::BadChunkSize(b'x')),
            (b"\r\n", Error::BadChunkSize(b'\r')),
            (b"-1\r\n", Error::BadChunkSize(b'-')),
            (b"10000000000000000\r\n", Error::BadChunkSize(b'0')),
            (b"3\nabc", Error::BadChunkSize(b'\n')),
            (b"3\r\nabcX\r\n", Error::MissingCrlf),
            (b"3\r\nabc\rX", Error::MissingCrlf),
            (long_line.as_bytes(), Error::ChunkLineTooLong),
            (big_trailers.as_bytes(), Error::TrailersTooLarge),
        ];
        for (input, expected) in cases {
            for piece in [1, input.len()] {
                assert_eq!(
                    decode_in_pieces(input, piece).map(|_| ()),
                    Err(expected.clone()),
                    "{:?} in pieces of {piece}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }
}
