//! The final file system of an image, for `-o type=local` and `-o type=tar`.
//!
//! This module owns merging an image's layers (diff directories in overlay upper-dir
//! form, bottom first — the same form [`crate::layer`] reads) into the one tree a
//! container would see, and handing that tree, entry by entry, to a [`RootfsSink`]:
//! [`DirSink`] writes it into a directory, [`TarSink`] into one tar stream.
//!
//! # Merging (what overlayfs shows)
//!
//! For each directory of the result, its contributing layer directories are known (top
//! first). A name is looked up in them from the top: the first layer that has it decides.
//! A whiteout (a character device 0/0) deletes the name, so lower layers are not
//! consulted; a non-directory is the entry; a directory is the entry, and its own
//! contributors are it plus the same name in lower layers, down to and including the
//! first one marked opaque (see [`crate::overlay`]) and stopping at a lower
//! whiteout or non-directory (a directory over a file hides the file). Metadata of a
//! directory comes from its topmost layer.
//!
//! # Order, links, ownership
//!
//! Entries come depth-first, each directory's children sorted by the bytes of their
//! names, parents before children, the root itself not included; so the walk (and a tar
//! made from it) is the same for the same layers. Two paths that are the same inode in a
//! layer (a hard link) become a [`EntryKind::HardLink`] to the path seen first. Owners
//! are not carried: a tar has uid/gid 0, a directory gets the files created by the
//! exporting user (root for strata) — unless it is a [`DirSink::keeping_owners`] (the
//! copying snapshotter's root file systems). Sockets are skipped; overlay's own xattrs and
//! `security.selinux` are not carried, other xattrs (`security.capability`) are.
//!
//! # Never outside the destination
//!
//! [`DirSink`] creates everything relative to directory descriptors it opened itself
//! with `O_NOFOLLOW`, and replaces whatever is in the way (a symlink where the image has
//! a directory is removed, never followed), so a symlink in the image or left in the
//! destination cannot redirect a write outside it.
//!
//! ```no_run
//! use std::path::PathBuf;
//! use strata_fstree::rootfs::{export_rootfs, DirSink};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layers = vec![PathBuf::from("/var/lib/strata/snapshots/i0/fs"), PathBuf::from("/var/lib/strata/snapshots/s1/fs")];
//! let mut sink = DirSink::create("./out".as_ref())?;
//! let stats = export_rootfs(&layers, &mut sink)?;
//! sink.finish()?;
//! println!("{} entries, {} bytes", stats.entries, stats.bytes);
//! # Ok(()) }
//! ```

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};

use crate::overlay::{diff_xattrs, is_opaque, is_whiteout};
use crate::tar::{kind, ContentError, TarEntry, TarWriter};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("reading {path} from a layer: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("archiving {path}: {source}")]
    Archive { path: PathBuf, source: io::Error },
    #[error("writing the output: {0}")]
    Output(#[from] io::Error),
    #[error(transparent)]
    Overlay(#[from] crate::overlay::OverlayError),
    #[error("{path} changed while it was exported: its size was {expected} bytes but {actual} could be read; make sure nothing writes to the snapshot while it is exported")]
    FileChanged { path: PathBuf, expected: u64, actual: u64 },
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Read { path: path.to_path_buf(), source }
}

/// What an entry of the merged tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File {
        size: u64,
    },
    Symlink {
        target: PathBuf,
    },
    /// Another name of a file already given, by its (relative) path.
    HardLink {
        target: PathBuf,
    },
    Fifo,
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
}

/// One entry of the merged tree.
#[derive(Debug, Clone)]
pub struct RootfsEntry {
    /// Relative path: no leading `/` or `./`, no trailing `/`.
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    /// Owner in the layer (carried only by a [`DirSink::keeping_owners`]).
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// The file in its layer (the content of a regular file or hard link).
    pub source: PathBuf,
    /// Extended attributes to carry, sorted by name.
    pub xattrs: Vec<(OsString, Vec<u8>)>,
}

/// Where the merged tree goes.
pub trait RootfsSink {
    /// One entry; parents always come before their children.
    fn entry(&mut self, entry: &RootfsEntry) -> Result<(), RootfsError>;
    /// After the last child of the directory `entry`.
    fn leave_dir(&mut self, _entry: &RootfsEntry) -> Result<(), RootfsError> {
        Ok(())
    }
}

/// Counts of what [`export_rootfs`] produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootfsStats {
    pub entries: u64,
    /// Bytes of regular-file content (hard links counted once).
    pub bytes: u64,
}

/// Merge `layer_dirs` (bottom first) and give every entry of the result to `sink`.
pub fn export_rootfs(layer_dirs: &[PathBuf], sink: &mut dyn RootfsSink) -> Result<RootfsStats, RootfsError> {
    let top_first: Vec<PathBuf> = layer_dirs.iter().rev().filter(|d| d.is_dir()).cloned().collect();
    let mut m = Merger { sink, links: HashMap::new(), stats: RootfsStats::default() };
    m.dir(Path::new(""), &top_first)?;
    Ok(m.stats)
}

/// [`export_rootfs`] into the directory `dest` (created if needed).
pub fn export_rootfs_to_dir(layer_dirs: &[PathBuf], dest: &Path) -> Result<RootfsStats, RootfsError> {
    let mut sink = DirSink::create(dest)?;
    let stats = export_rootfs(layer_dirs, &mut sink)?;
    sink.finish()?;
    Ok(stats)
}

/// [`export_rootfs`] as one tar stream into `out`; mtimes clamped to `source_date_epoch`.
pub fn export_rootfs_tar<W: Write>(
    layer_dirs: &[PathBuf],
    out: W,
    source_date_epoch: Option<i64>,
) -> Result<(W, RootfsStats), RootfsError> {
    let mut sink = TarSink::new(out, source_date_epoch);
    let stats = export_rootfs(layer_dirs, &mut sink)?;
    Ok((sink.finish()?, stats))
}

struct Merger<'a> {
    sink: &'a mut dyn RootfsSink,
    /// (dev, ino) → the path it was first given under.
    links: HashMap<(u64, u64), PathBuf>,
    stats: RootfsStats,
}

/// The xattrs worth carrying (see [`crate::overlay`]), by name.
fn carried_xattrs(path: &Path) -> Result<Vec<(OsString, Vec<u8>)>, RootfsError> {
    let (xattrs, _) = diff_xattrs(path, false)?;
    Ok(xattrs.into_iter().map(|(n, v)| (OsString::from_vec(n), v)).collect())
}

impl Merger<'_> {
    /// The children of the merged directory `rel`, whose contributors are `layers` (top first).
    fn dir(&mut self, rel: &Path, layers: &[PathBuf]) -> Result<(), RootfsError> {
        let mut names: BTreeSet<Vec<u8>> = BTreeSet::new();
        for d in layers {
            for e in fs::read_dir(d).map_err(read_err(d))? {
                names.insert(e.map_err(read_err(d))?.file_name().into_vec());
            }
        }
        for name in names {
            let name = OsStr::from_bytes(&name);
            let mut top: Option<(PathBuf, Metadata)> = None;
            let mut lowers: Vec<PathBuf> = Vec::new();
            for d in layers {
                let p = d.join(name);
                let meta = match fs::symlink_metadata(&p) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(RootfsError::Read { path: p, source: e }),
                };
                if is_whiteout(&meta) {
                    break;
                }
                if !meta.is_dir() {
                    if top.is_none() {
                        top = Some((p, meta));
                    }
                    break;
                }
                let opaque = is_opaque(&p)?;
                lowers.push(p.clone());
                if top.is_none() {
                    top = Some((p, meta));
                }
                if opaque {
                    break;
                }
            }
            let Some((abs, meta)) = top else { continue };
            let Some(entry) = self.entry_for(rel.join(name), abs, &meta)? else { continue };
            self.stats.entries += 1;
            self.sink.entry(&entry)?;
            if entry.kind == EntryKind::Dir {
                self.dir(&entry.path, &lowers)?;
                self.sink.leave_dir(&entry)?;
            }
        }
        Ok(())
    }

    fn entry_for(
        &mut self,
        path: PathBuf,
        source: PathBuf,
        meta: &Metadata,
    ) -> Result<Option<RootfsEntry>, RootfsError> {
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            EntryKind::Symlink { target: fs::read_link(&source).map_err(read_err(&source))? }
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            match self.links.get(&key) {
                Some(first) if meta.nlink() > 1 => EntryKind::HardLink { target: first.clone() },
                _ => {
                    if meta.nlink() > 1 {
                        self.links.insert(key, path.clone());
                    }
                    self.stats.bytes += meta.len();
                    EntryKind::File { size: meta.len() }
                }
            }
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = (rustix::fs::major(meta.rdev()), rustix::fs::minor(meta.rdev()));
            if ft.is_char_device() {
                EntryKind::CharDevice { major, minor }
            } else {
                EntryKind::BlockDevice { major, minor }
            }
        } else {
            tracing::debug!(path = %source.display(), "socket skipped");
            return Ok(None);
        };
        let xattrs = if ft.is_symlink() { Vec::new() } else { carried_xattrs(&source)? };
        Ok(Some(RootfsEntry {
            path,
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
            source,
            xattrs,
        }))
    }
}

// ---------------------------------------------------------------------------------
// Into a directory

/// An open destination directory, with the (mode, mtime, nanoseconds) to give it once
/// its children are written (none for the destination itself).
type OpenDir = (PathBuf, OwnedFd, Option<(u32, i64, u32)>);

/// Writes the merged tree into a directory, never following a symlink inside it.
pub struct DirSink {
    dest: PathBuf,
    /// Open directories from the destination down to the current one, with the mode
    /// and mtime to give each once its children are written (none for the destination).
    stack: Vec<OpenDir>,
    is_root: bool,
    /// Give entries their owners from the layers (a root file system a step runs on),
    /// rather than leaving them to the exporting user.
    keep_owners: bool,
    /// Device nodes that could not be created (not root).
    pub skipped_devices: u64,
}

fn timestamps(sec: i64, nsec: u32) -> Timestamps {
    let t = Timespec { tv_sec: sec, tv_nsec: nsec as _ };
    Timestamps { last_access: t, last_modification: t }
}

impl DirSink {
    /// Open (creating if needed) the destination directory.
    pub fn create(dest: &Path) -> Result<Self, RootfsError> {
        let werr = |source| RootfsError::Write { path: dest.to_path_buf(), source };
        fs::create_dir_all(dest).map_err(werr)?;
        let fd = rustix::fs::open(dest, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| werr(e.into()))?;
        Ok(DirSink {
            dest: dest.to_path_buf(),
            stack: vec![(PathBuf::new(), fd, None)],
            is_root: rustix::process::geteuid().is_root(),
            keep_owners: false,
            skipped_devices: 0,
        })
    }

    /// Entries keep the owners they have in the layers.
    pub fn keeping_owners(mut self) -> Self {
        self.keep_owners = true;
        self
    }

    /// `name` in the current directory gets `e`'s owner (when owners are kept): before
    /// its mode, which a change of owner may clear setuid/setgid from.
    fn own(&self, name: &OsStr, e: &RootfsEntry) -> Result<(), RootfsError> {
        if !self.keep_owners {
            return Ok(());
        }
        let parent = self.current()?;
        rustix::fs::chownat(
            parent,
            name,
            Some(rustix::fs::Uid::from_raw(e.uid)),
            Some(rustix::fs::Gid::from_raw(e.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|err| self.werr(&e.path)(err.into()))
    }

    /// Give the directories still open their modes and times.
    pub fn finish(mut self) -> Result<(), RootfsError> {
        while self.stack.len() > 1 {
            self.pop()?;
        }
        Ok(())
    }

    /// The directory entries go into now (the destination itself at first); an error,
    /// not a panic, if the sink was used after [`DirSink::finish`] emptied it.
    fn current(&self) -> Result<&OwnedFd, RootfsError> {
        self.stack.last().map(|d| &d.1).ok_or_else(|| RootfsError::Write {
            path: self.dest.clone(),
            source: io::Error::other("written to after it was finished"),
        })
    }

    fn werr(&self, rel: &Path) -> impl FnOnce(io::Error) -> RootfsError {
        let path = self.dest.join(rel);
        move |source| RootfsError::Write { path, source }
    }

    fn pop(&mut self) -> Result<(), RootfsError> {
        let Some((rel, fd, pending)) = self.stack.pop() else { return Ok(()) };
        if let Some((mode, mtime, nsec)) = pending {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| self.werr(&rel)(e.into()))?;
            rustix::fs::futimens(&fd, &timestamps(mtime, nsec)).map_err(|e| self.werr(&rel)(e.into()))?;
        }
        Ok(())
    }

    /// Remove whatever is at `name` in the current directory, unless it is a directory
    /// and `keep_dir`; true when a directory was kept.
    fn clear(&self, name: &OsStr, rel: &Path, keep_dir: bool) -> Result<bool, RootfsError> {
        let parent = self.current()?;
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(self.werr(rel)(e.into())),
            Ok(st) => {
                let is_dir = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
                if is_dir && keep_dir {
                    return Ok(true);
                }
                if is_dir {
                    // Every parent of `rel` is a directory this sink opened with
                    // O_NOFOLLOW, and remove_dir_all does not follow symlinks.
                    fs::remove_dir_all(self.dest.join(rel)).map_err(self.werr(rel))?;
                } else {
                    rustix::fs::unlinkat(parent, name, AtFlags::empty()).map_err(|e| self.werr(rel)(e.into()))?;
                }
                Ok(false)
            }
        }
    }

    fn write_file(&self, name: &OsStr, e: &RootfsEntry, size: u64) -> Result<(), RootfsError> {
        let parent = self.current()?;
        let werr = self.werr(&e.path);
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|err| self.werr(&e.path)(err.into()))?;
        let mut out = File::from(fd);
        let src = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(&e.source)
            .map_err(read_err(&e.source))?;
        let mut reader = ExactReader::new(src, size);
        let copied = io::copy(&mut reader, &mut out);
        if let Some(err) = reader.failure.take() {
            return Err(err.into_error(&e.source, size));
        }
        copied.map_err(self.werr(&e.path))?;
        if self.keep_owners {
            rustix::fs::fchown(&out, Some(rustix::fs::Uid::from_raw(e.uid)), Some(rustix::fs::Gid::from_raw(e.gid)))
                .map_err(|err| self.werr(&e.path)(err.into()))?;
        }
        rustix::fs::fchmod(&out, Mode::from_raw_mode(e.mode)).map_err(|err| self.werr(&e.path)(err.into()))?;
        set_xattrs(&out, e);
        rustix::fs::futimens(&out, &timestamps(e.mtime, e.mtime_nsec)).map_err(|err| werr(err.into()))
    }
}

fn set_xattrs(file: &File, e: &RootfsEntry) {
    use xattr::FileExt;
    for (name, value) in &e.xattrs {
        if let Err(err) = file.set_xattr(name, value) {
            tracing::warn!(path = %e.path.display(), xattr = %name.to_string_lossy(), "extended attribute not kept: {err}");
        }
    }
}

impl RootfsSink for DirSink {
    fn entry(&mut self, e: &RootfsEntry) -> Result<(), RootfsError> {
        let parent = e.path.parent().unwrap_or(Path::new(""));
        while self.stack.len() > 1 && self.stack.last().map(|s| s.0.as_path() != parent).unwrap_or(false) {
            self.pop()?;
        }
        if self.stack.last().map(|s| s.0.as_path()) != Some(parent) {
            return Err(self.werr(&e.path)(io::Error::other("entry given before its parent directory")));
        }
        let Some(name) = e.path.file_name() else {
            return Err(self.werr(&e.path)(io::Error::other("entry without a name")));
        };
        let rel = e.path.clone();
        match &e.kind {
            EntryKind::Dir => {
                let parent_fd = self.current()?;
                if !self.clear(name, &rel, true)? {
                    rustix::fs::mkdirat(parent_fd, name, Mode::from_raw_mode(0o700))
                        .map_err(|err| self.werr(&rel)(err.into()))?;
                }
                self.own(name, e)?;
                let fd = rustix::fs::openat(
                    parent_fd,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|err| self.werr(&rel)(err.into()))?;
                {
                    let f = File::from(fd.try_clone().map_err(self.werr(&rel))?);
                    set_xattrs(&f, e);
                }
                self.stack.push((rel, fd, Some((e.mode, e.mtime, e.mtime_nsec))));
            }
            EntryKind::File { size } => {
                self.clear(name, &rel, false)?;
                self.write_file(name, e, *size)?;
            }
            EntryKind::HardLink { target } => {
                self.clear(name, &rel, false)?;
                let root_fd =
                    self.stack.first().map(|d| &d.1).ok_or_else(|| self.werr(&rel)(io::Error::other("finished")))?;
                let parent_fd = self.current()?;
                if let Err(err) = rustix::fs::linkat(root_fd, target, parent_fd, name, AtFlags::empty()) {
                    tracing::debug!(path = %rel.display(), "hard link not possible ({err}); copying");
                    let size = fs::symlink_metadata(&e.source).map_err(read_err(&e.source))?.len();
                    self.write_file(name, e, size)?;
                }
            }
            EntryKind::Symlink { target } => {
                self.clear(name, &rel, false)?;
                let parent_fd = self.current()?;
                rustix::fs::symlinkat(target.as_os_str(), parent_fd, name)
                    .map_err(|err| self.werr(&rel)(err.into()))?;
                self.own(name, e)?;
                let _ = rustix::fs::utimensat(
                    parent_fd,
                    name,
                    &timestamps(e.mtime, e.mtime_nsec),
                    AtFlags::SYMLINK_NOFOLLOW,
                );
            }
            EntryKind::Fifo | EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. } => {
                self.clear(name, &rel, false)?;
                let parent_fd = self.current()?;
                let (ft, dev) = match e.kind {
                    EntryKind::CharDevice { major, minor } => {
                        (rustix::fs::FileType::CharacterDevice, rustix::fs::makedev(major, minor))
                    }
                    EntryKind::BlockDevice { major, minor } => {
                        (rustix::fs::FileType::BlockDevice, rustix::fs::makedev(major, minor))
                    }
                    _ => (rustix::fs::FileType::Fifo, 0),
                };
                if ft != rustix::fs::FileType::Fifo && !self.is_root {
                    self.skipped_devices += 1;
                    tracing::warn!(path = %rel.display(), "device node skipped: only root can create it");
                    return Ok(());
                }
                if let Err(err) = rustix::fs::mknodat(parent_fd, name, ft, Mode::from_raw_mode(e.mode & 0o777), dev) {
                    if ft != rustix::fs::FileType::Fifo && err == rustix::io::Errno::PERM {
                        self.skipped_devices += 1;
                        tracing::warn!(path = %rel.display(), "device node skipped: {err}");
                        return Ok(());
                    }
                    return Err(self.werr(&rel)(err.into()));
                }
                self.own(name, e)?;
                rustix::fs::chmodat(parent_fd, name, Mode::from_raw_mode(e.mode), AtFlags::empty())
                    .map_err(|err| self.werr(&rel)(err.into()))?;
                let _ = rustix::fs::utimensat(
                    parent_fd,
                    name,
                    &timestamps(e.mtime, e.mtime_nsec),
                    AtFlags::SYMLINK_NOFOLLOW,
                );
            }
        }
        Ok(())
    }

    fn leave_dir(&mut self, e: &RootfsEntry) -> Result<(), RootfsError> {
        while self.stack.len() > 1 {
            let done = self.stack.last().map(|s| s.0 == e.path).unwrap_or(false);
            self.pop()?;
            if done {
                break;
            }
        }
        Ok(())
    }
}

/// Reads exactly `size` bytes of a file, remembering (rather than hiding in the
/// writer's error) a read failure or a file that shrank.
struct ExactReader {
    inner: io::Take<File>,
    size: u64,
    done: u64,
    failure: Option<ReadFailure>,
}

enum ReadFailure {
    Io(io::Error),
    Short(u64),
}

impl ReadFailure {
    fn into_error(self, path: &Path, expected: u64) -> RootfsError {
        match self {
            ReadFailure::Io(source) => RootfsError::Read { path: path.to_path_buf(), source },
            ReadFailure::Short(actual) => RootfsError::FileChanged { path: path.to_path_buf(), expected, actual },
        }
    }
}

impl ExactReader {
    fn new(f: File, size: u64) -> Self {
        ExactReader { inner: f.take(size), size, done: 0, failure: None }
    }
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done == self.size || buf.is_empty() {
            return Ok(0);
        }
        match self.inner.read(buf) {
            Ok(0) => {
                self.failure = Some(ReadFailure::Short(self.done));
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while it was read"))
            }
            Ok(n) => {
                self.done += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failure = Some(ReadFailure::Io(e));
                Err(copy)
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Into a tar stream

/// Writes the merged tree as one deterministic tar ([`crate::tar`]): the walk's order,
/// relative names (directories ending in `/`), uid/gid 0 with empty owner names, mtimes
/// in whole seconds clamped to `source_date_epoch`, PAX records for long names and
/// xattrs, two zero blocks at the end.
pub struct TarSink<W: Write> {
    writer: TarWriter<W>,
    source_date_epoch: Option<i64>,
}

const OUT_NAME: &str = "<tar output>";

impl<W: Write> TarSink<W> {
    pub fn new(out: W, source_date_epoch: Option<i64>) -> Self {
        TarSink { writer: TarWriter::new(out), source_date_epoch }
    }

    /// Write the end-of-archive blocks and return the writer.
    pub fn finish(self) -> Result<W, RootfsError> {
        self.writer.finish().map_err(|source| RootfsError::Write { path: OUT_NAME.into(), source })
    }

    fn mtime(&self, t: i64) -> u64 {
        let t = match self.source_date_epoch {
            Some(e) => t.min(e),
            None => t,
        };
        t.max(0) as u64
    }
}

impl<W: Write> RootfsSink for TarSink<W> {
    fn entry(&mut self, e: &RootfsEntry) -> Result<(), RootfsError> {
        let aerr = |source| RootfsError::Archive { path: e.path.clone(), source };
        let mut t = TarEntry {
            name: e.path.as_os_str().as_bytes().to_vec(),
            mode: e.mode,
            mtime: self.mtime(e.mtime),
            xattrs: e.xattrs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.clone())).collect(),
            ..TarEntry::default()
        };
        match &e.kind {
            EntryKind::Dir => {
                t.name.push(b'/');
                t.kind = kind::DIRECTORY;
            }
            EntryKind::File { size } => {
                t.kind = kind::REGULAR;
                t.size = *size;
            }
            EntryKind::Symlink { target } => {
                t.kind = kind::SYMLINK;
                t.linkname = target.as_os_str().as_bytes().to_vec();
            }
            EntryKind::HardLink { target } => {
                t.kind = kind::HARD_LINK;
                t.linkname = target.as_os_str().as_bytes().to_vec();
            }
            EntryKind::Fifo => t.kind = kind::FIFO,
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                t.kind =
                    if matches!(e.kind, EntryKind::CharDevice { .. }) { kind::CHAR_DEVICE } else { kind::BLOCK_DEVICE };
                t.devmajor = *major;
                t.devminor = *minor;
            }
        }
        let size = t.size;
        if let EntryKind::File { .. } = e.kind {
            let mut src = File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
                .open(&e.source)
                .map_err(read_err(&e.source))?;
            self.writer.header(&t).map_err(aerr)?;
            return self.writer.content(&mut src, size).map_err(|err| match err {
                ContentError::Read(source) => RootfsError::Read { path: e.source.clone(), source },
                ContentError::Short(actual) => {
                    RootfsError::FileChanged { path: e.source.clone(), expected: size, actual }
                }
                ContentError::Write(source) => RootfsError::Archive { path: e.path.clone(), source },
            });
        }
        self.writer.header(&t).map_err(aerr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// Records the walk.
    #[derive(Default)]
    struct Collect(Vec<(String, EntryKind)>);

    impl RootfsSink for Collect {
        fn entry(&mut self, e: &RootfsEntry) -> Result<(), RootfsError> {
            self.0.push((e.path.to_string_lossy().into_owned(), e.kind.clone()));
            Ok(())
        }
    }

    fn whiteout(p: &Path) -> bool {
        rustix::fs::mknodat(rustix::fs::CWD, p, rustix::fs::FileType::CharacterDevice, Mode::from_raw_mode(0), 0)
            .is_ok()
    }

    fn opaque(p: &Path) -> bool {
        xattr::set(p, "trusted.overlay.opaque", b"y").is_ok()
    }

    fn names(layers: &[PathBuf]) -> Vec<String> {
        let mut c = Collect::default();
        export_rootfs(layers, &mut c).unwrap();
        c.0.into_iter().map(|(p, k)| if k == EntryKind::Dir { format!("{p}/") } else { p }).collect()
    }

    fn write(p: &Path, s: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    }

    #[test]
    fn upper_files_hide_lower_and_dirs_merge() {
        let t = tempfile::tempdir().unwrap();
        let (l0, l1) = (t.path().join("l0"), t.path().join("l1"));
        write(&l0.join("etc/a"), "a0");
        write(&l0.join("etc/b"), "b0");
        write(&l0.join("x"), "file");
        write(&l1.join("etc/a"), "a1");
        write(&l1.join("etc/c"), "c1");
        // A directory over a file replaces it.
        write(&l1.join("x/inner"), "i");
        symlink("etc/a", l1.join("link")).unwrap();
        let layers = vec![l0.clone(), l1.clone()];
        assert_eq!(names(&layers), ["etc/", "etc/a", "etc/b", "etc/c", "link", "x/", "x/inner"]);
        let out = t.path().join("out");
        export_rootfs_to_dir(&layers, &out).unwrap();
        assert_eq!(fs::read_to_string(out.join("etc/a")).unwrap(), "a1");
        assert_eq!(fs::read_to_string(out.join("etc/b")).unwrap(), "b0");
        assert_eq!(fs::read_link(out.join("link")).unwrap(), Path::new("etc/a"));
    }

    #[test]
    fn whiteouts_delete_and_opaque_dirs_clear_lower_content() {
        let t = tempfile::tempdir().unwrap();
        let (l0, l1, l2) = (t.path().join("l0"), t.path().join("l1"), t.path().join("l2"));
        write(&l0.join("bin/vi"), "vi");
        write(&l0.join("bin/sh"), "sh");
        write(&l0.join("opt/old/deep"), "old");
        write(&l0.join("opt/keep"), "k");
        write(&l0.join("var/log/x"), "x");
        fs::create_dir_all(l1.join("bin")).unwrap();
        fs::create_dir_all(l1.join("opt/old")).unwrap();
        write(&l1.join("opt/old/new"), "new");
        fs::create_dir_all(&l1).unwrap();
        if !whiteout(&l1.join("bin/vi")) || !whiteout(&l1.join("var")) || !opaque(&l1.join("opt/old")) {
            eprintln!("*** SKIPPED: needs root (char devices, trusted.* xattrs) ***");
            return;
        }
        // A later layer brings var back: only what it adds is there.
        write(&l2.join("var/new"), "n");
        let layers = vec![l0.clone(), l1.clone(), l2.clone()];
        assert_eq!(
            names(&layers),
            ["bin/", "bin/sh", "opt/", "opt/keep", "opt/old/", "opt/old/new", "var/", "var/new"]
        );

        let out = t.path().join("out");
        export_rootfs_to_dir(&layers, &out).unwrap();
        assert!(fs::symlink_metadata(out.join("bin/vi")).is_err());
        assert!(!out.join("opt/old/deep").exists());
        assert_eq!(fs::read_to_string(out.join("opt/old/new")).unwrap(), "new");
        assert!(!out.join("var/log").exists());
        // No char device (whiteout) ends up in the result.
        for e in walkdir::WalkDir::new(&out) {
            assert!(!e.unwrap().file_type().is_char_device());
        }
    }

    #[test]
    fn hard_links_modes_and_tar_stream() {
        let t = tempfile::tempdir().unwrap();
        let l0 = t.path().join("l0");
        write(&l0.join("a/file"), "hello");
        fs::hard_link(l0.join("a/file"), l0.join("b")).unwrap();
        fs::set_permissions(l0.join("a/file"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::set_permissions(l0.join("a"), fs::Permissions::from_mode(0o555)).unwrap();
        let long = "d".repeat(120);
        write(&l0.join(&long).join("f"), "long");
        let layers = vec![l0.clone()];

        let out = t.path().join("out");
        export_rootfs_to_dir(&layers, &out).unwrap();
        let m1 = fs::metadata(out.join("a/file")).unwrap();
        let m2 = fs::metadata(out.join("b")).unwrap();
        assert_eq!(m1.ino(), m2.ino(), "hard link kept");
        assert_eq!(m1.mode() & 0o7777, 0o4755);
        assert_eq!(fs::metadata(out.join("a")).unwrap().mode() & 0o7777, 0o555);

        let (bytes, stats) = export_rootfs_tar(&layers, Vec::new(), Some(0)).unwrap();
        assert_eq!(stats.bytes, 5 + 4);
        let (again, _) = export_rootfs_tar(&layers, Vec::new(), Some(0)).unwrap();
        assert_eq!(bytes, again, "same tree, same bytes");
        let mut ar = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()), (0, 0, 0));
            let kind = h.entry_type();
            let link = e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned());
            seen.push((e.path().unwrap().to_string_lossy().into_owned(), kind, link));
        }
        let expect_long = format!("{long}/");
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(names, ["a/", "a/file", "b", expect_long.as_str(), &format!("{long}/f")]);
        assert_eq!(seen[2].1, tar::EntryType::Link);
        assert_eq!(seen[2].2.as_deref(), Some("a/file"));
        fs::set_permissions(l0.join("a"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(out.join("a"), fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn symlinks_in_the_destination_are_replaced_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let l0 = t.path().join("l0");
        write(&l0.join("etc/passwd"), "image");
        // The image itself has a symlink escaping the root, then a file under that name.
        symlink("/", l0.join("escape")).unwrap();
        let outside = t.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        let out = t.path().join("out");
        fs::create_dir_all(&out).unwrap();
        symlink(&outside, out.join("etc")).unwrap();
        export_rootfs_to_dir(&[l0], &out).unwrap();
        assert!(fs::symlink_metadata(out.join("etc")).unwrap().is_dir());
        assert_eq!(fs::read_to_string(out.join("etc/passwd")).unwrap(), "image");
        assert!(fs::read_dir(&outside).unwrap().next().is_none(), "nothing written through the symlink");
        assert_eq!(fs::read_link(out.join("escape")).unwrap(), Path::new("/"));
    }
}
