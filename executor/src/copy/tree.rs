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
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Stat, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use super::{CopyError, CopyStats, Side};
use crate::chmod::Chmod;
use crate::root::{file_type, list_dir, rel_str, show, Comps, Root, MAX_DEPTH};

/// Where the entry being copied is, on both sides.
#[derive(Clone)]
pub(super) struct Paths {
    /// Real path of the entry in the source root.
    pub src_real: Comps,
    /// Where, in `src_real`, the path relative to the copied source starts.
    pub rel_start: usize,
    /// Real path of the entry in the destination root.
    pub dst_real: Comps,
}

/// How the copy addresses a destination directory, for its children.
#[derive(Clone, Copy, Debug)]
pub(super) struct Place {
    /// Made by this copy: nothing in it needs replacing, so nothing is looked up.
    pub fresh: bool,
    /// Opened in the overlay's upper directory rather than through the mount.
    pub upper: bool,
}

impl Place {
    /// A directory that may already hold entries, seen through the mount.
    pub const EXISTING: Place = Place { fresh: false, upper: false };
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
    /// While a directory tree is copied in parallel: where regular files go.
    pub pool: Option<FilePool>,
    /// The upper directory of the overlay mounted at `dst`. A directory this copy
    /// creates exists only there, so what goes into it is written there directly,
    /// without overlayfs in the way (which doubles the cost of creating a file).
    pub upper: Option<&'a Root>,
    /// The earlier result of the same COPY, whose unchanged files are linked.
    pub earlier: Option<&'a super::reuse::EarlierCopy>,
    /// Where the files written into the upper directory are remembered for the next.
    pub record: Option<&'a super::reuse::CopyRecord>,
}

/// How copied entries get their owner and mode (shared with the file workers).
#[derive(Clone, Copy)]
struct MetaRules<'a> {
    owner: Option<(u32, u32)>,
    context_owner: bool,
    chmod: Option<&'a Chmod>,
}

impl MetaRules<'_> {
    fn owner(&self, st: &Stat) -> (u32, u32) {
        match self.owner {
            Some(o) => o,
            None if self.context_owner => (0, 0),
            None => (st.st_uid, st.st_gid),
        }
    }

    fn mode(&self, st: &Stat) -> u32 {
        let base = st.st_mode & 0o7777;
        match self.chmod {
            Some(c) => c.apply(base, file_type(st) == FileType::Directory),
            None => base,
        }
    }
}

/// A regular file handed to a worker thread: both parent directories stay open until
/// the job is done.
pub(super) struct FileJob {
    src_dir: Arc<OwnedFd>,
    dst_dir: Arc<OwnedFd>,
    name: Vec<u8>,
    st: Stat,
    paths: Paths,
    /// The earlier result's directory holding this file copied from the same source
    /// ([`super::reuse`]): linked from there instead of copied.
    reuse_from: Option<Arc<OwnedFd>>,
}

/// The walk's side of a parallel tree copy: the walking thread creates directories,
/// symlinks, hard links and special files in order and queues regular files (the
/// bulk of the work: inode allocation and data) to one worker per core. Directory
/// times are set at the end, when nothing is created in them any more.
pub(super) struct FilePool {
    jobs: SyncSender<Vec<FileJob>>,
    /// Files queued but not yet handed over: they go in batches, so that a worker is
    /// woken once per batch rather than once per file (30 000 wake-ups were a tenth of
    /// the walking thread's time in a COPY that links its files).
    batch: Vec<FileJob>,
    /// Bytes to copy in `batch`: a batch of large files goes early, to keep every
    /// worker busy.
    batch_bytes: u64,
    failed: Arc<AtomicBool>,
    /// Directories (real destination path, whether it is addressed in the upper
    /// directory) and the times they get once the files are in.
    dir_times: Vec<(Comps, bool, Timestamps)>,
}

/// Files per batch handed to a worker, at most.
const BATCH_FILES: usize = 32;
/// Bytes to copy per batch, about.
const BATCH_BYTES: u64 = 1 << 20;

impl FilePool {
    fn queue(&mut self, job: FileJob) {
        if job.reuse_from.is_none() {
            self.batch_bytes += job.st.st_size as u64;
        }
        self.batch.push(job);
        if self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
            self.hand_over();
        }
    }

    fn hand_over(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_FILES));
        self.batch_bytes = 0;
        // The workers drain the queue until it closes, so this only waits for room.
        let _ = self.jobs.send(batch);
    }
}

/// What one file worker did.
#[derive(Default)]
struct WorkerTally {
    files: u64,
    /// Of `files`, those linked from an earlier result of the same COPY.
    reused: u64,
    bytes: u64,
    xattrs_skipped: u64,
}

fn src_err(op: &'static str, p: &Paths) -> impl Fn(Errno) -> CopyError {
    let path = show(&p.src_real);
    move |e| CopyError::Io { op, path: format!("{path} (source)"), source: e.into() }
}

fn dst_err(op: &'static str, p: &Paths) -> impl Fn(Errno) -> CopyError {
    let path = show(&p.dst_real);
    move |e| CopyError::Io { op, path: path.clone(), source: e.into() }
}

/// Create `dst_name` in `dst_dir` as a copy of the regular file `src_name` of `src_dir`:
/// content, then owner, mode, times and extended attributes, all through the open
/// descriptors (no path is resolved twice).
#[allow(clippy::too_many_arguments)]
fn copy_regular(
    src_dir: BorrowedFd<'_>,
    src_name: &[u8],
    dst_dir: BorrowedFd<'_>,
    dst_name: &[u8],
    st: &Stat,
    rules: MetaRules<'_>,
    p: &Paths,
    tally: &mut WorkerTally,
) -> Result<(), CopyError> {
    let sfd = rustix::fs::openat(src_dir, src_name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
        .map_err(src_err("opening", p))?;
    let dfd = rustix::fs::openat(
        dst_dir,
        dst_name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(dst_err("creating the file", p))?;
    let (mut from, mut to) = (File::from(sfd), File::from(dfd));
    // std uses copy_file_range / sendfile between files, and a bounded buffer otherwise.
    let n = io::copy(&mut from, &mut to).map_err(|source| CopyError::Io {
        op: "copying",
        path: format!("{} to {}", show(&p.src_real), show(&p.dst_real)),
        source,
    })?;
    let (uid, gid) = rules.owner(st);
    rustix::fs::fchown(&to, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .map_err(dst_err("changing the owner of", p))?;
    rustix::fs::fchmod(&to, Mode::from_raw_mode(rules.mode(st))).map_err(dst_err("changing the mode of", p))?;
    rustix::fs::futimens(&to, &times_of(st)).map_err(dst_err("setting the times of", p))?;
    // Last: chown drops `security.capability`.
    {
        use xattr::FileExt;
        match from.list_xattr() {
            Ok(names) => {
                for name in names {
                    if is_overlay_xattr(&name) {
                        continue;
                    }
                    let copied = match from.get_xattr(&name) {
                        Ok(Some(v)) => to.set_xattr(&name, &v),
                        Ok(None) => Ok(()),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = copied {
                        xattr_not_copied(p, &name, &e);
                        tally.xattrs_skipped += 1;
                    }
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
            Err(e) => tracing::debug!(path = %show(&p.src_real), error = %e, "listing extended attributes failed"),
        }
    }
    tally.files += 1;
    tally.bytes += n;
    Ok(())
}

/// overlayfs's own attributes describe the snapshot, not the file.
fn is_overlay_xattr(name: &OsStr) -> bool {
    let nb = name.as_bytes();
    nb.starts_with(b"trusted.overlay.") || nb.starts_with(b"user.overlay.")
}

fn xattr_not_copied(p: &Paths, name: &OsStr, e: &io::Error) {
    let expected = matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM));
    if expected {
        tracing::debug!(path = %show(&p.dst_real), xattr = %name.to_string_lossy(), error = %e, "extended attribute not copied");
    } else {
        tracing::warn!(path = %show(&p.dst_real), xattr = %name.to_string_lossy(), error = %e, "extended attribute not copied");
    }
}

/// A file worker: copies queued files until the queue closes. After a failure it
/// keeps draining (so the walk never blocks on a full queue) without copying.
fn file_worker(
    jobs: &Mutex<Receiver<Vec<FileJob>>>,
    rules: MetaRules<'_>,
    failed: &AtomicBool,
) -> (WorkerTally, Option<CopyError>) {
    let mut tally = WorkerTally::default();
    let mut error = None;
    loop {
        let batch = {
            let rx = jobs.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        let Ok(batch) = batch else { return (tally, error) };
        for job in batch {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let r = place_file(&job, rules, &mut tally);
            if let Err(e) = r {
                failed.store(true, Ordering::Relaxed);
                error = Some(e);
            }
        }
    }
}

/// A queued regular file: linked from the earlier result when it has this file from the
/// same source (and it is still the regular file of that size), else copied.
fn place_file(job: &FileJob, rules: MetaRules<'_>, tally: &mut WorkerTally) -> Result<(), CopyError> {
    if let Some(old) = &job.reuse_from {
        let same = rustix::fs::statat(old.as_fd(), job.name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|o| file_type(&o) == FileType::RegularFile && o.st_size == job.st.st_size);
        // Gone, too many links, another file system: copied instead.
        if same
            && rustix::fs::linkat(
                old.as_fd(),
                job.name.as_slice(),
                job.dst_dir.as_fd(),
                job.name.as_slice(),
                AtFlags::empty(),
            )
            .is_ok()
        {
            tally.files += 1;
            tally.reused += 1;
            return Ok(());
        }
    }
    copy_regular(job.src_dir.as_fd(), &job.name, job.dst_dir.as_fd(), &job.name, &job.st, rules, &job.paths, tally)
}

pub(super) fn times_of(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: st.st_atime as _, tv_nsec: st.st_atime_nsec as _ },
        last_modification: Timespec { tv_sec: st.st_mtime as _, tv_nsec: st.st_mtime_nsec as _ },
    }
}

impl Copier<'_> {
    fn src_io(&self, op: &'static str, p: &Paths) -> impl Fn(Errno) -> CopyError {
        src_err(op, p)
    }

    fn dst_io(&self, op: &'static str, p: &Paths) -> impl Fn(Errno) -> CopyError {
        dst_err(op, p)
    }

    fn rules(&self) -> MetaRules<'_> {
        MetaRules { owner: self.owner, context_owner: self.context_owner, chmod: self.chmod }
    }

    fn pool_failed(&self) -> bool {
        self.pool.as_ref().is_some_and(|p| p.failed.load(Ordering::Relaxed))
    }

    /// Copy the children of `src_dir` into `dst_dir` (both opened by the caller), with
    /// regular files copied by one worker per core. `dst_fresh`: `dst_dir` was just
    /// created, so nothing in it needs replacing.
    pub fn copy_tree(
        &mut self,
        src_dir: OwnedFd,
        dst_dir: OwnedFd,
        p: &mut Paths,
        place: Place,
    ) -> Result<(), CopyError> {
        let (src_dir, dst_dir) = (Arc::new(src_dir), Arc::new(dst_dir));
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        if workers <= 1 || self.pool.is_some() {
            return self.copy_children(&src_dir, &dst_dir, p, 0, place);
        }
        // Bounded: at most this many files (and their directories' descriptors) wait.
        let (tx, rx) = sync_channel::<Vec<FileJob>>(256 / BATCH_FILES);
        let rx = Mutex::new(rx);
        let failed = Arc::new(AtomicBool::new(false));
        let rules = MetaRules { owner: self.owner, context_owner: self.context_owner, chmod: self.chmod };
        self.pool = Some(FilePool {
            jobs: tx,
            batch: Vec::with_capacity(BATCH_FILES),
            batch_bytes: 0,
            failed: failed.clone(),
            dir_times: Vec::new(),
        });
        let (walked, outcomes) = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers).map(|_| s.spawn(|| file_worker(&rx, rules, &failed))).collect();
            let walked = self.copy_children(&src_dir, &dst_dir, p, 0, place);
            if walked.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            if let Some(pool) = self.pool.as_mut() {
                pool.hand_over();
            }
            // Closing the queue lets the workers finish and return.
            let pool = self.pool.take();
            let dir_times = pool.map(|pool| pool.dir_times).unwrap_or_default();
            let outcomes: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
            (walked.map(|()| dir_times), outcomes)
        });
        let mut worker_error = None;
        for outcome in outcomes {
            match outcome {
                Ok((tally, error)) => {
                    self.add_tally(&tally);
                    if worker_error.is_none() {
                        worker_error = error;
                    }
                }
                Err(_) => {
                    worker_error.get_or_insert(CopyError::Io {
                        op: "copying",
                        path: show(&p.dst_real),
                        source: io::Error::other("a copying thread panicked"),
                    });
                }
            }
        }
        if let Some(e) = worker_error {
            return Err(e);
        }
        for (real, upper, times) in walked? {
            let Some((name, parent)) = real.split_last() else { continue };
            let err = |e: Errno| CopyError::Io { op: "setting the times of", path: show(&real), source: e.into() };
            let pfd = self.root_for(upper).open_dir_nofollow(parent).map_err(err)?;
            rustix::fs::utimensat(&pfd, name.as_slice(), &times, AtFlags::SYMLINK_NOFOLLOW).map_err(err)?;
        }
        Ok(())
    }

    /// The destination root a path is addressed in.
    fn root_for(&self, upper: bool) -> &Root {
        match (upper, self.upper) {
            (true, Some(u)) => u,
            _ => self.dst,
        }
    }

    /// What is at `dst_name` now (nothing, without asking, in a fresh directory).
    fn existing(
        &self,
        dst_parent: BorrowedFd<'_>,
        dst_name: &[u8],
        p: &Paths,
        fresh: bool,
    ) -> Result<Option<FileType>, CopyError> {
        if fresh {
            return Ok(None);
        }
        match rustix::fs::statat(dst_parent, dst_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(d) => Ok(Some(file_type(&d))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.dst_io("inspecting", p)(e)),
        }
    }

    /// Make room for a non-directory at `dst_name`: a non-directory there is replaced,
    /// a directory is an error.
    fn clear_for_file(
        &self,
        existing: Option<FileType>,
        dst_parent: BorrowedFd<'_>,
        dst_name: &[u8],
        p: &Paths,
    ) -> Result<(), CopyError> {
        match existing {
            None => Ok(()),
            Some(FileType::Directory) => Err(CopyError::DirectoryInTheWay { path: show(&p.dst_real) }),
            Some(_) => {
                rustix::fs::unlinkat(dst_parent, dst_name, AtFlags::empty()).map_err(self.dst_io("replacing", p))
            }
        }
    }

    /// Copy the children of the source directory `src_dir` (open for reading) into the
    /// destination directory `dst_dir`, in name order, skipping excluded ones.
    pub fn copy_children(
        &mut self,
        src_dir: &Arc<OwnedFd>,
        dst_dir: &Arc<OwnedFd>,
        p: &mut Paths,
        depth: usize,
        place: Place,
    ) -> Result<(), CopyError> {
        let dir = rustix::fs::openat(
            src_dir.as_fd(),
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(self.src_io("opening the directory", p))?;
        let names = list_dir(&dir).map_err(self.src_io("reading the directory", p))?;
        drop(dir);
        // The same directory in the earlier result of this COPY, when this one is new.
        let reuse_dir: Option<Arc<OwnedFd>> = match self.earlier {
            Some(e) if place.upper && place.fresh => e.upper.open_dir_nofollow(&p.dst_real).ok().map(Arc::new),
            _ => None,
        };
        for name in names {
            if self.pool_failed() {
                // A worker failed: its error is the one reported.
                return Ok(());
            }
            let st = match rustix::fs::statat(src_dir.as_fd(), name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
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
            let r = if self.pool.is_some() && file_type(&st) == FileType::RegularFile && st.st_nlink <= 1 {
                self.queue_file(src_dir, dst_dir, name, st, p, place, reuse_dir.as_ref())
            } else {
                self.copy_node(src_dir.as_fd(), &name, &st, dst_dir.as_fd(), &name, p, depth + 1, place)
            };
            p.dst_real.pop();
            p.src_real.pop();
            r?;
        }
        Ok(())
    }

    /// Hand a regular file (not hard-linked: links need their first copy to exist) to
    /// the workers.
    #[allow(clippy::too_many_arguments)]
    fn queue_file(
        &mut self,
        src_dir: &Arc<OwnedFd>,
        dst_dir: &Arc<OwnedFd>,
        name: Vec<u8>,
        st: Stat,
        p: &Paths,
        place: Place,
        reuse_dir: Option<&Arc<OwnedFd>>,
    ) -> Result<(), CopyError> {
        let existing = self.existing(dst_dir.as_fd(), &name, p, place.fresh)?;
        self.clear_for_file(existing, dst_dir.as_fd(), &name, p)?;
        let mut reuse_from = None;
        if place.upper && place.fresh {
            let key = super::reuse::path_key(&p.dst_real);
            let id = super::reuse::SourceId::of(&st);
            if let (Some(dir), Some(earlier)) = (reuse_dir, self.earlier) {
                if earlier.sources.matches(&key, &id) {
                    reuse_from = Some(dir.clone());
                }
            }
            if let Some(record) = self.record {
                record.add(key, id);
            }
        }
        let job =
            FileJob { src_dir: src_dir.clone(), dst_dir: dst_dir.clone(), name, st, paths: p.clone(), reuse_from };
        match &mut self.pool {
            Some(pool) => {
                pool.queue(job);
                Ok(())
            }
            None => {
                let mut tally = WorkerTally::default();
                place_file(&job, self.rules(), &mut tally)?;
                self.add_tally(&tally);
                Ok(())
            }
        }
    }

    fn add_tally(&mut self, tally: &WorkerTally) {
        self.stats.files += tally.files;
        self.stats.reused += tally.reused;
        self.stats.bytes += tally.bytes;
        self.stats.xattrs_skipped += tally.xattrs_skipped;
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
        place: Place,
    ) -> Result<(), CopyError> {
        if depth > MAX_DEPTH {
            return Err(CopyError::PathTooDeep { side: Side::Source, path: show(&p.src_real) });
        }
        let ft = file_type(st);
        let existing = self.existing(dst_parent, dst_name, p, place.fresh)?;

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
            let created = existing.is_none();
            // A directory made here through the mount exists only in the upper
            // directory: its contents go there directly.
            let in_upper = match self.upper {
                Some(upper) if created && !place.upper => upper.open_dir_nofollow(&p.dst_real).ok(),
                _ => None,
            };
            let (ddir, inner) = match in_upper {
                Some(fd) => (fd, Place { fresh: true, upper: true }),
                None => (
                    rustix::fs::openat(
                        dst_parent,
                        dst_name,
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(self.dst_io("opening the directory", p))?,
                    Place { fresh: created, upper: place.upper },
                ),
            };
            self.copy_children(&Arc::new(sdir), &Arc::new(ddir), p, depth, inner)?;
            self.apply_meta(src_parent, src_name, st, dst_parent, dst_name, p, place)?;
            self.stats.dirs += 1;
            return Ok(());
        }

        self.clear_for_file(existing, dst_parent, dst_name, p)?;

        match ft {
            FileType::RegularFile => {
                #[allow(clippy::unnecessary_cast)] // not u64 on every target
                let key = (st.st_dev as u64, st.st_ino as u64);
                let linked = if st.st_nlink > 1 {
                    match self.links.get(&key).cloned() {
                        Some(first) => self.link_to(&first, dst_parent, dst_name, p, place)?,
                        None => {
                            self.links.insert(key, p.dst_real.clone());
                            false
                        }
                    }
                } else {
                    false
                };
                if !linked {
                    let mut tally = WorkerTally::default();
                    copy_regular(src_parent, src_name, dst_parent, dst_name, st, self.rules(), p, &mut tally)?;
                    self.add_tally(&tally);
                    return Ok(());
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
        self.apply_meta(src_parent, src_name, st, dst_parent, dst_name, p, place)
    }

    /// Hard link `dst_name` to the earlier copy at `first`. `false` when that copy is
    /// gone (then the file is copied again).
    fn link_to(
        &mut self,
        first: &[Vec<u8>],
        dst_parent: BorrowedFd<'_>,
        dst_name: &[u8],
        p: &Paths,
        place: Place,
    ) -> Result<bool, CopyError> {
        let Some((fname, fparent)) = first.split_last() else {
            return Ok(false);
        };
        // Both copies are seen in the same root (a link cannot cross the mount).
        let fdir = match self.root_for(place.upper).open_dir_nofollow(fparent) {
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

    /// Owner, mode, times, then extended attributes (last: chown drops
    /// `security.capability`), as fsutil's `copyFileInfo` + `copyXAttrs`. `place`:
    /// where `dst_parent` is.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_meta(
        &mut self,
        src_parent: BorrowedFd<'_>,
        src_name: &[u8],
        st: &Stat,
        dst_parent: BorrowedFd<'_>,
        dst_name: &[u8],
        p: &Paths,
        place: Place,
    ) -> Result<(), CopyError> {
        let ft = file_type(st);
        let (uid, gid) = self.rules().owner(st);
        rustix::fs::chownat(
            dst_parent,
            dst_name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(self.dst_io("changing the owner of", p))?;
        if ft != FileType::Symlink {
            let mode = self.rules().mode(st);
            // Not a symlink: we just created or checked it.
            rustix::fs::chmodat(dst_parent, dst_name, Mode::from_raw_mode(mode), AtFlags::empty())
                .map_err(self.dst_io("changing the mode of", p))?;
        }
        match &mut self.pool {
            // Files are still being created in it: its times are set at the end.
            Some(pool) if ft == FileType::Directory => {
                pool.dir_times.push((p.dst_real.clone(), place.upper, times_of(st)))
            }
            _ => rustix::fs::utimensat(dst_parent, dst_name, &times_of(st), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(self.dst_io("setting the times of", p))?,
        }
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
            if is_overlay_xattr(&name) {
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
        xattr_not_copied(p, name, &e);
        self.stats.xattrs_skipped += 1;
    }
}
