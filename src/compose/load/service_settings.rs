//! The service keys with a structure of their own, each in its long form or its short one (a
//! list, a string): `env_file`, `networks`, `depends_on`, `healthcheck`, `extra_hosts`,
//! `deploy` (replicas, resources, restart policy) and `secrets`/`configs` references.

use super::context::Ctx;
use super::error::Fail;
use crate::compose::model::{
    Condition, Dependency, Deploy, DeviceRequest, Healthcheck, Project, Service, ServiceNetwork,
};
use crate::compose::yaml::{Node, Value};
use std::collections::BTreeMap;

pub(super) fn env_file_list<'n>(
    ctx: &Ctx,
    node: &'n Node,
    path: &str,
) -> Result<Vec<(String, bool, &'n Node, String)>, Fail> {
    if let Value::Scalar(..) = node.value {
        return Ok(vec![(ctx.string(node, path)?, true, node, path.to_owned())]);
    }
    let mut out = Vec::new();
    for (item, ip) in ctx.items(node, path)? {
        if let Value::Map(_) = item.value {
            let (mut file, mut required) = (None, true);
            for (k, n, p) in ctx.entries(item, &ip)? {
                match k {
                    "path" => file = Some(ctx.string(n, &p)?),
                    "required" => required = ctx.bool(n, &p)?,
                    "format" => {}
                    _ => return Err(ctx.unknown(n, &p)),
                }
            }
            let file = file.ok_or_else(|| ctx.err(item, &ip, "path: is missing"))?;
            out.push((file, required, item, ip));
        } else {
            out.push((ctx.string(item, &ip)?, true, item, ip));
        }
    }
    Ok(out)
}

pub(super) fn service_networks(
    ctx: &Ctx,
    project: &Project,
    node: &Node,
    path: &str,
) -> Result<BTreeMap<String, ServiceNetwork>, Fail> {
    let mut out = BTreeMap::new();
    let check = |key: &str, n: &Node, p: &str| {
        if key == "default" || project.networks.contains_key(key) {
            Ok(())
        } else {
            Err(ctx.err(
                n,
                p,
                format!("network {key:?} is not declared under the top-level networks:"),
            ))
        }
    };
    if let Value::Seq(_) = node.value {
        for (item, ip) in ctx.items(node, path)? {
            let key = ctx.string(item, &ip)?;
            check(&key, item, &ip)?;
            out.insert(key, ServiceNetwork::default());
        }
        return Ok(out);
    }
    for (key, n, p) in ctx.entries(node, path)? {
        check(key, n, &p)?;
        let mut net = ServiceNetwork::default();
        for (k, vn, vp) in ctx.entries(n, &p)? {
            match k {
                "aliases" => net.aliases = ctx.list(vn, &vp)?,
                "ipv4_address" => net.ipv4_address = ctx.string(vn, &vp)?,
                "ipv6_address" => net.ipv6_address = ctx.string(vn, &vp)?,
                "priority" => net.priority = ctx.int(vn, &vp)?,
                _ => return Err(ctx.unknown(vn, &vp)),
            }
        }
        out.insert(key.to_owned(), net);
    }
    Ok(out)
}

pub(super) fn depends_on(
    ctx: &Ctx,
    node: &Node,
    path: &str,
) -> Result<BTreeMap<String, Dependency>, Fail> {
    let mut out = BTreeMap::new();
    let started = Dependency {
        condition: Condition::Started,
        required: true,
        restart: false,
    };
    if let Value::Seq(_) = node.value {
        for (item, ip) in ctx.items(node, path)? {
            out.insert(ctx.string(item, &ip)?, started.clone());
        }
        return Ok(out);
    }
    for (key, n, p) in ctx.entries(node, path)? {
        let mut dep = started.clone();
        for (k, vn, vp) in ctx.entries(n, &p)? {
            match k {
                "condition" => {
                    dep.condition = match ctx.string(vn, &vp)?.as_str() {
                        "service_started" => Condition::Started,
                        "service_healthy" => Condition::Healthy,
                        "service_completed_successfully" => Condition::CompletedSuccessfully,
                        _ => return Err(ctx.err(vn, &vp, "expected service_started, service_healthy or service_completed_successfully")),
                    }
                }
                "required" => dep.required = ctx.bool(vn, &vp)?,
                "restart" => dep.restart = ctx.bool(vn, &vp)?,
                _ => return Err(ctx.unknown(vn, &vp)),
            }
        }
        out.insert(key.to_owned(), dep);
    }
    Ok(out)
}

pub(super) fn healthcheck(ctx: &Ctx, node: &Node, path: &str) -> Result<Option<Healthcheck>, Fail> {
    let mut h = Healthcheck::default();
    let mut disable = false;
    for (k, n, p) in ctx.entries(node, path)? {
        match k {
            "test" => {
                h.test = match &n.value {
                    Value::Scalar(text, _) => vec!["CMD-SHELL".into(), text.clone()],
                    _ => ctx.list(n, &p)?,
                };
                if !matches!(
                    h.test.first().map(String::as_str),
                    Some("NONE" | "CMD" | "CMD-SHELL")
                ) {
                    return Err(ctx.err(n, &p, "a list test starts with CMD, CMD-SHELL or NONE"));
                }
            }
            "interval" => h.interval = ctx.duration(n, &p)?,
            "timeout" => h.timeout = ctx.duration(n, &p)?,
            "start_period" => h.start_period = ctx.duration(n, &p)?,
            "start_interval" => h.start_interval = ctx.duration(n, &p)?,
            "retries" => h.retries = Some(ctx.int(n, &p)?.max(0) as u64),
            "disable" => disable = ctx.bool(n, &p)?,
            _ => return Err(ctx.unknown(n, &p)),
        }
    }
    if disable {
        h = Healthcheck {
            test: vec!["NONE".into()],
            ..Healthcheck::default()
        };
    }
    Ok(Some(h))
}

/// A list of `host:ip` or `host=ip`, or a mapping host → ip (or list of ips); as `host:ip`.
pub(super) fn extra_hosts(ctx: &Ctx, node: &Node, path: &str) -> Result<Vec<String>, Fail> {
    let mut out = Vec::new();
    if let Value::Map(_) = node.value {
        for (host, n, p) in ctx.entries(node, path)? {
            for ip in ctx.strings(n, &p)? {
                out.push(format!("{host}:{ip}"));
            }
        }
        return Ok(out);
    }
    for (item, ip) in ctx.items(node, path)? {
        let text = ctx.string(item, &ip)?;
        let (host, addr) = text
            .split_once('=')
            .or_else(|| text.split_once(':'))
            .ok_or_else(|| ctx.err(item, &ip, "expected HOST:IP or HOST=IP"))?;
        out.push(format!("{host}:{addr}"));
    }
    Ok(out)
}

pub(super) fn count(ctx: &Ctx, node: &Node, path: &str) -> Result<u32, Fail> {
    let n = ctx.int(node, path)?;
    u32::try_from(n).map_err(|_| ctx.err(node, path, "expected a count of 0 or more"))
}

pub(super) fn deploy(
    ctx: &mut Ctx,
    node: &Node,
    path: &str,
    s: &mut Service,
    replicas: &mut Option<u32>,
    restart: &mut Option<String>,
) -> Result<(), Fail> {
    let mut given = Deploy::default();
    for (k, n, p) in ctx.entries(node, path)? {
        match k {
            "replicas" => *replicas = Some(count(ctx, n, &p)?),
            "resources" => {
                for (rk, rn, rp) in ctx.entries(n, &p)? {
                    match rk {
                        "limits" => given.limits = true,
                        "reservations" => given.reservations = true,
                        x if x.starts_with("x-") => continue,
                        // Checked before its entries: an empty or null one is refused too.
                        _ => {
                            return Err(ctx.err(
                                rn,
                                &rp,
                                "unknown key (expected limits or reservations)",
                            ))
                        }
                    }
                    for (lk, ln, lp) in ctx.entries(rn, &rp)? {
                        match (rk, lk) {
                            (_, x) if x.starts_with("x-") => {}
                            ("limits", "cpus") => s.resources.nano_cpus = ctx.nano_cpus(ln, &lp)?,
                            ("limits", "memory") => s.resources.memory = ctx.bytes(ln, &lp)?,
                            ("limits", "pids") => s.resources.pids_limit = ctx.int(ln, &lp)?,
                            ("reservations", "memory") => {
                                s.resources.memory_reservation = ctx.bytes(ln, &lp)?
                            }
                            ("reservations", "cpus") => {}
                            ("reservations", "generic_resources") => return Err(ctx.err(
                                ln,
                                &lp,
                                "generic_resources is a Swarm setting and not supported: remove it",
                            )),
                            ("reservations", "devices") => {
                                for (dn, dp) in ctx.items(ln, &lp)? {
                                    s.resources
                                        .device_requests
                                        .push(device_request(ctx, dn, &dp, false)?);
                                }
                            }
                            _ => return Err(ctx.unknown(ln, &lp)),
                        }
                    }
                }
            }
            "restart_policy" => {
                let (mut condition, mut attempts) = ("any".to_owned(), 0);
                for (rk, rn, rp) in ctx.entries(n, &p)? {
                    match rk {
                        "condition" => condition = ctx.string(rn, &rp)?,
                        "max_attempts" => attempts = ctx.int(rn, &rp)?,
                        "delay" | "window" => {}
                        _ => return Err(ctx.unknown(rn, &rp)),
                    }
                }
                *restart = Some(match condition.as_str() {
                    "none" | "no" => "no".into(),
                    "any" | "always" => "always".into(),
                    "on-failure" if attempts > 0 => format!("on-failure:{attempts}"),
                    "on-failure" => "on-failure".into(),
                    "unless-stopped" => "unless-stopped".into(),
                    _ => return Err(ctx.err(n, &p, "condition: expected none, on-failure or any")),
                });
            }
            "mode" => {
                given.mode = match ctx.string(n, &p)?.as_str() {
                    "replicated" => "replicated",
                    "global" => "global",
                    "replicated-job" => "replicated-job",
                    "global-job" => "global-job",
                    _ => {
                        return Err(ctx.err(
                            n,
                            &p,
                            "expected replicated, global, replicated-job or global-job",
                        ))
                    }
                };
                ctx.warnings.push(format!("{p}: a swarm setting, ignored"));
            }
            "labels" | "placement" | "update_config" | "rollback_config" | "endpoint_mode" => {
                ctx.warnings.push(format!("{p}: a swarm setting, ignored"));
            }
            _ => return Err(ctx.unknown(n, &p)),
        }
    }
    s.deploy = Some(given);
    Ok(())
}

/// A `deploy.resources.reservations.devices` entry, or a `gpus` one (no capabilities needed).
/// Without `count` and `device_ids`, the count is `all` (compose-go `deviceRequestDefaults`).
pub(super) fn device_request(
    ctx: &Ctx,
    node: &Node,
    path: &str,
    gpu: bool,
) -> Result<DeviceRequest, Fail> {
    let mut d = DeviceRequest::default();
    let mut counted = false;
    for (k, n, p) in ctx.entries(node, path)? {
        match k {
            "capabilities" => d.capabilities = ctx.list(n, &p)?,
            "count" => {
                counted = true;
                d.count = match ctx.string(n, &p)?.as_str() {
                    "all" => -1,
                    _ => ctx.int(n, &p)?,
                }
            }
            "device_ids" => {
                counted = true;
                d.device_ids = ctx.list(n, &p)?;
            }
            "driver" => d.driver = ctx.string(n, &p)?,
            "options" => d.options = ctx.string_map(n, &p)?,
            _ => return Err(ctx.unknown(n, &p)),
        }
    }
    if !counted {
        d.count = -1;
    }
    if d.capabilities.is_empty() && !gpu {
        return Err(ctx.err(node, path, "capabilities: is missing (e.g. [gpu])"));
    }
    Ok(d)
}

pub(super) fn file_ref(ctx: &Ctx, node: &Node, path: &str) -> Result<(String, String), Fail> {
    if let Value::Scalar(..) = node.value {
        return Ok((ctx.string(node, path)?, String::new()));
    }
    let (mut source, mut target) = (None, String::new());
    for (k, n, p) in ctx.entries(node, path)? {
        match k {
            "source" => source = Some(ctx.string(n, &p)?),
            "target" => target = ctx.string(n, &p)?,
            "uid" | "gid" | "mode" => {}
            _ => return Err(ctx.unknown(n, &p)),
        }
    }
    let source = source.ok_or_else(|| ctx.err(node, path, "source: is missing"))?;
    Ok((source, target))
}
