//! The agent on a device: Debian 12 images with systemd and Docker (the agent installed as the
//! Yocto recipe installs it), booted in QEMU against the fake Portainer server
//! (support/vm.rs, tests/vm/). Needs root, QEMU, debootstrap and the static musl toolchain
//! (tests/run.sh installs them); KVM when `/dev/kvm` works, else TCG (much slower, said on
//! stdout). The figures are printed (`--nocapture`).

#[path = "vm/install_guide.rs"]
mod install_guide;
mod support;

use base64::Engine;
use std::time::{Duration, Instant};
use support::state_file::{decode, Random};
use support::vm::{accelerator, Disks, Flavour, Setup, Vm, PORTAINER_IP};
use support::{edge_key, EdgeJob, FakePortainer};

const ENDPOINT: i64 = 1;
const IMAGE: &str = "edge-agent-test/busybox:1";
/// How long a stack may take to deploy, counted from the control channel after a boot: up to
/// 150 s on TCG at load average 10 on 2 cores (docs/testing.md's figures).
const DEPLOY: Duration = Duration::from_secs(300);
/// How long what a boot or a restart starts (Docker, then the agent, its first polls) may take
/// once the control channel answers, on the same loaded TCG.
const STARTING: Duration = Duration::from_secs(300);

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

/// The operator's step of README: the Edge key written into the env file.
fn write_key(vm: &mut Vm, server: &FakePortainer) {
    let key = key(server);
    vm.sh(&format!(
        "sed -i 's|^EDGE_KEY=$|EDGE_KEY={key}|' /etc/edge-agent/edge-agent.env"
    ));
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
fn in_vm_first_boot_then_reboot() {
    let server = server();
    server.put_edge_stack(1, "vmstack", &[("docker-compose.yml", &compose("hello"))]);
    server.set_stacks(ENDPOINT, &[(1, 1)]);
    let setup = setup(&server);
    let disks = Disks::new(&setup);
    let mut vm = Vm::boot(&disks, &setup, 1);

    // The image as shipped: no key, so the agent stopped with 78 and says what to do, and
    // systemd does not restart it.
    wait_unit(&mut vm, "failed");
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
    write_key(&mut vm, &server);
    let saved = Instant::now();
    wait_unit(&mut vm, "active");
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
        vm.sh("docker exec edge_vmstack-web-1 busybox cat /data/hello"),
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
    wait_unit(&mut vm, "active");
    wait_polls(&server, polls, 5, STARTING);
    assert_eq!(edge_ids(&server), [edge_id.as_str()]);
    assert_unchanged(&mut vm, &server, &before, reports);
    // At the shutdown, systemd stopped the agent, which stopped by itself (no SIGKILL).
    let previous = vm.sh("journalctl -b -1 -u edge-agent --no-pager -o cat | tail -n 6");
    assert!(
        previous.contains("SIGTERM received, stopping")
            && previous.contains("INFO  stopped")
            && !previous.contains("timed out"),
        "{previous}"
    );
    vm.poweroff("systemctl poweroff", Duration::from_secs(90));
}

/// How many power cuts: `EDGE_AGENT_VM_CUTS`, else 50 with `EDGE_AGENT_VM_LONG=1`, else 5.
fn cuts() -> u32 {
    if let Ok(n) = std::env::var("EDGE_AGENT_VM_CUTS") {
        return n.parse().expect("EDGE_AGENT_VM_CUTS is a number");
    }
    match std::env::var("EDGE_AGENT_VM_LONG").as_deref() {
        Ok("1") => 50,
        _ => 5,
    }
}

/// Appends the minute it runs in to a file on the guest's disk, and syncs it.
const JOB_SCRIPT: &str =
    "date +%Y-%m-%dT%H:%M >> /var/lib/vm-job-runs\nsync /var/lib/vm-job-runs\n";

/// The state file as found in the guest (the backup when a cut fell between the renames),
/// decoded; fails when neither copy is valid.
fn guest_state(vm: &mut Vm) -> serde_json::Value {
    let dir = "/var/lib/edge-agent";
    let text = vm.sh(&format!(
        "if [ -e {dir}/edge-agent.state ]; then base64 -w0 {dir}/edge-agent.state; else echo backup; base64 -w0 {dir}/edge-agent.state.bak; fi"
    ));
    let encoded = text.lines().last().unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_else(|e| panic!("base64 of the state file: {e}: {text}"));
    decode(&bytes).unwrap_or_else(|e| panic!("the state file is not valid ({e}): {text}"))
}

/// The server's latest report on stack `id`: (version, status).
fn last_report(server: &FakePortainer, id: i64) -> Option<(i64, u8)> {
    server
        .stack_reports(id)
        .last()
        .map(|r| (r.version, r.status))
}

/// Waits until the device runs exactly what the server assigns: stack 1 at `version` (its
/// container says so) and stack 2 when `second`, each reported running, stack 2 otherwise
/// removed; no other container. Returns how long it took.
fn converge(server: &FakePortainer, vm: &mut Vm, version: i64, second: Option<i64>) -> Duration {
    let started = Instant::now();
    let mut expected = vec![format!("edge_vmstack-web-1 running v{version}")];
    if second.is_some() {
        expected.push("edge_vmstack2-web-1 running two".to_owned());
    }
    let expected = expected.join("\n");
    let listing = "for c in $(docker ps -aq); do docker inspect -f '{{.Name}} {{.State.Status}}' $c | cut -c2- | tr '\\n' ' '; docker exec $c busybox cat /data/hello 2>/dev/null || echo; done | sort";
    let mut last = String::new();
    while started.elapsed() < DEPLOY {
        let reported = last_report(server, 1) == Some((version, 7))
            && match second {
                Some(v) => last_report(server, 2) == Some((v, 7)),
                None => matches!(last_report(server, 2), None | Some((_, 4))),
            };
        if reported {
            if let Some((_, out)) = vm.try_run(listing, Duration::from_secs(30)) {
                if out.trim() == expected {
                    return started.elapsed();
                }
                last = out;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let journal = vm.sh("journalctl -b -u edge-agent --no-pager -o cat | tail -n 30");
    panic!(
        "not converged within {DEPLOY:?}: stack 1 {:?} (want v{version} running), stack 2 {:?} (want {second:?}); containers:\n{last}\nwant:\n{expected}\njournal:\n{journal}",
        server.stack_history(1),
        server.stack_history(2)
    );
}

#[test]
#[ignore = "needs root, QEMU, debootstrap and the static musl toolchain (tests/run.sh)"]
fn in_vm_power_cuts_while_stacks_deploy_jobs_run_and_state_is_saved() {
    let cuts = cuts();
    let mut random = Random::from_clock();
    let seed = random.0;
    let server = server();
    server.put_edge_stack(1, "vmstack", &[("docker-compose.yml", &compose("v1"))]);
    server.put_edge_stack(2, "vmstack2", &[("docker-compose.yml", &compose("two"))]);
    server.set_stacks(ENDPOINT, &[(1, 1)]);
    server.set_jobs(
        ENDPOINT,
        &[EdgeJob {
            id: 1,
            cron: "* * * * *".into(),
            script: JOB_SCRIPT.into(),
            version: 1,
            collect_logs: false,
        }],
    );
    let setup = setup(&server);
    let disks = Disks::new(&setup);
    let mut vm = Vm::boot(&disks, &setup, 0);
    import_image(&mut vm);
    write_key(&mut vm, &server);
    vm.sh("sync");

    let (mut version, mut second) = (1, None);
    let mut edge_id = None;
    let mut boots = Vec::new();
    let mut converged = Vec::new();
    let mut backups = 0;
    for cut in 0..=cuts {
        if cut > 0 {
            vm = Vm::boot(&disks, &setup, cut);
            boots.push(vm.booted_in);
        }
        // The agent starts after Docker: wait for its first state file on the first boot.
        if cut == 0 {
            vm.wait_output(
                "ls /var/lib/edge-agent/ 2>/dev/null",
                "edge-agent.state",
                STARTING,
            );
        }
        let state = guest_state(&mut vm);
        let id = state["edge_id"].as_str().unwrap_or_default().to_owned();
        assert!(
            !id.is_empty(),
            "after cut {cut} (seed {seed}): no Edge ID: {state}"
        );
        assert_eq!(
            edge_id.get_or_insert(id.clone()),
            &id,
            "after cut {cut} (seed {seed})"
        );
        converged.push(converge(&server, &mut vm, version, second));
        let journal = vm.sh("journalctl -b -u edge-agent --no-pager -o cat");
        assert!(
            !journal.contains("starting with an empty state"),
            "after cut {cut} (seed {seed}):\n{journal}"
        );
        backups += journal.matches("using the last good copy").count();
        let ids: Vec<String> = edge_ids(&server);
        assert_eq!(ids, [id.as_str()], "after cut {cut} (seed {seed})");
        let runs = vm.sh("cat /var/lib/vm-job-runs 2>/dev/null || true");
        let mut minutes: Vec<&str> = runs.lines().collect();
        let count = minutes.len();
        minutes.dedup();
        assert_eq!(
            minutes.len(),
            count,
            "after cut {cut} (seed {seed}): a minute ran twice:\n{runs}"
        );
        if cut == cuts {
            println!(
                "{cuts} power cuts (seed {seed}, {}): boots {:.0}-{:.0} s, converged {:.0}-{:.0} s after the control channel, {count} job runs, {backups} starts from the backup copy",
                accelerator(),
                boots.iter().min().unwrap_or(&Duration::ZERO).as_secs_f64(),
                boots.iter().max().unwrap_or(&Duration::ZERO).as_secs_f64(),
                converged.iter().min().unwrap_or(&Duration::ZERO).as_secs_f64(),
                converged.iter().max().unwrap_or(&Duration::ZERO).as_secs_f64(),
            );
            break;
        }
        // The server changes stack 1 and assigns or removes stack 2; the power goes at a
        // random moment within the next 15 s: during the poll, the fetch, the deploy or the
        // state writes, or a job's run.
        version += 1;
        server.put_edge_stack(
            1,
            "vmstack",
            &[("docker-compose.yml", &compose(&format!("v{version}")))],
        );
        second = match second {
            None => Some(version),
            Some(_) => None,
        };
        let mut stacks = vec![(1, version)];
        stacks.extend(second.map(|v| (2, v)));
        server.set_stacks(ENDPOINT, &stacks);
        let at = random.below(15_000);
        std::thread::sleep(Duration::from_millis(at));
        vm.kill();
        println!("cut {}: {at} ms after the change", cut + 1);
    }
    vm.poweroff("systemctl poweroff", Duration::from_secs(120));
}

/// Waits until `systemctl is-active edge-agent` says `state`.
fn wait_unit(vm: &mut Vm, state: &str) {
    vm.wait_output("systemctl is-active edge-agent || true", state, STARTING);
}

/// After a reboot: the containers `before` listed (names, IDs) are running again, none was
/// recreated, and stack 1 has still `reports` status reports (none re-sent).
fn assert_unchanged(vm: &mut Vm, server: &FakePortainer, before: &str, reports: usize) {
    let after = vm.wait_output(
        "docker ps -a --format '{{.Names}} {{.ID}} {{.State}}' | sort",
        before,
        STARTING,
    );
    assert_eq!(after, before, "the same container, running again");
    assert_eq!(server.stack_reports(1).len(), reports, "no status re-sent");
}

/// The agent's process id in the guest, or "" when it is not running.
fn agent_pid(vm: &mut Vm) -> String {
    vm.sh("pidof edge-agent || true")
}

/// Waits until the server has answered `more` polls after `since`.
fn wait_polls(server: &FakePortainer, since: usize, more: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while server.poll_count() < since + more {
        assert!(
            Instant::now() < deadline,
            "{} polls within {timeout:?}, expected {more}",
            server.poll_count() - since
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs root, QEMU, debootstrap and the static musl toolchain (tests/run.sh)"]
fn in_vm_busybox_init_starts_restarts_and_stops_the_agent() {
    let server = server();
    let setup = Setup {
        flavour: Flavour::Busybox,
        ..setup(&server)
    };
    let disks = Disks::new(&setup);
    let mut vm = Vm::boot(&disks, &setup, 1);
    // The shipped env file has no key: the agent exits 78, the init script's supervisor says
    // so and does not restart it.
    vm.wait_output(
        "grep -c 'edge-agent exited with code 78' /var/log/messages || true",
        "1",
        STARTING,
    );
    let messages = vm.sh("cat /var/log/messages");
    assert!(messages.contains("EDGE_KEY is not set"), "{messages}");
    assert_eq!(server.poll_count(), 0);

    // The operator writes the key and restarts the service.
    write_key(&mut vm, &server);
    vm.sh("/etc/init.d/S70edge-agent restart");
    wait_polls(&server, 0, 3, STARTING);

    // The agent dies: the supervisor starts it again 10 s later.
    let first = agent_pid(&mut vm);
    assert!(!first.is_empty());
    vm.sh("kill -KILL $(pidof edge-agent)");
    let killed = Instant::now();
    let polls = server.poll_count();
    let mut again = String::new();
    while again.is_empty() || again == first {
        assert!(killed.elapsed() < Duration::from_secs(60), "not restarted");
        std::thread::sleep(Duration::from_millis(500));
        again = agent_pid(&mut vm);
    }
    let restarted = killed.elapsed();
    wait_polls(&server, polls, 3, Duration::from_secs(60));
    println!(
        "BusyBox: agent restarted {:.1} s after SIGKILL",
        restarted.as_secs_f64()
    );

    // poweroff: rcK stops it, within its 15 s grace period, before init's own SIGKILL.
    let took = vm.poweroff("poweroff", Duration::from_secs(60));
    println!("BusyBox: poweroff took {:.1} s", took.as_secs_f64());

    // The next boot starts it by itself; the log of the first boot shows the orderly stop.
    let polls = server.poll_count();
    let mut vm = Vm::boot(&disks, &setup, 2);
    wait_polls(&server, polls, 3, STARTING);
    let messages = vm.sh("cat /var/log/messages");
    assert!(
        messages.matches("SIGTERM received, stopping").count() == 1
            && messages.contains("INFO  stopped"),
        "the agent stopped by itself at the poweroff:\n{messages}"
    );
    vm.poweroff("poweroff", Duration::from_secs(60));
}

#[test]
#[ignore = "needs root, QEMU, debootstrap and the static musl toolchain (tests/run.sh)"]
fn in_vm_systemd_readiness_watchdog_and_stop() {
    let server = server();
    let setup = setup(&server);
    let disks = Disks::new(&setup);
    let mut vm = Vm::boot(&disks, &setup, 1);
    write_key(&mut vm, &server);
    wait_unit(&mut vm, "active");

    // Type=notify: `systemctl restart` returns once the agent said READY=1 (a missing
    // notification would fail it after TimeoutStartSec=30s).
    let started = Instant::now();
    vm.sh("systemctl restart edge-agent");
    println!(
        "systemctl restart returned after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        vm.sh("systemctl show -p Type -p ActiveState -p SubState edge-agent | sort"),
        "ActiveState=active\nSubState=running\nType=notify"
    );

    // Watchdog: a stopped process sends no WATCHDOG=1; systemd kills and restarts it. The
    // unit's WatchdogSec=3min shortened to 20 s by a drop-in, so the test waits less.
    vm.sh("mkdir -p /run/systemd/system/edge-agent.service.d && printf '[Service]\\nWatchdogSec=20s\\n' > /run/systemd/system/edge-agent.service.d/watchdog.conf && systemctl daemon-reload && systemctl restart edge-agent");
    let pid = vm.sh("systemctl show -p MainPID --value edge-agent");
    // Pings every 10 s keep it alive for longer than WatchdogSec.
    std::thread::sleep(Duration::from_secs(30));
    assert_eq!(vm.sh("systemctl show -p MainPID --value edge-agent"), pid);
    vm.sh(&format!("kill -STOP {pid}"));
    let stopped = Instant::now();
    let mut new = pid.clone();
    while new == pid || new == "0" {
        assert!(
            stopped.elapsed() < Duration::from_secs(90),
            "not restarted within 90 s after SIGSTOP"
        );
        std::thread::sleep(Duration::from_millis(500));
        new = vm.sh("systemctl show -p MainPID --value edge-agent");
    }
    println!(
        "watchdog: restarted {:.1} s after SIGSTOP (WatchdogSec=20s, RestartSec=10s)",
        stopped.elapsed().as_secs_f64()
    );
    let journal = vm.sh("journalctl -u edge-agent --no-pager -o cat");
    assert!(journal.contains("Watchdog timeout"), "{journal}");

    // A clean stop: SIGTERM, the agent's own orderly stop, exit code 0, well within
    // TimeoutStopSec=15s.
    wait_unit(&mut vm, "active");
    let stopping = Instant::now();
    vm.sh("systemctl stop edge-agent");
    let took = stopping.elapsed();
    println!("systemctl stop took {:.1} s", took.as_secs_f64());
    assert_eq!(
        vm.sh("systemctl show -p Result -p ExecMainStatus edge-agent | sort"),
        "ExecMainStatus=0\nResult=success"
    );
    let journal = vm.sh("journalctl -u edge-agent --no-pager -o cat | tail -n 4");
    assert!(journal.contains("INFO  stopped"), "{journal}");
    vm.poweroff("systemctl poweroff", Duration::from_secs(90));
}

/// What the integrator of a read-only image does (run in the guest, root still writable): the
/// root file system `ro` in fstab; the env file's folder a link to the data partition; the
/// agent's state, Docker's and containerd's data bind-mounted from it, onto mount points made
/// in the image (systemd cannot make them on a read-only root: the boot would stop in
/// emergency mode, docs/upgrading.md); the data partition required at boot; /tmp in memory.
const READ_ONLY_ROOT: &str = "set -e; systemctl stop edge-agent.path edge-agent; \
    mountpoint -q /data || mount LABEL=edge-data /data; \
    sed -i '/ \\/data ext4 /d' /etc/fstab; echo 'LABEL=edge-data /data ext4 defaults 0 2' >> /etc/fstab; \
    mkdir -p /data/state /data/docker /data/containerd; \
    rm -rf /etc/edge-agent; ln -s /data/edge-agent /etc/edge-agent; \
    sed -i 's|^/dev/vda / ext4 rw,|/dev/vda / ext4 ro,|' /etc/fstab; \
    printf '%s\\n' '/data/state /var/lib/edge-agent none bind,x-systemd.requires-mounts-for=/data 0 0' \
      '/data/docker /var/lib/docker none bind,x-systemd.requires-mounts-for=/data 0 0' \
      '/data/containerd /var/lib/containerd none bind,x-systemd.requires-mounts-for=/data 0 0' \
      'tmpfs /tmp tmpfs mode=1777 0 0' >> /etc/fstab; \
    mkdir -p /var/lib/edge-agent /var/lib/docker /var/lib/containerd";

#[test]
#[ignore = "needs root, QEMU, debootstrap and the static musl toolchain (tests/run.sh)"]
fn in_vm_read_only_root_with_env_file_and_state_on_a_data_partition() {
    let server = server();
    server.put_edge_stack(1, "vmstack", &[("docker-compose.yml", &compose("ro"))]);
    server.set_stacks(ENDPOINT, &[(1, 1)]);
    // The operator drops the env file on the data partition.
    let env = format!("EDGE_KEY={}\n", key(&server));
    let setup = Setup {
        data: Some(vec![("edge-agent/edge-agent.env".into(), env)]),
        // The kernel mounts it read-only; fstab's `ro` keeps it so.
        append: "ro".into(),
        ..setup(&server)
    };
    let disks = Disks::new(&setup);
    let mut vm = Vm::boot(&disks, &setup, 1);
    vm.sh("mount -o remount,rw /");
    vm.sh(READ_ONLY_ROOT);
    vm.poweroff("systemctl reboot", Duration::from_secs(90));

    for boot in [2, 3] {
        let mut vm = Vm::boot(&disks, &setup, boot);
        assert_eq!(vm.sh("findmnt -no OPTIONS / | cut -d, -f1"), "ro");
        assert!(
            vm.try_run("touch /usr/x", Duration::from_secs(10))
                .map(|r| r.0)
                != Some(0)
        );
        if boot == 2 {
            wait_unit(&mut vm, "active");
            import_image(&mut vm);
        }
        wait_status(&server, &mut vm, 1, 7);
        let ids = edge_ids(&server);
        assert_eq!(ids.len(), 1, "one Edge ID: {ids:?}");
        let state = vm.sh("ls /data/state");
        assert!(state.contains("edge-agent.state"), "{state}");
        vm.wait_output(
            "docker ps --format '{{.Names}} {{.State}}'",
            "edge_vmstack-web-1 running",
            STARTING,
        );
        let failed = vm.sh("systemctl --failed --no-legend");
        assert!(!failed.contains("edge-agent"), "{failed}");
        vm.poweroff("systemctl poweroff", Duration::from_secs(90));
    }
}
