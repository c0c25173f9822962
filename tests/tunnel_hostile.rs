//! The agent binary against a hostile tunnel peer: a raw WebSocket server written here that
//! announces frames of 2^63 bytes (and 2^63-1, then an SSH packet of nearly 2^32), and the Go
//! chisel server opening 10,000 channels. Each asserts the log line naming the server and the
//! rule, the agent's peak memory (VmHWM), and that service goes on. The protocol rules
//! themselves are unit-tested against a scripted server (`src/tunnel/ssh/scripted.rs`).

mod support;

use base64::Engine;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::agent::{proc_kib, Agent, Running};
use support::chisel::*;
use support::{FakePortainer, Transport};

/// The agent's peak resident memory after a hostile peer, in KiB: what the debug build the
/// tests run peaks at with a tunnel, plus room (a 2^63-byte frame would be far beyond it).
const PEAK_KIB: u64 = 24 * 1024;

fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// The agent, told by a fake Portainer that the tunnel to `tunnel` (`host:port`) is REQUIRED.
fn agent_for(tunnel: &str, fingerprint: &str, env: &str) -> (FakePortainer, u16, Agent, Running) {
    let portainer = FakePortainer::start(Transport::Plain);
    portainer.add_endpoint(3, Some(EDGE_ID));
    portainer.set_checkin(0.05);
    let port = free_port();
    portainer.set_tunnel(3, Some((port, credentials("user:pass", EDGE_ID))));
    let agent = Agent::new();
    let key = support::edge_key(&portainer.url(), tunnel, fingerprint, 3);
    agent.write_env(&format!("EDGE_KEY={key}\nEDGE_ID={EDGE_ID}\n{env}"));
    let running = agent.spawn(&mut agent.command(&[]));
    (portainer, port, agent, running)
}

/// Accepts the agent's WebSocket handshake on `stream` with a `101`.
fn accept_websocket(stream: &mut TcpStream) {
    let head = read_head(stream);
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap();
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    );
    let accept = base64::engine::general_purpose::STANDARD.encode(digest);
    write!(
        stream,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .unwrap();
}

fn binary_frame_head(len: u64) -> Vec<u8> {
    let mut head = vec![0x82, 127];
    head.extend_from_slice(&len.to_be_bytes());
    head
}

#[test]
fn websocket_frames_of_2_63_bytes_are_refused_and_the_tunnel_reconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let mut stream = stream.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            accept_websocket(&mut stream);
            let mut bytes = match i {
                0 => binary_frame_head(1 << 63),
                1 => binary_frame_head(u64::MAX),
                // Legal: 2^63-1, streamed; inside it an SSH packet announcing 2^32-16 bytes.
                _ => {
                    let mut b = binary_frame_head((1 << 63) - 1);
                    b.extend_from_slice(b"SSH-chisel-v3-server\r\n");
                    b.extend_from_slice(&(u32::MAX - 15).to_be_bytes());
                    b
                }
            };
            // Then a MiB more of the frame, as long as the agent reads.
            bytes.resize(bytes.len() + (1 << 20), 0);
            let _ = stream.write_all(&bytes);
            let _ = stream.read(&mut [0u8; 64]);
        }
    });
    let (_portainer, _port, _agent, running) = agent_for(&addr, "fp", "LOG_LEVEL=DEBUG\n");
    let url = format!("tunnel to ws://{addr}/");
    running.wait_log(
        &format!("{url}: WebSocket protocol error: a frame's 64-bit length has its most significant bit set (RFC 6455 §5.2); retrying while Portainer requires it"),
        WAIT,
    );
    // The same error again is logged at DEBUG only (no flood), and the tunnel retries.
    running.wait_log(
        &format!("{url} failed again: WebSocket protocol error: a frame's 64-bit length"),
        Duration::from_secs(20),
    );
    running.wait_log(
        &format!("{url}: the server sent an SSH packet of 4294967280 bytes, over the limit of 262144 (RFC 4253 §6.1)"),
        Duration::from_secs(20),
    );
    // And again: service goes on as long as Portainer requires the tunnel.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while connections.load(Ordering::SeqCst) < 4 {
        assert!(std::time::Instant::now() < deadline, "{}", running.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let peak = proc_kib(running.pid(), "status", "VmHWM");
    println!("VmHWM after four hostile WebSocket peers: {peak} KiB");
    assert!(peak > 0 && peak < PEAK_KIB, "VmHWM {peak} KiB");
}

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn ten_thousand_channel_opens_are_refused_beyond_64_and_the_64_keep_working() {
    let chisel = ChiselServer::start(&[]);
    let (_portainer, port, _agent, running) = agent_for(&chisel.addr, &chisel.fingerprint, "");
    chisel.wait_for("config ok", 1, WAIT);
    let ping = |stream: &mut TcpStream| {
        stream
            .write_all(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let head = read_head(stream);
        assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    };
    let mut held: Vec<TcpStream> = (0..64).map(|_| connect(port)).collect();
    for stream in &mut held {
        ping(stream);
    }
    // 10,000 more, 8 at a time: each is refused by the agent, and chisel closes it.
    let workers: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..1250 {
                    let mut stream = connect(port);
                    let mut byte = [0u8];
                    assert!(
                        !matches!(stream.read(&mut byte), Ok(1)),
                        "a channel beyond the limit was served"
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    chisel.wait_for("channel refused", 10_000, WAIT);
    running.wait_log(
        &format!("tunnel to ws://{}/: the server opened more than 64 channels at once (the agent's limit): refusing more until some close", chisel.addr),
        WAIT,
    );
    assert_eq!(
        running.log().matches("channels at once").count(),
        1,
        "one line per connection"
    );
    for stream in &mut held {
        ping(stream);
    }
    // One closes: a new one is served.
    drop(held.pop());
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut stream = connect(port);
        let _ = stream.write_all(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let mut first = [0u8; 12];
        if stream.read_exact(&mut first).is_ok() {
            assert_eq!(&first, b"HTTP/1.1 204");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no channel again");
    }
    assert_eq!(chisel.count("auth ok"), 1, "the connection stayed up");
    let peak = proc_kib(running.pid(), "status", "VmHWM");
    println!("VmHWM after 10,000 channel opens: {peak} KiB");
    assert!(peak > 0 && peak < PEAK_KIB, "VmHWM {peak} KiB");
}

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn a_rekey_storm_from_the_server_is_refused_and_the_tunnel_reopens() {
    // Go's smallest RekeyThreshold: a key exchange every 256 bytes of traffic.
    let chisel = ChiselServer::start(&["-rekey", "256"]);
    let (_portainer, port, _agent, running) = agent_for(&chisel.addr, &chisel.fingerprint, "");
    chisel.wait_for("config ok", 1, WAIT);
    let url = format!("tunnel to ws://{}/", chisel.addr);
    let storm = format!(
        "{url}: SSH protocol error: re-key storm: the server started 4 key exchanges in a row"
    );
    // Portainer's requests through the tunnel make the server re-key until the agent stops it.
    let deadline = std::time::Instant::now() + WAIT;
    while !running.log().contains(&storm) {
        assert!(std::time::Instant::now() < deadline, "{}", running.log());
        let mut stream = connect(port);
        let _ = stream.write_all(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let _ = stream.read(&mut [0u8; 256]);
    }
    // The tunnel opens again while Portainer requires it.
    chisel.wait_for("config ok", 2, Duration::from_secs(20));
    let peak = proc_kib(running.pid(), "status", "VmHWM");
    println!("VmHWM after a re-key storm: {peak} KiB");
    assert!(peak > 0 && peak < PEAK_KIB, "VmHWM {peak} KiB");
}
