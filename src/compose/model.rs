//! The normalised compose model: what [`super::load`] produces and the engine consumes. Every
//! short form is already expanded, names are resolved (`<project>_<key>` for networks and
//! volumes), paths are absolute, `env_file:` is merged into `environment`. It serialises (JSON)
//! for `compose config` and for the config hash ([`Service::config_hash`]).

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Project {
    pub name: String,
    pub working_dir: PathBuf,
    pub config_files: Vec<PathBuf>,
    /// The `--env-file` given instead of `.env`, for the `environment_file` label.
    #[serde(skip)]
    pub env_file: Option<PathBuf>,
    pub services: BTreeMap<String, Service>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, Network>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Volume>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, FileObject>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, FileObject>,
    /// Services left out because none of their profiles is active: their containers are not
    /// orphans.
    #[serde(skip)]
    pub disabled: Vec<String>,
    /// One line each: unset variables, ignored keys.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Nanoseconds as compose prints durations (`1m30s`).
fn go_duration<S: serde::Serializer>(ns: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::config::duration::display(Duration::from_nanos(*ns)))
}

fn seconds<S: serde::Serializer>(secs: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    go_duration(&secs.unwrap_or(0).saturating_mul(1_000_000_000), s)
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Service {
    pub image: String,
    /// `None`: the image's; `Some([])`: cleared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `None`: a bare key (`- KEY`, `KEY:`) whose variable is unset, sent as `KEY` without `=`.
    #[serde(skip_serializing_if = "is_default")]
    pub environment: BTreeMap<String, Option<String>>,
    #[serde(skip_serializing_if = "is_default")]
    pub ports: Vec<Port>,
    /// `80/tcp`.
    #[serde(skip_serializing_if = "is_default")]
    pub expose: Vec<String>,
    #[serde(skip_serializing_if = "is_default")]
    pub volumes: Vec<Mount>,
    /// Network key to settings; empty with a `network_mode`.
    #[serde(skip_serializing_if = "is_default")]
    pub networks: BTreeMap<String, ServiceNetwork>,
    #[serde(skip_serializing_if = "is_default")]
    pub network_mode: String,
    #[serde(skip_serializing_if = "is_default")]
    pub restart: String,
    #[serde(skip_serializing_if = "is_default")]
    pub container_name: String,
    #[serde(skip_serializing_if = "is_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "is_default")]
    pub depends_on: BTreeMap<String, Dependency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(skip_serializing_if = "is_default")]
    pub privileged: bool,
    #[serde(skip_serializing_if = "is_default")]
    pub devices: Vec<Device>,
    #[serde(skip_serializing_if = "is_default")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "is_default")]
    pub cap_drop: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    #[serde(skip_serializing_if = "is_default")]
    pub user: String,
    #[serde(skip_serializing_if = "is_default")]
    pub working_dir: String,
    /// `host:ip`.
    #[serde(skip_serializing_if = "is_default")]
    pub extra_hosts: Vec<String>,
    #[serde(skip_serializing_if = "is_default")]
    pub hostname: String,
    #[serde(skip_serializing_if = "is_default")]
    pub domainname: String,
    /// `/path[:options]`.
    #[serde(skip_serializing_if = "is_default")]
    pub tmpfs: Vec<String>,
    /// Whole seconds, as Docker takes it.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "seconds")]
    pub stop_grace_period: Option<u64>,
    #[serde(skip_serializing_if = "is_default")]
    pub stop_signal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(skip_serializing_if = "is_default")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "is_default")]
    pub stdin_open: bool,
    #[serde(skip_serializing_if = "is_default")]
    pub tty: bool,
    #[serde(skip_serializing_if = "is_default")]
    pub profiles: Vec<String>,
    /// `always`, `missing` (the default, also for `if_not_present`), `never`.
    pub pull_policy: String,
    /// Containers of the service (`scale`, `deploy.replicas`).
    pub scale: u32,
    /// Whether `deploy:` was given, and which of `resources` it set (for the config hash).
    #[serde(skip)]
    pub deploy: Option<Deploy>,
    #[serde(skip_serializing_if = "is_default")]
    pub resources: Resources,
    #[serde(skip_serializing_if = "is_default")]
    pub sysctls: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "is_default")]
    pub ulimits: BTreeMap<String, Ulimit>,
    #[serde(skip_serializing_if = "is_default")]
    pub dns: Vec<String>,
    #[serde(skip_serializing_if = "is_default")]
    pub dns_search: Vec<String>,
    #[serde(skip_serializing_if = "is_default")]
    pub dns_opt: Vec<String>,
    #[serde(skip_serializing_if = "is_default")]
    pub security_opt: Vec<String>,
    #[serde(skip_serializing_if = "is_default")]
    pub group_add: Vec<String>,
    #[serde(skip_serializing_if = "is_default")]
    pub ipc: String,
    #[serde(skip_serializing_if = "is_default")]
    pub pid: String,
    #[serde(skip_serializing_if = "is_default")]
    pub shm_size: i64,
    #[serde(skip_serializing_if = "is_default")]
    pub platform: String,
    #[serde(skip_serializing_if = "is_default")]
    pub mac_address: String,
    #[serde(skip_serializing_if = "is_default")]
    pub runtime: String,
    #[serde(skip_serializing_if = "is_default")]
    pub oom_score_adj: i64,
    #[serde(skip_serializing_if = "is_default")]
    pub userns_mode: String,
    #[serde(skip_serializing_if = "is_default")]
    pub storage_opt: BTreeMap<String, String>,
    /// `service[:alias]`.
    #[serde(skip_serializing_if = "is_default")]
    pub links: Vec<String>,
    /// `service:name[:ro|rw]` or `container:name[:ro|rw]`.
    #[serde(skip_serializing_if = "is_default")]
    pub volumes_from: Vec<String>,
    /// `container[:alias]`, linked after `links`.
    #[serde(skip_serializing_if = "is_default")]
    pub external_links: Vec<String>,
    /// Cgroup namespace: `host` or `private`.
    #[serde(skip_serializing_if = "is_default")]
    pub cgroup: String,
    #[serde(skip_serializing_if = "is_default")]
    pub uts: String,
    #[serde(skip_serializing_if = "is_default")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Port {
    pub target: u16,
    /// A port, a range `8000-8005`, or empty (Docker picks).
    #[serde(skip_serializing_if = "is_default")]
    pub published: String,
    #[serde(skip_serializing_if = "is_default")]
    pub host_ip: String,
    pub protocol: String,
    /// `host` or `ingress` from the long syntax; empty: `ingress`, as the short one says.
    #[serde(skip_serializing_if = "is_default")]
    pub mode: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    #[default]
    Volume,
    Bind,
    Tmpfs,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountType,
    /// Absolute host path (bind), Docker volume name (volume; empty: anonymous), nothing (tmpfs).
    #[serde(skip_serializing_if = "is_default")]
    pub source: String,
    pub target: String,
    #[serde(skip_serializing_if = "is_default")]
    pub read_only: bool,
    /// Bind: create a missing host folder (the short syntax does).
    #[serde(skip_serializing_if = "is_default")]
    pub create_host_path: bool,
    /// Bind: `z` or `Z`.
    #[serde(skip_serializing_if = "is_default")]
    pub selinux: String,
    #[serde(skip_serializing_if = "is_default")]
    pub propagation: String,
    #[serde(skip_serializing_if = "is_default")]
    pub nocopy: bool,
    #[serde(skip_serializing_if = "is_default")]
    pub subpath: String,
    #[serde(skip_serializing_if = "is_default")]
    pub tmpfs_size: i64,
    #[serde(skip_serializing_if = "is_default")]
    pub tmpfs_mode: u32,
    /// compose keeps a `bind`, `volume` or `tmpfs` object (for its config hash): the short
    /// syntax always makes one, the long syntax when it has the key.
    #[serde(skip)]
    pub options: bool,
    /// The `secrets:` or `configs:` entry this bind was made from.
    #[serde(skip)]
    pub file_ref: Option<FileRef>,
}

/// A service's `secrets:` or `configs:` entry, as written: compose hashes these references
/// (not the bind mounts made of them) and gives a secret's bind empty bind options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileRef {
    pub secret: bool,
    pub source: String,
    pub target: String,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ServiceNetwork {
    #[serde(skip_serializing_if = "is_default")]
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "is_default")]
    pub ipv4_address: String,
    #[serde(skip_serializing_if = "is_default")]
    pub ipv6_address: String,
    #[serde(skip_serializing_if = "is_default")]
    pub priority: i64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub enum Condition {
    #[default]
    #[serde(rename = "service_started")]
    Started,
    #[serde(rename = "service_healthy")]
    Healthy,
    #[serde(rename = "service_completed_successfully")]
    CompletedSuccessfully,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "service_started",
            Condition::Healthy => "service_healthy",
            Condition::CompletedSuccessfully => "service_completed_successfully",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Dependency {
    pub condition: Condition,
    pub required: bool,
    pub restart: bool,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Healthcheck {
    /// `["NONE"]` disables the image's; `["CMD", ...]` or `["CMD-SHELL", "..."]`; empty: the
    /// image's test with these timings.
    pub test: Vec<String>,
    /// Nanoseconds, as Docker takes them; 0: Docker's default.
    #[serde(skip_serializing_if = "is_default", serialize_with = "go_duration")]
    pub interval: u64,
    #[serde(skip_serializing_if = "is_default", serialize_with = "go_duration")]
    pub timeout: u64,
    #[serde(skip_serializing_if = "is_default", serialize_with = "go_duration")]
    pub start_period: u64,
    #[serde(skip_serializing_if = "is_default", serialize_with = "go_duration")]
    pub start_interval: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Device {
    pub source: String,
    pub target: String,
    pub permissions: String,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Logging {
    #[serde(skip_serializing_if = "is_default")]
    pub driver: String,
    #[serde(skip_serializing_if = "is_default")]
    pub options: BTreeMap<String, String>,
}

/// Which `deploy.resources` were given: compose hashes `limits` (cpus, memory, pids) and
/// `reservations` (memory, devices) there rather than as `cpus`, `mem_limit`, `pids_limit` and
/// `mem_reservation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deploy {
    pub limits: bool,
    pub reservations: bool,
    /// `deploy.mode` (a swarm setting compose ignores but hashes).
    pub mode: &'static str,
}

/// Limits from `mem_limit`, `cpus`... and `deploy.resources` (which wins).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Resources {
    #[serde(skip_serializing_if = "is_default")]
    pub memory: i64,
    #[serde(skip_serializing_if = "is_default")]
    pub memory_reservation: i64,
    #[serde(skip_serializing_if = "is_default")]
    pub memory_swap: i64,
    #[serde(skip_serializing_if = "is_default")]
    pub nano_cpus: i64,
    #[serde(skip_serializing_if = "is_default")]
    pub cpuset: String,
    #[serde(skip_serializing_if = "is_default")]
    pub cpu_shares: i64,
    #[serde(skip_serializing_if = "is_default")]
    pub pids_limit: i64,
    #[serde(skip_serializing_if = "is_default")]
    pub device_cgroup_rules: Vec<String>,
    #[serde(skip_serializing_if = "is_default")]
    pub device_requests: Vec<DeviceRequest>,
    /// `gpus:`, after `device_requests`; Docker gets `gpu` added to their capabilities.
    #[serde(skip_serializing_if = "is_default")]
    pub gpus: Vec<DeviceRequest>,
    #[serde(skip_serializing_if = "is_default")]
    pub cgroup_parent: String,
    /// 0: not set (compose sends none).
    #[serde(skip_serializing_if = "is_default")]
    pub mem_swappiness: i64,
    #[serde(skip_serializing_if = "is_default")]
    pub oom_kill_disable: bool,
    /// Microseconds.
    #[serde(skip_serializing_if = "is_default")]
    pub cpu_rt_runtime: i64,
    #[serde(skip_serializing_if = "is_default")]
    pub cpu_rt_period: i64,
    #[serde(skip_serializing_if = "is_default")]
    pub blkio_weight: i64,
    /// Docker's field (`BlkioWeightDevice`, `BlkioDeviceReadBps`, ...) to (path, weight or rate).
    #[serde(skip_serializing_if = "is_default")]
    pub blkio_devices: BTreeMap<String, Vec<(String, i64)>>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DeviceRequest {
    #[serde(skip_serializing_if = "is_default")]
    pub driver: String,
    /// -1: all.
    #[serde(skip_serializing_if = "is_default")]
    pub count: i64,
    #[serde(skip_serializing_if = "is_default")]
    pub device_ids: Vec<String>,
    pub capabilities: Vec<String>,
    #[serde(skip_serializing_if = "is_default")]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Network {
    /// The Docker network's name.
    pub name: String,
    #[serde(skip_serializing_if = "is_default")]
    pub external: bool,
    #[serde(skip_serializing_if = "is_default")]
    pub driver: String,
    #[serde(skip_serializing_if = "is_default")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "is_default")]
    pub internal: bool,
    #[serde(skip_serializing_if = "is_default")]
    pub attachable: bool,
    #[serde(skip_serializing_if = "is_default")]
    pub enable_ipv6: bool,
    #[serde(skip_serializing_if = "is_default")]
    pub ipam_driver: String,
    #[serde(skip_serializing_if = "is_default")]
    pub ipam: Vec<IpamPool>,
    #[serde(skip_serializing_if = "is_default")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct IpamPool {
    #[serde(skip_serializing_if = "is_default")]
    pub subnet: String,
    #[serde(skip_serializing_if = "is_default")]
    pub ip_range: String,
    #[serde(skip_serializing_if = "is_default")]
    pub gateway: String,
    #[serde(skip_serializing_if = "is_default")]
    pub aux_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Volume {
    /// The Docker volume's name.
    pub name: String,
    #[serde(skip_serializing_if = "is_default")]
    pub external: bool,
    #[serde(skip_serializing_if = "is_default")]
    pub driver: String,
    #[serde(skip_serializing_if = "is_default")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "is_default")]
    pub labels: BTreeMap<String, String>,
}

/// A top-level secret or config with a `file:` source: bound read-only into the containers
/// that use it, as compose does without swarm.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FileObject {
    pub file: PathBuf,
}

impl Service {
    /// Network keys, highest `priority` first, then by name (compose's `NetworksByPriority`).
    pub fn networks_by_priority(&self) -> Vec<&str> {
        let mut keys: Vec<(&str, i64)> = self
            .networks
            .iter()
            .map(|(k, n)| (k.as_str(), n.priority))
            .collect();
        keys.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        keys.into_iter().map(|(k, _)| k).collect()
    }
}
