//! `ls`: a folder inside the root as the JSON array of Go's `filesystem.FileInfo`, at most
//! [`MAX_LISTING`] bytes.

use crate::api::confine::Root;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, SFlag};
use serde::Serialize;
use std::io;

/// The largest directory listing (about 40,000 entries).
const MAX_LISTING: usize = 4 * 1024 * 1024;

/// One entry of a listing (`filesystem.FileInfo`): `Size` and `ModTime` (Unix seconds) of the
/// entry itself, a symbolic link included.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct FileInfo<'a> {
    name: &'a str,
    size: i64,
    dir: bool,
    mod_time: i64,
}

pub(super) fn list(root: &Root, path: &str) -> io::Result<Vec<u8>> {
    let fd = root.open_path(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let at = fd.try_clone()?;
    let mut dir = nix::dir::Dir::from_fd(fd)?;
    let mut out = b"[".to_vec();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        // An entry removed meanwhile is left out.
        let Ok(st) = fstatat(&at, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        if out.len() > 1 {
            out.push(b',');
        }
        // `time_t` is 32 bits on 32-bit musl targets.
        #[allow(clippy::useless_conversion)]
        let mod_time: i64 = st.st_mtime.into();
        let info = FileInfo {
            name: &name.to_string_lossy(),
            size: st.st_size,
            dir: SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR,
            mod_time,
        };
        serde_json::to_writer(&mut out, &info).map_err(io::Error::other)?;
        if out.len() > MAX_LISTING {
            return Err(io::Error::other(format!(
                "the listing is larger than {} MiB",
                MAX_LISTING >> 20
            )));
        }
    }
    out.push(b']');
    Ok(out)
}
