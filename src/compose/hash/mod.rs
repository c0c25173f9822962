//! `com.docker.compose.config-hash` as Docker Compose v2.40 computes it (`pkg/compose/hash.go`
//! `ServiceHash`): the lowercase hex SHA-256 of Go's `json.Marshal` of compose-go v2.9's
//! `types.ServiceConfig` with `build`, `pull_policy`, `scale`, `deploy.replicas`, `depends_on`
//! and `profiles` cleared. [`service_json`] writes our model back into compose-go's normal form,
//! a line per `ServiceConfig` field in its declaration order (`types/types.go`), with the
//! `omitempty` rules and custom marshalers of [`json`]. docs/compose.md lists what our model
//! cannot tell apart and so hashes differently. Networks and volumes are labelled with the hash
//! of their own config the same way (`NetworkHash`, `VolumeHash`).

mod json;

use super::model::{
    Device, DeviceRequest, Healthcheck, Logging, Mount, MountType, Network, Port, Project, Service,
    ServiceNetwork, Ulimit, Volume,
};
use json::{Bytes, GoDuration, Object, Value};
use std::collections::BTreeMap;

/// The hex SHA-256 of [`service_json`].
pub fn config_hash(project: &Project, service: &Service) -> String {
    sha256_hex(&service_json(project, service))
}

/// A network's `com.docker.compose.config-hash` (`NetworkHash`): compose-go's `NetworkConfig`.
pub fn network_hash(network: &Network) -> String {
    sha256_hex(&network_json(network))
}

/// A volume's `com.docker.compose.config-hash` (`VolumeHash`): compose-go's `VolumeConfig`,
/// with `local` for an unset driver.
pub fn volume_hash(volume: &Volume) -> String {
    sha256_hex(&volume_json(volume))
}

fn sha256_hex(json: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, json.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `NetworkConfig` as `json.Marshal` writes it (`types/types.go`): `ipam`, a struct, is never
/// left out; `enable_ipv6` is a pointer, set when the file gave `true`.
fn network_json(n: &Network) -> String {
    let pools: Vec<Raw> = n
        .ipam
        .iter()
        .map(|p| {
            object(|o| {
                o.field("subnet", &p.subnet)
                    .field("gateway", &p.gateway)
                    .field("ip_range", &p.ip_range)
                    .field("aux_addresses", &p.aux_addresses);
            })
        })
        .collect();
    let ipam = object(|o| {
        o.field("driver", &n.ipam_driver).field("config", &pools);
    });
    let mut out = String::new();
    Object::new(&mut out)
        .field("name", &n.name)
        .field("driver", &n.driver)
        .field("driver_opts", &n.driver_opts)
        .always("ipam", &ipam)
        .field("external", &n.external)
        .field("internal", &n.internal)
        .field("attachable", &n.attachable)
        .field("labels", &n.labels)
        .field("enable_ipv6", &n.enable_ipv6.then_some(true))
        .end();
    out
}

/// `VolumeConfig` as `json.Marshal` writes it.
fn volume_json(v: &Volume) -> String {
    let driver = if v.driver.is_empty() {
        "local"
    } else {
        &v.driver
    };
    let mut out = String::new();
    Object::new(&mut out)
        .field("name", &v.name)
        .field("driver", &driver)
        .field("driver_opts", &v.driver_opts)
        .field("external", &v.external)
        .field("labels", &v.labels)
        .end();
    out
}

/// A value already written as JSON (a nested struct).
struct Raw(String);

impl Value for Raw {
    fn write(&self, out: &mut String) {
        out.push_str(&self.0)
    }
}

/// Writes a struct's fields into a [`Raw`].
fn object(fields: impl FnOnce(&mut Object)) -> Raw {
    let mut out = String::new();
    let mut o = Object::new(&mut out);
    fields(&mut o);
    o.end();
    Raw(out)
}

/// compose-go's `ServiceConfig` as `json.Marshal` writes it, the cleared fields left out.
pub fn service_json(project: &Project, s: &Service) -> String {
    let r = &s.resources;
    let deploy = s.deploy.unwrap_or_default();
    let (top_limits, top_reservations) = (!deploy.limits, !deploy.reservations);
    let mut out = String::new();
    let mut o = Object::new(&mut out);
    o.field("cap_add", &s.cap_add)
        .field("cap_drop", &s.cap_drop)
        .field("cpus", &cpus(r.nano_cpus).filter(|_| top_limits))
        .field("cpuset", &r.cpuset)
        .field("cpu_shares", &r.cpu_shares)
        .always("command", &s.command)
        .field("configs", &file_refs(s, false))
        .field("container_name", &s.container_name)
        .field("deploy", &s.deploy.map(|_| deploy_json(s)))
        .field("device_cgroup_rules", &r.device_cgroup_rules)
        .field("devices", &s.devices.iter().map(device).collect::<Vec<_>>())
        .field("dns", &s.dns)
        .field("dns_opt", &s.dns_opt)
        .field("dns_search", &s.dns_search)
        .field("domainname", &s.domainname)
        .always("entrypoint", &s.entrypoint)
        .field("environment", &s.environment)
        .field("expose", &s.expose)
        .field("extra_hosts", &extra_hosts(&s.extra_hosts))
        .field("group_add", &s.group_add)
        .field("hostname", &s.hostname)
        .field("healthcheck", &s.healthcheck.as_ref().map(healthcheck))
        .field("image", &s.image)
        .field("init", &s.init)
        .field("ipc", &s.ipc)
        .field("labels", &s.labels)
        .field("links", &s.links)
        .field("logging", &s.logging.as_ref().map(logging))
        .field("mem_limit", &Bytes(if top_limits { r.memory } else { 0 }))
        .field(
            "mem_reservation",
            &Bytes(if top_reservations {
                r.memory_reservation
            } else {
                0
            }),
        )
        .field("memswap_limit", &Bytes(r.memory_swap))
        .field("mac_address", &s.mac_address)
        .field("network_mode", &s.network_mode)
        .field("networks", &networks(s))
        .field("oom_score_adj", &s.oom_score_adj)
        .field("pid", &s.pid)
        .field("pids_limit", &if top_limits { r.pids_limit } else { 0 })
        .field("platform", &s.platform)
        .field("ports", &s.ports.iter().map(port).collect::<Vec<_>>())
        .field("privileged", &s.privileged)
        .field("read_only", &s.read_only)
        .field("restart", &s.restart)
        .field("runtime", &s.runtime)
        .field("secrets", &file_refs(s, true))
        .field("security_opt", &s.security_opt)
        .field("shm_size", &Bytes(s.shm_size))
        .field("stdin_open", &s.stdin_open)
        .field(
            "stop_grace_period",
            &s.stop_grace_period
                .map(|secs| GoDuration(secs.saturating_mul(1_000_000_000))),
        )
        .field("stop_signal", &s.stop_signal)
        .field("storage_opt", &s.storage_opt)
        .field("sysctls", &s.sysctls)
        .field("tmpfs", &s.tmpfs)
        .field("tty", &s.tty)
        .field(
            "ulimits",
            &s.ulimits
                .iter()
                .map(|(k, u)| (k.clone(), ulimit(u)))
                .collect::<BTreeMap<_, _>>(),
        )
        .field("user", &s.user)
        .field("userns_mode", &s.userns_mode)
        .field(
            "volumes",
            &s.volumes
                .iter()
                .filter(|m| m.file_ref.is_none())
                .map(|m| mount(project, m))
                .collect::<Vec<_>>(),
        )
        .field(
            "volumes_from",
            &s.volumes_from
                .iter()
                .map(|v| volumes_from(v))
                .collect::<Vec<_>>(),
        )
        .field("working_dir", &s.working_dir);
    o.end();
    out
}

/// `cpus` is a `float32`.
fn cpus(nano: i64) -> Option<f32> {
    (nano != 0).then(|| (nano as f64 / 1e9) as f32)
}

/// `DeployConfig` (`deploy.resources`; `placement`, a struct, is never left out).
fn deploy_json(s: &Service) -> Raw {
    let r = &s.resources;
    let deploy = s.deploy.unwrap_or_default();
    let limits = deploy.limits.then(|| {
        object(|o| {
            o.field("cpus", &cpus(r.nano_cpus))
                .field("memory", &Bytes(r.memory))
                .field("pids", &r.pids_limit);
        })
    });
    let reservations = deploy.reservations.then(|| {
        object(|o| {
            o.field("memory", &Bytes(r.memory_reservation)).field(
                "devices",
                &r.device_requests
                    .iter()
                    .map(device_request)
                    .collect::<Vec<_>>(),
            );
        })
    });
    object(|o| {
        o.field("mode", &deploy.mode)
            .always(
                "resources",
                &object(|o| {
                    o.field("limits", &limits)
                        .field("reservations", &reservations);
                }),
            )
            .always("placement", &object(|_| {}));
    })
}

fn device_request(d: &DeviceRequest) -> Raw {
    object(|o| {
        o.field("capabilities", &d.capabilities)
            .field("driver", &d.driver)
            .field("count", &d.count)
            .field("device_ids", &d.device_ids)
            .field("options", &d.options);
    })
}

fn device(d: &Device) -> Raw {
    object(|o| {
        o.field("source", &d.source)
            .field("target", &d.target)
            .field("permissions", &d.permissions);
    })
}

/// `HostsList` marshals as sorted `host=ip`.
fn extra_hosts(hosts: &[String]) -> Vec<String> {
    let mut list: Vec<String> = hosts
        .iter()
        .map(|h| match h.split_once(':') {
            Some((host, ip)) => format!("{host}={ip}"),
            None => h.clone(),
        })
        .collect();
    list.sort();
    list
}

/// `HealthCheckConfig`; our `["NONE"]` alone is `disable: true`.
fn healthcheck(h: &Healthcheck) -> Raw {
    let disabled = h.test == ["NONE"]
        && *h
            == Healthcheck {
                test: h.test.clone(),
                ..Healthcheck::default()
            };
    object(|o| {
        if disabled {
            o.always("disable", &true);
            return;
        }
        o.field("test", &h.test)
            .field("timeout", &GoDuration(h.timeout))
            .field("interval", &GoDuration(h.interval))
            .field("retries", &h.retries)
            .field("start_period", &GoDuration(h.start_period))
            .field("start_interval", &GoDuration(h.start_interval));
    })
}

fn logging(l: &Logging) -> Raw {
    object(|o| {
        o.field("driver", &l.driver).field("options", &l.options);
    })
}

/// Network key to `ServiceNetworkConfig`, `null` when the service gave no settings.
fn networks(s: &Service) -> BTreeMap<String, Option<Raw>> {
    let bare = ServiceNetwork::default();
    s.networks
        .iter()
        .map(|(key, n)| {
            let config = (*n != bare).then(|| {
                object(|o| {
                    o.field("aliases", &n.aliases)
                        .field("ipv4_address", &n.ipv4_address)
                        .field("ipv6_address", &n.ipv6_address)
                        .field("priority", &n.priority);
                })
            });
            (key.clone(), config)
        })
        .collect()
}

/// `ServicePortConfig`, `mode: ingress` as the short syntax gives.
fn port(p: &Port) -> Raw {
    object(|o| {
        let mode = if p.mode.is_empty() {
            "ingress"
        } else {
            &p.mode
        };
        o.field("mode", &mode)
            .field("host_ip", &p.host_ip)
            .field("target", &p.target)
            .field("published", &p.published)
            .field("protocol", &p.protocol);
    })
}

fn ulimit(u: &Ulimit) -> Raw {
    if u.soft == u.hard {
        return Raw(u.soft.to_string());
    }
    object(|o| {
        o.field("soft", &u.soft).field("hard", &u.hard);
    })
}

/// `ServiceVolumeConfig`: a volume by its key in the file (ours holds its Docker name), with
/// the `volume`, `bind` or `tmpfs` options the short syntax or the long one gave.
fn mount(project: &Project, m: &Mount) -> Raw {
    let source = match m.kind {
        MountType::Volume => project
            .volumes
            .iter()
            .find(|(_, v)| v.name == m.source)
            .map_or(m.source.as_str(), |(key, _)| key.as_str()),
        _ => m.source.as_str(),
    };
    object(|o| {
        let kind = match m.kind {
            MountType::Volume => "volume",
            MountType::Bind => "bind",
            MountType::Tmpfs => "tmpfs",
        };
        o.field("type", &kind)
            .field("source", &source)
            .field("target", &m.target)
            .field("read_only", &m.read_only);
        match m.kind {
            MountType::Bind => {
                let bind = object(|o| {
                    o.field("selinux", &m.selinux)
                        .field("propagation", &m.propagation)
                        .field("create_host_path", &m.create_host_path);
                });
                if m.options {
                    o.always("bind", &bind);
                }
            }
            MountType::Volume => {
                // `name:/path:Z` (or a propagation): `format.ParseVolume` adds bind options.
                if !m.selinux.is_empty() || !m.propagation.is_empty() {
                    o.always(
                        "bind",
                        &object(|o| {
                            o.field("selinux", &m.selinux)
                                .field("propagation", &m.propagation);
                        }),
                    );
                }
                let volume = object(|o| {
                    o.field("nocopy", &m.nocopy).field("subpath", &m.subpath);
                });
                if m.options {
                    o.always("volume", &volume);
                }
            }
            MountType::Tmpfs => {
                let tmpfs = object(|o| {
                    o.field("size", &Bytes(m.tmpfs_size))
                        .field("mode", &m.tmpfs_mode);
                });
                if m.options {
                    o.always("tmpfs", &tmpfs);
                }
            }
        }
    })
}

/// The service's `secrets:` (or `configs:`) as `FileReferenceConfig`s, as written.
fn file_refs(s: &Service, secrets: bool) -> Vec<Raw> {
    s.volumes
        .iter()
        .filter_map(|m| m.file_ref.as_ref())
        .filter(|r| r.secret == secrets)
        .map(|r| {
            object(|o| {
                o.field("source", &r.source).field("target", &r.target);
            })
        })
        .collect()
}

/// `container:name` is `name` when compose creates the container.
fn volumes_from(v: &str) -> String {
    match v.strip_prefix("container:") {
        Some(rest) => rest.split(':').next().unwrap_or(rest).to_owned(),
        None => v.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::model::IpamPool;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The labels Docker Compose v2.40.3's `up --no-start` wrote on Docker 20.10 for project
    /// `h21a-hash`: networks `front` (every setting, a label to escape) and `back: {}`, volumes
    /// `data: {}` and `opts` (driver, options, labels).
    #[test]
    fn network_and_volume_hashes_equal_compose_v2() {
        let front = Network {
            name: "h21a-hash_front".into(),
            driver: "bridge".into(),
            driver_opts: map(&[("com.docker.network.bridge.enable_icc", "true")]),
            internal: true,
            attachable: true,
            ipam_driver: "default".into(),
            ipam: vec![IpamPool {
                subnet: "172.31.250.0/24".into(),
                ip_range: "172.31.250.128/25".into(),
                gateway: "172.31.250.1".into(),
                aux_addresses: map(&[("host1", "172.31.250.5")]),
            }],
            labels: map(&[("team", "edge"), ("a&b", "<x>")]),
            ..Network::default()
        };
        let back = Network {
            name: "h21a-hash_back".into(),
            ..Network::default()
        };
        let data = Volume {
            name: "h21a-hash_data".into(),
            ..Volume::default()
        };
        let opts = Volume {
            name: "h21a-hash_opts".into(),
            driver: "local".into(),
            driver_opts: map(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=1m")]),
            labels: map(&[("role", "cache")]),
            ..Volume::default()
        };
        let ours = [
            network_hash(&front),
            network_hash(&back),
            volume_hash(&data),
            volume_hash(&opts),
        ];
        assert_eq!(
            ours,
            [
                "a3125f5f88f5bf72dcd51ecf1e0e421e662bf8c6e1875401a4a0aa86815fe46e",
                "2d35c0dc0cfcb8939ebd76483f9b9981555a397b1c1d2e7fb6645ec0743251a5",
                "b777c96764c5f79aaab327b178851d49d649ce1e6df86f7c12cc188771e33fd8",
                "76224d97f91c07e37583ea099de53eec9401c609fb5f10c460b9f883fbfe4384"
            ]
        );
    }
}
