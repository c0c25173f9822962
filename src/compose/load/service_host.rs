//! The service keys that go straight to the container's `HostConfig` with little checking, as
//! compose-go v2.9.1 reads them and compose v2.40.3's `getCreateConfigs` / `getDeployResources`
//! send them: `cgroup`, `cgroup_parent`, `uts`, `annotations`, `external_links`,
//! `mem_swappiness`, `oom_kill_disable`, `cpu_rt_runtime`, `cpu_rt_period`, `blkio_config`,
//! `gpus` and `devices` (short and long syntax).

use super::context::Ctx;
use super::error::Fail;
use super::service_settings::device_request;
use crate::compose::model::{Device, Service};
use crate::compose::yaml::{Node, Value};

/// Reads `key` into `s` if it is one of this module's keys; false if it is not.
pub(super) fn host_setting(
    ctx: &Ctx,
    s: &mut Service,
    key: &str,
    n: &Node,
    p: &str,
) -> Result<bool, Fail> {
    let r = &mut s.resources;
    match key {
        "cgroup" => {
            s.cgroup = ctx.string(n, p)?;
            if !matches!(s.cgroup.as_str(), "host" | "private") {
                return Err(ctx.err(n, p, "expected host or private"));
            }
        }
        "cgroup_parent" => r.cgroup_parent = ctx.string(n, p)?,
        "uts" => s.uts = ctx.string(n, p)?,
        "annotations" => s.annotations = ctx.string_map(n, p)?,
        "external_links" => s.external_links = ctx.list(n, p)?,
        "mem_swappiness" => r.mem_swappiness = ctx.int(n, p)?,
        "oom_kill_disable" => r.oom_kill_disable = ctx.bool(n, p)?,
        "cpu_rt_runtime" => r.cpu_rt_runtime = ctx.int(n, p)?,
        "cpu_rt_period" => r.cpu_rt_period = ctx.int(n, p)?,
        "blkio_config" => blkio(ctx, s, n, p)?,
        "gpus" => {
            // `gpus: all` is one request for every GPU (compose-go `transformGpus`).
            s.resources.gpus = match &n.value {
                Value::Scalar(..) => vec![device_request(ctx, &empty(n), p, true)?],
                _ => ctx
                    .items(n, p)?
                    .into_iter()
                    .map(|(item, ip)| device_request(ctx, item, &ip, true))
                    .collect::<Result<_, _>>()?,
            };
        }
        "devices" => {
            for (item, ip) in ctx.items(n, p)? {
                s.devices.push(device(ctx, item, &ip)?);
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn empty(n: &Node) -> Node {
    Node {
        value: Value::Map(Vec::new()),
        line: n.line,
    }
}

/// `/dev/host[:/dev/container[:perms]]` (perms `rwm` by default), or
/// `{source, target, permissions}` taken as written (compose-go `transformDeviceMapping`).
fn device(ctx: &Ctx, node: &Node, path: &str) -> Result<Device, Fail> {
    if let Value::Map(_) = node.value {
        let mut d = Device::default();
        for (k, n, p) in ctx.entries(node, path)? {
            match k {
                "source" => d.source = ctx.string(n, &p)?,
                "target" => d.target = ctx.string(n, &p)?,
                "permissions" => d.permissions = ctx.string(n, &p)?,
                _ => return Err(ctx.unknown(n, &p)),
            }
        }
        if d.source.is_empty() {
            return Err(ctx.err(node, path, "source: is missing (the device on the host)"));
        }
        return Ok(d);
    }
    let text = ctx.string(node, path)?;
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, permissions) = match parts.as_slice() {
        [s] => (*s, *s, "rwm"),
        [s, t] => (*s, *t, "rwm"),
        [s, t, p] => (*s, *t, *p),
        _ => {
            return Err(ctx.err(
                node,
                path,
                "expected /dev/host[:/dev/container[:rwm]] or {source, target, permissions}",
            ))
        }
    };
    Ok(Device {
        source: source.into(),
        target: if target.is_empty() { source } else { target }.into(),
        permissions: permissions.into(),
    })
}

/// `blkio_config`: `weight`, and `weight_device` (`{path, weight}`) and `device_read_bps`,
/// `device_read_iops`, `device_write_bps`, `device_write_iops` (`{path, rate}`; bps rates may
/// have a size unit) under Docker's names.
fn blkio(ctx: &Ctx, s: &mut Service, node: &Node, path: &str) -> Result<(), Fail> {
    for (k, n, p) in ctx.entries(node, path)? {
        let (field, value_key) = match k {
            "weight" => {
                s.resources.blkio_weight = ctx.int(n, &p)?;
                continue;
            }
            "weight_device" => ("BlkioWeightDevice", "weight"),
            "device_read_bps" => ("BlkioDeviceReadBps", "rate"),
            "device_read_iops" => ("BlkioDeviceReadIOps", "rate"),
            "device_write_bps" => ("BlkioDeviceWriteBps", "rate"),
            "device_write_iops" => ("BlkioDeviceWriteIOps", "rate"),
            _ => return Err(ctx.unknown(n, &p)),
        };
        let mut list = Vec::new();
        for (item, ip) in ctx.items(n, &p)? {
            let (mut dev, mut value) = (None, 0);
            for (ik, iv, ivp) in ctx.entries(item, &ip)? {
                match ik {
                    "path" => dev = Some(ctx.string(iv, &ivp)?),
                    _ if ik == value_key && k.ends_with("bps") => value = ctx.bytes(iv, &ivp)?,
                    _ if ik == value_key => value = ctx.int(iv, &ivp)?,
                    _ => return Err(ctx.unknown(iv, &ivp)),
                }
            }
            let dev = dev.ok_or_else(|| ctx.err(item, &ip, "path: is missing (the device)"))?;
            list.push((dev, value));
        }
        s.resources.blkio_devices.insert(field.into(), list);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::compose::body;
    use crate::compose::load::tests::{load_err, load_ok, API};
    use serde_json::json;

    #[test]
    fn host_settings_reach_the_create_body_as_compose_2_40_sends_them() {
        // The HostConfig docker-compose v2.40.3 sent for the same file (captured on the socket).
        let p = load_ok(
            "services:\n  a:\n    image: x\n    mem_swappiness: 10\n    cpu_rt_runtime: 400\n\
             \x20   cpu_rt_period: 1400\n    oom_kill_disable: true\n    cgroup_parent: mygroup\n\
             \x20   cgroup: private\n    uts: host\n    external_links: [ext:db, ext]\n\
             \x20   annotations: {a.b: c}\n    blkio_config:\n      weight: 300\n\
             \x20     weight_device: [{path: /dev/sda, weight: 400}]\n\
             \x20     device_read_bps: [{path: /dev/sda, rate: 12mb}]\n\
             \x20     device_write_iops: [{path: /dev/sda, rate: 30}]\n    devices:\n\
             \x20     - {source: /dev/null, target: /dev/xnull, permissions: r}\n      - /dev/zero:/dev/xzero\n\
             \x20   gpus:\n      - {driver: nvidia, device_ids: [\"0\"], capabilities: [compute]}\n      - count: 2\n\
             \x20 b:\n    image: x\n    gpus: all\n",
        );
        let h = &body::container(&p, "a", 1, "i", API)["HostConfig"];
        let expected = json!({"Annotations": {"a.b": "c"}, "CgroupnsMode": "private",
            "Links": ["ext:db", "ext:ext"], "UTSMode": "host", "CgroupParent": "mygroup",
            "BlkioWeight": 300, "BlkioWeightDevice": [{"Path": "/dev/sda", "Weight": 400}],
            "BlkioDeviceReadBps": [{"Path": "/dev/sda", "Rate": 12582912}],
            "BlkioDeviceWriteIOps": [{"Path": "/dev/sda", "Rate": 30}],
            "CpuRealtimePeriod": 1400, "CpuRealtimeRuntime": 400,
            "Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/xnull", "CgroupPermissions": "r"},
                        {"PathOnHost": "/dev/zero", "PathInContainer": "/dev/xzero", "CgroupPermissions": "rwm"}],
            "MemorySwappiness": 10, "OomKillDisable": true});
        for (key, value) in expected.as_object().unwrap() {
            assert_eq!(&h[key], value, "{key}");
        }
        let gpus: Vec<_> = h["DeviceRequests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["Driver"].clone(),
                    d["Count"].clone(),
                    d["Capabilities"].clone(),
                )
            })
            .collect();
        assert_eq!(
            gpus,
            [
                (json!("nvidia"), json!(0), json!([["compute", "gpu"]])),
                (json!(""), json!(2), json!([["gpu"]]))
            ]
        );
        let b = &body::container(&p, "b", 1, "i", API)["HostConfig"]["DeviceRequests"];
        assert_eq!(
            (&b[0]["Count"], &b[0]["Capabilities"]),
            (&json!(-1), &json!([["gpu"]]))
        );
        let e = load_err(
            "services:\n  a:\n    image: x\n    blkio_config: {device_read_bps: [{rate: 1}]}\n",
        );
        assert!(
            e.contains("line 4: services.a.blkio_config.device_read_bps[0]: path: is missing"),
            "{e}"
        );
        let e = load_err("services:\n  a:\n    image: x\n    cgroup: mine\n");
        assert!(
            e.contains("services.a.cgroup: expected host or private"),
            "{e}"
        );
    }
}
