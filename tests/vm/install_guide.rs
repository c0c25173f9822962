//! docs/install.md followed literally on a Debian device without the agent: its "Install" and
//! "Removing it" shell blocks are read from the guide and run as they are.

use super::{
    assert_unchanged, compose, containers, edge_ids, guest_state, import_image, server,
    wait_status, wait_unit, ENDPOINT, STARTING,
};
use crate::support::vm::{Disks, Flavour, Setup, Vm, PORTAINER_IP};
use crate::support::{edge_key, FakePortainer};
use base64::Engine;
use std::net::TcpListener;
use std::time::Duration;

/// The Edge ID the operator copies from Portainer.
const EDGE_ID: &str = "vm-install-guide-7f3a";

/// The ```sh block of docs/install.md's section `heading`, as written there.
fn guide_block(heading: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/install.md");
    let doc = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let section = doc
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("{path} has no line {heading:?}"))
        .1;
    let section = section.split("\n## ").next().unwrap_or_default();
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .unwrap_or_else(|| panic!("{path}: no ```sh block under {heading:?}"))
        .0;
    block.to_owned()
}

/// Runs `block` in the folder the operator copied the binary and packaging/ to, with `env`
/// exported, under `bash -e` (a failing line fails the test); its output.
fn run_block(vm: &mut Vm, block: &str, env: &str) -> String {
    let script = base64::engine::general_purpose::STANDARD.encode(block);
    let command = format!(
        "echo {script} | base64 -d > /tmp/guide.sh && cd /root/edge-agent && {env} bash -e /tmp/guide.sh"
    );
    match vm.try_run(&command, Duration::from_secs(180)) {
        Some((0, out)) => out,
        Some((code, out)) => panic!("the guide's block exited {code}:\n{block}\n---\n{out}"),
        None => panic!(
            "the guide's block did not end within 180 s:\n{block}\nconsole:\n{}",
            vm.console_tail()
        ),
    }
}

/// Waits until the server has answered 3 more polls than `since`, all with `EDGE_ID`.
fn wait_polls(server: &FakePortainer, since: usize) {
    super::wait_polls(server, since, 3, STARTING);
    assert_eq!(edge_ids(server), [EDGE_ID]);
}

#[test]
#[ignore = "needs root, QEMU, debootstrap and the static musl toolchain (tests/run.sh)"]
fn in_vm_install_guide_followed_literally() {
    let server = server();
    server.put_edge_stack(1, "vmstack", &[("docker-compose.yml", &compose("guide"))]);
    server.set_stacks(ENDPOINT, &[(1, 1)]);
    // The guide ends with `edge-agent check`, which also connects to the tunnel port: a
    // listener takes its connections (nothing opens a tunnel here).
    let tunnel = TcpListener::bind("127.0.0.1:0").expect("a tunnel port on the loopback");
    let tunnel_port = tunnel.local_addr().expect("its port").port();
    let key = edge_key(
        &format!("http://{PORTAINER_IP}:{}", server.port()),
        &format!("{PORTAINER_IP}:{tunnel_port}"),
        "fp",
        ENDPOINT,
    );
    let setup = Setup {
        flavour: Flavour::Bare,
        forwards: vec![server.port(), tunnel_port],
        append: String::new(),
        data: None,
    };
    let disks = Disks::new(&setup);
    let mut vm = Vm::boot(&disks, &setup, 1);
    import_image(&mut vm);

    // "Install": the key and the Edge ID from Portainer exported, then the block as is. Docker
    // is there (docker.io), so its apt-get line is skipped: the guest reaches no mirror.
    let env = format!("export EDGE_KEY='{key}' EDGE_ID='{EDGE_ID}' &&");
    let install = guide_block("## Install");
    // Its last line, `edge-agent check`, exits 0: everything in order.
    let check = run_block(&mut vm, &install, &env);
    println!("edge-agent check after the install:\n{check}");
    wait_unit(&mut vm, "active");
    wait_polls(&server, 0);
    wait_status(&server, &mut vm, 1, 7);
    let before = containers(&mut vm);
    assert_eq!(before.lines().count(), 1, "{before}");
    let reports = server.stack_reports(1).len();

    // A reboot: the agent starts by itself, with the same Edge ID, and changes nothing.
    vm.poweroff("systemctl reboot", Duration::from_secs(120));
    let polls = server.poll_count();
    let mut vm = Vm::boot(&disks, &setup, 2);
    wait_unit(&mut vm, "active");
    wait_polls(&server, polls);
    assert_unchanged(&mut vm, &server, &before, reports);

    // "Removing it": the agent and its units go; the env file, the state (Edge ID, stacks)
    // and the stacks' containers stay.
    let remove = guide_block("## Removing it");
    run_block(&mut vm, &remove, "");
    assert_eq!(
        vm.sh("ls /usr/bin/edge-agent /usr/lib/systemd/system/edge-agent.service /usr/lib/systemd/system/edge-agent.path 2>/dev/null | wc -l; pidof edge-agent || echo stopped"),
        "0\nstopped"
    );
    let env_file = vm.sh("cat /etc/edge-agent/edge-agent.env");
    assert!(
        env_file.contains(&format!("\nEDGE_KEY={key}\n"))
            && env_file.contains(&format!("\nEDGE_ID={EDGE_ID}\n")),
        "{env_file}"
    );
    assert_eq!(guest_state(&mut vm)["edge_id"], EDGE_ID);
    assert_eq!(containers(&mut vm), before, "the stack keeps running");

    // A later install takes the device back as the same environment, even with only the key
    // exported: the state file keeps the Edge ID, and nothing is deployed or reported again.
    let polls = server.poll_count();
    let env = format!("export EDGE_KEY='{key}' &&");
    run_block(&mut vm, &install, &env);
    wait_polls(&server, polls);
    assert_eq!(containers(&mut vm), before);
    assert_eq!(server.stack_reports(1).len(), reports, "no status re-sent");

    // Removing it with its stacks: `edge-agent compose ... down` as the guide says, then the
    // block; nothing of the stack is left.
    vm.sh("edge-agent compose -p edge_vmstack -f /var/lib/edge-agent/stacks/1/docker-compose.yml down");
    run_block(&mut vm, &remove, "");
    assert_eq!(containers(&mut vm), "");
    vm.poweroff("systemctl poweroff", Duration::from_secs(120));
}
