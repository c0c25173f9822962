//! The first-boot env file: `KEY=value` lines, `#` (or `;`) comment lines, blank lines, optional single or
//! double quotes around the value. The same file is systemd's `EnvironmentFile=`, so the syntax is
//! the common subset of both: no `export`, no variable expansion, `#` only starts a comment at the
//! beginning of a line.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// An env file larger than this is certainly not ours; refusing it bounds memory.
const MAX_FILE_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

#[derive(Debug)]
pub enum Error {
    Read(PathBuf, std::io::Error),
    TooLarge(PathBuf),
    Syntax {
        path: PathBuf,
        line: usize,
        problem: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Read(path, e) => write!(f, "cannot read env file {}: {e}", path.display()),
            Error::TooLarge(path) => write!(
                f,
                "env file {} is larger than {} KiB; it should only hold KEY=value lines",
                path.display(),
                MAX_FILE_BYTES / 1024
            ),
            Error::Syntax {
                path,
                line,
                problem,
            } => write!(
                f,
                "{} line {line}: {problem} (expected KEY=value, or a line starting with #)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Reads and parses `path`. `Ok(None)` when the file does not exist.
pub fn load(path: &Path) -> Result<Option<Vec<Entry>>, Error> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Read(path.to_owned(), e)),
    };
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::Read(path.to_owned(), e))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::TooLarge(path.to_owned()));
    }
    parse(&text)
        .map(Some)
        .map_err(|(line, problem)| Error::Syntax {
            path: path.to_owned(),
            line,
            problem,
        })
}

/// Parses env-file text; on error returns the 1-based line number and what is wrong.
pub fn parse(text: &str) -> Result<Vec<Entry>, (usize, &'static str)> {
    let mut entries = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err((line, "no '=' on this line"));
        };
        let key = key.trim_end();
        let valid_key = key
            .bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
        if key.is_empty() || !valid_key {
            return Err((line, "the name before '=' must be letters, digits and '_'"));
        }
        let value = unquote(value.trim_start()).ok_or((line, "unterminated quote in value"))?;
        entries.push(Entry {
            key: key.to_owned(),
            value,
            line,
        });
    }
    Ok(entries)
}

fn unquote(value: &str) -> Option<String> {
    let Some(quote) = value.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        return Some(value.to_owned());
    };
    let inner = value[1..].strip_suffix(quote)?;
    if quote == '\'' {
        return Some(inner.to_owned());
    }
    // Double quotes: backslash escapes the next character, as in systemd and docker.
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else if c == '"' {
            return None;
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(text: &str) -> Vec<(String, String)> {
        parse(text)
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    }

    #[test]
    fn reads_values_comments_and_quotes() {
        let text = "# first boot\n\nEDGE_ID=abc\nEDGE_KEY = \"a b\\\"c\"\nAGENT_SECRET='x#y'\nLOG_LEVEL=DEBUG # not a comment\n  # indented comment\nEMPTY=\n";
        assert_eq!(
            kv(text),
            vec![
                ("EDGE_ID".into(), "abc".into()),
                ("EDGE_KEY".into(), "a b\"c".into()),
                ("AGENT_SECRET".into(), "x#y".into()),
                ("LOG_LEVEL".into(), "DEBUG # not a comment".into()),
                ("EMPTY".into(), "".into()),
            ]
        );
    }

    #[test]
    fn reports_the_line_at_fault() {
        assert_eq!(parse("A=1\nnonsense\n"), Err((2, "no '=' on this line")));
        assert_eq!(parse("A=1\n\nB=\"open\n").unwrap_err().0, 3);
        assert_eq!(parse("1A=x").unwrap_err().0, 1);
        assert_eq!(parse("=x").unwrap_err().0, 1);
        assert_eq!(parse("A B=x").unwrap_err().0, 1);
    }

    #[test]
    fn missing_file_is_not_an_error_but_a_huge_one_is() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("absent.env")).unwrap().is_none());
        let big = dir.path().join("big.env");
        std::fs::write(&big, "A=".to_owned() + &"x".repeat(70_000)).unwrap();
        assert!(matches!(load(&big), Err(Error::TooLarge(_))));
    }
}
