//! The WebSocket client side (RFC 6455) that carries chisel's SSH stream, sans I/O: the opening
//! handshake and binary frames. chisel's server (gorilla/websocket) answers the handshake
//! without a `Sec-WebSocket-Protocol` header even though it requires ours, so its absence is
//! accepted; a different protocol is not.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;

pub const PROTOCOL: &str = "chisel-v3";
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const OP_CONTINUATION: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    Handshake(String),
    Protocol(&'static str),
    Random,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Handshake(e) => write!(f, "WebSocket handshake refused: {e}"),
            Error::Protocol(e) => write!(f, "WebSocket protocol error: {e}"),
            Error::Random => f.write_str("the system random generator failed"),
        }
    }
}

/// A random `Sec-WebSocket-Key`.
pub fn new_key() -> Result<String, Error> {
    let mut nonce = [0u8; 16];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| Error::Random)?;
    Ok(STANDARD.encode(nonce))
}

/// The opening request for `path` on `host` (`host:port`).
pub fn request(host: &str, path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n"
    )
}

/// Checks the server's answer head (status line and headers, already split by the HTTP
/// parser): `101`, the upgrade headers and the accept hash of our key.
pub fn check_response(status: u16, headers: &[(String, String)], key: &str) -> Result<(), Error> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if status != 101 {
        return Err(Error::Handshake(format!(
            "HTTP {status} instead of 101 (is the tunnel address Portainer's tunnel port, and does Portainer run its tunnel server?)"
        )));
    }
    if !header("Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(Error::Handshake("no Upgrade: websocket header".into()));
    }
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{ACCEPT_GUID}").as_bytes(),
    );
    if header("Sec-WebSocket-Accept") != Some(STANDARD.encode(digest).as_str()) {
        return Err(Error::Handshake("wrong Sec-WebSocket-Accept".into()));
    }
    match header("Sec-WebSocket-Protocol") {
        None | Some(PROTOCOL) => Ok(()),
        Some(other) => Err(Error::Handshake(format!(
            "the server speaks {other:?}, not {PROTOCOL}"
        ))),
    }
}

/// Masking keys from the OS generator, fetched in batches.
pub struct Masks {
    pool: [u8; 256],
    used: usize,
}

impl Masks {
    pub fn new() -> Masks {
        Masks {
            pool: [0; 256],
            used: 256,
        }
    }

    fn next(&mut self) -> Result<[u8; 4], Error> {
        if self.used == self.pool.len() {
            SystemRandom::new()
                .fill(&mut self.pool)
                .map_err(|_| Error::Random)?;
            self.used = 0;
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&self.pool[self.used..self.used + 4]);
        self.used += 4;
        Ok(mask)
    }
}

/// Appends a masked client frame (FIN set) to `out`.
fn frame(opcode: u8, payload: &[u8], masks: &mut Masks, out: &mut Vec<u8>) -> Result<(), Error> {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = masks.next()?;
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    for (i, b) in out[start..].iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok(())
}

pub fn binary(payload: &[u8], masks: &mut Masks, out: &mut Vec<u8>) -> Result<(), Error> {
    frame(OP_BINARY, payload, masks, out)
}

/// A normal closure (code 1000).
pub fn close(masks: &mut Masks, out: &mut Vec<u8>) -> Result<(), Error> {
    frame(OP_CLOSE, &1000u16.to_be_bytes(), masks, out)
}

/// What the server's frames carried besides data.
#[derive(Debug, PartialEq, Eq)]
pub enum Control {
    /// Answer with a pong carrying this payload.
    Ping(Vec<u8>),
    /// The server closes the connection.
    Close,
}

/// Reads server frames from a byte stream. Binary payload bytes are passed on as they arrive,
/// so a large frame costs no memory; control frames (at most 125 bytes) are collected.
pub struct Decoder {
    head: Vec<u8>,
    /// A frame's payload is being read (else its header).
    in_payload: bool,
    /// Payload bytes still to come in the current frame.
    remaining: u64,
    opcode: u8,
    control: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            head: Vec::with_capacity(10),
            in_payload: false,
            remaining: 0,
            opcode: OP_BINARY,
            control: Vec::new(),
        }
    }

    /// Decodes `input`, appending data bytes to `data` and returning control frames.
    pub fn decode(&mut self, mut input: &[u8], data: &mut Vec<u8>) -> Result<Vec<Control>, Error> {
        let mut controls = Vec::new();
        while !input.is_empty() {
            if !self.in_payload {
                self.head.push(input[0]);
                input = &input[1..];
                if self.header_complete() {
                    self.start_frame()?;
                    if self.remaining == 0 {
                        self.end_frame(&mut controls);
                    } else {
                        self.in_payload = true;
                    }
                }
                continue;
            }
            let n = (self.remaining.min(input.len() as u64)) as usize;
            let (chunk, rest) = input.split_at(n);
            input = rest;
            self.remaining -= n as u64;
            if self.opcode >= OP_CLOSE {
                self.control.extend_from_slice(chunk);
            } else {
                data.extend_from_slice(chunk);
            }
            if self.remaining == 0 {
                self.in_payload = false;
                self.end_frame(&mut controls);
            }
        }
        Ok(controls)
    }

    fn header_complete(&self) -> bool {
        let Some(len7) = self.head.get(1).map(|b| b & 0x7f) else {
            return false;
        };
        let extended = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        self.head.len() >= 2 + extended
    }

    fn start_frame(&mut self) -> Result<(), Error> {
        let (b0, b1) = (self.head[0], self.head[1]);
        if b1 & 0x80 != 0 {
            return Err(Error::Protocol("the server masked a frame"));
        }
        if b0 & 0x70 != 0 {
            return Err(Error::Protocol("reserved bits set"));
        }
        let opcode = b0 & 0x0f;
        let len = match b1 & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.head[2..10]);
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        match opcode {
            OP_BINARY | OP_CONTINUATION => {}
            OP_TEXT => return Err(Error::Protocol("a text frame on an SSH stream")),
            OP_CLOSE | OP_PING | OP_PONG if len <= 125 && b0 & 0x80 != 0 => {}
            OP_CLOSE | OP_PING | OP_PONG => return Err(Error::Protocol("bad control frame")),
            _ => return Err(Error::Protocol("unknown opcode")),
        }
        self.opcode = opcode;
        self.remaining = len;
        self.head.clear();
        Ok(())
    }

    fn end_frame(&mut self, controls: &mut Vec<Control>) {
        match self.opcode {
            OP_PING => controls.push(Control::Ping(std::mem::take(&mut self.control))),
            OP_CLOSE => controls.push(Control::Close),
            _ => self.control.clear(),
        }
        self.opcode = OP_BINARY;
    }
}

/// A pong answering a ping's payload.
pub fn pong(payload: &[u8], masks: &mut Masks, out: &mut Vec<u8>) -> Result<(), Error> {
    frame(OP_PONG, payload, masks, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unmasked server frame.
    fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![b0];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn accepts_gorillas_answer_without_subprotocol() {
        // RFC 6455 §1.3's example key and accept value.
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let mut headers = vec![
            ("Upgrade".to_owned(), "websocket".to_owned()),
            ("Connection".to_owned(), "Upgrade".to_owned()),
            (
                "Sec-WebSocket-Accept".to_owned(),
                "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_owned(),
            ),
        ];
        assert_eq!(check_response(101, &headers, key), Ok(()));
        headers.push(("Sec-WebSocket-Protocol".into(), "other".into()));
        assert!(check_response(101, &headers, key).is_err());
        let err = check_response(404, &headers, key).unwrap_err().to_string();
        assert!(err.contains("HTTP 404"), "{err}");
        assert!(
            check_response(101, &headers[..2], key).is_err(),
            "accept hash required"
        );
    }

    #[test]
    fn client_frames_are_masked_and_decode_back() {
        let mut masks = Masks::new();
        for size in [0usize, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            binary(&payload, &mut masks, &mut out).unwrap();
            assert_eq!(out[0], 0x82);
            assert!(out[1] & 0x80 != 0, "masked");
            // Unmask as a server would.
            let header = match out[1] & 0x7f {
                126 => 4,
                127 => 10,
                _ => 2,
            };
            let mask: [u8; 4] = out[header..header + 4].try_into().unwrap();
            let unmasked: Vec<u8> = out[header + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(unmasked, payload);
        }
    }

    #[test]
    fn decodes_fragmented_data_and_control_frames_byte_by_byte() {
        let mut wire = server_frame(0x02, b"hello ");
        wire.extend(server_frame(0x89, b"p"));
        wire.extend(server_frame(0x80, b"world"));
        wire.extend(server_frame(0x82, &vec![7u8; 70_000]));
        wire.extend(server_frame(0x88, &1000u16.to_be_bytes()));
        let mut decoder = Decoder::new();
        let mut data = Vec::new();
        let mut controls = Vec::new();
        for b in &wire {
            controls.extend(decoder.decode(&[*b], &mut data).unwrap());
        }
        assert_eq!(&data[..11], b"hello world");
        assert_eq!(data.len(), 11 + 70_000);
        assert_eq!(controls, [Control::Ping(b"p".to_vec()), Control::Close]);
    }

    #[test]
    fn refuses_what_a_server_must_not_send() {
        let mut data = Vec::new();
        for bad in [
            server_frame(0x81, b"text"),
            vec![0x82, 0x81, 0, 0, 0, 0, 1],
            server_frame(0x09, b"fragmented ping"),
            server_frame(0x83, b""),
        ] {
            assert!(Decoder::new().decode(&bad, &mut data).is_err(), "{bad:?}");
        }
    }
}
