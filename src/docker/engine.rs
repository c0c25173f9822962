//! Which engine answers on the socket: Docker, or Podman's Docker-compatible API. Portainer
//! tells them apart the same way (portainer/portainer, api/docker/snapshot.go, `isPodman`: a
//! `/version` component whose name contains "podman"; Podman calls it "Podman Engine",
//! containers/podman, pkg/api/handlers/compat/version.go, `VersionHandler`).

use super::{ApiVersion, Client, Error, Limits, Version};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
}

impl Engine {
    pub fn of(version: &Version) -> Engine {
        let podman = version
            .components
            .iter()
            .any(|c| c.name.to_ascii_lowercase().contains("podman"));
        if podman {
            Engine::Podman
        } else {
            Engine::Docker
        }
    }

    /// Asks the engine on `socket`, waiting at most `timeout` for each of its two answers.
    pub fn detect(socket: &Path, timeout: Duration) -> Result<Engine, Error> {
        let limits = Limits {
            timeout,
            ..Limits::default()
        };
        Ok(Engine::of(&Client::connect(socket, limits)?.version()?))
    }

    /// The value of the poll's `Portainer-Agent-Container-Engine` header.
    pub fn header_value(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        }
    }

    /// `Docker Engine 29.1.2 (API 1.52, using 1.47)`, or `Podman 4.3.1 (Docker API 1.41, using
    /// 1.41)`: what answers, and the API version this client speaks to it.
    pub fn describe(version: &Version, using: ApiVersion) -> String {
        match Engine::of(version) {
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

    /// Debian 12's `podman system service` 4.3.1, trimmed.
    const PODMAN: &str = r#"{"Platform":{"Name":"linux/amd64/debian-12"},"Components":[{"Name":"Podman Engine","Version":"4.3.1","Details":{"APIVersion":"4.3.1","MinAPIVersion":"4.0.0"}},{"Name":"Conmon","Version":"conmon version 2.1.6"},{"Name":"OCI Runtime (runc)","Version":"runc version 1.1.5"}],"Version":"4.3.1","ApiVersion":"1.41","MinAPIVersion":"1.24"}"#;
    /// Docker 29, trimmed.
    const DOCKER: &str = r#"{"Platform":{"Name":"Docker Engine - Community"},"Components":[{"Name":"Engine","Version":"29.1.2","Details":{"ApiVersion":"1.52","MinAPIVersion":"1.44"}},{"Name":"containerd","Version":"v2.2.0"}],"Version":"29.1.2","ApiVersion":"1.52","MinAPIVersion":"1.44"}"#;

    fn version(json: &str) -> Version {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn podman_is_told_from_its_components() {
        let podman = version(PODMAN);
        assert_eq!(Engine::of(&podman), Engine::Podman);
        assert_eq!(Engine::of(&podman).header_value(), "podman");
        let using = ApiVersion::parse("1.41").unwrap();
        assert_eq!(
            Engine::describe(&podman, using),
            "Podman 4.3.1 (Docker API 1.41, using 1.41)"
        );
    }

    #[test]
    fn docker_and_engines_without_components_are_docker() {
        let docker = version(DOCKER);
        assert_eq!(Engine::of(&docker).header_value(), "docker");
        let using = ApiVersion::parse("1.47").unwrap();
        assert_eq!(
            Engine::describe(&docker, using),
            "Docker Engine 29.1.2 (API 1.52, using 1.47)"
        );
        assert_eq!(Engine::of(&version("{}")), Engine::Docker);
    }
}
