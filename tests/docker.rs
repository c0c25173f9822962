//! The Docker client against the real engine of this machine (skipped when there is none,
//! failed under `CI=true`): a container's whole life with its logs and events, listings, images,
//! errors. Test containers have no network and are removed even when a test fails.

mod support;

use edge_agent::docker::{Error, Limits, LogStream, LogsOptions, RegistryAuth};
use std::time::Duration;
use support::docker::{docker, engine, now, unique, Container, IMAGE};

/// A bound on streams so that a broken test fails instead of hanging; no test waits this long.
const STREAM_IDLE: Duration = Duration::from_secs(60);

fn idle_limited(client: &edge_agent::docker::Client) -> edge_agent::docker::Client {
    client.with_limits(Limits {
        stream_idle: Some(STREAM_IDLE),
        ..Limits::default()
    })
}

#[test]
fn container_lifecycle_with_followed_logs_and_events() {
    let Some(client) = engine() else { return };
    let streams = idle_limited(&client);
    let name = unique("life");
    let since = now();
    let label = format!("{}={name}", support::docker::LABEL);
    let events = streams
        .events(Some(since), &[("type", "container"), ("label", &label)])
        .unwrap();
    let container = Container::create(
        &client,
        &name,
        &[
            "busybox",
            "sh",
            "-c",
            "for i in 0 1 2; do echo out $i; echo err $i >&2; done; exec busybox sleep 600",
        ],
        false,
    );
    client.start_container(&container.id).unwrap();
    // Starting a running container is not an error.
    client.start_container(&container.id).unwrap();
    let inspect = client.inspect_container(&container.id).unwrap();
    assert!(inspect.state.running, "{inspect:?}");
    assert_eq!(inspect.name, format!("/{name}"));
    assert_eq!(inspect.config.image, IMAGE);
    let listed = client
        .containers(false, &[("label", &container.label())])
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, container.id);
    assert_eq!(listed[0].state, "running");

    // Following the logs: stdout and stderr apart, as the container wrote them.
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        follow: true,
        ..LogsOptions::default()
    };
    let mut logs = streams.logs(&container.id, &options).unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    while out.lines().count() < 3 || err.lines().count() < 3 {
        match logs.next().unwrap() {
            Some((LogStream::Stdout, data)) => out.push_str(std::str::from_utf8(data).unwrap()),
            Some((LogStream::Stderr, data)) => err.push_str(std::str::from_utf8(data).unwrap()),
            other => panic!("unexpected {other:?} after {out:?} / {err:?}"),
        }
    }
    assert_eq!(out, "out 0\nout 1\nout 2\n");
    assert_eq!(err, "err 0\nerr 1\nerr 2\n");

    // Stopping ends the followed stream (sleep as PID 1 ignores SIGTERM: killed after 1 s).
    client.stop_container(&container.id, Some(1)).unwrap();
    assert_eq!(logs.next().unwrap(), None);
    let state = client.inspect_container(&container.id).unwrap().state;
    assert_eq!((state.status.as_str(), state.running), ("exited", false));
    // Stopping a stopped container is not an error either.
    client.stop_container(&container.id, Some(1)).unwrap();
    client.restart_container(&container.id, Some(1)).unwrap();
    assert!(
        client
            .inspect_container(&container.id)
            .unwrap()
            .state
            .running
    );
    client.remove_container(&container.id, true, true).unwrap();
    let error = client.inspect_container(&container.id).unwrap_err();
    assert!(
        matches!(&error, Error::Docker { status: 404, message, .. } if message.contains("No such container")),
        "{error:?}"
    );

    // Every step was an event, in order, and the filter kept other containers out.
    let mut actions = Vec::new();
    for event in events {
        let event = event.unwrap();
        assert_eq!(event.actor.id, container.id, "{event:?}");
        assert_eq!(event.actor.attributes["name"], name);
        actions.push(event.action.clone());
        if event.action == "destroy" {
            break;
        }
    }
    let mut expected = [
        "create", "start", "die", "stop", "start", "restart", "destroy",
    ]
    .iter();
    let mut next = expected.next();
    for action in &actions {
        if Some(&action.as_str()) == next {
            next = expected.next();
        }
    }
    assert_eq!(next, None, "events out of order or missing: {actions:?}");
}

#[test]
fn tty_output_comes_through_as_is() {
    let Some(client) = engine() else { return };
    let container = Container::create(
        &client,
        &unique("tty"),
        &["busybox", "echo", "hello from a tty"],
        true,
    );
    client.start_container(&container.id).unwrap();
    let options = LogsOptions {
        stdout: true,
        follow: true,
        ..LogsOptions::default()
    };
    let mut logs = idle_limited(&client).logs(&container.id, &options).unwrap();
    let mut out = Vec::new();
    while let Some((stream, data)) = logs.next().unwrap() {
        assert_eq!(stream, LogStream::Stdout);
        out.extend_from_slice(data);
    }
    // A TTY turns \n into \r\n; nothing else is added.
    assert_eq!(out, b"hello from a tty\r\n");
}

#[test]
fn lists_the_engine_images_volumes_and_networks() {
    let Some(client) = engine() else { return };
    let version = client.version().unwrap();
    assert!(!version.version.is_empty());
    assert!(
        client.api_version().to_string() <= version.api_version
            || client.api_version() == edge_agent::docker::API_VERSION,
        "negotiated {} with an engine at {}",
        client.api_version(),
        version.api_version
    );
    client.ping().unwrap();
    let info = client.info().unwrap();
    assert_eq!(info.server_version, version.version);
    assert!(info.ncpu > 0 && info.mem_total > 0, "{info:?}");

    let images = client.images().unwrap();
    assert!(
        images
            .iter()
            .any(|i| i.repo_tags.iter().any(|t| t == IMAGE)),
        "{images:?}"
    );
    let image = client.inspect_image(IMAGE).unwrap();
    assert_eq!(image.os, "linux");
    assert!(image.size > 1_000_000, "busybox is in it: {image:?}");

    let networks = client.networks(&[]).unwrap();
    for name in ["none", "host"] {
        assert!(networks.iter().any(|n| n.name == name), "{networks:?}");
    }
    let volume = unique("vol");
    let out = docker(&["volume", "create", &volume]);
    assert!(out.status.success(), "{out:?}");
    let volumes = client.volumes(&[]).unwrap();
    let _ = docker(&["volume", "rm", &volume]);
    assert!(volumes.iter().any(|v| v.name == volume), "{volumes:?}");
}

#[test]
fn removes_an_image_tag() {
    let Some(client) = engine() else { return };
    let tag = format!("edge-agent-test/busybox:{}", unique("tag"));
    let out = docker(&["tag", IMAGE, &tag]);
    assert!(out.status.success(), "{out:?}");
    client.inspect_image(&tag).unwrap();
    client.remove_image(&tag, false).unwrap();
    let error = client.inspect_image(&tag).unwrap_err();
    assert!(
        matches!(error, Error::Docker { status: 404, .. }),
        "{error:?}"
    );
    // The image itself stays for the other tests.
    client.inspect_image(IMAGE).unwrap();
}

#[test]
fn a_failed_pull_is_an_error_naming_the_registry() {
    let Some(client) = engine() else { return };
    let auth = RegistryAuth {
        username: Some("edge".into()),
        password: Some("secret".into()),
        server_address: Some("127.0.0.1:9".into()),
        identity_token: None,
    };
    // Nothing listens on port 9: Docker fails before or while streaming progress.
    let error = match client.pull("127.0.0.1:9/edge-agent-test/nothing", "1", Some(&auth)) {
        Err(e) => e,
        Ok(progress) => progress
            .filter_map(Result::err)
            .next()
            .expect("a pull from a closed port fails"),
    };
    assert!(
        matches!(error, Error::Docker { .. } | Error::Failed { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("127.0.0.1:9"), "{error}");
}
