//! Stack folders `DATA_PATH/stacks/<id>/`: written whole into `.<id>.new`, fsynced, then put in
//! place by rename, so a power cut leaves either the old folder or the new one. What was in the
//! old folder without coming from the payload (the host side of a relative bind such as
//! `./data`, made by Docker) is moved into the new one, so an update keeps a stack's data; the
//! list of what came from the payload is kept beside the folder as `<id>.files`.

use super::payload::Payload;
use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Folder modes keep the owner's access, so the agent can always replace and remove them.
const OWNER_DIR: u32 = 0o700;

#[derive(Debug)]
pub struct Error {
    pub path: PathBuf,
    pub error: io::Error,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot write the stack folder at {}: {}",
            self.path.display(),
            self.error
        )
    }
}

impl std::error::Error for Error {}

fn at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |error| Error {
        path: path.to_owned(),
        error,
    }
}

/// `root/<id>`.
pub fn path(root: &Path, id: i64) -> PathBuf {
    root.join(id.to_string())
}

/// Writes the payload's files as `root/<id>/` and returns that path.
pub fn write(root: &Path, id: i64, payload: &Payload) -> Result<PathBuf, Error> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(at(root))?;
    recover(root, id).map_err(at(root))?;
    let target = path(root, id);
    let staging = root.join(format!(".{id}.new"));
    let old = root.join(format!(".{id}.old"));
    remove_if_present(&staging).map_err(at(&staging))?;
    DirBuilder::new()
        .mode(OWNER_DIR)
        .create(&staging)
        .map_err(at(&staging))?;
    for entry in &payload.entries {
        let path = staging.join(&entry.path);
        ensure_parents(&staging, &path).map_err(at(&path))?;
        match &entry.content {
            Some(content) => write_file(&path, content, entry.mode).map_err(at(&path))?,
            None => match DirBuilder::new().mode(OWNER_DIR).create(&path) {
                Ok(()) => {}
                // Already made as the parent of an earlier entry (entries are sorted).
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && is_dir(&path) => {}
                Err(e) => return Err(at(&path)(e)),
            },
        }
    }
    let manifest = root.join(format!("{id}.files"));
    if target.exists() {
        // Written by us: the payload's names (a bounded list); read bounded all the same.
        let mut listed = String::new();
        let _ = File::open(&manifest).and_then(|f| f.take(1 << 20).read_to_string(&mut listed));
        let listed: BTreeSet<&str> = listed.lines().collect();
        carry_over(&target, &staging, "", &listed).map_err(at(&target))?;
    }
    // Listed folders get their modes last, deepest first, so none blocks writing inside it.
    for entry in payload.entries.iter().rev().filter(|e| e.content.is_none()) {
        let path = staging.join(&entry.path);
        fs::set_permissions(&path, fs::Permissions::from_mode(entry.mode | OWNER_DIR))
            .map_err(at(&path))?;
    }
    sync_dir(&staging).map_err(at(&staging))?;
    if target.exists() {
        fs::rename(&target, &old).map_err(at(&target))?;
    }
    fs::rename(&staging, &target).map_err(at(&target))?;
    let manifest_new = root.join(format!(".{id}.files.new"));
    write_file_replacing(&manifest_new, listing(payload).as_bytes()).map_err(at(&manifest_new))?;
    fs::rename(&manifest_new, &manifest).map_err(at(&manifest))?;
    sync_dir(root).map_err(at(root))?;
    remove_if_present(&old).map_err(at(&old))?;
    Ok(target)
}

/// Removes `root/<id>` and any leftover of a write.
pub fn remove(root: &Path, id: i64) -> Result<(), Error> {
    for path in [
        path(root, id),
        root.join(format!(".{id}.new")),
        root.join(format!(".{id}.old")),
        root.join(format!("{id}.files")),
        root.join(format!(".{id}.files.new")),
    ] {
        remove_if_present(&path).map_err(at(&path))?;
    }
    Ok(())
}

/// After a cut between the two renames of [`write`] only `.<id>.old` is there: it goes back.
pub fn recover(root: &Path, id: i64) -> io::Result<()> {
    let old = root.join(format!(".{id}.old"));
    let target = path(root, id);
    if old.exists() && !target.exists() {
        fs::rename(&old, &target)?;
    }
    Ok(())
}

/// Every path a payload writes, its implicit folders included, one per line.
fn listing(payload: &Payload) -> String {
    let mut paths = BTreeSet::new();
    for entry in &payload.entries {
        let mut prefix = entry.path.as_str();
        paths.insert(prefix);
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            paths.insert(parent);
            prefix = parent;
        }
    }
    paths.into_iter().map(|p| format!("{p}\n")).collect()
}

/// Moves into `new` what is in `old` (at `relative`) and was not written from a payload
/// (`listed`); looks inside listed folders for such things.
fn carry_over(old: &Path, new: &Path, relative: &str, listed: &BTreeSet<&str>) -> io::Result<()> {
    if relative.matches('/').count() > 32 {
        return Ok(());
    }
    for child in fs::read_dir(old)? {
        let child = child?;
        let Some(name) = child.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let rel = if relative.is_empty() {
            name.clone()
        } else {
            format!("{relative}/{name}")
        };
        let to = new.join(&name);
        let is_dir = child.file_type()?.is_dir();
        let present = match fs::symlink_metadata(&to) {
            Ok(meta) => Some(meta.is_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        match (present, listed.contains(rel.as_str()), is_dir) {
            (None, false, _) => fs::rename(child.path(), &to)?,
            (Some(true), _, true) => carry_over(&child.path(), &to, &rel, listed)?,
            (None, true, true) => {
                DirBuilder::new().mode(OWNER_DIR).create(&to)?;
                carry_over(&child.path(), &to, &rel, listed)?;
                // Nothing of the stack's own was inside: the folder goes with the payload's.
                let _ = fs::remove_dir(&to);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Creates the folders between `base` and `path`; refuses anything on the way that is not a
/// real folder (a symlink cannot lead a write out of the stack folder).
fn ensure_parents(base: &Path, path: &Path) -> io::Result<()> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    let Ok(relative) = parent.strip_prefix(base) else {
        return Err(io::Error::other("outside the stack folder"));
    };
    let mut current = base.to_owned();
    for part in relative.components() {
        current.push(part);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} is in the way and is not a folder",
                    current.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                DirBuilder::new().mode(0o755).create(&current)?
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_file(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(content)?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.sync_all()
}

fn write_file_replacing(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content)?;
    file.sync_all()
}

fn is_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stacks::payload::Entry;

    fn payload(entries: &[(&str, u32, Option<&str>)]) -> Payload {
        Payload {
            name: "web".into(),
            entry_file: "docker-compose.yml".into(),
            entries: entries
                .iter()
                .map(|(path, mode, content)| Entry {
                    path: path.to_string(),
                    mode: *mode,
                    content: content.map(|c| c.as_bytes().to_vec()),
                })
                .collect(),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn writes_files_with_their_modes_and_replaces_the_folder_keeping_unlisted_data() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("stacks");
        let first = payload(&[
            ("conf", 0o750, None),
            ("conf/app.ini", 0o640, Some("a=1\n")),
            ("docker-compose.yml", 0o644, Some("services: {}\n")),
            ("scripts/run.sh", 0o755, Some("#!/bin/sh\n")),
        ]);
        let folder = write(&root, 7, &first).unwrap();
        assert_eq!(folder, root.join("7"));
        assert_eq!(
            fs::read_to_string(folder.join("conf/app.ini")).unwrap(),
            "a=1\n"
        );
        assert_eq!(mode(&folder.join("conf/app.ini")), 0o640);
        assert_eq!(mode(&folder.join("scripts/run.sh")), 0o755);
        assert_eq!(mode(&folder.join("conf")), 0o750);
        // What Docker makes for `./data:/data`, and a file the stack writes there.
        fs::create_dir(folder.join("data")).unwrap();
        fs::write(folder.join("data/db"), "rows").unwrap();
        fs::write(folder.join("conf/cache"), "c").unwrap();

        let second = payload(&[("docker-compose.yml", 0o600, Some("services: {a: {}}\n"))]);
        write(&root, 7, &second).unwrap();
        assert_eq!(
            fs::read_to_string(folder.join("docker-compose.yml")).unwrap(),
            "services: {a: {}}\n"
        );
        assert_eq!(mode(&folder.join("docker-compose.yml")), 0o600);
        assert_eq!(fs::read_to_string(folder.join("data/db")).unwrap(), "rows");
        assert!(
            !folder.join("scripts").exists(),
            "files no longer listed go"
        );
        assert_eq!(fs::read_to_string(folder.join("conf/cache")).unwrap(), "c");
        let names: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names.iter().filter(|n| n.starts_with('.')).count(),
            0,
            "no staging leftovers: {names:?}"
        );

        remove(&root, 7).unwrap();
        assert!(!folder.exists());
    }

    #[test]
    fn a_cut_between_the_renames_recovers_the_old_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join(".3.old")).unwrap();
        fs::write(root.join(".3.old/docker-compose.yml"), "old").unwrap();
        fs::create_dir(root.join(".3.new")).unwrap();
        let p = payload(&[("docker-compose.yml", 0o644, Some("new"))]);
        write(root, 3, &p).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("3/docker-compose.yml")).unwrap(),
            "new"
        );
        assert!(!root.join(".3.old").exists() && !root.join(".3.new").exists());
    }
}
