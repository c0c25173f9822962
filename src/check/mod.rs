//! `edge-agent check`: validates the configuration, shows what the Edge key says, the Edge ID,
//! the state file and the edge stacks it records, and whether Docker, the Portainer URL and the
//! tunnel server answer. Writes nothing.

use crate::config::edge_key::EdgeKey;
use crate::config::Config;
use crate::docker;
use crate::portainer::{hints, versions, Client, CONNECT_TIMEOUT};
use crate::state::{Store, FILE_NAME};
use crate::system::output::Output;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};

/// One line of the report.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        // Whether it was written does not matter: the report runs to its end and its exit code.
        {
            $out.line(format_args!($($arg)*));
        }
    };
}

pub mod connectivity;
mod settings;

/// What `check` concluded, which its exit code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Everything needed to run is in order.
    Ok,
    /// Something `NOT` in order that `run` would retry (Docker, Portainer, the tunnel).
    NotOk,
    /// `run` would stop at once with a configuration error (exit code 78): no usable Edge key.
    ConfigError,
}

/// The last line of every report.
pub fn result_line(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Ok => "result: OK",
        Verdict::NotOk => "result: NOT OK (see the lines with NOT above)",
        Verdict::ConfigError => {
            "result: NOT OK: the configuration is not valid; `run` stops on it too (exit code 78)"
        }
    }
}

/// Prints the report, ending with its [`result_line`].
pub fn check(config: &Config, out: &mut Output<impl Write>) -> Verdict {
    let verdict = report(config, out);
    say!(out, "{}", result_line(verdict));
    verdict
}

fn report(config: &Config, out: &mut Output<impl Write>) -> Verdict {
    let mut ok = true;
    match config.env_file_read {
        true => say!(out, "configuration: valid (env file {})", config.env_file.display()),
        false => say!(
            out,
            "configuration: valid (no env file read: {} does not exist; settings from the environment and options only)",
            config.env_file.display()
        ),
    }
    for warning in &config.warnings {
        say!(out, "  warning: {warning}");
    }
    settings::print(config, out);
    say!(
        out,
        "tunnel: {}",
        if config.tunnel {
            format!(
                "enabled, closed after {} without activity",
                crate::config::duration::display(config.inactivity_timeout)
            )
        } else {
            "disabled (EDGE_TUNNEL=false)".to_owned()
        }
    );
    say!(
        out,
        "AGENT_SECRET: {}",
        if config.agent_secret.is_some() {
            "set"
        } else {
            "not set (the first Portainer key is trusted and pinned)"
        }
    );
    match docker::Client::connect(&config.docker_socket, docker::Limits::default())
        .and_then(|c| Ok((c.version()?, c)))
    {
        Ok((version, client)) => say!(
            out,
            "Docker: {} reachable, {}",
            config.docker_socket.display(),
            client.engine().describe(&version, client.api_version())
        ),
        Err(e) => {
            say!(out, "Docker: NOT reachable: {e}");
            ok = false;
        }
    }
    let saved = match Store::peek(&config.data_path) {
        Ok(state) => Some(state),
        Err(e) => {
            say!(out, "state file: NOT usable: {e}");
            ok = false;
            None
        }
    };
    let state_path = config.data_path.join(FILE_NAME);
    let writable = nix::unistd::access(
        nearest_existing(&config.data_path),
        nix::unistd::AccessFlags::W_OK,
    );
    match (&saved, writable) {
        (_, Err(e)) => {
            say!(
                out,
                "state file: {} (folder NOT writable: {e})",
                state_path.display()
            );
            ok = false;
        }
        (Some(s), Ok(())) if *s == Default::default() => {
            say!(
                out,
                "state file: {} (not written yet: first boot)",
                state_path.display()
            )
        }
        (_, Ok(())) => say!(out, "state file: {}", state_path.display()),
    }
    let saved = saved.unwrap_or_default();
    print_stacks(&saved, out);
    match crate::jobs::report(&config.data_path, &saved) {
        lines if lines.is_empty() => say!(out, "edge jobs: none"),
        lines => {
            say!(out, "edge jobs:");
            lines.iter().for_each(|line| say!(out, "  {line}"));
        }
    }

    let key_text = config
        .edge_key
        .as_ref()
        .map(|k| (k.text.clone(), k.source.to_string()))
        .or_else(|| saved.edge_key.clone().map(|k| (k, "state file".to_owned())));
    let key = match key_text {
        None => match config.setup_page {
            None => {
                say!(
                    out,
                    "Edge key: NOT set (put EDGE_KEY=<key from Portainer> in {}, or set EDGE_SETUP_PAGE=true to enter it on this device's setup page)",
                    config.env_file.display()
                );
                return Verdict::ConfigError;
            }
            Some(page) => return report_setup_page(page.addr, out),
        },
        Some((text, source)) => match EdgeKey::decode(&text) {
            Ok(key) => {
                say!(out, "Edge key (from {source}):");
                say!(out, "  Portainer URL:      {}", key.portainer_url);
                say!(out, "  tunnel server:      {}", key.tunnel_addr);
                say!(out, "  tunnel fingerprint: {}", key.fingerprint);
                match key.endpoint_id {
                    Some(id) => say!(out, "  endpoint id:        {id}"),
                    None => say!(
                        out,
                        "  endpoint id:        0 (global key; learned: {})",
                        saved
                            .endpoint_id
                            .map_or("not yet".to_owned(), |id| id.to_string())
                    ),
                }
                key
            }
            Err(e) => {
                say!(out, "Edge key (from {source}): NOT valid: {e}");
                return Verdict::ConfigError;
            }
        },
    };
    let edge_id = match (&config.edge_id, &saved.edge_id) {
        (Some((id, source)), _) => {
            say!(out, "Edge ID: {id} (from {source})");
            id.clone()
        }
        (None, Some(id)) => {
            say!(out, "Edge ID: {id} (from the state file)");
            id.clone()
        }
        (None, None) => {
            say!(
                out,
                "Edge ID: not generated yet (the first run generates and saves one)"
            );
            "edge-agent-check".to_owned()
        }
    };

    match Client::new(config, &key.portainer_url, &edge_id) {
        Err(e) => {
            say!(out, "Portainer: NOT reachable: {e}");
            ok = false;
        }
        Ok(client) => match client.system_status() {
            Ok(status) => say!(
                out,
                "Portainer: {} reachable (HTTP {}), {}",
                key.portainer_url,
                status.http,
                versions::describe(status.version.as_deref())
            ),
            Err(e) => {
                say!(out, "Portainer: NOT reachable: {e}");
                ok = false;
            }
        },
    }
    match config.tunnel.then(|| reach(&key.tunnel_addr)) {
        None => say!(
            out,
            "tunnel server: {} not checked (the tunnel is disabled)",
            key.tunnel_addr
        ),
        Some(Ok(())) => say!(out, "tunnel server: {} reachable (TCP)", key.tunnel_addr),
        Some(Err(e)) => {
            say!(out, "tunnel server: {} NOT reachable: {e}", key.tunnel_addr);
            ok = false;
        }
    }
    match ok {
        true => Verdict::Ok,
        false => Verdict::NotOk,
    }
}

/// No Edge key yet and `EDGE_SETUP_PAGE=true`: whether `run` is waiting on the setup page (it
/// answers) or is not (the page closed after its time limit, or the agent is not running).
fn report_setup_page(addr: SocketAddr, out: &mut Output<impl Write>) -> Verdict {
    let url = format!("http://{addr}/");
    let any = match addr.ip().is_unspecified() {
        true => " (any address of this device)",
        false => "",
    };
    let mut probe = addr;
    if addr.ip().is_unspecified() {
        probe.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    match TcpStream::connect_timeout(&probe, CONNECT_TIMEOUT) {
        Ok(_) => {
            say!(
                out,
                "Edge key: not set yet, waiting for a key on the setup page at {url}{any}"
            );
            Verdict::Ok
        }
        Err(e) => {
            say!(
                out,
                "Edge key: NOT set, and the setup page at {url}{any} does NOT answer ({e}): `run` opens it for {} when it starts without a key; restart the agent, or set EDGE_KEY",
                crate::config::duration::display(crate::setup_page::LIMIT)
            );
            Verdict::NotOk
        }
    }
}

/// The edge stacks the state file records, with version and last status.
fn print_stacks(state: &crate::state::State, out: &mut Output<impl Write>) {
    if state.stacks.is_empty() {
        say!(out, "edge stacks: none deployed");
        return;
    }
    say!(out, "edge stacks:");
    for (id, r) in &state.stacks {
        let status = r
            .status
            .map_or("not deployed yet".to_owned(), |s| s.to_string());
        let reported = match (r.status, r.sent) {
            (Some(s), Some(sent)) if s == sent => "",
            (Some(_), _) => ", not yet reported to Portainer",
            _ => "",
        };
        let error = if r.error.is_empty() {
            String::new()
        } else {
            format!(": {}", r.error)
        };
        let project = if r.project.is_empty() {
            "no project"
        } else {
            &r.project
        };
        say!(
            out,
            "  {id} {:?} version {} ({project}): {status}{error}{reported}",
            r.name,
            r.version
        );
    }
}

fn reach(addr: &str) -> Result<(), String> {
    let authority = addr
        .split_once("://")
        .map_or(addr, |(_, rest)| rest)
        .trim_end_matches('/');
    let addrs = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}; {}", hints::NAME_NOT_FOUND))?;
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => {
                last = match hints::connect(e.kind(), hints::Server::Tunnel) {
                    Some(hint) => format!("{a}: {e}; {hint}"),
                    None => format!("{a}: {e}"),
                }
            }
        }
    }
    Err(last)
}

fn nearest_existing(path: &std::path::Path) -> &std::path::Path {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(std::path::Path::new("/"))
}
