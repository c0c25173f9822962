//! `extends:` within the file, as compose-go's `loader/extends.go` applies it before binding:
//! the base service's node (itself extended first) under the service's own, whose keys win;
//! mappings merge key by key. Extending from another file is refused.

use super::context::{Ctx, Entries};
use super::error::Fail;
use crate::compose::yaml::{Node, Value};

/// A service node with `extends: {service: base}` (same file) merged under it: the service's
/// own keys win, mappings merge key by key.
pub(super) fn extended(
    ctx: &Ctx,
    services: &Entries,
    key: &str,
    node: &Node,
    path: &str,
    depth: usize,
) -> Result<Node, Fail> {
    let Value::Map(entries) = &node.value else {
        return Err(ctx.err(node, path, "expected a mapping (the service's settings)"));
    };
    let Some((_, spec)) = entries.iter().find(|(k, _)| k == "extends") else {
        return Ok(node.clone());
    };
    let spath = format!("{path}.extends");
    let base = match &spec.value {
        Value::Scalar(name, _) => name.clone(),
        Value::Map(_) => {
            let mut base = None;
            for (k, n, p) in ctx.entries(spec, &spath)? {
                match k {
                    "service" => base = Some(ctx.string(n, &p)?),
                    "file" => return Err(ctx.err(n, &p, "extends from another file is not supported: copy the service into this file")),
                    _ => return Err(ctx.unknown(n, &p)),
                }
            }
            base.ok_or_else(|| {
                ctx.err(
                    spec,
                    &spath,
                    "expected service: the name of the service to extend",
                )
            })?
        }
        _ => return Err(ctx.err(spec, &spath, "expected a service name")),
    };
    let Some((_, base_node, _)) = services.iter().find(|(k, _, _)| *k == base) else {
        return Err(ctx.err(spec, &spath, format!("service {base:?} is not defined")));
    };
    if depth > 16 || base == key {
        return Err(ctx.err(spec, &spath, "extends loops back to this service"));
    }
    let base_node = extended(
        ctx,
        services,
        &base,
        base_node,
        &format!("services.{base}"),
        depth + 1,
    )?;
    let own = Node {
        value: Value::Map(
            entries
                .iter()
                .filter(|(k, _)| k != "extends")
                .cloned()
                .collect(),
        ),
        line: node.line,
    };
    Ok(overlay(base_node, own))
}

fn overlay(base: Node, over: Node) -> Node {
    match (base.value, over.value) {
        (Value::Map(mut base_entries), Value::Map(over_entries)) => {
            for (key, value) in over_entries {
                match base_entries.iter().position(|(k, _)| *k == key) {
                    Some(i) => {
                        let old = base_entries.remove(i).1;
                        base_entries.insert(i, (key, overlay(old, value)));
                    }
                    None => base_entries.push((key, value)),
                }
            }
            Node {
                value: Value::Map(base_entries),
                line: over.line,
            }
        }
        (_, value) => Node {
            value,
            line: over.line,
        },
    }
}

#[cfg(test)]
mod tests {
    use crate::compose::body;
    use crate::compose::load::tests::{load_ok, API};
    use serde_json::json;

    #[test]
    fn same_file_extends_and_tier_two_keys() {
        let p = load_ok(
            "services:\n  base:\n    image: a\n    environment: {A: 1}\n    labels: {x: y}\n  web:\n    extends: base\n    environment: {B: 2}\n\
             \x20   deploy:\n      replicas: 2\n      resources:\n        limits: {cpus: \"1.5\", memory: 1g, pids: 50}\n        reservations:\n          memory: 128m\n          devices: [{capabilities: [gpu], count: all}]\n\
             \x20     restart_policy: {condition: on-failure, max_attempts: 3}\n    shm_size: 64m\n    security_opt: [no-new-privileges]\n    group_add: [dialout]\n    pull_policy: if_not_present\n",
        );
        let web = &p.services["web"];
        assert_eq!(web.image, "a");
        assert_eq!(web.environment.len(), 2);
        assert_eq!(web.labels["x"], "y");
        assert_eq!(
            (web.scale, web.restart.as_str(), web.pull_policy.as_str()),
            (2, "on-failure:3", "missing")
        );
        let body = body::container(&p, "web", 2, "i", API);
        let h = &body["HostConfig"];
        assert_eq!(
            (
                h["NanoCpus"].clone(),
                h["Memory"].clone(),
                h["PidsLimit"].clone()
            ),
            (json!(1_500_000_000), json!(1_073_741_824), json!(50))
        );
        assert_eq!(h["MemoryReservation"], 134_217_728);
        assert_eq!(
            h["DeviceRequests"],
            json!([{"Driver": "", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}])
        );
        assert_eq!(
            h["RestartPolicy"],
            json!({"Name": "on-failure", "MaximumRetryCount": 3})
        );
        assert_eq!(h["ShmSize"], 67_108_864);
        assert_eq!(
            body["NetworkingConfig"]["EndpointsConfig"]["demo_default"]["Aliases"],
            json!(["demo-web-2", "web"])
        );
    }
}
