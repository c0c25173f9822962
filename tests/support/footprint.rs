//! The last idle measurement of `cargo footprint` ([`RECORD`]) and README's footprint section,
//! rendered from it: the bench writes both (`FOOTPRINT_RECORD=1`), tests/packaging.rs checks
//! that README shows what the record holds.

use std::path::Path;

/// The record, in the repository.
pub const RECORD: &str = "docs/footprint-idle.tsv";
/// README's section lies between these lines.
pub const BEGIN: &str = "<!-- footprint: FOOTPRINT_RECORD=1 cargo footprint writes this -->";
pub const END: &str = "<!-- /footprint -->";

const HEADER: &str = "# The last idle measurement of `FOOTPRINT_RECORD=1 cargo footprint` (benches/footprint.rs), which\n\
# README's footprint section shows (tests/packaging.rs checks). One line per transport.\n\
# date\tcommit\ttarget\tlinkage\tbytes\tpolls\ttransport\tRSS KiB\tanonymous KiB\tCPU µs per poll\n";

/// One transport's figures at the end of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub date: String,
    pub commit: String,
    /// The target triple of a `target/static/<triple>/` binary; `host` otherwise.
    pub target: String,
    pub linkage: String,
    pub bytes: u64,
    pub polls: usize,
    pub transport: String,
    pub rss: u64,
    pub anon: u64,
    pub cpu_us: f64,
}

/// The record's text for `rows`.
pub fn record(rows: &[Measured]) -> String {
    let mut out = HEADER.to_owned();
    for m in rows {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.1}\n",
            m.date,
            m.commit,
            m.target,
            m.linkage,
            m.bytes,
            m.polls,
            m.transport,
            m.rss,
            m.anon,
            m.cpu_us
        ));
    }
    out
}

/// The rows of a record's text; panics naming the line that does not read.
pub fn parse(text: &str) -> Vec<Measured> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != 10 {
                unreadable(line);
            }
            let number = |i: usize| f[i].parse::<u64>().unwrap_or_else(|_| unreadable(line));
            Measured {
                date: f[0].into(),
                commit: f[1].into(),
                target: f[2].into(),
                linkage: f[3].into(),
                bytes: number(4),
                polls: number(5) as usize,
                transport: f[6].into(),
                rss: number(7),
                anon: number(8),
                cpu_us: f[9].parse().unwrap_or_else(|_| unreadable(line)),
            }
        })
        .collect()
}

fn unreadable(line: &str) -> ! {
    panic!("{RECORD}: cannot read the line {line:?}: expected the 10 tab-separated fields its header names")
}

/// README's section for `rows` (all of one run), markers included.
pub fn section(rows: &[Measured]) -> String {
    let first = rows.first().expect("a record with at least one row");
    let mut out = format!(
        "{BEGIN}\nIdle, polling every 10 ms, after {} polls ({}, commit {}; {} `{}`, {} bytes; \
         [more](docs/footprint.md)):\n\n\
         | transport | RSS (KiB) | anonymous (KiB) | CPU per poll |\n|---|---|---|---|\n",
        thousands(first.polls as u64),
        first.date,
        first.commit,
        first.linkage,
        first.target,
        thousands(first.bytes)
    );
    for m in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} µs |\n",
            m.transport,
            thousands(m.rss),
            thousands(m.anon),
            m.cpu_us
        ));
    }
    out.push_str(END);
    out
}

/// README's text with its section replaced by `section`; panics when a marker is missing.
pub fn replace_section(readme: &str, section: &str) -> String {
    let (before, rest) = readme
        .split_once(BEGIN)
        .unwrap_or_else(|| panic!("README.md: no line {BEGIN}"));
    let (_, after) = rest
        .split_once(END)
        .unwrap_or_else(|| panic!("README.md: no line {END} after {BEGIN}"));
    format!("{before}{section}{after}")
}

/// Reads a file of the repository.
pub fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
