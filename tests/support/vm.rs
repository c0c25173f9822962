//! Devices in a VM: disk images made by `tests/vm/image.sh` (Debian 12 with systemd and Docker,
//! or BusyBox init), booted by QEMU (KVM when `/dev/kvm` opens, else TCG) with 1 vCPU and
//! 1 GiB, every wait bounded. Nothing leaves the host: QEMU's user network with `restrict=on`;
//! the guest reaches only [`PORTAINER_IP`], whose ports `guestfwd` rules map to the host's
//! loopback. The tests drive the guest through a virtio-serial port (`tests/vm/control.sh`)
//! and read its serial console (`console.log` in the VM's folder, printed when a wait fails).
//!
//! Disks: the root image is built once per agent binary and shared read-only; each VM writes
//! to its own qcow2 overlay with `cache=writeback` (see docs/testing.md#devices-in-a-vm for
//! what a hard kill of QEMU does and does not model of an SD card).

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The address the guest reaches the fake Portainer (and anything else the test maps) at.
pub const PORTAINER_IP: &str = "10.0.2.100";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program` with `args`, failing the test with its output when it fails or is missing.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| super::missing(&format!("{program}: {e} (tests/run.sh installs it)")));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn need_tools() {
    for (tool, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("qemu-img", "qemu-utils"),
        ("debootstrap", "debootstrap"),
        ("mkfs.ext4", "e2fsprogs"),
    ] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false);
        if !found {
            super::missing(&format!("{tool} is missing: apt-get install {package}"));
        }
    }
    if !Path::new("/bin/busybox").exists() {
        super::missing("/bin/busybox is missing: apt-get install busybox-static");
    }
}

/// The static musl agent, built now (`cross/build-static.sh build`), unless
/// `EDGE_AGENT_VM_BIN` names one.
fn agent_binary() -> PathBuf {
    if let Some(named) = std::env::var_os("EDGE_AGENT_VM_BIN") {
        return named.into();
    }
    run(
        "bash",
        &[
            "cross/build-static.sh",
            "build",
            "x86_64-unknown-linux-musl",
        ],
    );
    repo().join("target/static/x86_64-unknown-linux-musl/min-size/edge-agent")
}

fn cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vm")
}

/// A short digest of files' contents, naming a cached image.
fn digest(files: &[PathBuf]) -> String {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for file in files {
        let bytes = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// Which image a VM boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Debian 12, systemd, Docker; the agent as the Yocto recipe installs it.
    Debian,
    /// The same Debian without the agent installed: its binary (`edge-agent`) and the
    /// repository's `packaging/` in `/root/edge-agent/`, where docs/install.md starts.
    Bare,
    /// BusyBox as init; the agent and Buildroot's init script.
    Busybox,
}

/// The folder holding `vmlinuz`, `initrd.img` and the root image of `flavour`, built once per
/// test process and cached per agent binary and image script.
pub fn image(flavour: Flavour) -> PathBuf {
    static DEBIAN: OnceLock<PathBuf> = OnceLock::new();
    static BARE: OnceLock<PathBuf> = OnceLock::new();
    static BUSYBOX: OnceLock<PathBuf> = OnceLock::new();
    let cell = match flavour {
        Flavour::Debian => &DEBIAN,
        Flavour::Bare => &BARE,
        Flavour::Busybox => &BUSYBOX,
    };
    cell.get_or_init(|| {
        need_tools();
        let agent = agent_binary();
        let rootfs = run(
            "bash",
            &["tests/vm/image.sh", "rootfs", cache().to_str().unwrap()],
        );
        let inputs = [
            agent.clone(),
            repo().join("tests/vm/image.sh"),
            repo().join("tests/vm/control.sh"),
            repo().join("packaging/edge-agent.service"),
            repo().join("packaging/edge-agent.path"),
            repo().join("packaging/edge-agent.env"),
            repo().join("packaging/edge-agent.init"),
        ];
        let name = match flavour {
            Flavour::Debian => "debian",
            Flavour::Bare => "bare",
            Flavour::Busybox => "busybox",
        };
        let out = cache().join(format!("image-{name}-{}", digest(&inputs)));
        if !out.join("done").exists() {
            // Images of earlier agent builds go: each holds a root file system.
            for old in fs::read_dir(cache()).into_iter().flatten().flatten() {
                if old
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&format!("image-{name}-"))
                {
                    let _ = fs::remove_dir_all(old.path());
                }
            }
            let started = Instant::now();
            run(
                "bash",
                &[
                    "tests/vm/image.sh",
                    name,
                    &rootfs,
                    agent.to_str().unwrap(),
                    out.to_str().unwrap(),
                ],
            );
            fs::write(out.join("done"), "").unwrap();
            println!(
                "built the {name} image in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
        out
    })
    .clone()
}

/// How QEMU runs guests here: `kvm` when its KVM boots the image's kernel, else `tcg` (the
/// reason is printed once).
pub fn accelerator() -> &'static str {
    static ACCEL: OnceLock<&'static str> = OnceLock::new();
    ACCEL.get_or_init(|| {
        need_tools();
        let rootfs = run(
            "bash",
            &["tests/vm/image.sh", "rootfs", cache().to_str().unwrap()],
        );
        let out = Command::new("bash")
            .args(["tests/vm/image.sh", "accel", &rootfs])
            .current_dir(repo())
            .output()
            .expect("run tests/vm/image.sh accel");
        let why = String::from_utf8_lossy(&out.stderr);
        match String::from_utf8_lossy(&out.stdout).trim() {
            "kvm" => "kvm",
            _ => {
                println!(
                    "QEMU runs the guests on TCG, much slower than KVM: {}",
                    why.trim()
                );
                "tcg"
            }
        }
    })
}

/// How long a boot may take: TCG is several times slower than KVM, and a Debian boot took up
/// to 276 s on TCG with 3 VMs and builds sharing 2 cores (docs/testing.md).
pub fn boot_timeout() -> Duration {
    match accelerator() {
        "kvm" => Duration::from_secs(120),
        _ => Duration::from_secs(600),
    }
}

/// What a VM is booted with.
pub struct Setup {
    pub flavour: Flavour,
    /// Host loopback ports the guest reaches as `PORTAINER_IP:<same port>`.
    pub forwards: Vec<u16>,
    /// Kernel command line additions (`ro`, say).
    pub append: String,
    /// A data partition (ext4, label `edge-data`) holding these files, attached as /dev/vdb.
    pub data: Option<Vec<(String, String)>>,
}

/// A guest's disks, kept across boots (a reboot or a power cut boots the same disks again).
pub struct Disks {
    pub dir: tempfile::TempDir,
    flavour: Flavour,
    data: bool,
}

impl Disks {
    pub fn new(setup: &Setup) -> Disks {
        let image = image(setup.flavour);
        let dir = tempfile::Builder::new()
            .prefix("edge-vm-")
            .tempdir()
            .unwrap();
        let root = match setup.flavour {
            Flavour::Debian | Flavour::Bare => image.join("root.img"),
            Flavour::Busybox => image.join("busybox.img"),
        };
        run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "raw",
                "-b",
                root.to_str().unwrap(),
                dir.path().join("root.qcow2").to_str().unwrap(),
            ],
        );
        if let Some(files) = &setup.data {
            let content = dir.path().join("data-content");
            fs::create_dir(&content).unwrap();
            for (name, text) in files {
                let path = content.join(name);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, text).unwrap();
            }
            run(
                "bash",
                &[
                    "tests/vm/image.sh",
                    "data",
                    dir.path().join("data.img").to_str().unwrap(),
                    "64",
                    content.to_str().unwrap(),
                ],
            );
        }
        Disks {
            dir,
            flavour: setup.flavour,
            data: setup.data.is_some(),
        }
    }
}

/// A running QEMU; killed when dropped.
pub struct Vm {
    child: Child,
    control: Option<UnixStream>,
    socket: PathBuf,
    pub console: PathBuf,
    next_id: u64,
    pub booted_in: Duration,
}

impl Vm {
    /// Boots `disks`, returning once the control channel answers (the guest's init has started
    /// its services), within [`boot_timeout`].
    pub fn boot(disks: &Disks, setup: &Setup, boot: u32) -> Vm {
        let image = image(disks.flavour);
        let dir = disks.dir.path();
        let socket = dir.join("control.sock");
        let _ = fs::remove_file(&socket);
        let console = dir.join(format!("console-{boot}.log"));
        let mut netdev = "user,id=net0,restrict=on".to_owned();
        for port in &setup.forwards {
            netdev.push_str(&format!(
                ",guestfwd=tcp:{PORTAINER_IP}:{port}-cmd:/bin/busybox nc 127.0.0.1 {port}"
            ));
        }
        let mut append = "root=/dev/vda console=ttyS0 panic=-1 ".to_owned();
        append.push_str(match disks.flavour {
            Flavour::Debian | Flavour::Bare => "rw",
            Flavour::Busybox => "rw init=/sbin/init",
        });
        append.push(' ');
        append.push_str(&setup.append);
        let mut command = Command::new("qemu-system-x86_64");
        command
            .args(["-accel", accelerator(), "-smp", "1", "-m", "1024"])
            .args([
                "-cpu",
                if accelerator() == "kvm" {
                    "host"
                } else {
                    "max"
                },
            ])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(image.join("vmlinuz"))
            .arg("-initrd")
            .arg(image.join("initrd.img"))
            .args(["-append", &append])
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=qcow2,cache=writeback",
                dir.join("root.qcow2").display()
            ));
        if disks.data {
            command.arg("-drive").arg(format!(
                "file={},if=virtio,format=raw,cache=writeback",
                dir.join("data.img").display()
            ));
        }
        command
            .args(["-netdev", &netdev, "-device", "virtio-net-pci,netdev=net0"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=control,path={},server=on,wait=off",
                socket.display()
            ))
            .args(["-device", "virtio-serial-pci"])
            .args(["-device", "virtserialport,chardev=control,name=control"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                fs::File::create(dir.join(format!("qemu-{boot}.log"))).unwrap(),
            ));
        let child = command
            .spawn()
            .unwrap_or_else(|e| super::missing(&format!("qemu-system-x86_64: {e}")));
        let started = Instant::now();
        let mut vm = Vm {
            child,
            control: None,
            socket,
            console,
            next_id: 0,
            booted_in: Duration::ZERO,
        };
        vm.connect(started + Duration::from_secs(10));
        let deadline = started + boot_timeout();
        loop {
            if vm.try_run("true", Duration::from_secs(2)).is_some() {
                break;
            }
            vm.assert_alive("booting");
            assert!(
                Instant::now() < deadline,
                "the guest did not answer on its control channel within {:?} ({}):\n{}",
                boot_timeout(),
                accelerator(),
                vm.console_tail()
            );
        }
        vm.booted_in = started.elapsed();
        println!(
            "boot {boot} ({:?}, {}): control channel up in {:.1} s",
            disks.flavour,
            accelerator(),
            vm.booted_in.as_secs_f64()
        );
        vm
    }

    fn connect(&mut self, deadline: Instant) {
        loop {
            match UnixStream::connect(&self.socket) {
                Ok(stream) => {
                    self.control = Some(stream);
                    return;
                }
                Err(e) => {
                    self.assert_alive("starting");
                    assert!(
                        Instant::now() < deadline,
                        "QEMU's control socket {}: {e}",
                        self.socket.display()
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    fn assert_alive(&mut self, doing: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let dir = self.socket.parent().unwrap();
            let mut qemu_log = String::new();
            for entry in fs::read_dir(dir).unwrap().flatten() {
                if entry.file_name().to_string_lossy().starts_with("qemu-") {
                    qemu_log.push_str(&fs::read_to_string(entry.path()).unwrap_or_default());
                }
            }
            panic!(
                "QEMU exited ({status}) while {doing}: {qemu_log}\nconsole:\n{}",
                self.console_tail()
            );
        }
    }

    /// The last 60 lines of the serial console.
    pub fn console_tail(&self) -> String {
        let text = fs::read_to_string(&self.console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Sends `command` (one line of shell) without waiting for an answer.
    pub fn send(&mut self, command: &str) -> u64 {
        assert!(!command.contains('\n'), "one line: {command}");
        self.next_id += 1;
        let id = self.next_id;
        let stream = self.control.as_mut().expect("connected");
        if let Err(e) = stream.write_all(format!("{id} {command}\n").as_bytes()) {
            // QEMU closed the socket: say whether it exited, with its log, before the error.
            self.assert_alive(&format!("sending `{command}`"));
            panic!(
                "write to the control socket {} (QEMU still running): {e}\nconsole:\n{}",
                self.socket.display(),
                self.console_tail()
            );
        }
        id
    }

    /// Runs `command` in the guest: its exit code and output, or `None` after `timeout`.
    pub fn try_run(&mut self, command: &str, timeout: Duration) -> Option<(i32, String)> {
        let id = self.send(command);
        let marker = format!("@@vm-control-rc={id}:");
        let deadline = Instant::now() + timeout;
        let mut text = Vec::new();
        let stream = self.control.as_mut().expect("connected");
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            stream.set_read_timeout(Some(left)).unwrap();
            match stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => text.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(_) => return None,
            }
            let all = String::from_utf8_lossy(&text);
            if let Some(at) = all.find(&marker) {
                let rest = &all[at + marker.len()..];
                if let Some(end) = rest.find("@@") {
                    let code = rest[..end].parse().unwrap_or(-1);
                    // Answers to earlier commands that timed out come before ours.
                    let before = &all[..at];
                    let start = before.rfind("@@\n").map_or(0, |i| i + 3).min(before.len());
                    let output = before[start..].trim_end_matches('\n');
                    return Some((code, output.to_owned()));
                }
            }
        }
    }

    /// Runs `command`, failing the test unless it exits 0 within 60 s; its output.
    pub fn sh(&mut self, command: &str) -> String {
        match self.try_run(command, Duration::from_secs(60)) {
            Some((0, out)) => out,
            Some((code, out)) => panic!("guest: `{command}` exited {code}:\n{out}"),
            None => panic!(
                "guest: `{command}` did not answer within 60 s\nconsole:\n{}",
                self.console_tail()
            ),
        }
    }

    /// Runs `command` every 0.5 s until a line of its output is `expected`; fails after
    /// `timeout` with the last output.
    pub fn wait_output(&mut self, command: &str, expected: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some((_, out)) = self.try_run(command, Duration::from_secs(30)) {
                if out.lines().any(|l| l.trim() == expected) {
                    return out;
                }
                last = out;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "guest: `{command}` never printed {expected:?} within {timeout:?}; last:\n{last}\nconsole:\n{}",
            self.console_tail()
        );
    }

    /// Waits for QEMU to exit by itself (a poweroff or reboot in the guest), within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Duration {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the guest did not power off within {timeout:?}:\n{}",
            self.console_tail()
        );
    }

    /// Powers the guest off from inside and waits for QEMU to exit.
    pub fn poweroff(&mut self, command: &str, timeout: Duration) -> Duration {
        self.send(command);
        self.wait_exit(timeout)
    }

    /// A power cut: QEMU killed with SIGKILL; what the guest had not written to its disks is
    /// lost.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}
