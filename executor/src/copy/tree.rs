//! Copying one entry — and, for a directory, everything below it — from the source
//! root to the destination root, by file descriptors, with `cp -a` semantics as in
//! fsutil's `copy.go`.
//!
//! Every entry is addressed as (descriptor of its parent directory, name); the last
//! component is never followed, and directories are opened with `O_NOFOLLOW`, so a
//! symlink met in either tree is copied or replaced as a link, never traversed.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Stat, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use super::root::{file_type, list_dir, rel_str, show, Comps, Root, MAX_DEPTH};
use super::{CopyError, CopyStats, Side};
use crate::chmod::Chmod;

/// Where the entry being copied is, on both sides.
pub(super) struct Paths {
    /// Real path of the entry in the source root.
    pub src_real: Comps,
    /// Where, in `src_real`, the path relative to the copied source starts.
    pub rel_start: usize,
    /// Real path of the entry in the destination root.
    pub dst_real: Comps,
}

/// The state of one COPY: options, hard link registry, counters.
pub(super) struct Copier<'a> {
    pub src: &'a Root,
    pub dst: &'a Root,
    /// `--chown`, resolved.
    pub owner: Option<(u32, u32)>,
    /// Without `--chown`, files from the build context belong to root.
    pub context_owner: bool,
    pub chmod: Option<&'a Chmod>,
    /// Root-relative exclusion (`.dockerignore`): excluded entries do not exist.
    pub hidden: &'a dyn Fn(&[Vec<u8>], bool) -> bool,
    /// Exclusion by the path relative to the copied source (`--exclude`).
    pub source_exclude: &'a dyn Fn(&str, bool) -> bool,
    /// Source inode → where its first copy went (per source argument, as in BuildKit).
    pub links: HashMap<(u64, u64), Comps>,
    pub stats: CopyStats,
}

pub(super) fn times_of(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: st.st_atime as _, tv_nsec: st.st_atime_nsec as _ },
        last_modification: Timespec { tv_sec: st.st_mtime as _, tv_nsec: st.st_mtime_nsec as _ },
    }
}

impl Copier<'_> {
    fn src_io(&self, op: &'static str, p: &Paths) -> impl Fn(Errno) -> CopyError {
        let path = show(&p.src_real);
        move |e| CopyError::Io { op, path: format!("{path} (source)"), source: e.into() }
    }

    fn dst_io(&self, op: &'static str, p: &Paths) -> impl Fn(Errno) -> CopyError {
        let path = show(&p.dst_real);
        move |e| CopyError::Io { op, path: path.clone(), source: e.into() }
    }

    /// Copy the children of the source directory `src_dir` (open for reading) into the
    /// destination directory `dst_dir`, in name order, skipping excluded ones.
    pub fn copy_children(
        &mut self,
        src_dir: BorrowedFd<'_>,
        dst_dir: BorrowedFd<'_>,
        p: &mut Paths,
        depth: usize,
    ) -> Result<(), CopyError> {
        let dir = rustix::fs::openat(src_dir, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(self.src_io("opening the directory", p))?;
        let names = list_dir(&dir).map_err(self.src_io("reading the directory", p))?;
        for name in names {
            let st = match rustix::fs::statat(src_dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Gone since it was listed.
                Err(Errno::NOENT) => continue,
                Err(e) => {
                    p.src_real.push(name);
                    return Err(self.src_io("inspecting", p)(e));
                }
            };
            let is_dir = file_type(&st) == FileType::Directory;
            p.src_real.push(name.clone());
            let rel = rel_str(&p.src_real[p.rel_start..]);
            if (self.source_exclude)(&rel, is_dir) || (self.hidden)(&p.src_real, is_dir) {
                p.src_real.pop();
                continue;
            }
            p.dst_real.push(name.clone());
            let r = self.copy_node(src_dir, &name, &st, dst_dir, &name, p, depth + 1);
            p.dst_real.pop();
            p.src_real.pop();
            r?;
        }
        Ok(())
    }

    /// Copy the entry `src_name` of `src_parent` (whose `lstat` is `st`) to `dst_name` in
    /// `dst_parent`, replacing a non-directory there and merging into a directory.
    /// `p` already names this entry.
    #[allow(clippy::too_many_arguments)]
    pub fn copy_node(
        &mut self,
        src_parent: BorrowedFd<'_>,
        src_name: &[u8],
        st: &Stat,
        dst_parent: BorrowedFd<'_>,
        dst_name: &[u8],
        p: &mut Paths,
        depth: usize,
    ) -> Result<(), CopyError> {
        if depth > MAX_DEPTH {
            return Err(CopyError::PathTooDeep { side: Side::Source, path: show(&p.src_real) });
        }
        let ft = file_type(st);
        let existing = match rustix::fs::statat(dst_parent, dst_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(d) => Some(file_type(&d)),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(self.dst_io("inspecting", p)(e)),
        };

        if ft == FileType::Directory {
            match existing {
                None => rustix::fs::mkdirat(dst_parent, dst_name, Mode::from_raw_mode(0o700))
                    .map_err(self.dst_io("creating the directory", p))?,
                Some(FileType::Directory) => {}
                Some(_) => return Err(CopyError::NotADirectoryTarget { path: show(&p.dst_real) }),
            }
            let sdir = rustix::fs::openat(
                src_parent,
                src_name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(self.src_io("opening the directory", p))?;
            let ddir = rustix::fs::openat(
                dst_parent,
                dst_name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(self.dst_io("opening the directory", p))?;
            self.copy_children(sdir.as_fd(), ddir.as_fd(), p, depth)?;
            self.apply_meta(src_parent, src_name, st, dst_parent, dst_name, p)?;
            self.stats.dirs += 1;
            return Ok(());
        }

        match existing {
            None => {}
            Some(FileType::Directory) => return Err(CopyError::DirectoryInTheWay { path: show(&p.dst_real) }),
            Some(_) => {
                rustix::fs::unlinkat(dst_parent, dst_name, AtFlags::empty()).map_err(self.dst_io("replacing", p))?
            }
        }

        match ft {
            FileType::RegularFile => {
                #[allow(clippy::unnecessary_cast)] // not u64 on every target
                let key = (st.st_dev as u64, st.st_ino as u64);
                let linked = if st.st_nlink > 1 {
                    match self.links.get(&key).cloned() {
                        Some(first) => self.link_to(&first, dst_parent, dst_name, p)?,
                        None => {
                            self.links.insert(key, p.dst_real.clone());
                            false
                        }
                    }
                } else {
                    false
                };
                if !linked {
                    self.copy_file(src_parent, src_name, dst_parent, dst_name, p)?;
                    self.stats.files += 1;
                }
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(src_parent, src_name, Vec::new())
                    .map_err(self.src_io("reading the symlink", p))?;
                rustix::fs::symlinkat(target.as_c_str(), dst_parent, dst_name)
                    .map_err(self.dst_io("creating the symlink", p))?;
                self.stats.symlinks += 1;
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo | FileType::Socket => {
                rustix::fs::mknodat(dst_parent, dst_name, ft, Mode::from_raw_mode(0o600), st.st_rdev as _)
                    .map_err(self.dst_io("creating the special file", p))?;
                self.stats.special += 1;
            }
            _ => {
                return Err(CopyError::Io {
                    op: "copying",
                    path: format!("{} (source)", show(&p.src_real)),
                    source: io::Error::other("unsupported file type"),
                })
            }
        }
        self.apply_meta(src_parent, src_name, st, dst_parent, dst_name, p)
    }

    /// Hard link `dst_name` to the earlier copy at `first`. `false` when that copy is
    /// gone (then the file is copied again).
    fn link_to(
        &mut self,
        first: &[Vec<u8>],
        dst_parent: BorrowedFd<'_>,
        dst_name: &[u8],
        p: &Paths,
    ) -> Result<bool, CopyError> {
        let Some((fname, fparent)) = first.split_last() else {
            return Ok(false);
        };
        let fdir = match self.dst.open_dir_nofollow(fparent) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => return Ok(false),
            Err(e) => return Err(self.dst_io("opening the directory of a hard link target for", p)(e)),
        };
        match rustix::fs::linkat(&fdir, fname.as_slice(), dst_parent, dst_name, AtFlags::empty()) {
            Ok(()) => {
                self.stats.hardlinks += 1;
                Ok(true)
            }
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(self.dst_io("creating the hard link", p)(e)),
        }
    }

    fn copy_file(
        &mut self,
        src_parent: BorrowedFd<'_>,
        src_name: &[u8],
        dst_parent: BorrowedFd<'_>,
        dst_name: &[u8],
        p: &Paths,
    ) -> Result<(), CopyError> {
        let sfd = rustix::fs::openat(
            src_parent,
            src_name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(self.src_io("opening", p))?;
        let dfd = rustix::fs::openat(
            dst_parent,
            dst_name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(self.dst_io("creating the file", p))?;
        let (mut from, mut to) = (File::from(sfd), File::from(dfd));
        // std uses copy_file_range / sendfile between files, and a bounded buffer otherwise.
        let n = io::copy(&mut from, &mut to).map_err(|source| CopyError::Io {
            op: "copying",
            path: format!("{} to {}", show(&p.src_real), show(&p.dst_real)),
            source,
        })?;
        self.stats.bytes += n;
        Ok(())
    }

    /// Owner, mode, times, then extended attributes (last: chown drops
    /// `security.capability`), as fsutil's `copyFileInfo` + `copyXAttrs`.
    pub fn apply_meta(
        &mut self,
        src_parent: BorrowedFd<'_>,
        src_name: &[u8],
        st: &Stat,
        dst_parent: BorrowedFd<'_>,
        dst_name: &[u8],
        p: &Paths,
    ) -> Result<(), CopyError> {
        let ft = file_type(st);
        let (uid, gid) = match self.owner {
            Some(o) => o,
            None if self.context_owner => (0, 0),
            None => (st.st_uid, st.st_gid),
        };
        rustix::fs::chownat(
            dst_parent,
            dst_name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(self.dst_io("changing the owner of", p))?;
        if ft != FileType::Symlink {
            let base = st.st_mode & 0o7777;
            let mode = match self.chmod {
                Some(c) => c.apply(base, ft == FileType::Directory),
                None => base,
            };
            // Not a symlink: we just created or checked it.
            rustix::fs::chmodat(dst_parent, dst_name, Mode::from_raw_mode(mode), AtFlags::empty())
                .map_err(self.dst_io("changing the mode of", p))?;
        }
        rustix::fs::utimensat(dst_parent, dst_name, &times_of(st), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(self.dst_io("setting the times of", p))?;
        self.copy_xattrs(src_parent, src_name, dst_parent, dst_name, p);
        Ok(())
    }

    /// Copy every extended attribute but overlayfs's own. Failures are logged and
    /// counted, never fatal (BuildKit's copy ignores them too).
    fn copy_xattrs(
        &mut self,
        src_parent: BorrowedFd<'_>,
        src_name: &[u8],
        dst_parent: BorrowedFd<'_>,
        dst_name: &[u8],
        p: &Paths,
    ) {
        let proc_path = |fd: BorrowedFd<'_>, name: &[u8]| {
            let mut v = format!("/proc/self/fd/{}/", fd.as_raw_fd()).into_bytes();
            v.extend_from_slice(name);
            v
        };
        let src_path = proc_path(src_parent, src_name);
        let dst_path = proc_path(dst_parent, dst_name);
        let src_path = OsStr::from_bytes(&src_path);
        let dst_path = OsStr::from_bytes(&dst_path);
        let names = match xattr::list(src_path) {
            Ok(names) => names,
            Err(e) => {
                if e.raw_os_error() != Some(libc::ENOTSUP) {
                    tracing::debug!(path = %show(&p.src_real), error = %e, "listing extended attributes failed");
                }
                return;
            }
        };
        for name in names {
            let nb = name.as_bytes();
            if nb.starts_with(b"trusted.overlay.") || nb.starts_with(b"user.overlay.") {
                continue;
            }
            let value = match xattr::get(src_path, &name) {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e) => {
                    self.xattr_failed(p, &name, e);
                    continue;
                }
            };
            if let Err(e) = xattr::set(dst_path, &name, &value) {
                self.xattr_failed(p, &name, e);
            }
        }
    }

    fn xattr_failed(&mut self, p: &Paths, name: &OsStr, e: io::Error) {
        let expected = matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM));
        if expected {
            tracing::debug!(path = %show(&p.dst_real), xattr = %name.to_string_lossy(), error = %e, "extended attribute not copied");
        } else {
            tracing::warn!(path = %show(&p.dst_real), xattr = %name.to_string_lossy(), error = %e, "extended attribute not copied");
        }
        self.stats.xattrs_skipped += 1;
    }
}
