//! The real Docker Engine for tests and benches: the client (a test that needs it fails when
//! there is no engine), the test image built from Debian's busybox-static, and containers that
//! are removed whatever happens. A test binary may run them against Podman instead
//! ([`use_podman`]).

use edge_agent::docker::{Client, Limits};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// `/bin/busybox` (static) alone in a `docker import`ed image; run it as `busybox APPLET ...`.
pub const IMAGE: &str = "edge-agent-test/busybox:1";
/// The label every test container carries, with a value unique to it.
pub const LABEL: &str = "edge-agent-test";

/// Where `tests/run.sh` starts `podman system service`.
pub const PODMAN_SOCKET: &str = "/run/edge-agent-test-podman.sock";

/// The engine the tests of one test binary run against: Docker unless the binary chose Podman
/// ([`use_podman`]) before anything else.
static PODMAN: OnceLock<bool> = OnceLock::new();

/// Makes every helper here use Podman's socket (and `podman import` for the image).
pub fn use_podman() {
    assert!(
        *PODMAN.get_or_init(|| true),
        "this test binary already uses Docker"
    );
}

fn podman() -> bool {
    *PODMAN.get_or_init(|| false)
}

/// Podman's socket when the binary uses Podman; else `DOCKER_HOST` when it is `unix://`, else
/// Docker's default socket.
pub fn socket() -> PathBuf {
    if podman() {
        return PathBuf::from(PODMAN_SOCKET);
    }
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => PathBuf::from(&host["unix://".len()..]),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

/// The engine, with the test image in it.
pub fn engine() -> Client {
    match Client::connect(socket(), Limits::default()) {
        Ok(client) => {
            ensure_image(&client);
            client
        }
        Err(e) if podman() => super::missing(&format!(
            "Podman does not answer: {e} (tests/run.sh starts podman system service)"
        )),
        Err(e) => super::missing(&format!("the Docker Engine does not answer: {e}")),
    }
}

/// Packs the contents of `root` into the tar file `tar`, as `docker import` takes it.
pub fn tar_folder(root: &Path, tar: &Path) {
    let status = Command::new("tar")
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(tar)
        .arg(".")
        .status()
        .unwrap_or_else(|e| super::missing(&format!("tar ({e})")));
    assert!(status.success(), "tar failed");
}

/// An HTTP request's head as the client wrote it, read a byte at a time so that nothing of the
/// body is taken; `None` when the client closes first.
pub fn request_head(client: &mut impl std::io::Read) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Builds [`IMAGE`] once per process unless the engine has it (parallel tests and other test
/// binaries may race to import it; importing the same tag twice is harmless).
fn ensure_image(client: &Client) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if client.inspect_image(IMAGE).is_ok() {
            return;
        }
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            super::missing("/bin/busybox is missing: apt-get install busybox-static")
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
        let tar = dir.path().join("rootfs.tar");
        tar_folder(&root, &tar);
        let out = if podman() {
            Command::new("podman")
                .args(["import", tar.to_str().unwrap(), IMAGE])
                .output()
                .unwrap_or_else(|e| {
                    super::missing(&format!("podman: {e} (apt-get install podman)"))
                })
        } else {
            docker(&["import", tar.to_str().unwrap(), IMAGE])
        };
        assert!(
            out.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The `docker` command line on [`socket`] (Podman's too: it speaks Docker's API).
pub fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", format!("unix://{}", socket().display()))
        .output()
        .expect("run the docker command line (Debian package docker.io)")
}

/// A name no other test or run uses.
pub fn unique(what: &str) -> String {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "edge-agent-test-{what}-{}-{}-{nanos}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A container of [`IMAGE`] without network, labelled `LABEL=<name>`; removed (forcibly, with
/// its volumes) when dropped, also when the test fails.
pub struct Container {
    client: Client,
    pub id: String,
    pub name: String,
}

impl Container {
    pub fn create(client: &Client, name: &str, cmd: &[&str], tty: bool) -> Container {
        Container::with_host_config(client, name, cmd, tty, serde_json::json!({}))
    }

    /// The same with more `HostConfig` settings.
    pub fn with_host_config(
        client: &Client,
        name: &str,
        cmd: &[&str],
        tty: bool,
        mut host_config: serde_json::Value,
    ) -> Container {
        host_config["NetworkMode"] = "none".into();
        let config = serde_json::json!({
            "Image": IMAGE,
            "Cmd": cmd,
            "Tty": tty,
            "Labels": { LABEL: name },
            "HostConfig": host_config,
        });
        let created = client.create_container(Some(name), &config).unwrap();
        Container {
            client: client.clone(),
            id: created.id,
            name: name.to_owned(),
        }
    }

    /// The `label` filter that matches this container alone.
    pub fn label(&self) -> String {
        format!("{LABEL}={}", self.name)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Err(e) = self.client.remove_container(&self.id, true, true) {
            // Already removed by the test is fine.
            if !matches!(e, edge_agent::docker::Error::Docker { status: 404, .. }) {
                eprintln!("could not remove test container {}: {e}", self.name);
            }
        }
    }
}

/// A compose project's containers, networks and volumes, looked at with the `docker` command
/// line and removed when dropped.
pub struct Project(pub String);

impl Project {
    /// The project of edge stack `name`.
    pub fn for_stack(name: &str) -> Project {
        Project(format!("edge_{name}"))
    }

    fn filter(&self) -> String {
        format!("label=com.docker.compose.project={}", self.0)
    }

    /// `name id` of each container, sorted.
    pub fn containers(&self) -> Vec<(String, String)> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &self.filter(),
            "--format",
            "{{.Names}} {{.ID}}",
        ]);
        let mut list: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, i)| (n.to_owned(), i.to_owned()))
            .collect();
        list.sort();
        list
    }

    /// `docker <what> ls` names of the project (`network`, `volume`).
    pub fn listing(&self, what: &str) -> Vec<String> {
        let out = docker(&[
            what,
            "ls",
            "--filter",
            &self.filter(),
            "--format",
            "{{.Name}}",
        ]);
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        for (name, _) in self.containers() {
            docker(&["rm", "-f", "-v", &name]);
        }
        for network in self.listing("network") {
            docker(&["network", "rm", &network]);
        }
        for volume in self.listing("volume") {
            docker(&["volume", "rm", "-f", &volume]);
        }
    }
}

/// A Unix socket in front of the engine's that calls `before(method, path)` (path as sent,
/// query included) ahead of forwarding each request, so a test can change the engine between
/// two of the agent's calls and make a race real, or a bench count the calls: the agent's
/// Docker client makes one connection per call.
pub struct HookedProxy {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

type Before = dyn Fn(&str, &str) + Send + Sync;

impl HookedProxy {
    pub fn start(before: impl Fn(&str, &str) + Send + Sync + 'static) -> HookedProxy {
        use std::os::unix::net::UnixListener;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let before: std::sync::Arc<Before> = std::sync::Arc::new(before);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let before = before.clone();
                std::thread::spawn(move || race_and_forward(client, &*before));
            }
        });
        HookedProxy { _dir: dir, path }
    }
}

fn race_and_forward(mut client: std::os::unix::net::UnixStream, before: &Before) {
    use std::io::Write;
    // The request head (the agent writes it, then the body, if any).
    let Some(text) = request_head(&mut client) else {
        return;
    };
    let mut parts = text.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    before(method, path);
    let Ok(mut docker) = std::os::unix::net::UnixStream::connect(socket()) else {
        return;
    };
    if docker.write_all(text.as_bytes()).is_err() {
        return;
    }
    let (Ok(mut from_docker), Ok(mut to_client)) = (docker.try_clone(), client.try_clone()) else {
        return;
    };
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_docker, &mut to_client);
        let _ = to_client.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut client, &mut docker);
    let _ = docker.shutdown(std::net::Shutdown::Write);
    let _ = back.join();
}
