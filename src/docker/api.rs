//! The calls the agent makes, each with the statuses that mean success, and the fields of
//! Docker's answers it reads (everything else is ignored). Docker's names are PascalCase.

use super::logs::Logs;
use super::stream::JsonLines;
use super::{Client, Error, Limits};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// `GET /version`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Version {
    pub version: String,
    pub api_version: String,
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: String,
    pub os: String,
    pub arch: String,
    pub kernel_version: String,
}

/// `GET /info`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Info {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub server_version: String,
    pub containers: u64,
    pub containers_running: u64,
    pub images: u64,
    #[serde(rename = "NCPU")]
    pub ncpu: u64,
    pub mem_total: u64,
    pub operating_system: String,
    pub architecture: String,
}

/// An item of `GET /containers/json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ContainerSummary {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub names: Vec<String>,
    pub image: String,
    pub state: String,
    pub status: String,
    #[serde(deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
}

/// `GET /containers/{id}/json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ContainerInspect {
    pub id: String,
    pub name: String,
    pub image: String,
    pub state: ContainerState,
    pub config: ContainerConfig,
    #[serde(deserialize_with = "nullable")]
    pub mounts: Vec<MountPoint>,
}

/// An item of a container's `Mounts`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct MountPoint {
    /// `volume`, `bind`, `tmpfs`...
    #[serde(rename = "Type")]
    pub kind: String,
    /// The volume's name, for a volume.
    pub name: String,
    pub destination: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ContainerState {
    pub status: String,
    pub running: bool,
    pub exit_code: i64,
    /// Only for a container with a healthcheck.
    pub health: Option<Health>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ContainerConfig {
    pub image: String,
    pub tty: bool,
    #[serde(deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    pub healthcheck: Option<HealthConfig>,
}

/// A container's healthcheck timings: nanoseconds, 0 for Docker's default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct HealthConfig {
    pub interval: i64,
    pub timeout: i64,
    pub start_period: i64,
    pub retries: i64,
}

/// `POST /containers/create`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Created {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub warnings: Vec<String>,
}

/// An item of `GET /images/json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ImageSummary {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub repo_tags: Vec<String>,
    pub created: i64,
    pub size: i64,
}

/// `GET /images/{name}/json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ImageInspect {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub repo_tags: Vec<String>,
    pub size: i64,
    pub os: String,
    pub architecture: String,
}

/// An item of `GET /volumes`, or `GET /volumes/{name}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Volume {
    pub name: String,
    pub driver: String,
    pub mountpoint: String,
    #[serde(deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
}

/// An item of `GET /networks`, or `GET /networks/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub scope: String,
    #[serde(deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
}

/// An item of `GET /events`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Event {
    /// `container`, `image`, `volume`, `network`...
    #[serde(rename = "Type")]
    pub kind: String,
    /// `create`, `start`, `die`, `destroy`...
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: EventActor,
    /// Unix seconds.
    pub time: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct EventActor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub attributes: BTreeMap<String, String>,
}

/// An item of a pull's progress stream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Progress {
    pub status: String,
    /// The layer, when the line is about one.
    pub id: String,
    /// Docker's progress bar text.
    pub progress: String,
    error_detail: Option<ErrorDetail>,
    error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct ErrorDetail {
    message: String,
}

/// Registry credentials for a pull, sent as `X-Registry-Auth` (base64url of this JSON). Its
/// `Debug` shows the user and the server only.
#[derive(Clone, Default, Serialize)]
pub struct RegistryAuth {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(rename = "serveraddress", skip_serializing_if = "Option::is_none")]
    pub server_address: Option<String>,
    #[serde(rename = "identitytoken", skip_serializing_if = "Option::is_none")]
    pub identity_token: Option<String>,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<hidden>");
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &hidden(&self.password))
            .field("server_address", &self.server_address)
            .field("identity_token", &hidden(&self.identity_token))
            .finish()
    }
}

/// What `GET /containers/{id}/logs` returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogsOptions {
    pub stdout: bool,
    pub stderr: bool,
    /// Keep the stream open and send new output as it comes.
    pub follow: bool,
    /// Only the last lines.
    pub tail: Option<u64>,
    /// Only output since this Unix time.
    pub since: Option<i64>,
    pub timestamps: bool,
}

/// The longest line accepted in an event or pull progress stream.
const MAX_LINE: usize = 64 * 1024;

impl Client {
    /// `GET /_ping`.
    pub fn ping(&self) -> Result<(), Error> {
        self.call("GET", "/_ping", None, &[200]).map(drop)
    }

    pub fn version(&self) -> Result<Version, Error> {
        self.call("GET", "/version", None, &[200])?.json()
    }

    pub fn info(&self) -> Result<Info, Error> {
        self.call("GET", "/info", None, &[200])?.json()
    }

    /// `GET /containers/json`; `filters` as `(name, value)` pairs, e.g. `("label", "a=b")`.
    pub fn containers(
        &self,
        all: bool,
        filters: &[(&str, &str)],
    ) -> Result<Vec<ContainerSummary>, Error> {
        let path = format!(
            "/containers/json{}",
            query(&[
                ("all", all.then_some("1")),
                ("filters", encode_filters(filters).as_deref())
            ])
        );
        self.call("GET", &path, None, &[200])?.json()
    }

    pub fn inspect_container(&self, id: &str) -> Result<ContainerInspect, Error> {
        let path = format!("/containers/{}/json", encode(id));
        self.call("GET", &path, None, &[200])?.json()
    }

    /// `POST /containers/create` with Docker's container configuration as JSON.
    pub fn create_container(
        &self,
        name: Option<&str>,
        config: &serde_json::Value,
    ) -> Result<Created, Error> {
        let path = format!("/containers/create{}", query(&[("name", name)]));
        self.call("POST", &path, Some(config), &[201])?.json()
    }

    /// Starting a running container is not an error (304).
    pub fn start_container(&self, id: &str) -> Result<(), Error> {
        let path = format!("/containers/{}/start", encode(id));
        self.call("POST", &path, None, &[204, 304]).map(drop)
    }

    /// Stops with SIGTERM, then SIGKILL after `wait` (the container's own setting if `None`).
    /// Stopping a stopped container is not an error (304).
    pub fn stop_container(&self, id: &str, wait: Option<u32>) -> Result<(), Error> {
        self.stop_or_restart(id, "stop", wait)
    }

    pub fn restart_container(&self, id: &str, wait: Option<u32>) -> Result<(), Error> {
        self.stop_or_restart(id, "restart", wait)
    }

    fn stop_or_restart(&self, id: &str, action: &str, wait: Option<u32>) -> Result<(), Error> {
        let t = wait.map(|t| t.to_string());
        let path = format!(
            "/containers/{}/{action}{}",
            encode(id),
            query(&[("t", t.as_deref())])
        );
        // Docker answers once the container stopped: allow for the wait (10 s by default).
        let limits = Limits {
            timeout: self.limits.timeout + Duration::from_secs(wait.unwrap_or(10).into()),
            ..self.limits
        };
        self.with_limits(limits)
            .call("POST", &path, None, &[204, 304])
            .map(drop)
    }

    pub fn remove_container(&self, id: &str, force: bool, volumes: bool) -> Result<(), Error> {
        let path = format!(
            "/containers/{}{}",
            encode(id),
            query(&[
                ("force", force.then_some("1")),
                ("v", volumes.then_some("1"))
            ])
        );
        self.call("DELETE", &path, None, &[204]).map(drop)
    }

    /// `GET /containers/{id}/logs`, streaming. The container is inspected first: only a
    /// container without a TTY has its stdout and stderr multiplexed.
    pub fn logs(&self, id: &str, options: &LogsOptions) -> Result<Logs, Error> {
        let tty = self.inspect_container(id)?.config.tty;
        let flag = |on: bool| on.then_some("1");
        let tail = options.tail.map(|n| n.to_string());
        let since = options.since.map(|t| t.to_string());
        let path = format!(
            "/containers/{}/logs{}",
            encode(id),
            query(&[
                ("stdout", flag(options.stdout)),
                ("stderr", flag(options.stderr)),
                ("follow", flag(options.follow)),
                ("timestamps", flag(options.timestamps)),
                ("tail", tail.as_deref()),
                ("since", since.as_deref()),
            ])
        );
        Ok(Logs::new(self.stream("GET", &path, &[])?, tty))
    }

    /// `GET /images/json`.
    pub fn images(&self) -> Result<Vec<ImageSummary>, Error> {
        self.call("GET", "/images/json", None, &[200])?.json()
    }

    pub fn inspect_image(&self, name: &str) -> Result<ImageInspect, Error> {
        let path = format!("/images/{}/json", encode(name));
        self.call("GET", &path, None, &[200])?.json()
    }

    pub fn remove_image(&self, name: &str, force: bool) -> Result<(), Error> {
        let path = format!(
            "/images/{}{}",
            encode(name),
            query(&[("force", force.then_some("1"))])
        );
        self.call("DELETE", &path, None, &[200]).map(drop)
    }

    /// `POST /images/create?fromImage=&tag=`: the pull's progress, one item per line; a
    /// failure Docker reports in the stream is an [`Error::Failed`] item.
    pub fn pull(
        &self,
        image: &str,
        tag: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<impl Iterator<Item = Result<Progress, Error>>, Error> {
        use base64::Engine;
        let path = format!(
            "/images/create{}",
            query(&[("fromImage", Some(image)), ("tag", Some(tag))])
        );
        let auth = auth.map(|a| {
            base64::engine::general_purpose::URL_SAFE.encode(serde_json::json!(a).to_string())
        });
        let headers: Vec<(&str, &str)> = auth
            .iter()
            .map(|a| ("X-Registry-Auth", a.as_str()))
            .collect();
        let lines = JsonLines::<Progress>::new(self.stream("POST", &path, &headers)?, MAX_LINE);
        let call = lines.call().to_owned();
        Ok(lines.map(move |item| {
            let progress = item?;
            match (&progress.error_detail, &progress.error) {
                (Some(detail), _) => Err(Error::Failed {
                    call: call.clone(),
                    message: detail.message.clone(),
                }),
                (None, Some(message)) => Err(Error::Failed {
                    call: call.clone(),
                    message: message.clone(),
                }),
                (None, None) => Ok(progress),
            }
        }))
    }

    /// `GET /volumes`; `filters` as for [`Client::containers`].
    pub fn volumes(&self, filters: &[(&str, &str)]) -> Result<Vec<Volume>, Error> {
        #[derive(Deserialize)]
        struct List {
            #[serde(rename = "Volumes", default, deserialize_with = "nullable")]
            volumes: Vec<Volume>,
        }
        let path = format!(
            "/volumes{}",
            query(&[("filters", encode_filters(filters).as_deref())])
        );
        let list: List = self.call("GET", &path, None, &[200])?.json()?;
        Ok(list.volumes)
    }

    /// `GET /volumes/{name}`: where the volume's files are (`Mountpoint`).
    pub fn inspect_volume(&self, name: &str) -> Result<Volume, Error> {
        let path = format!("/volumes/{}", encode(name));
        self.call("GET", &path, None, &[200])?.json()
    }

    /// `POST /volumes/create` with Docker's volume configuration as JSON.
    pub fn create_volume(&self, config: &serde_json::Value) -> Result<Volume, Error> {
        self.call("POST", "/volumes/create", Some(config), &[201])?
            .json()
    }

    pub fn remove_volume(&self, name: &str) -> Result<(), Error> {
        let path = format!("/volumes/{}", encode(name));
        self.call("DELETE", &path, None, &[204]).map(drop)
    }

    /// `GET /networks`; `filters` as for [`Client::containers`].
    pub fn networks(&self, filters: &[(&str, &str)]) -> Result<Vec<Network>, Error> {
        let path = format!(
            "/networks{}",
            query(&[("filters", encode_filters(filters).as_deref())])
        );
        self.call("GET", &path, None, &[200])?.json()
    }

    /// `GET /networks/{id or name}`.
    pub fn inspect_network(&self, name: &str) -> Result<Network, Error> {
        let path = format!("/networks/{}", encode(name));
        self.call("GET", &path, None, &[200])?.json()
    }

    /// `POST /networks/create` with Docker's network configuration as JSON; the new id.
    pub fn create_network(&self, config: &serde_json::Value) -> Result<String, Error> {
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "Id")]
            id: String,
        }
        let created: Created = self
            .call("POST", "/networks/create", Some(config), &[201])?
            .json()?;
        Ok(created.id)
    }

    pub fn remove_network(&self, name: &str) -> Result<(), Error> {
        let path = format!("/networks/{}", encode(name));
        self.call("DELETE", &path, None, &[204]).map(drop)
    }

    /// `POST /networks/{name}/connect` with `{"Container": ..., "EndpointConfig": ...}`.
    pub fn connect_network(&self, name: &str, config: &serde_json::Value) -> Result<(), Error> {
        let path = format!("/networks/{}/connect", encode(name));
        self.call("POST", &path, Some(config), &[200]).map(drop)
    }

    /// `GET /events`, streaming: events from `since` (Unix time; now if `None`) on, matching
    /// `filters` as `(name, value)` pairs, e.g. `("type", "container")`.
    pub fn events(
        &self,
        since: Option<i64>,
        filters: &[(&str, &str)],
    ) -> Result<JsonLines<Event>, Error> {
        let since = since.map(|t| t.to_string());
        let path = format!(
            "/events{}",
            query(&[
                ("since", since.as_deref()),
                ("filters", encode_filters(filters).as_deref())
            ])
        );
        Ok(JsonLines::new(self.stream("GET", &path, &[])?, MAX_LINE))
    }
}

/// Docker's `filters` parameter: `{"name": ["value", ...]}`, or nothing when there are none.
fn encode_filters(filters: &[(&str, &str)]) -> Option<String> {
    let mut map: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, value) in filters {
        map.entry(name).or_default().push(value);
    }
    (!map.is_empty()).then(|| serde_json::json!(map).to_string())
}

/// `?a=1&b=2` of the pairs that have a value, percent-encoded; empty if none has.
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        if let Some(value) = value {
            out.push(if out.is_empty() { '?' } else { '&' });
            out.push_str(name);
            out.push('=');
            out.push_str(&encode(value));
        }
    }
    out
}

/// Percent-encodes all but RFC 3986's unreserved characters, for a path segment or a value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Docker writes `null` for some empty lists and maps.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_filters_are_encoded() {
        assert_eq!(query(&[("all", None)]), "");
        assert_eq!(
            query(&[("all", Some("1")), ("name", Some("a b/c&d"))]),
            "?all=1&name=a%20b%2Fc%26d"
        );
        assert_eq!(encode_filters(&[]), None);
        assert_eq!(
            encode_filters(&[("label", "a=b"), ("type", "container"), ("label", "c")]).unwrap(),
            r#"{"label":["a=b","c"],"type":["container"]}"#
        );
        assert_eq!(encode("sha256:ab"), "sha256%3Aab");
    }

    #[test]
    fn answers_with_nulls_and_unknown_fields_parse() {
        let c: ContainerSummary = serde_json::from_str(
            r#"{"Id":"x","Names":null,"Labels":null,"Ports":[],"State":"running"}"#,
        )
        .unwrap();
        assert_eq!((c.id.as_str(), c.state.as_str()), ("x", "running"));
        assert!(c.names.is_empty() && c.labels.is_empty());
        let e: Event = serde_json::from_str(
            r#"{"status":"start","Type":"container","Action":"start","Actor":{"ID":"abc","Attributes":{"name":"n"}},"time":5,"timeNano":5000000000}"#,
        )
        .unwrap();
        assert_eq!(
            (e.kind.as_str(), e.action.as_str(), e.time),
            ("container", "start", 5)
        );
        assert_eq!(e.actor.attributes["name"], "n");
    }

    #[test]
    fn registry_auth_is_docker_json() {
        let auth = RegistryAuth {
            username: Some("u".into()),
            password: Some("p".into()),
            server_address: Some("registry.lan:5000".into()),
            identity_token: None,
        };
        assert_eq!(
            serde_json::json!(auth).to_string(),
            r#"{"password":"p","serveraddress":"registry.lan:5000","username":"u"}"#
        );
    }
}
