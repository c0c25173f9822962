//! The answer of `GET /api/endpoints/{id}/edge/stacks/{stack}`: portainer `api/edge/edge.go`
//! `StackPayload` (Go field names as keys; CE fills `Name`, `DirEntries`, `EntryFileName`,
//! `Namespace`, and `StackFileContent` for agents older than 2.19), decoded and checked into
//! the files to write. `DirEntries` (portainer `api/filesystem/serialize.go`): `Name` relative
//! to the stack folder, `Content` standard padded base64, `Permissions` a Go `os.FileMode`.

use base64::Engine;
use serde::Deserialize;
use std::fmt;

/// The most a stack's files may hold once decoded (CE sends a compose file and its `.env`).
pub const MAX_FILES_BYTES: usize = 1024 * 1024;
/// The most entries (files and folders) a stack may have.
pub const MAX_ENTRIES: usize = 128;
/// The deepest a name may go.
const MAX_DEPTH: usize = 16;
/// The entry file CE defaults to (`api/filesystem/filesystem.go`).
const DEFAULT_ENTRY_FILE: &str = "docker-compose.yml";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub name: String,
    /// Relative path of the compose file.
    pub entry_file: String,
    /// Sorted by path, each at most once; a file's folders need not be listed.
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative, `/`-separated, without `.` or `..` components.
    pub path: String,
    /// Permission bits only (no setuid, setgid or sticky bit).
    pub mode: u32,
    /// `None` for a folder.
    pub content: Option<Vec<u8>>,
}

/// Why a payload cannot be deployed; the text goes to Portainer as the stack's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "StackFileContent", default)]
    stack_file_content: String,
    #[serde(rename = "DirEntries", default, deserialize_with = "null_as_empty")]
    dir_entries: Vec<WireEntry>,
    #[serde(rename = "EntryFileName", default)]
    entry_file_name: String,
}

#[derive(Deserialize)]
struct WireEntry {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Content", default)]
    content: String,
    #[serde(rename = "IsFile", default)]
    is_file: bool,
    #[serde(rename = "Permissions", default)]
    permissions: u64,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

impl Payload {
    pub fn parse(body: &[u8]) -> Result<Payload, Invalid> {
        let wire: Wire = serde_json::from_slice(body)
            .map_err(|e| Invalid(format!("the stack configuration is not valid JSON: {e}")))?;
        if wire.name.trim().is_empty() {
            return Err(Invalid("the stack has no name".into()));
        }
        let entry_file = match wire.entry_file_name.as_str() {
            "" => DEFAULT_ENTRY_FILE.to_owned(),
            name => clean(name)?,
        };
        if wire.dir_entries.len() > MAX_ENTRIES {
            return Err(Invalid(format!(
                "the stack has {} files and folders, more than the {MAX_ENTRIES} this agent accepts",
                wire.dir_entries.len()
            )));
        }
        let mut entries = Vec::with_capacity(wire.dir_entries.len().max(1));
        let mut total = 0usize;
        for e in &wire.dir_entries {
            let path = clean(&e.name)?;
            let content = if e.is_file {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(e.content.as_bytes())
                    .map_err(|err| {
                        Invalid(format!("file {path:?}: content is not base64 ({err})"))
                    })?;
                total += bytes.len();
                Some(bytes)
            } else {
                None
            };
            if total > MAX_FILES_BYTES {
                return Err(Invalid(format!(
                    "the stack's files hold more than {} KiB, the most this agent accepts",
                    MAX_FILES_BYTES / 1024
                )));
            }
            entries.push(Entry {
                path,
                mode: (e.permissions & 0o777) as u32,
                content,
            });
        }
        // Agents older than 2.19 get the entry file inline; a server may send only that.
        if entries.is_empty() && !wire.stack_file_content.is_empty() {
            if wire.stack_file_content.len() > MAX_FILES_BYTES {
                return Err(Invalid(format!(
                    "the stack file is larger than {} KiB, the most this agent accepts",
                    MAX_FILES_BYTES / 1024
                )));
            }
            entries.push(Entry {
                path: entry_file.clone(),
                mode: 0o644,
                content: Some(wire.stack_file_content.into_bytes()),
            });
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        for pair in entries.windows(2) {
            if pair[0].path == pair[1].path {
                return Err(Invalid(format!("the stack lists {:?} twice", pair[0].path)));
            }
        }
        for e in &entries {
            // A file cannot also be the folder of another entry.
            if let Some(inner) = entries.iter().find(|o| {
                e.content.is_some()
                    && o.path.starts_with(&e.path)
                    && o.path[e.path.len()..].starts_with('/')
            }) {
                return Err(Invalid(format!(
                    "{:?} is a file but {:?} is listed inside it",
                    e.path, inner.path
                )));
            }
        }
        if !entries
            .iter()
            .any(|e| e.path == entry_file && e.content.is_some())
        {
            return Err(Invalid(format!(
                "the stack has no file {entry_file:?}, its entry file"
            )));
        }
        Ok(Payload {
            name: wire.name,
            entry_file,
            entries,
        })
    }

    /// FNV-1a (64 bits) of every entry's path, mode and content, in hex: whether two payloads
    /// would write the same folder.
    pub fn files_hash(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for e in &self.entries {
            feed(e.path.as_bytes());
            feed(&[0]);
            feed(&e.mode.to_le_bytes());
            match &e.content {
                Some(c) => {
                    feed(&(c.len() as u64).to_le_bytes());
                    feed(c);
                }
                None => feed(b"/"),
            }
        }
        format!("{h:016x}")
    }
}

/// A name as a path inside the stack folder: relative, no `..`, no NUL; `.` and empty
/// components dropped.
fn clean(name: &str) -> Result<String, Invalid> {
    if name.starts_with('/') {
        return Err(Invalid(format!(
            "file name {name:?} is absolute; names must be relative to the stack folder"
        )));
    }
    if name.contains('\0') {
        return Err(Invalid(format!("file name {name:?} contains a NUL byte")));
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(Invalid(format!(
                    "file name {name:?} climbs out of the stack folder with \"..\""
                )))
            }
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(Invalid(format!("file name {name:?} names no file")));
    }
    if parts.len() > MAX_DEPTH {
        return Err(Invalid(format!(
            "file name {name:?} is more than {MAX_DEPTH} folders deep"
        )));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn with_entries(entries: &str) -> Result<Payload, Invalid> {
        Payload::parse(
            format!(
                r#"{{"Name":"web","EntryFileName":"docker-compose.yml","DirEntries":{entries}}}"#
            )
            .as_bytes(),
        )
    }

    #[test]
    fn parses_what_ce_sends() {
        let body = format!(
            r#"{{"ID":0,"Name":"web","StackFileContent":"","DirEntries":[{{"Name":"docker-compose.yml","Content":"{}","IsFile":true,"Permissions":420}},{{"Name":".env","Content":"{}","IsFile":true,"Permissions":384}}],"EntryFileName":"docker-compose.yml","Namespace":"default","Version":0,"RollbackTo":null,"RegistryCredentials":null,"PrePullImage":false,"RePullImage":false,"RetryDeploy":false,"EdgeUpdateID":0,"SupportRelativePath":false,"FilesystemPath":"","EnvVars":null,"ReadyRePullImage":false}}"#,
            b64("services:\n  web:\n    image: nginx\n"),
            b64("TAG=1\n")
        );
        let p = Payload::parse(body.as_bytes()).unwrap();
        assert_eq!(p.name, "web");
        assert_eq!(p.entry_file, "docker-compose.yml");
        assert_eq!(p.entries.len(), 2);
        assert_eq!(p.entries[0].path, ".env");
        assert_eq!(p.entries[0].mode, 0o600);
        assert_eq!(p.entries[0].content.as_deref(), Some(&b"TAG=1\n"[..]));
        assert_eq!(p.entries[1].mode, 0o644);
    }

    /// CE 2.45's `StackPayload` (`endpointedge_stack_inspect.go`) adds `CreatedBy`,
    /// `CreatedByUserId`, `ForceUpdate`, `DeployerOptionsPayload`, `HelmConfig` and the EE-only
    /// `RetryPeriod`, `AlwaysCloneGitRepoForRelativePath`, `SupportPerDeviceConfigs` (zero in
    /// CE): unknown fields are ignored, not refused.
    #[test]
    fn parses_what_ce_2_45_sends() {
        let body = format!(
            r#"{{"ID":4,"Name":"web","StackFileContent":"","DirEntries":[{{"Name":"docker-compose.yml","Content":"{}","IsFile":true,"Permissions":420}}],"EntryFileName":"docker-compose.yml","Namespace":"","Version":3,"RollbackTo":null,"RegistryCredentials":[],"PrePullImage":false,"RePullImage":false,"RetryDeploy":false,"RetryPeriod":0,"EdgeUpdateID":0,"SupportRelativePath":false,"FilesystemPath":"","SupportPerDeviceConfigs":false,"AlwaysCloneGitRepoForRelativePath":false,"EnvVars":[],"ReadyRePullImage":false,"CreatedBy":"admin","CreatedByUserId":"1","ForceUpdate":false,"DeployerOptionsPayload":{{"Prune":false,"RemoveVolumes":false,"ForceRecreate":false}},"HelmConfig":{{"Namespace":"","ReleaseName":"","ValuesFiles":null,"Atomic":false,"Timeout":0}}}}"#,
            b64("services:\n  web:\n    image: nginx\n"),
        );
        let p = Payload::parse(body.as_bytes()).unwrap();
        assert_eq!(p.name, "web");
        assert_eq!(p.entry_file, "docker-compose.yml");
        assert_eq!(p.entries.len(), 1);
        assert_eq!(p.entries[0].path, "docker-compose.yml");
        assert_eq!(p.entries[0].mode, 0o644);
        assert_eq!(
            p.entries[0].content.as_deref(),
            Some(&b"services:\n  web:\n    image: nginx\n"[..])
        );
    }

    #[test]
    fn legacy_inline_content() {
        let p = Payload::parse(br#"{"Name":"x","StackFileContent":"services: {}\n"}"#).unwrap();
        assert_eq!(p.entry_file, "docker-compose.yml");
        assert_eq!(
            p.entries[0].content.as_deref(),
            Some(&b"services: {}\n"[..])
        );
    }

    #[test]
    fn names_must_stay_inside_the_folder() {
        let file = |name: &str| {
            with_entries(&format!(
                r#"[{{"Name":"docker-compose.yml","Content":"","IsFile":true,"Permissions":420}},{{"Name":"{name}","Content":"","IsFile":true,"Permissions":420}}]"#
            ))
        };
        let err = file("/etc/passwd").unwrap_err().0;
        assert!(err.contains("absolute"), "{err}");
        let err = file("conf/../../x").unwrap_err().0;
        assert!(err.contains(".."), "{err}");
        let err = file("./").unwrap_err().0;
        assert!(err.contains("names no file"), "{err}");
        let ok = file("./conf//a.txt").unwrap();
        assert_eq!(ok.entries[0].path, "conf/a.txt");
        let err = file("docker-compose.yml").unwrap_err().0;
        assert!(err.contains("twice"), "{err}");
        let err = file("docker-compose.yml/inner").unwrap_err().0;
        assert!(err.contains("is a file"), "{err}");
    }

    #[test]
    fn special_bits_are_dropped() {
        // 0o4755 with Go's ModeDir bit: setuid and the type bits go.
        let p = with_entries(&format!(
            r#"[{{"Name":"docker-compose.yml","Content":"{}","IsFile":true,"Permissions":{}}},{{"Name":"d","IsFile":false,"Permissions":{}}}]"#,
            b64("x"),
            0o4755,
            (1u64 << 31) | 0o1777
        ))
        .unwrap();
        assert_eq!(p.entries[1].mode, 0o755);
        assert_eq!(p.entries[0].mode, 0o777);
        assert_eq!(p.entries[0].content, None);
    }

    #[test]
    fn refusals_say_why() {
        let err = with_entries(r#"[{"Name":"other.yml","Content":"","IsFile":true}]"#)
            .unwrap_err()
            .0;
        assert!(err.contains("no file \"docker-compose.yml\""), "{err}");
        let err = with_entries(r#"[{"Name":"docker-compose.yml","Content":"***","IsFile":true}]"#)
            .unwrap_err()
            .0;
        assert!(err.contains("base64"), "{err}");
        let big = b64(&"x".repeat(MAX_FILES_BYTES + 1));
        let err = with_entries(&format!(
            r#"[{{"Name":"docker-compose.yml","Content":"{big}","IsFile":true}}]"#
        ))
        .unwrap_err()
        .0;
        assert!(err.contains("KiB"), "{err}");
        let err = Payload::parse(b"<html>").unwrap_err().0;
        assert!(err.contains("JSON"), "{err}");
        let err = Payload::parse(br#"{"Name":"","StackFileContent":"x"}"#)
            .unwrap_err()
            .0;
        assert!(err.contains("no name"), "{err}");
    }

    #[test]
    fn hash_follows_content_and_mode() {
        let one = |content: &str, mode: u32| {
            with_entries(&format!(
                r#"[{{"Name":"docker-compose.yml","Content":"{}","IsFile":true,"Permissions":{mode}}}]"#,
                b64(content)
            ))
            .unwrap()
            .files_hash()
        };
        assert_eq!(one("a", 420), one("a", 420));
        assert_ne!(one("a", 420), one("b", 420));
        assert_ne!(one("a", 420), one("a", 384));
        assert_eq!(one("a", 420).len(), 16);
    }
}
