//! Local contexts (the build context and named `--build-context` directories): which
//! files a COPY selects, and the content hash of exactly those files for the cache key.
//!
//! File contents are hashed with blake3 and remembered in a persistent stat cache keyed
//! by (path, size, mtime ns, ctime ns, inode), so an unchanged context costs one
//! `lstat` per selected file. ctime catches rewrites that keep size and mtime.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Decides whether a context-relative path is excluded (`.dockerignore`, `--exclude`).
pub type ExcludeFn = Arc<dyn Fn(&str, bool) -> bool + Send + Sync>;

/// A local directory the build reads from.
#[derive(Clone)]
pub struct LocalContext {
    pub dir: PathBuf,
    pub ignore: ExcludeFn,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct StatEntry {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    hash: String,
}

/// The persistent stat cache of one context directory.
pub struct StatCache {
    path: PathBuf,
    entries: Mutex<HashMap<String, StatEntry>>,
    dirty: Mutex<bool>,
}

impl StatCache {
    pub fn load(store_root: &Path, context_dir: &Path) -> StatCache {
        let key = blake3::hash(context_dir.to_string_lossy().as_bytes()).to_hex();
        let path = store_root.join("statcache").join(&key[..32]);
        let entries = fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        StatCache { path, entries: Mutex::new(entries), dirty: Mutex::new(false) }
    }

    pub fn save(&self) -> io::Result<()> {
        let mut dirty = self.dirty.lock().expect("stat cache lock");
        if !*dirty {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&*self.entries.lock().expect("stat cache lock")).map_err(io::Error::other)?;
        strata_oci::store::write_atomic(&self.path, &bytes)?;
        *dirty = false;
        Ok(())
    }

    /// The blake3 of a regular file's content, from the cache when its stat is unchanged.
    fn file_hash(&self, rel: &str, path: &Path, md: &fs::Metadata) -> io::Result<String> {
        let probe = StatEntry {
            size: md.len(),
            mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
            ctime_ns: md.ctime() as i128 * 1_000_000_000 + md.ctime_nsec() as i128,
            ino: md.ino(),
            hash: String::new(),
        };
        if let Some(e) = self.entries.lock().expect("stat cache lock").get(rel) {
            if e.size == probe.size
                && e.mtime_ns == probe.mtime_ns
                && e.ctime_ns == probe.ctime_ns
                && e.ino == probe.ino
            {
                return Ok(e.hash.clone());
            }
        }
        let mut f = fs::File::open(path)?;
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let hash = h.finalize().to_hex().to_string();
        self.entries
            .lock()
            .expect("stat cache lock")
            .insert(rel.to_string(), StatEntry { hash: hash.clone(), ..probe });
        *self.dirty.lock().expect("stat cache lock") = true;
        Ok(hash)
    }
}

/// Go's `filepath.Match` for one path segment (`*`, `?`, `[...]`, `\` escapes).
pub fn segment_matches(pattern: &str, name: &str) -> bool {
    fn m(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| m(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && m(&p[1..], &n[1..]),
            Some('[') => {
                let Some(c) = n.first() else { return false };
                let mut i = 1;
                let negate = matches!(p.get(1), Some('^') | Some('!'));
                if negate {
                    i += 1;
                }
                let mut matched = false;
                let mut first = true;
                while i < p.len() && (first || p[i] != ']') {
                    first = false;
                    let mut lo = p[i];
                    if lo == '\\' && i + 1 < p.len() {
                        i += 1;
                        lo = p[i];
                    }
                    let mut hi = lo;
                    if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                        hi = p[i + 2];
                        i += 2;
                    }
                    if lo <= *c && *c <= hi {
                        matched = true;
                    }
                    i += 1;
                }
                if i >= p.len() {
                    return false; // malformed
                }
                matched != negate && m(&p[i + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && m(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && m(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    m(&p, &n)
}

pub fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Clean a source path to a relative one inside the root (`/a/../b` → `b`, `.` → ``).
pub fn clean_relative(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// Expand one source (possibly with globs) to the context-relative paths it names.
pub fn expand_source(root: &Path, source: &str) -> Vec<String> {
    let clean = clean_relative(source);
    if !has_glob(&clean) {
        return vec![clean];
    }
    let mut current = vec![String::new()];
    for seg in clean.split('/') {
        let mut next = Vec::new();
        for base in &current {
            let dir = if base.is_empty() { root.to_path_buf() } else { root.join(base) };
            if !has_glob(seg) {
                let cand = if base.is_empty() { seg.to_string() } else { format!("{base}/{seg}") };
                if root.join(&cand).symlink_metadata().is_ok() {
                    next.push(cand);
                }
                continue;
            }
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            let mut names: Vec<String> =
                rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            for n in names {
                if segment_matches(seg, &n) {
                    next.push(if base.is_empty() { n } else { format!("{base}/{n}") });
                }
            }
        }
        current = next;
    }
    current
}

/// The content hash of what `sources` select in `ctx` (after its ignore rules and the
/// extra `exclude` rule): paths, types, modes, sizes, contents, symlink targets.
pub fn selection_hash(
    ctx: &LocalContext,
    cache: &StatCache,
    sources: &[String],
    exclude: &ExcludeFn,
) -> io::Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    for src in sources {
        h.update(b"source\0");
        h.update(src.as_bytes());
        for rel in expand_source(&ctx.dir, src) {
            hash_tree(ctx, cache, &rel, exclude, &mut h)?;
        }
    }
    Ok(*h.finalize().as_bytes())
}

fn hash_tree(
    ctx: &LocalContext,
    cache: &StatCache,
    rel: &str,
    exclude: &ExcludeFn,
    h: &mut blake3::Hasher,
) -> io::Result<()> {
    let path = if rel.is_empty() { ctx.dir.clone() } else { ctx.dir.join(rel) };
    let md = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            h.update(b"missing\0");
            h.update(rel.as_bytes());
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let is_dir = md.is_dir();
    if !rel.is_empty() && ((ctx.ignore)(rel, is_dir) || exclude(rel, is_dir)) {
        return Ok(());
    }
    h.update(rel.as_bytes());
    h.update(&[0]);
    h.update(&md.mode().to_le_bytes());
    if md.file_type().is_symlink() {
        h.update(fs::read_link(&path)?.as_os_str().as_encoded_bytes());
    } else if md.is_file() {
        h.update(&md.len().to_le_bytes());
        h.update(cache.file_hash(rel, &path, &md)?.as_bytes());
    } else if is_dir {
        let mut names: Vec<String> =
            fs::read_dir(&path)?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        for n in names {
            let child = if rel.is_empty() { n } else { format!("{rel}/{n}") };
            hash_tree(ctx, cache, &child, exclude, h)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_segments() {
        assert!(segment_matches("*.txt", "a.txt"));
        assert!(!segment_matches("*.txt", "a.md"));
        assert!(segment_matches("a?c", "abc"));
        assert!(segment_matches("[a-c]x", "bx"));
        assert!(!segment_matches("[^a-c]x", "bx"));
        assert_eq!(clean_relative("/a/../b/./c/"), "b/c");
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
        let h1 = selection_hash(&ctx, &cache, &["a.txt".into()], &none).unwrap();
        fs::write(d.path().join("b.txt"), "3").unwrap();
        assert_eq!(h1, selection_hash(&ctx, &cache, &["a.txt".into()], &none).unwrap());
        fs::write(d.path().join("a.txt"), "9").unwrap();
        assert_ne!(h1, selection_hash(&ctx, &cache, &["a.txt".into()], &none).unwrap());
    }
}
