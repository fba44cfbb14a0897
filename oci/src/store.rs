//! The content-addressed blob store: `ROOT/blobs/sha256/<hex>`.
//!
//! Every write goes to a temporary file in `ROOT/tmp/`, is fsynced, verified against
//! the expected digest when there is one, and renamed into place, so a killed process
//! never leaves a half-written blob under a digest name. Blobs that come from outside
//! (registries, tarballs, layouts) are always verified before they are trusted.
//!
//! The store is locked by opening it ([`StoreLock`], an `flock` on `ROOT/prune.lock`):
//! [`BlobStore::open`] holds a shared lock for as long as any clone of the value lives,
//! [`BlobStore::open_exclusive`] (`strata prune`) an exclusive one. So every command
//! that reads or writes the store (build, load, tag, push, save, images, inspect, ...)
//! waits while a prune sweeps it, and a prune waits for them: nothing a command is
//! working with is swept from under it. The lock covers the whole root (blobs,
//! snapshots, the cache index, image names).
//!
//! A side index, `ROOT/blob-sources/<hex>`, lists the registry repositories
//! (`registry/repository`, one a line) a blob is known to be in: pulls and pushes add to
//! it, and a push uses it to mount a blob from another repository of the same registry
//! instead of uploading it. It is a hint only: a stale line costs one failed mount.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::direct::BlobFile;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob {expected}: content has digest {actual} ({size} bytes)")]
    DigestMismatch { expected: Digest, actual: Digest, size: u64 },
    #[error("blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch { digest: Digest, expected: u64, actual: u64 },
    #[error("blob {0} is not in the store")]
    Missing(Digest),
    #[error("store I/O at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// The lock file, in the store root.
pub const LOCK_FILE: &str = "prune.lock";

/// A hold on a store root: a shared or exclusive `flock` on `ROOT/prune.lock`,
/// released when the last [`BlobStore`] clone holding it is dropped.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
    exclusive: bool,
}

impl StoreLock {
    /// Take the lock, waiting (and saying so in the log) while another process holds
    /// it the other way.
    pub fn acquire(root: &Path, exclusive: bool) -> Result<StoreLock, StoreError> {
        fs::create_dir_all(root).map_err(io_at(root))?;
        let path = root.join(LOCK_FILE);
        let file =
            File::options().read(true).write(true).create(true).truncate(false).open(&path).map_err(io_at(&path))?;
        let free = if exclusive { file.try_lock() } else { file.try_lock_shared() };
        if free.is_err() {
            let waiting_for = if exclusive { "other strata commands using the store" } else { "`strata prune`" };
            tracing::warn!("waiting for {waiting_for} to finish ({})", root.display());
            let locked = if exclusive { file.lock() } else { file.lock_shared() };
            locked.map_err(io_at(&path))?;
        }
        Ok(StoreLock { _file: file, exclusive })
    }

    /// The exclusive lock if no other process holds the store now, else `None`.
    pub fn try_exclusive(root: &Path) -> Result<Option<StoreLock>, StoreError> {
        fs::create_dir_all(root).map_err(io_at(root))?;
        let path = root.join(LOCK_FILE);
        let file =
            File::options().read(true).write(true).create(true).truncate(false).open(&path).map_err(io_at(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(StoreLock { _file: file, exclusive: true })),
            Err(_) => Ok(None),
        }
    }

    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }
}

/// A blob store rooted at a directory, with the store's lock held (see the module
/// documentation).
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    lock: std::sync::Arc<StoreLock>,
}

impl BlobStore {
    /// Open (creating if needed) the store under `root`, holding it shared.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let lock = StoreLock::acquire(&root, false)?;
        Self::with_lock(root, lock)
    }

    /// Open the store under `root` holding it exclusively (for sweeping it).
    pub fn open_exclusive(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let lock = StoreLock::acquire(&root, true)?;
        Self::with_lock(root, lock)
    }

    /// Open the store under `root` with a lock already taken.
    pub fn with_lock(root: PathBuf, lock: StoreLock) -> Result<Self, StoreError> {
        for d in [root.join("blobs/sha256"), root.join("tmp")] {
            fs::create_dir_all(&d).map_err(io_at(&d))?;
        }
        Ok(BlobStore { root, lock: std::sync::Arc::new(lock) })
    }

    /// The lock this value holds.
    pub fn lock(&self) -> &StoreLock {
        &self.lock
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives (whether or not it is present).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub fn size(&self, digest: &Digest) -> Result<u64, StoreError> {
        let p = self.path(digest);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::Missing(digest.clone())),
            Err(e) => Err(StoreError::Io { path: p, source: e }),
        }
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let p = self.path(digest);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::Missing(digest.clone())
            } else {
                StoreError::Io { path: p.clone(), source: e }
            }
        })
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut f = self.open_blob(digest)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map_err(io_at(&self.path(digest)))?;
        Ok(buf)
    }

    /// A new temporary file in the store's temp directory (same file system as blobs).
    pub fn temp_file(&self) -> Result<TempBlob, StoreError> {
        let dir = self.root.join("tmp");
        let name = format!("blob-{}-{}", std::process::id(), unique_suffix());
        let path = dir.join(name);
        let file = File::options().write(true).create_new(true).open(&path).map_err(io_at(&path))?;
        Ok(TempBlob { path: Some(path), writer: Some(BlobFile::new(file)) })
    }

    /// Store bytes; returns their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of_bytes(bytes);
        if self.contains(&digest) {
            return Ok(digest);
        }
        let mut t = self.temp_file()?;
        t.write_all(bytes).map_err(io_at(&self.path(&digest)))?;
        t.commit(self, Some(&digest), Some(bytes.len() as u64))?;
        Ok(digest)
    }

    /// Record that the registry repository `source` (`registry/repository`) holds
    /// `digest` (see the module overview). Appends one line unless it is there already.
    pub fn add_source(&self, digest: &Digest, source: &str) -> Result<(), StoreError> {
        if source.is_empty() || source.contains('\n') || self.sources(digest).iter().any(|s| s == source) {
            return Ok(());
        }
        let dir = self.root.join("blob-sources");
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let path = dir.join(digest.hex());
        // One short O_APPEND write: concurrent writers never interleave within a line.
        let mut f = File::options().create(true).append(true).open(&path).map_err(io_at(&path))?;
        f.write_all(format!("{source}\n").as_bytes()).map_err(io_at(&path))
    }

    /// The registry repositories recorded for `digest`, oldest first, without repeats.
    pub fn sources(&self, digest: &Digest) -> Vec<String> {
        let path = self.root.join("blob-sources").join(digest.hex());
        let Ok(text) = fs::read_to_string(path) else { return Vec::new() };
        let mut out: Vec<String> = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if !out.iter().any(|s| s == line) {
                out.push(line.to_string());
            }
        }
        out
    }

    /// Stream a reader into the store, verifying the expected digest (and size) if given.
    pub fn put_reader(
        &self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(Digest, u64), StoreError> {
        let mut t = self.temp_file()?;
        let tmp = t.path().to_path_buf();
        io::copy(reader, &mut t).map_err(io_at(&tmp))?;
        t.commit(self, expected, expected_size)
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{nanos:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A blob being written. Dropped without [`TempBlob::commit`], its file is removed.
pub struct TempBlob {
    path: Option<PathBuf>,
    writer: Option<BlobFile>,
}

impl TempBlob {
    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("path present until commit")
    }

    /// fsync, verify, and rename into place. Returns the digest and size.
    pub fn commit(
        mut self,
        store: &BlobStore,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(Digest, u64), StoreError> {
        let path = self.path.take().expect("commit once");
        let writer = self.writer.take().expect("commit once");
        let result = (|| {
            let (file, digest, size) = writer.finish().map_err(io_at(&path))?;
            file.sync_all().map_err(io_at(&path))?;
            drop(file);
            if let Some(exp) = expected {
                if *exp != digest {
                    return Err(StoreError::DigestMismatch { expected: exp.clone(), actual: digest.clone(), size });
                }
            }
            if let Some(exp) = expected_size {
                if exp != size {
                    return Err(StoreError::SizeMismatch { digest: digest.clone(), expected: exp, actual: size });
                }
            }
            let dst = store.path(&digest);
            fs::rename(&path, &dst).map_err(io_at(&dst))?;
            Ok((digest.clone(), size))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&path);
        }
        result
    }
}

impl Write for TempBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.as_mut().expect("writer present until commit").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.as_mut().expect("writer present until commit").flush()
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Write a small file atomically: temp name in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_renamed(path, bytes, true)
}

/// [`write_atomic`] without the fsync, for what a crash may lose: cache records and
/// memos, which readers take as missing when absent or torn (a recomputation, never a
/// wrong result). A build writes a few per step; each fsync cost milliseconds.
pub fn write_atomic_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_renamed(path, bytes, false)
}

fn write_renamed(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        unique_suffix()
    ));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d = store.put_bytes(b"hello").unwrap();
        assert!(store.contains(&d));
        assert_eq!(store.read_blob(&d).unwrap(), b"hello");
        let wrong = Digest::of_bytes(b"other");
        let err = store.put_reader(&mut &b"hello"[..], Some(&wrong), None).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }));
        assert!(!store.contains(&wrong));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "no temp left behind");
    }

    #[test]
    fn blob_sources() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d = store.put_bytes(b"layer").unwrap();
        assert!(store.sources(&d).is_empty());
        store.add_source(&d, "127.0.0.1:5000/library/busybox").unwrap();
        store.add_source(&d, "127.0.0.1:5000/other").unwrap();
        store.add_source(&d, "127.0.0.1:5000/library/busybox").unwrap();
        assert_eq!(store.sources(&d), ["127.0.0.1:5000/library/busybox", "127.0.0.1:5000/other"]);
    }
}
