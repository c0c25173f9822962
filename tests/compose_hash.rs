//! The config hash against Docker Compose v2.40.3's: every service of the compose files in
//! tests/compose-hash/ loaded as v2 loaded them (from /tmp/edge-agent-compose-hash/<case>; no
//! file is read there), and its `com.docker.compose.config-hash` compared with the label v2's
//! `up -d` wrote (hashes.tsv, made by generate.sh).

use edge_agent::compose::{load_with, Source};
use std::path::{Path, PathBuf};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compose-hash");

/// `/tmp/edge-agent-compose-hash/<case>/compose.yaml` is `<case>.yaml`, other files keep their
/// names; `.env` is absent.
fn read(path: &Path) -> Result<Option<String>, String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let case = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let file = match name {
        "compose.yaml" => format!("{case}.yaml"),
        ".env" => return Ok(None),
        other => other.to_owned(),
    };
    std::fs::read_to_string(Path::new(FIXTURES).join(file))
        .map(Some)
        .map_err(|e| e.to_string())
}

#[test]
fn config_hashes_match_compose_v2() {
    let table = std::fs::read_to_string(Path::new(FIXTURES).join("hashes.tsv")).unwrap();
    let mut differ = Vec::new();
    let mut count = 0;
    for line in table.lines() {
        let [case, service, expected] = line.split('\t').collect::<Vec<_>>()[..] else {
            panic!("hashes.tsv: expected case, service and hash: {line:?}");
        };
        let source = Source {
            working_dir: PathBuf::from("/tmp/edge-agent-compose-hash").join(case),
            files: vec!["compose.yaml".into()],
            project_name: format!("edge-agent-hash-{case}"),
            ..Source::default()
        };
        let project = load_with(&source, &read).unwrap_or_else(|e| panic!("{case}: {e}"));
        count += 1;
        if edge_agent::compose::config_hash(&project, &project.services[service]) != expected {
            differ.push(format!("{case}/{service}"));
        }
    }
    assert!(count >= 20, "hashes.tsv has {count} services");
    assert!(differ.is_empty(), "hashes differ from v2's: {differ:?}");
}

/// Every service of the compose corpus (tests/compose-corpus/, loaded as tests/compose_v2.rs
/// deploys it: from /tmp/edge-agent-compose-corpus/<entry> as project corpus-<entry>) hashes as
/// the label v2.40.3's `up` wrote (config-hashes.tsv), without Docker.
#[test]
fn corpus_config_hashes_match_compose_v2() {
    const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compose-corpus");
    const WORK: &str = "/tmp/edge-agent-compose-corpus";
    fn read(path: &Path) -> Result<Option<String>, String> {
        let Ok(rest) = path.strip_prefix(WORK) else {
            return Ok(None);
        };
        let file = Path::new(CORPUS).join(rest);
        if !file.exists() {
            return Ok(None);
        }
        std::fs::read_to_string(file)
            .map(Some)
            .map_err(|e| e.to_string())
    }
    let table = std::fs::read_to_string(Path::new(CORPUS).join("config-hashes.tsv")).unwrap();
    let mut differ = Vec::new();
    let mut count = 0;
    for line in table.lines().filter(|l| !l.starts_with('#')).skip(1) {
        let [entry, service, expected] = line.split('\t').collect::<Vec<_>>()[..] else {
            panic!("config-hashes.tsv: expected entry, service and hash: {line:?}");
        };
        let source = Source {
            working_dir: Path::new(WORK).join(entry),
            files: vec!["compose.yaml".into()],
            project_name: format!("corpus-{}", entry.to_lowercase()),
            environment: [("HOME", "/root")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Source::default()
        };
        let project = load_with(&source, &read).unwrap_or_else(|e| panic!("{entry}: {e}"));
        count += 1;
        if edge_agent::compose::config_hash(&project, &project.services[service]) != expected {
            differ.push(format!("{entry}/{service}"));
        }
    }
    assert!(count >= 160, "config-hashes.tsv has {count} services");
    assert!(differ.is_empty(), "hashes differ from v2's: {differ:?}");
}
