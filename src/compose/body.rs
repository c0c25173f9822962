//! The Engine API bodies compose v2.40.3 sends for a project, and its labels (pure): container
//! create (`pkg/compose/create.go` `getCreateConfigs`, `prepareLabels`,
//! `defaultNetworkSettings`, `buildContainerVolumes`), network and volume create. Empty settings
//! are left out, which Docker reads as the zero values compose sends, except the empty lists and
//! maps Docker keeps as sent (`ExtraHosts: []`, `PortBindings: {}`, endpoint `IPAMConfig: {}`,
//! mount options `{}`): those are sent as v2 sends them, so that inspect shows the same.

use super::model::{MountType, Project, Service, ServiceNetwork};
use crate::docker::ApiVersion;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The compose version we write in `com.docker.compose.version`.
pub const COMPOSE_VERSION: &str = "2.40.3";

pub const PROJECT: &str = "com.docker.compose.project";
pub const SERVICE: &str = "com.docker.compose.service";
pub const VERSION: &str = "com.docker.compose.version";
pub const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
pub const CONFIG_FILES: &str = "com.docker.compose.project.config_files";
pub const ENVIRONMENT_FILE: &str = "com.docker.compose.project.environment_file";
pub const ONEOFF: &str = "com.docker.compose.oneoff";
pub const CONFIG_HASH: &str = "com.docker.compose.config-hash";
pub const NUMBER: &str = "com.docker.compose.container-number";
pub const DEPENDS_ON: &str = "com.docker.compose.depends_on";
pub const IMAGE: &str = "com.docker.compose.image";
pub const NETWORK: &str = "com.docker.compose.network";
pub const VOLUME: &str = "com.docker.compose.volume";

/// The first API version whose container create takes several networks (and endpoint MACs).
const MULTI_NETWORK_API: ApiVersion = ApiVersion {
    major: 1,
    minor: 44,
};

/// `container_name`, else `<project>-<service>-<n>`.
pub fn container_name(project: &str, key: &str, service: &Service, number: u32) -> String {
    if service.container_name.is_empty() {
        format!("{project}-{key}-{number}")
    } else {
        service.container_name.clone()
    }
}

/// The user's labels, then compose's (which win).
pub fn container_labels(
    project: &Project,
    key: &str,
    service: &Service,
    number: u32,
    image_id: &str,
) -> BTreeMap<String, String> {
    let mut labels = service.labels.clone();
    let files: Vec<String> = project
        .config_files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    let depends_on: Vec<String> = service
        .depends_on
        .iter()
        .map(|(name, d)| format!("{name}:{}:{}", d.condition.as_str(), d.restart))
        .collect();
    for (k, v) in [
        (PROJECT, project.name.clone()),
        (SERVICE, key.to_owned()),
        (VERSION, COMPOSE_VERSION.to_owned()),
        (WORKING_DIR, project.working_dir.display().to_string()),
        (CONFIG_FILES, files.join(",")),
        (ONEOFF, "False".to_owned()),
        (CONFIG_HASH, super::hash::config_hash(project, service)),
        (NUMBER, number.to_string()),
        (DEPENDS_ON, depends_on.join(",")),
        (IMAGE, image_id.to_owned()),
    ] {
        labels.insert(k.to_owned(), v);
    }
    if let Some(file) = &project.env_file {
        labels.insert(ENVIRONMENT_FILE.to_owned(), file.display().to_string());
    }
    labels
}

/// Sets `key` when `value` is not empty (its JSON is not `""`, `0`, `false`, `[]`, `{}`).
fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0) || n.as_u64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    };
    if !empty {
        map.insert(key.to_owned(), value);
    }
}

/// `POST /containers/create?name=` body for container `number` of service `key`.
pub fn container(
    project: &Project,
    key: &str,
    number: u32,
    image_id: &str,
    api: ApiVersion,
) -> Value {
    let s = &project.services[key];
    let mut c = Map::new();
    put(&mut c, "Hostname", json!(s.hostname));
    put(&mut c, "Domainname", json!(s.domainname));
    put(&mut c, "User", json!(s.user));
    let mut exposed = Map::new();
    for port in &s.expose {
        exposed.insert(port.clone(), json!({}));
    }
    let mut bindings = Map::new();
    for port in &s.ports {
        let key = format!("{}/{}", port.target, port.protocol);
        exposed.insert(key.clone(), json!({}));
        let binding = json!({"HostIp": port.host_ip, "HostPort": port.published});
        match bindings.get_mut(&key).and_then(Value::as_array_mut) {
            Some(list) => list.push(binding),
            None => {
                bindings.insert(key, json!([binding]));
            }
        }
    }
    c.insert("ExposedPorts".into(), Value::Object(exposed));
    put(&mut c, "Tty", json!(s.tty));
    put(&mut c, "OpenStdin", json!(s.stdin_open));
    c.insert("AttachStdout".into(), json!(true));
    c.insert("AttachStderr".into(), json!(true));
    if let Some(cmd) = &s.command {
        c.insert("Cmd".into(), json!(cmd));
    }
    c.insert("Image".into(), json!(s.image));
    put(&mut c, "WorkingDir", json!(s.working_dir));
    if let Some(entrypoint) = &s.entrypoint {
        c.insert("Entrypoint".into(), json!(entrypoint));
    }
    if api < MULTI_NETWORK_API {
        put(&mut c, "MacAddress", json!(s.mac_address));
    }
    c.insert(
        "Labels".into(),
        json!(container_labels(project, key, s, number, image_id)),
    );
    put(&mut c, "StopSignal", json!(s.stop_signal));
    let env: Vec<String> = s
        .environment
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        })
        .collect();
    put(&mut c, "Env", json!(env));
    if let Some(h) = &s.healthcheck {
        let mut health = Map::new();
        put(&mut health, "Test", json!(h.test));
        put(&mut health, "Interval", json!(h.interval));
        put(&mut health, "Timeout", json!(h.timeout));
        put(&mut health, "StartPeriod", json!(h.start_period));
        put(&mut health, "StartInterval", json!(h.start_interval));
        if let Some(retries) = h.retries {
            health.insert("Retries".into(), json!(retries));
        }
        c.insert("Healthcheck".into(), Value::Object(health));
    }
    if let Some(t) = s.stop_grace_period {
        c.insert("StopTimeout".into(), json!(t));
    }

    let mut h = Map::new();
    let (binds, mounts) = mounts(s);
    put(&mut h, "Binds", json!(binds));
    put(&mut h, "Mounts", json!(mounts));
    put(&mut h, "CapAdd", json!(capabilities(&s.cap_add)));
    put(&mut h, "CapDrop", json!(capabilities(&s.cap_drop)));
    if let Some(init) = s.init {
        h.insert("Init".into(), json!(init));
    }
    put(&mut h, "IpcMode", json!(s.ipc));
    put(&mut h, "ReadonlyRootfs", json!(s.read_only));
    if !s.restart.is_empty() {
        let (policy, count) = s.restart.split_once(':').unwrap_or((&s.restart, "0"));
        h.insert(
            "RestartPolicy".into(),
            json!({"Name": policy, "MaximumRetryCount": count.parse::<u32>().unwrap_or(0)}),
        );
    }
    put(&mut h, "ShmSize", json!(s.shm_size));
    put(&mut h, "Sysctls", json!(s.sysctls));
    h.insert("PortBindings".into(), Value::Object(bindings));
    let r = &s.resources;
    put(&mut h, "Memory", json!(r.memory));
    put(&mut h, "MemoryReservation", json!(r.memory_reservation));
    put(&mut h, "MemorySwap", json!(r.memory_swap));
    put(&mut h, "NanoCpus", json!(r.nano_cpus));
    put(&mut h, "CpusetCpus", json!(r.cpuset));
    put(&mut h, "CpuShares", json!(r.cpu_shares));
    put(&mut h, "PidsLimit", json!(r.pids_limit));
    put(&mut h, "DeviceCgroupRules", json!(r.device_cgroup_rules));
    put(&mut h, "CgroupParent", json!(r.cgroup_parent));
    put(&mut h, "MemorySwappiness", json!(r.mem_swappiness));
    put(&mut h, "OomKillDisable", json!(r.oom_kill_disable));
    put(&mut h, "CpuRealtimePeriod", json!(r.cpu_rt_period));
    put(&mut h, "CpuRealtimeRuntime", json!(r.cpu_rt_runtime));
    put(&mut h, "BlkioWeight", json!(r.blkio_weight));
    for (field, devices) in &r.blkio_devices {
        let value = if field == "BlkioWeightDevice" {
            "Weight"
        } else {
            "Rate"
        };
        let list: Vec<Value> = devices
            .iter()
            .map(|(path, v)| json!({"Path": path, value: v}))
            .collect();
        put(&mut h, field, json!(list));
    }
    // `gpus` are requests with `gpu` added to their capabilities (`getDeployResources`).
    let gpus = r.gpus.iter().map(|d| {
        let mut gpu = d.clone();
        gpu.capabilities.push("gpu".into());
        gpu
    });
    let requests: Vec<Value> = r
        .device_requests
        .iter()
        .cloned()
        .chain(gpus)
        .map(|d| {
            json!({"Driver": d.driver, "Count": d.count, "DeviceIDs": d.device_ids,
                   "Capabilities": [d.capabilities], "Options": d.options})
        })
        .collect();
    put(&mut h, "DeviceRequests", json!(requests));
    let devices: Vec<Value> = s
        .devices
        .iter()
        .map(|d| json!({"PathOnHost": d.source, "PathInContainer": d.target, "CgroupPermissions": d.permissions}))
        .collect();
    put(&mut h, "Devices", json!(devices));
    let ulimits: Vec<Value> = s
        .ulimits
        .iter()
        .map(|(name, u)| json!({"Name": name, "Soft": u.soft, "Hard": u.hard}))
        .collect();
    put(&mut h, "Ulimits", json!(ulimits));
    put(&mut h, "Dns", json!(s.dns));
    put(&mut h, "DnsSearch", json!(s.dns_search));
    put(&mut h, "DnsOptions", json!(s.dns_opt));
    h.insert("ExtraHosts".into(), json!(s.extra_hosts));
    put(&mut h, "SecurityOpt", json!(s.security_opt));
    put(&mut h, "StorageOpt", json!(s.storage_opt));
    put(&mut h, "UsernsMode", json!(s.userns_mode));
    put(&mut h, "Privileged", json!(s.privileged));
    put(&mut h, "PidMode", json!(s.pid));
    put(&mut h, "CgroupnsMode", json!(s.cgroup));
    put(&mut h, "UTSMode", json!(s.uts));
    put(&mut h, "Annotations", json!(s.annotations));
    let tmpfs: Map<String, Value> = s
        .tmpfs
        .iter()
        .map(|t| {
            let (path, options) = t.split_once(':').unwrap_or((t, ""));
            (path.to_owned(), json!(options))
        })
        .collect();
    put(&mut h, "Tmpfs", Value::Object(tmpfs));
    put(&mut h, "Runtime", json!(s.runtime));
    if let Some(logging) = &s.logging {
        h.insert(
            "LogConfig".into(),
            json!({"Type": logging.driver, "Config": logging.options}),
        );
    }
    put(&mut h, "GroupAdd", json!(s.group_add));
    let links = links(project, key, number);
    put(&mut h, "Links", json!(links));
    put(&mut h, "OomScoreAdj", json!(s.oom_score_adj));
    let volumes_from: Vec<String> = s
        .volumes_from
        .iter()
        .map(|from| match from.strip_prefix("container:") {
            Some(container) => container.to_owned(),
            None => {
                let from = from.strip_prefix("service:").unwrap_or(from);
                let (other, mode) = from
                    .split_once(':')
                    .map_or((from, None), |(o, m)| (o, Some(m)));
                let name = first_container(project, other);
                mode.map_or(name.clone(), |m| format!("{name}:{m}"))
            }
        })
        .collect();
    put(&mut h, "VolumesFrom", json!(volumes_from));

    // Networks: network_mode as given (service:x is x's container), else the primary network
    // with its endpoint; more networks in the body from API 1.44, else connected after create.
    if let Some(other) = s.network_mode.strip_prefix("service:") {
        h.insert(
            "NetworkMode".into(),
            json!(format!("container:{}", first_container(project, other))),
        );
    } else if !s.network_mode.is_empty() {
        h.insert("NetworkMode".into(), json!(s.network_mode));
    } else {
        let keys = s.networks_by_priority();
        let mut endpoints = Map::new();
        for (i, network) in keys.iter().enumerate() {
            if i == 0 || api >= MULTI_NETWORK_API {
                endpoints.insert(
                    project.networks[*network].name.clone(),
                    endpoint(project, key, number, network, &links, api),
                );
            }
        }
        if let Some(primary) = keys.first() {
            h.insert("NetworkMode".into(), json!(project.networks[*primary].name));
        }
        c.insert(
            "NetworkingConfig".into(),
            json!({"EndpointsConfig": endpoints}),
        );
    }
    c.insert("HostConfig".into(), Value::Object(h));
    Value::Object(c)
}

/// The networks to connect after create (APIs before 1.44 take one in the create body):
/// `(docker network name, POST /networks/{name}/connect body)`.
pub fn later_networks(
    project: &Project,
    key: &str,
    number: u32,
    api: ApiVersion,
) -> Vec<(String, Value)> {
    let s = &project.services[key];
    if api >= MULTI_NETWORK_API || !s.network_mode.is_empty() {
        return Vec::new();
    }
    s.networks_by_priority()
        .into_iter()
        .skip(1)
        .map(|network| {
            let name = project.networks[network].name.clone();
            let container = container_name(&project.name, key, s, number);
            let links = links(project, key, number);
            let config = endpoint(project, key, number, network, &links, api);
            let body = json!({"Container": container, "EndpointConfig": config});
            (name, body)
        })
        .collect()
}

/// Container `number`'s links (`getLinks`), in `HostConfig` and on every endpoint: for each
/// container of a linked service `name:alias`, `name:<service>-<number>` and
/// `name:<project>-<service>-<number>`; then the external links, `container[:alias]` as
/// `container:alias`.
fn links(project: &Project, key: &str, number: u32) -> Vec<String> {
    let s = &project.services[key];
    let mut links = Vec::new();
    for link in &s.links {
        let parts: Vec<&str> = link.split(':').collect();
        let other = parts[0];
        let alias = if parts.len() == 2 { parts[1] } else { other };
        let Some(linked) = project.services.get(other) else {
            continue;
        };
        for n in 1..=linked.scale {
            let name = container_name(&project.name, other, linked, n);
            links.push(format!("{name}:{alias}"));
            links.push(format!("{name}:{other}-{number}"));
            links.push(format!("{name}:{}-{other}-{number}", project.name));
        }
    }
    links.extend(s.external_links.iter().map(|link| {
        let parts: Vec<&str> = link.split(':').collect();
        let alias = if parts.len() == 2 { parts[1] } else { parts[0] };
        format!("{}:{alias}", parts[0])
    }));
    links
}

/// Endpoint settings on `network`: aliases `[container, service, aliases...]`, the links, fixed
/// addresses (`IPAMConfig` is `{}` when the service gave the network any setting: compose-go
/// then has a config for it).
fn endpoint(
    project: &Project,
    key: &str,
    number: u32,
    network: &str,
    links: &[String],
    api: ApiVersion,
) -> Value {
    let s = &project.services[key];
    let config = &s.networks[network];
    let mut aliases = vec![
        container_name(&project.name, key, s, number),
        key.to_owned(),
    ];
    aliases.extend(config.aliases.iter().cloned());
    let mut e = Map::new();
    e.insert("Aliases".into(), json!(aliases));
    put(&mut e, "Links", json!(links));
    if *config != ServiceNetwork::default() {
        let mut ipam = Map::new();
        put(&mut ipam, "IPv4Address", json!(config.ipv4_address));
        put(&mut ipam, "IPv6Address", json!(config.ipv6_address));
        e.insert("IPAMConfig".into(), Value::Object(ipam));
    }
    // From 1.44 the MAC address is per endpoint: the service's goes to its primary network.
    if api >= MULTI_NETWORK_API && s.networks_by_priority().first() == Some(&network) {
        put(&mut e, "MacAddress", json!(s.mac_address));
    }
    Value::Object(e)
}

/// Capabilities as the Docker client v28 sends them (`normalizeCapabilities` in moby's
/// `client/container_create.go`): upper case, `CAP_` prefixed (but `ALL`), sorted, no repeats.
fn capabilities(caps: &[String]) -> Vec<String> {
    let mut caps: Vec<String> = caps
        .iter()
        .map(|c| {
            let c = c.to_ascii_uppercase();
            if c == "ALL" || c.starts_with("CAP_") {
                c
            } else {
                format!("CAP_{c}")
            }
        })
        .collect();
    caps.sort();
    caps.dedup();
    caps
}

/// The first container of service `key` (for `service:` references).
fn first_container(project: &Project, key: &str) -> String {
    match project.services.get(key) {
        Some(s) => container_name(&project.name, key, s, 1),
        None => key.to_owned(),
    }
}

/// Binds and the other mounts, as compose v2.40.3's `buildContainerVolumes` splits them: a bind
/// that creates its host folder and has no propagation (`bindRequiresMountAPI`), and a named
/// volume without `nocopy` or `subpath` (`volumeRequiresMountAPI`), are `src:dst:rw|ro[,opts]`
/// binds (`toBindString`); anonymous volumes, tmpfs and the rest are mounts.
fn mounts(s: &Service) -> (Vec<String>, Vec<Value>) {
    let mut binds = Vec::new();
    let mut mounts = Vec::new();
    for m in &s.volumes {
        let bind = match m.kind {
            MountType::Bind => m.create_host_path && m.propagation.is_empty(),
            MountType::Volume => !m.source.is_empty() && !m.nocopy && m.subpath.is_empty(),
            MountType::Tmpfs => false,
        };
        match m.kind {
            _ if bind => {
                let mut options = vec![if m.read_only { "ro" } else { "rw" }];
                if !m.selinux.is_empty() {
                    options.push(&m.selinux);
                }
                if !m.propagation.is_empty() {
                    options.push(&m.propagation);
                }
                binds.push(format!("{}:{}:{}", m.source, m.target, options.join(",")));
            }
            kind => {
                let mut mount = Map::new();
                let kind = match kind {
                    MountType::Bind => "bind",
                    MountType::Volume => "volume",
                    MountType::Tmpfs => "tmpfs",
                };
                mount.insert("Type".into(), json!(kind));
                put(&mut mount, "Source", json!(m.source));
                mount.insert("Target".into(), json!(m.target));
                put(&mut mount, "ReadOnly", json!(m.read_only));
                // compose-go has bind options for the short syntax, a long one with `bind:`, and
                // a file secret (`buildContainerSecretMounts`); volume options when it has
                // `volume:` or `nocopy` (`buildMountOptions`): sent even when empty.
                match kind {
                    "bind" if m.options || m.file_ref.as_ref().is_some_and(|r| r.secret) => {
                        let mut options = Map::new();
                        put(&mut options, "Propagation", json!(m.propagation));
                        put(&mut options, "CreateMountpoint", json!(m.create_host_path));
                        mount.insert("BindOptions".into(), Value::Object(options));
                    }
                    "volume" if m.options => {
                        let mut options = Map::new();
                        put(&mut options, "NoCopy", json!(m.nocopy));
                        put(&mut options, "Subpath", json!(m.subpath));
                        mount.insert("VolumeOptions".into(), Value::Object(options));
                    }
                    "tmpfs" if m.tmpfs_size != 0 || m.tmpfs_mode != 0 => {
                        let mut options = Map::new();
                        put(&mut options, "SizeBytes", json!(m.tmpfs_size));
                        put(&mut options, "Mode", json!(m.tmpfs_mode));
                        mount.insert("TmpfsOptions".into(), Value::Object(options));
                    }
                    _ => {}
                }
                mounts.push(Value::Object(mount));
            }
        }
    }
    (binds, mounts)
}

/// `POST /networks/create` body for network `key`.
pub fn network(project: &Project, key: &str) -> Value {
    let n = &project.networks[key];
    let mut labels = n.labels.clone();
    labels.insert(NETWORK.into(), key.into());
    labels.insert(CONFIG_HASH.into(), super::hash::network_hash(n));
    labels.insert(PROJECT.into(), project.name.clone());
    labels.insert(VERSION.into(), COMPOSE_VERSION.into());
    let mut body = Map::new();
    body.insert("Name".into(), json!(n.name));
    body.insert("CheckDuplicate".into(), json!(true));
    put(&mut body, "Driver", json!(n.driver));
    put(&mut body, "Options", json!(n.driver_opts));
    put(&mut body, "Internal", json!(n.internal));
    put(&mut body, "Attachable", json!(n.attachable));
    put(&mut body, "EnableIPv6", json!(n.enable_ipv6));
    if !n.ipam_driver.is_empty() || !n.ipam.is_empty() {
        let pools: Vec<Value> = n
            .ipam
            .iter()
            .map(|p| {
                let mut pool = Map::new();
                put(&mut pool, "Subnet", json!(p.subnet));
                put(&mut pool, "IPRange", json!(p.ip_range));
                put(&mut pool, "Gateway", json!(p.gateway));
                put(&mut pool, "AuxiliaryAddresses", json!(p.aux_addresses));
                Value::Object(pool)
            })
            .collect();
        let mut ipam = Map::new();
        put(&mut ipam, "Driver", json!(n.ipam_driver));
        put(&mut ipam, "Config", json!(pools));
        body.insert("IPAM".into(), Value::Object(ipam));
    }
    body.insert("Labels".into(), json!(labels));
    Value::Object(body)
}

/// `POST /volumes/create` body for volume `key`.
pub fn volume(project: &Project, key: &str) -> Value {
    let v = &project.volumes[key];
    let mut labels = v.labels.clone();
    labels.insert(VOLUME.into(), key.into());
    labels.insert(CONFIG_HASH.into(), super::hash::volume_hash(v));
    labels.insert(PROJECT.into(), project.name.clone());
    labels.insert(VERSION.into(), COMPOSE_VERSION.into());
    let mut body = Map::new();
    body.insert("Name".into(), json!(v.name));
    put(&mut body, "Driver", json!(v.driver));
    put(&mut body, "DriverOpts", json!(v.driver_opts));
    body.insert("Labels".into(), json!(labels));
    Value::Object(body)
}
