//! Normalisation across services, as compose-go's `loader/normalize.go` and
//! `WithoutUnnecessaryResources`: profiles (`COMPOSE_PROFILES`), implicit dependencies
//! (`network_mode: service:`, `volumes_from`, `links`), undefined dependencies, the default
//! network, unused networks and volumes dropped, and dependency cycles refused.

use super::context::{Ctx, Entries};
use super::error::Fail;
use crate::compose::model::{Condition, Dependency, MountType, Network, Project, ServiceNetwork};
use std::collections::BTreeSet;

/// The default network, implicit dependencies, profiles, and the checks across services.
pub(super) fn normalize(ctx: &mut Ctx, project: &mut Project, nodes: &Entries) -> Result<(), Fail> {
    let node_of = |name: &str| {
        nodes
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, n, p)| (*n, p.clone()))
    };
    // Profiles: COMPOSE_PROFILES names the active ones; `*` all.
    let active: Vec<&str> = ctx
        .env
        .get("COMPOSE_PROFILES")
        .map(|p| {
            p.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let disabled: Vec<String> = project
        .services
        .iter()
        .filter(|(_, s)| {
            !s.profiles.is_empty()
                && !s
                    .profiles
                    .iter()
                    .any(|p| active.contains(&p.as_str()) || active.contains(&"*"))
        })
        .map(|(k, _)| k.clone())
        .collect();
    for name in &disabled {
        project.services.remove(name);
    }
    project.disabled = disabled;

    let names: BTreeSet<String> = project.services.keys().cloned().collect();
    let mut uses_default = false;
    for (name, service) in project.services.iter_mut() {
        let (node, path) = node_of(name).expect("every service has its node");
        // links, `service:x` namespaces and volumes_from depend on x, in compose-go's order
        // (`loader/normalize.go`): the first two with `restart: true`, volumes_from without.
        let mut implicit = Vec::new();
        for link in &service.links {
            implicit.push((link.split(':').next().unwrap_or_default().to_owned(), true));
        }
        for mode in [
            &service.network_mode,
            &service.ipc,
            &service.pid,
            &service.uts,
            &service.cgroup,
        ] {
            if let Some(other) = mode.strip_prefix("service:") {
                implicit.push((other.to_owned(), true));
            }
        }
        for from in &service.volumes_from {
            let other = from
                .strip_prefix("container:")
                .map_or(Some(from.split(':').next().unwrap_or_default()), |_| None);
            if let Some(other) = other.map(|o| o.strip_prefix("service:").unwrap_or(o)) {
                implicit.push((other.to_owned(), false));
            }
        }
        for (other, restart) in implicit {
            service.depends_on.entry(other).or_insert(Dependency {
                condition: Condition::Started,
                required: true,
                restart,
            });
        }
        let mut dropped = Vec::new();
        for (dep, d) in &service.depends_on {
            if names.contains(dep) {
                continue;
            }
            let why = if project.disabled.contains(dep) {
                "is not in an active profile (COMPOSE_PROFILES)"
            } else {
                "is not defined"
            };
            if d.required {
                return Err(ctx.err(
                    node,
                    &format!("{path}.depends_on"),
                    format!("service {dep:?} {why}"),
                ));
            }
            ctx.warnings.push(format!(
                "{path}: optional dependency {dep:?} {why}: not waited for"
            ));
            dropped.push(dep.clone());
        }
        for dep in dropped {
            service.depends_on.remove(&dep);
        }
        if service.network_mode.is_empty() && service.networks.is_empty() {
            service
                .networks
                .insert("default".into(), ServiceNetwork::default());
        }
        uses_default |= service.networks.contains_key("default");
    }
    if uses_default && !project.networks.contains_key("default") {
        let name = format!("{}_default", project.name);
        project.networks.insert(
            "default".into(),
            Network {
                name,
                ..Network::default()
            },
        );
    }
    // Only what a service uses is created (compose-go's `WithoutUnnecessaryResources`).
    let services = &project.services;
    project
        .networks
        .retain(|key, _| services.values().any(|s| s.networks.contains_key(key)));
    project.volumes.retain(|_, volume| {
        services.values().any(|s| {
            s.volumes
                .iter()
                .any(|m| m.kind == MountType::Volume && m.source == volume.name)
        })
    });
    if let Some(cycle) = dependency_cycle(project) {
        let (node, path) = node_of(&cycle[0]).expect("every service has its node");
        return Err(ctx.err(
            node,
            &format!("{path}.depends_on"),
            format!("dependency cycle: {}", cycle.join(" -> ")),
        ));
    }
    Ok(())
}

/// A cycle of `depends_on`, as `[a, b, a]`, if there is one.
fn dependency_cycle(project: &Project) -> Option<Vec<String>> {
    fn visit(
        project: &Project,
        name: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == name) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(name.to_owned());
            return Some(cycle);
        }
        if done.contains(name) {
            return None;
        }
        stack.push(name.to_owned());
        for dep in project
            .services
            .get(name)
            .map(|s| s.depends_on.keys())
            .into_iter()
            .flatten()
        {
            if let Some(cycle) = visit(project, dep, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(name.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    project
        .services
        .keys()
        .find_map(|name| visit(project, name, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod tests {
    use crate::compose::load::tests::load_files;

    #[test]
    fn networks_volumes_and_profiles_normalise_like_compose() {
        let p = {
            let (_dir, p) = load_files(
                &[("compose.yaml", "services:\n  web:\n    image: a\n    volumes: [data:/data, ./html:/html:ro]\n  host:\n    image: a\n    network_mode: host\n  db:\n    image: a\n    networks: [back]\n    profiles: [debug]\n  tool:\n    image: a\n    profiles: [tools]\nnetworks:\n  back: {}\n  ext: {external: true}\nvolumes:\n  data: {}\n  unused: {}\n")],
                &[("COMPOSE_PROFILES", "debug")],
            );
            p.unwrap()
        };
        assert_eq!(p.services.keys().collect::<Vec<_>>(), ["db", "host", "web"]);
        assert_eq!(p.disabled, ["tool"]);
        assert_eq!(p.networks["default"].name, "demo_default");
        assert_eq!(p.networks["back"].name, "demo_back");
        assert!(
            !p.networks.contains_key("ext"),
            "unused networks are dropped"
        );
        assert_eq!(p.volumes.keys().collect::<Vec<_>>(), ["data"]);
        assert_eq!(p.volumes["data"].name, "demo_data");
        assert!(p.services["host"].networks.is_empty());
        assert_eq!(
            p.services["web"].volumes[1].source,
            format!("{}/html", p.working_dir.display())
        );
    }
}
