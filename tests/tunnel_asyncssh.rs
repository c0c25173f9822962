//! The reverse tunnel against a chisel server on Python's asyncssh
//! (`tests/chisel/asyncssh_server.py`), an SSH implementation that, unlike Debian's Go
//! x/crypto behind `tunnel.rs`, negotiates strict KEX and offers aes256-gcm@openssh.com, as
//! Portainer 2.21+'s newer x/crypto does. The server reports what each key exchange agreed on;
//! every transfer below would break on a wrong key (and with chacha20-poly1305, whose nonce
//! it is, on a wrong sequence number), and a server that breaks strict KEX on purpose must be
//! refused.

mod support;

use edge_agent::tunnel::Tunnel;
use std::collections::HashMap;
use support::chisel::*;

/// `started` on the asyncssh server.
fn started_asyncssh(args: &[&str]) -> (ChiselServer, u16, Tunnel) {
    let server = ChiselServer::start_asyncssh(args);
    let (port, tunnel) = open_tunnel(&server, "user:pass", |_| {});
    (server, port, tunnel)
}

/// The server's `<prefix> kex=.. cipher_cs=.. cipher_sc=.. strict=..` lines, as name → value.
fn exchanges(server: &ChiselServer, prefix: &str) -> Vec<HashMap<String, String>> {
    server
        .events()
        .iter()
        .filter_map(|e| e.strip_prefix(prefix)?.strip_prefix(' '))
        .map(|fields| {
            fields
                .split(' ')
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

/// The first key exchange, once the server reported it.
fn negotiated(server: &ChiselServer) -> HashMap<String, String> {
    server.wait_for("negotiated ", 1, WAIT);
    let mut all = exchanges(server, "negotiated");
    assert_eq!(all.len(), 1, "{:?}", server.events());
    all.remove(0)
}

/// The cipher the agent asks for first: AES-GCM where the CPU has AES instructions (and
/// carry-less multiplication), ChaCha20 elsewhere.
fn first_choice() -> &'static str {
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    if std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq")
    {
        return "aes128-gcm@openssh.com";
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("aes") {
        return "aes128-gcm@openssh.com";
    }
    "chacha20-poly1305@openssh.com"
}

/// Asserts a strict key exchange with curve25519-sha256 and `cipher` both ways.
fn assert_strict(exchange: &HashMap<String, String>, cipher: &str) {
    let field = |name: &str| exchange.get(name).map(String::as_str);
    assert_eq!(field("kex"), Some("curve25519-sha256"), "{exchange:?}");
    assert_eq!(field("cipher_cs"), Some(cipher), "{exchange:?}");
    assert_eq!(field("cipher_sc"), Some(cipher), "{exchange:?}");
    assert_eq!(field("strict"), Some("True"), "{exchange:?}");
}

#[test]
#[ignore = "needs Python's asyncssh (tests/run.sh)"]
fn strict_kex_by_default_large_transfers_and_many_channels() {
    let (server, port, _tunnel) = started_asyncssh(&[]);
    echo_through(port, pattern(8 << 20, 11));
    let workers: Vec<_> = (0..20)
        .map(|i| std::thread::spawn(move || echo_through(port, pattern(256 << 10, i))))
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    // Our first choice of cipher, which asyncssh offers too.
    assert_strict(&negotiated(&server), first_choice());
    let events = server.events();
    assert!(
        events.contains(&"client version SSH-chisel-v3-client".to_owned()),
        "{events:?}"
    );
    assert_eq!(
        server.count("auth ok user"),
        1,
        "one connection carries every channel"
    );
}

/// The server offers only `cipher`: the tunnel uses it, under strict KEX.
fn only(cipher: &str) {
    let (server, port, _tunnel) = started_asyncssh(&["-ciphers", cipher]);
    echo_through(port, pattern(2 << 20, 5));
    assert_strict(&negotiated(&server), cipher);
}

#[test]
#[ignore = "needs Python's asyncssh (tests/run.sh)"]
fn aes256_gcm_when_the_server_offers_only_that() {
    only("aes256-gcm@openssh.com");
}

#[test]
#[ignore = "needs Python's asyncssh (tests/run.sh)"]
fn chacha20_poly1305_when_the_server_offers_only_that() {
    only("chacha20-poly1305@openssh.com");
}

#[test]
#[ignore = "needs Python's asyncssh (tests/run.sh)"]
fn aes128_gcm_when_the_server_offers_only_that() {
    only("aes128-gcm@openssh.com");
}

/// asyncssh re-keys after sending `-rekey` bytes. With strict KEX both sides restart their
/// sequence numbers at every NEWKEYS; chacha20-poly1305's nonce is the sequence number, so a
/// wrong restart breaks the first packet after any of these exchanges. AES-GCM's nonce is its
/// own counter (the sequence number does not show on the wire): there the keys and IVs of each
/// exchange are what is checked.
fn rekeys_often(cipher: &str) {
    let (server, port, _tunnel) = started_asyncssh(&["-rekey", "65536", "-ciphers", cipher]);
    // 4 MiB echoed: the server sends 64 times the threshold.
    echo_through(port, pattern(4 << 20, 3));
    server.wait_for("rekeyed ", 32, WAIT);
    assert_strict(&negotiated(&server), cipher);
    let rekeys = exchanges(&server, "rekeyed");
    for exchange in &rekeys {
        assert_strict(exchange, cipher);
    }
    // And the tunnel still works after the last one.
    echo_through(port, pattern(1000, 4));
    assert_eq!(server.count("auth ok"), 1, "one connection throughout");
}

#[test]
#[ignore = "needs Python's asyncssh (tests/run.sh)"]
fn survives_many_strict_key_exchanges_mid_transfer_chacha20() {
    rekeys_often("chacha20-poly1305@openssh.com");
}

#[test]
#[ignore = "needs Python's asyncssh (tests/run.sh)"]
fn survives_many_strict_key_exchanges_mid_transfer_aes256_gcm() {
    rekeys_often("aes256-gcm@openssh.com");
}

#[test]
#[ignore = "needs Python's asyncssh (tests/run.sh)"]
fn wrong_password_is_refused() {
    let server = ChiselServer::start_asyncssh(&[]);
    let _tunnel = open_tunnel(&server, "user:wrong", |_| {});
    server.wait_for("auth failed user", 1, WAIT);
    assert_eq!(server.count("auth ok"), 0);
    assert_eq!(server.count("config ok"), 0);
    // The refusal came after a strict key exchange.
    assert_eq!(
        exchanges(&server, "negotiated")
            .first()
            .and_then(|e| e.get("strict"))
            .map(String::as_str),
        Some("True")
    );
}

/// A server that slips an SSH_MSG_IGNORE into the first key exchange, as a Terrapin attacker
/// inserts one, is refused before authentication (without strict KEX checks the connection
/// would work: the sequence numbers agree). `where_` is `before-kexinit` or `after-kexinit`.
fn strict_kex_violation_is_refused(where_: &str) {
    let server = ChiselServer::start_asyncssh(&["-ignore", where_]);
    let _tunnel = open_tunnel(&server, "user:pass", |_| {});
    // asyncssh's words for the client hanging up (its own refusals say why).
    server.wait_for("handshake failed Connection lost", 1, WAIT);
    assert_eq!(server.count("auth"), 0, "{:?}", server.events());
}

#[test]
#[ignore = "needs Python's asyncssh (tests/run.sh)"]
fn an_ignore_message_before_the_servers_kexinit_is_refused() {
    strict_kex_violation_is_refused("before-kexinit");
}

#[test]
#[ignore = "needs Python's asyncssh (tests/run.sh)"]
fn an_ignore_message_during_the_first_key_exchange_is_refused() {
    strict_kex_violation_is_refused("after-kexinit");
}
