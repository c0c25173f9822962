//! Pulls from a private registry with the Docker CLI's credentials, as `edge-agent compose up`
//! on a device after `docker login`: Debian's docker-registry on loopback with htpasswd auth
//! (Docker allows plain HTTP to 127.0.0.0/8), the test image pushed to it and removed locally,
//! then pulled by the engine with `auths`, with a credential helper, with a failing helper,
//! and without credentials.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::docker::{docker, engine, socket, unique};
use support::registry::{ok, Registry, PASSWORD, USER};

/// A project folder for `edge-agent compose`, brought down when dropped.
struct Project {
    dir: tempfile::TempDir,
    name: String,
    image: String,
}

impl Project {
    fn new(image: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let file = format!(
            "services:\n  app:\n    image: {image}\n    command: busybox sleep 600\n    network_mode: none\n"
        );
        std::fs::write(dir.path().join("compose.yaml"), file).unwrap();
        Project {
            dir,
            name: unique("registry"),
            image: image.to_owned(),
        }
    }

    /// `edge-agent compose up` with `config` as DOCKER_CONFIG and `bin` first on PATH.
    fn up(&self, config: &Path, bin: &Path) -> Output {
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new(env!("CARGO_BIN_EXE_edge-agent"))
            .args(["compose", "-p", &self.name, "up"])
            .current_dir(self.dir.path())
            .env("DOCKER_HOST", format!("unix://{}", socket().display()))
            .env("DOCKER_CONFIG", config)
            .env("PATH", path)
            .output()
            .unwrap()
    }

    /// Down, and the image removed, so that the next `up` pulls it again.
    fn reset(&self) {
        let out = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
            .args(["compose", "-p", &self.name, "down"])
            .current_dir(self.dir.path())
            .env("DOCKER_HOST", format!("unix://{}", socket().display()))
            .output()
            .unwrap();
        ok(&out, "edge-agent compose down");
        let _ = docker(&["rmi", &self.image]);
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        self.reset();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_config(dir: &Path, json: &str) -> PathBuf {
    std::fs::write(dir.join("config.json"), json).unwrap();
    dir.to_owned()
}

/// `docker-credential-test` in `bin`: when asked for `host`, prints `answer` and exits with `code`.
fn helper(bin: &Path, host: &str, answer: &str, code: u8) {
    use std::os::unix::fs::PermissionsExt;
    let path = bin.join("docker-credential-test");
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = get ] || exit 9\nread -r host\n[ \"$host\" = {host} ] || {{ echo \"asked for $host\"; exit 8; }}\necho '{answer}'\nexit {code}\n"
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
#[ignore = "needs the Docker Engine, busybox-static and docker-registry (tests/run.sh)"]
fn private_images_are_pulled_with_the_docker_cli_credentials() {
    engine();
    let registry = Registry::start();
    let host = &registry.host;
    let image = format!("{host}/edge-agent-test/private:{}", std::process::id());

    registry.push(&image);

    let project = Project::new(&image);
    let bin = tempfile::tempdir().unwrap();

    // (c) No credentials: the registry refuses, and the message says how to log in.
    let empty = tempfile::tempdir().unwrap();
    let out = project.up(empty.path(), bin.path());
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!("cannot pull image {image}"))
            && said.contains(&format!(
                "the registry {host} refused an anonymous pull: run `docker login {host}`"
            ))
            && said.contains(&format!("{}", empty.path().join("config.json").display())),
        "{said}"
    );

    // A broken config.json: one warning naming it and the fault, then an anonymous pull.
    let broken = tempfile::tempdir().unwrap();
    let config = write_config(broken.path(), &format!(r#"{{"auths": {{"{host}": "#));
    let said = text(&project.up(&config, bin.path()));
    let file = config.join("config.json");
    assert!(
        said.contains(&format!(
            "{}: it is not valid JSON (line 1, column ",
            file.display()
        )) && said.contains("refused an anonymous pull"),
        "{said}"
    );

    // (a) `auths` with user:password in base64, as `docker login` writes it.
    let auths = tempfile::tempdir().unwrap();
    let out = project.up(&registry.login_config(auths.path()), bin.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("pulled image {image}")),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains(PASSWORD), "{}", text(&out));
    project.reset();

    // (b) A credential helper for this registry (credHelpers), the host on its stdin.
    let helpers = tempfile::tempdir().unwrap();
    let json = format!(r#"{{"credsStore": "absent-c21d", "credHelpers": {{"{host}": "test"}}}}"#);
    let config = write_config(helpers.path(), &json);
    let answer =
        format!(r#"{{"ServerURL": "{host}", "Username": "{USER}", "Secret": "{PASSWORD}"}}"#);
    helper(bin.path(), host, &answer, 0);
    let out = project.up(&config, bin.path());
    assert!(out.status.success(), "{}", text(&out));
    project.reset();

    // A failing helper fails the pull, naming itself, its exit status and its first line.
    helper(bin.path(), host, "the keyring is locked", 1);
    let out = project.up(&config, bin.path());
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "the credential helper docker-credential-test found no credentials for {host}: exit status: 1: the keyring is locked"
        )),
        "{said}"
    );

    // Wrong credentials: the registry refuses them, and the message names where they came from.
    helper(
        bin.path(),
        host,
        r#"{"Username": "edge", "Secret": "wrong"}"#,
        0,
    );
    let out = project.up(&config, bin.path());
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "the registry {host} refused the credentials from docker-credential-test"
        )),
        "{said}"
    );
}
