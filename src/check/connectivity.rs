//! `EDGE_CONNECTIVITY_CHECK=1`: the Go agent's one-shot troubleshooting check (agent
//! `edge/connectivity_check.go`, 2.44), which Portainer's UI puts in the command it shows for a
//! device that does not connect: can this device reach the Portainer URL (any HTTP answer
//! passes) and the tunnel server, each within the timeout? It prints the Go agent's `CHECK`,
//! `PASS:`/`FAIL:` and `RESULT:` lines, with `check`'s Portainer client and tunnel probe.

use crate::config::{Config, ConnectivityCheck};
use crate::portainer::Client;
use crate::system::output::Output;
use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

/// Runs the checks; `true` when all passed.
pub fn run(config: &Config, check: &ConnectivityCheck, out: &mut Output<impl Write>) -> bool {
    let key = config.edge_key.as_ref().map(|k| &k.key);
    let url = check
        .url
        .clone()
        .or_else(|| key.map(|k| k.portainer_url.clone()));
    let Some(url) = url.filter(|u| valid_url(u)) else {
        say!(
            out,
            "FAIL: Invalid connectivity check configuration: no http:// or https:// Portainer URL with a host: set EDGE_CONNECTIVITY_CHECK_URL or EDGE_KEY"
        );
        return false;
    };
    let tunnel = match config.tunnel {
        true => check
            .tunnel_addr
            .clone()
            .or_else(|| key.map(|k| k.tunnel_addr.clone())),
        false => None,
    };
    let total = 1 + usize::from(tunnel.is_some());
    let wait = crate::config::duration::display(check.timeout);
    let mut passed = 0;

    say!(
        out,
        "CHECK (1/{total}): trying to reach the Portainer API server at {url}, waiting up to {wait}..."
    );
    let edge_id = config
        .edge_id
        .as_ref()
        .map_or("edge-agent-check", |(id, _)| id.as_str());
    let answer = Client::new(config, &url, edge_id).map_err(|e| e.to_string());
    let answer = answer.and_then(|client| {
        within(check.timeout, move || {
            client.system_status().map_err(|e| e.to_string())
        })
    });
    match answer {
        Ok(_) => {
            say!(out, "PASS: Portainer API server is reachable at {url}");
            passed += 1;
        }
        Err(e) => say!(
            out,
            "FAIL: Failed to reach Portainer API server at {url}: {e}"
        ),
    }
    if let Some(addr) = tunnel {
        say!(
            out,
            "CHECK (2/{total}): trying to reach the Portainer tunnel server at {addr}, waiting up to {wait}..."
        );
        let probe = addr.clone();
        match within(check.timeout, move || super::reach(&probe)) {
            Ok(()) => {
                say!(out, "PASS: Portainer tunnel server is reachable at {addr}");
                passed += 1;
            }
            Err(e) => say!(
                out,
                "FAIL: Failed to reach Portainer tunnel server at {addr}: {e}"
            ),
        }
    }
    match passed == total {
        true => say!(out, "RESULT: all {total} connectivity checks passed"),
        false => say!(
            out,
            "RESULT: connectivity checks failed, see the FAIL lines above"
        ),
    }
    passed == total
}

/// An `http://` or `https://` URL with a host, as the Go agent requires.
fn valid_url(url: &str) -> bool {
    url.strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with(['/', ':']))
}

/// `f`'s answer, or an error once `timeout` has passed (`f` is left to finish on its thread,
/// which ends with the process).
fn within<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("connectivity".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(format!(
            "no answer within {}",
            crate::config::duration::display(timeout)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_a_scheme_and_a_host() {
        assert!(valid_url("https://portainer.lan:9443"));
        assert!(valid_url("http://10.0.0.2"));
        assert!(!valid_url("portainer.lan:9443"));
        assert!(!valid_url("https://"));
        assert!(!valid_url("ftp://portainer.lan"));
    }

    #[test]
    fn a_slow_answer_is_a_timeout() {
        let slow = within(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_secs(2));
            Ok(())
        });
        assert_eq!(slow, Err("no answer within 50ms".to_owned()));
        assert_eq!(within(Duration::from_secs(5), || Ok(7)), Ok(7));
    }
}
