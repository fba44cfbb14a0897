//! `strata prune`: mark and sweep of the store, and the lock that keeps it away from
//! running builds.
//!
//! What is kept (the marks):
//! - every named image (`ROOT/images`) → its index/manifest, config and layer blobs;
//!   these are never removed, whatever the flags;
//! - unless `--all`, every cache record (`ROOT/cache/<key>`) → its snapshots
//!   (`ROOT/snapshots/<id>`) → the blobs those snapshots came from (`source.json`) or
//!   were exported to (`layer-*.json`); and every remembered base-image resolution
//!   (`ROOT/resolved/*`) → that image's blobs.
//!
//! What goes (the sweep): blobs and snapshots nothing marks, cache records whose
//! snapshots are gone, scratch directories of builds that are no longer running; with
//! `--all` also every cache record, resolution and cache mount (`ROOT/cache-mounts`).
//! `--keep-storage SIZE` then drops the oldest cache records (and resolutions) first
//! until blobs + snapshots fit in SIZE; `--filter until=DURATION` spares anything
//! younger than DURATION (records by their creation time, files by their mtime).
//! Build records (`strata history`) older than DURATION go too (all with `--all` and
//! no filter; those older than a month without either).
//!
//! Prune opens the store exclusively ([`BlobStore::open_exclusive`]); every other
//! command holds it shared for as long as it uses it (the lock is taken by opening the
//! store, see `strata_oci::store`), so prune waits for them and they wait for a running
//! prune: nothing a command holds is ever swept under it.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_oci::digest::Digest;
use strata_oci::names::ImageNames;
use strata_oci::store::{BlobStore, StoreLock};
use strata_solver::cache::CacheIndex;
use strata_solver::worker::Output;

use crate::cli::Cli;
use crate::units::{human_bytes, parse_duration, parse_size};
use crate::{Failure, Result};

/// Manifests and indexes larger than this are not parsed (they are KiBs in practice).
const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// Something prune may remove, with what it occupies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Object {
    Blob(Digest),
    Snapshot(String),
}

#[derive(Debug, Clone, Copy)]
struct Stat {
    size: u64,
    mtime: SystemTime,
}

#[derive(Debug)]
enum RecordKind {
    Cache,
    Resolved,
}

/// A cache record or remembered resolution: a root that may be dropped.
#[derive(Debug)]
struct Record {
    kind: RecordKind,
    path: PathBuf,
    created: SystemTime,
    refs: BTreeSet<Object>,
    /// Points at something no longer in the store: useless, always dropped.
    dangling: bool,
}

/// Apparent size of a tree, each inode counted once (as `du -b`); symlinks not followed.
fn tree_size(p: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&path) else { continue };
        if !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        total += m.len();
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(&path) {
                stack.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        }
    }
    total
}

fn mtime_of(m: &fs::Metadata) -> SystemTime {
    m.modified().unwrap_or(UNIX_EPOCH)
}

/// Every blob an index or manifest reaches (itself included).
fn closure(store_blobs: &Path, root: &Digest, out: &mut BTreeSet<Object>) {
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        if !out.insert(Object::Blob(d.clone())) {
            continue;
        }
        let path = store_blobs.join(d.hex());
        let Ok(meta) = fs::metadata(&path) else { continue };
        if meta.len() > MAX_MANIFEST_BYTES {
            continue;
        }
        let Ok(v) = fs::read(&path)
            .map_err(|_| ())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|_| ()))
        else {
            continue;
        };
        let digest_of =
            |x: &serde_json::Value| x.get("digest").and_then(|d| d.as_str()).and_then(|s| s.parse::<Digest>().ok());
        if let Some(ms) = v.get("manifests").and_then(|m| m.as_array()) {
            stack.extend(ms.iter().filter_map(digest_of));
        }
        if let Some(c) = v.get("config").and_then(digest_of) {
            out.insert(Object::Blob(c));
        }
        if let Some(ls) = v.get("layers").and_then(|l| l.as_array()) {
            out.extend(ls.iter().filter_map(digest_of).map(Object::Blob));
        }
    }
}

/// The blobs a snapshot came from or was exported to.
fn snapshot_blobs(dir: &Path) -> Vec<Digest> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else { return out };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "source.json" || (name.starts_with("layer-") && name.ends_with(".json")) {
            let d = fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v.get("digest").and_then(|d| d.as_str()).and_then(|s| s.parse::<Digest>().ok()));
            out.extend(d);
        }
    }
    out
}

fn pid_alive(pid: &str) -> bool {
    pid.parse::<u32>().map(|p| Path::new(&format!("/proc/{p}")).exists()).unwrap_or(false)
}

/// Leftovers of processes that are gone: `ROOT/tmp/<kind>-<pid>-…` and snapshot scratch.
fn clean_scratch(root: &Path) -> u64 {
    let mut freed = 0;
    if let Ok(rd) = fs::read_dir(root.join("tmp")) {
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            // `<kind>-<pid>-…`; anything else is not ours to judge.
            let Some(pid) = name.split('-').nth(1).filter(|p| p.parse::<u32>().is_ok()) else { continue };
            if pid_alive(pid) {
                continue;
            }
            freed += tree_size(&e.path());
            let _ = strata_executor::remove::remove_tree(&e.path());
        }
    }
    if let Ok(snaps) = strata_executor::snapshot::Snapshots::open(root) {
        snaps.clean_stale();
    }
    freed
}

struct Options {
    all: bool,
    keep: Option<u64>,
    until: Option<Duration>,
}

fn parse_options(all: bool, keep: Option<&str>, filter: &[String]) -> Result<Options> {
    let keep = keep.map(parse_size).transpose().map_err(|e| Failure::usage(format!("error: --keep-storage {e}")))?;
    let mut until = None;
    for f in filter {
        match f.split_once('=') {
            Some(("until", v)) => {
                until = Some(parse_duration(v).map_err(|e| Failure::usage(format!("error: --filter until: {e}")))?)
            }
            _ => {
                return Err(Failure::usage(format!(
                    "error: --filter {f:?}: only until=DURATION is supported (e.g. until=24h)"
                )))
            }
        }
    }
    Ok(Options { all, keep, until })
}

pub fn run(cli: &Cli, all: bool, keep: Option<&str>, filter: &[String]) -> Result<()> {
    let opts = parse_options(all, keep, filter)?;
    let root = crate::store_root(cli);
    if !root.is_dir() {
        println!("Nothing to prune: {} does not exist", root.display());
        return Ok(());
    }
    let store =
        BlobStore::open_exclusive(&root).map_err(|e| Failure::build(format!("error: locking the store: {e}")))?;
    let mut report = prune(&store, &opts)?;
    // Build records (`strata history`): all of them with --all, else those older than
    // the filter's age, or than a month.
    let age = match (opts.all, opts.until) {
        (_, Some(d)) => Some(d),
        (true, None) => None,
        (false, None) => Some(HISTORY_AGE),
    };
    report.history = crate::history::record::History::at(store.root()).prune(age);
    report.print(&opts);
    Ok(())
}

/// Without --all or a filter, prune removes build records older than this.
const HISTORY_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The configuration's `storage.keep`, applied after a successful build: a prune down
/// to the limit, unless another build or prune holds the store right now (then the
/// next build does it). Says one line when it removed anything.
pub fn after_build(cli: &Cli, keep: &str) {
    let Ok(opts) = parse_options(false, Some(keep), &[]) else { return };
    let root = crate::store_root(cli);
    let Ok(Some(lock)) = StoreLock::try_exclusive(&root) else { return };
    let Ok(store) = BlobStore::with_lock(root, lock) else { return };
    match prune(&store, &opts) {
        Ok(r) if r.reclaimed > 0 => eprintln!(
            "storage.keep={keep}: pruned {} (the store now holds {})",
            human_bytes(r.reclaimed),
            human_bytes(r.remaining)
        ),
        Ok(_) => {}
        Err(e) => eprintln!("warning: storage.keep={keep}: pruning failed: {}", e.message),
    }
}

#[derive(Default)]
struct Report {
    records: usize,
    resolutions: usize,
    snapshots: usize,
    blobs: usize,
    cache_mounts: usize,
    history: usize,
    reclaimed: u64,
    remaining: u64,
}

impl Report {
    fn print(&self, opts: &Options) {
        let mut parts = vec![
            format!("{} cache record{}", self.records, if self.records == 1 { "" } else { "s" }),
            format!("{} snapshot{}", self.snapshots, if self.snapshots == 1 { "" } else { "s" }),
            format!("{} blob{}", self.blobs, if self.blobs == 1 { "" } else { "s" }),
        ];
        if self.resolutions > 0 {
            parts.push(format!(
                "{} base-image resolution{}",
                self.resolutions,
                if self.resolutions == 1 { "" } else { "s" }
            ));
        }
        if self.history > 0 {
            parts.push(format!("{} build record{}", self.history, if self.history == 1 { "" } else { "s" }));
        }
        if opts.all {
            parts.push(format!("{} cache mount{}", self.cache_mounts, if self.cache_mounts == 1 { "" } else { "s" }));
        }
        println!("Deleted {}", parts.join(", "));
        println!("Total reclaimed space: {}", human_bytes(self.reclaimed));
        match opts.keep {
            Some(limit) => {
                println!("Blobs and snapshots now: {} (limit {})", human_bytes(self.remaining), human_bytes(limit))
            }
            None => println!("Blobs and snapshots now: {}", human_bytes(self.remaining)),
        }
    }
}

fn prune(store: &BlobStore, opts: &Options) -> Result<Report> {
    debug_assert!(store.lock().is_exclusive());
    let root = store.root();
    let now = SystemTime::now();
    let older = |t: SystemTime| match opts.until {
        Some(u) => now.duration_since(t).map(|age| age >= u).unwrap_or(false),
        None => true,
    };
    let ferr = |what: &str, e: &dyn std::fmt::Display| Failure::build(format!("error: {what}: {e}"));
    let mut report = Report { reclaimed: clean_scratch(root), ..Default::default() };
    let blob_dir = root.join("blobs/sha256");
    let snap_dir = root.join("snapshots");

    // What is there.
    let mut objects: HashMap<Object, Stat> = HashMap::new();
    if let Ok(rd) = fs::read_dir(&blob_dir) {
        for e in rd.filter_map(|e| e.ok()) {
            let Ok(d) = format!("sha256:{}", e.file_name().to_string_lossy()).parse::<Digest>() else { continue };
            let Ok(m) = e.metadata() else { continue };
            if m.is_file() {
                objects.insert(Object::Blob(d), Stat { size: m.len(), mtime: mtime_of(&m) });
            }
        }
    }
    let mut snapshot_refs: HashMap<String, Vec<Digest>> = HashMap::new();
    if let Ok(rd) = fs::read_dir(&snap_dir) {
        for e in rd.filter_map(|e| e.ok()) {
            let id = e.file_name().to_string_lossy().into_owned();
            if id == "empty" || id.starts_with("tmp-") || !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            snapshot_refs.insert(id.clone(), snapshot_blobs(&e.path()));
            objects.insert(Object::Snapshot(id), Stat { size: tree_size(&e.path()), mtime: mtime_of(&m) });
        }
    }
    let overhead: u64 = [root.join("blobs"), blob_dir.clone(), snap_dir.clone(), snap_dir.join("empty")]
        .iter()
        .filter_map(|p| fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();

    // Roots that stay: named images.
    let names = ImageNames::open(store).map_err(|e| ferr("image names", &e))?;
    let mut permanent = BTreeSet::new();
    for n in names.list() {
        closure(&blob_dir, &n.descriptor.digest, &mut permanent);
    }

    // Roots that may go: cache records and remembered resolutions.
    let mut records = Vec::new();
    let cache = CacheIndex::open(root).map_err(|e| ferr("cache index", &e))?;
    for (key, rec) in cache.entries() {
        let mut refs = BTreeSet::new();
        let mut dangling = false;
        if let Output::Layers(ids) = &rec.output {
            for id in ids {
                match snapshot_refs.get(&id.0) {
                    Some(blobs) if snap_dir.join(&id.0).join("fs").is_dir() => {
                        refs.insert(Object::Snapshot(id.0.clone()));
                        refs.extend(blobs.iter().cloned().map(Object::Blob));
                    }
                    _ => dangling = true,
                }
            }
        }
        let created = UNIX_EPOCH + Duration::from_secs(rec.created);
        records.push(Record { kind: RecordKind::Cache, path: root.join("cache").join(key), created, refs, dangling });
    }
    if let Ok(rd) = fs::read_dir(root.join("resolved")) {
        for e in rd.filter_map(|e| e.ok()) {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            let digest = fs::read_to_string(e.path()).ok().and_then(|s| s.trim().parse::<Digest>().ok());
            let mut refs = BTreeSet::new();
            let dangling = match &digest {
                Some(d) => {
                    closure(&blob_dir, d, &mut refs);
                    !blob_dir.join(d.hex()).is_file()
                }
                None => true,
            };
            records.push(Record { kind: RecordKind::Resolved, path: e.path(), created: mtime_of(&m), refs, dangling });
        }
    }

    // Which roots go.
    let mut dropped = vec![false; records.len()];
    for (i, r) in records.iter().enumerate() {
        dropped[i] = r.dangling || (opts.all && older(r.created));
    }
    let mut refcount: HashMap<&Object, usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        if !dropped[i] {
            for o in &r.refs {
                *refcount.entry(o).or_default() += 1;
            }
        }
    }
    let swept = |o: &Object, refcount: &HashMap<&Object, usize>, st: &Stat| -> bool {
        !permanent.contains(o) && refcount.get(o).copied().unwrap_or(0) == 0 && older(st.mtime)
    };
    let mut remaining: u64 =
        overhead + objects.iter().filter(|(o, st)| !swept(o, &refcount, st)).map(|(_, st)| st.size).sum::<u64>();
    if let Some(limit) = opts.keep {
        let mut candidates: Vec<usize> =
            (0..records.len()).filter(|&i| !dropped[i] && older(records[i].created)).collect();
        candidates.sort_by(|&a, &b| {
            records[a].created.cmp(&records[b].created).then_with(|| records[a].path.cmp(&records[b].path))
        });
        for i in candidates {
            if remaining <= limit {
                break;
            }
            dropped[i] = true;
            for o in &records[i].refs {
                let Some(c) = refcount.get_mut(o) else { continue };
                *c -= 1;
                if *c == 0 {
                    if let Some(st) = objects.get(o) {
                        if !permanent.contains(o) && older(st.mtime) {
                            remaining -= st.size;
                        }
                    }
                }
            }
        }
        if remaining > limit {
            eprintln!(
                "warning: the store still holds {} (over --keep-storage {}): named images and what is younger than --filter until are kept; `strata rm` images you no longer need",
                human_bytes(remaining),
                human_bytes(limit)
            );
        }
    }
    report.remaining = remaining;

    // Sweep: roots first, then what they no longer hold.
    for (i, r) in records.iter().enumerate() {
        if dropped[i] {
            match fs::remove_file(&r.path) {
                Ok(()) => match r.kind {
                    RecordKind::Cache => report.records += 1,
                    RecordKind::Resolved => report.resolutions += 1,
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ferr(&r.path.display().to_string(), &e)),
            }
        }
    }
    let mut doomed: Vec<(&Object, &Stat)> = objects.iter().filter(|(o, st)| swept(o, &refcount, st)).collect();
    doomed.sort_by(|a, b| a.0.cmp(b.0));
    for (o, st) in doomed {
        let res = match o {
            Object::Blob(d) => fs::remove_file(blob_dir.join(d.hex())),
            Object::Snapshot(id) => strata_executor::remove::remove_tree(&snap_dir.join(id)),
        };
        match res {
            Ok(()) => {
                tracing::debug!(?o, size = st.size, "removed");
                report.reclaimed += st.size;
                match o {
                    Object::Blob(_) => report.blobs += 1,
                    Object::Snapshot(_) => report.snapshots += 1,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("warning: could not remove {o:?}: {e}"),
        }
    }
    // Incremental COPY's pointers to snapshots that are gone.
    if let Ok(rd) = fs::read_dir(root.join(strata_executor::worker::COPY_LINEAGE_DIR)) {
        for e in rd.filter_map(|e| e.ok()) {
            let id = fs::read_to_string(e.path()).unwrap_or_default();
            let id = id.trim();
            if id.is_empty() || id.contains('/') || !snap_dir.join(id).join("fs").is_dir() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    if opts.all {
        if let Ok(rd) = fs::read_dir(root.join("cache-mounts")) {
            for e in rd.filter_map(|e| e.ok()) {
                let Ok(m) = fs::symlink_metadata(e.path()) else { continue };
                if !older(mtime_of(&m)) {
                    continue;
                }
                let size = tree_size(&e.path());
                match strata_executor::remove::remove_tree(&e.path()) {
                    Ok(()) => {
                        report.cache_mounts += 1;
                        report.reclaimed += size;
                    }
                    Err(err) => eprintln!("warning: could not remove the cache mount {}: {err}", e.path().display()),
                }
            }
        }
    }
    Ok(report)
}
