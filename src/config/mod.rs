//! Configuration from, in rising priority: the env file, the process environment, CLI flags.
//! Names are the Go agent's, so an operator can paste what the Portainer UI shows. Every bad value
//! is an error naming the variable, where it came from and what is expected.

pub mod cli;
pub mod duration;
pub mod edge_key;
mod envfile;

#[cfg(fuzzing)]
pub use envfile::parse as parse_env_file;

use edge_key::EdgeKey;

use log::LevelFilter;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_ENV_FILE: &str = "/etc/edge-agent/edge-agent.env";

/// One setting: its environment name, its CLI flag (the Go agent's where it has one), its default
/// and a line of help.
#[derive(Debug)]
pub struct Var {
    pub env: &'static str,
    pub flag: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

impl Var {
    /// A switch: `--flag` alone means true, `--no-flag` false.
    pub fn is_bool(&self) -> bool {
        matches!(
            self.env,
            "EDGE_INSECURE_POLL" | "EDGE_TUNNEL" | "EDGE_HOST_BROWSER"
        )
    }
}

pub const VARS: &[Var] = &[
    Var {
        env: "EDGE_KEY",
        flag: "edge-key",
        default: "",
        help: "Edge key shown by Portainer for this environment (required at first boot)",
    },
    Var {
        env: "EDGE_ID",
        flag: "edge-id",
        default: "",
        help: "Edge ID; generated once and kept in the state file when unset",
    },
    Var {
        env: "EDGE_INSECURE_POLL",
        flag: "edge-insecurepoll",
        default: "false",
        help: "accept a self-signed Portainer certificate when polling",
    },
    Var {
        env: "EDGE_INACTIVITY_TIMEOUT",
        flag: "edge-inactivity",
        default: "5m",
        help: "close the tunnel after this much inactivity (Go duration)",
    },
    Var {
        env: "EDGE_TUNNEL",
        flag: "edge-tunnel",
        default: "true",
        help: "open the reverse tunnel when Portainer asks",
    },
    Var {
        env: "EDGE_HOST_BROWSER",
        flag: "host-browser",
        default: "true",
        help: "let Portainer browse, download and change any file of the host (volumes are always browsable)",
    },
    Var {
        env: "EDGE_UPLOAD_MAX",
        flag: "upload-max",
        default: "1G",
        help: "largest file Portainer may upload to a volume or the host (bytes, or K, M, G)",
    },
    Var {
        env: "AGENT_SECRET",
        flag: "secret",
        default: "",
        help: "shared secret, must equal Portainer's AGENT_SECRET",
    },
    Var {
        env: "LOG_LEVEL",
        flag: "log-level",
        default: "INFO",
        help: "ERROR, WARN, INFO or DEBUG",
    },
    Var {
        env: "DATA_PATH",
        flag: "data",
        default: "/var/lib/edge-agent",
        help: "folder of the state file",
    },
    Var {
        env: "HTTP_PROXY",
        flag: "http-proxy",
        default: "",
        help: "proxy for http:// Portainer URLs",
    },
    Var {
        env: "HTTPS_PROXY",
        flag: "https-proxy",
        default: "",
        help: "proxy for https:// Portainer URLs",
    },
    Var {
        env: "NO_PROXY",
        flag: "no-proxy",
        default: "",
        help: "comma-separated hosts or domains reached without proxy",
    },
    Var {
        env: "MTLS_SSL_CERT",
        flag: "mtlscert",
        default: "",
        help: "client certificate (PEM) for mTLS polling",
    },
    Var {
        env: "MTLS_SSL_KEY",
        flag: "mtlskey",
        default: "",
        help: "client private key (PEM) for mTLS polling",
    },
    Var {
        env: "MTLS_SSL_CA",
        flag: "mtlscacert",
        default: "",
        help: "CA certificate(s) (PEM) trusted for the Portainer server",
    },
    Var {
        env: "DOCKER_HOST",
        flag: "docker-host",
        default: "unix:///var/run/docker.sock",
        help: "Docker Engine socket (unix:// only)",
    },
    Var {
        env: "EDGE_GROUPS",
        flag: "edge-groups",
        default: "",
        help: "colon-separated Edge group ids (sent with a global key)",
    },
    Var {
        env: "PORTAINER_GROUP",
        flag: "environment-group",
        default: "",
        help: "environment group id (sent with a global key)",
    },
    Var {
        env: "PORTAINER_TAGS",
        flag: "tags",
        default: "",
        help: "colon-separated tag ids (sent with a global key)",
    },
];

/// Go agent settings that an operator may paste from the Portainer UI and that mean nothing here
/// (`EDGE=1`, which turns on edge mode in the Go agent, is always true here and accepted silently).
const IGNORED_GO_SETTINGS: &[&str] =
    &["EDGE", "EDGE_ASYNC", "EDGE_SERVER_HOST", "EDGE_SERVER_PORT"];

/// Settings that give access to this device or its Portainer: the env file holding one should be
/// its owner's alone.
const SECRETS: &[&str] = &["EDGE_KEY", "AGENT_SECRET"];

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File { path: PathBuf, line: usize },
    Env,
    Flag(&'static str),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File { path, line } => write!(f, "{} line {line}", path.display()),
            Source::Env => f.write_str("process environment"),
            Source::Flag(flag) => write!(f, "flag --{flag}"),
            Source::Default => f.write_str("built-in default"),
        }
    }
}

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
            } => write!(f, "{var}={value:?} ({source}): {expected}"),
        }
    }
}

impl std::error::Error for Error {}

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

type Raw = BTreeMap<&'static str, (String, Source)>;

impl Config {
    /// `flags` are `(variable, value)` pairs from the command line, already matched to [`VARS`].
    /// On error, every bad line of the env file and every bad value.
    pub fn load(
        env_file: EnvFileChoice,
        env: impl Fn(&str) -> Option<OsString>,
        flags: &[(&'static Var, String)],
    ) -> Result<Config, Vec<Error>> {
        let mut warnings = Vec::new();
        let mut problems = Problems::default();
        let mut raw = Raw::new();
        let (env_file, must_exist) = match env_file {
            EnvFileChoice::Default => (PathBuf::from(DEFAULT_ENV_FILE), false),
            EnvFileChoice::Named(path) => (path, true),
        };
        let loaded = envfile::load(&env_file).map_err(|e| vec![Error::EnvFile(e)])?;
        let env_file_read = loaded.is_some();
        match loaded {
            None if must_exist => return Err(vec![Error::EnvFileMissing(env_file)]),
            None => {}
            Some(loaded) => {
                let mut secrets = Vec::new();
                let readable = loaded.readable_by_others();
                for line in loaded.entries {
                    let Some(entry) = problems.take(line.map_err(Error::EnvFile)) else {
                        continue;
                    };
                    let source = Source::File {
                        path: env_file.clone(),
                        line: entry.line,
                    };
                    match VARS.iter().find(|v| v.env == entry.key) {
                        Some(var) => {
                            if SECRETS.contains(&var.env) && !entry.value.trim().is_empty() {
                                secrets.push(var.env);
                            }
                            raw.insert(var.env, (entry.value, source));
                        }
                        None if entry.key == "EDGE" => {}
                        None if IGNORED_GO_SETTINGS.contains(&entry.key.as_str()) => {
                            warnings.push(format!(
                                "{source}: {} is a Go agent setting that edge-agent does not support; ignored",
                                entry.key
                            ));
                        }
                        None if entry.key.starts_with("EDGE_") => warnings.push(format!(
                            "{source}: unknown setting {} is ignored (known EDGE_ settings: {})",
                            entry.key,
                            VARS.iter()
                                .filter(|v| v.env.starts_with("EDGE_"))
                                .map(|v| v.env)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                        None => {}
                    }
                }
                if readable && !secrets.is_empty() {
                    warnings.push(format!(
                        "{} holds {} but group or others can read it (mode {:04o}); make it the owner's alone: chmod 600 {}",
                        env_file.display(),
                        secrets.join(" and "),
                        loaded.mode,
                        env_file.display()
                    ));
                }
            }
        }
        for var in VARS {
            let lower = var.env.to_ascii_lowercase();
            let value = env(var.env).or_else(|| {
                // Go's ProxyFromEnvironment also reads the lowercase proxy variables.
                var.env.ends_with("_PROXY").then(|| env(&lower)).flatten()
            });
            if let Some(value) = value {
                let Some(value) = problems.take(value.into_string().map_err(|v| Error::Invalid {
                    var: var.env,
                    value: v.to_string_lossy().into_owned(),
                    source: Source::Env,
                    expected: "the value is not valid UTF-8".into(),
                })) else {
                    continue;
                };
                // systemd's `EnvironmentFile=` of the same file exports the same values: keep
                // the file's line as the source, so that errors still point at it.
                if raw
                    .get(var.env)
                    .is_some_and(|(from_file, _)| *from_file == value)
                {
                    continue;
                }
                raw.insert(var.env, (value, Source::Env));
            }
        }
        for (var, value) in flags {
            raw.insert(var.env, (value.clone(), Source::Flag(var.flag)));
        }
        // An empty value means "not set", so the shipped template's `EDGE_KEY=` is not an error.
        raw.retain(|_, (value, _)| !value.trim().is_empty());
        let config = Config::from_raw(env_file, env_file_read, &raw, warnings, &mut problems);
        match problems.0.is_empty() {
            true => Ok(config),
            false => Err(problems.0),
        }
    }

    /// The configuration of `raw`; meaningless where `problems` gained an error.
    fn from_raw(
        env_file: PathBuf,
        env_file_read: bool,
        raw: &Raw,
        mut warnings: Vec<String>,
        problems: &mut Problems,
    ) -> Config {
        let get = |name: &'static str| raw.get(name).map(|(v, s)| (v.trim(), s));
        let invalid = |name: &'static str, expected: &str| {
            let (value, source) = match get(name) {
                Some((v, s)) => (v.to_owned(), s.clone()),
                None => (default_of(name).to_owned(), Source::Default),
            };
            Error::Invalid {
                var: name,
                value,
                source,
                expected: expected.to_owned(),
            }
        };
        let parsed = |name: &'static str| match get(name) {
            Some((v, _)) => v,
            None => default_of(name),
        };

        let edge_key = get("EDGE_KEY").and_then(|(text, source)| {
            let key = problems.take(
                EdgeKey::decode(text)
                    .map_err(|e| invalid("EDGE_KEY", &format!("the Edge key is not valid: {e}"))),
            )?;
            if key.was_padded {
                warnings.push(format!(
                    "EDGE_KEY ({source}) is padded base64 ('=' at the end); Portainer keys are unpadded and the Go agent refuses this one, accepted anyway"
                ));
            }
            Some(ConfiguredKey {
                text: text.to_owned(),
                key,
                source: source.clone(),
            })
        });
        let edge_id = get("EDGE_ID").and_then(|(id, source)| {
            let valid = valid_edge_id(id).then(|| (id.to_owned(), source.clone()));
            problems.take(valid.ok_or_else(|| {
                invalid(
                    "EDGE_ID",
                    "expected 1 to 255 printable ASCII characters without spaces, e.g. a UUID",
                )
            }))
        });
        let mut boolean = |name: &'static str| {
            problems
                .take(
                    parse_go_bool(parsed(name))
                        .ok_or_else(|| invalid(name, "expected true or false (also 1/0, t/f)")),
                )
                .unwrap_or_default()
        };
        let insecure_poll = boolean("EDGE_INSECURE_POLL");
        let tunnel = boolean("EDGE_TUNNEL");
        let host_browser = boolean("EDGE_HOST_BROWSER");
        let upload_max = problems
            .take(
                parse_size(parsed("EDGE_UPLOAD_MAX"))
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        invalid(
                            "EDGE_UPLOAD_MAX",
                            "expected a size in bytes, or with K, M or G (powers of 1024), e.g. 512M",
                        )
                    }),
            )
            .unwrap_or_default();
        let inactivity_timeout = problems
            .take(
                duration::parse(parsed("EDGE_INACTIVITY_TIMEOUT"))
                    .map_err(|e| {
                        invalid(
                            "EDGE_INACTIVITY_TIMEOUT",
                            &format!("{e}; expected a Go duration such as 30s, 5m or 1h30m"),
                        )
                    })
                    .and_then(|d| match d.is_zero() {
                        true => Err(invalid(
                            "EDGE_INACTIVITY_TIMEOUT",
                            "must be longer than zero, e.g. 5m",
                        )),
                        false => Ok(d),
                    }),
            )
            .unwrap_or_default();
        let log_level = match parsed("LOG_LEVEL").to_ascii_uppercase().as_str() {
            "ERROR" => LevelFilter::Error,
            "WARN" => LevelFilter::Warn,
            "INFO" => LevelFilter::Info,
            "DEBUG" => LevelFilter::Debug,
            _ => {
                problems.push(invalid("LOG_LEVEL", "expected ERROR, WARN, INFO or DEBUG"));
                LevelFilter::Info
            }
        };
        let data_path = PathBuf::from(parsed("DATA_PATH"));
        if !data_path.is_absolute() {
            problems.push(invalid(
                "DATA_PATH",
                "expected an absolute path, e.g. /var/lib/edge-agent",
            ));
        }
        let mut proxies = Proxies::default();
        for (name, slot) in [
            ("HTTP_PROXY", &mut proxies.http),
            ("HTTPS_PROXY", &mut proxies.https),
        ] {
            if let Some((url, _)) = get(name) {
                *slot = problems.take(ureq::Proxy::new(url).map(|_| url.to_owned()).map_err(|e| {
                    invalid(
                        name,
                        &format!("{e}; expected a proxy URL such as http://proxy.lan:3128"),
                    )
                }));
            }
        }
        proxies.no_proxy = get("NO_PROXY").map(|(v, _)| v.to_owned());
        let tls = TlsFiles {
            cert: get("MTLS_SSL_CERT").map(|(v, _)| PathBuf::from(v)),
            key: get("MTLS_SSL_KEY").map(|(v, _)| PathBuf::from(v)),
            ca: get("MTLS_SSL_CA").map(|(v, _)| PathBuf::from(v)),
        };
        match (&tls.cert, &tls.key) {
            (Some(_), None) => problems.push(invalid(
                "MTLS_SSL_CERT",
                "MTLS_SSL_KEY must be set too (the client certificate's private key)",
            )),
            (None, Some(_)) => problems.push(invalid(
                "MTLS_SSL_KEY",
                "MTLS_SSL_CERT must be set too (the client certificate)",
            )),
            _ => {}
        }
        let docker_socket = match parsed("DOCKER_HOST").strip_prefix("unix://") {
            Some(path) if path.starts_with('/') => PathBuf::from(path),
            _ => {
                problems.push(invalid(
                    "DOCKER_HOST",
                    "expected unix:///path/to/docker.sock (the agent runs on the Docker host, so tcp:// is not supported)",
                ));
                PathBuf::new()
            }
        };
        let mut id_list = |name: &'static str| {
            let ids = get(name).map_or(Ok(Vec::new()), |(v, _)| {
                v.split(':')
                    .map(|id| id.trim().parse::<i64>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| invalid(name, "expected colon-separated integer ids, e.g. 1:4:7"))
            });
            problems.take(ids).unwrap_or_default()
        };
        let edge_group_ids = id_list("EDGE_GROUPS");
        let tag_ids = id_list("PORTAINER_TAGS");
        let environment_group_id = get("PORTAINER_GROUP").and_then(|(v, _)| {
            problems.take(
                v.parse()
                    .map_err(|_| invalid("PORTAINER_GROUP", "expected an integer id")),
            )
        });
        Config {
            env_file,
            env_file_read,
            edge_key,
            edge_id,
            insecure_poll,
            inactivity_timeout,
            tunnel,
            host_browser,
            upload_max,
            agent_secret: get("AGENT_SECRET").map(|(v, _)| v.to_owned()),
            log_level,
            data_path,
            proxies,
            tls,
            docker_socket,
            meta: GlobalKeyMeta {
                edge_group_ids,
                tag_ids,
                environment_group_id,
            },
            warnings,
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

fn default_of(name: &str) -> &'static str {
    VARS.iter()
        .find(|v| v.env == name)
        .map(|v| v.default)
        .unwrap_or("")
}

/// `123`, `64K`, `512M`, `2G` (powers of 1024).
fn parse_size(s: &str) -> Option<u64> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => s.split_at(at),
        None => (s, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Go's `strconv.ParseBool`, which kingpin uses for the Go agent's boolean settings.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn valid_edge_id(id: &str) -> bool {
    (1..=255).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn var(env: &str) -> &'static Var {
        VARS.iter().find(|v| v.env == env).unwrap()
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: BTreeMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn file(text: &str) -> (tempfile::NamedTempFile, EnvFileChoice) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        let path = f.path().to_owned();
        (f, EnvFileChoice::Named(path))
    }

    /// The one error of a configuration.
    fn the_error(result: Result<Config, Vec<Error>>) -> String {
        let errors = result.unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].to_string()
    }

    const KEY: &str = "aHR0cHM6Ly9wb3J0YWluZXIuZXhhbXBsZS5jb206OTQ0M3xwb3J0YWluZXIuZXhhbXBsZS5jb206ODAwMHx2elFPQlpEY2k0Z1F5d1FwSVFlbDJOM3V2ZU5pQTBQNWl0TzJta1UxZS9zPXwz";

    #[test]
    fn defaults_when_nothing_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let choice = EnvFileChoice::Named(dir.path().join("missing.env"));
        let err = the_error(Config::load(choice, env_of(&[]), &[]));
        assert!(
            err.contains("missing.env does not exist")
                && err.contains("install -D -m 600 packaging/edge-agent.env"),
            "{err}"
        );
        let (_f, choice) = file("");
        let c = Config::load(choice, env_of(&[]), &[]).unwrap();
        assert!(c.edge_key.is_none() && c.edge_id.is_none());
        assert!(!c.insecure_poll && c.tunnel && c.host_browser);
        assert_eq!(c.upload_max, 1 << 30);
        assert_eq!(c.inactivity_timeout, Duration::from_secs(300));
        assert_eq!(c.log_level, LevelFilter::Info);
        assert_eq!(c.data_path, PathBuf::from("/var/lib/edge-agent"));
        assert_eq!(c.docker_socket, PathBuf::from("/var/run/docker.sock"));
    }

    #[test]
    fn an_env_file_holding_a_secret_that_others_can_read_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let warnings = |text: &str, mode: u32| {
            let (f, choice) = file(text);
            std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            Config::load(choice, env_of(&[]), &[]).unwrap().warnings
        };
        let w = warnings(&format!("EDGE_KEY={KEY}\nAGENT_SECRET=s3cret\n"), 0o644);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains(
                "holds EDGE_KEY and AGENT_SECRET but group or others can read it (mode 0644)"
            ) && w[0].contains("chmod 600"),
            "{w:?}"
        );
        assert!(!w[0].contains(KEY) && !w[0].contains("s3cret"), "{w:?}");
        assert_eq!(warnings(&format!("EDGE_KEY={KEY}\n"), 0o640).len(), 1);
        assert!(warnings(&format!("EDGE_KEY={KEY}\n"), 0o600).is_empty());
        assert!(warnings("EDGE_KEY=\nEDGE_ID=gw-1\n", 0o644).is_empty());
    }

    #[test]
    fn file_then_environment_then_flags() {
        let (_f, choice) = file(&format!(
            "EDGE_KEY={KEY}\nEDGE_ID=from-file\nLOG_LEVEL=ERROR\nEDGE_INACTIVITY_TIMEOUT=1m\n"
        ));
        let c = Config::load(
            choice,
            env_of(&[("EDGE_ID", "from-env"), ("LOG_LEVEL", "WARN")]),
            &[(var("LOG_LEVEL"), "debug".into())],
        )
        .unwrap();
        assert_eq!(c.edge_key.unwrap().key.endpoint_id, Some(3));
        assert_eq!(c.edge_id.unwrap(), ("from-env".to_string(), Source::Env));
        assert_eq!(c.log_level, LevelFilter::Debug);
        assert_eq!(c.inactivity_timeout, Duration::from_secs(60));
    }

    #[test]
    fn bad_values_name_variable_file_and_line() {
        let (f, choice) = file("# comment\nEDGE_INACTIVITY_TIMEOUT=5 minutes\n");
        let err = the_error(Config::load(choice, env_of(&[]), &[]));
        assert!(
            err.starts_with("EDGE_INACTIVITY_TIMEOUT=\"5 minutes\""),
            "{err}"
        );
        assert!(
            err.contains(&format!("{} line 2", f.path().display())),
            "{err}"
        );
        assert!(err.contains("Go duration"), "{err}");

        let err = the_error(Config::load(
            EnvFileChoice::Named(f.path().into()),
            env_of(&[("EDGE_INACTIVITY_TIMEOUT", "5m"), ("EDGE_KEY", "abc|")]),
            &[],
        ));
        assert!(
            err.contains("EDGE_KEY")
                && err.contains("process environment")
                && err.contains("not base64"),
            "{err}"
        );

        for (name, value, hint) in [
            ("EDGE_INSECURE_POLL", "yes", "true or false"),
            ("EDGE_HOST_BROWSER", "off", "true or false"),
            ("EDGE_UPLOAD_MAX", "1T", "K, M or G"),
            ("EDGE_UPLOAD_MAX", "0", "K, M or G"),
            ("LOG_LEVEL", "TRACE", "ERROR, WARN, INFO or DEBUG"),
            ("DATA_PATH", "data", "absolute path"),
            ("DOCKER_HOST", "tcp://1.2.3.4:2375", "unix://"),
            ("EDGE_GROUPS", "1,2", "colon-separated"),
            ("PORTAINER_GROUP", "one", "integer"),
            ("EDGE_ID", "has space", "printable ASCII"),
            ("HTTPS_PROXY", "http://[bad", "proxy URL"),
            ("MTLS_SSL_CERT", "/c.pem", "MTLS_SSL_KEY must be set"),
        ] {
            let (_f, choice) = file("");
            let err = the_error(Config::load(
                choice,
                env_of(&[]),
                &[(var(name), value.into())],
            ));
            assert!(
                err.starts_with(name)
                    && err.contains(hint)
                    && err.contains(&format!("--{}", var(name).flag)),
                "{err}"
            );
        }
    }

    #[test]
    fn every_bad_line_and_value_is_reported_at_once() {
        let (f, choice) = file(
            "# first boot\nEDGE_INACTIVITY_TIMEOUT=30s # note\nLOG_LEVEL=LOUD\nEDGE_ID=\"dev\" # note\nEDGE_TUNNEL=maybe\n",
        );
        let errors: Vec<String> = Config::load(
            choice,
            env_of(&[("DATA_PATH", "relative")]),
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

    #[test]
    fn a_padded_key_is_accepted_with_a_warning() {
        let (_f, choice) = file(&format!("EDGE_KEY={KEY}=\n"));
        let c = Config::load(choice, env_of(&[]), &[]).unwrap();
        assert_eq!(c.edge_key.unwrap().key.endpoint_id, Some(3));
        assert!(
            c.warnings.iter().any(|w| w.contains("padded")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("1.5G"), None);
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("99999999999G"), None);
    }

    #[test]
    fn same_value_from_systemd_environment_file_keeps_the_file_line() {
        let (f, choice) = file("EDGE_ID=dev-1\nLOG_LEVEL=LOUD\n");
        let err = the_error(Config::load(
            choice,
            env_of(&[("EDGE_ID", "dev-1"), ("LOG_LEVEL", "LOUD")]),
            &[],
        ));
        assert!(
            err.contains(&format!("{} line 2", f.path().display())),
            "{err}"
        );
    }

    #[test]
    fn unknown_edge_settings_are_warned_about() {
        let (_f, choice) = file("EDGE=1\nEDGE_ASYNC=1\nEDGE_KEYY=x\nTZ=UTC\n");
        let c = Config::load(choice, env_of(&[]), &[]).unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("EDGE_ASYNC") && c.warnings[0].contains("line 2"));
        assert!(c.warnings[1].contains("EDGE_KEYY") && c.warnings[1].contains("line 3"));
    }

    #[test]
    fn empty_template_values_mean_unset_and_lowercase_proxies_count() {
        let (_f, choice) = file("EDGE_KEY=\nEDGE_ID=\"\"\n");
        let c = Config::load(choice, env_of(&[("https_proxy", "http://proxy:3128")]), &[]).unwrap();
        assert!(c.edge_key.is_none() && c.edge_id.is_none());
        assert_eq!(c.proxies.https.as_deref(), Some("http://proxy:3128"));
    }
}
