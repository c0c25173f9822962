//! The Docker client against a fake engine that misbehaves: broken framing, answers larger than
//! allowed, stalls, garbage, resets. Each gives a typed error that says what happened, and no
//! fault makes the client buffer without bound.

mod support;

use edge_agent::docker::{Client, Error, Limits, LogStream, LogsOptions, RegistryAuth};
use std::time::Duration;
use support::fake_docker::{answer, chunk, chunked_head, ping, FakeDocker, Reply};

/// A fake engine speaking API 1.41 that answers every other request with `reply`.
fn engine(reply: impl Fn(&str, &str) -> Reply + Send + Sync + 'static) -> (FakeDocker, Client) {
    let fake = FakeDocker::start(move |method, path| match path {
        "/_ping" => ping("1.41"),
        _ => reply(method, path),
    });
    let client = Client::connect(fake.socket(), Limits::default()).unwrap();
    (fake, client)
}

fn short(client: &Client) -> Client {
    client.with_limits(Limits {
        timeout: Duration::from_millis(300),
        stream_idle: Some(Duration::from_millis(300)),
        ..Limits::default()
    })
}

#[test]
fn the_api_version_is_the_lower_of_the_engines_and_ours() {
    for (server, used) in [("1.41", "1.41"), ("1.52", "1.47")] {
        let fake = FakeDocker::start(move |_, path| match path {
            "/_ping" => ping(server),
            _ => Reply::Close(answer("200 OK", "application/json", r#"{"Version":"x"}"#)),
        });
        let client = Client::connect(fake.socket(), Limits::default()).unwrap();
        assert_eq!(client.api_version().to_string(), used);
        client.version().unwrap();
        let requests = fake.requests();
        assert_eq!(requests[0].path, "/_ping");
        assert_eq!(requests[1].path, format!("/v{used}/version"));
        assert_eq!(requests[1].header("Host"), Some("docker"));
    }
}

#[test]
fn an_engine_without_api_version_header_is_asked_for_version() {
    let fake = FakeDocker::start(|_, path| match path {
        "/_ping" => Reply::Close(answer("200 OK", "text/plain", "OK")),
        _ => Reply::Close(answer(
            "200 OK",
            "application/json",
            r#"{"Version":"1.13.1","ApiVersion":"1.26"}"#,
        )),
    });
    let client = Client::connect(fake.socket(), Limits::default()).unwrap();
    assert_eq!(client.api_version().to_string(), "1.26");
    // Asked unversioned: such an engine refuses versions above its own.
    assert_eq!(fake.requests()[1].path, "/version");
}

#[test]
fn docker_errors_carry_the_status_and_message() {
    let (_fake, client) = engine(|_, _| {
        Reply::Close(answer(
            "404 Not Found",
            "application/json",
            r#"{"message":"No such container: nope"}"#,
        ))
    });
    let error = client.inspect_container("nope").unwrap_err();
    assert!(
        matches!(&error, Error::Docker { status: 404, message, .. } if message == "No such container: nope"),
        "{error:?}"
    );
    assert!(error
        .to_string()
        .contains("GET /v1.41/containers/nope/json on "));
}

#[test]
fn truncated_chunked_body_is_an_error() {
    let (_fake, client) = engine(|_, _| {
        let mut bytes = chunked_head("application/json").into_bytes();
        bytes.extend_from_slice(&chunk(br#"{"ID":"abc","#));
        bytes.extend_from_slice(b"20\r\n\"Name\":");
        Reply::Close(bytes)
    });
    let error = client.info().unwrap_err();
    assert!(matches!(error, Error::Truncated { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("closed the connection before the end"),
        "{error}"
    );
}

#[test]
fn malformed_chunk_size_is_a_protocol_error() {
    let (_fake, client) = engine(|_, _| {
        let mut bytes = chunked_head("application/json").into_bytes();
        bytes.extend_from_slice(b"zz\r\n{}\r\n0\r\n\r\n");
        Reply::Close(bytes)
    });
    let error = client.info().unwrap_err();
    assert!(matches!(error, Error::Protocol { .. }), "{error:?}");
    assert!(
        error.to_string().contains("invalid chunked body"),
        "{error}"
    );
}

#[test]
fn an_announced_body_larger_than_the_limit_is_refused_before_reading() {
    let (_fake, client) = engine(|_, _| {
        Reply::Stall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n[".to_vec())
    });
    let limits = Limits {
        body: 64 * 1024,
        ..Limits::default()
    };
    let error = client.with_limits(limits).images().unwrap_err();
    assert!(
        matches!(error, Error::TooLarge { limit: 65536, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("larger than the 65536 bytes"));
}

#[test]
fn an_endless_body_stops_at_the_limit() {
    // The server would send for ever: only a client that stops at the limit returns at all.
    let (_fake, client) = engine(|_, _| Reply::Endless {
        head: chunked_head("application/json").into_bytes(),
        size: usize::MAX,
    });
    let limits = Limits {
        body: 1024 * 1024,
        ..Limits::default()
    };
    let error = client
        .with_limits(limits)
        .containers(true, &[])
        .unwrap_err();
    assert!(
        matches!(error, Error::TooLarge { limit: 1048576, .. }),
        "{error:?}"
    );
    // A streaming answer is not buffered, but one event is: a line without end is refused.
    let error = client
        .events(None, &[])
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(error, Error::TooLarge { limit: 65536, .. }),
        "{error:?}"
    );
}

#[test]
fn a_stalled_server_times_out() {
    for stall in [
        &b""[..],
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"ID\":",
    ] {
        let (_fake, client) = engine(move |_, _| Reply::Stall(stall.to_vec()));
        let error = short(&client).info().unwrap_err();
        assert!(
            matches!(error, Error::Timeout { after, .. } if after == Duration::from_millis(300)),
            "{:?}: {error:?}",
            String::from_utf8_lossy(stall)
        );
        assert!(error
            .to_string()
            .contains("no answer from Docker to GET /v1.41/info"));
    }
}

#[test]
fn a_quiet_stream_times_out_with_an_idle_limit() {
    let (_fake, client) =
        engine(|_, _| Reply::Stall(chunked_head("application/json").into_bytes()));
    let mut events = short(&client)
        .events(None, &[("type", "container")])
        .unwrap();
    let error = events.next().unwrap().unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    assert!(events.next().is_none(), "a failed stream ends");
}

#[test]
fn garbage_status_line_is_a_protocol_error() {
    let (_fake, client) = engine(|_, _| Reply::Close(b"SSH-2.0-OpenSSH_9.2p1\r\n".to_vec()));
    let error = client.version().unwrap_err();
    assert!(matches!(error, Error::Protocol { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("not HTTP/1.1") && text.contains("SSH-2.0"),
        "{text}"
    );
}

#[test]
fn connection_reset_mid_stream_is_an_error() {
    let (_fake, client) = engine(|_, path| {
        if path.ends_with("/json") {
            return Reply::Close(answer(
                "200 OK",
                "application/json",
                r#"{"Id":"c1","Config":{"Tty":false}}"#,
            ));
        }
        let mut bytes = chunked_head("application/vnd.docker.raw-stream").into_bytes();
        bytes.extend_from_slice(&chunk(b"\x01\x00\x00\x00\x00\x00\x00\x06hello\n"));
        bytes.extend_from_slice(&chunk(b"\x02\x00\x00\x00\x00\x00\x00\x20partial"));
        Reply::Reset(bytes)
    });
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        follow: true,
        ..LogsOptions::default()
    };
    let mut logs = client.logs("c1", &options).unwrap();
    assert_eq!(
        logs.next().unwrap(),
        Some((LogStream::Stdout, &b"hello\n"[..]))
    );
    assert_eq!(
        logs.next().unwrap(),
        Some((LogStream::Stderr, &b"partial"[..]))
    );
    let error = logs.next().unwrap_err();
    assert!(
        matches!(&error, Error::Io { error, .. } if error.kind() == std::io::ErrorKind::ConnectionReset),
        "{error:?}"
    );
    assert!(error
        .to_string()
        .contains("connection to Docker lost during GET /v1.41/containers/c1/logs"));
}

#[test]
fn pull_sends_registry_auth_and_reports_failures_in_the_stream() {
    let (fake, client) = engine(|_, _| {
        let mut bytes = chunked_head("application/json").into_bytes();
        bytes.extend_from_slice(&chunk(
            b"{\"status\":\"Pulling from app\",\"id\":\"1.0\"}\r\n{\"status\":\"Downloading\",\"progressDetail\":{\"current\":1},\"id\":\"abc\"}\r\n",
        ));
        bytes.extend_from_slice(&chunk(
            b"{\"errorDetail\":{\"message\":\"manifest unknown\"},\"error\":\"manifest unknown\"}\r\n",
        ));
        bytes.extend_from_slice(b"0\r\n\r\n");
        Reply::Close(bytes)
    });
    let auth = RegistryAuth {
        username: Some("edge".into()),
        password: Some("s3cret?".into()),
        server_address: Some("registry.lan:5000".into()),
        identity_token: None,
    };
    let items: Vec<_> = client
        .pull("registry.lan:5000/app", "1.0", Some(&auth))
        .unwrap()
        .collect();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].as_ref().unwrap().status, "Pulling from app");
    assert_eq!(items[1].as_ref().unwrap().id, "abc");
    assert!(
        matches!(&items[2], Err(Error::Failed { message, .. }) if message == "manifest unknown"),
        "{:?}",
        items[2]
    );
    let request = &fake.requests()[1];
    assert_eq!(
        request.path,
        "/v1.41/images/create?fromImage=registry.lan%3A5000%2Fapp&tag=1.0"
    );
    use base64::Engine;
    let header = request.header("X-Registry-Auth").unwrap();
    let json = base64::engine::general_purpose::URL_SAFE
        .decode(header)
        .unwrap();
    assert_eq!(
        String::from_utf8(json).unwrap(),
        r#"{"password":"s3cret?","serveraddress":"registry.lan:5000","username":"edge"}"#
    );
}

#[test]
fn create_sends_the_configuration_as_json() {
    let (fake, client) = engine(|_, _| {
        Reply::Close(answer(
            "201 Created",
            "application/json",
            r#"{"Id":"c2","Warnings":null}"#,
        ))
    });
    let created = client
        .create_container(Some("web 1"), &serde_json::json!({"Image": "busybox"}))
        .unwrap();
    assert_eq!(created.id, "c2");
    let request = &fake.requests()[1];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1.41/containers/create?name=web%201");
    assert_eq!(request.header("Content-Type"), Some("application/json"));
    assert_eq!(request.body, br#"{"Image":"busybox"}"#);
}

#[test]
fn connect_times_out_when_the_engine_accepts_nothing() {
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker.sock");
    let listener = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&listener),
        &UnixAddr::new(&path).unwrap(),
    )
    .unwrap();
    listen(&listener, Backlog::new(0).unwrap()).unwrap();
    // The backlog holds one connection that nobody accepts; the next one has to wait.
    let _first = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let error = Client::connect(&path, limits).unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Connect {
                reason: edge_agent::docker::ConnectError::Timeout(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("did not accept the connection"));
}

#[test]
fn missing_socket_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let error = Client::connect(dir.path().join("docker.sock"), Limits::default()).unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("does not exist: is Docker running? is DOCKER_HOST right?"),
        "{error}"
    );
}
