//! A scripted chisel server for tests, sans I/O like the client it talks to: the key exchange
//! with its own ECDSA host key, authentication and `config`, then whatever a test makes it
//! send, including what a hostile server would. Below it, the rules the client holds a
//! hostile server to, each ending in an error that names the rule.

use super::cipher::{Algorithm, Cipher, MAX_PACKET};
use super::client::*;
use super::kex::{self, Secrets, MSG_KEXINIT, MSG_KEX_ECDH_INIT, MSG_KEX_ECDH_REPLY, MSG_NEWKEYS};
use super::transport::MSG_IGNORE;
use super::wire::{put_mpint, put_string, Reader, Writer};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::digest::{digest, Context, SHA256};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use std::time::{Duration, Instant};

const SERVER_VERSION: &[u8] = b"SSH-chisel-v3-server";
const HOST_KEY: &[u8] = b"ecdsa-sha2-nistp256";

struct Server {
    host: EcdsaKeyPair,
    blob: Vec<u8>,
    fingerprint: String,
    cipher: Algorithm,
    client_version: Vec<u8>,
    receive: Cipher,
    receive_seq: u32,
    send: Cipher,
    send_seq: u32,
    /// Our KEXINIT of the exchange under way.
    ours: Option<Vec<u8>>,
    theirs: Vec<u8>,
    session_id: Option<[u8; 32]>,
    /// The client's keys, switched to at its NEWKEYS.
    next_receive: Option<Cipher>,
    /// Never answer the client's KEXINIT.
    stall_kex: bool,
    /// Bytes for the client.
    out: Vec<u8>,
    /// What the client sent once configured, for the test.
    got: Vec<Vec<u8>>,
    /// Key exchanges finished.
    exchanges: u32,
}

impl Server {
    /// Offers only `cipher`, so the client uses it.
    fn new(cipher: Algorithm) -> Server {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let host = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let mut blob = Vec::new();
        put_string(&mut blob, HOST_KEY);
        put_string(&mut blob, b"nistp256");
        put_string(&mut blob, host.public_key().as_ref());
        let mut server = Server {
            fingerprint: STANDARD.encode(digest(&SHA256, &blob)),
            host,
            blob,
            cipher,
            client_version: Vec::new(),
            receive: Cipher::plain(),
            receive_seq: 0,
            send: Cipher::plain(),
            send_seq: 0,
            ours: None,
            theirs: Vec::new(),
            session_id: None,
            next_receive: None,
            stall_kex: false,
            out: [SERVER_VERSION, b"\r\n"].concat(),
            got: Vec::new(),
            exchanges: 0,
        };
        server.start_kex();
        server
    }

    fn send(&mut self, payload: &[u8]) {
        self.send.seal(self.send_seq, payload, &mut self.out);
        self.send_seq = self.send_seq.wrapping_add(1);
    }

    /// The first four bytes of a packet announcing `length`, as the current keys protect
    /// them: in the clear (plain, AES-GCM) or encrypted (ChaCha20's length key, a stream
    /// cipher, so the keystream comes from a real packet of known length).
    fn forged_length(&mut self, length: u32) -> [u8; 4] {
        let mut packet = Vec::new();
        self.send.seal(self.send_seq, b"x", &mut packet);
        let tag = if self.exchanges == 0 { 0 } else { 16 };
        let real = (packet.len() - 4 - tag) as u32;
        let sent = u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
        (sent ^ real ^ length).to_be_bytes()
    }

    fn start_kex(&mut self) {
        let name = self.cipher.name().as_bytes();
        let ours = Writer::new(MSG_KEXINIT)
            .raw(&[7; 16])
            .string(b"curve25519-sha256")
            .string(HOST_KEY)
            .string(name)
            .string(name)
            .string(b"hmac-sha2-256")
            .string(b"hmac-sha2-256")
            .string(b"none")
            .string(b"none")
            .string(b"")
            .string(b"")
            .bool(false)
            .u32(0)
            .finish();
        self.send(&ours);
        self.ours = Some(ours);
    }

    /// Takes one packet of the client's output (the version line first).
    fn take(&mut self, packet: &[u8]) {
        if self.client_version.is_empty() {
            self.client_version = packet.strip_suffix(b"\r\n").unwrap().to_vec();
            return;
        }
        let mut packet = packet.to_vec();
        let first = [packet[0], packet[1], packet[2], packet[3]];
        let size = self.receive.packet_size(self.receive_seq, first).unwrap();
        assert_eq!(size, packet.len(), "one packet per output item");
        let payload = self
            .receive
            .open(self.receive_seq, &mut packet)
            .unwrap()
            .to_vec();
        self.receive_seq = self.receive_seq.wrapping_add(1);
        match payload[0] {
            MSG_KEXINIT if self.stall_kex => {}
            MSG_KEXINIT => {
                self.theirs = payload;
                if self.ours.is_none() {
                    self.start_kex();
                }
            }
            MSG_KEX_ECDH_INIT => self.reply(&payload),
            MSG_NEWKEYS => {
                self.receive = self.next_receive.take().unwrap();
                self.ours = None;
                self.exchanges += 1;
            }
            MSG_SERVICE_REQUEST => self.send(
                &Writer::new(MSG_SERVICE_ACCEPT)
                    .string(b"ssh-userauth")
                    .finish(),
            ),
            MSG_USERAUTH_REQUEST => self.send(&[MSG_USERAUTH_SUCCESS]),
            MSG_GLOBAL_REQUEST if Reader::new(&payload[1..]).string() == Ok(&b"config"[..]) => {
                self.send(&[MSG_REQUEST_SUCCESS])
            }
            _ => self.got.push(payload),
        }
    }

    /// Answers the client's ECDH_INIT: our half, the signed hash, NEWKEYS, and new keys.
    fn reply(&mut self, init: &[u8]) {
        let rng = SystemRandom::new();
        let client_public = Reader::new(&init[1..]).string().unwrap().to_vec();
        let private = EphemeralPrivateKey::generate(&X25519, &rng).unwrap();
        let public = private.compute_public_key().unwrap().as_ref().to_vec();
        let mut shared = Vec::new();
        agree_ephemeral(
            private,
            &UnparsedPublicKey::new(&X25519, &client_public),
            |s| put_mpint(&mut shared, s),
        )
        .unwrap();
        let ours = self.ours.clone().unwrap();
        let mut h = Context::new(&SHA256);
        for part in [
            &self.client_version[..],
            SERVER_VERSION,
            &self.theirs,
            &ours,
            &self.blob,
            &client_public,
            &public,
        ] {
            let mut field = Vec::new();
            put_string(&mut field, part);
            h.update(&field);
        }
        h.update(&shared);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(h.finish().as_ref());
        let signature = self.host.sign(&rng, &hash).unwrap();
        let (r, s) = signature.as_ref().split_at(32);
        let mut inner = Vec::new();
        put_mpint(&mut inner, r);
        put_mpint(&mut inner, s);
        let mut signature_blob = Vec::new();
        put_string(&mut signature_blob, HOST_KEY);
        put_string(&mut signature_blob, &inner);
        let reply = Writer::new(MSG_KEX_ECDH_REPLY)
            .string(&self.blob)
            .string(&public)
            .string(&signature_blob)
            .finish();
        self.send(&reply);
        self.send(&[MSG_NEWKEYS]);
        let secrets = Secrets { shared, hash };
        let session_id = *self.session_id.get_or_insert(hash);
        let a = self.cipher;
        let key = |iv: u8, key: u8| {
            Cipher::new(
                a,
                &kex::derive(&secrets, &session_id, key, a.key_len()),
                &kex::derive(&secrets, &session_id, iv, a.iv_len()),
            )
        };
        self.send = key(b'B', b'D');
        self.next_receive = Some(key(b'A', b'C'));
    }

    fn open(&mut self, remote: u32, window: u32) {
        self.send(
            &Writer::new(MSG_CHANNEL_OPEN)
                .string(b"chisel")
                .u32(remote)
                .u32(window)
                .u32(32 * 1024)
                .finish(),
        );
    }

    /// What the client sent with this message number, taken out of `got`.
    fn take_got(&mut self, number: u8) -> Vec<Vec<u8>> {
        let (taken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.got)
            .into_iter()
            .partition(|m| m[0] == number);
        self.got = kept;
        taken
    }
}

/// Moves what each side has for the other until both are quiet; the client's error, if any.
fn pump(client: &mut Client, server: &mut Server) -> Result<(), Error> {
    loop {
        let packets: Vec<Vec<u8>> = client.output().packets().map(<[u8]>::to_vec).collect();
        client.output().clear();
        for packet in &packets {
            server.take(packet);
        }
        let out = std::mem::take(&mut server.out);
        if out.is_empty() {
            return Ok(());
        }
        client.feed(&out)?;
    }
}

fn events(client: &mut Client) -> Vec<Event> {
    std::iter::from_fn(|| client.next_event()).collect()
}

/// A client configured by a server offering `cipher`, allowing `max_channels`.
fn connected(cipher: Algorithm, max_channels: usize) -> (Client, Server) {
    let mut server = Server::new(cipher);
    let mut client = Client::new(
        &server.fingerprint,
        "user:pass",
        b"{}".to_vec(),
        max_channels,
    )
    .unwrap();
    pump(&mut client, &mut server).unwrap();
    assert_eq!(events(&mut client), [Event::Ready]);
    assert_eq!(server.exchanges, 1);
    (client, server)
}

const CIPHERS: [Algorithm; 3] = [
    Algorithm::ChaCha20Poly1305,
    Algorithm::Aes256Gcm,
    Algorithm::Aes128Gcm,
];

fn error_of(result: Result<(), Error>) -> String {
    result.expect_err("the client accepted it").to_string()
}

#[test]
fn the_scripted_server_carries_data_on_every_cipher_through_a_rekey() {
    for cipher in CIPHERS {
        let (mut client, mut server) = connected(cipher, 4);
        server.open(100, 1 << 20);
        pump(&mut client, &mut server).unwrap();
        server.start_kex();
        pump(&mut client, &mut server).unwrap();
        assert_eq!(server.exchanges, 2, "{cipher:?}");
        server.send(&Writer::new(MSG_CHANNEL_DATA).u32(0).string(b"hi").finish());
        client.send_data(0, b"back");
        pump(&mut client, &mut server).unwrap();
        let got = events(&mut client);
        assert!(got.contains(&Event::Data {
            id: 0,
            data: b"hi".to_vec()
        }));
        assert_eq!(server.take_got(MSG_CHANNEL_OPEN_CONFIRMATION).len(), 1);
        let data = server.take_got(MSG_CHANNEL_DATA);
        assert_eq!(Reader::new(&data[0][5..]).string(), Ok(&b"back"[..]));
    }
}

#[test]
fn packet_lengths_near_2_32_are_refused_from_their_length_field() {
    let lengths = [u32::MAX, u32::MAX - 15, 1 << 31, MAX_PACKET as u32 + 8];
    // Before keys are set: the length is in the clear. Only the four bytes of it arrive,
    // so nothing is read, let alone allocated, for the announced size.
    for length in lengths {
        let mut server = Server::new(Algorithm::ChaCha20Poly1305);
        let mut client = Client::new(&server.fingerprint, "u:p", b"{}".to_vec(), 4).unwrap();
        let mut bytes = [SERVER_VERSION, b"\r\n"].concat();
        bytes.extend_from_slice(&server.forged_length(length));
        let err = error_of(client.feed(&bytes));
        assert_eq!(
            err,
            format!("the server sent an SSH packet of {length} bytes, over the limit of 262144 (RFC 4253 §6.1)")
        );
    }
    // After: encrypted with ChaCha20's length key, or in the clear as AES-GCM's AAD.
    for cipher in CIPHERS {
        for length in lengths {
            let (mut client, mut server) = connected(cipher, 4);
            let forged = server.forged_length(length);
            let err = error_of(client.feed(&forged));
            assert!(
                err.contains(&format!(
                    "SSH packet of {length} bytes, over the limit of 262144"
                )),
                "{cipher:?}: {err}"
            );
        }
    }
}

#[test]
fn a_window_adjust_past_2_32_minus_1_is_refused() {
    let (mut client, mut server) = connected(Algorithm::ChaCha20Poly1305, 4);
    server.open(100, u32::MAX - 1000);
    pump(&mut client, &mut server).unwrap();
    let adjust = |bytes: u32| {
        Writer::new(MSG_CHANNEL_WINDOW_ADJUST)
            .u32(0)
            .u32(bytes)
            .finish()
    };
    // Up to 2^32-1 exactly; what we send makes room again.
    server.send(&adjust(1000));
    pump(&mut client, &mut server).unwrap();
    client.send_data(0, &[0; 500]);
    server.send(&adjust(500));
    pump(&mut client, &mut server).unwrap();
    assert_eq!(server.take_got(MSG_CHANNEL_DATA).len(), 1);
    server.send(&adjust(1));
    let err = error_of(pump(&mut client, &mut server));
    assert_eq!(
        err,
        "SSH protocol error: the server's WINDOW_ADJUST of 1 bytes on channel 0 pushes its window of 4294967295 bytes past 2^32-1 (RFC 4254 §5.2)"
    );
    // One adjustment of 2^32-1 on a fresh channel overflows too.
    let (mut client, mut server) = connected(Algorithm::Aes128Gcm, 4);
    server.open(100, 1);
    server.send(&adjust(u32::MAX));
    let err = error_of(pump(&mut client, &mut server));
    assert!(err.contains("WINDOW_ADJUST of 4294967295 bytes"), "{err}");
}

#[test]
fn ten_thousand_opens_get_64_channels_the_rest_refused_and_the_64_keep_working() {
    let (mut client, mut server) = connected(Algorithm::ChaCha20Poly1305, 64);
    for batch in 0..100 {
        for i in 0..100 {
            server.open(batch * 100 + i, 32 * 1024);
        }
        pump(&mut client, &mut server).unwrap();
        // The client's answers go out with each batch: nothing piles up.
        assert_eq!(
            server.take_got(MSG_CHANNEL_OPEN_FAILURE).len() as u32
                + server.take_got(MSG_CHANNEL_OPEN_CONFIRMATION).len() as u32,
            100
        );
    }
    let got = events(&mut client);
    let opened = got
        .iter()
        .filter(|e| matches!(e, Event::Opened { .. }))
        .count();
    assert_eq!(opened, 64);
    assert_eq!(
        got.iter()
            .filter(|e| matches!(e, Event::TooManyChannels { max: 64 }))
            .count(),
        1,
        "said once per connection"
    );
    // The 64 carry data both ways.
    for id in 0..64 {
        server.send(&Writer::new(MSG_CHANNEL_DATA).u32(id).string(b"in").finish());
        client.send_data(id, b"out");
    }
    pump(&mut client, &mut server).unwrap();
    assert_eq!(server.take_got(MSG_CHANNEL_DATA).len(), 64);
    let data = events(&mut client)
        .into_iter()
        .filter(|e| matches!(e, Event::Data { .. }))
        .count();
    assert_eq!(data, 64);
    // One closes: the next open is accepted again, and refused once more above the limit.
    server.send(&Writer::new(MSG_CHANNEL_CLOSE).u32(5).finish());
    server.open(20_000, 1024);
    server.open(20_001, 1024);
    pump(&mut client, &mut server).unwrap();
    assert_eq!(server.take_got(MSG_CHANNEL_OPEN_CONFIRMATION).len(), 1);
    let refused = server.take_got(MSG_CHANNEL_OPEN_FAILURE);
    assert_eq!(refused.len(), 1);
    let mut r = Reader::new(&refused[0][1..]);
    assert_eq!((r.u32(), r.u32()), (Ok(20_001), Ok(OPEN_RESOURCE_SHORTAGE)));
}

#[test]
fn messages_for_channels_that_are_not_open_end_the_connection() {
    let messages: [(u8, &str, Vec<u8>); 6] = [
        (
            MSG_CHANNEL_DATA,
            "CHANNEL_DATA",
            Writer::new(0).string(b"x").finish(),
        ),
        (
            MSG_CHANNEL_EXTENDED_DATA,
            "CHANNEL_EXTENDED_DATA",
            Writer::new(0).u32(1).string(b"x").finish(),
        ),
        (
            MSG_CHANNEL_WINDOW_ADJUST,
            "CHANNEL_WINDOW_ADJUST",
            Writer::new(0).u32(5).finish(),
        ),
        (MSG_CHANNEL_EOF, "CHANNEL_EOF", vec![0]),
        (MSG_CHANNEL_CLOSE, "CHANNEL_CLOSE", vec![0]),
        (
            MSG_CHANNEL_REQUEST,
            "CHANNEL_REQUEST",
            Writer::new(0).string(b"x").bool(true).finish(),
        ),
    ];
    for (number, name, rest) in &messages {
        // Never opened (7), and closed by the server (0).
        for (id, close_first) in [(7u32, false), (0, true)] {
            let (mut client, mut server) = connected(Algorithm::ChaCha20Poly1305, 4);
            server.open(100, 1024);
            if close_first {
                server.send(&Writer::new(MSG_CHANNEL_CLOSE).u32(0).finish());
            }
            pump(&mut client, &mut server).unwrap();
            let mut message = Writer::new(*number).u32(id).finish();
            message.extend_from_slice(&rest[1..]);
            server.send(&message);
            let err = error_of(pump(&mut client, &mut server));
            assert_eq!(
                err,
                format!("SSH protocol error: the server sent {name} for channel {id}, which is not open")
            );
        }
    }
}

#[test]
fn data_beyond_the_window_we_granted_ends_the_connection() {
    let (mut client, mut server) = connected(Algorithm::ChaCha20Poly1305, 4);
    server.open(100, 1024);
    for _ in 0..2 {
        server.send(
            &Writer::new(MSG_CHANNEL_DATA)
                .u32(0)
                .string(&[1; 16 * 1024])
                .finish(),
        );
    }
    pump(&mut client, &mut server).unwrap();
    server.send(&Writer::new(MSG_CHANNEL_DATA).u32(0).string(b"!").finish());
    let err = error_of(pump(&mut client, &mut server));
    assert_eq!(
        err,
        "SSH protocol error: the server sent 1 bytes on channel 0, more than its window of 0 bytes"
    );
}

#[test]
fn a_rekey_storm_is_refused_and_rekeys_with_traffic_between_are_not() {
    for cipher in CIPHERS {
        let (mut client, mut server) = connected(cipher, 4);
        // Three early ones in a row pass (a burst); the fourth is a storm.
        for _ in 0..3 {
            server.start_kex();
            pump(&mut client, &mut server).unwrap();
        }
        assert_eq!(server.exchanges, 4);
        server.start_kex();
        let err = error_of(pump(&mut client, &mut server));
        assert!(
            err.starts_with(
                "SSH protocol error: re-key storm: the server started 4 key exchanges in a row"
            ),
            "{err}"
        );
        assert!(err.contains("at least 16 KiB or 10 s apart"), "{err}");
    }
    // Go's RekeyThreshold of 64 KiB (tests/tunnel.rs re-keys dozens of times so): 50 exchanges.
    let (mut client, mut server) = connected(Algorithm::ChaCha20Poly1305, 4);
    for _ in 0..50 {
        for _ in 0..2 {
            server.send(&Writer::new(MSG_IGNORE).string(&[0; 8 * 1024]).finish());
        }
        server.start_kex();
        pump(&mut client, &mut server).unwrap();
    }
    assert_eq!(server.exchanges, 51);
}

#[test]
fn a_server_sends_only_the_key_exchange_once_it_started_one() {
    let (mut client, mut server) = connected(Algorithm::ChaCha20Poly1305, 4);
    server.start_kex();
    server.open(100, 1024);
    let err = error_of(pump(&mut client, &mut server));
    assert_eq!(
        err,
        "SSH protocol error: message 90 in the middle of a key exchange (RFC 4253 §7.1)"
    );
}

#[test]
fn a_server_that_never_answers_our_rekey_cannot_pile_up_answers() {
    let (mut client, mut server) = connected(Algorithm::ChaCha20Poly1305, 4);
    server.stall_kex = true;
    // An hour on: our own re-key is due, and the server ignores it, sending pings instead.
    client
        .tick(Instant::now() + Duration::from_secs(3601))
        .unwrap();
    pump(&mut client, &mut server).unwrap();
    let ping = Writer::new(MSG_GLOBAL_REQUEST)
        .string(b"ping")
        .bool(true)
        .finish();
    let mut result = Ok(());
    for _ in 0..100_000 {
        server.send(&ping);
        result = pump(&mut client, &mut server);
        if result.is_err() {
            break;
        }
    }
    let err = error_of(result);
    assert_eq!(
        err,
        "SSH protocol error: the server kept sending requests without answering our key exchange (256 KiB of answers held, limit 256 KiB)"
    );
}
