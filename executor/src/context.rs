//! Local contexts (the build context and named `--build-context` directories): which
//! files a COPY selects, and the content hash of exactly those files for the cache key.
//!
//! File contents are hashed with blake3 and remembered in a persistent stat cache keyed
//! by (path, size, mtime ns, ctime ns, inode), so an unchanged context costs one
//! `lstat` per selected file. ctime catches rewrites that keep size and mtime.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
#[cfg(test)]
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::root::{clean, Root};

/// Decides whether a context-relative path is excluded (`.dockerignore`, `--exclude`).
pub type ExcludeFn = Arc<dyn Fn(&str, bool) -> bool + Send + Sync>;

/// A local directory the build reads from.
#[derive(Clone)]
pub struct LocalContext {
    pub dir: PathBuf,
    pub ignore: ExcludeFn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatEntry {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    hash: [u8; 32],
}

/// The persistent stat cache of one context directory.
///
/// What earlier builds hashed is read once and then only looked up (no lock on the
/// path every unchanged file takes); what this build hashes is kept apart and merged
/// in when the cache is saved. Stored in a small binary format: 30 000 entries load
/// in a few milliseconds (JSON took 60).
pub struct StatCache {
    path: PathBuf,
    /// Read on a thread of its own from [`StatCache::load`] on (the build goes on
    /// meanwhile); waited for at the first lookup.
    loading: Mutex<Option<std::thread::JoinHandle<HashMap<String, StatEntry>>>>,
    loaded: std::sync::OnceLock<HashMap<String, StatEntry>>,
    fresh: Mutex<HashMap<String, StatEntry>>,
    /// Something was hashed since the last save.
    dirty: std::sync::atomic::AtomicBool,
}

/// The first bytes of a stat cache file; another version is ignored (and rebuilt).
const STAT_CACHE_MAGIC: &[u8] = b"strata-statcache-2\n";

fn decode_stat_cache(bytes: &[u8]) -> Option<HashMap<String, StatEntry>> {
    let mut rest = bytes.strip_prefix(STAT_CACHE_MAGIC)?;
    let mut take = |n: usize| -> Option<&[u8]> {
        if rest.len() < n {
            return None;
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    };
    let count = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let mut map = HashMap::with_capacity(count.min(1 << 24) as usize);
    for _ in 0..count {
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let rel = String::from_utf8(take(len)?.to_vec()).ok()?;
        let entry = StatEntry {
            size: u64::from_le_bytes(take(8)?.try_into().ok()?),
            mtime_ns: i128::from_le_bytes(take(16)?.try_into().ok()?),
            ctime_ns: i128::from_le_bytes(take(16)?.try_into().ok()?),
            ino: u64::from_le_bytes(take(8)?.try_into().ok()?),
            hash: take(32)?.try_into().ok()?,
        };
        map.insert(rel, entry);
    }
    Some(map)
}

fn encode_stat_cache<'a>(entries: impl ExactSizeIterator<Item = (&'a String, &'a StatEntry)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(STAT_CACHE_MAGIC.len() + 8 + entries.len() * 120);
    out.extend_from_slice(STAT_CACHE_MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (rel, e) in entries {
        out.extend_from_slice(&(rel.len() as u32).to_le_bytes());
        out.extend_from_slice(rel.as_bytes());
        out.extend_from_slice(&e.size.to_le_bytes());
        out.extend_from_slice(&e.mtime_ns.to_le_bytes());
        out.extend_from_slice(&e.ctime_ns.to_le_bytes());
        out.extend_from_slice(&e.ino.to_le_bytes());
        out.extend_from_slice(&e.hash);
    }
    out
}

impl StatCache {
    pub fn load(store_root: &Path, context_dir: &Path) -> StatCache {
        let key = blake3::hash(context_dir.to_string_lossy().as_bytes()).to_hex();
        let path = store_root.join("statcache").join(&key[..32]);
        let file = path.clone();
        let read = move || fs::read(&file).ok().and_then(|b| decode_stat_cache(&b)).unwrap_or_default();
        let (loading, loaded) = match std::thread::Builder::new().name("statcache".into()).spawn(read.clone()) {
            Ok(handle) => (Some(handle), std::sync::OnceLock::new()),
            Err(_) => (None, std::sync::OnceLock::from(read())),
        };
        StatCache {
            path,
            loading: Mutex::new(loading),
            loaded,
            fresh: Mutex::new(HashMap::new()),
            dirty: Default::default(),
        }
    }

    /// What earlier builds hashed.
    fn known(&self) -> &HashMap<String, StatEntry> {
        self.loaded.get_or_init(|| {
            let handle = self.loading.lock().unwrap_or_else(|p| p.into_inner()).take();
            handle.and_then(|h| h.join().ok()).unwrap_or_default()
        })
    }

    /// Write what this build hashed (with what was known) back; nothing when nothing
    /// was hashed.
    pub fn save(&self) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        let fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        if !self.dirty.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut all: HashMap<&String, &StatEntry> = self.known().iter().collect();
        all.extend(fresh.iter());
        let bytes = encode_stat_cache(all.into_iter());
        strata_oci::store::write_atomic(&self.path, &bytes)?;
        self.dirty.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// The blake3 of a regular file's content, from the cache when its stat is unchanged.
    fn file_hash(
        &self,
        rel: &str,
        st: &EntryStat,
        open: impl FnOnce() -> io::Result<fs::File>,
    ) -> io::Result<blake3::Hash> {
        let probe =
            StatEntry { size: st.size, mtime_ns: st.mtime_ns, ctime_ns: st.ctime_ns, ino: st.ino, hash: [0; 32] };
        let same = |e: &StatEntry| {
            e.size == probe.size && e.mtime_ns == probe.mtime_ns && e.ctime_ns == probe.ctime_ns && e.ino == probe.ino
        };
        if let Some(e) = self.known().get(rel).filter(|e| same(e)) {
            return Ok(blake3::Hash::from(e.hash));
        }
        if let Some(e) = self.fresh.lock().unwrap_or_else(|p| p.into_inner()).get(rel).filter(|e| same(e)) {
            return Ok(blake3::Hash::from(e.hash));
        }
        let mut f = open()?;
        let mut h = blake3::Hasher::new();
        thread_local! {
            static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 256 * 1024]);
        }
        BUFFER.with(|buf| -> io::Result<()> {
            let mut buf = buf.borrow_mut();
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                h.update(&buf[..n]);
            }
        })?;
        let hash = h.finalize();
        self.fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rel.to_string(), StatEntry { hash: *hash.as_bytes(), ..probe });
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(hash)
    }
}

/// What the walk needs of an entry's `lstat`.
#[derive(Debug, Clone, Copy)]
struct EntryStat {
    /// `st_mode`: type and permission bits.
    mode: u32,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
}

impl EntryStat {
    #[cfg(test)]
    fn of_metadata(md: &fs::Metadata) -> EntryStat {
        EntryStat {
            mode: md.mode(),
            size: md.len(),
            mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
            ctime_ns: md.ctime() as i128 * 1_000_000_000 + md.ctime_nsec() as i128,
            ino: md.ino(),
        }
    }

    #[allow(clippy::unnecessary_cast)] // the stat fields' types differ between targets
    fn of_stat(st: &rustix::fs::Stat) -> EntryStat {
        EntryStat {
            mode: st.st_mode as u32,
            size: st.st_size as u64,
            mtime_ns: st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128,
            ctime_ns: st.st_ctime as i128 * 1_000_000_000 + st.st_ctime_nsec as i128,
            ino: st.st_ino as u64,
        }
    }

    fn kind(&self) -> rustix::fs::FileType {
        rustix::fs::FileType::from_raw_mode(self.mode as _)
    }
}

/// The content hash of what `sources` select from the context (after `.dockerignore`
/// and `exclude`): every path, mode, symlink target, size and file content, in order.
///
/// The walk runs once: the top of each source is read on this thread, the directories
/// two levels down are read on every core (their entries' types come from `readdir`,
/// not a `stat`), and everything that is not a directory is looked at — one `lstat`,
/// and a read only when the stat cache misses — on every core. The bytes fed to the
/// hash do not depend on the number of threads.
///
/// Each source is resolved inside the context as the COPY resolves it
/// ([`crate::copy::source_paths`]: symlinks followed as if the context were `/`,
/// wildcards expanded), so the walk starts from real paths of the context and never
/// reads through a link to the host. `parents`: a `COPY --parents` (whole directories
/// above its wildcards are hashed).
pub fn selection_hash(
    ctx: &LocalContext,
    cache: &StatCache,
    sources: &[String],
    parents: bool,
    exclude: &ExcludeFn,
) -> io::Result<[u8; 32]> {
    selection(ctx, cache, sources, parents, exclude).map(|s| s.hash)
}

/// One entry a COPY selected, as a later build can compare it: enough to name what
/// changed (content or mode only) without storing any content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SelectedFile {
    /// Context-relative path.
    pub path: String,
    /// File type and permission bits (`st_mode`).
    pub mode: u32,
    /// The first 8 bytes of the blake3 of what the key saw besides path and mode (size
    /// and content hash, or a symlink's target); 0 for a directory.
    pub content: u64,
}

/// The files a COPY (or a bind mount) selected: their hash, which enters the cache key,
/// and a summary of each entry, in the order hashed.
#[derive(Debug, Clone)]
pub struct Selection {
    pub hash: [u8; 32],
    pub files: Vec<SelectedFile>,
}

/// [`selection_hash`], with the summary of each selected entry.
pub fn selection(
    ctx: &LocalContext,
    cache: &StatCache,
    sources: &[String],
    parents: bool,
    exclude: &ExcludeFn,
) -> io::Result<Selection> {
    let root = crate::root::Root::open(&ctx.dir)?;
    let hidden = |real: &[Vec<u8>], is_dir: bool| !real.is_empty() && (ctx.ignore)(&crate::root::rel_str(real), is_dir);
    let mut outline = Vec::new();
    let mut subtrees = Vec::new();
    for src in sources {
        let mut header = b"source\0".to_vec();
        header.extend_from_slice(src.as_bytes());
        outline.push(Piece::Bytes(header));
        for found in crate::copy::source_paths(&root, src, parents, &hidden) {
            match found {
                Ok(real) => plan_top(&root, ctx, &crate::root::rel_str(&real), exclude, &mut outline, &mut subtrees)?,
                Err(missing) => plan_missing(&crate::root::rel_str(&missing), &mut outline),
            }
        }
    }
    // The directories left for later are planned on every core, then put in place.
    let planned = parallel_map(&subtrees, |(rel, mode): &(String, u32)| {
        let mut pieces = Vec::new();
        plan_dir(&root, ctx, rel, *mode, exclude, &mut pieces, 0, None)?;
        Ok(pieces)
    })?;
    let mut planned: Vec<Option<Vec<Piece>>> = planned.into_iter().map(Some).collect();
    let total = outline.len() + planned.iter().flatten().map(Vec::len).sum::<usize>();
    let mut plan = Vec::with_capacity(total);
    for piece in outline {
        match piece {
            Piece::Subtree(i) => plan.extend(planned[i].take().unwrap_or_default()),
            other => plan.push(other),
        }
    }
    // Hashed a window of entries at a time (on every core), fed to the hash in order:
    // the bytes of a window are all that is held, not those of the whole context.
    let mut h = blake3::Hasher::new();
    let mut files = Vec::with_capacity(plan.len());
    let mut pieces = plan.into_iter();
    loop {
        let mut window = Vec::new();
        let mut in_window = 0;
        for p in pieces.by_ref() {
            in_window += usize::from(matches!(p, Piece::Entry(..)));
            window.push(p);
            if in_window == HASH_WINDOW {
                break;
            }
        }
        if window.is_empty() {
            break;
        }
        let entries: Vec<(&str, Option<EntryStat>)> = window
            .iter()
            .filter_map(|p| match p {
                Piece::Entry(rel, st) => Some((rel.as_str(), *st)),
                _ => None,
            })
            .collect();
        let hashed = parallel_map(&entries, |(rel, st)| entry_bytes(&root, ctx, cache, exclude, rel, *st))?;
        drop(entries);
        let mut next = hashed.into_iter();
        for p in window {
            match p {
                Piece::Bytes(b) => {
                    h.update(&b);
                }
                Piece::Dir(rel, mode) => {
                    h.update(&entry_header(&rel, mode));
                    files.push(SelectedFile { path: rel, mode, content: 0 });
                }
                Piece::Entry(rel, _) => {
                    if let Some(bytes) = next.next() {
                        h.update(&bytes);
                        if let Some(file) = summarize_entry(rel, &bytes) {
                            files.push(file);
                        }
                    }
                }
                Piece::Subtree(_) => {}
            }
        }
    }
    files.shrink_to_fit();
    Ok(Selection { hash: *h.finalize().as_bytes(), files })
}

/// The summary of an entry from the bytes it fed the hash (its header, then what
/// follows); none for an excluded or vanished one.
fn summarize_entry(rel: String, bytes: &[u8]) -> Option<SelectedFile> {
    let rest = bytes.strip_prefix(rel.as_bytes())?.strip_prefix(b"\0")?;
    let mode = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
    let tail = &rest[4..];
    // A regular file: its size and the hex of its content hash, whose first 16 digits
    // are taken as they are (no second hash of 30 000 entries); else (a symlink's
    // target) a hash of what follows.
    let content = match tail.get(8..24).and_then(|h| std::str::from_utf8(h).ok()) {
        Some(hex) if tail.len() == 8 + 64 => {
            u64::from_str_radix(hex, 16).ok()? ^ u64::from_le_bytes(tail[..8].try_into().ok()?)
        }
        _ => u64::from_le_bytes(blake3::hash(tail).as_bytes()[..8].try_into().ok()?),
    };
    Some(SelectedFile { path: rel, mode, content })
}

/// What the hash is fed, in order: bytes known from the walk, or an entry that is not a
/// directory, whose bytes are worked out in parallel.
enum Piece {
    Bytes(Vec<u8>),
    /// A directory's header (its path and mode).
    Dir(String, u32),
    /// Its `lstat` when the walk already made it (from its directory's descriptor).
    Entry(String, Option<EntryStat>),
    /// A directory planned apart (index into the list of such directories).
    Subtree(usize),
}

/// Entries hashed together in [`selection`]: enough to keep every core busy, few
/// enough that their bytes (about 200 each) stay a few megabytes.
const HASH_WINDOW: usize = 16 * 1024;

/// Directories this deep below a source are planned apart, on every core.
const SPLIT_DEPTH: usize = 2;

/// A source as named (a file, a directory or a symlink; possibly missing).
fn plan_top(
    root: &Root,
    ctx: &LocalContext,
    rel: &str,
    exclude: &ExcludeFn,
    plan: &mut Vec<Piece>,
    subtrees: &mut Vec<(String, u32)>,
) -> io::Result<()> {
    match root.lstat_real(&clean(rel.as_bytes()))?.map(|st| EntryStat::of_stat(&st)) {
        Some(st) if st.kind() == rustix::fs::FileType::Directory => {
            plan_dir(root, ctx, rel, st.mode, exclude, plan, 0, Some(subtrees))
        }
        Some(st) => {
            plan.push(Piece::Entry(rel.to_string(), Some(st)));
            Ok(())
        }
        None => {
            plan_missing(rel, plan);
            Ok(())
        }
    }
}

/// The bytes that name an entry: its path, a NUL and its mode.
fn entry_header(rel: &str, mode: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(rel.len() + 5);
    b.extend_from_slice(rel.as_bytes());
    b.push(0);
    b.extend_from_slice(&mode.to_le_bytes());
    b
}

/// Plan the directory `rel` (mode `mode`): its header, then its entries in name order.
/// It is opened once; its entries are `lstat`ed through that descriptor (no path is
/// walked again), subdirectories `SPLIT_DEPTH` down are left in `subtrees` for later.
#[allow(clippy::too_many_arguments)]
fn plan_dir(
    root: &Root,
    ctx: &LocalContext,
    rel: &str,
    mode: u32,
    exclude: &ExcludeFn,
    plan: &mut Vec<Piece>,
    depth: usize,
    mut subtrees: Option<&mut Vec<(String, u32)>>,
) -> io::Result<()> {
    use rustix::fs::{AtFlags, FileType, OFlags};
    if !rel.is_empty() && ((ctx.ignore)(rel, true) || exclude(rel, true)) {
        return Ok(());
    }
    plan.push(Piece::Dir(rel.to_string(), mode));
    let dir = root.open_real(&clean(rel.as_bytes()), OFlags::RDONLY | OFlags::DIRECTORY)?;
    let mut children: Vec<(String, Vec<u8>)> = Vec::new();
    for e in rustix::fs::Dir::read_from(&dir)? {
        let Ok(e) = e else { continue };
        let raw = e.file_name().to_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        children.push((String::from_utf8_lossy(raw).into_owned(), raw.to_vec()));
    }
    children.sort();
    for (name, raw) in children {
        let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let st = match rustix::fs::statat(&dir, raw.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => EntryStat::of_stat(&st),
            // Gone since it was listed.
            Err(rustix::io::Errno::NOENT) => {
                plan_missing(&child, plan);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if st.kind() != FileType::Directory {
            plan.push(Piece::Entry(child, Some(st)));
            continue;
        }
        match subtrees.as_deref_mut() {
            Some(later) if depth + 1 >= SPLIT_DEPTH => {
                plan.push(Piece::Subtree(later.len()));
                later.push((child, st.mode));
            }
            later => plan_dir(root, ctx, &child, st.mode, exclude, plan, depth + 1, later)?,
        }
    }
    Ok(())
}

fn plan_missing(rel: &str, plan: &mut Vec<Piece>) {
    let mut b = b"missing\0".to_vec();
    b.extend_from_slice(rel.as_bytes());
    plan.push(Piece::Bytes(b));
}

/// The bytes of one non-directory entry: nothing when it is excluded, `missing` when it
/// vanished, else path + mode and the symlink target, or the size and content hash.
fn entry_bytes(
    root: &Root,
    ctx: &LocalContext,
    cache: &StatCache,
    exclude: &ExcludeFn,
    rel: &str,
    known: Option<EntryStat>,
) -> io::Result<Vec<u8>> {
    use rustix::fs::FileType;
    let real = clean(rel.as_bytes());
    let st = match known {
        Some(st) => st,
        None => match root.lstat_real(&real)? {
            Some(st) => EntryStat::of_stat(&st),
            None => {
                let mut b = b"missing\0".to_vec();
                b.extend_from_slice(rel.as_bytes());
                return Ok(b);
            }
        },
    };
    let is_dir = st.kind() == FileType::Directory;
    if !rel.is_empty() && ((ctx.ignore)(rel, is_dir) || exclude(rel, is_dir)) {
        return Ok(Vec::new());
    }
    let mut b = entry_header(rel, st.mode);
    match st.kind() {
        FileType::Symlink => b.extend_from_slice(&root.read_link_real(&real)?),
        FileType::RegularFile => match cache.file_hash(rel, &st, || {
            root.open_real(&real, rustix::fs::OFlags::RDONLY).map(fs::File::from).map_err(io::Error::from)
        }) {
            Ok(hash) => {
                b.extend_from_slice(&st.size.to_le_bytes());
                b.extend_from_slice(hash.to_hex().as_bytes());
            }
            // Gone since the walk saw it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut b = b"missing\0".to_vec();
                b.extend_from_slice(rel.as_bytes());
                return Ok(b);
            }
            Err(e) => return Err(e),
        },
        _ => {}
    }
    Ok(b)
}

/// `f` of every item, on every core; results in the items' order, or the first error.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> io::Result<R> + Sync) -> io::Result<Vec<R>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(items.len().max(1));
    if threads <= 1 || items.len() < 64 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    // Small batches from a shared counter: a few big items do not leave a core idle.
    const BATCH: usize = 32;
    // Each worker's (item index, result) pairs, or the first error it met.
    type WorkerResult<R> = io::Result<Vec<(usize, R)>>;
    let results: Vec<WorkerResult<R>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            return Ok(done);
                        }
                        let start = next.fetch_add(BATCH, Ordering::Relaxed);
                        if start >= items.len() {
                            return Ok(done);
                        }
                        for (k, item) in items[start..(start + BATCH).min(items.len())].iter().enumerate() {
                            match f(item) {
                                Ok(r) => done.push((start + k, r)),
                                Err(e) => {
                                    failed.store(true, Ordering::Relaxed);
                                    return Err(e);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(io::Error::other("a context walking thread panicked"))))
            .collect()
    });
    let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    for r in results {
        for (i, v) in r? {
            out[i] = Some(v);
        }
    }
    out.into_iter().map(|v| v.ok_or_else(|| io::Error::other("a context entry was not looked at"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk as it was written first: one thread, depth first, an `lstat` per entry.
    /// The parallel walk must feed the hash exactly the same bytes.
    fn reference_hash(ctx: &LocalContext, cache: &StatCache, sources: &[String], exclude: &ExcludeFn) -> [u8; 32] {
        fn walk(ctx: &LocalContext, cache: &StatCache, rel: &str, exclude: &ExcludeFn, h: &mut blake3::Hasher) {
            let path = if rel.is_empty() { ctx.dir.clone() } else { ctx.dir.join(rel) };
            let Ok(md) = fs::symlink_metadata(&path) else {
                h.update(b"missing\0");
                h.update(rel.as_bytes());
                return;
            };
            let is_dir = md.is_dir();
            if !rel.is_empty() && ((ctx.ignore)(rel, is_dir) || exclude(rel, is_dir)) {
                return;
            }
            h.update(rel.as_bytes());
            h.update(&[0]);
            h.update(&md.mode().to_le_bytes());
            if md.file_type().is_symlink() {
                h.update(fs::read_link(&path).unwrap().as_os_str().as_encoded_bytes());
            } else if md.is_file() {
                h.update(&md.len().to_le_bytes());
                let hash = cache.file_hash(rel, &EntryStat::of_metadata(&md), || fs::File::open(&path)).unwrap();
                h.update(hash.to_hex().as_bytes());
            } else if is_dir {
                let mut names: Vec<String> = fs::read_dir(&path)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                for n in names {
                    let child = if rel.is_empty() { n } else { format!("{rel}/{n}") };
                    walk(ctx, cache, &child, exclude, h);
                }
            }
        }
        let mut h = blake3::Hasher::new();
        for src in sources {
            h.update(b"source\0");
            h.update(src.as_bytes());
            let root = Root::open(&ctx.dir).unwrap();
            for found in crate::copy::source_paths(&root, src, false, &|_, _| false) {
                match found {
                    Ok(real) => walk(ctx, cache, &crate::root::rel_str(&real), exclude, &mut h),
                    Err(missing) => {
                        h.update(b"missing\0");
                        h.update(crate::root::rel_str(&missing).as_bytes());
                    }
                }
            }
        }
        *h.finalize().as_bytes()
    }

    #[test]
    fn parallel_walk_hashes_the_same_bytes_as_a_sequential_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in 0..5 {
            let sub = root.join(format!("d{d}/inner"));
            fs::create_dir_all(&sub).unwrap();
            for f in 0..40 {
                fs::write(sub.join(format!("f{f}.txt")), format!("{d}-{f}").repeat(f + 1)).unwrap();
            }
            std::os::unix::fs::symlink("../x", root.join(format!("d{d}/link"))).unwrap();
        }
        fs::write(root.join("skip.log"), "ignored").unwrap();
        let ignore: ExcludeFn = Arc::new(|p: &str, _| p.ends_with(".log"));
        let ctx = LocalContext { dir: root.to_path_buf(), ignore };
        let store = tempfile::tempdir().unwrap();
        let cache = StatCache::load(store.path(), root);
        let exclude: ExcludeFn = Arc::new(|p: &str, _| p == "d3/inner/f7.txt");
        for sources in [vec![".".to_string()], vec!["d1".into(), "d*/inner/f1?.txt".into(), "nope".into()]] {
            let fast = selection_hash(&ctx, &cache, &sources, false, &exclude).unwrap();
            assert_eq!(fast, reference_hash(&ctx, &cache, &sources, &exclude), "{sources:?}");
        }
        // A rewrite that keeps the size and the mtime is still seen (ctime).
        let before = selection_hash(&ctx, &cache, &[".".into()], false, &exclude).unwrap();
        let f = root.join("d0/inner/f0.txt");
        let mtime = fs::metadata(&f).unwrap().modified().unwrap();
        fs::write(&f, "X-0").unwrap();
        fs::File::options().write(true).open(&f).unwrap().set_modified(mtime).unwrap();
        assert_ne!(before, selection_hash(&ctx, &cache, &[".".into()], false, &exclude).unwrap());
    }

    #[test]
    fn sources_through_symlinks_are_resolved_inside_the_context() {
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("secret"), "host secret").unwrap();
        let d = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(host.path(), d.path().join("v")).unwrap();
        let ctx = LocalContext { dir: d.path().to_path_buf(), ignore: Arc::new(|_, _| false) };
        let none: ExcludeFn = Arc::new(|_, _| false);
        let cache = StatCache::load(store.path(), d.path());
        let h1 = selection_hash(&ctx, &cache, &["v/secret".into()], false, &none).unwrap();
        fs::write(host.path().join("secret"), "changed on the host").unwrap();
        // The host file is neither read nor stat'ed: the key does not move with it.
        assert_eq!(h1, selection_hash(&ctx, &cache, &["v/secret".into()], false, &none).unwrap());
        assert!(cache.fresh.lock().unwrap().is_empty(), "a host file was hashed");
        // The same path inside the context is what counts.
        let inside = d.path().join(host.path().strip_prefix("/").unwrap());
        fs::create_dir_all(&inside).unwrap();
        fs::write(inside.join("secret"), "inside").unwrap();
        assert_ne!(h1, selection_hash(&ctx, &cache, &["v/secret".into()], false, &none).unwrap());
    }

    #[test]
    fn a_symlinked_source_is_hashed_by_its_target_content() {
        let d = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        fs::write(d.path().join("real.txt"), "1").unwrap();
        std::os::unix::fs::symlink("real.txt", d.path().join("link")).unwrap();
        let ctx = LocalContext { dir: d.path().to_path_buf(), ignore: Arc::new(|_, _| false) };
        let none: ExcludeFn = Arc::new(|_, _| false);
        let cache = StatCache::load(store.path(), d.path());
        let h1 = selection_hash(&ctx, &cache, &["link".into()], false, &none).unwrap();
        fs::write(d.path().join("real.txt"), "22").unwrap();
        assert_ne!(h1, selection_hash(&ctx, &cache, &["link".into()], false, &none).unwrap());
    }

    #[test]
    fn selection_changes_with_content_but_not_unrelated_files() {
        let d = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a.txt"), "1").unwrap();
        fs::write(d.path().join("b.txt"), "2").unwrap();
        let ctx = LocalContext { dir: d.path().to_path_buf(), ignore: Arc::new(|_, _| false) };
        let none: ExcludeFn = Arc::new(|_, _| false);
        let cache = StatCache::load(store.path(), d.path());
        let h1 = selection_hash(&ctx, &cache, &["a.txt".into()], false, &none).unwrap();
        fs::write(d.path().join("b.txt"), "3").unwrap();
        assert_eq!(h1, selection_hash(&ctx, &cache, &["a.txt".into()], false, &none).unwrap());
        fs::write(d.path().join("a.txt"), "9").unwrap();
        assert_ne!(h1, selection_hash(&ctx, &cache, &["a.txt".into()], false, &none).unwrap());
    }
}
