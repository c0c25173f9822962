//! Durable writes: the agent's one way to replace a file so that a power cut leaves the old
//! content or the new, never a mix. The new content goes to a temporary file beside the
//! target, which is fsynced, renamed over the target, and the folder is fsynced.
//!
//! Every step goes through [`Disk`], so tests can run the same code against a disk that
//! records the steps and builds what a power cut after any of them leaves
//! (`src/system/power_cut.rs`).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file system operations a durable write is made of. Reads go to `std::fs` directly.
pub trait Disk {
    /// Creates or truncates `path` (never through a symlink), writes `content`, sets `mode`.
    /// Nothing is synced.
    fn write(&mut self, path: &Path, content: &[u8], mode: u32) -> io::Result<()>;
    /// fsync of a file written before.
    fn sync(&mut self, path: &Path) -> io::Result<()>;
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()>;
    fn mkdir(&mut self, path: &Path, mode: u32) -> io::Result<()>;
    fn set_mode(&mut self, path: &Path, mode: u32) -> io::Result<()>;
    /// Removes a file or a whole folder; a missing one is no error.
    fn remove(&mut self, path: &Path) -> io::Result<()>;
    /// fsync of a folder: its entries (created, renamed, removed) are on disk.
    fn sync_dir(&mut self, path: &Path) -> io::Result<()>;
}

/// The real file system. Keeps the file last written open so its fsync needs no new open.
#[derive(Default)]
pub struct Real {
    last: Option<(PathBuf, File)>,
}

impl Disk for Real {
    fn write(&mut self, path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)?;
        file.write_all(content)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        self.last = Some((path.to_owned(), file));
        Ok(())
    }

    fn sync(&mut self, path: &Path) -> io::Result<()> {
        match self.last.take() {
            Some((last, file)) if last == path => file.sync_all(),
            _ => File::open(path)?.sync_all(),
        }
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn mkdir(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        DirBuilder::new().mode(mode).create(path)
    }

    fn set_mode(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
            Ok(_) => fs::remove_file(path),
        }
    }

    fn sync_dir(&mut self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
}

/// `<name>.tmp` beside `path`: where its next content is written.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `content` (mode `mode`): temporary file, fsync, rename, folder fsync.
pub fn replace(disk: &mut impl Disk, path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    replace_keeping(disk, path, None, content, mode)
}

/// The same; with `backup`, the current file becomes `backup` before the new one takes its
/// place, so a cut between the two renames leaves the previous content as the backup.
pub fn replace_keeping(
    disk: &mut impl Disk,
    path: &Path,
    backup: Option<&Path>,
    content: &[u8],
    mode: u32,
) -> io::Result<()> {
    let temp = temp_path(path);
    disk.write(&temp, content, mode)?;
    disk.sync(&temp)?;
    if let Some(backup) = backup {
        match disk.rename(path, backup) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    disk.rename(&temp, path)?;
    disk.sync_dir(parent(path))
}

/// The folder `path` is in (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::power_cut::{self, Recorder};

    #[test]
    fn replace_leaves_the_new_content_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "old").unwrap();
        replace(&mut Real::default(), &path, b"new", 0o640).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert!(!temp_path(&path).exists());
    }

    /// A power cut anywhere in a replace leaves the old content or the new one, whole.
    #[test]
    fn every_power_cut_of_a_replace_leaves_old_or_new() {
        let mut recorder = Recorder::new();
        fs::write(recorder.root().join("f"), "old content").unwrap();
        recorder.start();
        let path = recorder.root().join("f");
        replace(&mut recorder, &path, b"the new content", 0o600).unwrap();
        let points = power_cut::each_image(&recorder, |image, at| {
            let text = fs::read_to_string(image.join("f")).unwrap_or_default();
            assert!(
                text == "old content" || text == "the new content",
                "{at}: {text:?}"
            );
        });
        eprintln!("replace: {points} power cuts");
        assert!(points > 15, "{points}");
    }

    /// The model catches what the protocol guards against: without the fsync before the
    /// rename, or without the folder fsync, a cut can leave a torn or an old file.
    #[test]
    fn the_power_cut_model_finds_a_missing_fsync() {
        for skip_file_sync in [true, false] {
            let mut recorder = Recorder::new();
            fs::write(recorder.root().join("f"), "old").unwrap();
            recorder.start();
            let path = recorder.root().join("f");
            let temp = temp_path(&path);
            recorder.write(&temp, b"new", 0o600).unwrap();
            if !skip_file_sync {
                recorder.sync(&temp).unwrap();
            }
            recorder.rename(&temp, &path).unwrap();
            if !skip_file_sync {
                // No folder fsync: after the rename, the old file may still be there; the
                // replace returned, so its caller counts on the new one.
                let mut stale = 0;
                power_cut::each_image(&recorder, |image, cut| {
                    let text = fs::read_to_string(image.join("f")).unwrap();
                    stale += usize::from(cut.after == recorder.steps() && text == "old");
                });
                assert!(stale > 0);
                continue;
            }
            let root = recorder.root().to_owned();
            recorder.sync_dir(&root).unwrap();
            let mut torn = 0;
            power_cut::each_image(&recorder, |image, _| {
                let text = fs::read_to_string(image.join("f")).unwrap_or_default();
                torn += usize::from(text != "old" && text != "new");
            });
            assert!(torn > 0);
        }
    }
}
