//! The load pipeline, as compose-go's `loader` runs it, a module a stage: [`read`] the file (at
//! most [`read::MAX_FILE`] bytes) into its YAML tree, and the environment (the caller's over
//! `.env`) → [`interpolation`] of every value → keys checked and bound to the model
//! ([`crate::compose::model`]): the top-level [`networks_volumes`], secrets and configs, then
//! each [`service`](mod@service) after same-file [`extends`] (its structured keys in
//! [`service_settings`], its string syntaxes in [`short_forms`]) →
//! [`normalize`](mod@normalize) (profiles, implicit dependencies, the default network, unused
//! resources dropped, cycles refused). The stages share a [`context`] (the file, the
//! environment, warnings, the typed reading of nodes) and fail with an [`error`] naming the
//! file, line and key path. Only reading files touches the system.

mod context;
mod error;
mod extends;
mod interpolation;
mod networks_volumes;
mod normalize;
mod read;
mod service;
mod service_host;
mod service_settings;
mod short_forms;

pub use error::LoadError;
pub use read::ReadFile;

use super::interpolate;
use super::model::Project;
use super::yaml::{Node, Value};
use super::Source;
use context::Ctx;
use error::Fail;
use extends::extended;
use networks_volumes::{file_object, network, volume};
use normalize::normalize;
use read::read_bounded;
use service::service;
use std::collections::BTreeSet;

/// compose-go's `NormalizeProjectName`: lower case, only `[a-z0-9_-]` kept, leading `_` and `-`
/// dropped.
pub fn normalize_project_name(name: &str) -> String {
    let kept: String = name
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    kept.trim_start_matches(['_', '-']).to_owned()
}

pub fn load(source: &Source) -> Result<Project, LoadError> {
    load_with(source, &read_bounded)
}

/// [`load`] with files read by `read` (the pipeline is otherwise pure: fuzzing and tests).
pub fn load_with(source: &Source, read: ReadFile) -> Result<Project, LoadError> {
    pipeline(source, read).map_err(|e| *e)
}

fn pipeline(source: &Source, read: ReadFile) -> Result<Project, Fail> {
    let (file, root) = read::compose_file(source, read)?;
    let env = read::environment(source, read)?;
    let mut ctx = Ctx {
        read,
        file: &file,
        dir: &source.working_dir,
        env: &env,
        warnings: Vec::new(),
        unset: BTreeSet::new(),
        budget: interpolate::MAX_OUTPUT,
    };
    let Value::Map(top) = &root.value else {
        return Err(ctx.err(&root, "", "expected a mapping with services: at the top"));
    };

    let name = project_name(&mut ctx, source, top)?;
    let mut env = env.clone();
    env.entry("COMPOSE_PROJECT_NAME".into())
        .or_insert_with(|| name.clone());
    ctx.env = &env;

    let root = ctx.interpolate(&root, "")?;
    let Value::Map(top) = &root.value else {
        unreachable!("interpolation keeps the shape")
    };
    let mut project = Project {
        name: name.clone(),
        working_dir: source.working_dir.clone(),
        config_files: vec![file.clone()],
        env_file: source.env_file.as_ref().map(|p| source.working_dir.join(p)),
        ..Project::default()
    };
    let mut services_node = None;
    for (key, node) in top {
        match key.as_str() {
            "version" => ctx.warnings.push(format!(
                "{}: `version` is obsolete and ignored",
                file.display()
            )),
            "name" => {}
            "services" => services_node = Some(node),
            "networks" => {
                for (key, node, path) in ctx.entries(node, "networks")? {
                    let network = network(&mut ctx, key, node, &path, &name)?;
                    project.networks.insert(key.to_owned(), network);
                }
            }
            "volumes" => {
                for (key, node, path) in ctx.entries(node, "volumes")? {
                    let volume = volume(&mut ctx, key, node, &path, &name)?;
                    project.volumes.insert(key.to_owned(), volume);
                }
            }
            "secrets" | "configs" => {
                for (name, node, path) in ctx.entries(node, key)? {
                    let object = file_object(&mut ctx, node, &path)?;
                    let objects = if key == "secrets" {
                        &mut project.secrets
                    } else {
                        &mut project.configs
                    };
                    objects.insert(name.to_owned(), object);
                }
            }
            "include" => {
                return Err(ctx.err(
                    node,
                    key,
                    "include is not supported: put the services in this file",
                ))
            }
            k if k.starts_with("x-") => {}
            _ => return Err(ctx.err(
                node,
                key,
                "unknown key (expected services, networks, volumes, secrets, configs, name or x-*)",
            )),
        }
    }
    let Some(services_node) = services_node else {
        return Err(ctx.err(&root, "services", "missing: a compose file needs services:"));
    };
    let services = ctx.entries(services_node, "services")?;
    for (key, node, path) in &services {
        let node = extended(&ctx, &services, key, node, path, 0)?;
        let service = service(&mut ctx, &project, &node, path)?;
        project.services.insert((*key).to_owned(), service);
    }
    normalize(&mut ctx, &mut project, &services)?;
    project.warnings = ctx.warnings;
    project.warnings.extend(
        ctx.unset
            .iter()
            .map(|n| format!("variable {n} is not set: using an empty string")),
    );
    Ok(project)
}

/// `-p`, else `name:`, else `COMPOSE_PROJECT_NAME`, else the folder's name normalised.
fn project_name(ctx: &mut Ctx, source: &Source, top: &[(String, Node)]) -> Result<String, Fail> {
    let (name, what) = if !source.project_name.is_empty() {
        (source.project_name.clone(), "project name")
    } else if let Some((_, node)) = top.iter().find(|(k, _)| k == "name") {
        let node = ctx.interpolate(node, "name")?;
        (ctx.string(&node, "name")?, "name")
    } else if let Some(name) = ctx
        .env
        .get("COMPOSE_PROJECT_NAME")
        .filter(|n| !n.is_empty())
    {
        (name.clone(), "COMPOSE_PROJECT_NAME")
    } else {
        let base = source
            .working_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (normalize_project_name(&base), "the project folder's name")
    };
    if name.is_empty() || name != normalize_project_name(&name) {
        return Err(Box::new(LoadError {
            file: ctx.file.to_owned(),
            line: None,
            path: String::new(),
            message: format!(
                "invalid project name {name:?} ({what}): it must be lower case letters, digits, _ and -, starting with a letter or digit (try {:?})",
                normalize_project_name(&name)
            ),
        }));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::body;
    use crate::compose::yaml;
    use crate::docker::ApiVersion;
    use serde_json::json;
    use std::path::Path;

    pub(super) const API: ApiVersion = ApiVersion {
        major: 1,
        minor: 41,
    };

    /// `compose.yaml` (and more files) in a fresh project folder `demo`, loaded with `env`.
    pub(super) fn load_files(
        files: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> (tempfile::TempDir, Result<Project, LoadError>) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("demo");
        std::fs::create_dir(&root).unwrap();
        for (name, text) in files {
            std::fs::write(root.join(name), text).unwrap();
        }
        let source = Source {
            working_dir: root,
            files: vec!["compose.yaml".into()],
            environment: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Source::default()
        };
        let project = load(&source);
        (dir, project)
    }

    pub(super) fn load_ok(yaml: &str) -> Project {
        let (_dir, project) = load_files(&[("compose.yaml", yaml)], &[]);
        project.unwrap()
    }

    pub(super) fn load_err(yaml: &str) -> String {
        let (_dir, project) = load_files(&[("compose.yaml", yaml)], &[]);
        let e = project.unwrap_err();
        assert!(e.file.ends_with("demo/compose.yaml"), "{e}");
        format!("line {}: {}: {}", e.line.unwrap_or(0), e.path, e.message)
    }

    #[test]
    fn errors_name_the_key_path_and_line() {
        assert_eq!(
            load_err("services:\n  web:\n    image: a\n    portz: [80]\n"),
            "line 4: services.web.portz: unknown key"
        );
        assert_eq!(
            load_err("services:\n  web:\n    image: a\n    ports:\n      - 80\n      - nope\n"),
            "line 6: services.web.ports[1]: \"nope\" is not a port: expected [IP:][HOST:]CONTAINER[/PROTOCOL], like 8080:80 or 127.0.0.1:53:53/udp"
        );
        assert_eq!(
            load_err("services:\n  web:\n    image: a\n    environment:\n      A: ${NEED:?set NEED}\n"),
            "line 5: services.web.environment.A: required variable NEED is missing a value: set NEED"
        );
        assert!(
            load_err("services:\n  web:\n    image: a\n    volumes: [data:/d]\n")
                .contains("services.web.volumes[0]: volume \"data\" is not declared")
        );
        assert!(
            load_err("services:\n  web:\n    image: a\n    depends_on: [db]\n")
                .contains("services.web.depends_on: service \"db\" is not defined")
        );
        assert!(load_err("services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n")
            .contains("dependency cycle: a -> b -> a"));
        assert!(load_err("services:\n  web:\n    build: .\n")
            .contains("services.web.build: building images is not supported"));
        assert!(load_err(
            "services:\n  web:\n    image: a\n    extends: {file: b.yml, service: x}\n"
        )
        .contains("services.web.extends.file: extends from another file is not supported"));
        assert!(load_err("include: [a.yml]\nservices: {}\n")
            .contains("include: include is not supported"));
        assert!(
            load_err("services:\n  web:\n    image: a\n    restart: sometimes\n").contains(
                "services.web.restart: expected no, always, on-failure[:N] or unless-stopped"
            )
        );
        assert!(
            load_err("services:\n  web:\n    image: a\n    privileged: maybe\n")
                .contains("services.web.privileged: expected true or false")
        );
        assert!(
            load_err("services:\n  web:\n    image: a\n    container_name: w\n    scale: 2\n")
                .contains("allows one container, but scale is 2")
        );
        assert!(
            load_err("services:\n  web:\n    image: a\n    cpu_count: 1\n")
                .contains("not supported by this compose engine")
        );
        assert!(
            load_err("services:\n  web:\n    image: a\n    ports: [80\n")
                .contains("not valid YAML")
        );
    }

    #[test]
    fn deploy_resources_keys_are_those_of_compose_schema() {
        let deploy = |resources: &str| {
            format!("services:\n  web:\n    image: a\n    deploy:\n      resources:\n        {resources}\n")
        };
        // compose-go's schema refuses these (`additional properties 'foo' not allowed`), even
        // empty or null.
        for unknown in ["foo: {}", "foo: null", "foo: {memory: 1g}"] {
            assert_eq!(
                load_err(&deploy(unknown)),
                "line 6: services.web.deploy.resources.foo: unknown key (expected limits or reservations)",
                "{unknown}"
            );
        }
        assert_eq!(
            load_err(&deploy("limits: {foo: 1}")),
            "line 6: services.web.deploy.resources.limits.foo: unknown key"
        );
        assert!(load_err(&deploy("reservations: {generic_resources: []}"))
            .contains("generic_resources is a Swarm setting and not supported"));
        // Extensions are allowed at both levels.
        let web = load_ok(&deploy("x-a: {}\n        limits: {x-b: 1, memory: 1m}"));
        assert_eq!(web.services["web"].resources.memory, 1024 * 1024);
    }

    #[test]
    fn project_names_are_checked() {
        let (_dir, p) = load_files(&[("compose.yaml", "name: My_App\nservices: {}\n")], &[]);
        let e = p.unwrap_err().to_string();
        assert!(
            e.contains("invalid project name \"My_App\" (name)") && e.contains("try \"my_app\""),
            "{e}"
        );
        assert_eq!(normalize_project_name("edge_My Stack.1"), "edge_mystack1");
        assert_eq!(normalize_project_name("-_x"), "x");
        // The folder's name is normalised, `name:` is taken as it is.
        assert_eq!(load_ok("services: {}\n").name, "demo");
        assert_eq!(load_ok("name: other\nservices: {}\n").name, "other");
    }

    /// `links:` (on every endpoint too, `getLinks`), capabilities as the Docker client
    /// normalises them, a file secret's empty bind options, bind paths as compose-go keeps them,
    /// and the empty lists and maps v2 sends.
    #[test]
    fn links_capabilities_secrets_and_paths_as_compose_sends_them() {
        let p = load_ok(
            "services:\n  db:\n    image: pg\n    scale: 2\n\
             \x20 web:\n    image: nginx\n    links: [\"db:database\"]\n    external_links: [ext]\n\
             \x20   cap_add: [net_admin, CAP_SYS_TIME, NET_ADMIN]\n    secrets: [pw]\n    configs: [conf]\n\
             \x20   volumes: [\"./media:/media/\", \"/var/lib/docker/:/docker:ro\"]\n\
             secrets: {pw: {file: ./pw}}\nconfigs: {conf: {file: ./conf}}\n",
        );
        let body = body::container(&p, "web", 1, "sha256:i", API);
        let links = json!([
            "demo-db-1:database",
            "demo-db-1:db-1",
            "demo-db-1:demo-db-1",
            "demo-db-2:database",
            "demo-db-2:db-1",
            "demo-db-2:demo-db-1",
            "ext:ext"
        ]);
        assert_eq!(body["HostConfig"]["Links"], links);
        let endpoint = &body["NetworkingConfig"]["EndpointsConfig"]["demo_default"];
        assert_eq!(endpoint["Links"], links);
        assert!(endpoint.get("IPAMConfig").is_none(), "{endpoint}");
        assert_eq!(
            body["Labels"]["com.docker.compose.depends_on"],
            "db:service_started:true"
        );
        let host = &body["HostConfig"];
        assert_eq!(host["CapAdd"], json!(["CAP_NET_ADMIN", "CAP_SYS_TIME"]));
        assert_eq!(host["ExtraHosts"], json!([]));
        assert_eq!(host["PortBindings"], json!({}));
        assert_eq!(body["ExposedPorts"], json!({}));
        let dir = p.working_dir.display().to_string();
        assert_eq!(
            host["Binds"],
            json!([
                format!("{dir}/media:/media:rw"),
                "/var/lib/docker/:/docker:ro"
            ])
        );
        let mounts: Vec<String> = host["Mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| format!("{} {}", m["Target"], m["BindOptions"]))
            .collect();
        assert_eq!(mounts, [r#""/run/secrets/pw" {}"#, r#""/conf" null"#]);
    }

    /// What compose 2.40.3 sends for these keys (pkg/compose/create.go), empty fields aside.
    #[test]
    fn container_create_body_matches_compose() {
        let p = load_ok(
            "x-common: &common\n  restart: unless-stopped\n  logging: {driver: json-file, options: {max-size: 10m, max-file: \"3\"}}\n\
             services:\n  web:\n    <<: *common\n    image: nginx:1\n    command: nginx -g 'daemon off;'\n    entrypoint: []\n\
             \x20   environment: {B: 2, A: one}\n    ports: [\"127.0.0.1:8080:80\"]\n    expose: [\"9000\"]\n\
             \x20   volumes:\n      - data:/data:ro\n      - ./conf:/etc/nginx/conf.d\n      - {type: bind, source: /srv, target: /srv, bind: {propagation: rslave}}\n      - {type: tmpfs, target: /cache, tmpfs: {size: 1m}}\n\
             \x20   networks: {front: {aliases: [www], ipv4_address: 172.30.0.5}, back: {priority: 10}}\n\
             \x20   depends_on: {db: {condition: service_healthy}}\n    labels: [com.example.role=web]\n\
             \x20   healthcheck: {test: curl -f http://localhost, interval: 10s, timeout: 5s, retries: 3, start_period: 1m}\n\
             \x20   privileged: true\n    devices: [\"/dev/ttyUSB0:/dev/ttyS0\"]\n    cap_add: [NET_ADMIN]\n    cap_drop: [ALL]\n\
             \x20   user: \"1000:1000\"\n    working_dir: /app\n    extra_hosts: [\"gw:10.0.0.1\", \"alt=10.0.0.2\"]\n    hostname: web1\n\
             \x20   domainname: lan\n    tmpfs: [/run:size=64k]\n    stop_grace_period: 1m30s\n    stop_signal: SIGQUIT\n    init: true\n\
             \x20   read_only: true\n    stdin_open: true\n    tty: true\n    mem_limit: 64m\n    cpus: 0.5\n    pids_limit: 100\n\
             \x20   ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 64}\n    sysctls: {net.core.somaxconn: 1024}\n    dns: 1.1.1.1\n\
             \x20 db:\n    image: postgres:16\n    healthcheck: {test: [CMD, pg_isready], disable: false}\n    network_mode: bridge\n\
             networks: {front: {}, back: {}}\nvolumes: {data: {}}\n",
        );
        let body = body::container(&p, "web", 1, "sha256:img", API);
        let dir = p.working_dir.display().to_string();
        let labels = &body["Labels"];
        assert_eq!(labels["com.example.role"], "web");
        assert_eq!(labels["com.docker.compose.project"], "demo");
        assert_eq!(labels["com.docker.compose.service"], "web");
        assert_eq!(labels["com.docker.compose.version"], "2.40.3");
        assert_eq!(labels["com.docker.compose.oneoff"], "False");
        assert_eq!(labels["com.docker.compose.container-number"], "1");
        assert_eq!(
            labels["com.docker.compose.depends_on"],
            "db:service_healthy:false"
        );
        assert_eq!(labels["com.docker.compose.image"], "sha256:img");
        assert_eq!(labels["com.docker.compose.project.working_dir"], dir);
        assert_eq!(
            labels["com.docker.compose.project.config_files"],
            format!("{dir}/compose.yaml")
        );
        assert_eq!(
            labels["com.docker.compose.config-hash"]
                .as_str()
                .unwrap()
                .len(),
            64
        );
        let mut body = body;
        body.as_object_mut().unwrap().remove("Labels");
        assert_eq!(
            body,
            json!({
                "Hostname": "web1", "Domainname": "lan", "User": "1000:1000",
                "ExposedPorts": {"80/tcp": {}, "9000": {}},
                "Tty": true, "OpenStdin": true, "AttachStdout": true, "AttachStderr": true,
                "Cmd": ["nginx", "-g", "daemon off;"], "Image": "nginx:1", "WorkingDir": "/app", "Entrypoint": [],
                "StopSignal": "SIGQUIT", "Env": ["A=one", "B=2"],
                "Healthcheck": {"Test": ["CMD-SHELL", "curl -f http://localhost"], "Interval": 10_000_000_000u64,
                                "Timeout": 5_000_000_000u64, "StartPeriod": 60_000_000_000u64, "Retries": 3},
                "StopTimeout": 90,
                "HostConfig": {
                    "Binds": ["demo_data:/data:ro", format!("{dir}/conf:/etc/nginx/conf.d:rw")],
                    "Mounts": [
                        {"Type": "bind", "Source": "/srv", "Target": "/srv", "BindOptions": {"Propagation": "rslave"}},
                        {"Type": "tmpfs", "Target": "/cache", "TmpfsOptions": {"SizeBytes": 1_048_576}},
                    ],
                    "CapAdd": ["CAP_NET_ADMIN"], "CapDrop": ["ALL"], "Init": true, "ReadonlyRootfs": true,
                    "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
                    "Sysctls": {"net.core.somaxconn": "1024"},
                    "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
                    "Memory": 67_108_864, "NanoCpus": 500_000_000, "PidsLimit": 100,
                    "Devices": [{"PathOnHost": "/dev/ttyUSB0", "PathInContainer": "/dev/ttyS0", "CgroupPermissions": "rwm"}],
                    "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}, {"Name": "nproc", "Soft": 64, "Hard": 64}],
                    "Dns": ["1.1.1.1"], "ExtraHosts": ["gw:10.0.0.1", "alt:10.0.0.2"], "Privileged": true,
                    "Tmpfs": {"/run": "size=64k"},
                    "LogConfig": {"Type": "json-file", "Config": {"max-file": "3", "max-size": "10m"}},
                    "NetworkMode": "demo_back",
                },
                "NetworkingConfig": {"EndpointsConfig": {
                    "demo_back": {"Aliases": ["demo-web-1", "web"], "IPAMConfig": {}},
                }},
            })
        );
        // Before API 1.44 the other networks are connected after create.
        assert_eq!(
            body::later_networks(&p, "web", 1, API),
            [(
                "demo_front".to_owned(),
                json!({"Container": "demo-web-1", "EndpointConfig":
                {"Aliases": ["demo-web-1", "web", "www"], "IPAMConfig": {"IPv4Address": "172.30.0.5"}}})
            )]
        );
        let newer = body::container(
            &p,
            "web",
            1,
            "sha256:img",
            ApiVersion {
                major: 1,
                minor: 44,
            },
        );
        assert_eq!(
            newer["NetworkingConfig"]["EndpointsConfig"]
                .as_object()
                .unwrap()
                .len(),
            2
        );
        let db = body::container(&p, "db", 1, "sha256:pg", API);
        assert_eq!(db["HostConfig"]["NetworkMode"], "bridge");
        assert_eq!(db["Healthcheck"], json!({"Test": ["CMD", "pg_isready"]}));
        assert!(db.get("NetworkingConfig").is_none());
        assert_eq!(
            body::network(&p, "front"),
            // The hashes: SHA-256 of `{"name":"demo_front","ipam":{}}` and
            // `{"name":"demo_data","driver":"local"}`, as compose-go marshals them.
            json!({"Name": "demo_front", "CheckDuplicate": true, "Labels": {
                "com.docker.compose.config-hash": "a5bf3cb7e95ac39d60f43d425b3a11b1484f5a5f760e02f65172e5093954356d",
                "com.docker.compose.network": "front", "com.docker.compose.project": "demo",
                "com.docker.compose.version": "2.40.3"}})
        );
        assert_eq!(
            body::volume(&p, "data"),
            json!({"Name": "demo_data", "Labels": {
                "com.docker.compose.config-hash": "504ad458c80a54e9120954e1d0ad581a3e0d7b50499e9f2755876d04a2d3321a",
                "com.docker.compose.project": "demo",
                "com.docker.compose.version": "2.40.3", "com.docker.compose.volume": "data"}})
        );
    }

    /// Seeded random edits of valid files (tokens inserted, bytes cut, lines repeated): the
    /// pipeline answers a project or an error, never a panic, and a project's create bodies
    /// and YAML output can be made.
    #[test]
    fn mutated_files_never_panic() {
        let seeds = [
            "x-a: &a\n  restart: always\n  environment: {A: \"${A:-x}\"}\nservices:\n  web:\n    <<: *a\n    image: a:${TAG-1}\n    command: sh -c 'echo $$A'\n    ports: [\"127.0.0.1:80-81:80-81/udp\", {target: 1, published: 2}]\n    volumes: [./a:/a:ro, d:/d, /anon]\n    networks: {n: {aliases: [w], priority: 2}}\n    depends_on: {db: {condition: service_healthy}}\n    healthcheck: {test: [CMD, x], interval: 1m30s, retries: 2}\n    deploy: {replicas: 2, resources: {limits: {memory: 1g}}}\n    extra_hosts: {h: 1.2.3.4}\n    env_file: [{path: e.env, required: false}]\n  db:\n    image: b\n    extends: base\n    network_mode: host\n  base:\n    image: c\n    labels: {a: b}\n    healthcheck: {test: x}\nvolumes: {d: {}}\nnetworks: {n: {ipam: {config: [{subnet: 10.0.0.0/24}]}}}\n",
            "name: p\nservices:\n  a:\n    image: x\n    environment:\n      - K=V\n      - BARE\n    labels: [a=b]\n    tmpfs: /t:size=1k\n    ulimits: {nofile: {soft: 1, hard: 2}, n: 3}\n    secrets: [s]\nsecrets: {s: {file: ./s}}\n",
        ];
        let tokens = [
            "$",
            "${",
            "}",
            ":",
            "- ",
            "\n",
            "  ",
            "&a ",
            "*a",
            "<<: *a",
            "[",
            "]",
            "{",
            "'",
            "\"",
            "#",
            "é",
            "\t",
            "-1",
            "99999999999",
            "~",
            "!!str ",
            "---\n",
            ",",
            "=",
            "/",
            "\\",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        let source = Source {
            working_dir: "/p".into(),
            files: vec!["compose.yaml".into()],
            ..Source::default()
        };
        for seed in seeds {
            let read = |p: &Path| Ok(p.ends_with("compose.yaml").then(|| seed.to_owned()));
            if let Err(e) = load_with(&source, &read) {
                panic!("seed: {e}");
            }
        }
        let mut loaded = 0;
        for i in 0..4000 {
            let mut text = seeds[i % seeds.len()].to_owned();
            for _ in 0..1 + next() % 4 {
                let mut at = next() % (text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                match next() % 3 {
                    0 => text.insert_str(at, tokens[next() % tokens.len()]),
                    1 => {
                        let mut end = (at + 1 + next() % 8).min(text.len());
                        while !text.is_char_boundary(end) {
                            end += 1;
                        }
                        text.replace_range(at..end, "");
                    }
                    _ => {
                        let line = text[at..].split('\n').next().unwrap_or_default().to_owned();
                        text.insert_str(at, &format!("{line}\n"));
                    }
                }
            }
            let read = |p: &Path| -> Result<Option<String>, String> {
                Ok(match p.file_name().and_then(|n| n.to_str()) {
                    Some("compose.yaml") => Some(text.clone()),
                    Some(".env" | "e.env") => Some("A=1\nTAG='2'\n".into()),
                    _ => None,
                })
            };
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let project = load_with(&source, &read).ok()?;
                {
                    for (key, service) in &project.services {
                        for n in 1..=service.scale.min(3) {
                            body::container(&project, key, n, "i", API);
                        }
                    }
                    for key in project.networks.keys() {
                        body::network(&project, key);
                    }
                    yaml::parse(&crate::compose::to_yaml(&json!(project))).unwrap();
                }
                Some(())
            }));
            match outcome {
                Ok(Some(())) => loaded += 1,
                Ok(None) => {}
                Err(_) => panic!("panicked on:\n{text}"),
            }
        }
        // The edits must exercise both outcomes, or the test proves little.
        assert!((50..3950).contains(&loaded), "{loaded} of 4000 loaded");
    }

    #[test]
    fn config_hash_is_stable_and_sensitive() {
        let base = "services:\n  web:\n    image: a\n    environment: {A: 1, B: 2}\n    pull_policy: always\n";
        let reordered = "services:\n  web:\n    pull_policy: missing\n    environment: [B=2, A=1]\n    image: a\n    scale: 1\n";
        let hash = |yaml: &str| {
            let project = load_ok(yaml);
            crate::compose::hash::config_hash(&project, &project.services["web"])
        };
        assert_eq!(hash(base), hash(reordered));
        assert_eq!(hash(base), hash(base));
        assert_ne!(hash(base), hash(&base.replace("B: 2", "B: 3")));
        assert_ne!(hash(base), hash(&format!("{base}    tty: true\n")));
    }
}
