//! Paths inside a root directory, resolved without ever leaving it: the one way the
//! executor turns a path that came from a Dockerfile, a build context, an image or an
//! archive into something on the host.
//!
//! Why this module exists: every such path is hostile input. A stage can make `/wd` a
//! symlink to `/root/.ssh`, a context can hold `v -> /etc`, an image can replace
//! `/etc/passwd` with a link to a host file. Joining such a path onto a host directory
//! (`merged.join(path)`) and handing it to `std::fs` follows those links on the *host*.
//! So outside this module no executor code joins user input onto a host path (a unit
//! test, `no_host_joins_outside_the_root_module`, greps for it); it resolves the path
//! here and then works through the descriptors (or the verified real path) it gets.
//!
//! A [`Root`] is a descriptor of a directory that plays `/` for every path resolved in
//! it — the build context, a stage's file system, the destination overlay, or the
//! directory an `ADD` archive is extracted into. Resolution is a userspace walk from
//! that descriptor, one component at a time (`O_PATH|O_NOFOLLOW` opens and `readlinkat`),
//! with the rules of containerd's `fs.RootPath`, which BuildKit's copy uses:
//!
//! - paths are cleaned first as if rooted (`..` stops at `/`);
//! - a symlink is followed *inside* the root: an absolute target restarts at the root,
//!   a relative one continues from the link's directory, `..` stops at the root;
//! - from the first missing component on, the rest of the path is kept as written, so
//!   callers learn where the path would be (for creating it);
//! - the last component is followed only when asked.
//!
//! Once resolved, a path names only real directories, and it is opened again with
//! [`Root::open_real`] / [`Root::open_dir_nofollow`], which refuse any symlink on the
//! way: if the tree changed in between, an open fails instead of escaping.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Stat, Uid};
use rustix::io::Errno;

/// Path components, each a file name (no `/`, never `.` or `..`).
pub(crate) type Comps = Vec<Vec<u8>>;

/// How many symlinks one resolution may traverse (the kernel's limit too).
const MAX_SYMLINKS: u32 = 40;
/// How deep a resolved path may be (each level holds a descriptor while walking).
pub(crate) const MAX_DEPTH: usize = 512;

/// Clean `path` as if rooted at `/`: empty and `.` components dropped, `..` stops at
/// the root.
pub(crate) fn clean(path: &[u8]) -> Comps {
    let mut out: Comps = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c.to_vec()),
        }
    }
    out
}

/// `/a/b` for display (lossy for names that are not UTF-8).
pub(crate) fn show(comps: &[Vec<u8>]) -> String {
    if comps.is_empty() {
        return "/".to_string();
    }
    let mut s = String::new();
    for c in comps {
        s.push('/');
        s.push_str(&String::from_utf8_lossy(c));
    }
    s
}

/// `a/b` (relative, as predicates see paths).
pub(crate) fn rel_str(comps: &[Vec<u8>]) -> String {
    let mut s = String::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            s.push('/');
        }
        s.push_str(&String::from_utf8_lossy(c));
    }
    s
}

/// Why a path could not be resolved.
#[derive(Debug)]
pub(crate) enum ResolveError {
    /// A component that must be a directory is not one (the real path up to it).
    NotADirectory(Comps),
    TooManySymlinks,
    TooDeep,
    /// A system call failed at the real path given.
    Io(Comps, Errno),
}

/// What a resolution found.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The real path from the root: symlinks resolved, possibly with a missing tail.
    pub real: Comps,
    /// `lstat` of the entry at `real`, or `None` when (part of) it does not exist.
    pub stat: Option<Stat>,
}

impl Resolved {
    pub fn is_dir(&self) -> bool {
        self.stat.as_ref().is_some_and(|st| file_type(st) == FileType::Directory)
    }
}

/// Creating missing directories while resolving.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirSpec {
    /// Permission bits of created directories (applied with chmod, so no umask).
    pub mode: u32,
    /// Owner of created directories; `None` leaves the creating process's.
    pub owner: Option<(u32, u32)>,
}

/// Decides whether an existing real path (relative to the root) is hidden, as if it
/// did not exist: `.dockerignore` rules on the build context.
pub(crate) type Hidden<'a> = &'a dyn Fn(&[Vec<u8>], bool) -> bool;

pub(crate) fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

impl ResolveError {
    /// As an I/O error whose message names `path` (the path as it was asked for).
    pub fn into_io(self, path: &str) -> io::Error {
        match self {
            ResolveError::NotADirectory(p) => {
                io::Error::new(io::ErrorKind::NotADirectory, format!("{path}: {} is not a directory", show(&p)))
            }
            ResolveError::TooManySymlinks => io::Error::other(format!("{path}: too many levels of symbolic links")),
            ResolveError::TooDeep => io::Error::other(format!("{path}: the path is too deep")),
            ResolveError::Io(p, e) => io::Error::new(io::Error::from(e).kind(), format!("{path} ({}): {e}", show(&p))),
        }
    }
}

/// A directory that plays `/`.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
    /// Where it is on the host, when it was opened by path (for [`Root::host_path`]).
    base: Option<PathBuf>,
}

impl Root {
    /// Open the directory at `path` (following symlinks on the host path itself: the
    /// caller chose it).
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Root { fd, base: Some(path.to_path_buf()) })
    }

    /// A root at an already open directory.
    pub fn from_fd(fd: OwnedFd) -> Root {
        Root { fd, base: None }
    }

    /// Resolve `path` as written in a Dockerfile or an image (cleaned as if rooted at
    /// `/`, so `..` and a leading `/` never leave the root).
    pub fn resolve_path(&self, path: &str, follow_last: bool) -> Result<Resolved, ResolveError> {
        self.resolve(&clean(path.as_bytes()), follow_last, None)
    }

    /// The host path of the real path `real` (as [`Root::resolve`] returned it), for
    /// what only takes a path: a bind-mount source handed to runc, an overlay lower
    /// directory. It is checked to be reachable from the root without any symlink just
    /// before it is returned, so a tree changed since the resolution fails here instead
    /// of leading out of the root. (The roots handed out this way are committed,
    /// read-only snapshots or the build context, which nothing in the build changes.)
    pub fn host_path(&self, real: &[Vec<u8>]) -> io::Result<PathBuf> {
        let Some(base) = &self.base else {
            return Err(io::Error::other("a root opened from a descriptor has no host path"));
        };
        match real.split_last() {
            None => {}
            Some((last, parents)) => {
                let parent = self.open_dir_nofollow(parents)?;
                rustix::fs::statat(&parent, last.as_slice(), AtFlags::SYMLINK_NOFOLLOW)?;
            }
        }
        let mut p = base.clone();
        for c in real {
            p.push(std::ffi::OsStr::from_bytes(c));
        }
        Ok(p)
    }

    /// The content of the regular file at `path` (symlinks followed inside the root),
    /// `None` when there is none; more than `max` bytes is an error.
    pub fn read_file(&self, path: &str, max: u64) -> io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        let r = match self.resolve_path(path, true) {
            Ok(r) => r,
            Err(ResolveError::NotADirectory(_)) => return Ok(None),
            Err(e) => return Err(e.into_io(path)),
        };
        let Some(st) = &r.stat else { return Ok(None) };
        if file_type(st) != FileType::RegularFile {
            return Err(io::Error::other(format!("{path} is not a regular file")));
        }
        let fd = self.open_real(&r.real, OFlags::RDONLY)?;
        let mut out = Vec::new();
        std::fs::File::from(fd).take(max + 1).read_to_end(&mut out)?;
        if out.len() as u64 > max {
            return Err(io::Error::other(format!("{path} is larger than {max} bytes")));
        }
        Ok(Some(out))
    }

    /// Write the regular file `path` (created, or truncated; a symlink there is
    /// followed inside the root, as BuildKit's mkfile does) with `data`, `mode` and
    /// `owner`; missing parent directories are made per `parents`.
    pub fn write_file(
        &self,
        path: &str,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
        parents: DirSpec,
    ) -> io::Result<()> {
        use std::io::Write;
        let r = self.resolve_path(path, true).map_err(|e| e.into_io(path))?;
        let Some((name, parent)) = r.real.split_last() else {
            return Err(io::Error::other(format!("{path}: is the root directory")));
        };
        let (_, pfd) = self.mkdir_all(parent, parents).map_err(|e| e.into_io(path))?;
        let fd = rustix::fs::openat(
            &pfd,
            name.as_slice(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut f = std::fs::File::from(fd);
        f.write_all(data)?;
        if let Some((uid, gid)) = owner {
            rustix::fs::fchown(&f, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
        }
        // After the chown, which clears setuid/setgid.
        rustix::fs::fchmod(&f, Mode::from_raw_mode(mode & 0o7777))?;
        Ok(())
    }

    /// `lstat` of `path`: its parents resolved inside the root, the last component not
    /// followed; `None` when it does not exist. Also gives the real path.
    pub fn lstat(&self, path: &str) -> io::Result<(Comps, Option<Stat>)> {
        match self.resolve_path(path, false) {
            Ok(r) => Ok((r.real, r.stat)),
            Err(ResolveError::NotADirectory(p)) => Ok((p, None)),
            Err(e) => Err(e.into_io(path)),
        }
    }

    /// `lstat` of the real path `real` (no symlink followed anywhere); `None` when it
    /// does not exist.
    pub fn lstat_real(&self, real: &[Vec<u8>]) -> io::Result<Option<Stat>> {
        let Some((last, parents)) = real.split_last() else {
            return Ok(Some(rustix::fs::fstat(&self.fd)?));
        };
        let parent = match self.open_dir_nofollow(parents) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match rustix::fs::statat(&parent, last.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The target of the symlink at the real path `real`.
    pub fn read_link_real(&self, real: &[Vec<u8>]) -> io::Result<Vec<u8>> {
        let Some((last, parents)) = real.split_last() else {
            return Err(io::Error::other("the root is not a symlink"));
        };
        let parent = self.open_dir_nofollow(parents)?;
        Ok(rustix::fs::readlinkat(&parent, last.as_slice(), Vec::new())?.into_bytes())
    }

    /// Remove the entry at the real path `real` if it is an empty regular file.
    pub fn remove_empty_file(&self, real: &[Vec<u8>]) -> io::Result<()> {
        let Some((last, parents)) = real.split_last() else { return Ok(()) };
        let parent = match self.open_dir_nofollow(parents) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match rustix::fs::statat(&parent, last.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if file_type(&st) == FileType::RegularFile && st.st_size == 0 => {
                rustix::fs::unlinkat(&parent, last.as_slice(), AtFlags::empty())?;
                Ok(())
            }
            Ok(_) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Resolve `comps` inside the root (see the module documentation). `hidden` makes
    /// existing entries count as missing.
    pub fn resolve(
        &self,
        comps: &[Vec<u8>],
        follow_last: bool,
        hidden: Option<Hidden<'_>>,
    ) -> Result<Resolved, ResolveError> {
        self.walk(comps, follow_last, hidden, None).map(|(r, _)| r)
    }

    /// Resolve `comps` as a directory, following every symlink inside the root and
    /// creating missing directories per `spec` (`MkdirAll` over `RootPath`). Returns the
    /// real path and an `O_PATH` descriptor of the directory.
    pub fn mkdir_all(&self, comps: &[Vec<u8>], spec: DirSpec) -> Result<(Comps, OwnedFd), ResolveError> {
        let (resolved, fd) = self.walk(comps, true, None, Some(spec))?;
        match fd {
            Some(fd) => Ok((resolved.real, fd)),
            None => Err(ResolveError::NotADirectory(resolved.real)),
        }
    }

    /// The walk behind [`Root::resolve`] and [`Root::mkdir_all`]. With `create`, the
    /// whole path must end up a directory and its descriptor is returned too.
    fn walk(
        &self,
        comps: &[Vec<u8>],
        follow_last: bool,
        hidden: Option<Hidden<'_>>,
        create: Option<DirSpec>,
    ) -> Result<(Resolved, Option<OwnedFd>), ResolveError> {
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut real: Comps = Vec::new();
        // fds[i] is the directory real[..=i] (while nothing is missing).
        let mut fds: Vec<OwnedFd> = Vec::new();
        let mut pending: VecDeque<Vec<u8>> = comps.iter().cloned().collect();
        let mut links = 0u32;
        let mut missing = false;
        let mut last_stat: Option<Stat> = None;

        while let Some(c) = pending.pop_front() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    real.pop();
                    if !missing {
                        fds.pop();
                    }
                    last_stat = None;
                    continue;
                }
                _ => {}
            }
            if real.len() >= MAX_DEPTH {
                return Err(ResolveError::TooDeep);
            }
            if missing {
                real.push(c);
                continue;
            }
            let is_last = pending.iter().all(|p| p.is_empty() || p == b".");
            let cur = fds.last().map(|f| f.as_fd()).unwrap_or(self.fd.as_fd());
            let st = match rustix::fs::statat(cur, c.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Some(st),
                Err(Errno::NOENT) => None,
                Err(e) => {
                    real.push(c);
                    return Err(ResolveError::Io(real, e));
                }
            };
            let st = match st {
                Some(st) => st,
                None => {
                    if let Some(spec) = create {
                        let fd = make_dir(cur, &c, spec).map_err(|e| {
                            let mut p = real.clone();
                            p.push(c.clone());
                            ResolveError::Io(p, e)
                        })?;
                        real.push(c);
                        fds.push(fd);
                        last_stat = None;
                        continue;
                    }
                    missing = true;
                    real.push(c);
                    continue;
                }
            };
            let ft = file_type(&st);
            if ft == FileType::Symlink && (!is_last || follow_last || create.is_some()) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ResolveError::TooManySymlinks);
                }
                let target = rustix::fs::readlinkat(cur, c.as_slice(), Vec::new()).map_err(|e| {
                    let mut p = real.clone();
                    p.push(c.clone());
                    ResolveError::Io(p, e)
                })?;
                let target = target.as_bytes();
                if target.starts_with(b"/") {
                    real.clear();
                    fds.clear();
                }
                for t in target.split(|&b| b == b'/').rev() {
                    pending.push_front(t.to_vec());
                }
                continue;
            }
            real.push(c);
            if let Some(hidden) = hidden {
                if hidden(&real, ft == FileType::Directory) {
                    missing = true;
                    continue;
                }
            }
            if ft == FileType::Directory {
                let name = real.last().map(|v| v.as_slice()).unwrap_or(b".");
                let fd = rustix::fs::openat(cur, name, dir_flags, Mode::empty())
                    .map_err(|e| ResolveError::Io(real.clone(), e))?;
                fds.push(fd);
                last_stat = Some(st);
            } else if is_last && create.is_none() {
                last_stat = Some(st);
            } else {
                return Err(ResolveError::NotADirectory(real));
            }
        }

        if missing {
            return Ok((Resolved { real, stat: None }, None));
        }
        let stat = match last_stat {
            Some(st) => st,
            // The root itself, or a path that ended on `..`: stat the directory we are in.
            None => {
                let cur = fds.last().map(|f| f.as_fd()).unwrap_or(self.fd.as_fd());
                rustix::fs::fstat(cur).map_err(|e| ResolveError::Io(real.clone(), e))?
            }
        };
        let fd = if file_type(&stat) == FileType::Directory {
            match fds.pop() {
                Some(fd) if !real.is_empty() => Some(fd),
                _ => Some(self.dup_dir().map_err(|e| ResolveError::Io(Vec::new(), e))?),
            }
        } else {
            None
        };
        Ok((Resolved { real, stat: Some(stat) }, fd))
    }

    /// A new `O_PATH` descriptor of the root directory.
    fn dup_dir(&self) -> Result<OwnedFd, Errno> {
        rustix::fs::openat(&self.fd, ".", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
    }

    /// Open the real path `real` (directories only on the way, no symlink anywhere)
    /// with `flags` for the last component (`O_NOFOLLOW` is added).
    pub fn open_real(&self, real: &[Vec<u8>], flags: OFlags) -> Result<OwnedFd, Errno> {
        let Some((last, parents)) = real.split_last() else {
            return rustix::fs::openat(&self.fd, ".", flags | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty());
        };
        let parent = self.open_dir_nofollow(parents)?;
        rustix::fs::openat(&parent, last.as_slice(), flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
    }

    /// An `O_PATH` descriptor of the real directory `real`, refusing symlinks.
    pub fn open_dir_nofollow(&self, real: &[Vec<u8>]) -> Result<OwnedFd, Errno> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if real.is_empty() {
            return self.dup_dir();
        }
        // One openat2 that refuses any symlink and anything outside the root; where
        // the kernel lacks it (before 5.6, or a seccomp filter), a walk of openat calls.
        let joined = real.join(&b'/');
        match rustix::fs::openat2(&self.fd, joined.as_slice(), flags, Mode::empty(), strict_resolve()) {
            Err(Errno::NOSYS) | Err(Errno::PERM) => {}
            Err(Errno::XDEV) => return Err(Errno::LOOP),
            other => return other,
        }
        let mut cur = self.dup_dir()?;
        for c in real {
            cur = rustix::fs::openat(&cur, c.as_slice(), flags, Mode::empty())?;
        }
        Ok(cur)
    }
}

/// The content of the regular file `path` inside the directory `dir`, resolved as if
/// `dir` were `/` (for the CLI: a Dockerfile or `.dockerignore` in a context that may
/// hold symlinks to the host). `None` when there is none; more than `max` bytes is an
/// error.
pub fn read_file_in(dir: &Path, path: &str, max: u64) -> io::Result<Option<Vec<u8>>> {
    Root::open(dir)?.read_file(path, max)
}

/// The host path of the directory `path` inside `dir`, resolved as if `dir` were `/`
/// (a Git context's subdirectory); `None` when it is not a directory there.
pub fn dir_in(dir: &Path, path: &str) -> io::Result<Option<PathBuf>> {
    let root = Root::open(dir)?;
    let r = root.resolve_path(path, true).map_err(|e| e.into_io(path))?;
    if !r.is_dir() {
        return Ok(None);
    }
    root.host_path(&r.real).map(Some)
}

/// openat2's rules for a real path: no symlink (nor /proc magic link) anywhere, no
/// escape from the directory (`..` in a real path never happens; refused anyway).
fn strict_resolve() -> rustix::fs::ResolveFlags {
    use rustix::fs::ResolveFlags;
    ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::BENEATH
}

/// `mkdir` `name` in `parent` with `spec` and open it; an entry that appeared meanwhile
/// is fine if it is a directory.
fn make_dir(parent: BorrowedFd<'_>, name: &[u8], spec: DirSpec) -> Result<OwnedFd, Errno> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => {
            rustix::fs::chmodat(parent, name, Mode::from_raw_mode(spec.mode & 0o7777), AtFlags::empty())?;
            if let Some((uid, gid)) = spec.owner {
                rustix::fs::chownat(
                    parent,
                    name,
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
                // chown clears setuid/setgid on some file systems; set the mode again.
                rustix::fs::chmodat(parent, name, Mode::from_raw_mode(spec.mode & 0o7777), AtFlags::empty())?;
            }
        }
        Err(Errno::EXIST) => {}
        Err(e) => return Err(e),
    }
    rustix::fs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Remove whatever is at `name` in `parent` (a whole tree for a directory), never
/// following symlinks. Nothing there is fine.
pub(crate) fn remove_all(parent: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    let st = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
        Ok(st) => st,
    };
    if file_type(&st) != FileType::Directory {
        return rustix::fs::unlinkat(parent, name, AtFlags::empty());
    }
    // Depth-first with an explicit stack: each level holds one descriptor.
    struct Level {
        fd: OwnedFd,
        name: Vec<u8>,
        children: Vec<Vec<u8>>,
    }
    let open = |at: BorrowedFd<'_>, n: &[u8]| -> Result<Level, Errno> {
        let fd = rustix::fs::openat(
            at,
            n,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let children = list_dir(&fd)?;
        Ok(Level { fd, name: n.to_vec(), children })
    };
    let mut stack = vec![open(parent, name)?];
    loop {
        let depth = stack.len();
        let Some(top) = stack.last_mut() else { break };
        match top.children.pop() {
            Some(child) => {
                let st = rustix::fs::statat(&top.fd, child.as_slice(), AtFlags::SYMLINK_NOFOLLOW)?;
                if file_type(&st) == FileType::Directory {
                    if depth >= MAX_DEPTH {
                        return Err(Errno::NAMETOOLONG);
                    }
                    let level = open(top.fd.as_fd(), &child)?;
                    stack.push(level);
                } else {
                    rustix::fs::unlinkat(&top.fd, child.as_slice(), AtFlags::empty())?;
                }
            }
            None => {
                let Some(done) = stack.pop() else { break };
                drop(done.fd);
                let at = stack.last().map(|l| l.fd.as_fd()).unwrap_or(parent);
                rustix::fs::unlinkat(at, done.name.as_slice(), AtFlags::REMOVEDIR)?;
            }
        }
    }
    Ok(())
}

/// The names in a directory opened for reading (without `.` and `..`), sorted
/// bytewise — the order Go's `os.ReadDir` gives, so overwrites happen in the same order
/// as in BuildKit.
pub(crate) fn list_dir(fd: &OwnedFd) -> Result<Vec<Vec<u8>>, Errno> {
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        let c = |s: &str| rel_str(&clean(s.as_bytes()));
        assert_eq!(c("../../etc/passwd"), "etc/passwd");
        assert_eq!(c("/a/./b/../c/"), "a/c");
        assert_eq!(c("."), "");
        assert_eq!(show(&clean(b"x//y")), "/x/y");
        assert_eq!(show(&[]), "/");
    }

    /// The rule this module exists for: outside it, no executor code joins a path onto a
    /// directory that holds an image's, a step's or a context's file system (those
    /// paths may be symlinks planted by a Dockerfile), except in the files listed here
    /// with the reason it is safe. A new `merged.join(user_path)` fails this test.
    #[test]
    fn no_host_joins_outside_the_root_module() {
        const EXEMPT: &[(&str, &str)] = &[(
            "copied_root.rs",
            "walks a finished step's copy with lstat: every path joined is one the walk found, each parent a real \
             directory, and nothing runs in the copy any more",
        )];
        // Names that hold such a file system: a step's merged root and upper dir, COPY's
        // roots, a context directory.
        let re = |line: &str| -> bool {
            let l = line.trim_start();
            if l.starts_with("//") {
                return false;
            }
            [
                "merged.join(",
                "merged().join(",
                "upper.join(",
                "upper().join(",
                "src_root.join(",
                "dest_root.join(",
                "rootfs.join(",
                "ctx.dir.join(",
                "c.dir.join(",
                "context_dir.join(",
                "self.copy.join(",
            ]
            .iter()
            .any(|p| l.contains(p))
                // A bare `root` (not `self.root`, `store_root`: the store's own directories).
                || l.match_indices("root.join(").any(|(i, _)| {
                    i == 0 || !matches!(l.as_bytes()[i - 1], b'.' | b'_' | b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9')
                })
        };
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut bad = Vec::new();
        let mut files = 0;
        let mut stack = vec![src.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                if !name.ends_with(".rs") || name == "root.rs" || EXEMPT.iter().any(|(f, _)| *f == name) {
                    continue;
                }
                files += 1;
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, line) in text.lines().enumerate() {
                    // Unit tests build their own trees.
                    if line.starts_with("#[cfg(test)]") {
                        break;
                    }
                    if re(line) {
                        bad.push(format!("{}:{}: {}", p.strip_prefix(&src).unwrap().display(), i + 1, line.trim()));
                    }
                }
            }
        }
        assert!(files > 10, "the executor's sources were not found under {}", src.display());
        assert!(
            bad.is_empty(),
            "paths joined onto a root outside crate::root (resolve them with Root):\n{}",
            bad.join("\n")
        );
    }
}
