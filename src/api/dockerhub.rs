//! `POST /dockerhub` (the UI's Docker Hub rate-limit banner), as the Go agent's
//! `http/handler/dockerhub/dockerhub_status.go`: a pull token for `ratelimitpreview/test`
//! from `auth.docker.io` (with the registry's credentials when Portainer sends them), then a
//! `HEAD` of that image's manifest, whose `RateLimit-Limit` and `RateLimit-Remaining` headers
//! are the answer: `{"remaining":n,"limit":m}`, or `null` without them. A device that cannot
//! reach Docker Hub answers `null` within 3 s (the banner then stays hidden); only
//! one check runs at a time, a second request meanwhile gets `null` at once.

use super::conn::{Body, Conn};
use super::{blocking_within, method_not_allowed, reply, respond, Next};
use crate::config::Proxies;
use crate::http1;
use serde::Deserialize;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN_URL: &str = "https://auth.docker.io/token?service=registry.docker.io&scope=repository:ratelimitpreview/test:pull";
const RATE_LIMITS_URL: &str =
    "https://registry-1.docker.io/v2/ratelimitpreview/test/manifests/latest";
/// The whole check, both requests (the Go agent gives each 3 s); the answer goes out by
/// [`ANSWER_BY`] whatever happens, so Portainer has it within 3 s.
const DEADLINE: Duration = Duration::from_millis(2700);
const ANSWER_BY: Duration = Duration::from_millis(2900);
/// Portainer's registry JSON is well under this; so is a token answer.
const MAX_BODY: usize = 64 * 1024;

pub struct DockerHub {
    agent: ureq::Agent,
    busy: Arc<AtomicBool>,
}

/// The fields of Portainer's registry the check reads (Go decodes names case-insensitively).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Payload {
    #[serde(alias = "Authentication")]
    authentication: bool,
    #[serde(alias = "Username")]
    username: String,
    #[serde(alias = "Password")]
    password: String,
}

/// How a check ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// `{"remaining","limit"}`, or `null`.
    Limits(Option<(i64, i64)>),
    /// Docker Hub answered, refusing: Go's error answer.
    Refused(&'static str, String),
    /// No answer in time: `null`.
    Unreachable(String),
}

impl DockerHub {
    pub fn new(proxies: &Proxies) -> DockerHub {
        let proxy = crate::portainer::proxy::for_url(proxies, TOKEN_URL)
            // Validated when the configuration was read.
            .and_then(|url| ureq::Proxy::new(url).ok());
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .provider(ureq::tls::TlsProvider::Rustls)
                    .build(),
            )
            .proxy(proxy)
            .timeout_global(Some(DEADLINE))
            .max_redirects(0)
            .max_idle_connections(0)
            .max_response_header_size(16 * 1024)
            .input_buffer_size(16 * 1024)
            .output_buffer_size(4 * 1024)
            .build();
        DockerHub {
            agent: ureq::Agent::new_with_config(config),
            busy: Arc::new(AtomicBool::new(false)),
        }
    }
}

pub async fn serve(
    hub: &DockerHub,
    conn: &mut Conn,
    head: &http1::RequestHead,
) -> io::Result<Next> {
    let framing = match head.body() {
        Ok(framing) => framing,
        Err(e) => {
            return reply(
                conn,
                400,
                "Invalid request payload",
                &e.to_string(),
                Next::Close,
            )
            .await
        }
    };
    if head.method != "POST" {
        let after = if framing == http1::Framing::None {
            Next::KeepAlive
        } else {
            Next::Close
        };
        return method_not_allowed(conn, after).await;
    }
    let payload = match Body::new(framing).read_all(conn, MAX_BODY).await {
        Ok(body) => serde_json::from_slice::<Payload>(&body).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let payload = match payload {
        Ok(p) if p.authentication && (p.username.is_empty() || p.password.is_empty()) => {
            Err("Missing username or password".to_owned())
        }
        other => other,
    };
    let payload = match payload {
        Ok(payload) => payload,
        Err(details) => {
            return reply(conn, 400, "Invalid request payload", &details, Next::Close).await
        }
    };
    let outcome = if hub.busy.swap(true, Ordering::AcqRel) {
        Outcome::Unreachable("another Docker Hub check is still running".into())
    } else {
        let agent = hub.agent.clone();
        let busy = hub.busy.clone();
        let check = blocking_within(ANSWER_BY, move || {
            let outcome = check(&agent, &payload, Instant::now() + DEADLINE);
            busy.store(false, Ordering::Release);
            outcome
        });
        check
            .await
            .unwrap_or_else(|e| Outcome::Unreachable(e.to_string()))
    };
    match outcome {
        Outcome::Limits(Some((remaining, limit))) => {
            let body = format!(r#"{{"remaining":{remaining},"limit":{limit}}}"#);
            respond(conn, 200, &body, Next::KeepAlive).await
        }
        Outcome::Limits(None) => respond(conn, 200, "null", Next::KeepAlive).await,
        Outcome::Unreachable(why) => {
            log::debug!("Docker Hub rate limits: {why}");
            respond(conn, 200, "null", Next::KeepAlive).await
        }
        Outcome::Refused(message, details) => {
            reply(conn, 500, message, &details, Next::KeepAlive).await
        }
    }
}

/// The two requests, within `deadline`.
fn check(agent: &ureq::Agent, payload: &Payload, deadline: Instant) -> Outcome {
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut request = agent
        .get(TOKEN_URL)
        .config()
        .timeout_global(Some(left()))
        .build();
    if payload.authentication {
        use base64::Engine;
        let pair = format!("{}:{}", payload.username, payload.password);
        let basic = base64::engine::general_purpose::STANDARD.encode(pair);
        request = request.header("Authorization", format!("Basic {basic}"));
    }
    let mut response = match request.call() {
        Ok(r) => r,
        Err(e) => return Outcome::Unreachable(format!("{TOKEN_URL}: {e}")),
    };
    const NO_TOKEN: &str = "Unable to retrieve DockerHub token from DockerHub";
    if response.status().as_u16() != 200 {
        return Outcome::Refused(NO_TOKEN, "failed fetching dockerhub token".into());
    }
    #[derive(Deserialize)]
    struct Token {
        #[serde(default)]
        token: String,
    }
    let token = match response
        .body_mut()
        .with_config()
        .limit(MAX_BODY as u64)
        .read_to_vec()
    {
        Ok(body) => match serde_json::from_slice::<Token>(&body) {
            Ok(t) => t.token,
            Err(e) => return Outcome::Refused(NO_TOKEN, e.to_string()),
        },
        Err(e) => return Outcome::Unreachable(format!("{TOKEN_URL}: {e}")),
    };
    let response = match agent
        .head(RATE_LIMITS_URL)
        .config()
        .timeout_global(Some(left()))
        .build()
        .header("Authorization", format!("Bearer {token}"))
        .call()
    {
        Ok(r) => r,
        Err(e) => return Outcome::Unreachable(format!("{RATE_LIMITS_URL}: {e}")),
    };
    if response.status().as_u16() != 200 {
        return Outcome::Refused(
            "Unable to retrieve DockerHub rate limits from DockerHub",
            "failed fetching dockerhub limits".into(),
        );
    }
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
    Outcome::Limits(limits(
        header("RateLimit-Limit"),
        header("RateLimit-Remaining"),
    ))
}

/// `100;w=21600` → 100, for both headers; `None` (Pro accounts have none) when either is
/// missing or not a number.
fn limits(limit: Option<&str>, remaining: Option<&str>) -> Option<(i64, i64)> {
    let number = |v: Option<&str>| v?.split(';').next()?.trim().parse::<i64>().ok();
    Some((number(remaining)?, number(limit)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_proxy_is_given_up_at_the_deadline() {
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", proxy.local_addr().unwrap());
        let hub = DockerHub::new(&Proxies {
            https: Some(url),
            ..Proxies::default()
        });
        let started = Instant::now();
        let outcome = check(
            &hub.agent,
            &Payload::default(),
            started + Duration::from_millis(500),
        );
        let took = started.elapsed();
        assert!(matches!(outcome, Outcome::Unreachable(_)), "{outcome:?}");
        assert!(took < Duration::from_millis(900), "took {took:?}");
        drop(proxy);
    }

    #[test]
    fn rate_limit_headers() {
        assert_eq!(
            limits(Some("100;w=21600"), Some("76;w=21600")),
            Some((76, 100))
        );
        assert_eq!(limits(Some("200"), None), None);
        assert_eq!(limits(Some("x"), Some("1")), None);
    }

    #[test]
    fn portainer_registry_payloads() {
        let p: Payload = serde_json::from_str(
            r#"{"Id":1,"Type":6,"Authentication":true,"Username":"u","Password":"p","URL":"docker.io"}"#,
        )
        .unwrap();
        assert!(p.authentication && p.username == "u" && p.password == "p");
        let p: Payload = serde_json::from_str("{}").unwrap();
        assert!(!p.authentication);
    }
}
