//! Uploads in progress: each is written to a new file in the staging folder
//! (`<DATA_PATH>/uploads`), then renamed into the target folder (copied next to the target
//! first when that is another file system) and fsynced, so the old file stays whole until the
//! new one is complete, even through a power cut. What a crash left in the staging folder is
//! removed when the agent API starts ([`Browser::clean_staging`]).

use super::{Browser, BUF};
use crate::api::confine::{self, Root};
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, Mode, SFlag};
use nix::unistd::{fchown, unlinkat, Gid, Uid, UnlinkatFlags};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

/// An upload never leaves less than this free on the file system it is written to.
pub(crate) const RESERVE: u64 = 16 * 1024 * 1024;
const STAGED: &str = "upload-";

impl Browser {
    /// Removes what uploads cut short by a crash or power cut left behind.
    pub fn clean_staging(&self) {
        let Ok(entries) = std::fs::read_dir(&self.staging) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(STAGED) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// A new staging file, and the free space where it is.
pub(super) fn stage(staging: &Path) -> io::Result<(String, File, u64)> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(staging)?;
    let name = format!("{STAGED}{:016x}", crate::system::random::u64());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(staging.join(&name))?;
    let free = free_space(&file)?;
    Ok((name, file, free))
}

fn free_space(fd: impl std::os::fd::AsFd) -> io::Result<u64> {
    let st = nix::sys::statvfs::fstatvfs(fd)?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

pub(super) fn move_into(
    root: &Root,
    dir_path: &str,
    name: &str,
    file: File,
    staged: &Path,
) -> io::Result<()> {
    file.sync_all()?;
    let dir = root.create_dirs(dir_path)?;
    let (mode, owner) = match fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
            return Err(Errno::EISDIR.into())
        }
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG => {
            (st.st_mode & 0o7777, Some((st.st_uid, st.st_gid)))
        }
        _ => (0o644, None),
    };
    let adopt = |f: &File| -> io::Result<()> {
        fchmod(f, Mode::from_bits_truncate(mode))?;
        if let Some((uid, gid)) = owner {
            fchown(f, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
        }
        Ok(())
    };
    adopt(&file)?;
    let staging_dir = nix::fcntl::open(
        staged.parent().unwrap_or(Path::new("/")),
        confine::dir_flags(),
        Mode::empty(),
    )?;
    let staged_name = staged.file_name().unwrap_or_default();
    match renameat(&staging_dir, staged_name, &dir, name) {
        Ok(()) => return sync_dir(&dir),
        Err(Errno::EXDEV) => {}
        Err(e) => return Err(e.into()),
    }
    // Another file system: a copy next to the target, then the same rename.
    let size = file.metadata()?.len();
    let copy_name = format!(
        ".{name}.edge-agent-{:08x}",
        crate::system::random::u64() as u32
    );
    let copy_fd: OwnedFd = openat(
        &dir,
        copy_name.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    let mut copy = File::from(copy_fd);
    let copied = (|| -> io::Result<()> {
        if free_space(&copy)?.saturating_sub(RESERVE) < size {
            return Err(Errno::ENOSPC.into());
        }
        let mut source = File::open(staged)?;
        let mut buf = vec![0u8; BUF];
        loop {
            let n = source.read(&mut buf)?;
            if n == 0 {
                break;
            }
            copy.write_all(&buf[..n])?;
        }
        copy.sync_all()?;
        adopt(&copy)?;
        renameat(&dir, copy_name.as_str(), &dir, name)?;
        Ok(())
    })();
    if copied.is_err() {
        let _ = unlinkat(&dir, copy_name.as_str(), UnlinkatFlags::NoRemoveDir);
        return copied;
    }
    std::fs::remove_file(staged)?;
    sync_dir(&dir)
}

/// Makes a rename in `dir` last through a power cut.
fn sync_dir(dir: &OwnedFd) -> io::Result<()> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    File::from(fd).sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::confine::{Resolver, Scope};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// An upload staged in `staging` replaces a longer file in `target`, whole.
    fn replaces_whole(staging: &Path, target: &Path) {
        std::fs::write(target.join("f"), vec![b'A'; 10_000]).unwrap();
        std::fs::set_permissions(target.join("f"), std::fs::Permissions::from_mode(0o604)).unwrap();
        let (name, mut file, _) = stage(staging).unwrap();
        file.write_all(b"new").unwrap();
        let root = Root::open(target, Scope::Beneath, Resolver::detect()).unwrap();
        move_into(&root, "/", "f", file, &staging.join(&name)).unwrap();
        assert_eq!(std::fs::read(target.join("f")).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(target.join("f")).unwrap().mode() & 0o7777,
            0o604
        );
        assert_eq!(
            std::fs::read_dir(staging).unwrap().count(),
            0,
            "staged file gone"
        );
        assert_eq!(
            std::fs::read_dir(target).unwrap().count(),
            1,
            "no copy left"
        );
    }

    #[test]
    fn uploads_replace_files_by_rename_or_across_file_systems() {
        let data = tempfile::tempdir().unwrap();
        let staging = data.path().join("uploads");
        let same = tempfile::tempdir().unwrap();
        replaces_whole(&staging, same.path());
        // /dev/shm is a tmpfs on Linux: another file system than the temporary folder.
        let other = tempfile::tempdir_in("/dev/shm").unwrap();
        let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
        assert_ne!(dev(other.path()), dev(data.path()), "need two file systems");
        replaces_whole(&staging, other.path());
    }
}
