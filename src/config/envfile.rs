//! The first-boot env file: `KEY=value` lines, `#` (or `;`) comment lines, blank lines, optional
//! single or double quotes around the value. The same file is systemd's `EnvironmentFile=`, so the
//! agent reads what systemd's parser (`src/basic/env-file.c` of systemd 252) reads and refuses what
//! the two would read differently: text after a closing quote (systemd appends it to the value),
//! ` #` in an unquoted value (systemd keeps it: `#` only starts a comment at the beginning of a
//! line), a backslash in an unquoted value (systemd drops it), a comment line ending in a
//! backslash (systemd 252 continues the comment onto the next line), a quote left open (systemd
//! reads on across lines). No `export`, no variable expansion.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// An env file larger than this is certainly not ours; refusing it bounds memory.
const MAX_FILE_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
    /// Spaces around the `=` (`KEY = value`): systemd and the agent read the line alike, but a
    /// shell or `docker run --env-file` would not.
    pub spaced: bool,
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
            } => write!(f, "{} line {line}: {problem}", path.display()),
        }
    }
}

impl std::error::Error for Error {}

/// A file as read: its entries and the errors of its bad lines, and its permission bits.
#[derive(Debug)]
pub struct Loaded {
    pub entries: Vec<Result<Entry, Error>>,
    pub mode: u32,
}

impl Loaded {
    /// Whether people other than its owner can read it (group or others).
    pub fn readable_by_others(&self) -> bool {
        self.mode & 0o044 != 0
    }
}

/// Reads and parses `path`, or `Ok(None)` when the file does not exist.
pub fn load(path: &Path) -> Result<Option<Loaded>, Error> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Read(path.to_owned(), e)),
    };
    let mode = file
        .metadata()
        .map_err(|e| Error::Read(path.to_owned(), e))?
        .permissions()
        .mode()
        & 0o7777;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::Read(path.to_owned(), e))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::TooLarge(path.to_owned()));
    }
    let syntax = |(line, problem)| Error::Syntax {
        path: path.to_owned(),
        line,
        problem,
    };
    Ok(Some(Loaded {
        entries: parse(&text)
            .into_iter()
            .map(|entry| entry.map_err(syntax))
            .collect(),
        mode,
    }))
}

/// Parses env-file text: each line is an entry or, with its 1-based number, what is wrong with it.
pub fn parse(text: &str) -> Vec<Result<Entry, (usize, &'static str)>> {
    let (text, bom) = match text.strip_prefix('\u{feff}') {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    text.lines()
        .enumerate()
        .filter_map(|(index, raw)| {
            let line = index + 1;
            if bom && line == 1 {
                return Some(Err((line, "the file starts with a UTF-8 byte order mark (as some Windows editors save), which systemd takes as part of the first name; save the file without it, e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' FILE")));
            }
            parse_line(raw.trim())
                .map(|kv| {
                    kv.map(|(key, value)| Entry {
                        spaced: raw.split_once('=').is_some_and(|(k, v)| {
                            k.ends_with(char::is_whitespace) || v.starts_with(char::is_whitespace)
                        }),
                        key,
                        value,
                        line,
                    })
                })
                .map(|entry| entry.map_err(|problem| (line, problem)))
        })
        .collect()
}

/// `None` for a blank or comment line.
fn parse_line(line: &str) -> Option<Result<(String, String), &'static str>> {
    if line.is_empty() {
        return None;
    }
    if line.starts_with('#') || line.starts_with(';') {
        // systemd 252 continues a comment ending in an odd number of backslashes onto the next
        // line (254 and later do not).
        let trailing = line.len() - line.trim_end_matches('\\').len();
        return (trailing % 2 == 1).then_some(Err(
            "a comment line ends with '\\', which makes systemd read the next line as comment too; remove the '\\'",
        ));
    }
    Some(key_value(line))
}

fn key_value(line: &str) -> Result<(String, String), &'static str> {
    let (key, value) = line
        .split_once('=')
        .ok_or("no '=' on this line (expected KEY=value, or a comment line starting with #)")?;
    let key = key.trim_end();
    if key.starts_with("export ") || key.starts_with("export\t") {
        return Err(
            "'export' is shell syntax: systemd ignores this line; write KEY=value without 'export'",
        );
    }
    let valid_key = key
        .bytes()
        .enumerate()
        .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
    if key.is_empty() || !valid_key {
        return Err("the name before '=' must be letters, digits and '_'");
    }
    let start = value.trim_start();
    let value = match start.chars().next() {
        Some(quote @ ('"' | '\'')) => quoted(&start[1..], quote)?,
        _ => unquoted(value)?,
    };
    Ok((key.to_owned(), value))
}

/// The value after `=`, spaces around it removed. systemd keeps a `#` after a space (even right
/// after `=`) in the value; so would we, silently, if we allowed it.
fn unquoted(value: &str) -> Result<String, &'static str> {
    let bytes = value.as_bytes();
    if bytes
        .windows(2)
        .any(|w| w[1] == b'#' && w[0].is_ascii_whitespace())
    {
        return Err("' #' in a value: comments must be on their own line, because systemd reads this file too and would keep the comment in the value (quote the value if the '#' is part of it)");
    }
    if value.contains('\\') {
        return Err(
            "'\\' in an unquoted value, which systemd removes; put the value in single quotes",
        );
    }
    Ok(value.trim().to_owned())
}

/// The value after its opening quote, as systemd reads it: single quotes keep everything, in
/// double quotes a backslash escapes `"`, `\`, `` ` `` and `$` and is kept before anything else.
fn quoted(rest: &str, quote: char) -> Result<String, &'static str> {
    let mut out = String::with_capacity(rest.len());
    let mut chars = rest.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            c if c == quote => {
                return if rest[at + 1..].trim().is_empty() {
                    Ok(out)
                } else {
                    Err("text after the closing quote: comments must be on their own line, because systemd reads this file too and would add that text to the value")
                };
            }
            '\\' if quote == '"' => match chars.next() {
                Some((_, e @ ('"' | '\\' | '`' | '$'))) => out.push(e),
                Some((_, e)) => {
                    out.push('\\');
                    out.push(e);
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("unterminated quote: the closing quote must be on the same line")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(text: &str) -> Vec<(String, String)> {
        parse(text)
            .into_iter()
            .map(|e| e.map(|e| (e.key, e.value)).unwrap())
            .collect()
    }

    fn problems(text: &str) -> Vec<(usize, &'static str)> {
        parse(text).into_iter().filter_map(Result::err).collect()
    }

    /// What systemd 252 reads in each of these lines (checked with `ConditionOSRelease=` on
    /// an os-release file holding it) is what we read.
    #[test]
    fn reads_values_comments_and_quotes_as_systemd_does() {
        let text = "# first boot\n\nEDGE_ID=abc\nEDGE_KEY = \"a b\\\"c\"\nAGENT_SECRET='x#y \\n'\n  # indented comment\n; other comment\nEMPTY=\nSPACED = a b  \nQ=\"a\\qb\\$\"\nHASH=#x\nMID=a\"b'\n";
        assert_eq!(
            kv(text),
            [
                ("EDGE_ID", "abc"),
                ("EDGE_KEY", "a b\"c"),
                ("AGENT_SECRET", "x#y \\n"),
                ("EMPTY", ""),
                ("SPACED", "a b"),
                ("Q", "a\\qb$"),
                ("HASH", "#x"),
                ("MID", "a\"b'"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn trailing_comments_are_refused_because_systemd_keeps_them() {
        for line in ["KEY=\"v\" # note", "KEY='v' # note", "KEY=\"v\"x"] {
            let found = problems(line);
            assert!(
                found.len() == 1 && found[0].1.starts_with("text after the closing quote"),
                "{line}: {found:?}"
            );
            assert!(found[0].1.contains("because systemd reads this file too"));
        }
        for line in ["KEY=30s # note", "KEY=30s\t#note", "KEY= # paste here"] {
            let found = problems(line);
            assert!(
                found.len() == 1 && found[0].1.starts_with("' #' in a value"),
                "{line}: {found:?}"
            );
            assert!(found[0].1.contains("comments must be on their own line"));
        }
    }

    #[test]
    fn what_systemd_reads_differently_is_refused() {
        assert!(problems("KEY=a\\b")[0].1.contains("single quotes"));
        assert!(problems("# note \\\nKEY=v")[0]
            .1
            .contains("next line as comment"));
        assert!(problems("# note \\\\\nKEY=v").is_empty());
        assert!(problems("KEY=\"open")[0]
            .1
            .starts_with("unterminated quote"));
        assert!(problems("KEY=\"open\\\"")[0]
            .1
            .starts_with("unterminated quote"));
    }

    #[test]
    fn shell_habits_and_a_byte_order_mark_are_named() {
        assert_eq!(
            problems("\u{feff}EDGE_ID=abc\nEDGE_KEY=k\n"),
            [(1, "the file starts with a UTF-8 byte order mark (as some Windows editors save), which systemd takes as part of the first name; save the file without it, e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' FILE")]
        );
        assert_eq!(
            problems("# ok\nexport EDGE_ID=abc\n"),
            [(2, "'export' is shell syntax: systemd ignores this line; write KEY=value without 'export'")]
        );
    }

    #[test]
    fn every_bad_line_is_reported() {
        let found = problems("A=1\nnonsense\nB=\"open\n1A=x\n=x\nA B=x\nC=2\n");
        assert_eq!(
            found.iter().map(|(line, _)| *line).collect::<Vec<_>>(),
            [2, 3, 4, 5, 6]
        );
        assert!(found[0].1.starts_with("no '=' on this line"));
        assert_eq!(kv("A=1\nC=2\n").len(), 2);
        assert_eq!(
            parse("A=1\nnonsense\nC=2\n")
                .into_iter()
                .filter(Result::is_ok)
                .count(),
            2
        );
    }

    #[test]
    fn missing_file_is_not_an_error_but_a_huge_one_is() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("absent.env")).unwrap().is_none());
        let big = dir.path().join("big.env");
        std::fs::write(&big, "A=".to_owned() + &"x".repeat(70_000)).unwrap();
        assert!(matches!(load(&big), Err(Error::TooLarge(_))));
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge-agent.env");
        std::fs::write(&path, "A=1\nB=\"v\" # note\n").unwrap();
        let lines = load(&path).unwrap().unwrap().entries;
        let message = lines[1].as_ref().unwrap_err().to_string();
        assert!(
            message.starts_with(&format!(
                "{} line 2: text after the closing quote",
                path.display()
            )),
            "{message}"
        );
    }
}
