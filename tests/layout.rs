//! The house rules a newcomer relies on, held by a test: no source file over 600 lines before
//! its unit tests, README under 15 KB, and README's layout naming every folder of `src/`.

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;
const MAX_README: usize = 15_000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines before the file's `#[cfg(test)] mod ...` (all of them when it has none).
fn lines_before_tests(text: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .windows(2)
        .position(|w| {
            w[0] == "#[cfg(test)]"
                && (w[1].starts_with("mod ") || w[1].starts_with("pub(crate) mod tests"))
        })
        .unwrap_or(lines.len())
}

#[test]
fn no_source_file_is_over_600_lines_before_its_tests() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    assert!(files.len() > 50, "src/ has {} files", files.len());
    let mut over: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let n = lines_before_tests(&std::fs::read_to_string(path).unwrap());
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", path.display()))
        })
        .collect();
    over.sort();
    assert!(over.is_empty(), "split these by responsibility: {over:?}");
}

#[test]
fn readme_is_a_newcomers_page_whose_layout_names_every_folder() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.len() <= MAX_README,
        "README.md is {} bytes; move reference material to docs/",
        readme.len()
    );
    let layout = readme
        .split_once("## Layout")
        .expect("README has a Layout section")
        .1;
    for entry in std::fs::read_dir(root().join("src")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let name = format!("{}/", path.file_name().unwrap().to_string_lossy());
            assert!(layout.contains(&name), "README's layout lacks src/{name}");
        }
    }
}

#[test]
fn the_counter_stops_at_the_unit_tests() {
    assert_eq!(
        lines_before_tests("a\nb\n#[cfg(test)]\nmod tests {\n}\n"),
        2
    );
    assert_eq!(lines_before_tests("a\nb\n"), 2);
}
