//! The loading context ([`Ctx`]: the file, the project folder, the environment, warnings) and
//! the typed reading of tree nodes: mappings, lists, strings, booleans, numbers, sizes, CPUs,
//! durations, `KEY=value` dictionaries and host paths, each error naming the file, line and key
//! path.

use super::error::{Fail, LoadError};
use super::read::ReadFile;
use crate::compose::yaml::{Node, Value};
use crate::config::duration;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub(super) struct Ctx<'a> {
    pub(super) read: ReadFile<'a>,
    pub(super) file: &'a Path,
    pub(super) dir: &'a Path,
    pub(super) env: &'a BTreeMap<String, String>,
    pub(super) warnings: Vec<String>,
    pub(super) unset: BTreeSet<String>,
    /// What interpolating the file may still produce.
    pub(super) budget: usize,
}

pub(super) type Entries<'n> = Vec<(&'n str, &'n Node, String)>;

impl Ctx<'_> {
    pub(super) fn err(&self, node: &Node, path: &str, message: impl Into<String>) -> Fail {
        Box::new(LoadError {
            file: self.file.to_owned(),
            line: Some(node.line),
            path: path.to_owned(),
            message: message.into(),
        })
    }

    pub(super) fn entries<'n>(&self, node: &'n Node, path: &str) -> Result<Entries<'n>, Fail> {
        match &node.value {
            Value::Map(entries) => Ok(entries
                .iter()
                .map(|(k, n)| (k.as_str(), n, join(path, k)))
                .collect()),
            Value::Null => Ok(Vec::new()),
            _ => Err(self.err(node, path, "expected a mapping")),
        }
    }

    pub(super) fn items<'n>(
        &self,
        node: &'n Node,
        path: &str,
    ) -> Result<Vec<(&'n Node, String)>, Fail> {
        match &node.value {
            Value::Seq(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, n)| (n, format!("{path}[{i}]")))
                .collect()),
            _ => Err(self.err(node, path, "expected a list")),
        }
    }

    pub(super) fn string(&self, node: &Node, path: &str) -> Result<String, Fail> {
        match &node.value {
            Value::Scalar(text, _) => Ok(text.clone()),
            _ => Err(self.err(node, path, "expected a string")),
        }
    }

    /// A string, or a list of strings.
    pub(super) fn strings(&self, node: &Node, path: &str) -> Result<Vec<String>, Fail> {
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

    pub(super) fn list(&self, node: &Node, path: &str) -> Result<Vec<String>, Fail> {
        if matches!(node.value, Value::Scalar(..)) {
            return Err(self.err(node, path, "expected a list of strings"));
        }
        self.strings(node, path)
    }

    pub(super) fn bool(&self, node: &Node, path: &str) -> Result<bool, Fail> {
        let text = self.string(node, path).unwrap_or_default();
        match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" => Ok(true),
            "false" | "no" | "n" | "off" => Ok(false),
            _ => Err(self.err(node, path, "expected true or false")),
        }
    }

    pub(super) fn int(&self, node: &Node, path: &str) -> Result<i64, Fail> {
        let text = self.string(node, path).unwrap_or_default();
        text.trim()
            .parse()
            .map_err(|_| self.err(node, path, format!("expected a whole number, not {text:?}")))
    }

    /// CPUs (`0.5`, `2`) in billionths, as Docker's `NanoCpus`.
    pub(super) fn nano_cpus(&self, node: &Node, path: &str) -> Result<i64, Fail> {
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
    pub(super) fn duration(&self, node: &Node, path: &str) -> Result<u64, Fail> {
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
    pub(super) fn bytes(&self, node: &Node, path: &str) -> Result<i64, Fail> {
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
    pub(super) fn dict(
        &self,
        node: &Node,
        path: &str,
    ) -> Result<Vec<(String, Option<String>)>, Fail> {
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
    pub(super) fn string_map(
        &self,
        node: &Node,
        path: &str,
    ) -> Result<BTreeMap<String, String>, Fail> {
        Ok(self
            .dict(node, path)?
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect())
    }

    /// A path on the host: `~` is `$HOME`, relative to the project folder (both cleaned, as Go's
    /// `filepath.Join` does); an absolute path as written, as compose-go keeps it
    /// (`paths/resolve.go`: `/var/lib/docker/` keeps its slash).
    pub(super) fn host_path(&self, text: &str) -> String {
        if text.starts_with('/') {
            return text.to_owned();
        }
        let path = match text.strip_prefix('~') {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                let home = self.env.get("HOME").map_or("/root", String::as_str);
                PathBuf::from(format!("{home}{rest}"))
            }
            _ => self.dir.join(text),
        };
        clean(&path)
    }

    pub(super) fn unknown(&self, node: &Node, path: &str) -> Fail {
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

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `a/./b/../c` as `a/c` (no file system access; the path may not exist yet), as Go's
/// `path.Clean` makes an absolute path.
pub(super) fn clean(path: &Path) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
