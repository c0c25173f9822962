//! Where values come from: the env file, the process environment and CLI flags, each overriding
//! the ones before. Unknown and unsupported env file settings, and an env file holding a secret
//! that others can read, are warnings.

use super::settings::{Var, VARS};
use super::{envfile, names, Error, Problems};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// Settings that give access to this device or its Portainer: the env file holding one should be
/// its owner's alone.
pub(super) const SECRETS: &[&str] = &["EDGE_KEY", "AGENT_SECRET"];

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

/// Every setting given a value: the value as given and where it came from.
pub(super) type Raw = BTreeMap<&'static str, (String, Source)>;

/// Reads the env file at `path` into `raw`; every bad line goes to `problems`. Returns the names
/// the file sets, or `None` when it does not exist and `must_exist` is not set. An unreadable
/// file, or a missing one that must exist, is the one error.
pub(super) fn read_env_file(
    path: &Path,
    must_exist: bool,
    raw: &mut Raw,
    warnings: &mut Vec<String>,
    problems: &mut Problems,
) -> Result<Option<Vec<String>>, Error> {
    let loaded = envfile::load(path).map_err(Error::EnvFile)?;
    let mut file_names = Vec::new();
    match loaded {
        None if must_exist => return Err(Error::EnvFileMissing(path.to_owned())),
        None => return Ok(None),
        Some(loaded) => {
            let mut secrets = Vec::new();
            let readable = loaded.readable_by_others();
            for line in loaded.entries {
                let Some(entry) = problems.take(line.map_err(Error::EnvFile)) else {
                    continue;
                };
                file_names.push(entry.key.clone());
                if entry.spaced {
                    warnings.push(format!(
                        "{} line {}: spaces around '=': systemd and edge-agent read {}={}, but a shell or `docker run --env-file` would not; write it without spaces",
                        path.display(),
                        entry.line,
                        entry.key,
                        if SECRETS.contains(&entry.key.as_str()) { "..." } else { &entry.value }
                    ));
                }
                let source = Source::File {
                    path: path.to_owned(),
                    line: entry.line,
                };
                match VARS.iter().find(|v| v.env == entry.key) {
                    Some(var) => {
                        if SECRETS.contains(&var.env) && !entry.value.trim().is_empty() {
                            secrets.push(var.env);
                        }
                        raw.insert(var.env, (entry.value, source));
                    }
                    None => warnings
                        .extend(names::warning(&entry.key).map(|w| format!("{source}: {w}"))),
                }
            }
            if readable && !secrets.is_empty() {
                warnings.push(format!(
                    "{} holds {} but group or others can read it (mode {:04o}); make it the owner's alone: chmod 600 {}",
                    path.display(),
                    secrets.join(" and "),
                    loaded.mode,
                    path.display()
                ));
            }
        }
    }
    Ok(Some(file_names))
}

/// Where the process environment's settings come from: the real one, or a test's.
pub trait Environment {
    fn var(&self, name: &str) -> Option<OsString>;
    /// Every name set, to find misspelled settings.
    fn names(&self) -> Vec<OsString>;
}

/// This process's environment.
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }

    fn names(&self) -> Vec<OsString> {
        std::env::vars_os().map(|(name, _)| name).collect()
    }
}

/// Reads the settings set in the process environment `env` into `raw`, over the env file's,
/// and warns of names that are not settings (unless the env file has them too: systemd's
/// `EnvironmentFile=` exports its lines, which were warned about already).
pub(super) fn read_environment(
    env: &impl Environment,
    file_names: &[String],
    raw: &mut Raw,
    warnings: &mut Vec<String>,
    problems: &mut Problems,
) {
    for name in env.names() {
        let Some(name) = name.to_str() else { continue };
        if !file_names.iter().any(|n| n == name) {
            warnings.extend(names::warning(name).map(|w| format!("{}: {w}", Source::Env)));
        }
    }
    let env = |name: &str| env.var(name);
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
}

/// Puts `flags`, `(variable, value)` pairs from the command line, into `raw`, over all else.
pub(super) fn read_flags(flags: &[(&'static Var, String)], raw: &mut Raw) {
    for (var, value) in flags {
        raw.insert(var.env, (value.clone(), Source::Flag(var.flag)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{env_of, file, the_error, var, KEY};
    use crate::config::Config;
    use log::LevelFilter;
    use std::time::Duration;

    #[test]
    fn misspelled_names_are_warned_about_once_wherever_they_are() {
        let (_f, choice) = file("EDGE_INSECUREPOLL=1\nEDGE_ID = dev-1\n");
        let c = Config::load(
            choice,
            // systemd's EnvironmentFile= exports the file's line too; EDGE_TUNEL is the
            // environment's own.
            &env_of(&[
                ("EDGE_INSECUREPOLL", "1"),
                ("EDGE_TUNEL", "false"),
                ("HOME", "/root"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        assert!(c.warnings[1].ends_with(" line 2: spaces around '=': systemd and edge-agent read EDGE_ID=dev-1, but a shell or `docker run --env-file` would not; write it without spaces"), "{:?}", c.warnings);
        assert!(c.warnings[0].ends_with(" line 1: unknown setting EDGE_INSECUREPOLL is ignored; did you mean EDGE_INSECURE_POLL?"), "{:?}", c.warnings);
        assert_eq!(
            c.warnings[2],
            "process environment: unknown setting EDGE_TUNEL is ignored; did you mean EDGE_TUNNEL?"
        );
    }

    #[test]
    fn an_env_file_holding_a_secret_that_others_can_read_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let warnings = |text: &str, mode: u32| {
            let (f, choice) = file(text);
            std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            Config::load(choice, &env_of(&[]), &[]).unwrap().warnings
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
            &env_of(&[("EDGE_ID", "from-env"), ("LOG_LEVEL", "WARN")]),
            &[(var("LOG_LEVEL"), "debug".into())],
        )
        .unwrap();
        assert_eq!(c.edge_key.unwrap().key.endpoint_id, Some(3));
        assert_eq!(c.edge_id.unwrap(), ("from-env".to_string(), Source::Env));
        assert_eq!(c.log_level, LevelFilter::Debug);
        assert_eq!(c.inactivity_timeout, Duration::from_secs(60));
    }

    #[test]
    fn same_value_from_systemd_environment_file_keeps_the_file_line() {
        let (f, choice) = file("EDGE_ID=dev-1\nLOG_LEVEL=LOUD\n");
        let err = the_error(Config::load(
            choice,
            &env_of(&[("EDGE_ID", "dev-1"), ("LOG_LEVEL", "LOUD")]),
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
        let c = Config::load(choice, &env_of(&[]), &[]).unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("EDGE_ASYNC") && c.warnings[0].contains("line 2"));
        assert!(c.warnings[1].contains("EDGE_KEYY") && c.warnings[1].contains("line 3"));
    }

    #[test]
    fn empty_template_values_mean_unset_and_lowercase_proxies_count() {
        let (_f, choice) = file("EDGE_KEY=\nEDGE_ID=\"\"\n");
        let c = Config::load(
            choice,
            &env_of(&[("https_proxy", "http://proxy:3128")]),
            &[],
        )
        .unwrap();
        assert!(c.edge_key.is_none() && c.edge_id.is_none());
        assert_eq!(c.proxies.https.as_deref(), Some("http://proxy:3128"));
    }
}
