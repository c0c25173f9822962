//! Which proxy, if any, reaches a URL: `HTTPS_PROXY` for https, `HTTP_PROXY` for http, nothing
//! for hosts on `NO_PROXY` (Go's `httpproxy` rules: `*`, `host`, `.domain`, `*.domain`, IPs,
//! CIDRs, optional `:port`). Decided here once for the poll client and the tunnel alike.

use crate::config::Proxies;
use std::net::IpAddr;

/// Scheme, host (without brackets) and port of a URL such as `https://[::1]:9443/x`.
pub fn split_url(url: &str) -> Option<(&str, &str, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let default_port = match scheme {
        "https" | "wss" => 443,
        "http" | "ws" => 80,
        _ => return None,
    };
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    (!host.is_empty()).then_some((scheme, host, port))
}

/// The proxy URL to use for `url`, or `None` to connect directly.
pub fn for_url<'a>(proxies: &'a Proxies, url: &str) -> Option<&'a str> {
    let (scheme, host, port) = split_url(url)?;
    let proxy = match scheme {
        "https" | "wss" => proxies.https.as_deref(),
        _ => proxies.http.as_deref(),
    }?;
    match &proxies.no_proxy {
        Some(list) if bypasses(list, host, port) => None,
        _ => Some(proxy),
    }
}

/// The proxy for the tunnel to `host:port`: `HTTPS_PROXY`, else `HTTP_PROXY`, as the Go agent
/// hands chisel, but hosts on `NO_PROXY` are reached directly here too.
pub fn for_tunnel<'a>(proxies: &'a Proxies, host: &str, port: u16) -> Option<&'a str> {
    let proxy = proxies.https.as_deref().or(proxies.http.as_deref())?;
    match &proxies.no_proxy {
        Some(list) if bypasses(list, host, port) => None,
        _ => Some(proxy),
    }
}

fn bypasses(no_proxy: &str, host: &str, port: u16) -> bool {
    let host = host.to_ascii_lowercase();
    let host_ip: Option<IpAddr> = host.parse().ok();
    no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            if let Some((net, bits)) = entry.split_once('/') {
                return match (host_ip, net.parse::<IpAddr>(), bits.parse::<u32>()) {
                    (Some(ip), Ok(net), Ok(bits)) => in_cidr(ip, net, bits),
                    _ => false,
                };
            }
            if let Ok(ip) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
                return host_ip == Some(ip);
            }
            let (name, entry_port) = match entry.rsplit_once(':') {
                Some((name, p)) => match p.parse::<u16>() {
                    Ok(p) => (name, Some(p)),
                    Err(_) => return false,
                },
                None => (entry, None),
            };
            if entry_port.is_some_and(|p| p != port) {
                return false;
            }
            let name = name.to_ascii_lowercase();
            let name = name.strip_prefix('*').unwrap_or(&name);
            match name.strip_prefix('.') {
                Some(domain) => host.ends_with(&format!(".{domain}")),
                None => host == name || host.ends_with(&format!(".{name}")),
            }
        })
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    if bits > width {
        return false;
    }
    let shift = width - bits;
    shift >= width || (ip >> shift) == (net >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(no_proxy: &str) -> Proxies {
        Proxies {
            http: Some("http://plain-proxy:3128".into()),
            https: Some("http://tls-proxy:3128".into()),
            no_proxy: Some(no_proxy.into()),
        }
    }

    #[test]
    fn splits_urls() {
        assert_eq!(
            split_url("https://p.example:9443/api"),
            Some(("https", "p.example", 9443))
        );
        assert_eq!(
            split_url("http://u:pw@10.0.0.1"),
            Some(("http", "10.0.0.1", 80))
        );
        assert_eq!(
            split_url("https://[fd00::1]:9443"),
            Some(("https", "fd00::1", 9443))
        );
        assert_eq!(split_url("ftp://x"), None);
        assert_eq!(split_url("https://:9443"), None);
    }

    #[test]
    fn scheme_picks_the_proxy() {
        let p = proxies("");
        assert_eq!(
            for_url(&p, "https://portainer:9443"),
            Some("http://tls-proxy:3128")
        );
        assert_eq!(
            for_url(&p, "http://portainer:9000"),
            Some("http://plain-proxy:3128")
        );
        let none = Proxies::default();
        assert_eq!(for_url(&none, "https://portainer:9443"), None);
    }

    #[test]
    fn no_proxy_rules_follow_go() {
        let direct = |list: &str, url: &str| for_url(&proxies(list), url).is_none();
        assert!(direct("*", "https://anything"));
        assert!(direct("example.com", "https://example.com"));
        assert!(direct("example.com", "https://portainer.example.com"));
        assert!(!direct("example.com", "https://notexample.com"));
        assert!(direct(".example.com", "https://a.example.com"));
        assert!(!direct(".example.com", "https://example.com"));
        assert!(direct("*.example.com", "https://a.example.com"));
        assert!(direct("example.com:9443", "https://example.com:9443"));
        assert!(!direct("example.com:9000", "https://example.com:9443"));
        assert!(direct("10.0.0.0/8, other", "https://10.20.30.40:9443"));
        assert!(!direct("10.0.0.0/8", "https://11.0.0.1"));
        assert!(direct("192.168.1.5", "http://192.168.1.5:9000"));
        assert!(direct("::1", "https://[::1]:9443"));
        assert!(direct("0.0.0.0/0", "https://1.2.3.4"));
        assert!(!direct("", "https://x"));
    }
}
