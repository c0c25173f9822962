//! The agent on Docker 29, which refuses API versions below 1.44 (tests/support/docker29.rs: the
//! test machine's Docker behind Docker 29's version check and `/version`): compose through
//! `edge-agent compose`, an edge stack through the reconciler, Portainer's calls and console
//! through the tunnel, `check`. Every request the agent sends must name a version Docker 29
//! takes, or none (Docker then uses its own, 1.52), and be accepted.

mod support;

use support::api_client::{Connection, Signer};
use support::chisel::agent_through_tunnel_on;
use support::docker29::Docker29;
use support::scenarios;

#[test]
#[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
fn compose_speaks_a_version_docker_29_takes() {
    let docker = Docker29::start();
    // One network: behind this Docker 29 is Docker 20.10, which cannot take the several
    // networks a create names from API 1.44 (the compose engine's unit tests cover that body).
    let name = support::docker::unique("compose");
    scenarios::compose_up_ps_down(&docker.host(), &name, "[front]");
    // Only the negotiation's ping goes without a version.
    let count = docker.assert_all_accepted(&["/_ping"]);
    let creates: Vec<_> = docker
        .seen()
        .into_iter()
        .filter(|s| s.target.contains("/containers/create"))
        .collect();
    assert_eq!(creates.len(), 3, "{creates:?}");
    assert!(creates.iter().all(|s| s.version() == Some((1, 47))));
    assert!(count > 20, "{:#?}", docker.seen());
}

#[test]
#[ignore = "needs the Docker Engine, busybox-static and Go (tests/run.sh)"]
fn portainer_versions_reach_docker_29_as_it_takes_them() {
    let docker = Docker29::start();
    let s = agent_through_tunnel_on(&docker.host(), "");
    let signer = Signer::new(7, "Portainer-App");
    let mut c = Connection::open(s.port);
    // Within Docker 29's range: as sent. Below it (an older Portainer UI): raised to 1.44.
    for (sent, seen) in [
        ("/v1.47/containers/json", "/v1.47/containers/json"),
        ("/v1.41/containers/json", "/v1.44/containers/json"),
        ("/v1.52/version", "/v1.52/version"),
        ("/v1.24/_ping", "/v1.44/_ping"),
    ] {
        let answer = c.request("GET", sent, Some(&signer), b"");
        assert_eq!(answer.status, 200, "{sent}: {}", answer.text());
        assert!(
            docker.seen().iter().any(|s| s.target == seen),
            "{sent} should reach Docker 29 as {seen}: {:#?}",
            docker.seen()
        );
    }
    // Portainer 2.45 on Docker 29, and an older one.
    scenarios::containers_and_console(s.port, &signer, "v1.47");
    scenarios::containers_and_console(s.port, &signer, "v1.41");
    // Unversioned: the proxy's negotiation ping, and the console's exec start, as the Go
    // agent sends it.
    docker.assert_all_accepted(&["/_ping", "/exec/"]);
}

#[test]
#[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
fn check_names_docker_29_and_the_version_used() {
    let docker = Docker29::start();
    let server = support::FakePortainer::start(support::Transport::Plain);
    let agent = support::agent::Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nDOCKER_HOST={}\n",
        agent.key(&server, 3),
        docker.host()
    ));
    let out = agent.command(&["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("reachable, Docker Engine 29.1.2 (API 1.52, using 1.47)"),
        "{text}"
    );
    docker.assert_all_accepted(&["/_ping"]);
}

#[test]
#[ignore = "needs the Docker Engine and busybox-static (tests/run.sh)"]
fn an_edge_stack_deploys_and_goes_on_docker_29() {
    let docker = Docker29::start();
    scenarios::edge_stack_deploys_and_goes(&docker.host(), "docker");
    docker.assert_all_accepted(&["/_ping"]);
}
