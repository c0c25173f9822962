//! The SSH transport layer of a client (RFC 4253), sans I/O: feed it the bytes the server sent,
//! take the bytes to send, and exchange payloads with the layer above. It runs the version
//! exchange, the first key exchange and every later one (either side may start one), holds back
//! outgoing payloads while keys change, and enforces strict KEX when both sides offer it.

use super::cipher::{self, Cipher};
use super::kex::{
    self, Exchange, Negotiated, Secrets, Transcript, MSG_KEXINIT, MSG_KEX_ECDH_INIT,
    MSG_KEX_ECDH_REPLY, MSG_NEWKEYS,
};
use super::wire::{Malformed, Reader, Writer};
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

pub const CLIENT_VERSION: &str = "SSH-chisel-v3-client";

const MSG_DISCONNECT: u8 = 1;
pub(super) const MSG_IGNORE: u8 = 2;
const MSG_UNIMPLEMENTED: u8 = 3;
const MSG_DEBUG: u8 = 4;
/// RFC 4253 §11.1 reason "by application".
const DISCONNECT_BY_APPLICATION: u32 = 11;

/// Lines a server may send before its version line, and their length (RFC 4253 §4.2).
const MAX_BANNER_LINES: usize = 16;
const MAX_LINE: usize = 255;

/// We start a new key exchange after this much traffic or time (RFC 4253 §9).
const REKEY_BYTES: u64 = 1 << 30;
const REKEY_AFTER: Duration = Duration::from_secs(3600);
/// A key exchange the server starts before this much traffic and time passed since the last
/// one is early; more than [`MAX_EARLY_KEX`] early ones in a row are a re-key storm, each
/// costing us a key agreement and a signature check for nothing: the connection is closed.
/// (Go re-keys after 1 GiB, or `RekeyThreshold` bytes, never sooner than 256.)
const EARLY_KEX_BYTES: u64 = 16 * 1024;
const EARLY_KEX_AFTER: Duration = Duration::from_secs(10);
const MAX_EARLY_KEX: u32 = 3;
/// Answers held while the server has not answered our KEXINIT (it may still send requests
/// until it does); beyond this the server is not exchanging keys at all.
const MAX_HELD: usize = 256 * 1024;

#[derive(Debug)]
pub enum Error {
    Version(String),
    Packet(cipher::Error),
    Malformed(Malformed),
    Kex(kex::Error),
    Protocol(String),
    /// The server ended the connection.
    Disconnected(String),
}

impl From<Malformed> for Error {
    fn from(e: Malformed) -> Self {
        Error::Malformed(e)
    }
}

impl From<kex::Error> for Error {
    fn from(e: kex::Error) -> Self {
        Error::Kex(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Version(line) => write!(
                f,
                "the tunnel server did not answer as an SSH server (first line {line:?}); is the tunnel address in the Edge key Portainer's tunnel port (8000)?"
            ),
            Error::Packet(e) => e.fmt(f),
            Error::Malformed(e) => e.fmt(f),
            Error::Kex(e) => e.fmt(f),
            Error::Protocol(e) => write!(f, "SSH protocol error: {e}"),
            Error::Disconnected(why) => write!(f, "the tunnel server closed the connection: {why}"),
        }
    }
}

/// What is to be sent to the server, packet by packet (the version line counts as one): the
/// session sends each as a WebSocket message of its own, as chisel's client does. chisel's
/// server copies the unread rest of a message at every short read, so one large message of
/// many packets would cost it many copies.
#[derive(Default)]
pub struct Output {
    bytes: Vec<u8>,
    /// Where each packet ends in `bytes`.
    ends: Vec<usize>,
}

impl Output {
    pub fn packets(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let packet = &self.bytes[start..end];
            start = end;
            packet
        })
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Appends one packet, which `write` puts at the end of the bytes.
    fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.bytes);
        self.ends.push(self.bytes.len());
    }
}

enum Kex {
    /// Keys in place; no exchange running.
    Idle,
    /// We sent our KEXINIT and wait for the server's.
    SentInit { ours: Vec<u8> },
    /// Both KEXINITs are known; we sent our exchange value and wait for the server's reply.
    Exchanging {
        ours: Vec<u8>,
        theirs: Vec<u8>,
        negotiated: Negotiated,
        exchange: Exchange,
    },
    /// We sent NEWKEYS and wait for the server's, which switches the receiving keys.
    NewKeysSent { receive: Cipher },
}

pub struct Transport {
    fingerprint: String,
    server_version: Option<Vec<u8>>,
    banner_lines: usize,
    input: Vec<u8>,
    /// Bytes of `input` already consumed.
    consumed: usize,
    receive: Cipher,
    receive_seq: u32,
    send: Cipher,
    send_seq: u32,
    output: Output,
    kex: Kex,
    /// Set by the first exchange; the same for the whole connection.
    session_id: Option<[u8; 32]>,
    /// The first exchange finished (both NEWKEYS passed).
    established: bool,
    strict: bool,
    skip_next: bool,
    /// Payloads from the layer above, held while keys change, and their bytes.
    held: VecDeque<Vec<u8>>,
    held_bytes: usize,
    /// Payloads for the layer above.
    received: VecDeque<Vec<u8>>,
    bytes_since_kex: u64,
    kex_at: Instant,
    /// Early key exchanges the server started in a row.
    early_kex: u32,
}

impl Transport {
    /// Starts a client: our version line and first KEXINIT are queued for sending at once.
    /// `fingerprint` is the one from the Edge key.
    pub fn new(fingerprint: &str) -> Result<Transport, Error> {
        let mut output = Output::default();
        output.push(|bytes| bytes.extend_from_slice(format!("{CLIENT_VERSION}\r\n").as_bytes()));
        let mut t = Transport {
            fingerprint: fingerprint.to_owned(),
            server_version: None,
            banner_lines: 0,
            input: Vec::new(),
            consumed: 0,
            receive: Cipher::plain(),
            receive_seq: 0,
            send: Cipher::plain(),
            send_seq: 0,
            output,
            kex: Kex::Idle,
            session_id: None,
            established: false,
            strict: false,
            skip_next: false,
            held: VecDeque::new(),
            held_bytes: 0,
            received: VecDeque::new(),
            bytes_since_kex: 0,
            kex_at: Instant::now(),
            early_kex: 0,
        };
        t.start_kex()?;
        Ok(t)
    }

    /// The first key exchange is done: payloads flow.
    pub fn established(&self) -> bool {
        self.established
    }

    /// Keys are changing: new payloads are held until they are in place.
    pub fn exchanging_keys(&self) -> bool {
        !matches!(self.kex, Kex::Idle)
    }

    /// Packets to write to the server; the caller empties it.
    pub fn output(&mut self) -> &mut Output {
        &mut self.output
    }

    /// The next payload for the layer above.
    pub fn next_payload(&mut self) -> Option<Vec<u8>> {
        self.received.pop_front()
    }

    /// Queues a payload from the layer above (held during a key exchange).
    pub fn send(&mut self, payload: Vec<u8>) {
        if self.exchanging_keys() || !self.established() {
            self.held_bytes += payload.len();
            self.held.push_back(payload);
        } else {
            self.write_packet(&payload);
        }
    }

    /// Starts a key exchange when enough traffic or time has passed since the last one.
    pub fn rekey_if_due(&mut self, now: Instant) -> Result<(), Error> {
        if self.established()
            && !self.exchanging_keys()
            && (self.bytes_since_kex >= REKEY_BYTES || now - self.kex_at >= REKEY_AFTER)
        {
            self.start_kex()?;
        }
        Ok(())
    }

    /// Queues a DISCONNECT: the last thing to send.
    pub fn disconnect(&mut self, description: &str) {
        let payload = Writer::new(MSG_DISCONNECT)
            .u32(DISCONNECT_BY_APPLICATION)
            .string(description.as_bytes())
            .string(b"")
            .finish();
        // Sent even during a key exchange: the connection ends anyway.
        self.write_packet(&payload);
    }

    /// Takes bytes from the server and processes every complete line or packet in them.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), Error> {
        if self.consumed > 0 && self.consumed == self.input.len() {
            self.input.clear();
            self.consumed = 0;
        }
        self.input.extend_from_slice(data);
        while self.server_version.is_none() {
            if !self.read_version_line()? {
                return Ok(());
            }
        }
        while let Some(payload) = self.read_packet()? {
            self.dispatch(payload)?;
            if self.held_bytes > MAX_HELD {
                return Err(Error::Protocol(format!(
                    "the server kept sending requests without answering our key exchange ({} KiB of answers held, limit {} KiB)",
                    self.held_bytes / 1024,
                    MAX_HELD / 1024
                )));
            }
        }
        if self.consumed > 64 * 1024 {
            self.input.drain(..self.consumed);
            self.consumed = 0;
        }
        Ok(())
    }

    /// Reads one line if complete; `true` when a line was consumed.
    fn read_version_line(&mut self) -> Result<bool, Error> {
        let pending = &self.input[self.consumed..];
        let Some(end) = pending.iter().position(|b| *b == b'\n') else {
            if pending.len() > MAX_LINE {
                return Err(Error::Version(
                    String::from_utf8_lossy(&pending[..40]).into_owned(),
                ));
            }
            return Ok(false);
        };
        let line = &pending[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.consumed += end + 1;
        // Go accepts any line starting with "SSH-": chisel's server says "SSH-chisel-v3-server".
        if line.starts_with(b"SSH-") {
            self.server_version = Some(line.to_vec());
            return Ok(true);
        }
        self.banner_lines += 1;
        if self.banner_lines > MAX_BANNER_LINES || line.len() > MAX_LINE {
            return Err(Error::Version(String::from_utf8_lossy(line).into_owned()));
        }
        Ok(true)
    }

    fn read_packet(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let pending = &mut self.input[self.consumed..];
        if pending.len() < 4 {
            return Ok(None);
        }
        let first = [pending[0], pending[1], pending[2], pending[3]];
        let size = self
            .receive
            .packet_size(self.receive_seq, first)
            .map_err(Error::Packet)?;
        if pending.len() < size {
            return Ok(None);
        }
        let payload = self
            .receive
            .open(self.receive_seq, &mut pending[..size])
            .map_err(Error::Packet)?
            .to_vec();
        self.consumed += size;
        self.receive_seq = self.receive_seq.wrapping_add(1);
        self.bytes_since_kex += size as u64;
        Ok(Some(payload))
    }

    fn write_packet(&mut self, payload: &[u8]) {
        let (send, seq) = (&mut self.send, self.send_seq);
        let mut sealed = 0;
        self.output.push(|bytes| {
            let before = bytes.len();
            send.seal(seq, payload, bytes);
            sealed = bytes.len() - before;
        });
        self.send_seq = self.send_seq.wrapping_add(1);
        self.bytes_since_kex += sealed as u64;
    }

    fn start_kex(&mut self) -> Result<(), Error> {
        let ours = kex::client_kexinit(!self.established())?;
        self.write_packet(&ours);
        self.kex = Kex::SentInit { ours };
        Ok(())
    }

    fn dispatch(&mut self, payload: Vec<u8>) -> Result<(), Error> {
        let number = *payload
            .first()
            .ok_or(Error::Protocol("empty packet".into()))?;
        if self.skip_next {
            self.skip_next = false;
            return Ok(());
        }
        let first_kex = !self.established();
        // Once the server sent its KEXINIT, only the exchange itself until its NEWKEYS.
        let theirs_sent = matches!(self.kex, Kex::Exchanging { .. } | Kex::NewKeysSent { .. });
        match number {
            MSG_DISCONNECT => {
                let mut r = Reader::new(&payload[1..]);
                let code = r.u32()?;
                let text = String::from_utf8_lossy(r.string()?).into_owned();
                Err(Error::Disconnected(format!("{text} (code {code})")))
            }
            // Strict KEX: nothing but the exchange itself during the first one.
            MSG_IGNORE | MSG_DEBUG | MSG_UNIMPLEMENTED if first_kex && self.strict => Err(
                Error::Protocol(format!("message {number} during a strict key exchange")),
            ),
            MSG_IGNORE | MSG_DEBUG | MSG_UNIMPLEMENTED => Ok(()),
            MSG_KEXINIT => self.on_kexinit(payload),
            MSG_KEX_ECDH_REPLY => self.on_reply(&payload),
            MSG_NEWKEYS => self.on_newkeys(),
            _ if first_kex => Err(Error::Protocol(format!(
                "message {number} before the key exchange finished"
            ))),
            _ if theirs_sent => Err(Error::Protocol(format!(
                "message {number} in the middle of a key exchange (RFC 4253 §7.1)"
            ))),
            _ => {
                self.received.push_back(payload);
                Ok(())
            }
        }
    }

    fn on_kexinit(&mut self, theirs: Vec<u8>) -> Result<(), Error> {
        let ours = match std::mem::replace(&mut self.kex, Kex::Idle) {
            Kex::SentInit { ours } => ours,
            // The server starts a re-exchange: answer with ours.
            Kex::Idle if self.established() => {
                self.count_early_kex()?;
                let ours = kex::client_kexinit(false)?;
                self.write_packet(&ours);
                ours
            }
            _ => return Err(Error::Protocol("unexpected KEXINIT".into())),
        };
        let negotiated = kex::negotiate(&theirs)?;
        if !self.established() {
            self.strict = negotiated.strict;
            // Strict KEX also requires the server's KEXINIT to be its very first packet, so
            // nothing can have been slipped in before it (the Terrapin attack).
            if self.strict && self.receive_seq != 1 {
                return Err(Error::Protocol(
                    "strict key exchange: the server's KEXINIT was not its first packet".into(),
                ));
            }
        }
        self.skip_next = negotiated.skip_guess;
        let (exchange, init) = Exchange::start()?;
        debug_assert_eq!(init[0], MSG_KEX_ECDH_INIT);
        self.write_packet(&init);
        self.kex = Kex::Exchanging {
            ours,
            theirs,
            negotiated,
            exchange,
        };
        Ok(())
    }

    /// Refuses a re-key storm (see [`EARLY_KEX_BYTES`]).
    fn count_early_kex(&mut self) -> Result<(), Error> {
        let since = self.kex_at.elapsed();
        if self.bytes_since_kex >= EARLY_KEX_BYTES || since >= EARLY_KEX_AFTER {
            self.early_kex = 0;
            return Ok(());
        }
        self.early_kex += 1;
        if self.early_kex > MAX_EARLY_KEX {
            return Err(Error::Protocol(format!(
                "re-key storm: the server started {} key exchanges in a row, the last {} bytes and {} ms after the previous one (at least {} KiB or {} s apart are accepted, {} in a row sooner)",
                self.early_kex,
                self.bytes_since_kex,
                since.as_millis(),
                EARLY_KEX_BYTES / 1024,
                EARLY_KEX_AFTER.as_secs(),
                MAX_EARLY_KEX
            )));
        }
        Ok(())
    }

    fn on_reply(&mut self, reply: &[u8]) -> Result<(), Error> {
        let Kex::Exchanging {
            ours,
            theirs,
            negotiated,
            exchange,
        } = std::mem::replace(&mut self.kex, Kex::Idle)
        else {
            return Err(Error::Protocol("unexpected key exchange reply".into()));
        };
        let server_version = self.server_version.as_deref().unwrap_or_default();
        let transcript = Transcript {
            client_version: CLIENT_VERSION.as_bytes(),
            server_version,
            client_kexinit: &ours,
            server_kexinit: &theirs,
        };
        let secrets = exchange.finish(reply, &transcript, &self.fingerprint)?;
        let session_id = *self.session_id.get_or_insert(secrets.hash);
        let (send, receive) = keys(&secrets, &session_id, &negotiated);
        self.write_packet(&[MSG_NEWKEYS]);
        self.send = send;
        if self.strict {
            self.send_seq = 0;
        }
        self.kex = Kex::NewKeysSent { receive };
        Ok(())
    }

    fn on_newkeys(&mut self) -> Result<(), Error> {
        let Kex::NewKeysSent { receive } = std::mem::replace(&mut self.kex, Kex::Idle) else {
            return Err(Error::Protocol("unexpected NEWKEYS".into()));
        };
        self.receive = receive;
        if self.strict {
            self.receive_seq = 0;
        }
        self.established = true;
        self.bytes_since_kex = 0;
        self.kex_at = Instant::now();
        while let Some(payload) = self.held.pop_front() {
            self.write_packet(&payload);
        }
        self.held_bytes = 0;
        Ok(())
    }
}

#[cfg(fuzzing)]
impl Transport {
    /// A transport past its first key exchange that opens packets with `receive`: fuzz/ feeds
    /// it packets sealed with the same fixed keys.
    pub fn keyed(receive: Cipher) -> Transport {
        let mut t = Transport::new("fuzz").expect("a KEXINIT cookie from the OS generator");
        t.output.clear();
        t.server_version = Some(b"SSH-2.0-fuzz".to_vec());
        t.kex = Kex::Idle;
        t.session_id = Some([0; 32]);
        t.established = true;
        t.receive = receive;
        t
    }
}

/// The sending and receiving ciphers of a finished exchange.
fn keys(secrets: &Secrets, session_id: &[u8], n: &Negotiated) -> (Cipher, Cipher) {
    let make = |algorithm: cipher::Algorithm, iv: u8, key: u8| {
        Cipher::new(
            algorithm,
            &kex::derive(secrets, session_id, key, algorithm.key_len()),
            &kex::derive(secrets, session_id, iv, algorithm.iv_len()),
        )
    };
    (
        make(n.client_to_server, b'A', b'C'),
        make(n.server_to_client, b'B', b'D'),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_version_and_kexinit_first_and_reads_chisel_version_line() {
        let mut t = Transport::new("fp").unwrap();
        let out: Vec<Vec<u8>> = t.output().packets().map(<[u8]>::to_vec).collect();
        assert_eq!(out[0], b"SSH-chisel-v3-client\r\n");
        assert_eq!(
            out[1][5], MSG_KEXINIT,
            "a KEXINIT packet follows, on its own"
        );
        assert_eq!(out.len(), 2);
        // A banner line, then chisel's version line without "2.0", fed byte by byte.
        for b in b"hello\r\nSSH-chisel-v3-server\r\n" {
            t.feed(&[*b]).unwrap();
        }
        assert_eq!(
            t.server_version.as_deref(),
            Some(&b"SSH-chisel-v3-server"[..])
        );
        assert!(!t.established());
    }

    #[test]
    fn a_non_ssh_server_is_named_as_such() {
        let mut t = Transport::new("fp").unwrap();
        let err = t
            .feed(&b"HTTP/1.1 404 Not Found\r\n".repeat(20))
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not answer as an SSH server"), "{err}");
    }

    #[test]
    fn data_before_the_key_exchange_is_refused() {
        let mut t = Transport::new("fp").unwrap();
        t.feed(b"SSH-2.0-x\r\n").unwrap();
        let mut packet = Vec::new();
        Cipher::plain().seal(0, &[94, 0, 0, 0, 0], &mut packet);
        let err = t.feed(&packet).unwrap_err().to_string();
        assert!(err.contains("before the key exchange"), "{err}");
    }
}
