//! The settings part of `check`'s report: how polling is secured and routed, what Portainer may
//! do on this device through the tunnel, and how much the agent logs, each with the variable
//! that sets it. Proxy passwords are never shown.

use crate::config::Config;
use crate::system::output::Output;
use std::io::Write;

pub fn print(config: &Config, out: &mut Output<impl Write>) {
    say!(
        out,
        "polling: {}",
        match config.insecure_poll {
            true => "Portainer's certificate is not verified (EDGE_INSECURE_POLL=true)",
            false => "Portainer's certificate is verified (EDGE_INSECURE_POLL=false)",
        }
    );
    let tls = &config.tls;
    for (name, path) in [
        ("MTLS_SSL_CERT", &tls.cert),
        ("MTLS_SSL_KEY", &tls.key),
        ("MTLS_SSL_CA", &tls.ca),
    ] {
        if let Some(path) = path {
            say!(out, "  {name}: {}", path.display());
        }
    }
    let proxies = &config.proxies;
    match (&proxies.https, &proxies.http) {
        (None, None) => say!(out, "proxy: none (HTTPS_PROXY and HTTP_PROXY not set)"),
        (https, http) => {
            let shown =
                |p: &Option<String>| p.as_deref().map_or("none".to_owned(), without_password);
            say!(
                out,
                "proxy: {} for https:// URLs (HTTPS_PROXY), {} for http:// URLs (HTTP_PROXY){}",
                shown(https),
                shown(http),
                proxies
                    .no_proxy
                    .as_ref()
                    .map_or(String::new(), |n| format!(", not for {n} (NO_PROXY)"))
            )
        }
    }
    say!(
        out,
        "host browser: {}",
        match config.host_browser {
            true => "enabled (EDGE_HOST_BROWSER=true): Portainer may browse, download, upload, rename and delete any file of this device",
            false => "disabled (EDGE_HOST_BROWSER=false): only volumes can be browsed",
        }
    );
    match config.setup_page {
        None => say!(out, "setup page: off (EDGE_SETUP_PAGE=false)"),
        Some(page) => say!(
            out,
            "setup page: on (EDGE_SETUP_PAGE=true): without an Edge key, `run` serves it at http://{}/ (EDGE_SERVER_HOST, EDGE_SERVER_PORT) for {}, and anyone who reaches it can enrol this device",
            page.addr,
            crate::config::duration::display(crate::setup_page::LIMIT)
        ),
    }
    say!(
        out,
        "uploads: at most {} a file (EDGE_UPLOAD_MAX), never leaving less than {} free",
        size(config.upload_max),
        size(crate::api::browse::staging::RESERVE)
    );
    match std::env::var("RUST_LOG") {
        Ok(filter) if !filter.is_empty() => say!(
            out,
            "log level: RUST_LOG={filter} (it replaces LOG_LEVEL={})",
            config.log_level
        ),
        _ => say!(out, "log level: {} (LOG_LEVEL)", config.log_level),
    }
}

/// `url` with any password replaced by `****` (`http://user:****@proxy:3128`).
fn without_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let user = rest[..at].split(':').next().unwrap_or_default();
    let prefix = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    format!("{prefix}{user}:****{}", &rest[at..])
}

/// `bytes` in the largest binary unit that divides it (as `EDGE_UPLOAD_MAX` is written).
fn size(bytes: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_passwords_are_hidden() {
        assert_eq!(
            without_password("http://ops:s3cret-pass@proxy.lan:3128"),
            "http://ops:****@proxy.lan:3128"
        );
        assert_eq!(
            without_password("http://ops@proxy.lan:3128/x@y"),
            "http://ops:****@proxy.lan:3128/x@y"
        );
        assert_eq!(
            without_password("http://proxy.lan:3128"),
            "http://proxy.lan:3128"
        );
        assert_eq!(without_password("p:pw@host:1"), "p:****@host:1");
    }

    #[test]
    fn sizes_as_written() {
        assert_eq!(size(1 << 30), "1 GiB");
        assert_eq!(size(512 << 20), "512 MiB");
        assert_eq!(size(1500), "1500 bytes");
        assert_eq!(size(3 << 10), "3 KiB");
    }
}
