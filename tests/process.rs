//! The agent as a systemd service: stopping on SIGTERM/SIGINT within 2 s (even mid-request),
//! the notify protocol, and surviving a damaged state file.

mod support;

use nix::sys::signal::Signal;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};
use support::agent::Agent;
use support::{FakePortainer, Fault, Transport};

const WAIT: Duration = Duration::from_secs(10);

fn stops_within_two_seconds(signal: Signal, fault: Option<Fault>) {
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(3, None);
    let agent = Agent::new();
    agent.write_env(&format!("EDGE_KEY={}\n", agent.key(&server, 3)));
    let mut running = agent.spawn(&mut agent.command(&[]));
    running.wait_log("polling http://", WAIT);
    if let Some(fault) = fault {
        server.set_fault(Some(fault));
        // Wait for the next poll to be stuck in the hanging server (check-in is 5 s).
        let n = server.requests().len();
        assert!(server.wait_until(WAIT, |r| r.len() > n));
    }
    let sent = Instant::now();
    running.signal(signal);
    let status = running.wait_exit(Duration::from_secs(2));
    let took = sent.elapsed();
    let status =
        status.unwrap_or_else(|| panic!("still running 2 s after {signal}:\n{}", running.log()));
    assert!(status.success(), "{status:?}\n{}", running.log());
    assert!(running.log().contains("stopped"), "{}", running.log());
    assert!(
        agent.state_text().contains("\"endpoint_id\":3"),
        "state saved"
    );
    eprintln!("{signal} -> exit in {took:?}");
}

#[test]
fn sigterm_while_sleeping() {
    stops_within_two_seconds(Signal::SIGTERM, None);
}

#[test]
fn sigint_while_sleeping() {
    stops_within_two_seconds(Signal::SIGINT, None);
}

#[test]
fn sigterm_while_a_request_hangs() {
    stops_within_two_seconds(Signal::SIGTERM, Some(Fault::Hang));
}

#[test]
fn systemd_notify_ready_watchdog_stopping() {
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(3, None);
    let agent = Agent::new();
    agent.write_env(&format!("EDGE_KEY={}\n", agent.key(&server, 3)));
    let socket_path = agent.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut command = agent.command(&[]);
    command
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000");
    let mut running = agent.spawn(&mut command);

    let receive = || {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a notify datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut messages = Vec::new();
    let started = Instant::now();
    while messages.iter().filter(|m| *m == "WATCHDOG=1").count() < 3 {
        messages.push(receive());
        assert!(started.elapsed() < WAIT, "{messages:?}");
    }
    assert!(messages.contains(&"READY=1".to_owned()), "{messages:?}");
    running.signal(Signal::SIGTERM);
    loop {
        let m = receive();
        if m == "STOPPING=1" {
            break;
        }
        assert_eq!(m, "WATCHDOG=1");
    }
    assert!(running.wait_exit(Duration::from_secs(2)).is_some());
}

#[test]
fn damaged_state_file_falls_back_to_the_last_good_copy() {
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(3, None);
    let agent = Agent::new();
    let key = agent.key(&server, 3);
    let run = |env: &str| {
        agent.write_env(&format!("EDGE_KEY={key}\n{env}"));
        let mut running = agent.spawn(&mut agent.command(&[]));
        // The server answers 403 to the second Edge ID; starting is all this test needs.
        running.wait_log("starting: Edge ID", WAIT);
        running.signal(Signal::SIGTERM);
        running.wait_exit(WAIT).expect("stops");
        running.log()
    };
    run("EDGE_ID=first\n");
    run("EDGE_ID=second\n");
    let state = agent.data.join("edge-agent.state");
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("second"));
    // Power cut: the file ends half-written.
    std::fs::write(&state, &text[..text.len() / 2]).unwrap();
    let log = run("");
    assert!(
        log.contains("is damaged (truncated or extended); using the last good copy"),
        "{log}"
    );
    assert!(log.contains("Edge ID first"), "{log}");
}
