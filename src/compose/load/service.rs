//! A service's mapping bound to the model, key by key: plain values here, structured ones through
//! [`super::service_settings`] and [`super::short_forms`]; keys compose knows but this engine
//! does not implement are refused by name, `build:` is ignored with a warning when the service
//! has an image. Then the checks within the service, and its environment: the `env_file:` files
//! in order, then `environment:` over them.

use super::context::Ctx;
use super::error::{Fail, LoadError};
use super::read::read_env_file;
use super::service_host::host_setting;
use super::service_settings::{
    count, depends_on, deploy, env_file_list, extra_hosts, file_ref, healthcheck, service_networks,
};
use super::short_forms::{mount, port, range, words};
use crate::compose::model::{FileRef, Logging, Mount, MountType, Port, Project, Service, Ulimit};
use crate::compose::yaml::{Node, Value};

/// Keys compose knows that this engine does not implement.
const UNSUPPORTED: &[&str] = &[
    "attach",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "credential_spec",
    "isolation",
    "post_start",
    "pre_stop",
    "volume_driver",
];

pub(super) fn service(
    ctx: &mut Ctx,
    project: &Project,
    node: &Node,
    path: &str,
) -> Result<Service, Fail> {
    let mut s = Service {
        pull_policy: "missing".into(),
        scale: 1,
        ..Service::default()
    };
    let mut env_files = Vec::new();
    let mut environment = Vec::new();
    let mut build = None;
    let mut replicas = None;
    let mut deploy_restart = None;
    for (key, n, p) in ctx.entries(node, path)? {
        match key {
            "image" => s.image = ctx.string(n, &p)?,
            "build" => build = Some((n, p)),
            "command" => s.command = Some(words(ctx, n, &p)?),
            "entrypoint" => s.entrypoint = Some(words(ctx, n, &p)?),
            "environment" => environment = ctx.dict(n, &p)?,
            "env_file" => env_files = env_file_list(ctx, n, &p)?,
            "ports" => {
                for (item, ip) in ctx.items(n, &p)? {
                    for new in port(ctx, item, &ip)? {
                        // compose-go's `override.EnforceUnicity` (`portIndexer`): a repeated
                        // host IP, published port, target and protocol replaces the first.
                        let key = |p: &Port| {
                            let ip = if p.host_ip.is_empty() {
                                "0.0.0.0"
                            } else {
                                &p.host_ip
                            };
                            (
                                ip.to_owned(),
                                p.published.clone(),
                                p.target,
                                p.protocol.clone(),
                            )
                        };
                        match s.ports.iter_mut().find(|p| key(p) == key(&new)) {
                            Some(old) => *old = new,
                            None => s.ports.push(new),
                        }
                    }
                }
            }
            "expose" => {
                for (item, ip) in ctx.items(n, &p)? {
                    let text = ctx.string(item, &ip)?;
                    // Kept as written: compose sends it as the ExposedPorts key (`5432`, not
                    // `5432/tcp`) and hashes it so.
                    let ports = text
                        .split_once('/')
                        .map_or(text.as_str(), |(ports, _)| ports);
                    range(ports).ok_or_else(|| {
                        ctx.err(
                            item,
                            &ip,
                            "expected a port or range, like 80, 8000-8010 or 53/udp",
                        )
                    })?;
                    s.expose.push(text);
                }
            }
            "volumes" => {
                for (item, ip) in ctx.items(n, &p)? {
                    s.volumes.push(mount(ctx, project, item, &ip)?);
                }
            }
            "networks" => s.networks = service_networks(ctx, project, n, &p)?,
            "network_mode" => s.network_mode = ctx.string(n, &p)?,
            "restart" => {
                s.restart = ctx.string(n, &p)?;
                let (name, count) = s.restart.split_once(':').unwrap_or((&s.restart, "0"));
                let ok = match name {
                    "no" | "always" | "unless-stopped" => count == "0",
                    "on-failure" => count.parse::<u32>().is_ok(),
                    _ => false,
                };
                if !ok {
                    return Err(ctx.err(
                        n,
                        &p,
                        "expected no, always, on-failure[:N] or unless-stopped",
                    ));
                }
            }
            "container_name" => s.container_name = ctx.string(n, &p)?,
            "labels" => s.labels = ctx.string_map(n, &p)?,
            "depends_on" => s.depends_on = depends_on(ctx, n, &p)?,
            "healthcheck" => s.healthcheck = healthcheck(ctx, n, &p)?,
            "privileged" => s.privileged = ctx.bool(n, &p)?,
            "cap_add" => s.cap_add = ctx.list(n, &p)?,
            "cap_drop" => s.cap_drop = ctx.list(n, &p)?,
            "logging" => {
                let mut logging = Logging::default();
                for (k, ln, lp) in ctx.entries(n, &p)? {
                    match k {
                        "driver" => logging.driver = ctx.string(ln, &lp)?,
                        "options" => logging.options = ctx.string_map(ln, &lp)?,
                        _ => return Err(ctx.unknown(ln, &lp)),
                    }
                }
                s.logging = Some(logging);
            }
            "user" => s.user = ctx.string(n, &p)?,
            "working_dir" => s.working_dir = ctx.string(n, &p)?,
            "extra_hosts" => s.extra_hosts = extra_hosts(ctx, n, &p)?,
            "hostname" => s.hostname = ctx.string(n, &p)?,
            "domainname" => s.domainname = ctx.string(n, &p)?,
            "tmpfs" => s.tmpfs = ctx.strings(n, &p)?,
            "stop_grace_period" => s.stop_grace_period = Some(ctx.duration(n, &p)? / 1_000_000_000),
            "stop_signal" => s.stop_signal = ctx.string(n, &p)?,
            "init" => s.init = Some(ctx.bool(n, &p)?),
            "read_only" => s.read_only = ctx.bool(n, &p)?,
            "stdin_open" => s.stdin_open = ctx.bool(n, &p)?,
            "tty" => s.tty = ctx.bool(n, &p)?,
            "profiles" => s.profiles = ctx.list(n, &p)?,
            "pull_policy" => {
                s.pull_policy = match ctx.string(n, &p)?.as_str() {
                    "always" => "always".into(),
                    "missing" | "if_not_present" => "missing".into(),
                    "never" => "never".into(),
                    "build" => {
                        return Err(ctx.err(
                            n,
                            &p,
                            "building images is not supported: use always, missing or never",
                        ))
                    }
                    _ => {
                        return Err(ctx.err(
                            n,
                            &p,
                            "expected always, missing, if_not_present or never",
                        ))
                    }
                }
            }
            "scale" => s.scale = count(ctx, n, &p)?,
            "deploy" => deploy(ctx, n, &p, &mut s, &mut replicas, &mut deploy_restart)?,
            "mem_limit" => s.resources.memory = ctx.bytes(n, &p)?,
            "mem_reservation" => s.resources.memory_reservation = ctx.bytes(n, &p)?,
            "memswap_limit" => s.resources.memory_swap = ctx.bytes(n, &p)?,
            "cpus" => s.resources.nano_cpus = ctx.nano_cpus(n, &p)?,
            "cpuset" => s.resources.cpuset = ctx.string(n, &p)?,
            "cpu_shares" => s.resources.cpu_shares = ctx.int(n, &p)?,
            "pids_limit" => s.resources.pids_limit = ctx.int(n, &p)?,
            "device_cgroup_rules" => s.resources.device_cgroup_rules = ctx.list(n, &p)?,
            "sysctls" => s.sysctls = ctx.string_map(n, &p)?,
            "ulimits" => {
                for (k, un, up) in ctx.entries(n, &p)? {
                    let limit = match &un.value {
                        Value::Map(_) => {
                            let mut limit = Ulimit::default();
                            for (uk, vn, vp) in ctx.entries(un, &up)? {
                                match uk {
                                    "soft" => limit.soft = ctx.int(vn, &vp)?,
                                    "hard" => limit.hard = ctx.int(vn, &vp)?,
                                    _ => return Err(ctx.unknown(vn, &vp)),
                                }
                            }
                            limit
                        }
                        _ => {
                            let single = ctx.int(un, &up)?;
                            Ulimit {
                                soft: single,
                                hard: single,
                            }
                        }
                    };
                    s.ulimits.insert(k.to_owned(), limit);
                }
            }
            "dns" => s.dns = ctx.strings(n, &p)?,
            "dns_search" => s.dns_search = ctx.strings(n, &p)?,
            "dns_opt" => s.dns_opt = ctx.list(n, &p)?,
            "security_opt" => s.security_opt = ctx.list(n, &p)?,
            "group_add" => s.group_add = ctx.list(n, &p)?,
            "ipc" => s.ipc = ctx.string(n, &p)?,
            "pid" => s.pid = ctx.string(n, &p)?,
            "shm_size" => s.shm_size = ctx.bytes(n, &p)?,
            "platform" => s.platform = ctx.string(n, &p)?,
            "mac_address" => s.mac_address = ctx.string(n, &p)?,
            "runtime" => s.runtime = ctx.string(n, &p)?,
            "oom_score_adj" => s.oom_score_adj = ctx.int(n, &p)?,
            "userns_mode" => s.userns_mode = ctx.string(n, &p)?,
            "storage_opt" => s.storage_opt = ctx.string_map(n, &p)?,
            "links" => s.links = ctx.list(n, &p)?,
            "volumes_from" => s.volumes_from = ctx.list(n, &p)?,
            "secrets" | "configs" => {
                let defined = if key == "secrets" {
                    &project.secrets
                } else {
                    &project.configs
                };
                let base = if key == "secrets" {
                    "/run/secrets/"
                } else {
                    "/"
                };
                for (item, ip) in ctx.items(n, &p)? {
                    let (source, written) = file_ref(ctx, item, &ip)?;
                    let Some(object) = defined.get(&source) else {
                        return Err(ctx.err(
                            item,
                            &ip,
                            format!("{source:?} is not defined under the top-level {key}:"),
                        ));
                    };
                    let target = if written.starts_with('/') {
                        written.clone()
                    } else if written.is_empty() {
                        format!("{base}{source}")
                    } else {
                        format!("{base}{written}")
                    };
                    // compose-go gives a secret without target its default one
                    // (`transform/secrets.go`), a config none.
                    let file_ref = FileRef {
                        secret: key == "secrets",
                        target: if written.is_empty() && key == "secrets" {
                            target.clone()
                        } else {
                            written
                        },
                        source,
                    };
                    s.volumes.push(Mount {
                        kind: MountType::Bind,
                        source: object.file.to_string_lossy().into_owned(),
                        target,
                        read_only: true,
                        file_ref: Some(file_ref),
                        ..Mount::default()
                    });
                }
            }
            "develop" => return Err(ctx.err(n, &p, "develop (watch) is not supported")),
            "extends" => {}
            k if k.starts_with("x-") => {}
            k if host_setting(ctx, &mut s, k, n, &p)? => {}
            k if UNSUPPORTED.contains(&k) => {
                return Err(ctx.err(n, &p, "not supported by this compose engine: remove it"))
            }
            _ => return Err(ctx.unknown(n, &p)),
        }
    }
    if let Some((bn, bp)) = build {
        if s.image.is_empty() {
            return Err(ctx.err(bn, &bp, "building images is not supported on the device: give the service an image: built elsewhere"));
        }
        ctx.warnings.push(format!(
            "{bp}: building is not supported; using the image {}",
            s.image
        ));
    }
    if s.image.is_empty() {
        return Err(ctx.err(node, path, "image: is missing (the image to run)"));
    }
    if let Some(replicas) = replicas {
        s.scale = replicas;
    }
    if !s.platform.is_empty() {
        ctx.warnings.push(format!(
            "{path}.platform: not used yet; images are pulled and run for the engine's platform"
        ));
    }
    if s.restart.is_empty() {
        if let Some(restart) = deploy_restart {
            s.restart = restart;
        }
    }
    if !s.container_name.is_empty() && s.scale > 1 {
        return Err(ctx.err(
            node,
            path,
            format!(
                "container_name {:?} allows one container, but scale is {}",
                s.container_name, s.scale
            ),
        ));
    }
    if !s.network_mode.is_empty() && !s.networks.is_empty() {
        return Err(ctx.err(
            node,
            &format!("{path}.network_mode"),
            "network_mode and networks exclude each other",
        ));
    }
    // env_file first, in order; environment: overrides.
    for (file, required, line_node, fp) in env_files {
        let full = ctx.dir.join(&file);
        let env = ctx.env;
        let entries =
            read_env_file(ctx.read, &full, &|k| env.get(k).cloned()).map_err(|(line, m)| {
                Box::new(LoadError {
                    file: full.clone(),
                    line,
                    path: String::new(),
                    message: m,
                })
            })?;
        match entries {
            Some(entries) => s
                .environment
                .extend(entries.into_iter().map(|(k, v)| (k, Some(v)))),
            None if required => {
                return Err(ctx.err(
                    line_node,
                    &fp,
                    format!("env file {} not found", full.display()),
                ))
            }
            None => {}
        }
    }
    // A bare key whose variable is unset stays, without a value (compose-go's
    // `MappingWithEquals` keeps it nil, and compose sends `KEY` with no `=`).
    for (key, value) in environment {
        let value = value.or_else(|| ctx.env.get(&key).cloned());
        s.environment.insert(key, value);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use crate::compose::load::tests::load_files;

    #[test]
    fn a_repeated_port_is_kept_once_as_compose_go_enforces_unicity() {
        let p = crate::compose::load::tests::load_ok(
            "services:\n  web:\n    image: a\n    ports: [\"8080:80\", \"81:81\", \"0.0.0.0:8080:80/tcp\", \"8080:82\"]\n",
        );
        let ports: Vec<String> = p.services["web"]
            .ports
            .iter()
            .map(|p| format!("{}:{}:{}", p.host_ip, p.published, p.target))
            .collect();
        // As in v2.40.3, a port published twice for different targets is not refused at load.
        assert_eq!(ports, ["0.0.0.0:8080:80", ":81:81", ":8080:82"]);
    }

    #[test]
    fn environment_precedence_dotenv_and_env_files() {
        let (_dir, project) = load_files(
            &[
                ("compose.yaml", "services:\n  web:\n    image: ${IMAGE}:${TAG:-1}\n    env_file: [web.env, {path: missing.env, required: false}]\n    environment:\n      - FROM_FILE=override\n      - BARE\n      - GONE\n      - PROJECT=$COMPOSE_PROJECT_NAME\n      - LIT=$$HOME\n    labels: {u: $UNSET}\n"),
                (".env", "IMAGE=from-dotenv\nTAG=2\nBARE=from dotenv\n"),
                ("web.env", "FROM_FILE=file\nONLY_FILE=${TAG}\n"),
            ],
            &[("TAG", "3")],
        );
        let p = project.unwrap();
        let web = &p.services["web"];
        assert_eq!(web.image, "from-dotenv:3");
        let env: Vec<(&str, Option<&str>)> = web
            .environment
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        assert_eq!(
            env,
            [
                ("BARE", Some("from dotenv")),
                ("FROM_FILE", Some("override")),
                ("GONE", None),
                ("LIT", Some("$HOME")),
                ("ONLY_FILE", Some("3")),
                ("PROJECT", Some("demo"))
            ]
        );
        let body = crate::compose::body::container(&p, "web", 1, "i", super::super::tests::API);
        assert_eq!(body["Env"][2], "GONE", "a bare unset key is sent without =");
        assert_eq!(
            p.warnings,
            ["variable UNSET is not set: using an empty string"]
        );
        let (_dir, project) = load_files(
            &[(
                "compose.yaml",
                "services:\n  web:\n    image: a\n    env_file: nope.env\n",
            )],
            &[],
        );
        assert!(project
            .unwrap_err()
            .to_string()
            .contains("services.web.env_file: env file "));
    }
}
