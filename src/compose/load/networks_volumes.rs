//! The top-level `networks:` and `volumes:` bound to the model, with their Docker names
//! (`name:`, else the key when external, else `<project>_<key>`), and `secrets:` and `configs:`
//! (file sources only: there is no swarm).

use super::context::Ctx;
use super::error::Fail;
use crate::compose::model::{FileObject, IpamPool, Network, Volume};
use crate::compose::yaml::Node;

/// A top-level network or volume name: `name:`, else the key when external, else
/// `<project>_<key>`.
fn resource_name(explicit: Option<String>, external: bool, key: &str, project: &str) -> String {
    match explicit {
        Some(name) => name,
        None if external => key.to_owned(),
        None => format!("{project}_{key}"),
    }
}

pub(super) fn network(
    ctx: &mut Ctx,
    key: &str,
    node: &Node,
    path: &str,
    project: &str,
) -> Result<Network, Fail> {
    let mut net = Network::default();
    let mut name = None;
    for (k, n, p) in ctx.entries(node, path)? {
        match k {
            "name" => name = Some(ctx.string(n, &p)?),
            "external" => net.external = ctx.bool(n, &p)?,
            "driver" => net.driver = ctx.string(n, &p)?,
            "driver_opts" => net.driver_opts = ctx.string_map(n, &p)?,
            "internal" => net.internal = ctx.bool(n, &p)?,
            "attachable" => net.attachable = ctx.bool(n, &p)?,
            "enable_ipv6" => net.enable_ipv6 = ctx.bool(n, &p)?,
            "labels" => net.labels = ctx.string_map(n, &p)?,
            "ipam" => {
                for (ik, in_, ip) in ctx.entries(n, &p)? {
                    match ik {
                        "driver" => net.ipam_driver = ctx.string(in_, &ip)?,
                        "config" => {
                            for (cn, cp) in ctx.items(in_, &ip)? {
                                let mut pool = IpamPool::default();
                                for (ck, vn, vp) in ctx.entries(cn, &cp)? {
                                    match ck {
                                        "subnet" => pool.subnet = ctx.string(vn, &vp)?,
                                        "ip_range" => pool.ip_range = ctx.string(vn, &vp)?,
                                        "gateway" => pool.gateway = ctx.string(vn, &vp)?,
                                        "aux_addresses" => {
                                            pool.aux_addresses = ctx.string_map(vn, &vp)?
                                        }
                                        _ => return Err(ctx.unknown(vn, &vp)),
                                    }
                                }
                                net.ipam.push(pool);
                            }
                        }
                        "options" => {}
                        _ => return Err(ctx.unknown(in_, &ip)),
                    }
                }
            }
            k if k.starts_with("x-") => {}
            _ => return Err(ctx.unknown(n, &p)),
        }
    }
    net.name = resource_name(name, net.external, key, project);
    Ok(net)
}

pub(super) fn volume(
    ctx: &mut Ctx,
    key: &str,
    node: &Node,
    path: &str,
    project: &str,
) -> Result<Volume, Fail> {
    let mut vol = Volume::default();
    let mut name = None;
    for (k, n, p) in ctx.entries(node, path)? {
        match k {
            "name" => name = Some(ctx.string(n, &p)?),
            "external" => vol.external = ctx.bool(n, &p)?,
            "driver" => vol.driver = ctx.string(n, &p)?,
            "driver_opts" => vol.driver_opts = ctx.string_map(n, &p)?,
            "labels" => vol.labels = ctx.string_map(n, &p)?,
            k if k.starts_with("x-") => {}
            _ => return Err(ctx.unknown(n, &p)),
        }
    }
    vol.name = resource_name(name, vol.external, key, project);
    Ok(vol)
}

pub(super) fn file_object(ctx: &mut Ctx, node: &Node, path: &str) -> Result<FileObject, Fail> {
    let mut file = None;
    for (k, n, p) in ctx.entries(node, path)? {
        match k {
            "file" => file = Some(ctx.host_path(&ctx.string(n, &p)?)),
            "name" => {}
            "external" | "environment" | "content" | "driver" | "template_driver" => {
                return Err(ctx.err(n, &p, "not supported without swarm: only file: sources are"))
            }
            _ => return Err(ctx.unknown(n, &p)),
        }
    }
    let file = file.ok_or_else(|| ctx.err(node, path, "file: is missing (the file to mount)"))?;
    Ok(FileObject { file: file.into() })
}
