//! WebSocket (RFC 6455) framing and handshakes, sans I/O, for both ends the agent plays: the
//! client carrying chisel's SSH stream to Portainer's tunnel server, and the server of the
//! Portainer UI's container console (`/websocket/exec`, `/websocket/attach`).
//!
//! chisel's server (gorilla/websocket) answers the handshake without a
//! `Sec-WebSocket-Protocol` header even though it requires ours, so its absence is accepted.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;

const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
const OP_CONTINUATION: u8 = 0;
const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
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

/// Which end this is: clients mask what they send, servers must not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_value(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{ACCEPT_GUID}").as_bytes(),
    );
    STANDARD.encode(digest)
}

/// A random `Sec-WebSocket-Key`.
pub fn new_key() -> Result<String, Error> {
    let mut nonce = [0u8; 16];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| Error::Random)?;
    Ok(STANDARD.encode(nonce))
}

/// The client's opening request for `path` on `host` (`host:port`), asking for `protocol`.
pub fn request(host: &str, path: &str, key: &str, protocol: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    )
}

/// Checks the server's answer to [`request`]: `101`, the upgrade headers, the accept hash of
/// our key, and no protocol other than `protocol`.
pub fn check_response(
    status: u16,
    header: impl Fn(&str) -> Option<String>,
    key: &str,
    protocol: &str,
) -> Result<(), Error> {
    if status != 101 {
        return Err(Error::Handshake(format!(
            "HTTP {status} instead of 101 (is the tunnel address Portainer's tunnel port, and does Portainer run its tunnel server?)"
        )));
    }
    if !header("Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(Error::Handshake("no Upgrade: websocket header".into()));
    }
    if header("Sec-WebSocket-Accept") != Some(accept_value(key)) {
        return Err(Error::Handshake("wrong Sec-WebSocket-Accept".into()));
    }
    match header("Sec-WebSocket-Protocol") {
        Some(other) if other != protocol => Err(Error::Handshake(format!(
            "the server speaks {other:?}, not {protocol}"
        ))),
        _ => Ok(()),
    }
}

/// The server's `101` answer to an opening request, or why the request is not one.
pub fn accept(header: impl Fn(&str) -> Option<String>) -> Result<String, Error> {
    let has = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has("Upgrade", "websocket") || !has("Connection", "upgrade") {
        return Err(Error::Handshake("not a WebSocket upgrade request".into()));
    }
    if header("Sec-WebSocket-Version").as_deref() != Some("13") {
        return Err(Error::Handshake("unsupported WebSocket version".into()));
    }
    let key = header("Sec-WebSocket-Key")
        .ok_or_else(|| Error::Handshake("no Sec-WebSocket-Key".into()))?;
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_value(key.trim())
    ))
}

/// Writes frames for one end: masked (with keys from the OS generator, fetched in batches)
/// when this is the client.
pub struct Encoder {
    role: Role,
    pool: [u8; 256],
    used: usize,
}

impl Encoder {
    pub fn new(role: Role) -> Encoder {
        Encoder {
            role,
            pool: [0; 256],
            used: 256,
        }
    }

    fn mask(&mut self) -> Result<[u8; 4], Error> {
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

    /// Appends one frame (FIN set) to `out`.
    pub fn frame(&mut self, opcode: u8, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let masked = self.role == Role::Client;
        let bit = if masked { 0x80 } else { 0 };
        out.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => out.push(bit | n as u8),
            n if n <= 0xffff => {
                out.push(bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if !masked {
            out.extend_from_slice(payload);
            return Ok(());
        }
        let mask = self.mask()?;
        out.extend_from_slice(&mask);
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[start..], mask);
        Ok(())
    }

    /// A normal closure (code 1000).
    pub fn close(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.frame(OP_CLOSE, &1000u16.to_be_bytes(), out)
    }

    pub fn pong(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        self.frame(OP_PONG, payload, out)
    }
}

/// XORs a frame's payload with its mask, eight bytes at a time.
fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut words = payload.chunks_exact_mut(8);
    for word in &mut words {
        let mut value = [0u8; 8];
        value.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(value) ^ wide).to_ne_bytes());
    }
    // The rest starts at a multiple of eight, so at the mask's first byte.
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// What the peer's frames carried besides data.
#[derive(Debug, PartialEq, Eq)]
pub enum Control {
    /// Answer with a pong carrying this payload.
    Ping(Vec<u8>),
    /// The peer closes the connection.
    Close,
}

/// Reads the peer's frames from a byte stream. Data payload bytes (text or binary frames, as
/// the agent treats both as bytes) are passed on as they arrive, so a large frame costs no
/// memory; control frames (at most 125 bytes) are collected.
pub struct Decoder {
    role: Role,
    head: Vec<u8>,
    /// A frame's payload is being read (else its header).
    in_payload: bool,
    /// Payload bytes still to come in the current frame.
    remaining: u64,
    opcode: u8,
    mask: Option<[u8; 4]>,
    /// Position in the mask of the next payload byte.
    offset: usize,
    control: Vec<u8>,
}

impl Decoder {
    pub fn new(role: Role) -> Decoder {
        Decoder {
            role,
            head: Vec::with_capacity(14),
            in_payload: false,
            remaining: 0,
            opcode: OP_BINARY,
            mask: None,
            offset: 0,
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
            let sink = if self.opcode >= OP_CLOSE {
                &mut self.control
            } else {
                &mut *data
            };
            let start = sink.len();
            sink.extend_from_slice(chunk);
            if let Some(mask) = self.mask {
                for b in &mut sink[start..] {
                    *b ^= mask[self.offset % 4];
                    self.offset += 1;
                }
            }
            if self.remaining == 0 {
                self.in_payload = false;
                self.end_frame(&mut controls);
            }
        }
        Ok(controls)
    }

    fn header_complete(&self) -> bool {
        let Some(b1) = self.head.get(1) else {
            return false;
        };
        let extended = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
        self.head.len() >= 2 + extended + mask
    }

    fn start_frame(&mut self) -> Result<(), Error> {
        let (b0, b1) = (self.head[0], self.head[1]);
        let masked = b1 & 0x80 != 0;
        match (self.role, masked) {
            (Role::Client, true) => return Err(Error::Protocol("the server masked a frame")),
            (Role::Server, false) => {
                return Err(Error::Protocol("the client did not mask a frame"))
            }
            _ => {}
        }
        if b0 & 0x70 != 0 {
            return Err(Error::Protocol("reserved bits set"));
        }
        let opcode = b0 & 0x0f;
        let (len, at) = match b1 & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                4,
            ),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.head[2..10]);
                let len = u64::from_be_bytes(b);
                if len >> 63 != 0 {
                    return Err(Error::Protocol(
                        "a frame's 64-bit length has its most significant bit set (RFC 6455 §5.2)",
                    ));
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        match opcode {
            OP_BINARY | OP_TEXT | OP_CONTINUATION => {}
            OP_CLOSE | OP_PING | OP_PONG if len <= 125 && b0 & 0x80 != 0 => {}
            OP_CLOSE | OP_PING | OP_PONG => return Err(Error::Protocol("bad control frame")),
            _ => return Err(Error::Protocol("unknown opcode")),
        }
        self.mask = masked.then(|| {
            [
                self.head[at],
                self.head[at + 1],
                self.head[at + 2],
                self.head[at + 3],
            ]
        });
        self.offset = 0;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of<'a>(headers: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn client_accepts_gorillas_answer_without_subprotocol() {
        // RFC 6455 §1.3's example key and accept value.
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let answer = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ];
        assert_eq!(
            check_response(101, header_of(&answer), key, "chisel-v3"),
            Ok(())
        );
        let mut other = answer.to_vec();
        other.push(("Sec-WebSocket-Protocol", "other"));
        assert!(check_response(101, header_of(&other), key, "chisel-v3").is_err());
        let err = check_response(404, header_of(&answer), key, "chisel-v3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("HTTP 404"), "{err}");
        assert!(
            check_response(101, header_of(&answer[..2]), key, "chisel-v3").is_err(),
            "accept hash required"
        );
    }

    #[test]
    fn server_answers_a_browser_style_request() {
        let request = [
            ("Upgrade", "websocket"),
            ("Connection", "keep-alive, Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let answer = accept(header_of(&request)).unwrap();
        assert!(answer.starts_with("HTTP/1.1 101 "));
        assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(accept(header_of(&request[1..])).is_err());
    }

    #[test]
    fn what_one_end_sends_the_other_decodes() {
        for (sender, receiver) in [(Role::Client, Role::Server), (Role::Server, Role::Client)] {
            let mut encoder = Encoder::new(sender);
            for size in [0usize, 125, 126, 65535, 65536] {
                let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
                let mut wire = Vec::new();
                encoder.frame(OP_BINARY, &payload, &mut wire).unwrap();
                encoder.frame(OP_PING, b"p", &mut wire).unwrap();
                let mut data = Vec::new();
                let mut decoder = Decoder::new(receiver);
                // Byte by byte: every split point of header, mask and payload.
                let mut controls = Vec::new();
                for b in &wire {
                    controls.extend(decoder.decode(&[*b], &mut data).unwrap());
                }
                assert_eq!(data, payload, "{sender:?} {size}");
                assert_eq!(controls, [Control::Ping(b"p".to_vec())]);
            }
        }
    }

    #[test]
    fn fragments_and_close() {
        let mut encoder = Encoder::new(Role::Server);
        let mut wire = vec![0x02, 6];
        wire.extend_from_slice(b"hello ");
        wire.extend_from_slice(&[0x80, 5]);
        wire.extend_from_slice(b"world");
        encoder.close(&mut wire).unwrap();
        let mut data = Vec::new();
        let controls = Decoder::new(Role::Client).decode(&wire, &mut data).unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(controls, [Control::Close]);
    }

    #[test]
    fn frames_announcing_2_63_bytes_are_refused_and_2_63_minus_1_streams() {
        let head = |role: Role, len: u64| {
            let mut h = vec![0x82, 127 | if role == Role::Server { 0x80 } else { 0 }];
            h.extend_from_slice(&len.to_be_bytes());
            if role == Role::Server {
                h.extend_from_slice(&[0; 4]);
            }
            h
        };
        for role in [Role::Client, Role::Server] {
            for len in [1 << 63, u64::MAX, (1 << 63) | 5] {
                let mut data = Vec::new();
                let err = Decoder::new(role)
                    .decode(&head(role, len), &mut data)
                    .unwrap_err();
                assert_eq!(
                    err.to_string(),
                    "WebSocket protocol error: a frame's 64-bit length has its most significant bit set (RFC 6455 §5.2)",
                    "{role:?} {len}"
                );
            }
            // The largest legal length: its payload is passed on as it arrives, so memory is
            // what arrived, never what was announced.
            let mut decoder = Decoder::new(role);
            let mut data = Vec::new();
            assert_eq!(
                decoder.decode(&head(role, (1 << 63) - 1), &mut data),
                Ok(vec![])
            );
            for _ in 0..64 {
                data.clear();
                assert_eq!(decoder.decode(&[7; 16 * 1024], &mut data), Ok(vec![]));
                assert_eq!(data.len(), 16 * 1024);
                assert!(data.capacity() <= 32 * 1024);
            }
        }
    }

    #[test]
    fn refuses_what_the_peer_must_not_send() {
        let mut data = Vec::new();
        for (role, bad) in [
            (Role::Client, vec![0x82, 0x81, 0, 0, 0, 0, 1]),
            (Role::Server, vec![0x82, 0x01, 1]),
            (Role::Client, vec![0x09, 0x01, 1]),
            (Role::Client, vec![0x83, 0x00]),
        ] {
            assert!(
                Decoder::new(role).decode(&bad, &mut data).is_err(),
                "{bad:?}"
            );
        }
    }
}
