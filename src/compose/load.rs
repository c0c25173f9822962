//! The load pipeline, as compose-go's `loader` runs it: read the file (at most [`MAX_FILE`]
//! bytes) → YAML tree ([`super::yaml`]) → the environment (caller's over `.env`) →
//! interpolation of every value ([`super::interpolate`]) → keys checked and bound to the model
//! ([`super::model`]), short forms expanded → normalisation (default network, resource names,
//! implicit dependencies, profiles, `env_file:` merged). Only reading files touches the system.

use super::interpolate;
use super::model::*;
use super::yaml::{self, Node, Value};
use super::{dotenv, Source};
use crate::config::duration;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest compose, `.env` or `env_file:` file read.
pub const MAX_FILE: u64 = 1024 * 1024;

/// What is wrong, and where: the file, its line when known, the key path
/// (`services.web.ports[1]`), and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub path: String,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for LoadError {}

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

/// Reads a file for the pipeline: its text, `None` when it does not exist, or why not.
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> Result<Option<String>, String>;

pub fn load(source: &Source) -> Result<Project, LoadError> {
    load_with(source, &read_bounded)
}

/// [`load`] with files read by `read` (the pipeline is otherwise pure: fuzzing and tests).
pub fn load_with(source: &Source, read: ReadFile) -> Result<Project, LoadError> {
    pipeline(source, read).map_err(|e| *e)
}

/// Errors are boxed inside the pipeline: they are rare, and a small `Result` keeps the code small.
type Fail = Box<LoadError>;

fn pipeline(source: &Source, read: ReadFile) -> Result<Project, Fail> {
    let file = match source.files.as_slice() {
        [file] => source.working_dir.join(file),
        _ => {
            return Err(Box::new(LoadError {
                file: source.working_dir.clone(),
                line: None,
                path: String::new(),
                message: format!(
                "{} compose files given: this engine reads exactly one (merge overrides into it)",
                source.files.len()
            ),
            }))
        }
    };
    let fail = |file: &Path, message: String| {
        Box::new(LoadError {
            file: file.to_owned(),
            line: None,
            path: String::new(),
            message,
        })
    };
    let text = read(&file)
        .and_then(|text| text.ok_or_else(|| "not found".to_owned()))
        .map_err(|m| fail(&file, m))?;
    let root = yaml::parse(&text).map_err(|e| {
        Box::new(LoadError {
            file: file.clone(),
            line: Some(e.line),
            path: String::new(),
            message: format!("not valid YAML: {}", e.message),
        })
    })?;

    let mut env = source.environment.clone();
    let disabled = env
        .get("COMPOSE_DISABLE_ENV_FILE")
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "True"));
    let dotenv_file = match &source.env_file {
        Some(path) => Some((source.working_dir.join(path), true)),
        None => (!disabled).then(|| (source.working_dir.join(".env"), false)),
    };
    if let Some((path, required)) = &dotenv_file {
        let caller = source.environment.clone();
        let entries =
            read_env_file(read, path, &|k| caller.get(k).cloned()).map_err(|(line, m)| {
                Box::new(LoadError {
                    file: path.clone(),
                    line,
                    path: String::new(),
                    message: m,
                })
            })?;
        if entries.is_none() && *required {
            return Err(fail(path, "env file not found".into()));
        }
        for (key, value) in entries.unwrap_or_default() {
            env.entry(key).or_insert(value);
        }
    }

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

fn read_bounded(path: &Path) -> Result<Option<String>, String> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!("larger than {} KiB", MAX_FILE / 1024));
    }
    Ok(Some(text))
}

/// The line (when known) and what is wrong.
type EnvFileError = (Option<usize>, String);

/// The entries of an env file, `None` if it does not exist.
fn read_env_file(
    read: ReadFile,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Vec<(String, String)>>, EnvFileError> {
    match read(path).map_err(|m| (None, m))? {
        Some(text) => dotenv::parse(&text, env)
            .map(Some)
            .map_err(|(line, m)| (Some(line), m)),
        None => Ok(None),
    }
}

struct Ctx<'a> {
    read: ReadFile<'a>,
    file: &'a Path,
    dir: &'a Path,
    env: &'a BTreeMap<String, String>,
    warnings: Vec<String>,
    unset: BTreeSet<String>,
    /// What interpolating the file may still produce.
    budget: usize,
}

type Entries<'n> = Vec<(&'n str, &'n Node, String)>;

impl Ctx<'_> {
    fn err(&self, node: &Node, path: &str, message: impl Into<String>) -> Fail {
        Box::new(LoadError {
            file: self.file.to_owned(),
            line: Some(node.line),
            path: path.to_owned(),
            message: message.into(),
        })
    }

    /// `node` with every scalar value (not key) substituted; `x-*` subtrees are left alone.
    fn interpolate(&mut self, node: &Node, path: &str) -> Result<Node, Fail> {
        let value = match &node.value {
            Value::Null => Value::Null,
            Value::Scalar(text, plain) => {
                let env = self.env;
                let mut unset = Vec::new();
                let out = interpolate::substitute(
                    text,
                    &|n| env.get(n).cloned(),
                    &mut |n| unset.push(n.to_owned()),
                    self.budget,
                )
                .map_err(|m| self.err(node, path, m))?;
                self.budget -= out.len();
                self.unset.extend(unset);
                Value::Scalar(out, *plain)
            }
            Value::Seq(items) => Value::Seq(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.interpolate(item, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Map(entries) => Value::Map(
                entries
                    .iter()
                    .map(|(key, item)| {
                        if key.starts_with("x-") {
                            return Ok::<_, Fail>((key.clone(), item.clone()));
                        }
                        Ok((key.clone(), self.interpolate(item, &join(path, key))?))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Node {
            value,
            line: node.line,
        })
    }

    fn entries<'n>(&self, node: &'n Node, path: &str) -> Result<Entries<'n>, Fail> {
        match &node.value {
            Value::Map(entries) => Ok(entries
                .iter()
                .map(|(k, n)| (k.as_str(), n, join(path, k)))
                .collect()),
            Value::Null => Ok(Vec::new()),
            _ => Err(self.err(node, path, "expected a mapping")),
        }
    }

    fn items<'n>(&self, node: &'n Node, path: &str) -> Result<Vec<(&'n Node, String)>, Fail> {
        match &node.value {
            Value::Seq(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, n)| (n, format!("{path}[{i}]")))
                .collect()),
            _ => Err(self.err(node, path, "expected a list")),
        }
    }

    fn string(&self, node: &Node, path: &str) -> Result<String, Fail> {
        match &node.value {
            Value::Scalar(text, _) => Ok(text.clone()),
            _ => Err(self.err(node, path, "expected a string")),
        }
    }

    /// A string, or a list of strings.
    fn strings(&self, node: &Node, path: &str) -> Result<Vec<String>, Fail> {
        match &node.value {
            Value::Scalar(text, _) => Ok(vec![text.clone()]),
            Value::Seq(_) => self
                .items(node, path)?
                .into_iter()
                .map(|(n, p)| self.string(n, &p))
                .collect(),
            Value::Null => Ok(Vec::new()),
            _ => Err(self.err(node, path, "expected a string or a list of strings")),
        }
    }

    fn list(&self, node: &Node, path: &str) -> Result<Vec<String>, Fail> {
        if matches!(node.value, Value::Scalar(..)) {
            return Err(self.err(node, path, "expected a list of strings"));
        }
        self.strings(node, path)
    }

    fn bool(&self, node: &Node, path: &str) -> Result<bool, Fail> {
        let text = self.string(node, path).unwrap_or_default();
        match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" => Ok(true),
            "false" | "no" | "n" | "off" => Ok(false),
            _ => Err(self.err(node, path, "expected true or false")),
        }
    }

    fn int(&self, node: &Node, path: &str) -> Result<i64, Fail> {
        let text = self.string(node, path).unwrap_or_default();
        text.trim()
            .parse()
            .map_err(|_| self.err(node, path, format!("expected a whole number, not {text:?}")))
    }

    /// CPUs (`0.5`, `2`) in billionths, as Docker's `NanoCpus`.
    fn nano_cpus(&self, node: &Node, path: &str) -> Result<i64, Fail> {
        let text = self.string(node, path).unwrap_or_default();
        scaled(text.trim(), 1_000_000_000).ok_or_else(|| {
            self.err(
                node,
                path,
                format!("expected a number of CPUs, not {text:?}"),
            )
        })
    }

    /// Go duration syntax (`1m30s`), in nanoseconds.
    fn duration(&self, node: &Node, path: &str) -> Result<u64, Fail> {
        let text = self.string(node, path)?;
        duration::parse(&text)
            .map(|d| d.as_nanos().min(u64::MAX.into()) as u64)
            .map_err(|e| {
                self.err(
                    node,
                    path,
                    format!("expected a duration like 30s or 1m30s: {e}"),
                )
            })
    }

    /// `1024`, `512k`, `64m`, `1.5g` (binary units, optional `b`), as Docker's go-units reads
    /// memory sizes; `-1` for "unlimited" where Docker takes it.
    fn bytes(&self, node: &Node, path: &str) -> Result<i64, Fail> {
        let text = self.string(node, path)?;
        let lower = text.trim().to_ascii_lowercase();
        if lower == "-1" {
            return Ok(-1);
        }
        let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &lower[digits.len()..];
        let scale: u64 = match unit.trim_end_matches('b') {
            "" => 1,
            "k" => 1 << 10,
            "m" => 1 << 20,
            "g" => 1 << 30,
            "t" => 1 << 40,
            _ => 0,
        };
        match scaled(digits.trim(), scale) {
            Some(n) if scale > 0 && unit.len() <= 2 => Ok(n),
            _ => Err(self.err(
                node,
                path,
                format!("expected a size like 512m or 1g, not {text:?}"),
            )),
        }
    }

    /// A mapping of scalars, or a list of `KEY=value` (`KEY` alone: `None`).
    fn dict(&self, node: &Node, path: &str) -> Result<Vec<(String, Option<String>)>, Fail> {
        match &node.value {
            Value::Map(_) => self
                .entries(node, path)?
                .into_iter()
                .map(|(k, n, p)| match &n.value {
                    Value::Null => Ok((k.to_owned(), None)),
                    Value::Scalar(text, _) => Ok((k.to_owned(), Some(text.clone()))),
                    _ => Err(self.err(n, &p, "expected a string")),
                })
                .collect(),
            Value::Seq(_) => self
                .items(node, path)?
                .into_iter()
                .map(|(n, p)| {
                    let text = self.string(n, &p)?;
                    Ok(match text.split_once('=') {
                        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                        None => (text, None),
                    })
                })
                .collect(),
            Value::Null => Ok(Vec::new()),
            Value::Scalar(..) => {
                Err(self.err(node, path, "expected a mapping or a list of KEY=value"))
            }
        }
    }

    /// [`Ctx::dict`] with bare keys as empty values.
    fn string_map(&self, node: &Node, path: &str) -> Result<BTreeMap<String, String>, Fail> {
        Ok(self
            .dict(node, path)?
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect())
    }

    /// A path on the host: `~` is `$HOME`, relative to the project folder.
    fn host_path(&self, text: &str) -> String {
        let path = match text.strip_prefix('~') {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                let home = self.env.get("HOME").map_or("/root", String::as_str);
                PathBuf::from(format!("{home}{rest}"))
            }
            _ => self.dir.join(text),
        };
        clean(&path)
    }

    fn unknown(&self, node: &Node, path: &str) -> Fail {
        self.err(node, path, "unknown key")
    }
}

/// A non-negative decimal (`1.5`) times `scale`, without floating point (whose parsing and
/// printing code would cost more than this).
fn scaled(text: &str, scale: u64) -> Option<i64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) && !digits(fraction) || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if whole.len() > 18 {
        return None;
    }
    let fraction = &fraction[..fraction.len().min(18)];
    let whole = u128::from(whole.parse::<u64>().unwrap_or(0));
    let part = u128::from(fraction.parse::<u64>().unwrap_or(0));
    let value =
        whole * u128::from(scale) + part * u128::from(scale) / 10u128.pow(fraction.len() as u32);
    i64::try_from(value).ok()
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `a/./b/../c` as `a/c` (no file system access; the path may not exist yet).
fn clean(path: &Path) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let text = path.to_string_lossy();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A service node with `extends: {service: base}` (same file) merged under it: the service's
/// own keys win, mappings merge key by key.
fn extended(
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

/// Keys compose knows that this engine does not implement.
const UNSUPPORTED: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "cgroup",
    "cgroup_parent",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "credential_spec",
    "external_links",
    "isolation",
    "mem_swappiness",
    "oom_kill_disable",
    "post_start",
    "pre_stop",
    "uts",
    "volume_driver",
];

fn service(ctx: &mut Ctx, project: &Project, node: &Node, path: &str) -> Result<Service, Fail> {
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
                    s.ports.extend(port(ctx, item, &ip)?);
                }
            }
            "expose" => {
                for (item, ip) in ctx.items(n, &p)? {
                    let text = ctx.string(item, &ip)?;
                    let (ports, proto) = text.split_once('/').unwrap_or((&text, "tcp"));
                    let (low, high) = range(ports).ok_or_else(|| {
                        ctx.err(
                            item,
                            &ip,
                            "expected a port or range, like 80, 8000-8010 or 53/udp",
                        )
                    })?;
                    s.expose
                        .extend((low..=high).map(|p| format!("{p}/{proto}")));
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
            "devices" => {
                for (item, ip) in ctx.items(n, &p)? {
                    let text = ctx.string(item, &ip)?;
                    let parts: Vec<&str> = text.split(':').collect();
                    let (source, target, permissions) = match parts.as_slice() {
                        [s] => (*s, *s, "rwm"),
                        [s, t] => (*s, *t, "rwm"),
                        [s, t, p] => (*s, *t, *p),
                        _ => {
                            return Err(ctx.err(
                                item,
                                &ip,
                                "expected /dev/host[:/dev/container[:rwm]]",
                            ))
                        }
                    };
                    s.devices.push(Device {
                        source: source.into(),
                        target: target.into(),
                        permissions: permissions.into(),
                    });
                }
            }
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
                    let (source, target) = file_ref(ctx, item, &ip)?;
                    let Some(object) = defined.get(&source) else {
                        return Err(ctx.err(
                            item,
                            &ip,
                            format!("{source:?} is not defined under the top-level {key}:"),
                        ));
                    };
                    let target = if target.starts_with('/') {
                        target
                    } else if target.is_empty() {
                        format!("{base}{source}")
                    } else {
                        format!("{base}{target}")
                    };
                    s.volumes.push(Mount {
                        kind: MountType::Bind,
                        source: object.file.to_string_lossy().into_owned(),
                        target,
                        read_only: true,
                        ..Mount::default()
                    });
                }
            }
            "develop" => return Err(ctx.err(n, &p, "develop (watch) is not supported")),
            "extends" => {}
            k if k.starts_with("x-") => {}
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
            Some(entries) => s.environment.extend(entries),
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
    for (key, value) in environment {
        match value.or_else(|| ctx.env.get(&key).cloned()) {
            Some(value) => {
                s.environment.insert(key, value);
            }
            None => {
                s.environment.remove(&key);
            }
        }
    }
    Ok(s)
}

/// `command` and `entrypoint`: a string is split as a shell would (no expansion), a list is
/// taken as it is.
fn words(ctx: &Ctx, node: &Node, path: &str) -> Result<Vec<String>, Fail> {
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

fn env_file_list<'n>(
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

/// `a` or `a-b`.
fn range(text: &str) -> Option<(u16, u16)> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let (low, high) = (low.trim().parse().ok()?, high.trim().parse().ok()?);
    (low <= high).then_some((low, high))
}

/// `[ip:][host[-range]:]container[-range][/protocol]`, or the long form.
fn port(ctx: &Ctx, node: &Node, path: &str) -> Result<Vec<Port>, Fail> {
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
                "mode" | "name" | "app_protocol" => {}
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
        });
    }
    Ok(ports)
}

const PROPAGATIONS: &[&str] = &[
    "shared", "rshared", "slave", "rslave", "private", "rprivate",
];

/// `[source:]target[:options]` or the long form.
fn mount(ctx: &Ctx, project: &Project, node: &Node, path: &str) -> Result<Mount, Fail> {
    let mut m = Mount::default();
    if let Value::Map(_) = node.value {
        let mut kind = None;
        for (k, n, p) in ctx.entries(node, path)? {
            match k {
                "type" => kind = Some((ctx.string(n, &p)?, n, p)),
                "source" => m.source = ctx.string(n, &p)?,
                "target" => m.target = ctx.string(n, &p)?,
                "read_only" => m.read_only = ctx.bool(n, &p)?,
                "consistency" => {}
                "bind" => {
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
                    for (vk, vn, vp) in ctx.entries(n, &p)? {
                        match vk {
                            "nocopy" => m.nocopy = ctx.bool(vn, &vp)?,
                            "subpath" => m.subpath = ctx.string(vn, &vp)?,
                            _ => return Err(ctx.unknown(vn, &vp)),
                        }
                    }
                }
                "tmpfs" => {
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
                o => return Err(ctx.err(node, path, format!("unknown volume option {o:?} (expected ro, rw, z, Z, nocopy or a propagation)"))),
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

fn service_networks(
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

fn depends_on(ctx: &Ctx, node: &Node, path: &str) -> Result<BTreeMap<String, Dependency>, Fail> {
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

fn healthcheck(ctx: &Ctx, node: &Node, path: &str) -> Result<Option<Healthcheck>, Fail> {
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
fn extra_hosts(ctx: &Ctx, node: &Node, path: &str) -> Result<Vec<String>, Fail> {
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

fn count(ctx: &Ctx, node: &Node, path: &str) -> Result<u32, Fail> {
    let n = ctx.int(node, path)?;
    u32::try_from(n).map_err(|_| ctx.err(node, path, "expected a count of 0 or more"))
}

fn deploy(
    ctx: &mut Ctx,
    node: &Node,
    path: &str,
    s: &mut Service,
    replicas: &mut Option<u32>,
    restart: &mut Option<String>,
) -> Result<(), Fail> {
    for (k, n, p) in ctx.entries(node, path)? {
        match k {
            "replicas" => *replicas = Some(count(ctx, n, &p)?),
            "resources" => {
                for (rk, rn, rp) in ctx.entries(n, &p)? {
                    for (lk, ln, lp) in ctx.entries(rn, &rp)? {
                        match (rk, lk) {
                            ("limits", "cpus") => s.resources.nano_cpus = ctx.nano_cpus(ln, &lp)?,
                            ("limits", "memory") => s.resources.memory = ctx.bytes(ln, &lp)?,
                            ("limits", "pids") => s.resources.pids_limit = ctx.int(ln, &lp)?,
                            ("reservations", "memory") => {
                                s.resources.memory_reservation = ctx.bytes(ln, &lp)?
                            }
                            ("reservations", "cpus") => {}
                            ("reservations", "devices") => {
                                for (dn, dp) in ctx.items(ln, &lp)? {
                                    s.resources
                                        .device_requests
                                        .push(device_request(ctx, dn, &dp)?);
                                }
                            }
                            ("limits" | "reservations", _) => return Err(ctx.unknown(ln, &lp)),
                            _ => {
                                return Err(ctx.err(
                                    rn,
                                    &rp,
                                    "unknown key (expected limits or reservations)",
                                ))
                            }
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
            "mode" | "labels" | "placement" | "update_config" | "rollback_config"
            | "endpoint_mode" => {
                ctx.warnings.push(format!("{p}: a swarm setting, ignored"));
            }
            _ => return Err(ctx.unknown(n, &p)),
        }
    }
    Ok(())
}

fn device_request(ctx: &Ctx, node: &Node, path: &str) -> Result<DeviceRequest, Fail> {
    let mut d = DeviceRequest::default();
    for (k, n, p) in ctx.entries(node, path)? {
        match k {
            "capabilities" => d.capabilities = ctx.list(n, &p)?,
            "count" => {
                d.count = match ctx.string(n, &p)?.as_str() {
                    "all" => -1,
                    _ => ctx.int(n, &p)?,
                }
            }
            "device_ids" => d.device_ids = ctx.list(n, &p)?,
            "driver" => d.driver = ctx.string(n, &p)?,
            "options" => d.options = ctx.string_map(n, &p)?,
            _ => return Err(ctx.unknown(n, &p)),
        }
    }
    if d.capabilities.is_empty() {
        return Err(ctx.err(node, path, "capabilities: is missing (e.g. [gpu])"));
    }
    Ok(d)
}

fn file_ref(ctx: &Ctx, node: &Node, path: &str) -> Result<(String, String), Fail> {
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

/// A top-level network or volume name: `name:`, else the key when external, else
/// `<project>_<key>`.
fn resource_name(explicit: Option<String>, external: bool, key: &str, project: &str) -> String {
    match explicit {
        Some(name) => name,
        None if external => key.to_owned(),
        None => format!("{project}_{key}"),
    }
}

fn network(
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

fn volume(
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

fn file_object(ctx: &mut Ctx, node: &Node, path: &str) -> Result<FileObject, Fail> {
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

/// The default network, implicit dependencies, profiles, and the checks across services.
fn normalize(ctx: &mut Ctx, project: &mut Project, nodes: &Entries) -> Result<(), Fail> {
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
        // network_mode: service:x, volumes_from and links depend on x.
        let mut implicit = Vec::new();
        if let Some(other) = service.network_mode.strip_prefix("service:") {
            implicit.push(other.to_owned());
        }
        for from in &service.volumes_from {
            let other = from
                .strip_prefix("container:")
                .map_or(Some(from.split(':').next().unwrap_or_default()), |_| None);
            if let Some(other) = other.map(|o| o.strip_prefix("service:").unwrap_or(o)) {
                implicit.push(other.to_owned());
            }
        }
        for link in &service.links {
            implicit.push(link.split(':').next().unwrap_or_default().to_owned());
        }
        for other in implicit {
            service.depends_on.entry(other).or_insert(Dependency {
                condition: Condition::Started,
                required: true,
                restart: false,
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
    use super::*;
    use crate::compose::body;
    use crate::docker::ApiVersion;
    use serde_json::json;

    const API: ApiVersion = ApiVersion {
        major: 1,
        minor: 41,
    };

    /// `compose.yaml` (and more files) in a fresh project folder `demo`, loaded with `env`.
    fn load_files(
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

    #[test]
    fn variables_that_multiply_past_the_interpolation_bound_are_an_error_not_an_oom() {
        // The eighth 512 KiB copy passes 4 MiB.
        let big = "x".repeat(512 * 1024);
        let yaml = format!(
            "services:\n  web:\n    image: a\n    command: [{}]\n",
            ["\"${BIG}\""; 9].join(", ")
        );
        let (_dir, project) = load_files(&[("compose.yaml", &yaml)], &[("BIG", &big)]);
        let e = project.unwrap_err();
        assert_eq!(
            (e.line, e.path.as_str()),
            (Some(4), "services.web.command[7]"),
            "{e}"
        );
        assert!(e.message.contains("more than 4 MiB"), "{e}");
        let yaml = "services:\n  web:\n    image: a\n    command: [\"${BIG}\", \"${BIG}\"]\n";
        let (_dir, project) = load_files(&[("compose.yaml", yaml)], &[("BIG", &big)]);
        assert!(project.is_ok(), "two of them (1 MiB) are fine");
    }

    fn load_ok(yaml: &str) -> Project {
        let (_dir, project) = load_files(&[("compose.yaml", yaml)], &[]);
        project.unwrap()
    }

    fn load_err(yaml: &str) -> String {
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
            load_err("services:\n  web:\n    image: a\n    blkio_config: {}\n")
                .contains("not supported by this compose engine")
        );
        assert!(
            load_err("services:\n  web:\n    image: a\n    ports: [80\n")
                .contains("not valid YAML")
        );
    }

    #[test]
    fn bounds_on_files_and_aliases() {
        let big = format!("services: {{}}\n#{}\n", "x".repeat(MAX_FILE as usize));
        let (_dir, project) = load_files(&[("compose.yaml", &big)], &[]);
        assert!(project
            .unwrap_err()
            .message
            .contains("larger than 1024 KiB"));
        let mut bomb = String::from("x-a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = if i == 0 {
                "a".to_owned()
            } else {
                format!("b{}", i - 1)
            };
            bomb.push_str(&format!("x-b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        bomb.push_str("services: {}\n");
        assert!(load_err(&bomb).contains("alias bomb"));
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
        let env: Vec<(&str, &str)> = web
            .environment
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            [
                ("BARE", "from dotenv"),
                ("FROM_FILE", "override"),
                ("LIT", "$HOME"),
                ("ONLY_FILE", "3"),
                ("PROJECT", "demo")
            ]
        );
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
    fn decimals_without_floating_point() {
        assert_eq!(scaled("1.5", 1_000_000_000), Some(1_500_000_000));
        assert_eq!(scaled(".25", 1_000_000_000), Some(250_000_000));
        assert_eq!(scaled("2", 1 << 30), Some(2 << 30));
        assert_eq!(scaled("0.5", 1 << 20), Some(1 << 19));
        assert_eq!(scaled("3.", 10), Some(30));
        for bad in ["", ".", "-1", "1.2.3", "1e3", "x", "99999999999999999999"] {
            assert_eq!(scaled(bad, 1000), None, "{bad}");
        }
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

    /// What compose 2.29.2 sends for these keys (pkg/compose/create.go), empty fields aside.
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
        assert_eq!(labels["com.docker.compose.version"], "2.29.2");
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
                "ExposedPorts": {"80/tcp": {}, "9000/tcp": {}},
                "Tty": true, "OpenStdin": true, "AttachStdout": true, "AttachStderr": true,
                "Cmd": ["nginx", "-g", "daemon off;"], "Image": "nginx:1", "WorkingDir": "/app", "Entrypoint": [],
                "StopSignal": "SIGQUIT", "Env": ["A=one", "B=2"],
                "Healthcheck": {"Test": ["CMD-SHELL", "curl -f http://localhost"], "Interval": 10_000_000_000u64,
                                "Timeout": 5_000_000_000u64, "StartPeriod": 60_000_000_000u64, "Retries": 3},
                "StopTimeout": 90,
                "HostConfig": {
                    "Binds": [format!("{dir}/conf:/etc/nginx/conf.d:rw")],
                    "Mounts": [
                        {"Type": "volume", "Source": "demo_data", "Target": "/data", "ReadOnly": true},
                        {"Type": "bind", "Source": "/srv", "Target": "/srv", "BindOptions": {"Propagation": "rslave"}},
                        {"Type": "tmpfs", "Target": "/cache", "TmpfsOptions": {"SizeBytes": 1_048_576}},
                    ],
                    "CapAdd": ["NET_ADMIN"], "CapDrop": ["ALL"], "Init": true, "ReadonlyRootfs": true,
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
                    "demo_back": {"Aliases": ["demo-web-1", "web"]},
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
            json!({"Name": "demo_front", "CheckDuplicate": true, "Labels": {
                "com.docker.compose.network": "front", "com.docker.compose.project": "demo",
                "com.docker.compose.version": "2.29.2"}})
        );
        assert_eq!(
            body::volume(&p, "data"),
            json!({"Name": "demo_data", "Labels": {"com.docker.compose.project": "demo",
                "com.docker.compose.version": "2.29.2", "com.docker.compose.volume": "data"}})
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
        let hash = |yaml: &str| load_ok(yaml).services["web"].config_hash();
        assert_eq!(hash(base), hash(reordered));
        assert_eq!(hash(base), hash(base));
        assert_ne!(hash(base), hash(&base.replace("B: 2", "B: 3")));
        assert_ne!(hash(base), hash(&format!("{base}    tty: true\n")));
    }

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
