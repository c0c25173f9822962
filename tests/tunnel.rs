//! The reverse tunnel against a chisel server built on Go's x/crypto/ssh (as Portainer's):
//! many channels at once, large transfers both ways, re-keying, the server's pings and our
//! keepalives, refusals (fingerprint, password, configuration), reconnection after a drop,
//! an HTTP CONNECT proxy, `wss://` for an `https://` address, closing on inactivity (`tunnel_closed.rs`: closing on IDLE leaves nothing behind).

mod support;

use base64::Engine;
use edge_agent::tunnel::Target;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::chisel::*;

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn fifty_concurrent_channels() {
    let (server, port, _tunnel) = started(&[]);
    let workers: Vec<_> = (0..50)
        .map(|i| std::thread::spawn(move || echo_through(port, pattern(200_000, i))))
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let events = server.events();
    assert!(
        events.contains(&"client version SSH-chisel-v3-client".to_owned()),
        "{events:?}"
    );
    assert_eq!(
        server.count("auth ok"),
        1,
        "one connection carries every channel"
    );
}

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn large_transfers_both_ways_at_once_one_ssh_packet_per_websocket_message() {
    let (server, port, tunnel) = started(&[]);
    echo_through(port, pattern(24 << 20, 7));
    drop(tunnel);
    server.wait_for("largest message ", 1, WAIT);
    let largest: usize = server
        .events()
        .iter()
        .find_map(|e| e.strip_prefix("largest message ")?.parse().ok())
        .unwrap();
    // RFC 4253 §6.1's packet size every implementation accepts; ours are far smaller.
    assert!(
        largest <= 35_000,
        "the agent sent a WebSocket message of {largest} bytes: chisel's server copies the rest of a message at every short read, so more than one SSH packet per message costs it dearly"
    );
}

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn survives_many_key_exchanges_mid_transfer() {
    // Go re-keys after this many bytes; 4 MiB each way means dozens of exchanges.
    let (_server, port, _tunnel) = started(&["-rekey", "65536"]);
    echo_through(port, pattern(4 << 20, 3));
}

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn answers_server_pings_and_sends_keepalives() {
    let server = ChiselServer::start(&["-ping", "100ms"]);
    let (port, _tunnel) = open_tunnel(&server, "user:pass", |s| {
        s.keepalive = Duration::from_millis(200)
    });
    connect(port);
    server.wait_for("server ping true pong", 3, WAIT);
    server.wait_for("client ping", 3, WAIT);
    assert_eq!(server.count("unanswered request"), 0);
}

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn stays_open_through_a_chisel_keepalive_server() {
    // As chisel's keepAliveLoop: `ping` with want-reply each interval, the connection closed
    // when a reply is late. Our own keepalive is off, so only the server's pings flow.
    let server = ChiselServer::start(&["-ping", "1s", "-ping-timeout", "500ms"]);
    let (port, _tunnel) = open_tunnel(&server, "user:pass", |s| {
        s.keepalive = Duration::from_secs(3600)
    });
    server.wait_for("server ping true pong", 5, WAIT);
    echo_through(port, pattern(64 << 10, 7));
    assert!(server.count("server ping true pong") >= 5);
    assert_eq!(server.count("ping timeout"), 0, "{:?}", server.events());
    assert_eq!(
        server.count("config ok"),
        1,
        "reconnected: {:?}",
        server.events()
    );
}

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn wrong_fingerprint_is_refused_before_authentication() {
    let server = ChiselServer::start(&[]);
    let other = "vzQOBZDci4gQywQpIQel2N3uveNiA0P5itO2mkU1e/s=";
    let (port, _tunnel) = open_tunnel(&server, "user:pass", |s| s.fingerprint = other.into());
    server.wait_for("handshake failed", 1, WAIT);
    assert_eq!(server.count("auth"), 0, "{:?}", server.events());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn wrong_password_is_refused() {
    let server = ChiselServer::start(&[]);
    let _tunnel = open_tunnel(&server, "user:wrong", |_| {});
    server.wait_for("auth failed user", 1, WAIT);
    assert_eq!(server.count("config ok"), 0);
}

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn refused_configuration_names_the_remote() {
    let server = ChiselServer::start(&["-allow", "^R:0.0.0.0:1$"]);
    let (port, _tunnel) = open_tunnel(&server, "user:pass", |_| {});
    server.wait_for(
        &format!("config refused access to 'R:0.0.0.0:{port}' denied"),
        1,
        WAIT,
    );
}

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn reconnects_after_the_server_drops_the_connection() {
    let (mut server, port, _tunnel) = started(&[]);
    echo_through(port, pattern(1000, 1));
    server.drop_connections();
    server.wait_for("session closed", 1, WAIT);
    server.wait_for("config ok", 2, WAIT);
    echo_through(port, pattern(1000, 2));
}

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn inactivity_closes_and_the_next_require_reopens() {
    let server = ChiselServer::start(&[]);
    let (port, mut tunnel) = open_tunnel(&server, "user:pass", |s| {
        s.inactivity = Duration::from_secs(1)
    });
    let credentials = credentials("user:pass", EDGE_ID);
    echo_through(port, pattern(100, 1));
    server.wait_for("session closed", 1, WAIT);
    // Portainer still says REQUIRED at the next poll: the tunnel opens again.
    tunnel.require(port, &credentials);
    server.wait_for("config ok", 2, WAIT);
}

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn the_agent_opens_the_required_tunnel_serves_ping_and_closes_on_idle() {
    let chisel = ChiselServer::start(&[]);
    let (portainer, port, _agent, running) = agent_with_tunnel(&chisel, &chisel.fingerprint, "");
    // What Portainer does first through a new tunnel: GET /ping for the agent API version.
    let mut stream = connect(port);
    for _ in 0..2 {
        stream
            .write_all(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let head = read_head(&mut stream);
        assert!(head.starts_with("HTTP/1.1 204"), "{head}");
        for header in [
            "Portainer-Agent: 2.45.0",
            "Portainer-Agent-API-Version: 2",
            "Portainer-Agent-Platform: 1",
        ] {
            assert!(head.contains(header), "{head}");
        }
    }
    running.wait_log(&format!("tunnel open: ws://{}/", chisel.addr), WAIT);

    portainer.set_tunnel(3, None);
    chisel.wait_for("session closed", 1, WAIT);
    running.wait_log("tunnel closed", WAIT);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn the_agent_refuses_a_server_with_another_key_loudly() {
    let chisel = ChiselServer::start(&[]);
    let other = "vzQOBZDci4gQywQpIQel2N3uveNiA0P5itO2mkU1e/s=";
    let (_portainer, _port, _agent, running) = agent_with_tunnel(&chisel, other, "");
    running.wait_log("refusing to connect", WAIT);
    let log = running.log();
    let line = log.lines().find(|l| l.contains("refusing")).unwrap();
    assert!(
        line.contains("ERROR") && line.contains(&chisel.fingerprint),
        "{line}"
    );
    assert_eq!(chisel.count("auth"), 0);
}

/// An HTTP answer head (no body expected).
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn goes_through_an_http_connect_proxy_with_credentials() {
    let server = ChiselServer::start(&[]);
    let (proxy, tunnels) = connect_proxy("proxyuser:proxypw");
    let (port, _tunnel) = open_tunnel(&server, "user:pass", |s| {
        s.proxy = Some(format!("http://proxyuser:proxypw@{proxy}"))
    });
    echo_through(port, pattern(100_000, 5));
    assert_eq!(*tunnels.lock().unwrap(), vec![server.addr.clone()]);
}

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn an_https_tunnel_address_uses_wss_with_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = support::tls::server_pems(dir.path());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let server = ChiselServer::start(&["-cert", &cert, "-key", &key]);
    let local_port = server.addr.rsplit_once(':').unwrap().1;
    let (port, _tunnel) = open_tunnel(&server, "user:pass", |s| {
        s.target = Target::parse(&format!("https://localhost:{local_port}")).unwrap();
        s.ca_file = Some(ca);
    });
    echo_through(port, pattern(100_000, 6));
}

/// A minimal HTTP CONNECT proxy that requires `user:password` and records its tunnels.
fn connect_proxy(user_password: &str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let expected = format!(
        "Proxy-Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    );
    let tunnels = Arc::new(Mutex::new(Vec::new()));
    let seen = tunnels.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let mut client = client.unwrap();
            let head = read_head(&mut client);
            let target = head.split_whitespace().nth(1).unwrap().to_owned();
            if !head.starts_with("CONNECT ") || !head.contains(&expected) {
                let _ = client.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
                continue;
            }
            seen.lock().unwrap().push(target.clone());
            let upstream = TcpStream::connect(&target).unwrap();
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .unwrap();
            let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            let (mut client, mut upstream) = (client, upstream);
            std::thread::spawn(move || std::io::copy(&mut c2, &mut u2));
            std::thread::spawn(move || std::io::copy(&mut upstream, &mut client));
        }
    });
    (addr, tunnels)
}

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn aes_gcm_when_the_server_offers_only_that() {
    let (_server, port, _tunnel) =
        started(&["-ciphers", "aes128-gcm@openssh.com", "-rekey", "100000"]);
    echo_through(port, pattern(2 << 20, 9));
}
