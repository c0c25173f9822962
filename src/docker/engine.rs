//! Which engine answers on the socket: Docker, or Podman's Docker-compatible API. Podman marks
//! every answer with a `Libpod-API-Version` header, its ping included, for clients to tell the
//! engines apart (containers/podman, pkg/api/handlers/compat/ping.go, `Ping`, and
//! pkg/api/server/handler_api.go). Portainer decides on `/version` instead (portainer/portainer,
//! api/docker/snapshot.go, `isPodman`: a component named like "Podman Engine"); both say Podman
//! for Podman, and the ping is fast where Podman's `/version` takes seconds.

use super::{ApiVersion, Client, Error, Limits, Version};
use crate::http1::ResponseHead;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
}

impl Engine {
    /// From the head of the engine's `GET /_ping` answer.
    pub fn of_ping(head: &ResponseHead) -> Engine {
        if head.header("Libpod-API-Version").is_some() {
            Engine::Podman
        } else {
            Engine::Docker
        }
    }

    /// Pings the engine on `socket`, waiting at most `timeout`.
    pub fn detect(socket: &Path, timeout: Duration) -> Result<Engine, Error> {
        let limits = Limits {
            timeout,
            ..Limits::default()
        };
        Ok(Client::connect(socket, limits)?.engine())
    }

    /// The value of the poll's `Portainer-Agent-Container-Engine` header.
    pub fn header_value(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        }
    }

    /// `Docker Engine 29.1.2 (API 1.52, using 1.47)`, or `Podman 4.3.1 (Docker API 1.41, using
    /// 1.41)`: what answers, its `/version`, and the API version this client speaks to it.
    pub fn describe(self, version: &Version, using: ApiVersion) -> String {
        match self {
            Engine::Docker => format!(
                "Docker Engine {} (API {}, using {using})",
                version.version, version.api_version
            ),
            Engine::Podman => format!(
                "Podman {} (Docker API {}, using {using})",
                version.version, version.api_version
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1;

    fn ping(head: &str) -> ResponseHead {
        http1::parse_response_head(head.as_bytes(), 4096)
            .unwrap()
            .unwrap()
    }

    /// Debian 12's `podman system service` 4.3.1.
    const PODMAN_PING: &str = "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nBuilder-Version: \r\nLibpod-Api-Version: 4.3.1\r\nLibpod-Buildah-Version: 1.28.2\r\nServer: Libpod/4.3.1 (linux)\r\nContent-Length: 2\r\n\r\n";
    /// Docker 29.
    const DOCKER_PING: &str = "HTTP/1.1 200 OK\r\nApi-Version: 1.52\r\nBuilder-Version: 2\r\nDocker-Experimental: false\r\nOstype: linux\r\nServer: Docker/29.1.2 (linux)\r\nContent-Length: 2\r\n\r\n";

    fn version(json: &str) -> Version {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn podman_is_told_from_its_ping() {
        let podman = Engine::of_ping(&ping(PODMAN_PING));
        assert_eq!(podman, Engine::Podman);
        assert_eq!(podman.header_value(), "podman");
        let version = version(r#"{"Version":"4.3.1","ApiVersion":"1.41","MinAPIVersion":"1.24"}"#);
        assert_eq!(
            podman.describe(&version, ApiVersion::parse("1.41").unwrap()),
            "Podman 4.3.1 (Docker API 1.41, using 1.41)"
        );
    }

    #[test]
    fn docker_is_every_other_engine() {
        let docker = Engine::of_ping(&ping(DOCKER_PING));
        assert_eq!(docker, Engine::Docker);
        assert_eq!(docker.header_value(), "docker");
        let version = version(r#"{"Version":"29.1.2","ApiVersion":"1.52","MinAPIVersion":"1.44"}"#);
        assert_eq!(
            docker.describe(&version, ApiVersion::parse("1.47").unwrap()),
            "Docker Engine 29.1.2 (API 1.52, using 1.47)"
        );
    }
}
