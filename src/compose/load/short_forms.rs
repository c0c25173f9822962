//! The short syntaxes that are strings to parse: `ports:` (`[ip:][host:]container[/protocol]`,
//! with ranges), `volumes:` (`[source:]target[:options]`; a bind's source made absolute), and
//! `command:`/`entrypoint:` split into words as a shell would. The long forms of ports and
//! volumes are read here too.

use super::context::{clean, Ctx};
use super::error::Fail;
use crate::compose::model::{Mount, MountType, Port, Project};
use crate::compose::yaml::{Node, Value};
use std::path::Path;

/// `command` and `entrypoint`: a string is split as a shell would (no expansion), a list is
/// taken as it is.
pub(super) fn words(ctx: &Ctx, node: &Node, path: &str) -> Result<Vec<String>, Fail> {
    match &node.value {
        Value::Scalar(text, _) => split_words(text).map_err(|m| ctx.err(node, path, m)),
        Value::Null => Ok(Vec::new()),
        _ => ctx.list(node, path),
    }
}

/// POSIX shell word splitting without expansion: blanks separate words, 'single quotes' are
/// literal, "double quotes" keep `\"`, `\\`, `\$` and `` \` `` escapes, a backslash outside
/// quotes escapes the next character.
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated ' quote in {text:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unterminated \" quote in {text:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated \" quote in {text:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => word.push(c),
                    None => word.push('\\'),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `a` or `a-b`.
pub(super) fn range(text: &str) -> Option<(u16, u16)> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let (low, high) = (low.trim().parse().ok()?, high.trim().parse().ok()?);
    (low <= high).then_some((low, high))
}

/// `[ip:][host[-range]:]container[-range][/protocol]`, or the long form.
pub(super) fn port(ctx: &Ctx, node: &Node, path: &str) -> Result<Vec<Port>, Fail> {
    if let Value::Map(_) = node.value {
        let mut port = Port {
            protocol: "tcp".into(),
            ..Port::default()
        };
        let mut target = None;
        for (k, n, p) in ctx.entries(node, path)? {
            match k {
                "target" => target = Some(n),
                "published" => port.published = ctx.string(n, &p)?,
                "host_ip" => port.host_ip = ctx.string(n, &p)?,
                "protocol" => port.protocol = ctx.string(n, &p)?,
                "mode" => port.mode = ctx.string(n, &p)?,
                "name" | "app_protocol" => {}
                _ => return Err(ctx.unknown(n, &p)),
            }
        }
        let Some(target) = target else {
            return Err(ctx.err(node, path, "target: is missing (the container's port)"));
        };
        let text = ctx.string(target, &format!("{path}.target"))?;
        port.target = text
            .parse()
            .map_err(|_| ctx.err(target, &format!("{path}.target"), "expected a port number"))?;
        return Ok(vec![port]);
    }
    let text = ctx.string(node, path)?;
    let bad = || {
        ctx.err(
            node,
            path,
            format!("{text:?} is not a port: expected [IP:][HOST:]CONTAINER[/PROTOCOL], like 8080:80 or 127.0.0.1:53:53/udp"),
        )
    };
    let (spec, protocol) = text.rsplit_once('/').unwrap_or((&text, "tcp"));
    // An IPv6 address is in brackets: [::1]:8080:80.
    let (host_ip, rest) = match spec.strip_prefix('[') {
        Some(after) => {
            let (ip, rest) = after.split_once("]:").ok_or_else(bad)?;
            (ip.to_owned(), rest)
        }
        None => match spec.matches(':').count() {
            2 => {
                let (ip, rest) = spec.split_once(':').ok_or_else(bad)?;
                (ip.to_owned(), rest)
            }
            _ => (String::new(), spec),
        },
    };
    let (published, container) = match rest.rsplit_once(':') {
        Some((host, container)) => (host, container),
        None => ("", rest),
    };
    let (low, high) = range(container).ok_or_else(bad)?;
    let host = if published.is_empty() {
        None
    } else {
        Some(range(published).ok_or_else(bad)?)
    };
    let mut ports = Vec::new();
    for (i, target) in (low..=high).enumerate() {
        let published = match host {
            None => String::new(),
            Some((h_low, h_high)) if low == high => {
                if h_low == h_high {
                    h_low.to_string()
                } else {
                    format!("{h_low}-{h_high}")
                }
            }
            Some((h_low, h_high)) => {
                if h_high - h_low != high - low {
                    return Err(ctx.err(
                        node,
                        path,
                        format!("{text:?}: the host and container ranges differ in size"),
                    ));
                }
                (h_low + i as u16).to_string()
            }
        };
        ports.push(Port {
            target,
            published,
            host_ip: host_ip.clone(),
            protocol: protocol.to_owned(),
            mode: String::new(),
        });
    }
    Ok(ports)
}

const PROPAGATIONS: &[&str] = &[
    "shared", "rshared", "slave", "rslave", "private", "rprivate",
];

/// `[source:]target[:options]` or the long form.
pub(super) fn mount(ctx: &Ctx, project: &Project, node: &Node, path: &str) -> Result<Mount, Fail> {
    let mut m = Mount::default();
    if let Value::Map(_) = node.value {
        let (mut kind, mut bind_options) = (None, false);
        for (k, n, p) in ctx.entries(node, path)? {
            match k {
                "type" => kind = Some((ctx.string(n, &p)?, n, p)),
                "source" => m.source = ctx.string(n, &p)?,
                "target" => m.target = ctx.string(n, &p)?,
                "read_only" => m.read_only = ctx.bool(n, &p)?,
                "consistency" => {}
                "bind" => {
                    bind_options = true;
                    m.options = true;
                    for (bk, bn, bp) in ctx.entries(n, &p)? {
                        match bk {
                            "propagation" => m.propagation = ctx.string(bn, &bp)?,
                            "create_host_path" => m.create_host_path = ctx.bool(bn, &bp)?,
                            "selinux" => m.selinux = ctx.string(bn, &bp)?,
                            _ => return Err(ctx.unknown(bn, &bp)),
                        }
                    }
                }
                "volume" => {
                    m.options = true;
                    for (vk, vn, vp) in ctx.entries(n, &p)? {
                        match vk {
                            "nocopy" => m.nocopy = ctx.bool(vn, &vp)?,
                            "subpath" => m.subpath = ctx.string(vn, &vp)?,
                            _ => return Err(ctx.unknown(vn, &vp)),
                        }
                    }
                }
                "tmpfs" => {
                    m.options = true;
                    for (tk, tn, tp) in ctx.entries(n, &p)? {
                        match tk {
                            "size" => m.tmpfs_size = ctx.bytes(tn, &tp)?,
                            "mode" => {
                                let text = ctx.string(tn, &tp)?;
                                m.tmpfs_mode = u32::from_str_radix(&text, 8).map_err(|_| {
                                    ctx.err(tn, &tp, "expected an octal mode like 1777")
                                })?;
                            }
                            _ => return Err(ctx.unknown(tn, &tp)),
                        }
                    }
                }
                _ => return Err(ctx.unknown(n, &p)),
            }
        }
        let Some((kind, kn, kp)) = kind else {
            return Err(ctx.err(node, path, "type: is missing (volume, bind or tmpfs)"));
        };
        m.kind = match kind.as_str() {
            "volume" => MountType::Volume,
            "bind" => MountType::Bind,
            "tmpfs" => MountType::Tmpfs,
            _ => return Err(ctx.err(kn, &kp, "expected volume, bind or tmpfs")),
        };
        if m.target.is_empty() {
            return Err(ctx.err(node, path, "target: is missing (the path in the container)"));
        }
        // Without `bind:`, compose-go has no bind options and compose uses the Binds API, which
        // creates a missing host folder: the same as `create_host_path: true`.
        m.create_host_path |= m.kind == MountType::Bind && !bind_options;
    } else {
        let text = ctx.string(node, path)?;
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, options) = match parts.as_slice() {
            [t] => ("", *t, ""),
            [s, t] => (*s, *t, ""),
            [s, t, o] => (*s, *t, *o),
            _ => {
                return Err(ctx.err(
                    node,
                    path,
                    format!("{text:?}: expected [SOURCE:]TARGET[:OPTIONS]"),
                ))
            }
        };
        m.source = source.to_owned();
        m.target = target.to_owned();
        // `format.ParseVolume` returns a spec of one or two characters without options.
        m.options = text.len() > 2;
        m.kind = if source.starts_with(['.', '/', '~']) {
            m.create_host_path = true;
            MountType::Bind
        } else {
            MountType::Volume
        };
        for option in options.split(',').filter(|o| !o.is_empty()) {
            match option {
                "ro" => m.read_only = true,
                "rw" => m.read_only = false,
                "z" | "Z" => m.selinux = option.into(),
                "nocopy" => m.nocopy = true,
                o if PROPAGATIONS.contains(&o) => m.propagation = o.into(),
                // compose-go's `format.ParseVolume` ignores other options (`cached`, ...).
                _ => {}
            }
        }
    }
    if !m.target.starts_with('/') {
        return Err(ctx.err(
            node,
            path,
            format!(
                "the target {:?} must be an absolute path in the container",
                m.target
            ),
        ));
    }
    // compose-go cleans every target (`path.Clean`: `/media/` is `/media`).
    m.target = clean(Path::new(&m.target));
    match m.kind {
        MountType::Bind if m.source.is_empty() => return Err(ctx.err(node, path, "a bind mount needs a source")),
        MountType::Bind => m.source = ctx.host_path(&m.source),
        MountType::Volume if !m.source.is_empty() => match project.volumes.get(&m.source) {
            Some(volume) => m.source = volume.name.clone(),
            None => {
                return Err(ctx.err(node, path, format!(
                    "volume {:?} is not declared under the top-level volumes: (a host path starts with ./ or /)",
                    m.source
                )))
            }
        },
        _ => {}
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::load::tests::load_ok;

    #[test]
    fn short_and_long_ports() {
        let p = load_ok("services:\n  web:\n    image: a\n    ports:\n      - 80\n      - 8080:80/udp\n      - 127.0.0.1:53:53\n      - 127.0.0.1::9000\n      - \"[::1]:81:81\"\n      - 9000-9001:90-91\n      - 7000-7005:7000\n      - {target: 443, published: 8443, host_ip: 0.0.0.0, protocol: tcp, mode: host}\n");
        let ports: Vec<String> = p.services["web"]
            .ports
            .iter()
            .map(|p| format!("{}|{}|{}/{}", p.host_ip, p.published, p.target, p.protocol))
            .collect();
        assert_eq!(
            ports,
            [
                "||80/tcp",
                "|8080|80/udp",
                "127.0.0.1|53|53/tcp",
                "127.0.0.1||9000/tcp",
                "::1|81|81/tcp",
                "|9000|90/tcp",
                "|9001|91/tcp",
                "|7000-7005|7000/tcp",
                "0.0.0.0|8443|443/tcp"
            ]
        );
    }

    #[test]
    fn named_volumes_are_binds_unless_they_need_the_mount_api_as_in_compose_2_40() {
        let p = load_ok(
            "services:\n  web:\n    image: a\n    volumes:\n      - data:/data\n      - data:/ro:ro,z\n\
             \x20     - data:/nc:nocopy\n      - {type: volume, source: data, target: /sub, volume: {subpath: x}}\n\
             \x20     - {type: volume, source: data, target: /lro, read_only: true}\n      - /anon\n\
             \x20     - /h:/h:ro,cached\n      - /d:/d:delegated,rshared\n      - {type: bind, source: /l, target: /l}\n\
             \x20     - {type: bind, source: /b, target: /b, bind: {selinux: z}}\n      - {type: tmpfs, target: /t}\n\
             volumes: {data: {}}\n",
        );
        let body =
            crate::compose::body::container(&p, "web", 1, "sha256:i", super::super::tests::API);
        let host = &body["HostConfig"];
        assert_eq!(
            host["Binds"],
            serde_json::json!([
                "demo_data:/data:rw",
                "demo_data:/ro:ro,z",
                "demo_data:/lro:ro",
                "/h:/h:ro",
                "/l:/l:rw"
            ])
        );
        let mounts: Vec<String> = host["Mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| format!("{} {} {}", m["Type"], m["Target"], m["VolumeOptions"]))
            .collect();
        assert_eq!(
            mounts,
            [
                r#""volume" "/nc" {"NoCopy":true}"#,
                r#""volume" "/sub" {"Subpath":"x"}"#,
                r#""volume" "/anon" {}"#,
                r#""bind" "/d" null"#,
                r#""bind" "/b" null"#,
                r#""tmpfs" "/t" null"#
            ]
        );
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            split_words("sh -c 'echo $A  b' \"x\\\"y\" a\\ b").unwrap(),
            ["sh", "-c", "echo $A  b", "x\"y", "a b"]
        );
        assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split_words("a '' b").unwrap(), ["a", "", "b"]);
        assert!(split_words("echo 'open").is_err());
    }
}
