//! What a valid value is: each setting's raw value checked and turned into its [`Config`] field,
//! every bad one an [`Error`] naming what is expected.

use super::edge_key::EdgeKey;
use super::settings::default_of;
use super::sources::{Raw, Source};
use super::{
    duration, Config, ConfiguredKey, ConnectivityCheck, Error, GlobalKeyMeta, Problems, Proxies,
    SetupPage, TlsFiles,
};
use log::LevelFilter;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

impl Config {
    /// The configuration of `raw`; meaningless where `problems` gained an error.
    pub(super) fn from_raw(
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
        let connectivity_check = boolean("EDGE_CONNECTIVITY_CHECK");
        let setup_page = boolean("EDGE_SETUP_PAGE");
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
        let connectivity_timeout = problems
            .take(
                duration::parse(parsed("EDGE_CONNECTIVITY_CHECK_TIMEOUT"))
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        invalid(
                            "EDGE_CONNECTIVITY_CHECK_TIMEOUT",
                            "expected a Go duration longer than zero, e.g. 15s",
                        )
                    }),
            )
            .unwrap_or_default();
        let connectivity_check = connectivity_check.then(|| ConnectivityCheck {
            url: get("EDGE_CONNECTIVITY_CHECK_URL").map(|(v, _)| v.to_owned()),
            tunnel_addr: get("EDGE_CONNECTIVITY_CHECK_TUNNEL_ADDR").map(|(v, _)| v.to_owned()),
            timeout: connectivity_timeout,
        });
        let host = problems.take(parsed("EDGE_SERVER_HOST").parse::<IpAddr>().map_err(|_| {
            invalid(
                "EDGE_SERVER_HOST",
                "expected an IP address of this device, or 0.0.0.0 for all of them",
            )
        }));
        let port = problems.take(
            parsed("EDGE_SERVER_PORT")
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| invalid("EDGE_SERVER_PORT", "expected a TCP port, 1 to 65535")),
        );
        let setup_page = match (setup_page, host, port) {
            (true, Some(host), Some(port)) => Some(SetupPage {
                addr: SocketAddr::new(host, port),
            }),
            (false, _, _) => {
                for name in ["EDGE_SERVER_HOST", "EDGE_SERVER_PORT"] {
                    if let Some((_, source)) = get(name) {
                        warnings.push(format!(
                            "{name} ({source}) is ignored: the key setup page is off (EDGE_SETUP_PAGE=false)"
                        ));
                    }
                }
                None
            }
            _ => None,
        };
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
            setup_page,
            connectivity_check,
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
pub(super) fn parse_go_bool(s: &str) -> Option<bool> {
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
    use crate::config::tests::{env_of, file, the_error, var, KEY};
    use crate::config::EnvFileChoice;

    #[test]
    fn bad_values_name_variable_file_and_line() {
        let (f, choice) = file("# comment\nEDGE_INACTIVITY_TIMEOUT=5 minutes\n");
        let err = the_error(Config::load(choice, &env_of(&[]), &[]));
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
            &env_of(&[("EDGE_INACTIVITY_TIMEOUT", "5m"), ("EDGE_KEY", "abc|")]),
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
            ("EDGE_SETUP_PAGE", "on", "true or false"),
            ("EDGE_SERVER_HOST", "gateway.lan", "IP address"),
            ("EDGE_SERVER_PORT", "0", "TCP port"),
            ("EDGE_SERVER_PORT", "65536", "TCP port"),
            ("EDGE_ID", "has space", "printable ASCII"),
            ("HTTPS_PROXY", "http://[bad", "proxy URL"),
            ("MTLS_SSL_CERT", "/c.pem", "MTLS_SSL_KEY must be set"),
        ] {
            let (_f, choice) = file("");
            let err = the_error(Config::load(
                choice,
                &env_of(&[]),
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
    fn a_padded_key_is_accepted_with_a_warning() {
        let (_f, choice) = file(&format!("EDGE_KEY={KEY}=\n"));
        let c = Config::load(choice, &env_of(&[]), &[]).unwrap();
        assert_eq!(c.edge_key.unwrap().key.endpoint_id, Some(3));
        assert!(
            c.warnings.iter().any(|w| w.contains("padded")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn the_setup_page_is_off_unless_enabled() {
        let (_f, choice) = file("EDGE_SERVER_PORT=8080\n");
        let c = Config::load(choice, &env_of(&[]), &[]).unwrap();
        assert_eq!(c.setup_page, None);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.starts_with("EDGE_SERVER_PORT (") && w.contains("EDGE_SETUP_PAGE=false")),
            "{:?}",
            c.warnings
        );
        let (_f, choice) = file("EDGE_SETUP_PAGE=true\n");
        let c = Config::load(choice, &env_of(&[]), &[]).unwrap();
        assert_eq!(c.setup_page.unwrap().addr.to_string(), "0.0.0.0:80");
        let (_f, choice) = file("EDGE_SETUP_PAGE=1\nEDGE_SERVER_HOST=::1\nEDGE_SERVER_PORT=8080\n");
        let c = Config::load(choice, &env_of(&[]), &[]).unwrap();
        assert_eq!(c.setup_page.unwrap().addr.to_string(), "[::1]:8080");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
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
}
