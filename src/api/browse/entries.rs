//! `delete` and `rename`: Go's `os.Remove` and `os.Rename` inside the root, done at the folders
//! that hold the entries, so a symbolic link is removed or moved, never followed.

use crate::api::confine::Root;
use nix::errno::Errno;
use nix::fcntl::renameat;
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::io;

/// `os.Remove`: a file, a link (not what it points to) or an empty folder.
pub(super) fn remove(root: &Root, path: &str) -> io::Result<()> {
    let (dir, name) = root.parent(path)?;
    match unlinkat(&dir, name.as_str(), UnlinkatFlags::NoRemoveDir) {
        Err(Errno::EISDIR) => Ok(unlinkat(&dir, name.as_str(), UnlinkatFlags::RemoveDir)?),
        other => Ok(other?),
    }
}

/// `os.Rename`: replaces a file at `to`; links are moved, not followed.
pub(super) fn rename(root: &Root, from: &str, to: &str) -> io::Result<()> {
    let (from_dir, from_name) = root.parent(from)?;
    let (to_dir, to_name) = root.parent(to)?;
    Ok(renameat(
        &from_dir,
        from_name.as_str(),
        &to_dir,
        to_name.as_str(),
    )?)
}
