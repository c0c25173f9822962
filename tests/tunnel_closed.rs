//! Closing the tunnel on IDLE leaves no thread and no socket behind: a closed tunnel costs
//! nothing. Alone in its test binary, so no other test's threads or sockets are counted.

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::chisel::*;

#[test]
#[ignore = "needs Go with x/crypto/ssh and gorilla/websocket (tests/run.sh)"]
fn idle_closes_cleanly_and_leaves_no_thread_or_socket() {
    let server = ChiselServer::start(&[]);
    let before = (threads(), sockets());
    let (port, mut tunnel) = open_tunnel(&server, "user:pass", |_| {});
    echo_through(port, pattern(1000, 1));
    assert!(
        threads() > before.0,
        "the tunnel runs in its own thread while open"
    );
    tunnel.release();
    server.wait_for("session closed", 1, WAIT);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    let deadline = Instant::now() + WAIT;
    while (threads(), sockets()) != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        (threads(), sockets()),
        before,
        "(threads, sockets) after closing"
    );
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}
