//! COPY and ADD: the file operation that puts files from a source root (the build
//! context, or another stage's or image's file system) into the destination root (the
//! mounted file system of the stage being built), with BuildKit's semantics.
//!
//! This module owns [`copy`] (one [`CopyOp`]), [`resolve_chown`] and [`parse_chmod`].
//! It reads and writes only through descriptors of the two roots: no path is ever
//! joined onto a host path, and nothing outside either root is read or written, even
//! through symlinks: every path is resolved inside its root, one component at a time,
//! with symlinks followed as if the root were `/`.
//!
//! # Semantics (BuildKit `solver/llbsolver/file/backend.go` + fsutil `copy/copy.go`)
//!
//! **Sources** are relative to the source root: a leading `/` is ignored and `..`
//! stops at the root. A source is resolved inside the root with symlinks followed
//! (the last component too when [`CopyOp::follow_symlinks`], as the Dockerfile frontend
//! always asks). A source with wildcards (`*`, `?`, `[...]`, Go `filepath.Match` per
//! segment) expands to the matching entries in name order; a wildcard matching nothing
//! is fine with [`CopyOp::allow_empty_wildcard`] (BuildKit's Dockerfile frontend sets
//! it) and otherwise an error. A missing literal source is an error naming it
//! (`"/missing.txt": not found`). Every source is resolved before anything is written.
//!
//! **Destination** ([`CopyOp::dest`], absolute) is resolved in the destination root
//! following symlinks (like BuildKit's `fs.RootPath`: a link at the destination path is
//! written *through*, but always inside the root). Then, per source:
//!
//! - a directory's *contents* go into the destination, which is created when missing
//!   (mode 0755, or the octal `--chmod`; owner: `--chown` or root) and otherwise keeps
//!   its mode and owner (only its times are set from the source directory);
//! - a file goes *into* the destination when it ends with `/` ([`CopyOp::dest_is_dir`])
//!   or is an existing directory, and otherwise *is* the destination path;
//! - with several sources (after expansion) the destination must end with `/` or be
//!   an existing directory, else the classic error `When using COPY with more than one
//!   source file, the destination must be a directory and end with a /` — BuildKit
//!   itself would let the last source silently win;
//! - missing parents of the destination are created like the destination directory.
//!
//! **Entries** are copied with `cp -a` semantics: regular files (streamed with
//! `copy_file_range`), directories (merged into existing ones, whose mode and owner
//! are then overwritten), symlinks as symlinks, devices, FIFOs and sockets; hard links
//! among the files of one source argument stay linked; mode bits (setuid/setgid/sticky
//! too), access and modification times and extended attributes (e.g.
//! `security.capability`) are kept. Owners: `--chown` for every entry when given;
//! otherwise root (0:0) for files from the build context and the source's numeric owner
//! for files from a stage or image. `--chmod` applies to every copied file and
//! directory (octal sets the bits, symbolic modifies them; see [`crate::chmod`]).
//! An existing non-directory is replaced (a symlink is replaced, not written through);
//! a directory in the way of a file, or a file in the way of a directory, is an error.
//!
//! **Exclusion**: [`CopyRequest::exclude`] is asked about every source entry by its
//! real path relative to the source root (`dir/sub/file`); an excluded entry is treated
//! as if it did not exist (the `.dockerignore` model: an excluded literal source is
//! "not found", an excluded directory is skipped with everything below it).
//! BuildKit's `--exclude` patterns are matched against paths relative to *each copied
//! source* instead (`ADD --exclude=*.mp3 dir3/ /3/`); give those to
//! [`copy_with_source_excludes`].
//!
//! **ADD** ([`CopyOp::unpack_archives`]): a source that is a regular file holding a tar
//! archive — plain, gzip, bzip2, xz or zstd, judged by content — is extracted into the
//! destination (always a directory) instead of copied, with the destination
//! directory as the archive's `/` (as moby's `chrootarchive` does): the archive's
//! owners (unless `--chown`), modes and times are kept, `--chmod` does not apply, and
//! nothing is written outside the destination directory.
//!
//! **COPY --parents**: a source `a/b/c.txt` lands at `<dest>/a/b/c.txt`; with a `/./`
//! in the source (`./a/./b/c`) only the part after it is kept (`<dest>/b/c`). The part
//! after the pivot is a pattern where `**` matches any number of directories. Parent
//! directories are created with the metadata of their source directories.
//!
//! ```no_run
//! use strata_executor::copy::{copy, CopyRequest};
//! use strata_solver::graph::CopyOp;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let op = CopyOp {
//!     sources: vec!["src/".into(), "Cargo.toml".into()],
//!     dest: "/app/".into(),
//!     dest_is_dir: true,
//!     chown: None,
//!     chmod: None,
//!     exclude: vec![],
//!     unpack_archives: false,
//!     parents: false,
//!     follow_symlinks: true,
//!     create_dest_path: true,
//!     allow_empty_wildcard: true,
//! };
//! let stats = copy(&CopyRequest {
//!     src_root: "/home/me/project".as_ref(),
//!     dest_root: "/var/lib/strata/work/42/merged".as_ref(),
//!     op: &op,
//!     owner: None,
//!     exclude: &|path, _is_dir| path == "target" || path.starts_with("target/"),
//!     source_is_context: true,
//!     dest_upper: None,
//!     earlier: None,
//!     record: None,
//! })?;
//! println!("{} files, {} bytes", stats.files, stats.bytes);
//! # Ok(()) }
//! ```

mod archive;
mod glob;
mod owner;
pub mod reuse;

mod tree;

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use strata_solver::graph::CopyOp;

use crate::chmod::{Chmod, ChmodError};
use crate::root::{clean, file_type, list_dir, rel_str, show, Comps, DirSpec, ResolveError, Resolved, Root, MAX_DEPTH};
use glob::{contains_wildcards, split_wildcards, PathPattern, SegmentPattern};
use tree::{times_of, Copier, Paths, Place};

pub use owner::resolve_chown;

/// One COPY/ADD to perform.
pub struct CopyRequest<'a> {
    /// Directory the sources are read from (build context, or a mounted stage/image).
    pub src_root: &'a Path,
    /// The destination root file system (written in place).
    pub dest_root: &'a Path,
    pub op: &'a CopyOp,
    /// `--chown`, already resolved (see [`resolve_chown`]). `None` with `op.chown` set
    /// resolves it here in `dest_root`; `None` without keeps the source owners (root for
    /// the build context).
    pub owner: Option<(u32, u32)>,
    /// Whether a source entry is excluded, by its real path relative to `src_root`
    /// (`"dir/sub/file"`) and whether it is a directory. Excluded entries do not exist
    /// for the copy; for a directory, answer `true` only if nothing below it may be
    /// re-included.
    pub exclude: &'a dyn Fn(&str, bool) -> bool,
    /// The source is the build context (owners become 0:0 without `--chown`).
    pub source_is_context: bool,
    /// When `dest_root` is an overlay mount: its upper directory, where the contents of
    /// directories the copy creates are written directly.
    pub dest_upper: Option<&'a Path>,
    /// The earlier result of the same COPY ([`reuse`]): unchanged files are linked from it.
    pub earlier: Option<&'a reuse::EarlierCopy>,
    /// Filled with what this copy writes into the upper directory, for the next one.
    pub record: Option<&'a reuse::CopyRecord>,
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Source entries copied or extracted after wildcard expansion.
    pub sources: u64,
    /// Regular files written (hard links not counted).
    pub files: u64,
    /// Of `files`, those linked from an earlier result of the same COPY ([`reuse`]).
    pub reused: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Devices, FIFOs and sockets.
    pub special: u64,
    /// Archives extracted (ADD).
    pub archives: u64,
    /// Entries read from extracted archives.
    pub archive_entries: u64,
    /// Extended attributes that could not be copied (logged).
    pub xattrs_skipped: u64,
}

/// Which root a path is in, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

/// Why a copy failed. Source paths are shown relative to the source root and
/// destination paths as paths of the image, both starting with `/`.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{path:?}: not found")]
    NotFound { path: String },
    #[error("no source files were specified: {pattern:?} matches nothing")]
    NoMatch { pattern: String },
    #[error("When using COPY with more than one source file, the destination must be a directory and end with a / ({count} sources for {dest:?})")]
    MultipleSourcesNeedDirectory { dest: String, count: usize },
    #[error("cannot copy to non-directory: {path}")]
    NotADirectoryTarget { path: String },
    #[error("cannot replace directory {path} with a file")]
    DirectoryInTheWay { path: String },
    #[error("{side} path {path}: {component} is not a directory")]
    NotADirectory { side: Side, path: String, component: String },
    #[error("{side} path {path}: too many levels of symbolic links")]
    TooManySymlinks { side: Side, path: String },
    #[error("{side} path {path} is too deep")]
    PathTooDeep { side: Side, path: String },
    #[error("failed to stat {path}: the destination's parent directory does not exist")]
    DestParentMissing { path: String },
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: String, source: io::Error },
    #[error(transparent)]
    Chmod(#[from] ChmodError),
    #[error("--chown: unknown user {user:?}: {reason}")]
    UnknownUser { user: String, reason: String },
    #[error("--chown: unknown group {group:?}: {reason}")]
    UnknownGroup { group: String, reason: String },
    #[error("--chown: {path} of the destination {reason}")]
    UserDatabase { path: String, reason: String },
    #[error("ADD {archive}: entry {entry:?}: {reason}")]
    ArchiveEntry { archive: String, entry: String, reason: String },
    #[error("ADD {archive}: reading the archive: {source}")]
    ArchiveRead { archive: String, source: io::Error },
}

/// Parse a `--chmod` value (octal like `0755`/`755`, or symbolic like `u+x,g-w`).
pub fn parse_chmod(spec: &str) -> Result<Chmod, CopyError> {
    Ok(Chmod::parse(spec)?)
}

/// Perform `req.op`. See the module documentation for the rules.
pub fn copy(req: &CopyRequest<'_>) -> Result<CopyStats, CopyError> {
    copy_with_source_excludes(req, &|_, _| false)
}

/// [`copy`], also skipping entries for which `source_exclude` answers `true`, asked
/// with paths relative to each copied source (`COPY --exclude=*.md docs /d` asks about
/// `"a.md"`, not `"docs/a.md"`), as BuildKit matches `--exclude` patterns. The source
/// named in the instruction itself is never asked about.
pub fn copy_with_source_excludes(
    req: &CopyRequest<'_>,
    source_exclude: &dyn Fn(&str, bool) -> bool,
) -> Result<CopyStats, CopyError> {
    let op = req.op;
    let src = Root::open(req.src_root).map_err(|source| CopyError::Io {
        op: "opening the source root",
        path: req.src_root.display().to_string(),
        source,
    })?;
    let dst = Root::open(req.dest_root).map_err(|source| CopyError::Io {
        op: "opening the destination root",
        path: req.dest_root.display().to_string(),
        source,
    })?;
    let upper = match req.dest_upper {
        Some(path) => Some(Root::open(path).map_err(|source| CopyError::Io {
            op: "opening the destination's upper directory",
            path: path.display().to_string(),
            source,
        })?),
        None => None,
    };
    let owner = match (req.owner, &op.chown) {
        (Some(o), _) => Some(o),
        (None, Some(c)) => Some(owner::resolve_chown_in(&dst, c)?),
        (None, None) => None,
    };
    let chmod = op.chmod.as_deref().map(Chmod::parse).transpose()?;
    let dir_spec = DirSpec { mode: chmod.as_ref().and_then(Chmod::octal).map(|m| m & 0o777).unwrap_or(0o755), owner };
    let hidden = |real: &[Vec<u8>], is_dir: bool| !real.is_empty() && (req.exclude)(&rel_str(real), is_dir);

    let planner = Planner {
        src: &src,
        follow_symlinks: op.follow_symlinks,
        allow_empty_wildcard: op.allow_empty_wildcard,
        hidden: &hidden,
        source_exclude,
    };
    let mut plans: Vec<(usize, Plan)> = Vec::new();
    for (i, s) in op.sources.iter().enumerate() {
        if op.parents {
            for p in planner.parents(s)? {
                plans.push((i, p));
            }
        } else {
            for item in planner.expand(s)? {
                plans.push((i, Plan::Item(item)));
            }
        }
    }

    let dest_comps = clean(op.dest.as_bytes());
    let dest_is_dir =
        op.dest_is_dir || op.dest.ends_with('/') || op.dest.ends_with("/.") || op.dest == "." || dest_comps.is_empty();
    if !op.parents && plans.len() > 1 && !dest_is_dir {
        let existing_dir = dst.resolve(&dest_comps, true, None).map(|r| r.is_dir()).unwrap_or(false);
        if !existing_dir {
            return Err(CopyError::MultipleSourcesNeedDirectory { dest: op.dest.clone(), count: plans.len() });
        }
    }

    let mut exec = Executor {
        copier: Copier {
            src: &src,
            dst: &dst,
            owner,
            context_owner: req.source_is_context,
            chmod: chmod.as_ref(),
            hidden: &hidden,
            source_exclude,
            links: HashMap::new(),
            stats: CopyStats::default(),
            pool: None,
            upper: upper.as_ref(),
            earlier: req.earlier,
            record: req.record,
        },
        op,
        dest_comps,
        dest_is_dir,
        dir_spec,
    };
    let mut group = usize::MAX;
    for (i, plan) in plans {
        if i != group {
            // Hard links are kept within one source argument, as BuildKit copies each
            // source argument with its own copier.
            exec.copier.links.clear();
            group = i;
        }
        match plan {
            Plan::Item(item) => exec.item(&item)?,
            Plan::Parents { pivot, included } => exec.parents(&pivot, &included)?,
        }
    }
    let stats = exec.copier.stats;
    tracing::debug!(
        dest = %op.dest,
        sources = stats.sources,
        files = stats.files,
        bytes = stats.bytes,
        dirs = stats.dirs,
        archives = stats.archives,
        "copy done"
    );
    Ok(stats)
}

/// One resolved source entry.
#[derive(Debug)]
struct Item {
    /// As named (cleaned), for messages: `/dir/a.txt`.
    shown: String,
    /// The base name as named (the name a file gets inside a destination directory).
    base: Vec<u8>,
    /// Real path in the source root.
    real: Comps,
    stat: Stat,
}

impl Item {
    fn is_dir(&self) -> bool {
        file_type(&self.stat) == FileType::Directory
    }
}

enum Plan {
    Item(Item),
    /// `--parents`: entries below `pivot` (paths relative to it) to copy with their
    /// parents.
    Parents {
        pivot: Item,
        included: Vec<Comps>,
    },
}

fn resolve_err(side: Side, e: ResolveError) -> CopyError {
    match e {
        ResolveError::NotADirectory(p) => CopyError::NotADirectory {
            side,
            path: show(&p),
            component: p.last().map(|c| String::from_utf8_lossy(c).into_owned()).unwrap_or_default(),
        },
        ResolveError::TooManySymlinks => CopyError::TooManySymlinks { side, path: String::new() },
        ResolveError::TooDeep => CopyError::PathTooDeep { side, path: String::new() },
        ResolveError::Io(p, e) => CopyError::Io {
            op: match side {
                Side::Source => "resolving the source",
                Side::Destination => "resolving the destination",
            },
            path: show(&p),
            source: e.into(),
        },
    }
}

/// Attach the path being resolved to errors that lack one.
fn with_path(e: CopyError, path: &str) -> CopyError {
    match e {
        CopyError::TooManySymlinks { side, path: p } if p.is_empty() => {
            CopyError::TooManySymlinks { side, path: path.to_string() }
        }
        CopyError::PathTooDeep { side, path: p } if p.is_empty() => {
            CopyError::PathTooDeep { side, path: path.to_string() }
        }
        e => e,
    }
}

/// The real paths in `src` (a source root) that the COPY source `source` names, as
/// [`copy`] finds them (symlinks followed inside the root, wildcards expanded, entries
/// `hidden` answers for left out): what the COPY's cache key must cover. `Err` holds
/// the path of a source that is missing. With `parents`, the whole directory above
/// the first wildcard (or the `/./` pivot) is named: more than is copied, never less.
pub(crate) fn source_paths(
    src: &Root,
    source: &str,
    parents: bool,
    hidden: &dyn Fn(&[Vec<u8>], bool) -> bool,
) -> Vec<Result<Comps, Comps>> {
    let planner =
        Planner { src, follow_symlinks: true, allow_empty_wildcard: true, hidden, source_exclude: &|_, _| false };
    let source = if parents {
        let comps = clean(source.replacen("/./", "/", 1).as_bytes());
        let (lit, _) = split_wildcards(&comps);
        rel_str(lit)
    } else {
        source.to_string()
    };
    match planner.expand(&source) {
        Ok(items) => items.into_iter().map(|i| Ok(i.real)).collect(),
        Err(CopyError::NotFound { path }) => vec![Err(clean(path.as_bytes()))],
        Err(_) => vec![Err(clean(source.as_bytes()))],
    }
}

/// Resolves sources before anything is written.
struct Planner<'a> {
    src: &'a Root,
    follow_symlinks: bool,
    allow_empty_wildcard: bool,
    hidden: &'a dyn Fn(&[Vec<u8>], bool) -> bool,
    source_exclude: &'a dyn Fn(&str, bool) -> bool,
}

impl Planner<'_> {
    fn resolve(&self, comps: &[Vec<u8>], follow_last: bool) -> Result<Resolved, CopyError> {
        self.src
            .resolve(comps, follow_last, Some(self.hidden))
            .map_err(|e| with_path(resolve_err(Side::Source, e), &show(comps)))
    }

    /// A source argument → its entries (one for a literal path, the matches of a
    /// wildcard).
    fn expand(&self, source: &str) -> Result<Vec<Item>, CopyError> {
        let comps = clean(source.as_bytes());
        let (lit, wild) = split_wildcards(&comps);
        if wild.is_empty() {
            let r = self.resolve(&comps, self.follow_symlinks)?;
            let Some(stat) = r.stat else {
                return Err(CopyError::NotFound { path: show(&comps) });
            };
            return Ok(vec![Item {
                shown: show(&comps),
                base: comps.last().cloned().unwrap_or_default(),
                real: r.real,
                stat,
            }]);
        }
        let base = self.resolve(lit, self.follow_symlinks)?;
        if base.stat.is_none() {
            return Err(CopyError::NotFound { path: show(lit) });
        }
        let mut matches = Vec::new();
        if base.is_dir() {
            let pats: Vec<SegmentPattern> = wild.iter().map(|w| SegmentPattern::new(w)).collect();
            let mut rel = Vec::new();
            self.glob_walk(&base.real, &pats, &mut rel, &mut matches)?;
        }
        if matches.is_empty() {
            if self.allow_empty_wildcard {
                tracing::debug!(source, "wildcard matches nothing");
                return Ok(Vec::new());
            }
            return Err(CopyError::NoMatch { pattern: source.to_string() });
        }
        let mut items = Vec::with_capacity(matches.len());
        for rel in matches {
            let mut real = base.real.clone();
            real.extend(rel.iter().cloned());
            let mut named: Comps = lit.to_vec();
            named.extend(rel.iter().cloned());
            let r = self.resolve(&real, self.follow_symlinks)?;
            let Some(stat) = r.stat else {
                return Err(CopyError::NotFound { path: show(&named) });
            };
            items.push(Item { shown: show(&named), base: rel.last().cloned().unwrap_or_default(), real: r.real, stat });
        }
        Ok(items)
    }

    /// Entries below the real directory `dir` whose path relative to it (`rel`)
    /// matches `pats` segment by segment, in name order; matching directories are not
    /// descended.
    fn glob_walk(
        &self,
        dir: &[Vec<u8>],
        pats: &[SegmentPattern],
        rel: &mut Comps,
        out: &mut Vec<Comps>,
    ) -> Result<(), CopyError> {
        let depth = rel.len();
        let mut here: Comps = dir.to_vec();
        here.extend(rel.iter().cloned());
        let fd = self.src.open_real(&here, OFlags::RDONLY | OFlags::DIRECTORY).map_err(|e| CopyError::Io {
            op: "reading the source directory",
            path: show(&here),
            source: e.into(),
        })?;
        let names = list_dir(&fd).map_err(|e| CopyError::Io {
            op: "reading the source directory",
            path: show(&here),
            source: e.into(),
        })?;
        for name in names {
            if !pats[depth].matches(&name) {
                continue;
            }
            let st = match rustix::fs::statat(&fd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => {
                    return Err(CopyError::Io { op: "inspecting the source", path: show(&here), source: e.into() })
                }
            };
            let is_dir = file_type(&st) == FileType::Directory;
            here.push(name.clone());
            let hidden = (self.hidden)(&here, is_dir);
            here.pop();
            if hidden {
                continue;
            }
            rel.push(name);
            if depth + 1 == pats.len() {
                out.push(rel.clone());
            } else if is_dir {
                self.glob_walk(dir, pats, rel, out)?;
            }
            rel.pop();
        }
        Ok(())
    }

    /// A `--parents` source → its pivot directories and what to copy below them.
    fn parents(&self, source: &str) -> Result<Vec<Plan>, CopyError> {
        let (pivot, pattern) = match source.find("/./") {
            Some(i) => (&source[..i], &source[i + 3..]),
            None => ("/", source),
        };
        let pattern_comps = clean(pattern.as_bytes());
        let required = !contains_wildcards(pivot.as_bytes()) && !contains_wildcards(pattern.as_bytes());
        let matcher = PathPattern::new(&pattern_comps);
        let mut plans = Vec::new();
        let mut found = false;
        let mut any_pivot = false;
        for pivot in self.expand(pivot)? {
            any_pivot = true;
            if !pivot.is_dir() {
                found = true;
                plans.push(Plan::Item(pivot));
                continue;
            }
            let mut included = Vec::new();
            self.collect(&pivot.real, &matcher, &mut Vec::new(), &mut included)?;
            if pattern_comps.is_empty() || included.iter().any(|p| p.starts_with(&pattern_comps)) {
                found = true;
            }
            plans.push(Plan::Parents { pivot, included });
        }
        if required && any_pivot && !found {
            let mut full = clean(pivot.as_bytes());
            full.extend(pattern_comps);
            return Err(CopyError::NotFound { path: show(&full) });
        }
        if !required
            && !self.allow_empty_wildcard
            && plans.iter().all(|p| matches!(p, Plan::Parents { included, .. } if included.is_empty()))
        {
            return Err(CopyError::NoMatch { pattern: source.to_string() });
        }
        Ok(plans)
    }

    /// Paths below `pivot` that `matcher` includes, in name order; directories that
    /// cannot lead to a match are not descended.
    fn collect(
        &self,
        pivot: &[Vec<u8>],
        matcher: &PathPattern,
        rel: &mut Comps,
        out: &mut Vec<Comps>,
    ) -> Result<(), CopyError> {
        if rel.len() >= MAX_DEPTH {
            return Err(CopyError::PathTooDeep { side: Side::Source, path: show(pivot) });
        }
        let mut here: Comps = pivot.to_vec();
        here.extend(rel.iter().cloned());
        let fd = self.src.open_real(&here, OFlags::RDONLY | OFlags::DIRECTORY).map_err(|e| CopyError::Io {
            op: "reading the source directory",
            path: show(&here),
            source: e.into(),
        })?;
        let names = list_dir(&fd).map_err(|e| CopyError::Io {
            op: "reading the source directory",
            path: show(&here),
            source: e.into(),
        })?;
        for name in names {
            let st = match rustix::fs::statat(&fd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => {
                    return Err(CopyError::Io { op: "inspecting the source", path: show(&here), source: e.into() })
                }
            };
            let is_dir = file_type(&st) == FileType::Directory;
            here.push(name.clone());
            rel.push(name);
            let skip = (self.hidden)(&here, is_dir) || (self.source_exclude)(&rel_str(rel), is_dir);
            if !skip {
                if matcher.matches(rel) {
                    out.push(rel.clone());
                } else if is_dir && matcher.may_match_below(rel) {
                    self.collect(pivot, matcher, rel, out)?;
                }
            }
            rel.pop();
            here.pop();
        }
        Ok(())
    }
}

/// Writes the planned entries.
struct Executor<'a> {
    copier: Copier<'a>,
    op: &'a CopyOp,
    dest_comps: Comps,
    dest_is_dir: bool,
    dir_spec: DirSpec,
}

impl Executor<'_> {
    fn dst_resolve_err(&self, e: ResolveError) -> CopyError {
        with_path(resolve_err(Side::Destination, e), &show(&self.dest_comps))
    }

    fn mkdir_all(&self, comps: &[Vec<u8>]) -> Result<(Comps, std::os::fd::OwnedFd), CopyError> {
        self.copier
            .dst
            .mkdir_all(comps, self.dir_spec)
            .map_err(|e| with_path(resolve_err(Side::Destination, e), &show(comps)))
    }

    /// Create the destination (when it ends with `/`) or its parent, as fsutil's
    /// `Copy` does before anything else.
    fn ensure_dest_path(&self) -> Result<(), CopyError> {
        let parent = &self.dest_comps[..self.dest_comps.len().saturating_sub(1)];
        if !self.op.create_dest_path {
            let r = self.copier.dst.resolve(parent, true, None).map_err(|e| self.dst_resolve_err(e))?;
            if r.stat.is_none() {
                return Err(CopyError::DestParentMissing { path: self.op.dest.clone() });
            }
        }
        let ensure = if self.dest_is_dir { &self.dest_comps[..] } else { parent };
        self.mkdir_all(ensure)?;
        Ok(())
    }

    fn item(&mut self, item: &Item) -> Result<(), CopyError> {
        self.copier.stats.sources += 1;
        if self.op.unpack_archives && file_type(&item.stat) == FileType::RegularFile && self.try_extract(item)? {
            return Ok(());
        }
        self.ensure_dest_path()?;
        let dest = self.copier.dst.resolve(&self.dest_comps, true, None).map_err(|e| self.dst_resolve_err(e))?;
        let dest_exists = dest.stat.is_some();
        let mut target = dest.real.clone();
        if !item.is_dir() && dest.is_dir() {
            target.push(item.base.clone());
        }
        let mut p = Paths { src_real: item.real.clone(), rel_start: item.real.len(), dst_real: Vec::new() };

        if item.is_dir() {
            let create = if dest_exists { &target[..target.len().saturating_sub(1)] } else { &target[..] };
            self.mkdir_all(create)?;
            let ddir = match self.copier.dst.open_dir_nofollow(&target) {
                Ok(fd) => fd,
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                    return Err(CopyError::NotADirectoryTarget { path: show(&target) })
                }
                Err(e) => {
                    return Err(CopyError::Io {
                        op: "opening the destination directory",
                        path: show(&target),
                        source: e.into(),
                    })
                }
            };
            let sdir = self.copier.src.open_dir_nofollow(&item.real).map_err(|e| CopyError::Io {
                op: "opening the source directory",
                path: item.shown.clone(),
                source: e.into(),
            })?;
            p.dst_real = target.clone();
            self.copier.copy_tree(sdir, ddir, &mut p, Place::EXISTING)?;
            // The top directory existed (or was just created): only its times change.
            self.set_dir_times(&target, &item.stat)?;
            return Ok(());
        }

        let Some((name, parent)) = target.split_last() else {
            return Err(CopyError::DirectoryInTheWay { path: "/".into() });
        };
        let (parent_real, pfd) = self.mkdir_all(parent)?;
        let Some((sname, sparent)) = item.real.split_last() else {
            return Err(CopyError::NotFound { path: item.shown.clone() });
        };
        let sfd = self.copier.src.open_dir_nofollow(sparent).map_err(|e| CopyError::Io {
            op: "opening the source directory of",
            path: item.shown.clone(),
            source: e.into(),
        })?;
        p.dst_real = parent_real;
        p.dst_real.push(name.clone());
        self.copier.copy_node(sfd.as_fd(), sname, &item.stat, pfd.as_fd(), name, &mut p, 0, Place::EXISTING)
    }

    /// ADD: extract `item` when it is an archive; `false` when it is not one.
    fn try_extract(&mut self, item: &Item) -> Result<bool, CopyError> {
        let fd = self.copier.src.open_real(&item.real, OFlags::RDONLY).map_err(|e| CopyError::Io {
            op: "opening",
            path: item.shown.clone(),
            source: e.into(),
        })?;
        let mut file = std::fs::File::from(fd);
        let is_archive = archive::is_archive(&mut file).map_err(|source| CopyError::Io {
            op: "reading",
            path: item.shown.clone(),
            source,
        })?;
        if !is_archive {
            return Ok(false);
        }
        // BuildKit creates the destination with 0755 and the --chown owner, whatever --chmod says.
        let spec = DirSpec { mode: 0o755, owner: self.dir_spec.owner };
        let (real, dfd) = self
            .copier
            .dst
            .mkdir_all(&self.dest_comps, spec)
            .map_err(|e| with_path(resolve_err(Side::Destination, e), &show(&self.dest_comps)))?;
        tracing::debug!(archive = %item.shown, dest = %show(&real), "extracting");
        archive::extract(file, dfd, self.copier.owner, &item.shown, &show(&real), &mut self.copier.stats)?;
        Ok(true)
    }

    /// `--parents`: copy `included` (paths relative to `pivot`) with their parents.
    fn parents(&mut self, pivot: &Item, included: &[Comps]) -> Result<(), CopyError> {
        self.copier.stats.sources += 1;
        self.ensure_dest_path()?;
        let dest = self.copier.dst.resolve(&self.dest_comps, true, None).map_err(|e| self.dst_resolve_err(e))?;
        let target = dest.real.clone();
        let create = if dest.stat.is_some() { &target[..target.len().saturating_sub(1)] } else { &target[..] };
        self.mkdir_all(create)?;
        match self.copier.dst.open_dir_nofollow(&target) {
            Ok(_) => {}
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                return Err(CopyError::NotADirectoryTarget { path: show(&target) })
            }
            Err(e) => {
                return Err(CopyError::Io {
                    op: "opening the destination directory",
                    path: show(&target),
                    source: e.into(),
                })
            }
        }

        let mut ensured: HashSet<Comps> = HashSet::new();
        for rel in included {
            let Some((name, rparent)) = rel.split_last() else {
                continue;
            };
            for i in 1..rel.len() {
                let prefix = &rel[..i];
                if ensured.insert(prefix.to_vec()) {
                    self.ensure_parent(pivot, prefix, &target)?;
                }
            }
            let mut sdir_real = pivot.real.clone();
            sdir_real.extend(rparent.iter().cloned());
            let mut ddir_real = target.clone();
            ddir_real.extend(rparent.iter().cloned());
            let sfd = self.copier.src.open_dir_nofollow(&sdir_real).map_err(|e| CopyError::Io {
                op: "opening the source directory",
                path: show(&sdir_real),
                source: e.into(),
            })?;
            let dfd = self.copier.dst.open_dir_nofollow(&ddir_real).map_err(|e| CopyError::Io {
                op: "opening the destination directory",
                path: show(&ddir_real),
                source: e.into(),
            })?;
            let st = match rustix::fs::statat(&sfd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => {
                    return Err(CopyError::Io { op: "inspecting the source", path: show(&sdir_real), source: e.into() })
                }
            };
            let mut p = Paths { src_real: sdir_real, rel_start: pivot.real.len(), dst_real: ddir_real };
            p.src_real.push(name.clone());
            p.dst_real.push(name.clone());
            self.copier.copy_node(sfd.as_fd(), name, &st, dfd.as_fd(), name, &mut p, rel.len(), Place::EXISTING)?;
        }
        self.set_dir_times(&target, &pivot.stat)
    }

    /// A parent directory of a `--parents` entry: created with its source directory's
    /// metadata, or (existing) given its source directory's mode, as fsutil does.
    fn ensure_parent(&mut self, pivot: &Item, prefix: &[Vec<u8>], target: &[Vec<u8>]) -> Result<(), CopyError> {
        let Some((name, pparent)) = prefix.split_last() else {
            return Ok(());
        };
        let mut sdir_real = pivot.real.clone();
        sdir_real.extend(pparent.iter().cloned());
        let mut ddir_real = target.to_vec();
        ddir_real.extend(pparent.iter().cloned());
        let sfd = self.copier.src.open_dir_nofollow(&sdir_real).map_err(|e| CopyError::Io {
            op: "opening the source directory",
            path: show(&sdir_real),
            source: e.into(),
        })?;
        let dfd = self.copier.dst.open_dir_nofollow(&ddir_real).map_err(|e| CopyError::Io {
            op: "opening the destination directory",
            path: show(&ddir_real),
            source: e.into(),
        })?;
        let mut p = Paths { src_real: sdir_real, rel_start: pivot.real.len(), dst_real: ddir_real };
        p.src_real.push(name.clone());
        p.dst_real.push(name.clone());
        let st = rustix::fs::statat(&sfd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| CopyError::Io {
            op: "inspecting the source",
            path: show(&p.src_real),
            source: e.into(),
        })?;
        match rustix::fs::statat(&dfd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => {
                rustix::fs::mkdirat(&dfd, name.as_slice(), Mode::from_raw_mode(0o700)).map_err(|e| CopyError::Io {
                    op: "creating the directory",
                    path: show(&p.dst_real),
                    source: e.into(),
                })?;
                self.copier.apply_meta(sfd.as_fd(), name, &st, dfd.as_fd(), name, &p, Place::EXISTING)?;
                self.copier.stats.dirs += 1;
            }
            Ok(d) if file_type(&d) == FileType::Directory => {
                rustix::fs::chmodat(&dfd, name.as_slice(), Mode::from_raw_mode(st.st_mode & 0o7777), AtFlags::empty())
                    .map_err(|e| CopyError::Io {
                        op: "changing the mode of",
                        path: show(&p.dst_real),
                        source: e.into(),
                    })?;
            }
            Ok(_) => return Err(CopyError::NotADirectoryTarget { path: show(&p.dst_real) }),
            Err(e) => return Err(CopyError::Io { op: "inspecting", path: show(&p.dst_real), source: e.into() }),
        }
        Ok(())
    }

    /// Set the times of the destination directory `real` from `st`.
    fn set_dir_times(&self, real: &[Vec<u8>], st: &Stat) -> Result<(), CopyError> {
        let err = |e: Errno| CopyError::Io { op: "setting the times of", path: show(real), source: e.into() };
        match real.split_last() {
            Some((name, parent)) => {
                let pfd = self.copier.dst.open_dir_nofollow(parent).map_err(err)?;
                rustix::fs::utimensat(&pfd, name.as_slice(), &times_of(st), AtFlags::SYMLINK_NOFOLLOW).map_err(err)
            }
            None => {
                let fd = self.copier.dst.open_real(&[], OFlags::RDONLY).map_err(err)?;
                rustix::fs::futimens(&fd, &times_of(st)).map_err(err)
            }
        }
    }
}
