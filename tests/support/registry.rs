//! A private registry for tests: Debian's docker-registry on 127.0.0.1 with htpasswd auth
//! (Docker allows plain HTTP to 127.0.0.0/8), and the test image pushed to it.

use super::docker::{docker, socket, IMAGE};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const REGISTRY: &str = "/usr/bin/docker-registry";
pub const USER: &str = "edge";
pub const PASSWORD: &str = "s3cret-pull";

/// A `docker-registry serve` on 127.0.0.1, killed when dropped.
pub struct Registry {
    child: Child,
    pub host: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        if !Path::new(REGISTRY).exists() {
            super::missing("docker-registry is missing: apt-get install docker-registry");
        }
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .unwrap_or_else(|e| {
                super::missing(&format!("htpasswd (apt-get install apache2-utils): {e}"))
            });
        assert!(htpasswd.status.success(), "htpasswd failed");
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {host}\nauth:\n  htpasswd:\n    realm: edge-agent-test\n    path: {}\n",
            dir.path().join("data").display(),
            dir.path().join("htpasswd").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Registry {
            child,
            host,
            _dir: dir,
        };
        let started = Instant::now();
        while TcpStream::connect(&registry.host).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "docker-registry did not listen on {} within 20 s",
                registry.host
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `docker` with its own config folder.
pub fn docker_cli(config: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", format!("unix://{}", socket().display()))
        .env("DOCKER_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

pub fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Registry {
    /// The test image pushed as `image` (on this registry) with `docker login` in a folder of
    /// its own, then removed from the engine, so that only a pull brings it back.
    pub fn push(&self, image: &str) {
        let config = tempfile::tempdir().unwrap();
        let login = ["login", "-u", USER, "--password-stdin", self.host.as_str()];
        ok(&docker_cli(config.path(), &login, PASSWORD), "docker login");
        ok(&docker(&["tag", IMAGE, image]), "docker tag");
        ok(
            &docker_cli(config.path(), &["push", image], ""),
            "docker push",
        );
        ok(&docker(&["rmi", image]), "docker rmi");
    }

    /// `dir/config.json` with this registry's user and password in `auths`, as `docker login`
    /// writes it; `dir`.
    pub fn login_config(&self, dir: &Path) -> PathBuf {
        use base64::Engine;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        let json = format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, self.host);
        std::fs::write(dir.join("config.json"), json).unwrap();
        dir.to_owned()
    }
}
