//! Registry credentials for a pull, from the Docker CLI's config of this device, as compose v2
//! finds them (`pkg/compose/pull.go` `encodedAuth`): the registry of the image reference
//! (`distribution/reference` normalisation; Docker Hub is `https://index.docker.io/v1/`), then
//! docker/cli's `configfile/file.go` `GetAuthConfig`: a `credHelpers` entry for that key, else
//! `credsStore`, asks `docker-credential-<name> get`; else the `auths` entry. Nothing here ever
//! logs a credential: errors name the registry, the file and the helper only.

use super::RegistryAuth;
use crate::system::files;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Docker Hub's key in `auths` and for credential helpers (docker/docker `registry.IndexServer`).
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// The largest config.json read.
const MAX_CONFIG: u64 = 1024 * 1024;
/// A credential helper is killed when it has not answered in this time.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a helper's stdout (or stderr) read.
const MAX_HELPER_OUTPUT: u64 = 64 * 1024;
/// What docker-credential-helpers prints when it has nothing for the registry.
const NOT_FOUND: &str = "credentials not found in native keychain";

/// The credentials found for one image's registry.
#[derive(Debug)]
pub struct Credentials {
    /// The registry as `docker login` names it (`docker.io` for Docker Hub).
    pub registry: String,
    /// `None`: an anonymous pull.
    pub auth: Option<RegistryAuth>,
    /// Where the credentials came from (or were looked for), for messages.
    pub source: String,
}

impl Credentials {
    /// Docker's pull error `message`, with how to fix it when the registry refused the pull.
    pub fn explain(&self, message: &str) -> String {
        let lower = message.to_ascii_lowercase();
        let refused = [
            "unauthorized",
            "no basic auth credentials",
            "denied",
            "authentication required",
        ]
        .iter()
        .any(|m| lower.contains(m));
        if !refused {
            return message.to_owned();
        }
        let login = match self.registry.as_str() {
            "docker.io" => "docker login".to_owned(),
            host => format!("docker login {host}"),
        };
        match self.auth {
            Some(_) => format!(
                "{message} (the registry {} refused the credentials from {}: run `{login}` \
                 again on this device)",
                self.registry, self.source
            ),
            None => format!(
                "{message} (the registry {} refused an anonymous pull: run `{login}` as root on \
                 this device; credentials are looked up in {})",
                self.registry, self.source
            ),
        }
    }
}

/// A credential helper that did not answer; compose fails the pull then too.
#[derive(Debug)]
pub struct HelperError {
    pub helper: String,
    pub registry: String,
    pub reason: String,
}

impl fmt::Display for HelperError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the credential helper {} found no credentials for {}: {}",
            self.helper, self.registry, self.reason
        )
    }
}

impl std::error::Error for HelperError {}

/// The credentials for pulling `image`, from this process's `DOCKER_CONFIG` or `HOME`. A
/// missing config.json is an anonymous pull; a broken one is a warning, then anonymous.
pub fn for_image(image: &str) -> Result<Credentials, HelperError> {
    let dir = config_dir(|name| std::env::var_os(name));
    let file = dir.join("config.json");
    let domain = domain(image);
    let key = auth_key(&domain);
    let anonymous = |source: String| Credentials {
        registry: domain.clone(),
        auth: None,
        source,
    };
    let config = match read_config(&file) {
        Ok(Some(config)) => config,
        Ok(None) => return Ok(anonymous(format!("{} (missing)", file.display()))),
        Err(reason) => {
            log::warn!(
                "{}: {reason}; pulling {image} without registry credentials",
                file.display()
            );
            return Ok(anonymous(format!(
                "{} (not used: see the warning)",
                file.display()
            )));
        }
    };
    match config.helper_for(&key) {
        Some(helper) => {
            let program = format!("docker-credential-{helper}");
            let auth =
                run_helper(&program, &key, HELPER_TIMEOUT).map_err(|reason| HelperError {
                    helper: program.clone(),
                    registry: domain.clone(),
                    reason,
                })?;
            Ok(Credentials {
                registry: domain.clone(),
                auth,
                source: program,
            })
        }
        None => Ok(Credentials {
            registry: domain.clone(),
            auth: config.file_entry(&key),
            source: format!("auths in {}", file.display()),
        }),
    }
}

/// docker/cli `config.Dir()`: `$DOCKER_CONFIG`, else `$HOME/.docker`; a systemd service has no
/// `HOME`, and the agent runs as root, whose home docker/cli would take: `/root/.docker`.
fn config_dir(var: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    set("DOCKER_CONFIG")
        .or_else(|| set("HOME").map(|home| home.join(".docker")))
        .unwrap_or_else(|| PathBuf::from("/root/.docker"))
}

/// The registry of an image reference (`distribution/reference` `splitDockerDomain`): the part
/// before the first `/` when it has a `.` or a `:`, is `localhost` or has capitals; else Docker
/// Hub (`docker.io`, which `index.docker.io` also means).
pub fn domain(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            match first {
                "index.docker.io" => "docker.io".to_owned(),
                other => other.to_owned(),
            }
        }
        _ => "docker.io".to_owned(),
    }
}

/// The key credentials are stored under (docker/docker `registry.GetAuthConfigKey`).
pub fn auth_key(domain: &str) -> String {
    match domain {
        "docker.io" => DOCKER_HUB_KEY.to_owned(),
        other => other.to_owned(),
    }
}

/// The parts of config.json read (docker/cli `configfile.ConfigFile`); other keys are ignored.
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: Option<BTreeMap<String, AuthEntry>>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// `None` when the file does not exist; the error says what is wrong, never a value in it.
fn read_config(path: &Path) -> Result<Option<ConfigFile>, String> {
    match files::read_optional(path, MAX_CONFIG) {
        Ok(None) => Ok(None),
        Ok(Some(text)) => parse_config(&text).map(Some),
        Err(files::Error::Io(e)) => Err(format!("cannot read it: {e}")),
        Err(files::Error::TooLarge(_)) => Err("it is over 1 MiB".into()),
    }
}

fn parse_config(text: &[u8]) -> Result<ConfigFile, String> {
    let config: ConfigFile = serde_json::from_slice(text).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "a value has the wrong type",
            _ => "it is not valid JSON",
        };
        format!("{what} (line {}, column {})", e.line(), e.column())
    })?;
    // docker/cli `LoadFromReader`: an `auth` that does not decode breaks the whole file.
    for (key, entry) in config.auths.iter().flatten() {
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            decode_auth(auth)
                .ok_or_else(|| format!("the auth of {key} is not base64 of user:password"))?;
        }
    }
    Ok(config)
}

/// docker/cli `decodeAuth`: base64 `user:password`, the user not empty.
fn decode_auth(auth: &str) -> Option<(String, String)> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    (!user.is_empty()).then(|| (user.to_owned(), password.trim_matches('\0').to_owned()))
}

impl ConfigFile {
    /// docker/cli `getConfiguredCredentialStore`: `credHelpers[key]`, else `credsStore`.
    fn helper_for(&self, key: &str) -> Option<&str> {
        let helper = self.cred_helpers.as_ref().and_then(|h| h.get(key));
        helper
            .or(self.creds_store.as_ref())
            .map(String::as_str)
            .filter(|h| !h.is_empty())
    }

    /// docker/cli's file store `Get`: the entry under `key`, else one whose key is `key` once
    /// its scheme and path are taken off (`https://registry.lan:5000/v2/`).
    fn file_entry(&self, key: &str) -> Option<RegistryAuth> {
        let auths = self.auths.as_ref()?;
        let (address, entry) = auths.get_key_value(key).or_else(|| {
            auths.iter().find(|(address, _)| {
                let bare = address
                    .strip_prefix("https://")
                    .or_else(|| address.strip_prefix("http://"))
                    .unwrap_or(address);
                bare.split('/').next() == Some(key)
            })
        })?;
        let set = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        let (username, password) = match entry.auth.as_deref().and_then(decode_auth) {
            Some((user, password)) => (Some(user), Some(password)),
            None => (set(&entry.username), set(&entry.password)),
        };
        let identity_token = set(&entry.identitytoken);
        if username.is_none() && identity_token.is_none() {
            return None;
        }
        Some(RegistryAuth {
            username,
            password,
            server_address: Some(address.clone()),
            identity_token,
        })
    }
}

/// docker-credential-helpers `client.Get`: `program get`, the key on stdin; JSON
/// `{Username, Secret}` on stdout (`<token>` as the user: the secret is an identity token); a
/// failure prints its reason on stdout. `None`: the helper has nothing for this registry.
fn run_helper(program: &str, key: &str, timeout: Duration) -> Result<Option<RegistryAuth>, String> {
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => format!("{program} is not on PATH"),
            _ => format!("cannot start it: {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its stdin fails below with its own message.
        let _ = stdin.write_all(key.as_bytes());
    }
    let stdout = read_bounded(child.stdout.take());
    let stderr = read_bounded(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = wait_until(&mut child, deadline)?;
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let out = stdout
        .recv_timeout(remaining())
        .map_err(|_| format!("its output did not end within {} s", timeout.as_secs()))?;
    let err = stderr.recv_timeout(remaining()).unwrap_or_default();
    if out.len() as u64 > MAX_HELPER_OUTPUT {
        return Err("its output is over 64 KiB".into());
    }
    let text = String::from_utf8_lossy(&out);
    if !status.success() {
        if text.trim() == NOT_FOUND {
            return Ok(None);
        }
        let said = first_line(&text).or_else(|| first_line(&String::from_utf8_lossy(&err)));
        return Err(match said {
            Some(line) => format!("{status}: {line}"),
            None => status.to_string(),
        });
    }
    parse_answer(&out, key)
}

/// Reads at most one byte over the limit of a pipe, on a thread (the caller waits for it with
/// a timeout, so a helper's child keeping the pipe open cannot hold the pull).
fn read_bounded(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(pipe) = pipe {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.take(MAX_HELPER_OUTPUT + 1).read_to_end(&mut bytes);
            let _ = tx.send(bytes);
        });
    }
    rx
}

fn wait_until(child: &mut Child, deadline: Instant) -> Result<std::process::ExitStatus, String> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("killed: no answer in time".into());
            }
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    }
}

/// The first non-empty line, at most 200 characters.
fn first_line(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(200).collect())
}

/// A helper's answer; a JSON error names where it is, never what it holds.
fn parse_answer(out: &[u8], key: &str) -> Result<Option<RegistryAuth>, String> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let answer: Answer = serde_json::from_slice(out).map_err(|e| {
        format!(
            "its answer is not the JSON {{\"Username\", \"Secret\"}} of a credential helper \
             (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    if answer.username.is_empty() && answer.secret.is_empty() {
        return Ok(None);
    }
    let server_address = Some(key.to_owned());
    Ok(Some(if answer.username == "<token>" {
        RegistryAuth {
            server_address,
            identity_token: Some(answer.secret),
            ..RegistryAuth::default()
        }
    } else {
        RegistryAuth {
            username: Some(answer.username),
            password: Some(answer.secret),
            server_address,
            identity_token: None,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(json: &str) -> ConfigFile {
        parse_config(json.as_bytes()).unwrap()
    }

    fn base64(text: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn the_registry_of_an_image_is_its_first_part_when_it_looks_like_a_host() {
        for (image, want) in [
            ("busybox", "docker.io"),
            ("busybox:1.36", "docker.io"),
            ("library/busybox", "docker.io"),
            ("docker.io/x", "docker.io"),
            ("docker.io/library/busybox:1", "docker.io"),
            ("index.docker.io/x/y", "docker.io"),
            ("registry.local:5000/app:1", "registry.local:5000"),
            ("ghcr.io/x/y", "ghcr.io"),
            ("localhost/app", "localhost"),
            ("localhost:5000/app@sha256:abc", "localhost:5000"),
            ("Upper/app", "Upper"),
            ("me/app:2", "docker.io"),
        ] {
            assert_eq!(domain(image), want, "{image}");
        }
        assert_eq!(auth_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(auth_key("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn config_dir_is_docker_config_then_home_then_root() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let both = env(&[("DOCKER_CONFIG", "/etc/docker-cli"), ("HOME", "/home/op")]);
        assert_eq!(config_dir(both), Path::new("/etc/docker-cli"));
        let home = env(&[("DOCKER_CONFIG", ""), ("HOME", "/home/op")]);
        assert_eq!(config_dir(home), Path::new("/home/op/.docker"));
        assert_eq!(config_dir(env(&[])), Path::new("/root/.docker"));
    }

    #[test]
    fn auths_entries_in_their_three_forms() {
        let json = format!(
            r#"{{"auths": {{
                "registry.local:5000": {{"auth": "{}"}},
                "ghcr.io": {{"username": "u2", "password": "p2"}},
                "quay.io": {{"identitytoken": "tok"}},
                "https://index.docker.io/v1/": {{"auth": "{}", "email": "x@y"}},
                "empty.lan": {{}}
            }}, "psFormat": "table"}}"#,
            base64("u1:p:1"),
            base64("hub:secret\0")
        );
        let c = config(&json);
        let local = c.file_entry("registry.local:5000").unwrap();
        assert_eq!(local.username.as_deref(), Some("u1"));
        assert_eq!(local.password.as_deref(), Some("p:1"));
        assert_eq!(local.server_address.as_deref(), Some("registry.local:5000"));
        let ghcr = c.file_entry("ghcr.io").unwrap();
        assert_eq!(
            (ghcr.username.as_deref(), ghcr.password.as_deref()),
            (Some("u2"), Some("p2"))
        );
        let quay = c.file_entry("quay.io").unwrap();
        assert_eq!(quay.identity_token.as_deref(), Some("tok"));
        assert_eq!(quay.username, None);
        let hub = c.file_entry(DOCKER_HUB_KEY).unwrap();
        assert_eq!(hub.password.as_deref(), Some("secret"));
        assert!(
            c.file_entry("docker.io").is_none(),
            "Hub is only under its v1 URL"
        );
        assert!(c.file_entry("empty.lan").is_none());
        assert!(c.file_entry("other.lan").is_none());
        assert_eq!(c.helper_for("ghcr.io"), None);
    }

    #[test]
    fn legacy_keys_with_a_scheme_and_a_path_match_their_host() {
        let c = config(
            r#"{"auths": {"https://registry.lan:5000/v2/": {"username": "u", "password": "p"}}}"#,
        );
        let auth = c.file_entry("registry.lan:5000").unwrap();
        assert_eq!(
            auth.server_address.as_deref(),
            Some("https://registry.lan:5000/v2/")
        );
        assert!(c.file_entry("registry.lan").is_none());
    }

    #[test]
    fn cred_helpers_come_before_creds_store() {
        let c =
            config(r#"{"credsStore": "pass", "credHelpers": {"ghcr.io": "gh", "docker.io": "x"}}"#);
        assert_eq!(c.helper_for("ghcr.io"), Some("gh"));
        assert_eq!(c.helper_for(DOCKER_HUB_KEY), Some("pass"));
        assert_eq!(c.helper_for("registry.lan"), Some("pass"));
        assert_eq!(config(r#"{"credsStore": ""}"#).helper_for("a.lan"), None);
        assert_eq!(
            config(r#"{"auths": null, "credHelpers": null}"#).helper_for("a.lan"),
            None
        );
    }

    #[test]
    fn a_broken_file_says_what_and_where_never_a_value() {
        let secret = "hunter2-secret";
        let wrong_type =
            format!(r#"{{"auths": {{"a.lan": {{"username": 5, "password": "{secret}"}}}}}}"#);
        let cases = [
            (wrong_type, "a value has the wrong type (line 1"),
            (
                format!(r#"{{"auths": {{"a.lan": {{"password": "{secret}""#),
                "it is not valid JSON",
            ),
            (
                format!(r#"{{"auths": {{"a.lan": {{"auth": "{secret}"}}}}}}"#),
                "the auth of a.lan",
            ),
            (
                format!(
                    r#"{{"auths": {{"a.lan": {{"auth": "{}"}}}}}}"#,
                    base64(":nouser")
                ),
                "the auth of a.lan",
            ),
        ];
        for (json, want) in cases {
            let Err(e) = parse_config(json.as_bytes()) else {
                panic!("{json} parsed")
            };
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn a_missing_file_is_none_and_a_big_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_config(&dir.path().join("config.json"))
            .unwrap()
            .is_none());
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; MAX_CONFIG as usize + 1]).unwrap();
        assert_eq!(read_config(&big).unwrap_err(), "it is over 1 MiB");
    }

    fn helper(dir: &Path, script: &str) -> String {
        let path = dir.join("docker-credential-test");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    #[test]
    fn helpers_answer_get_with_the_key_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let run = |script: &str| {
            run_helper(
                &helper(dir.path(), script),
                "registry.lan:5000",
                Duration::from_secs(5),
            )
        };
        let echo = r#"read -r host; [ "$1" = get ] && echo "{\"ServerURL\":\"$host\",\"Username\":\"u\",\"Secret\":\"s-$host\"}""#;
        let auth = run(echo).unwrap().unwrap();
        assert_eq!(auth.username.as_deref(), Some("u"));
        assert_eq!(auth.password.as_deref(), Some("s-registry.lan:5000"));
        assert_eq!(auth.server_address.as_deref(), Some("registry.lan:5000"));
        let token = run(r#"echo '{"Username":"<token>","Secret":"t"}'"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            (token.username, token.identity_token.as_deref()),
            (None, Some("t"))
        );
        assert!(
            run("echo 'credentials not found in native keychain'; exit 1")
                .unwrap()
                .is_none()
        );
        let e = run("echo 'locked keyring'; exit 3").unwrap_err();
        assert_eq!(e, "exit status: 3: locked keyring");
        let e = run("echo 'gpg: no key' >&2; exit 2").unwrap_err();
        assert_eq!(e, "exit status: 2: gpg: no key");
        let e = run(r#"echo '{"Username":"u","Secret":5}'"#).unwrap_err();
        assert!(e.starts_with("its answer is not the JSON"), "{e}");
        let e = run("head -c 70000 /dev/zero | tr '\\0' a").unwrap_err();
        assert_eq!(e, "its output is over 64 KiB");
        let e = run_helper(
            "docker-credential-absent-c21d",
            "a.lan",
            Duration::from_secs(1),
        );
        assert_eq!(
            e.unwrap_err(),
            "docker-credential-absent-c21d is not on PATH"
        );
    }

    #[test]
    fn a_helper_that_hangs_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let e = run_helper(
            &helper(dir.path(), "exec sleep 30"),
            "a.lan",
            Duration::from_millis(300),
        );
        assert_eq!(e.unwrap_err(), "killed: no answer in time");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn refusals_say_how_to_log_in() {
        let anonymous = Credentials {
            registry: "registry.lan:5000".into(),
            auth: None,
            source: "/root/.docker/config.json (missing)".into(),
        };
        let said = anonymous.explain(
            "Head \"http://registry.lan:5000/v2/app/manifests/1\": no basic auth credentials",
        );
        assert!(
            said.contains(
                "refused an anonymous pull: run `docker login registry.lan:5000` as root"
            ),
            "{said}"
        );
        assert!(
            said.contains("/root/.docker/config.json (missing)"),
            "{said}"
        );
        assert_eq!(anonymous.explain("manifest unknown"), "manifest unknown");
        let hub = Credentials {
            registry: "docker.io".into(),
            auth: Some(RegistryAuth::default()),
            source: "docker-credential-pass".into(),
        };
        let said = hub.explain("pull access denied for x");
        assert!(
            said.contains(
                "refused the credentials from docker-credential-pass: run `docker login` again"
            ),
            "{said}"
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let auth = RegistryAuth {
            username: Some("u".into()),
            password: Some("hunter2".into()),
            server_address: None,
            identity_token: Some("tok-hunter2".into()),
        };
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("\"u\""),
            "{shown}"
        );
    }
}
