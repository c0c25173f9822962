//! The config hash against Docker Compose v2.40.3's: every service of the compose files in
//! tests/compose-hash/ loaded as v2 loaded them (from /tmp/edge-agent-compose-hash/<case>; no
//! file is read there), and its `com.docker.compose.config-hash` compared with the label v2's
//! `up -d` wrote (hashes.tsv, made by generate.sh).

use edge_agent::compose::{load_with, ReadFile, Source};
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

/// Loads each row's service (`case`, `service`, v2's hash) from `source(case)` with `read`:
/// how many rows there are, and the `case/service` of those whose hash differs from v2's.
fn differing<'a>(
    rows: impl Iterator<Item = &'a str>,
    source: impl Fn(&str) -> Source,
    read: ReadFile,
) -> (usize, Vec<String>) {
    let mut differ = Vec::new();
    let mut count = 0;
    for line in rows {
        let [case, service, expected] = line.split('\t').collect::<Vec<_>>()[..] else {
            panic!("expected case, service and hash: {line:?}");
        };
        let project = load_with(&source(case), read).unwrap_or_else(|e| panic!("{case}: {e}"));
        count += 1;
        if edge_agent::compose::config_hash(&project, &project.services[service]) != expected {
            differ.push(format!("{case}/{service}"));
        }
    }
    (count, differ)
}

#[test]
fn config_hashes_match_compose_v2() {
    let table = std::fs::read_to_string(Path::new(FIXTURES).join("hashes.tsv")).unwrap();
    let source = |case: &str| Source {
        working_dir: PathBuf::from("/tmp/edge-agent-compose-hash").join(case),
        files: vec!["compose.yaml".into()],
        project_name: format!("edge-agent-hash-{case}"),
        ..Source::default()
    };
    let (count, differ) = differing(table.lines(), source, &read);
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
    let source = |entry: &str| Source {
        working_dir: Path::new(WORK).join(entry),
        files: vec!["compose.yaml".into()],
        project_name: format!("corpus-{}", entry.to_lowercase()),
        environment: [("HOME".to_owned(), "/root".to_owned())].into(),
        ..Source::default()
    };
    let rows = table.lines().filter(|l| !l.starts_with('#')).skip(1);
    let (count, differ) = differing(rows, source, &read);
    assert!(count >= 160, "config-hashes.tsv has {count} services");
    assert!(differ.is_empty(), "hashes differ from v2's: {differ:?}");
}
