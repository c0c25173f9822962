//! The SSH connection as a chisel client uses it (RFC 4252, RFC 4254), sans I/O: password
//! authentication, the `config` global request, `ping` both ways, and the `chisel` channels the
//! server opens, with flow control so a slow reader never makes memory grow.

use super::kex;
use super::transport::{self, Transport};
use super::wire::{Malformed, Reader, Writer};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Instant;

pub(super) const MSG_SERVICE_REQUEST: u8 = 5;
pub(super) const MSG_SERVICE_ACCEPT: u8 = 6;
pub(super) const MSG_USERAUTH_REQUEST: u8 = 50;
const MSG_USERAUTH_FAILURE: u8 = 51;
pub(super) const MSG_USERAUTH_SUCCESS: u8 = 52;
const MSG_USERAUTH_BANNER: u8 = 53;
pub(super) const MSG_GLOBAL_REQUEST: u8 = 80;
pub(super) const MSG_REQUEST_SUCCESS: u8 = 81;
const MSG_REQUEST_FAILURE: u8 = 82;
pub(super) const MSG_CHANNEL_OPEN: u8 = 90;
pub(super) const MSG_CHANNEL_OPEN_CONFIRMATION: u8 = 91;
pub(super) const MSG_CHANNEL_OPEN_FAILURE: u8 = 92;
pub(super) const MSG_CHANNEL_WINDOW_ADJUST: u8 = 93;
pub(super) const MSG_CHANNEL_DATA: u8 = 94;
pub(super) const MSG_CHANNEL_EXTENDED_DATA: u8 = 95;
pub(super) const MSG_CHANNEL_EOF: u8 = 96;
pub(super) const MSG_CHANNEL_CLOSE: u8 = 97;
pub(super) const MSG_CHANNEL_REQUEST: u8 = 98;
const MSG_CHANNEL_FAILURE: u8 = 100;

const OPEN_ADMINISTRATIVELY_PROHIBITED: u32 = 1;
const OPEN_UNKNOWN_CHANNEL_TYPE: u32 = 3;
pub(super) const OPEN_RESOURCE_SHORTAGE: u32 = 4;

/// The channel type chisel's server opens for each connection to the reverse port.
const CHISEL_CHANNEL: &[u8] = b"chisel";

/// The window a channel starts with: what the server may send on it before we read it, so
/// the memory a channel that is not busy can hold.
const WINDOW: u32 = 32 * 1024;
/// What the windows of all channels together grow to: a busy channel's window doubles at each
/// adjustment up to its share of this (all of it alone), so one transfer is not held back by
/// round trips while many at once still cost bounded memory.
const WINDOW_BUDGET: u32 = 1024 * 1024;
/// The largest data packet we accept.
pub const MAX_PACKET: u32 = 32 * 1024;

#[derive(Debug)]
pub enum Error {
    Transport(transport::Error),
    Malformed(Malformed),
    AuthFailed,
    /// The server refused the `config` request; its reason follows.
    ConfigRefused(String),
    Protocol(String),
}

impl Error {
    /// The server's host key is not the one the Edge key names.
    pub fn is_fingerprint_mismatch(&self) -> bool {
        matches!(
            self,
            Error::Transport(transport::Error::Kex(kex::Error::Fingerprint { .. }))
        )
    }
}

impl From<transport::Error> for Error {
    fn from(e: transport::Error) -> Self {
        Error::Transport(e)
    }
}

impl From<Malformed> for Error {
    fn from(e: Malformed) -> Self {
        Error::Malformed(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Transport(e) => e.fmt(f),
            Error::Malformed(e) => e.fmt(f),
            Error::AuthFailed => f.write_str(
                "the tunnel server refused the credentials of the last poll (the tunnel was probably closed and reopened by Portainer; the next poll brings new ones)",
            ),
            Error::ConfigRefused(reason) => {
                write!(f, "the tunnel server refused the reverse port: {reason}")
            }
            Error::Protocol(e) => write!(f, "SSH protocol error: {e}"),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Authenticated, and the server accepted the configuration: channels may come.
    Ready,
    /// The server opened a channel; `window` and `max_packet` bound what we may send on it.
    Opened {
        id: u32,
        window: u32,
        max_packet: u32,
    },
    Data {
        id: u32,
        data: Vec<u8>,
    },
    /// The server allows `bytes` more on the channel.
    Window {
        id: u32,
        bytes: u32,
    },
    /// The server sends nothing more on the channel.
    Eof {
        id: u32,
    },
    /// The channel is gone in both directions.
    Closed {
        id: u32,
    },
    /// The answer to our keepalive.
    Pong,
    /// The server opened more channels than `max_channels` at once: the first refusal of
    /// the connection (the others are refused silently).
    TooManyChannels {
        max: usize,
    },
}

/// A busy channel's window adjustment, half of its window `limit` having been `consumed`: the
/// new limit (double, within `share` of the budget but never below [`WINDOW`]) and the bytes
/// to grant. Above the new limit, nothing is granted until enough was read to come down to it.
fn regrant(limit: u32, consumed: u32, share: u32) -> (u32, u32) {
    let wanted = limit.saturating_mul(2).min(share).max(WINDOW);
    match consumed.saturating_add(wanted).checked_sub(limit) {
        Some(grant) => (wanted, grant),
        None => (limit - consumed, 0),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Stage {
    Keys,
    Service,
    Auth,
    Config,
    Running,
}

enum Pending {
    Config,
    Ping,
}

struct Channel {
    remote: u32,
    /// What we may still send: the server's window, never above 2^32-1 (RFC 4254 §5.2).
    send_window: u32,
    /// What the server may still send before we adjust the window.
    window: u32,
    /// Read by the consumer since the last adjustment.
    consumed: u32,
    /// The window's size: `window`, `consumed` and the data not read yet add up to it.
    limit: u32,
    sent_eof: bool,
    sent_close: bool,
}

pub struct Client {
    transport: Transport,
    user: String,
    password: String,
    config: Vec<u8>,
    stage: Stage,
    channels: HashMap<u32, Channel>,
    next_id: u32,
    max_channels: usize,
    pending: VecDeque<Pending>,
    events: VecDeque<Event>,
    refused_for_limit: bool,
}

impl Client {
    /// `credentials` is chisel's `user:pass`; `config` the JSON of the `config` request.
    pub fn new(
        fingerprint: &str,
        credentials: &str,
        config: Vec<u8>,
        max_channels: usize,
    ) -> Result<Client, Error> {
        let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
        Ok(Client {
            transport: Transport::new(fingerprint)?,
            user: user.to_owned(),
            password: password.to_owned(),
            config,
            stage: Stage::Keys,
            channels: HashMap::new(),
            next_id: 0,
            max_channels,
            pending: VecDeque::new(),
            events: VecDeque::new(),
            refused_for_limit: false,
        })
    }

    /// A client whose transport opens packets with `receive` (keys set, nothing else done yet).
    #[cfg(fuzzing)]
    pub fn keyed(receive: super::cipher::Cipher, config: Vec<u8>, max_channels: usize) -> Client {
        let mut client = Client::new("fuzz", "fuzz:fuzz", config, max_channels)
            .expect("a KEXINIT cookie from the OS generator");
        client.transport = Transport::keyed(receive);
        client
    }

    /// Packets to send to the server; the caller empties it.
    pub fn output(&mut self) -> &mut transport::Output {
        self.transport.output()
    }

    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Channel data may be sent now (not while keys change: it would only pile up).
    pub fn can_send_data(&self) -> bool {
        self.stage == Stage::Running && !self.transport.exchanging_keys()
    }

    /// Takes bytes from the server.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), Error> {
        self.transport.feed(data)?;
        if self.stage == Stage::Keys && self.transport.established() {
            self.stage = Stage::Service;
            self.transport.send(
                Writer::new(MSG_SERVICE_REQUEST)
                    .string(b"ssh-userauth")
                    .finish(),
            );
        }
        while let Some(payload) = self.transport.next_payload() {
            self.handle(&payload)?;
        }
        Ok(())
    }

    /// Starts a key re-exchange when one is due.
    pub fn tick(&mut self, now: Instant) -> Result<(), Error> {
        Ok(self.transport.rekey_if_due(now)?)
    }

    /// Sends `data` on channel `id`; the caller keeps within the window and packet size it
    /// was given. Data for a channel that is gone is dropped.
    pub fn send_data(&mut self, id: u32, data: &[u8]) {
        if let Some(ch) = self.channels.get_mut(&id).filter(|c| !c.sent_eof) {
            ch.send_window = ch.send_window.saturating_sub(data.len() as u32);
            let msg = Writer::new(MSG_CHANNEL_DATA)
                .u32(ch.remote)
                .string(data)
                .finish();
            self.transport.send(msg);
        }
    }

    /// The consumer read `bytes` of channel `id`: let the server send more.
    pub fn consumed(&mut self, id: u32, bytes: u32) {
        let share = WINDOW_BUDGET / self.channels.len().max(1) as u32;
        let Some(ch) = self.channels.get_mut(&id) else {
            return;
        };
        ch.consumed = ch.consumed.saturating_add(bytes);
        if ch.consumed < ch.limit / 2 || ch.sent_close {
            return;
        }
        let (limit, grant) = regrant(ch.limit, ch.consumed, share);
        ch.limit = limit;
        ch.consumed = 0;
        if grant > 0 {
            ch.window = ch.window.saturating_add(grant);
            let msg = Writer::new(MSG_CHANNEL_WINDOW_ADJUST)
                .u32(ch.remote)
                .u32(grant)
                .finish();
            self.transport.send(msg);
        }
    }

    /// Our side of channel `id` is done: EOF and CLOSE (chisel does not half-close).
    pub fn close(&mut self, id: u32) {
        let Some(ch) = self.channels.get_mut(&id) else {
            return;
        };
        let remote = ch.remote;
        let (eof, close) = (!ch.sent_eof, !ch.sent_close);
        ch.sent_eof = true;
        ch.sent_close = true;
        if eof {
            self.transport
                .send(Writer::new(MSG_CHANNEL_EOF).u32(remote).finish());
        }
        if close {
            self.transport
                .send(Writer::new(MSG_CHANNEL_CLOSE).u32(remote).finish());
        }
    }

    /// Sends a keepalive; [`Event::Pong`] comes back. chisel's server answers `ping` (and
    /// nothing else: other requests are never answered).
    pub fn ping(&mut self) {
        self.pending.push_back(Pending::Ping);
        self.transport.send(
            Writer::new(MSG_GLOBAL_REQUEST)
                .string(b"ping")
                .bool(true)
                .finish(),
        );
    }

    pub fn disconnect(&mut self, description: &str) {
        self.transport.disconnect(description);
    }

    fn handle(&mut self, payload: &[u8]) -> Result<(), Error> {
        let mut r = Reader::new(payload);
        let number = r.u8()?;
        match (number, &self.stage) {
            (MSG_SERVICE_ACCEPT, Stage::Service) => {
                self.stage = Stage::Auth;
                self.transport.send(
                    Writer::new(MSG_USERAUTH_REQUEST)
                        .string(self.user.as_bytes())
                        .string(b"ssh-connection")
                        .string(b"password")
                        .bool(false)
                        .string(self.password.as_bytes())
                        .finish(),
                );
            }
            (MSG_USERAUTH_BANNER, _) => {
                log::debug!(
                    "tunnel server banner: {}",
                    String::from_utf8_lossy(r.string()?)
                );
            }
            (MSG_USERAUTH_FAILURE, Stage::Auth) => return Err(Error::AuthFailed),
            (MSG_USERAUTH_SUCCESS, Stage::Auth) => {
                // chisel's server expects `config` as the first global request.
                self.stage = Stage::Config;
                self.pending.push_back(Pending::Config);
                self.transport.send(
                    Writer::new(MSG_GLOBAL_REQUEST)
                        .string(b"config")
                        .bool(true)
                        .raw(&self.config)
                        .finish(),
                );
            }
            (MSG_REQUEST_SUCCESS | MSG_REQUEST_FAILURE, _) => {
                let ok = number == MSG_REQUEST_SUCCESS;
                match self.pending.pop_front() {
                    Some(Pending::Config) if ok => {
                        self.stage = Stage::Running;
                        self.events.push_back(Event::Ready);
                    }
                    Some(Pending::Config) => {
                        // Go's server puts its reason after the message number.
                        let reason = String::from_utf8_lossy(r.rest()).trim().to_owned();
                        return Err(Error::ConfigRefused(if reason.is_empty() {
                            "no reason given".into()
                        } else {
                            reason
                        }));
                    }
                    Some(Pending::Ping) => self.events.push_back(Event::Pong),
                    None => return Err(Error::Protocol("a reply to no request".into())),
                }
            }
            (MSG_GLOBAL_REQUEST, _) => {
                let name = r.string()?;
                if r.bool()? {
                    let reply = if name == b"ping" {
                        Writer::new(MSG_REQUEST_SUCCESS).raw(b"pong").finish()
                    } else {
                        Writer::new(MSG_REQUEST_FAILURE).finish()
                    };
                    self.transport.send(reply);
                }
            }
            (MSG_CHANNEL_OPEN, _) => self.on_open(&mut r)?,
            (MSG_CHANNEL_DATA, Stage::Running) => {
                let id = r.u32()?;
                let data = r.string()?;
                take_window(
                    channel(&mut self.channels, id, "CHANNEL_DATA")?,
                    id,
                    data.len(),
                )?;
                self.events.push_back(Event::Data {
                    id,
                    data: data.to_vec(),
                });
            }
            (MSG_CHANNEL_EXTENDED_DATA, Stage::Running) => {
                // Not part of chisel's protocol: give the window back and drop it.
                let id = r.u32()?;
                r.u32()?;
                let len = r.string()?.len();
                take_window(
                    channel(&mut self.channels, id, "CHANNEL_EXTENDED_DATA")?,
                    id,
                    len,
                )?;
                self.consumed(id, len as u32);
            }
            (MSG_CHANNEL_WINDOW_ADJUST, Stage::Running) => {
                let id = r.u32()?;
                let bytes = r.u32()?;
                let ch = channel(&mut self.channels, id, "CHANNEL_WINDOW_ADJUST")?;
                ch.send_window = ch.send_window.checked_add(bytes).ok_or_else(|| {
                    Error::Protocol(format!(
                        "the server's WINDOW_ADJUST of {bytes} bytes on channel {id} pushes its window of {} bytes past 2^32-1 (RFC 4254 §5.2)",
                        ch.send_window
                    ))
                })?;
                self.events.push_back(Event::Window { id, bytes });
            }
            (MSG_CHANNEL_EOF, Stage::Running) => {
                let id = r.u32()?;
                channel(&mut self.channels, id, "CHANNEL_EOF")?;
                self.events.push_back(Event::Eof { id });
            }
            (MSG_CHANNEL_CLOSE, Stage::Running) => {
                let id = r.u32()?;
                let ch = self
                    .channels
                    .remove(&id)
                    .ok_or_else(|| not_open("CHANNEL_CLOSE", id))?;
                if !ch.sent_close {
                    self.transport
                        .send(Writer::new(MSG_CHANNEL_CLOSE).u32(ch.remote).finish());
                }
                self.events.push_back(Event::Closed { id });
            }
            (MSG_CHANNEL_REQUEST, Stage::Running) => {
                let id = r.u32()?;
                r.string()?;
                let remote = channel(&mut self.channels, id, "CHANNEL_REQUEST")?.remote;
                if r.bool()? {
                    self.transport
                        .send(Writer::new(MSG_CHANNEL_FAILURE).u32(remote).finish());
                }
            }
            _ => {
                return Err(Error::Protocol(format!(
                    "unexpected message {number} while {:?}",
                    self.stage
                )))
            }
        }
        Ok(())
    }

    fn on_open(&mut self, r: &mut Reader<'_>) -> Result<(), Error> {
        let kind = r.string()?;
        let remote = r.u32()?;
        let window = r.u32()?;
        let max_packet = r.u32()?;
        let refusal = if kind != CHISEL_CHANNEL {
            Some((OPEN_UNKNOWN_CHANNEL_TYPE, "only chisel channels are served"))
        } else if self.stage != Stage::Running {
            Some((OPEN_ADMINISTRATIVELY_PROHIBITED, "not configured yet"))
        } else if self.channels.len() >= self.max_channels {
            if !std::mem::replace(&mut self.refused_for_limit, true) {
                self.events.push_back(Event::TooManyChannels {
                    max: self.max_channels,
                });
            }
            Some((OPEN_RESOURCE_SHORTAGE, "too many connections at once"))
        } else {
            None
        };
        if let Some((code, text)) = refusal {
            log::debug!(
                "refused a {:?} channel: {text}",
                String::from_utf8_lossy(kind)
            );
            self.transport.send(
                Writer::new(MSG_CHANNEL_OPEN_FAILURE)
                    .u32(remote)
                    .u32(code)
                    .string(text.as_bytes())
                    .string(b"")
                    .finish(),
            );
            return Ok(());
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.channels.insert(
            id,
            Channel {
                remote,
                send_window: window,
                window: WINDOW,
                consumed: 0,
                limit: WINDOW,
                sent_eof: false,
                sent_close: false,
            },
        );
        self.transport.send(
            Writer::new(MSG_CHANNEL_OPEN_CONFIRMATION)
                .u32(remote)
                .u32(id)
                .u32(WINDOW)
                .u32(MAX_PACKET)
                .finish(),
        );
        self.events.push_back(Event::Opened {
            id,
            window,
            max_packet,
        });
        Ok(())
    }
}

/// The open channel `id` a message names: naming another is a protocol error (a server
/// sends nothing on a channel after its CLOSE, and only on channels it opened).
fn channel<'a>(
    channels: &'a mut HashMap<u32, Channel>,
    id: u32,
    message: &str,
) -> Result<&'a mut Channel, Error> {
    channels.get_mut(&id).ok_or_else(|| not_open(message, id))
}

fn not_open(message: &str, id: u32) -> Error {
    Error::Protocol(format!(
        "the server sent {message} for channel {id}, which is not open"
    ))
}

/// `len` bytes arrived on channel `id`: within the window we granted, or a protocol error.
fn take_window(ch: &mut Channel, id: u32, len: usize) -> Result<(), Error> {
    ch.window = u32::try_from(len)
        .ok()
        .and_then(|len| ch.window.checked_sub(len))
        .ok_or_else(|| {
            Error::Protocol(format!(
                "the server sent {len} bytes on channel {id}, more than its window of {} bytes",
                ch.window
            ))
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_window_doubles_up_to_its_share_and_shrinks_to_it() {
        // Alone: 32 KiB, 64 KiB, ... up to the whole budget, never beyond.
        let mut limit = WINDOW;
        let mut limits = Vec::new();
        while limits.last() != Some(&limit) {
            limits.push(limit);
            let (next, grant) = regrant(limit, limit / 2, WINDOW_BUDGET);
            assert_eq!(
                grant,
                limit / 2 + next - limit,
                "what was read, plus the growth"
            );
            limit = next;
        }
        assert_eq!(limits.first(), Some(&WINDOW));
        assert_eq!(limits.last(), Some(&WINDOW_BUDGET));
        // Now one of 50: the window comes down as data is read, granting nothing meanwhile.
        let share = WINDOW_BUDGET / 50;
        assert_eq!(
            regrant(WINDOW_BUDGET, WINDOW_BUDGET / 2, share),
            (WINDOW_BUDGET / 2, 0)
        );
        assert_eq!(regrant(WINDOW * 2, WINDOW, share), (WINDOW, 0));
        assert_eq!(
            regrant(WINDOW, WINDOW / 2, share),
            (WINDOW, WINDOW / 2),
            "never below"
        );
    }
}
