//! `edge-agent check`: validates the configuration, shows what the Edge key says, the Edge ID and
//! the state file, and whether Docker, the Portainer URL and the tunnel server answer. Writes
//! nothing.

use crate::config::edge_key::EdgeKey;
use crate::config::Config;
use crate::docker;
use crate::portainer::{Client, CONNECT_TIMEOUT};
use crate::state::{Store, FILE_NAME};
use std::net::{TcpStream, ToSocketAddrs};

/// Prints the report; `true` when everything needed to run is in order.
pub fn check(config: &Config) -> bool {
    let mut ok = true;
    println!(
        "configuration: valid (env file {})",
        config.env_file.display()
    );
    for warning in &config.warnings {
        println!("  warning: {warning}");
    }
    println!(
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
    println!(
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
        Ok((version, client)) => println!(
            "Docker: {} reachable, Docker Engine {} (API {}, using {})",
            config.docker_socket.display(),
            version.version,
            version.api_version,
            client.api_version()
        ),
        Err(e) => {
            println!("Docker: NOT reachable: {e}");
            ok = false;
        }
    }
    let saved = match Store::peek(&config.data_path) {
        Ok(state) => Some(state),
        Err(e) => {
            println!("state file: NOT usable: {e}");
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
            println!(
                "state file: {} (folder NOT writable: {e})",
                state_path.display()
            );
            ok = false;
        }
        (Some(s), Ok(())) if *s == Default::default() => {
            println!(
                "state file: {} (not written yet: first boot)",
                state_path.display()
            )
        }
        (_, Ok(())) => println!("state file: {}", state_path.display()),
    }
    let saved = saved.unwrap_or_default();
    match crate::jobs::report(&config.data_path, &saved) {
        lines if lines.is_empty() => println!("edge jobs: none"),
        lines => {
            println!("edge jobs:");
            lines.iter().for_each(|line| println!("  {line}"));
        }
    }

    let key_text = config
        .edge_key
        .as_ref()
        .map(|k| (k.text.clone(), k.source.to_string()))
        .or_else(|| saved.edge_key.clone().map(|k| (k, "state file".to_owned())));
    let key = match key_text {
        None => {
            println!(
                "Edge key: NOT set (put EDGE_KEY=<key from Portainer> in {})",
                config.env_file.display()
            );
            return false;
        }
        Some((text, source)) => match EdgeKey::decode(&text) {
            Ok(key) => {
                println!("Edge key (from {source}):");
                println!("  Portainer URL:      {}", key.portainer_url);
                println!("  tunnel server:      {}", key.tunnel_addr);
                println!("  tunnel fingerprint: {}", key.fingerprint);
                match key.endpoint_id {
                    Some(id) => println!("  endpoint id:        {id}"),
                    None => println!(
                        "  endpoint id:        0 (global key; learned: {})",
                        saved
                            .endpoint_id
                            .map_or("not yet".to_owned(), |id| id.to_string())
                    ),
                }
                key
            }
            Err(e) => {
                println!("Edge key (from {source}): NOT valid: {e}");
                return false;
            }
        },
    };
    let edge_id = match (&config.edge_id, &saved.edge_id) {
        (Some((id, source)), _) => {
            println!("Edge ID: {id} (from {source})");
            id.clone()
        }
        (None, Some(id)) => {
            println!("Edge ID: {id} (from the state file)");
            id.clone()
        }
        (None, None) => {
            println!("Edge ID: not generated yet (the first run generates and saves one)");
            "edge-agent-check".to_owned()
        }
    };

    match Client::new(config, &key.portainer_url, &edge_id) {
        Err(e) => {
            println!("Portainer: NOT reachable: {e}");
            ok = false;
        }
        Ok(client) => match client.system_status() {
            Ok(status) => println!("Portainer: {} reachable (HTTP {status})", key.portainer_url),
            Err(e) => {
                println!("Portainer: NOT reachable: {e}");
                ok = false;
            }
        },
    }
    match reach(&key.tunnel_addr) {
        Ok(()) => println!("tunnel server: {} reachable (TCP)", key.tunnel_addr),
        Err(e) => {
            println!("tunnel server: {} NOT reachable: {e}", key.tunnel_addr);
            ok = false;
        }
    }
    println!("result: {}", if ok { "OK" } else { "NOT OK" });
    ok
}

fn reach(addr: &str) -> Result<(), String> {
    let authority = addr
        .split_once("://")
        .map_or(addr, |(_, rest)| rest)
        .trim_end_matches('/');
    let addrs = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?;
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

fn nearest_existing(path: &std::path::Path) -> &std::path::Path {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(std::path::Path::new("/"))
}
