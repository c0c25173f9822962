//! Stack folders `DATA_PATH/stacks/<id>/`: written whole into `.<id>.new`, every file and
//! folder fsynced, then swapped in by rename, so a power cut leaves either the old folder or the
//! new one. What was in the old folder without coming from the payload (the host side of a
//! relative bind such as `./data`, made by Docker) is then moved into the new one, so an update
//! keeps a stack's data; a cut during that move is finished by [`recover`] (run before each
//! write and when the stacks thread gets its first poll answer). The list of what came from the
//! payload is kept beside the folder as `<id>.files`. Every step goes through [`Disk`] (the
//! durable writes' seam), so the tests cut the power after each one.

use super::payload::Payload;
use crate::system::durable::{self, Disk, Real};
use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
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

/// The names of one stack's folder and what is written beside it.
struct Names {
    /// `<id>`: the stack folder.
    target: PathBuf,
    /// `<id>.files`: the payload's paths in `target`.
    listing: PathBuf,
    /// `.<id>.new`: the next folder while it is written.
    staging: PathBuf,
    /// `.<id>.files.new`: its listing.
    staged_listing: PathBuf,
    /// `.<id>.old`: the previous folder between the swap and the end of the carry-over.
    old: PathBuf,
}

impl Names {
    fn new(root: &Path, id: i64) -> Names {
        Names {
            target: path(root, id),
            listing: root.join(format!("{id}.files")),
            staging: root.join(format!(".{id}.new")),
            staged_listing: root.join(format!(".{id}.files.new")),
            old: root.join(format!(".{id}.old")),
        }
    }
}

/// Writes the payload's files as `root/<id>/` and returns that path.
pub fn write(root: &Path, id: i64, payload: &Payload) -> Result<PathBuf, Error> {
    write_on(&mut Real::default(), root, id, payload)
}

/// 1. The new folder is written whole as `.<id>.new`, every file and folder in it fsynced,
///    with its listing as `.<id>.files.new`. 2. The swap: `<id>` becomes `.<id>.old`,
///    `.<id>.new` becomes `<id>`. 3. [`finish`]. A cut anywhere is put right by [`recover`].
fn write_on(
    disk: &mut impl Disk,
    root: &Path,
    id: i64,
    payload: &Payload,
) -> Result<PathBuf, Error> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(at(root))?;
    recover_on(disk, root, id)?;
    let n = Names::new(root, id);
    let staging = &n.staging;
    disk.mkdir(staging, OWNER_DIR).map_err(at(staging))?;
    let mut folders = vec![staging.clone()];
    for entry in &payload.entries {
        let path = staging.join(&entry.path);
        ensure_parents(disk, staging, &path, &mut folders).map_err(at(&path))?;
        match &entry.content {
            Some(content) => disk
                .write(&path, content, entry.mode)
                .and_then(|()| disk.sync(&path))
                .map_err(at(&path))?,
            None => match disk.mkdir(&path, OWNER_DIR) {
                Ok(()) => folders.push(path),
                // Already made as the parent of an earlier entry (entries are sorted).
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && is_dir(&path) => {}
                Err(e) => return Err(at(&path)(e)),
            },
        }
    }
    // Listed folders get their modes last, deepest first, so none blocks writing inside it.
    for entry in payload.entries.iter().rev().filter(|e| e.content.is_none()) {
        let path = staging.join(&entry.path);
        disk.set_mode(&path, entry.mode | OWNER_DIR)
            .map_err(at(&path))?;
    }
    for folder in folders.iter().rev() {
        disk.sync_dir(folder).map_err(at(folder))?;
    }
    disk.write(&n.staged_listing, listing(payload).as_bytes(), 0o600)
        .and_then(|()| disk.sync(&n.staged_listing))
        .and_then(|()| disk.sync_dir(root))
        .map_err(at(&n.staged_listing))?;
    if n.target.exists() {
        disk.rename(&n.target, &n.old).map_err(at(&n.target))?;
    }
    disk.rename(staging, &n.target).map_err(at(&n.target))?;
    finish(disk, root, &n)?;
    Ok(n.target)
}

/// After the swap: what was in the old folder without coming from its payload (read from the
/// old listing) moves into the new one and is fsynced there, then the new listing takes the
/// old one's place, then the old folder goes. Until the listing is replaced, `.<id>.files.new`
/// says that the carry-over may be unfinished.
fn finish(disk: &mut impl Disk, root: &Path, n: &Names) -> Result<(), Error> {
    if n.staged_listing.exists() {
        if n.old.exists() {
            // Written by us: the payload's names (a bounded list); read bounded all the same.
            let mut listed = String::new();
            let _ =
                File::open(&n.listing).and_then(|f| f.take(1 << 20).read_to_string(&mut listed));
            let listed: BTreeSet<&str> = listed.lines().collect();
            let mut moved_into = BTreeSet::new();
            let folders = (n.old.as_path(), n.target.as_path(), n.target.as_path());
            carry_over(disk, folders, "", &listed, &mut moved_into).map_err(at(&n.old))?;
            for folder in &moved_into {
                disk.sync_dir(folder).map_err(at(folder))?;
            }
        }
        disk.rename(&n.staged_listing, &n.listing)
            .and_then(|()| disk.sync_dir(root))
            .map_err(at(&n.listing))?;
    }
    disk.remove(&n.old).map_err(at(&n.old))
}

/// Removes `root/<id>` and any leftover of a write (leftovers first: a cut in between must
/// not leave an old folder that [`recover`] would put back).
pub fn remove(root: &Path, id: i64) -> Result<(), Error> {
    let n = Names::new(root, id);
    let mut disk = Real::default();
    for path in [n.old, n.staged_listing, n.staging, n.target, n.listing] {
        disk.remove(&path).map_err(at(&path))?;
    }
    Ok(())
}

/// Puts right a write of `root/<id>` that a crash or power cut stopped: before the swap the
/// old folder stays (or comes back from `.<id>.old`), after it the write is finished.
pub fn recover(root: &Path, id: i64) -> Result<(), Error> {
    recover_on(&mut Real::default(), root, id)
}

fn recover_on(disk: &mut impl Disk, root: &Path, id: i64) -> Result<(), Error> {
    let n = Names::new(root, id);
    let back = n.old.exists() && !n.target.exists();
    if back {
        disk.rename(&n.old, &n.target).map_err(at(&n.old))?;
    }
    if back || n.staging.exists() {
        // The listing first: without the staging folder beside it, it would mean "swapped".
        for path in [&n.staged_listing, &n.staging] {
            disk.remove(path).map_err(at(path))?;
        }
        return disk.sync_dir(root).map_err(at(root));
    }
    finish(disk, root, &n)
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

/// Moves into `new` what is in `old` (at `relative` below `base`, the new folder) and was not
/// written from a payload (`listed`); looks inside listed folders for such things, making the
/// folders on the way only for something to move. Notes the folders moved into or made.
fn carry_over(
    disk: &mut impl Disk,
    (old, new, base): (&Path, &Path, &Path),
    relative: &str,
    listed: &BTreeSet<&str>,
    touched: &mut BTreeSet<PathBuf>,
) -> io::Result<()> {
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
            (None, false, _) => {
                let mut made = Vec::new();
                ensure_parents(disk, base, &to, &mut made)?;
                for folder in made {
                    touched.insert(durable::parent(&folder).to_owned());
                }
                disk.rename(&child.path(), &to)?;
                touched.insert(new.to_owned());
            }
            // A listed folder: what the stack put inside it comes along.
            (_, _, true) if present != Some(false) => {
                carry_over(disk, (&child.path(), &to, base), &rel, listed, touched)?
            }
            _ => {}
        }
    }
    Ok(())
}

/// Creates the folders between `base` and `path` (noted in `made`); refuses anything on the
/// way that is not a real folder (a symlink cannot lead a write out of the stack folder).
fn ensure_parents(
    disk: &mut impl Disk,
    base: &Path,
    path: &Path,
    made: &mut Vec<PathBuf>,
) -> io::Result<()> {
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
                disk.mkdir(&current, 0o755)?;
                made.push(current.clone());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn is_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stacks::payload::Entry;
    use std::os::unix::fs::PermissionsExt;

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

    /// Files (with content) and folders under `dir`, relative.
    fn tree(dir: &Path) -> BTreeSet<(String, Option<String>)> {
        let mut found = BTreeSet::new();
        let mut todo = vec![dir.to_owned()];
        while let Some(folder) = todo.pop() {
            for child in fs::read_dir(&folder).unwrap() {
                let path = child.unwrap().path();
                let rel = path.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
                if path.is_dir() {
                    found.insert((rel, None));
                    todo.push(path);
                } else {
                    found.insert((rel, Some(fs::read_to_string(&path).unwrap())));
                }
            }
        }
        found
    }

    /// What `root/7` holds after `p` was written over a folder with Docker's `data`.
    fn expected(p: &Payload) -> BTreeSet<(String, Option<String>)> {
        let mut want: BTreeSet<_> = listing(p)
            .lines()
            .map(|rel| {
                let entry = p.entries.iter().find(|e| e.path == rel);
                let content = entry.and_then(|e| e.content.as_ref());
                (
                    rel.to_owned(),
                    content.map(|c| String::from_utf8(c.clone()).unwrap()),
                )
            })
            .collect();
        for (rel, content) in [
            ("data", None),
            ("data/db", Some("rows")),
            ("conf", None),
            ("conf/cache", Some("c")),
        ] {
            want.insert((rel.into(), content.map(str::to_owned)));
        }
        want
    }

    /// The first deploy, then two updates of a folder holding Docker-made data, cut at every
    /// step and recovered: the folder is the old version or the new one, with its listing,
    /// the data always in it, and nothing left beside it.
    #[test]
    fn every_power_cut_of_a_folder_swap_recovers_the_old_or_the_new_folder() {
        use crate::system::power_cut::{self, Recorder};
        let versions = [
            payload(&[
                ("conf", 0o750, None),
                ("conf/app.ini", 0o640, Some("a=1\n")),
                ("docker-compose.yml", 0o644, Some("services: {}\n")),
                ("scripts/run.sh", 0o755, Some("#!/bin/sh\n")),
            ]),
            payload(&[
                ("conf/app.ini", 0o640, Some("a=2\n")),
                ("docker-compose.yml", 0o644, Some("services: {a: {}}\n")),
            ]),
            payload(&[("docker-compose.yml", 0o600, Some("services: {b: {}}\n"))]),
        ];
        // After a cut and `recover`: the old version or the new one (`None`: no folder).
        fn verify(image: &Path, cut: &dyn fmt::Display, choices: &[Option<&Payload>]) {
            for name in [".7.new", ".7.old", ".7.files.new"] {
                assert!(!image.join(name).exists(), "{cut}: {name} left");
            }
            let listed = fs::read_to_string(image.join("7.files")).ok();
            let found = image.join("7").exists().then(|| tree(&image.join("7")));
            let ok = choices.iter().any(|choice| match choice {
                None => found.is_none() && listed.is_none(),
                Some(p) => {
                    let mut want = expected(p);
                    if choices.contains(&None) {
                        want.retain(|(rel, _)| !rel.starts_with("data") && rel != "conf/cache");
                    }
                    found.as_ref() == Some(&want) && listed.as_deref() == Some(&listing(p))
                }
            });
            assert!(ok, "{cut}: {found:#?} listed {listed:?}");
        }
        // The recovery itself is cut at every step too (a second cut while putting the first
        // right), and recovered again. Counts the second cuts.
        fn check(image: &Path, cut: &power_cut::Cut, choices: &[Option<&Payload>]) -> usize {
            let mut again = Recorder::new();
            power_cut::copy_tree(image, again.root());
            again.start();
            let root = again.root().to_owned();
            recover_on(&mut again, &root, 7).unwrap_or_else(|e| panic!("{cut}: {e}"));
            verify(&root, cut, choices);
            power_cut::each_image(&again, |image, second| {
                recover_on(&mut power_cut::Unsynced::default(), image, 7)
                    .unwrap_or_else(|e| panic!("{cut}, then {second}: {e}"));
                verify(image, &format!("{cut}, then {second}"), choices);
            })
        }

        // The first deploy.
        let mut recorder = Recorder::new();
        recorder.start();
        let root = recorder.root().to_owned();
        write_on(&mut recorder, &root, 7, &versions[0]).unwrap();
        let mut second = 0;
        let first = power_cut::each_image(&recorder, |image, cut| {
            second += check(image, cut, &[None, Some(&versions[0])]);
        });

        // Two updates over Docker's data.
        let mut recorder = Recorder::new();
        let root = recorder.root().to_owned();
        write(&root, 7, &versions[0]).unwrap();
        fs::create_dir(root.join("7/data")).unwrap();
        fs::write(root.join("7/data/db"), "rows").unwrap();
        fs::write(root.join("7/conf/cache"), "c").unwrap();
        recorder.start();
        write_on(&mut recorder, &root, 7, &versions[1]).unwrap();
        let end_of_first = recorder.steps();
        write_on(&mut recorder, &root, 7, &versions[2]).unwrap();
        let updates = power_cut::each_image(&recorder, |image, cut| {
            let v = if cut.after <= end_of_first { 0 } else { 1 };
            second += check(image, cut, &[Some(&versions[v]), Some(&versions[v + 1])]);
        });
        eprintln!(
            "stack folder: {first} power cuts of a first deploy, {updates} of two updates ({} steps), \
             {second} second cuts during the recoveries",
            recorder.steps()
        );
        assert!(first > 20 && updates > 50, "{first} {updates}");
    }

    /// The case the enumeration found in the earlier protocol, which moved Docker's data into
    /// `.<id>.new` before the swap and removed `.<id>.new` after a cut: the data went with it.
    /// Now a cut after the swap, halfway through the carry-over, is finished by `recover`.
    #[test]
    fn a_cut_during_the_carry_over_keeps_the_stack_data() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let old = payload(&[("docker-compose.yml", 0o644, Some("old"))]);
        let new = payload(&[("docker-compose.yml", 0o644, Some("new"))]);
        write(root, 3, &old).unwrap();
        fs::create_dir(root.join("3/data")).unwrap();
        fs::write(root.join("3/data/db"), "rows").unwrap();
        fs::write(root.join("3/notes"), "n").unwrap();
        // The cut: swapped, `notes` moved over, `data` not yet.
        fs::rename(root.join("3"), root.join(".3.old")).unwrap();
        fs::create_dir(root.join("3")).unwrap();
        fs::write(root.join("3/docker-compose.yml"), "new").unwrap();
        fs::rename(root.join(".3.old/notes"), root.join("3/notes")).unwrap();
        fs::write(root.join(".3.files.new"), listing(&new)).unwrap();
        recover(root, 3).unwrap();
        assert_eq!(fs::read_to_string(root.join("3/data/db")).unwrap(), "rows");
        assert_eq!(fs::read_to_string(root.join("3/notes")).unwrap(), "n");
        assert_eq!(
            fs::read_to_string(root.join("3/docker-compose.yml")).unwrap(),
            "new"
        );
        assert!(!root.join(".3.old").exists() && !root.join(".3.files.new").exists());
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
