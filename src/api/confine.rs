//! Paths confined to a directory: the security boundary of the volume and host browsers. A path
//! from Portainer is resolved component by component inside a root that is held open, so no
//! `..`, absolute symbolic link or symlinked parent can reach what lies outside, whatever the
//! volume's owner (a container) put in it and even while it changes things under us.
//!
//! Two resolvers with the same rules: Linux 5.6's `openat2` (`RESOLVE_BENEATH` or
//! `RESOLVE_IN_ROOT`, no magic links) where the kernel and its seccomp policy have it, else a
//! walk that opens one component at a time with `O_NOFOLLOW`, reads each symbolic link itself
//! and follows it under the same rules. Symbolic links that stay inside work in both.

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};
use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::OnceLock;

/// What happens to a path that tries to leave the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Refused (`EXDEV`): `..` above the root, any absolute symbolic link. For volumes.
    Beneath,
    /// The root acts as `/`: `..` stops there, absolute links start there. For the host
    /// browser, rooted at `/` (where it changes nothing but refusing magic links).
    InRoot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    Openat2,
    Walk,
}

impl Resolver {
    /// `openat2` when this kernel lets us use it (Linux 5.6, not blocked by seccomp), asked once.
    pub fn detect() -> Resolver {
        static DETECTED: OnceLock<Resolver> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_BENEATH);
            match openat2(nix::fcntl::AT_FDCWD, ".", how) {
                Err(e @ (Errno::ENOSYS | Errno::EPERM | Errno::EINVAL)) => {
                    log::info!("openat2 is not available ({e}): file browser paths are resolved one component at a time");
                    Resolver::Walk
                }
                _ => Resolver::Openat2,
            }
        })
    }
}

/// The most symbolic links one resolution follows (Linux's own limit).
const MAX_LINKS: usize = 40;
/// The most components a path may have, links included.
const MAX_COMPONENTS: usize = 256;
/// The longest path accepted (Linux's `PATH_MAX`).
const MAX_PATH: usize = 4096;

/// A directory held open; every path is resolved inside it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    scope: Scope,
    resolver: Resolver,
}

impl Root {
    /// Opens `dir` itself as it is (its own path is trusted: it comes from Docker or is `/`).
    pub fn open(dir: &Path, scope: Scope, resolver: Resolver) -> io::Result<Root> {
        let fd = nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            scope,
            resolver,
        })
    }

    /// Opens `path` (relative to the root; leading `/` ignored) with `flags`; a final symbolic
    /// link is followed, inside the root.
    pub fn open_path(&self, path: &str, flags: OFlag) -> io::Result<OwnedFd> {
        let parts = components(path)?;
        let flags = flags | OFlag::O_CLOEXEC;
        match self.resolver {
            Resolver::Openat2 => self.openat2(&parts, flags),
            Resolver::Walk => self.walk(parts, flags),
        }
    }

    /// The directory that holds `path`'s last component, and that component, which is not
    /// resolved: for removing, renaming and replacing without following a final link.
    pub fn parent(&self, path: &str) -> io::Result<(OwnedFd, String)> {
        let mut parts = components(path)?;
        let name = match parts.pop() {
            Some(name) if name != ".." => name.to_owned(),
            // The root itself, or a name that is not one.
            _ => return Err(Errno::EINVAL.into()),
        };
        let dir = self.open_path(&parts.join("/"), dir_flags())?;
        Ok((dir, name))
    }

    /// Opens the directory `path`, creating what is missing of it (`mkdir -p`, mode 0755).
    pub fn create_dirs(&self, path: &str) -> io::Result<OwnedFd> {
        match self.open_path(path, dir_flags()) {
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {}
            other => return other,
        }
        let mut parts = components(path)?;
        let name = match parts.pop() {
            Some(name) if name != ".." => name,
            _ => return Err(Errno::EINVAL.into()),
        };
        let parent_path = parts.join("/");
        let parent = self.create_dirs(&parent_path)?;
        match mkdirat(&parent, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        self.open_path(path, dir_flags())
    }

    fn openat2(&self, parts: &[&str], flags: OFlag) -> io::Result<OwnedFd> {
        let path = if parts.is_empty() {
            ".".to_owned()
        } else {
            parts.join("/")
        };
        let scope = match self.scope {
            Scope::Beneath => ResolveFlag::RESOLVE_BENEATH,
            Scope::InRoot => ResolveFlag::RESOLVE_IN_ROOT,
        };
        let how = OpenHow::new()
            .flags(flags)
            .mode(Mode::empty())
            .resolve(scope | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        // EAGAIN: a rename or mount raced with the lookup; the kernel asks to try again.
        let mut tries = 0;
        loop {
            match openat2(&self.fd, path.as_str(), how) {
                Err(Errno::EAGAIN) if tries < 8 => tries += 1,
                other => return other.map_err(io::Error::from),
            }
        }
    }

    /// One component at a time, never letting the kernel follow a link.
    fn walk(&self, parts: Vec<&str>, flags: OFlag) -> io::Result<OwnedFd> {
        let mut pending: VecDeque<String> = parts.into_iter().map(str::to_owned).collect();
        // The directories walked through, for `..`; `current` is where we are.
        let mut above: Vec<OwnedFd> = Vec::new();
        let mut current = self.fd.try_clone()?;
        let mut links = 0;
        while let Some(part) = pending.pop_front() {
            if part == ".." {
                match above.pop() {
                    Some(up) => current = up,
                    None if self.scope == Scope::InRoot => {}
                    None => return Err(Errno::EXDEV.into()),
                }
                continue;
            }
            let is_link = match fstatat(
                &current,
                part.as_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK,
                Err(Errno::ENOENT) if pending.is_empty() => false,
                Err(e) => return Err(e.into()),
            };
            if is_link {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Errno::ELOOP.into());
                }
                let target = readlinkat(&current, part.as_str())?;
                let target = target.to_str().ok_or(Errno::EINVAL)?;
                if target.starts_with('/') {
                    match self.scope {
                        Scope::Beneath => return Err(Errno::EXDEV.into()),
                        Scope::InRoot => {
                            above.clear();
                            current = self.fd.try_clone()?;
                        }
                    }
                }
                let expanded = components(target)?;
                if expanded.len() + pending.len() > MAX_COMPONENTS {
                    return Err(Errno::ENAMETOOLONG.into());
                }
                for part in expanded.into_iter().rev() {
                    pending.push_front(part.to_owned());
                }
                continue;
            }
            if pending.is_empty() {
                // Checked just above that it is no link; O_NOFOLLOW keeps it so if it changes.
                return Ok(openat(
                    &current,
                    part.as_str(),
                    flags | OFlag::O_NOFOLLOW,
                    Mode::empty(),
                )?);
            }
            let next = openat(
                &current,
                part.as_str(),
                dir_flags() | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )?;
            above.push(std::mem::replace(&mut current, next));
        }
        Ok(openat(&current, ".", flags, Mode::empty())?)
    }
}

/// A directory opened to resolve names in, not to read.
pub fn dir_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
}

/// The components of `path`, without empty ones and `.`; `..` is left to the resolution.
fn components(path: &str) -> io::Result<Vec<&str>> {
    if path.len() > MAX_PATH || path.contains('\0') {
        return Err(Errno::ENAMETOOLONG.into());
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.len() > MAX_COMPONENTS {
        return Err(Errno::ENAMETOOLONG.into());
    }
    Ok(parts)
}

/// Whether `e` is a refused escape (rather than a missing file or another failure).
pub fn is_escape(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(nix::libc::EXDEV | nix::libc::ELOOP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    /// A root with things that point out of it, next to a secret outside.
    fn tree() -> (tempfile::TempDir, std::path::PathBuf) {
        let top = tempfile::tempdir().unwrap();
        fs::write(top.path().join("secret"), "outside").unwrap();
        fs::create_dir(top.path().join("elsewhere")).unwrap();
        fs::write(top.path().join("elsewhere/file"), "outside too").unwrap();
        let root = top.path().join("root");
        fs::create_dir_all(root.join("dir/sub")).unwrap();
        fs::write(root.join("dir/sub/file"), "inside").unwrap();
        fs::write(root.join("top"), "top").unwrap();
        symlink(top.path().join("secret"), root.join("absolute")).unwrap();
        symlink("../secret", root.join("relative")).unwrap();
        symlink("../elsewhere", root.join("linked_dir")).unwrap();
        symlink("dir/sub/file", root.join("inside_link")).unwrap();
        symlink("/top", root.join("rooted")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        (top, root)
    }

    fn read(root: &Root, path: &str) -> io::Result<String> {
        let fd = root.open_path(path, OFlag::O_RDONLY)?;
        let mut text = String::new();
        fs::File::from(fd).read_to_string(&mut text)?;
        Ok(text)
    }

    fn both(scope: Scope, check: impl Fn(&Root)) -> tempfile::TempDir {
        let (top, dir) = tree();
        for resolver in [Resolver::Openat2, Resolver::Walk] {
            if resolver == Resolver::Openat2 && Resolver::detect() == Resolver::Walk {
                eprintln!("this kernel has no openat2: only the walk is tested");
                continue;
            }
            check(&Root::open(&dir, scope, resolver).unwrap());
        }
        top
    }

    #[test]
    fn inside_paths_and_inside_links_resolve() {
        let _top = both(Scope::Beneath, |root| {
            assert_eq!(read(root, "/dir/sub/file").unwrap(), "inside");
            assert_eq!(read(root, "dir//./sub/../sub/file").unwrap(), "inside");
            assert_eq!(read(root, "inside_link").unwrap(), "inside");
            assert_eq!(
                read(root, "").unwrap_err().raw_os_error(),
                Some(nix::libc::EISDIR)
            );
        });
    }

    #[test]
    fn escapes_are_refused_beneath() {
        let _top = both(Scope::Beneath, |root| {
            for path in [
                "..",
                "../secret",
                "dir/../../secret",
                "absolute",
                "relative",
                "linked_dir/file",
                "rooted",
            ] {
                let e = read(root, path).unwrap_err();
                assert!(is_escape(&e), "{path}: {e} in {:?}", root.resolver);
            }
            let e = read(root, "loop").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(nix::libc::ELOOP));
            assert_eq!(
                read(root, "missing").unwrap_err().raw_os_error(),
                Some(nix::libc::ENOENT)
            );
        });
    }

    #[test]
    fn in_root_keeps_everything_inside() {
        let _top = both(Scope::InRoot, |root| {
            // `..` stops at the root; absolute links start there.
            assert_eq!(read(root, "../../top").unwrap(), "top");
            assert_eq!(read(root, "rooted").unwrap(), "top");
            assert!(read(root, "absolute").is_err(), "{:?}", root.resolver);
            assert!(read(root, "linked_dir/file").is_err());
        });
    }

    #[test]
    fn parents_do_not_follow_the_last_link_and_dirs_are_made_inside() {
        let top = both(Scope::Beneath, |root| {
            let (_dir, name) = root.parent("/dir/absolute_is_not_here").unwrap();
            assert_eq!(name, "absolute_is_not_here");
            let (_dir, name) = root.parent("absolute").unwrap();
            assert_eq!(name, "absolute");
            assert!(is_escape(&root.parent("linked_dir/x").unwrap_err()));
            assert_eq!(
                root.parent("/").unwrap_err().raw_os_error(),
                Some(nix::libc::EINVAL)
            );
            assert!(root.create_dirs("new/deeper/still").is_ok());
            assert!(root.create_dirs("new/deeper/still").is_ok(), "again");
            assert!(is_escape(&root.create_dirs("linked_dir/made").unwrap_err()));
            assert!(is_escape(&root.create_dirs("../made").unwrap_err()));
        });
        assert!(!top.path().join("elsewhere/made").exists());
        assert!(!top.path().join("made").exists());
        assert!(top.path().join("root/new/deeper/still").is_dir());
    }
}
