//! Configuration from, in rising priority: the env file, the process environment, CLI flags.
//! Names are the Go agent's, so an operator can paste what the Portainer UI shows. Every bad value
//! is an error naming the variable, where it came from and what is expected. Here: the
//! configuration and its loading; `settings` holds the table of settings, `sources` reads the
//! values, `validation` checks each one.

pub mod cli;
pub mod duration;
pub mod edge_key;
mod envfile;
mod names;
mod settings;
mod sources;
mod validation;

#[cfg(fuzzing)]
pub use envfile::parse as parse_env_file;
pub use settings::{Var, VARS};
pub use sources::{Environment, ProcessEnvironment, Source};

use edge_key::EdgeKey;
use sources::Raw;

use log::LevelFilter;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_ENV_FILE: &str = "/etc/edge-agent/edge-agent.env";

#[derive(Debug)]
pub enum Error {
    EnvFile(envfile::Error),
    EnvFileMissing(PathBuf),
    Invalid {
        var: &'static str,
        value: String,
        source: Source,
        expected: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::EnvFile(e) => e.fmt(f),
            Error::EnvFileMissing(path) => write!(
                f,
                "env file {0} does not exist; create it from the template in the sources: install -D -m 600 packaging/edge-agent.env {0}",
                path.display()
            ),
            Error::Invalid {
                var,
                value,
                source,
                expected,
            } if sources::SECRETS.contains(var) => {
                write!(f, "{var}={} ({source}): {expected}", hidden(value))
            }
            Error::Invalid {
                var,
                value,
                source,
                expected,
            } => write!(f, "{var}={value:?} ({source}): {expected}"),
        }
    }
}

impl std::error::Error for Error {}

/// A secret as an error may show it: its first and last four characters and its length, so an
/// operator can tell which key it is (and spot a stray quote or space at either end) while the
/// rest stays out of terminals and journals. Shorter secrets show only their length.
fn hidden(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    let n = chars.len();
    match n {
        0..16 => format!("({n} characters, hidden)"),
        _ => format!(
            "\"{}…{}\" ({n} characters, the middle hidden)",
            chars[..4].iter().collect::<String>(),
            chars[n - 4..].iter().collect::<String>()
        ),
    }
}

/// Ids sent in the global-key request body (EE onboarding; CE ignores them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobalKeyMeta {
    pub edge_group_ids: Vec<i64>,
    pub tag_ids: Vec<i64>,
    pub environment_group_id: Option<i64>,
}

/// Files for TLS to the Portainer server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    pub http: Option<String>,
    pub https: Option<String>,
    pub no_proxy: Option<String>,
}

/// What `EDGE_CONNECTIVITY_CHECK` tries: the Edge key's URL and tunnel address unless given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectivityCheck {
    pub url: Option<String>,
    pub tunnel_addr: Option<String>,
    /// How long each check waits for an answer.
    pub timeout: Duration,
}

/// Where the key setup page listens (`EDGE_SETUP_PAGE=true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupPage {
    /// `EDGE_SERVER_HOST`:`EDGE_SERVER_PORT`.
    pub addr: std::net::SocketAddr,
}

/// An Edge key as configured: the text (persisted as given) and what it decodes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredKey {
    pub text: String,
    pub key: EdgeKey,
    pub source: Source,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where settings go: the env file named or the default one, read or not.
    pub env_file: PathBuf,
    /// `false` when the default env file does not exist.
    pub env_file_read: bool,
    pub edge_key: Option<ConfiguredKey>,
    pub edge_id: Option<(String, Source)>,
    pub insecure_poll: bool,
    pub inactivity_timeout: Duration,
    pub tunnel: bool,
    pub host_browser: bool,
    /// `EDGE_SETUP_PAGE=true`: where the key setup page listens while no Edge key is known.
    pub setup_page: Option<SetupPage>,
    /// `EDGE_CONNECTIVITY_CHECK`: check the Portainer URL and the tunnel server once, then exit.
    pub connectivity_check: Option<ConnectivityCheck>,
    pub upload_max: u64,
    pub agent_secret: Option<String>,
    pub log_level: LevelFilter,
    pub data_path: PathBuf,
    pub proxies: Proxies,
    pub tls: TlsFiles,
    pub docker_socket: PathBuf,
    pub meta: GlobalKeyMeta,
    /// Things worth a warning once logging is up (unknown keys, a padded key).
    pub warnings: Vec<String>,
}

/// Which env file to read: the default one may be absent, a named one must exist.
#[derive(Debug)]
pub enum EnvFileChoice {
    Default,
    Named(PathBuf),
}

impl Config {
    /// `flags` are `(variable, value)` pairs from the command line, already matched to [`VARS`].
    /// On error, every bad line of the env file and every bad value.
    pub fn load(
        env_file: EnvFileChoice,
        env: &impl Environment,
        flags: &[(&'static Var, String)],
    ) -> Result<Config, Vec<Error>> {
        let mut warnings = Vec::new();
        let mut problems = Problems::default();
        let mut raw = Raw::new();
        let (env_file, must_exist) = match env_file {
            EnvFileChoice::Default => (PathBuf::from(DEFAULT_ENV_FILE), false),
            EnvFileChoice::Named(path) => (path, true),
        };
        let file_names = sources::read_env_file(
            &env_file,
            must_exist,
            &mut raw,
            &mut warnings,
            &mut problems,
        )
        .map_err(|e| vec![e])?;
        let env_file_read = file_names.is_some();
        sources::read_environment(
            env,
            &file_names.unwrap_or_default(),
            &mut raw,
            &mut warnings,
            &mut problems,
        );
        sources::read_flags(flags, &mut raw);
        // An empty value means "not set", so the shipped template's `EDGE_KEY=` is not an error.
        raw.retain(|_, (value, _)| !value.trim().is_empty());
        let config = Config::from_raw(env_file, env_file_read, &raw, warnings, &mut problems);
        match problems.0.is_empty() {
            true => Ok(config),
            false => Err(problems.0),
        }
    }
}

/// Every bad line and value of one configuration, so that one run reports them all.
#[derive(Default)]
struct Problems(Vec<Error>);

impl Problems {
    fn push(&mut self, error: Error) {
        self.0.push(error);
    }

    fn take<T>(&mut self, result: Result<T, Error>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Also the helpers of the tests of sources.rs and validation.rs, which load whole
    //! configurations too.

    use super::*;
    use std::collections::BTreeMap;
    use std::ffi::OsString;
    use std::io::Write;

    pub(super) fn var(env: &str) -> &'static Var {
        VARS.iter().find(|v| v.env == env).unwrap()
    }

    /// A process environment holding `pairs`.
    pub(crate) struct TestEnv(BTreeMap<String, OsString>);

    impl Environment for TestEnv {
        fn var(&self, name: &str) -> Option<OsString> {
            self.0.get(name).cloned()
        }

        fn names(&self) -> Vec<OsString> {
            self.0.keys().map(OsString::from).collect()
        }
    }

    pub(crate) fn env_of(pairs: &[(&str, &str)]) -> TestEnv {
        TestEnv(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), OsString::from(v)))
                .collect(),
        )
    }

    pub(super) fn file(text: &str) -> (tempfile::NamedTempFile, EnvFileChoice) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        let path = f.path().to_owned();
        (f, EnvFileChoice::Named(path))
    }

    /// The one error of a configuration.
    pub(super) fn the_error(result: Result<Config, Vec<Error>>) -> String {
        let errors = result.unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].to_string()
    }

    pub(super) const KEY: &str = "aHR0cHM6Ly9wb3J0YWluZXIuZXhhbXBsZS5jb206OTQ0M3xwb3J0YWluZXIuZXhhbXBsZS5jb206ODAwMHx2elFPQlpEY2k0Z1F5d1FwSVFlbDJOM3V2ZU5pQTBQNWl0TzJta1UxZS9zPXwz";

    #[test]
    fn a_bad_secret_is_shown_by_its_ends_only() {
        let key = "aHR0cHM6Ly9wb3J0YWluZXIuZXhhbXBsZS5jb206OTQ0M3xwb3J0YWluZXIuZXhhbXBsZS5jb206ODAwMHxmcHw3!";
        let (_f, choice) = file(&format!("EDGE_KEY={key}\n"));
        let error = the_error(Config::load(choice, &env_of(&[]), &[]));
        assert!(
            error.starts_with(&format!(
                "EDGE_KEY=\"aHR0…Hw3!\" ({} characters, the middle hidden) (",
                key.len()
            )),
            "{error}"
        );
        assert!(!error.contains(&key[4..key.len() - 4]), "{error}");
        assert_eq!(hidden("short-secret"), "(12 characters, hidden)");
        assert_eq!(
            hidden("0123456789abcdefXYZ"),
            "\"0123…fXYZ\" (19 characters, the middle hidden)"
        );
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let choice = EnvFileChoice::Named(dir.path().join("missing.env"));
        let err = the_error(Config::load(choice, &env_of(&[]), &[]));
        assert!(
            err.contains("missing.env does not exist")
                && err.contains("install -D -m 600 packaging/edge-agent.env"),
            "{err}"
        );
        let (_f, choice) = file("");
        let c = Config::load(choice, &env_of(&[]), &[]).unwrap();
        assert!(c.edge_key.is_none() && c.edge_id.is_none());
        assert!(!c.insecure_poll && c.tunnel && c.host_browser && c.setup_page.is_none());
        assert_eq!(c.upload_max, 1 << 30);
        assert_eq!(c.inactivity_timeout, Duration::from_secs(300));
        assert_eq!(c.log_level, LevelFilter::Info);
        assert_eq!(c.data_path, PathBuf::from("/var/lib/edge-agent"));
        assert_eq!(c.docker_socket, PathBuf::from("/var/run/docker.sock"));
    }

    #[test]
    fn every_bad_line_and_value_is_reported_at_once() {
        let (f, choice) = file(
            "# first boot\nEDGE_INACTIVITY_TIMEOUT=30s # note\nLOG_LEVEL=LOUD\nEDGE_ID=\"dev\" # note\nEDGE_TUNNEL=maybe\n",
        );
        let errors: Vec<String> = Config::load(
            choice,
            &env_of(&[("DATA_PATH", "relative")]),
            &[(var("PORTAINER_GROUP"), "one".into())],
        )
        .unwrap_err()
        .iter()
        .map(Error::to_string)
        .collect();
        let at = |line: usize| format!("{} line {line}", f.path().display());
        let expected = [
            (at(2), "' #' in a value"),
            (at(4), "text after the closing quote"),
            (at(5), "EDGE_TUNNEL"),
            (at(3), "LOG_LEVEL"),
            ("process environment".into(), "DATA_PATH"),
            ("flag --environment-group".into(), "PORTAINER_GROUP"),
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (where_, what) in expected {
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains(&where_) && e.contains(what)),
                "no error for {what} at {where_} in {errors:#?}"
            );
        }
    }
}
