//! Test-only: power cuts enumerated, not sampled. [`Recorder`] is a [`Disk`] that does each
//! step on a real temporary folder and records it; [`each_image`] then builds, in a fresh
//! folder, every image a power cut after any step can leave, and hands it to a check.
//!
//! The model, per cut after step k: a folder entry change (create, rename, remove, mkdir,
//! chmod) is on disk once a later fsync of a folder it touches came before the cut; of the
//! others, any prefix survives, in order. File data is on disk once the file was fsynced;
//! unsynced data is cut at every length (0 to all of it), or, for a file that existed, may
//! be the old content. Operations whose premise was lost (a rename of a file whose creation
//! was lost) are skipped, as the file system would have nothing to apply them to. A folder
//! removal is one step.

use super::durable::{Disk, Real};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
enum Op {
    Write {
        path: PathBuf,
        content: Vec<u8>,
        mode: u32,
        inode: u64,
        /// The entry is new (else only data changed).
        created: bool,
        parent: u64,
    },
    Sync(u64),
    Rename {
        from: PathBuf,
        to: PathBuf,
        dirs: [u64; 2],
    },
    Mkdir {
        path: PathBuf,
        mode: u32,
        parent: u64,
    },
    SetMode {
        path: PathBuf,
        mode: u32,
        dirs: [u64; 2],
    },
    Remove {
        path: PathBuf,
        parent: u64,
    },
    SyncDir(u64),
}

impl Op {
    /// The folders whose fsync makes this entry change durable; `None` for data and syncs.
    fn dirs(&self) -> Option<[u64; 2]> {
        match self {
            Op::Write {
                created: true,
                parent,
                ..
            }
            | Op::Mkdir { parent, .. }
            | Op::Remove { parent, .. } => Some([*parent, *parent]),
            Op::Rename { dirs, .. } | Op::SetMode { dirs, .. } => Some(*dirs),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Op::Write { path, content, .. } => {
                format!("write {} ({} bytes)", path.display(), content.len())
            }
            Op::Sync(inode) => format!("fsync file #{inode}"),
            Op::Rename { from, to, .. } => format!("rename {} -> {}", from.display(), to.display()),
            Op::Mkdir { path, .. } => format!("mkdir {}", path.display()),
            Op::SetMode { path, mode, .. } => format!("chmod {:o} {}", mode, path.display()),
            Op::Remove { path, .. } => format!("remove {}", path.display()),
            Op::SyncDir(inode) => format!("fsync folder #{inode}"),
        }
    }
}

enum Entry {
    Dir(PathBuf, u32),
    File(PathBuf, Vec<u8>, u32),
}

/// The real file system without its fsyncs (they only check that the path is there), for
/// scratch folders whose own durability does not matter: images and the recorder's folder.
#[derive(Default)]
pub struct Unsynced(Real);

impl Disk for Unsynced {
    fn write(&mut self, path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
        self.0.write(path, content, mode)
    }
    fn sync(&mut self, path: &Path) -> io::Result<()> {
        fs::metadata(path).map(drop)
    }
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.rename(from, to)
    }
    fn mkdir(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        self.0.mkdir(path, mode)
    }
    fn set_mode(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        self.0.set_mode(path, mode)
    }
    fn remove(&mut self, path: &Path) -> io::Result<()> {
        self.0.remove(path)
    }
    fn sync_dir(&mut self, path: &Path) -> io::Result<()> {
        fs::metadata(path).map(drop)
    }
}

pub struct Recorder {
    dir: tempfile::TempDir,
    real: Unsynced,
    /// What was on disk at [`Recorder::start`], all of it durable.
    baseline: Vec<Entry>,
    /// Live paths (relative; the root is "") and their inode numbers.
    ids: BTreeMap<PathBuf, u64>,
    next: u64,
    log: Vec<Op>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            dir: tempfile::tempdir().unwrap(),
            real: Unsynced::default(),
            baseline: Vec::new(),
            ids: BTreeMap::new(),
            next: 1,
            log: Vec::new(),
        }
    }

    /// The folder the steps happen in.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// What is in the folder now is the durable starting point; steps are recorded from here.
    pub fn start(&mut self) {
        self.baseline.clear();
        self.ids.clear();
        self.ids.insert(PathBuf::new(), 0);
        self.log.clear();
        let root = self.root().to_owned();
        self.snapshot(&root, Path::new(""));
    }

    /// Steps recorded since [`Recorder::start`].
    pub fn steps(&self) -> usize {
        self.log.len()
    }

    fn snapshot(&mut self, dir: &Path, rel: &Path) {
        let mut children: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        children.sort_by_key(|e| e.file_name());
        for child in children {
            let rel = rel.join(child.file_name());
            let meta = fs::symlink_metadata(child.path()).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let id = self.next;
            self.next += 1;
            self.ids.insert(rel.clone(), id);
            if meta.is_dir() {
                self.baseline.push(Entry::Dir(rel.clone(), mode));
                self.snapshot(&child.path(), &rel);
            } else {
                let content = fs::read(child.path()).unwrap();
                self.baseline.push(Entry::File(rel, content, mode));
            }
        }
    }

    fn rel(&self, path: &Path) -> PathBuf {
        path.strip_prefix(self.root())
            .unwrap_or_else(|_| panic!("{} is outside the recorder", path.display()))
            .to_owned()
    }

    fn id(&mut self, rel: &Path) -> u64 {
        if let Some(id) = self.ids.get(rel) {
            return *id;
        }
        let id = self.next;
        self.next += 1;
        self.ids.insert(rel.to_owned(), id);
        id
    }

    fn parent_id(&mut self, rel: &Path) -> u64 {
        let parent = rel.parent().unwrap_or(Path::new("")).to_owned();
        self.id(&parent)
    }

    fn forget(&mut self, rel: &Path) {
        self.ids.retain(|p, _| !p.starts_with(rel));
    }
}

impl Disk for Recorder {
    fn write(&mut self, path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
        let rel = self.rel(path);
        let created = !self.ids.contains_key(&rel);
        self.real.write(path, content, mode)?;
        let (inode, parent) = (self.id(&rel), self.parent_id(&rel));
        self.log.push(Op::Write {
            path: rel,
            content: content.to_vec(),
            mode,
            inode,
            created,
            parent,
        });
        Ok(())
    }

    fn sync(&mut self, path: &Path) -> io::Result<()> {
        self.real.sync(path)?;
        let rel = self.rel(path);
        let inode = self.id(&rel);
        self.log.push(Op::Sync(inode));
        Ok(())
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.real.rename(from, to)?;
        let (from, to) = (self.rel(from), self.rel(to));
        let dirs = [self.parent_id(&from), self.parent_id(&to)];
        self.forget(&to);
        let moved: Vec<(PathBuf, u64)> = self
            .ids
            .iter()
            .filter(|(p, _)| p.starts_with(&from))
            .map(|(p, id)| (to.join(p.strip_prefix(&from).unwrap()), *id))
            .collect();
        self.forget(&from);
        self.ids.extend(moved);
        self.log.push(Op::Rename { from, to, dirs });
        Ok(())
    }

    fn mkdir(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        self.real.mkdir(path, mode)?;
        let rel = self.rel(path);
        let parent = self.parent_id(&rel);
        self.id(&rel);
        self.log.push(Op::Mkdir {
            path: rel,
            mode,
            parent,
        });
        Ok(())
    }

    fn set_mode(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        self.real.set_mode(path, mode)?;
        let rel = self.rel(path);
        let dirs = [self.parent_id(&rel), self.id(&rel)];
        self.log.push(Op::SetMode {
            path: rel,
            mode,
            dirs,
        });
        Ok(())
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        let rel = self.rel(path);
        if !self.ids.contains_key(&rel) && fs::symlink_metadata(path).is_err() {
            return Ok(());
        }
        self.real.remove(path)?;
        let parent = self.parent_id(&rel);
        self.forget(&rel);
        self.log.push(Op::Remove { path: rel, parent });
        Ok(())
    }

    fn sync_dir(&mut self, path: &Path) -> io::Result<()> {
        self.real.sync_dir(path)?;
        let rel = self.rel(path);
        let inode = self.id(&rel);
        self.log.push(Op::SyncDir(inode));
        Ok(())
    }
}

/// Copies the files and folders of `from` into `to` (an image into a [`Recorder`], to cut the
/// power again during what runs on it).
pub fn copy_tree(from: &Path, to: &Path) {
    for child in fs::read_dir(from).unwrap() {
        let child = child.unwrap();
        let target = to.join(child.file_name());
        let meta = fs::symlink_metadata(child.path()).unwrap();
        if meta.is_dir() {
            fs::create_dir(&target).unwrap();
            copy_tree(&child.path(), &target);
        } else {
            fs::copy(child.path(), &target).unwrap();
        }
        fs::set_permissions(&target, meta.permissions()).unwrap();
    }
}

/// What an unsynced write left: the first `n` bytes, or (`None`) the old content untouched.
type Torn = Option<usize>;

/// One power cut: after how many of the recorded steps, and what it left (for messages).
pub struct Cut {
    pub after: usize,
    pub what: String,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

/// Builds every image a power cut after each recorded step can leave (after step 0, the
/// starting point, through the last) and calls `check(image folder, cut)` on each.
/// Returns how many images were checked.
pub fn each_image(recorder: &Recorder, mut check: impl FnMut(&Path, &Cut)) -> usize {
    let mut count = 0;
    for k in 0..=recorder.log.len() {
        let prefix = &recorder.log[..k];
        let forced = |i: usize, dirs: [u64; 2]| {
            prefix[i + 1..]
                .iter()
                .any(|op| matches!(op, Op::SyncDir(d) if dirs.contains(d)))
        };
        let unforced: Vec<usize> = (0..k)
            .filter(|&i| prefix[i].dirs().is_some_and(|d| !forced(i, d)))
            .collect();
        for kept in 0..=unforced.len() {
            let survives = |i: usize| prefix[i].dirs().is_none() || !unforced[kept..].contains(&i);
            // Writes whose entry survives and whose data was not fsynced before the cut.
            let torn: Vec<(usize, Vec<Torn>)> = (0..k)
                .filter_map(|i| match &prefix[i] {
                    Op::Write {
                        content,
                        inode,
                        created,
                        ..
                    } if survives(i)
                        && !prefix[i + 1..]
                            .iter()
                            .any(|op| matches!(op, Op::Sync(s) if s == inode)) =>
                    {
                        let mut cuts: Vec<Torn> = (0..=content.len()).map(Some).collect();
                        if !created {
                            cuts.push(None);
                        }
                        Some((i, cuts))
                    }
                    _ => None,
                })
                .collect();
            let combinations: usize = torn.iter().map(|(_, c)| c.len()).product();
            assert!(combinations <= 100_000, "{combinations} torn combinations");
            for mut n in 0..combinations {
                let mut cuts = BTreeMap::new();
                for (i, options) in &torn {
                    cuts.insert(*i, options[n % options.len()]);
                    n /= options.len();
                }
                let image = tempfile::tempdir().unwrap();
                build(image.path(), recorder, prefix, &survives, &cuts);
                let what = format!(
                    "cut after step {k}/{} ({}), {kept}/{} unsynced entry changes kept, torn writes {cuts:?}",
                    recorder.log.len(),
                    k.checked_sub(1)
                        .map_or("nothing done".into(), |i| prefix[i].describe()),
                    unforced.len(),
                );
                check(image.path(), &Cut { after: k, what });
                count += 1;
            }
        }
    }
    count
}

fn build(
    image: &Path,
    recorder: &Recorder,
    prefix: &[Op],
    survives: &dyn Fn(usize) -> bool,
    cuts: &BTreeMap<usize, Torn>,
) {
    for entry in &recorder.baseline {
        match entry {
            Entry::Dir(path, mode) => {
                fs::create_dir(image.join(path)).unwrap();
                fs::set_permissions(image.join(path), fs::Permissions::from_mode(*mode)).unwrap();
            }
            Entry::File(path, content, mode) => {
                fs::write(image.join(path), content).unwrap();
                fs::set_permissions(image.join(path), fs::Permissions::from_mode(*mode)).unwrap();
            }
        }
    }
    let mut disk = Unsynced::default();
    for (i, op) in prefix.iter().enumerate() {
        if !survives(i) {
            continue;
        }
        // Errors: the premise of the step was lost with an earlier one; nothing to apply.
        let _ = match op {
            Op::Write {
                path,
                content,
                mode,
                ..
            } => match cuts.get(&i) {
                Some(None) => Ok(()),
                Some(Some(n)) => disk.write(&image.join(path), &content[..*n], *mode),
                None => disk.write(&image.join(path), content, *mode),
            },
            Op::Rename { from, to, .. } => disk.rename(&image.join(from), &image.join(to)),
            Op::Mkdir { path, mode, .. } => disk.mkdir(&image.join(path), *mode),
            Op::SetMode { path, mode, .. } => disk.set_mode(&image.join(path), *mode),
            Op::Remove { path, .. } => disk.remove(&image.join(path)),
            Op::Sync(_) | Op::SyncDir(_) => Ok(()),
        };
    }
}
