//! The agent on a device: Debian 12 images with systemd and Docker (the agent installed as the
//! Yocto recipe installs it), booted in QEMU against the fake Portainer server
//! (support/vm.rs, tests/vm/). Needs root, QEMU, debootstrap and the static musl toolchain
//! (tests/run.sh installs them); KVM when `/dev/kvm` works, else TCG (much slower, said on
//! stdout). The figures are printed (`--nocapture`).

mod support;

use std::time::{Duration, Instant};
use support::vm::{accelerator, Disks, Flavour, Setup, Vm, PORTAINER_IP};
use support::{edge_key, FakePortainer};

const ENDPOINT: i64 = 1;
const IMAGE: &str = "edge-agent-test/busybox:1";
const DEPLOY: Duration = Duration::from_secs(180);

fn server() -> FakePortainer {
    let server = FakePortainer::start_245(support::Transport::Plain);
    server.add_endpoint(ENDPOINT, None);
    server.set_checkin(1.0);
    server
}

fn setup(server: &FakePortainer) -> Setup {
    Setup {
        flavour: Flavour::Debian,
        forwards: vec![server.port()],
        append: String::new(),
        data: None,
    }
}

/// The Edge key of `server` as the guest reaches it (no tunnel server: port 9 of the host's
/// address, which nothing forwards).
fn key(server: &FakePortainer) -> String {
    edge_key(
        &format!("http://{PORTAINER_IP}:{}", server.port()),
        &format!("{PORTAINER_IP}:9"),
        "fp",
        ENDPOINT,
    )
}

fn compose(greeting: &str) -> String {
    format!(
        r#"services:
  web:
    image: {IMAGE}
    command: ["busybox", "sh", "-c", "echo {greeting} > /data/hello; exec busybox sleep 86400"]
    stop_grace_period: 1s
    restart: unless-stopped
    volumes: ["data:/data"]
volumes:
  data: {{}}
"#
    )
}

/// Imports the test image from the guest's busybox-static (nothing is pulled: the guest
/// reaches no registry).
fn import_image(vm: &mut Vm) {
    vm.sh(&format!(
        "mkdir -p /tmp/img/bin /tmp/img/tmp && cp /bin/busybox /tmp/img/bin/ && ln -sf busybox /tmp/img/bin/sh && tar -C /tmp/img -c . | docker import - {IMAGE} >/dev/null"
    ));
}

/// Waits until stack `id`'s last report is `status`; fails with the history and the journal.
fn wait_status(server: &FakePortainer, vm: &mut Vm, id: i64, status: u8) {
    let deadline = Instant::now() + DEPLOY;
    while Instant::now() < deadline {
        if server.stack_history(id).last() == Some(&status) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let journal = vm.sh("journalctl -u edge-agent --no-pager | tail -n 40");
    panic!(
        "stack {id}: history {:?}, expected it to end with {status}\n{journal}",
        server.stack_history(id)
    );
}

/// The Edge IDs the server saw on polls.
fn edge_ids(server: &FakePortainer) -> Vec<String> {
    let mut ids: Vec<String> = server
        .requests()
        .iter()
        .filter_map(|r| r.header("X-PortainerAgent-EdgeID").map(str::to_owned))
        .collect();
    ids.dedup();
    ids
}

/// `docker ps -a` of the guest: name, ID and state of every container.
fn containers(vm: &mut Vm) -> String {
    vm.sh("docker ps -a --format '{{.Names}} {{.ID}} {{.State}}' | sort")
}

#[test]
#[ignore = "needs root, QEMU, debootstrap and the static musl toolchain (tests/run.sh)"]
fn first_boot_then_reboot() {
    let server = server();
    server.put_edge_stack(1, "vmstack", &[("docker-compose.yml", &compose("hello"))]);
    server.set_stacks(ENDPOINT, &[(1, 1)]);
    let setup = setup(&server);
    let disks = Disks::new(&setup);
    let mut vm = Vm::boot(&disks, &setup, 1);
    println!(
        "first boot ({}): control channel up in {:.1} s",
        accelerator(),
        vm.booted_in.as_secs_f64()
    );

    // The image as shipped: no key, so the agent stopped with 78 and says what to do, and
    // systemd does not restart it.
    vm.wait_output(
        "systemctl is-active edge-agent || true",
        "failed",
        Duration::from_secs(60),
    );
    let status = vm.sh("systemctl show -p ExecMainStatus edge-agent");
    assert_eq!(status, "ExecMainStatus=78");
    let journal = vm.sh("journalctl -u edge-agent --no-pager");
    assert!(
        journal.contains("EDGE_KEY is not set: in Portainer open Environments > your Edge environment, copy its Edge key and put it in /etc/edge-agent/edge-agent.env as EDGE_KEY=<key>"),
        "{journal}"
    );
    assert!(server.requests().is_empty(), "no poll without a key");

    // The operator writes the key into the env file: edge-agent.path starts the agent.
    import_image(&mut vm);
    let key = key(&server);
    vm.sh(&format!(
        "sed -i 's|^EDGE_KEY=$|EDGE_KEY={key}|' /etc/edge-agent/edge-agent.env"
    ));
    let saved = Instant::now();
    vm.wait_output(
        "systemctl is-active edge-agent || true",
        "active",
        Duration::from_secs(60),
    );
    wait_status(&server, &mut vm, 1, 7);
    println!(
        "env file saved to stack running: {:.1} s",
        saved.elapsed().as_secs_f64()
    );
    let ids = edge_ids(&server);
    assert_eq!(ids.len(), 1, "one Edge ID: {ids:?}");
    let edge_id = ids[0].clone();
    let journal = vm.sh("journalctl -u edge-agent --no-pager");
    assert!(
        journal.contains(&format!(
            "polling http://{PORTAINER_IP}:{} as environment {ENDPOINT} with Edge ID {edge_id}",
            server.port()
        )),
        "{journal}"
    );
    assert_eq!(
        vm.sh("docker exec edge_vmstack-web-1 cat /data/hello"),
        "hello"
    );
    let before = containers(&mut vm);
    assert_eq!(before.lines().count(), 1, "{before}");
    assert!(before.ends_with(" running"), "{before}");
    let reports = server.stack_reports(1).len();

    // A reboot: the same Edge ID, no container recreated, no status sent again.
    let took = vm.poweroff("systemctl reboot", Duration::from_secs(90));
    println!("reboot: shut down in {:.1} s", took.as_secs_f64());
    let polls = server.poll_count();
    let mut vm = Vm::boot(&disks, &setup, 2);
    vm.wait_output(
        "systemctl is-active edge-agent || true",
        "active",
        Duration::from_secs(60),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.poll_count() < polls + 5 {
        assert!(Instant::now() < deadline, "no polls after the reboot");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(edge_ids(&server), [edge_id.clone()]);
    let after = vm.wait_output(
        "docker ps -a --format '{{.Names}} {{.ID}} {{.State}}' | sort",
        &before,
        Duration::from_secs(60),
    );
    assert_eq!(after, before, "the same container, running again");
    assert_eq!(server.stack_reports(1).len(), reports, "no status re-sent");
    // The previous boot's stop was clean: systemd stopped the agent, which exited 0.
    let previous = vm.sh("journalctl -b -1 -u edge-agent --no-pager -o cat | tail -n 5");
    assert!(
        previous.contains("Deactivated successfully") || previous.contains("Stopped"),
        "{previous}"
    );
    vm.poweroff("systemctl poweroff", Duration::from_secs(90));
}
