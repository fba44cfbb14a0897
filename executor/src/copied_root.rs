//! The copying snapshotter, for where overlayfs cannot be mounted (a kernel without it,
//! some unprivileged containers): a step's root file system is a full copy of its
//! layers, and the step's diff — in the overlay upper-directory form the overlay
//! snapshotter leaves, so layers, exports and later steps do not know the difference —
//! is worked out afterwards by comparing the copy with what was copied.
//!
//! A path is unchanged when its inode and ctime are the ones recorded right after the
//! copy: ctime cannot be set from user space, and every write, chmod, chown, link or
//! rename moves it. Changed and new entries go into the upper directory with their
//! parents (as overlayfs copies parents up); a removed entry becomes a whiteout (a
//! character device 0/0) unless its parent went too.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, Timespec, Timestamps, Uid};

/// (inode, ctime seconds, ctime nanoseconds) of every path of a fresh copy.
pub type Inventory = HashMap<PathBuf, (u64, i64, i64)>;

fn stamp(md: &fs::Metadata) -> (u64, i64, i64) {
    (md.ino(), md.ctime(), md.ctime_nsec())
}

/// Copy the merged view of `lowers` (bottom first; overlay upper-directory form) into
/// the empty directory `dest`, owners included, and record what it holds.
pub fn materialize(lowers: &[PathBuf], dest: &Path) -> io::Result<Inventory> {
    let mut sink = strata_fstree::rootfs::DirSink::create(dest).map_err(io::Error::other)?.keeping_owners();
    strata_fstree::rootfs::export_rootfs(lowers, &mut sink).map_err(io::Error::other)?;
    sink.finish().map_err(io::Error::other)?;
    let mut inventory = Inventory::new();
    walk(dest, Path::new(""), &mut |rel, md| {
        inventory.insert(rel.to_path_buf(), stamp(md));
        Ok(())
    })?;
    Ok(inventory)
}

/// Every entry below `root` (depth first, names sorted, parents first), never
/// following a symlink.
fn walk(root: &Path, rel: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata) -> io::Result<()>) -> io::Result<()> {
    let mut names = fs::read_dir(root.join(rel))?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<Vec<_>>>()?;
    names.sort();
    for name in names {
        let child = rel.join(&name);
        let md = fs::symlink_metadata(root.join(&child))?;
        f(&child, &md)?;
        if md.is_dir() {
            walk(root, &child, f)?;
        }
    }
    Ok(())
}

/// A copied root file system or view: removed when dropped.
pub struct CopiedRoot {
    dir: PathBuf,
    /// A step's root: where its diff goes and what the copy held at first.
    diff_into: Option<(PathBuf, Inventory)>,
}

impl CopiedRoot {
    /// The root of a step: the layers copied to `dir`, its diff to go to `upper`.
    pub fn step(lowers: &[PathBuf], dir: &Path, upper: &Path) -> io::Result<CopiedRoot> {
        let mut root = CopiedRoot { dir: dir.to_path_buf(), diff_into: None };
        let before = materialize(lowers, dir)?;
        root.diff_into = Some((upper.to_path_buf(), before));
        Ok(root)
    }

    /// A view of the layers at `dir` (changes are thrown away).
    pub fn view(lowers: &[PathBuf], dir: &Path) -> io::Result<CopiedRoot> {
        let root = CopiedRoot { dir: dir.to_path_buf(), diff_into: None };
        materialize(lowers, dir)?;
        Ok(root)
    }

    /// Write a step root's diff, then remove the copy.
    pub fn finish(mut self) -> io::Result<()> {
        match self.diff_into.take() {
            Some((upper, before)) => diff(&self.dir, &before, &upper),
            None => Ok(()),
        }
    }
}

impl Drop for CopiedRoot {
    fn drop(&mut self) {
        let _ = crate::remove::remove_tree(&self.dir);
    }
}

/// Write what changed in `copy` since `before` into the empty directory `upper`.
pub fn diff(copy: &Path, before: &Inventory, upper: &Path) -> io::Result<()> {
    let mut writer = UpperWriter { copy, upper, made: HashSet::new(), dir_times: Vec::new(), links: HashMap::new() };
    let mut seen = HashSet::new();
    let mut dirs: HashSet<PathBuf> = HashSet::from([PathBuf::new()]);
    walk(copy, Path::new(""), &mut |rel, md| {
        seen.insert(rel.to_path_buf());
        if md.is_dir() {
            dirs.insert(rel.to_path_buf());
        }
        if before.get(rel) == Some(&stamp(md)) {
            return Ok(());
        }
        writer.add(rel, md)
    })?;
    let mut removed: Vec<&PathBuf> = before.keys().filter(|p| !seen.contains(*p)).collect();
    removed.sort();
    for rel in removed {
        // Under a removed directory, or one now a file: that entry hides this one.
        if rel.parent().is_some_and(|parent| dirs.contains(parent)) {
            writer.whiteout(rel)?;
        }
    }
    writer.finish()
}

struct UpperWriter<'a> {
    copy: &'a Path,
    upper: &'a Path,
    /// Directories made in the upper directory.
    made: HashSet<PathBuf>,
    /// Their times, set when nothing more is created in them.
    dir_times: Vec<(PathBuf, Timestamps)>,
    /// Inode in the copy → its first path in the upper directory (hard links).
    links: HashMap<u64, PathBuf>,
}

fn times(md: &fs::Metadata) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: md.atime(), tv_nsec: md.atime_nsec() as _ },
        last_modification: Timespec { tv_sec: md.mtime(), tv_nsec: md.mtime_nsec() as _ },
    }
}

impl UpperWriter<'_> {
    /// The parents of `rel` in the upper directory, as they are in the copy.
    fn parents(&mut self, rel: &Path) -> io::Result<()> {
        let Some(parent) = rel.parent() else { return Ok(()) };
        if parent.as_os_str().is_empty() || self.made.contains(parent) {
            return Ok(());
        }
        self.parents(parent)?;
        let md = fs::symlink_metadata(self.copy.join(parent))?;
        self.dir(parent, &md)
    }

    fn dir(&mut self, rel: &Path, md: &fs::Metadata) -> io::Result<()> {
        if self.made.insert(rel.to_path_buf()) {
            fs::create_dir(self.upper.join(rel))?;
            self.meta(rel, md)?;
            self.dir_times.push((rel.to_path_buf(), times(md)));
        }
        Ok(())
    }

    fn add(&mut self, rel: &Path, md: &fs::Metadata) -> io::Result<()> {
        self.parents(rel)?;
        let (src, dst) = (self.copy.join(rel), self.upper.join(rel));
        let ft = md.file_type();
        if ft.is_dir() {
            return self.dir(rel, md);
        }
        if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = self.links.get(&md.ino()) {
                    return fs::hard_link(self.upper.join(first), &dst);
                }
                self.links.insert(md.ino(), rel.to_path_buf());
            }
            let mut from = fs::File::open(&src)?;
            let mut to = fs::File::options().write(true).create_new(true).open(&dst)?;
            io::copy(&mut from, &mut to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_fifo() {
                FileType::Fifo
            } else if ft.is_char_device() {
                FileType::CharacterDevice
            } else {
                FileType::BlockDevice
            };
            rustix::fs::mknodat(rustix::fs::CWD, &dst, kind, Mode::from_raw_mode(0o600), md.rdev() as _)?;
        } else {
            // A socket is not part of a file system image.
            return Ok(());
        }
        self.meta(rel, md)?;
        rustix::fs::utimensat(rustix::fs::CWD, &dst, &times(md), AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }

    /// Owner, mode (not for symlinks) and extended attributes of `rel` from the copy.
    fn meta(&self, rel: &Path, md: &fs::Metadata) -> io::Result<()> {
        let (src, dst) = (self.copy.join(rel), self.upper.join(rel));
        rustix::fs::chownat(
            rustix::fs::CWD,
            &dst,
            Some(Uid::from_raw(md.uid())),
            Some(Gid::from_raw(md.gid())),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        if md.file_type().is_symlink() {
            return Ok(());
        }
        rustix::fs::chmodat(rustix::fs::CWD, &dst, Mode::from_raw_mode(md.mode() & 0o7777), AtFlags::empty())?;
        if let Ok(names) = xattr::list(&src) {
            for name in names {
                if let Ok(Some(value)) = xattr::get(&src, &name) {
                    if let Err(e) = xattr::set(&dst, &name, &value) {
                        tracing::debug!(path = %dst.display(), error = %e, "extended attribute not kept");
                    }
                }
            }
        }
        Ok(())
    }

    fn whiteout(&mut self, rel: &Path) -> io::Result<()> {
        self.parents(rel)?;
        let dst = self.upper.join(rel);
        rustix::fs::mknodat(rustix::fs::CWD, &dst, FileType::CharacterDevice, Mode::from_raw_mode(0o600), 0)?;
        Ok(())
    }

    fn finish(self) -> io::Result<()> {
        for (rel, t) in &self.dir_times {
            rustix::fs::utimensat(rustix::fs::CWD, self.upper.join(rel), t, AtFlags::SYMLINK_NOFOLLOW)?;
        }
        Ok(())
    }
}
