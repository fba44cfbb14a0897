//! The cache index: cache key → output, one small JSON file per key under
//! `ROOT/cache/`, written atomically, so concurrent builds and killed builds leave it
//! consistent. A record whose snapshots are gone is ignored (and overwritten).
//!
//! Records can also be *imported* for one build (`--cache-from`): they name layers by
//! their blobs rather than local snapshots ([`Origin::Imported`]), and the worker turns
//! them into snapshots only when a step or an output needs their files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::worker::Output;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheRecord {
    pub output: Output,
    /// The step's label when it was stored (for `strata du` and debugging).
    pub name: String,
    /// Seconds since the epoch when stored.
    pub created: u64,
}

/// Where a record was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// This store's index.
    Local,
    /// A cache imported for this build (`--cache-from`), named by where it came from.
    Imported(String),
}

#[derive(Debug, Clone)]
pub struct CacheIndex {
    dir: PathBuf,
    /// Records imported for this build, with the name of their cache.
    imported: std::sync::Arc<std::collections::HashMap<[u8; 32], (CacheRecord, String)>>,
}

impl CacheIndex {
    pub fn open(root: &Path) -> std::io::Result<Self> {
        let dir = root.join("cache");
        std::fs::create_dir_all(&dir)?;
        Ok(CacheIndex { dir, imported: Default::default() })
    }

    /// This index, with `records` imported (key → record, the cache it came from).
    pub fn with_imported(mut self, records: std::collections::HashMap<[u8; 32], (CacheRecord, String)>) -> Self {
        self.imported = std::sync::Arc::new(records);
        self
    }

    /// The local record of `key`, else an imported one, with where it was found.
    pub fn lookup(&self, key: &[u8; 32]) -> Option<(CacheRecord, Origin)> {
        if let Some(r) = self.get(key) {
            return Some((r, Origin::Local));
        }
        self.imported.get(key).map(|(r, from)| (r.clone(), Origin::Imported(from.clone())))
    }

    /// The imported record of `key`, if any.
    pub fn imported(&self, key: &[u8; 32]) -> Option<(CacheRecord, String)> {
        self.imported.get(key).cloned()
    }

    /// How many records were imported.
    pub fn imported_len(&self) -> usize {
        self.imported.len()
    }

    fn path(&self, key: &[u8; 32]) -> PathBuf {
        self.dir.join(hex::encode(key))
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<CacheRecord> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn put(&self, key: &[u8; 32], record: &CacheRecord) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        strata_oci::store::write_atomic_unsynced(&self.path(key), &bytes)
    }

    pub fn remove(&self, key: &[u8; 32]) {
        let _ = std::fs::remove_file(self.path(key));
    }

    /// Every record (for housekeeping).
    pub fn entries(&self) -> Vec<(String, CacheRecord)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with('.') {
                    return None;
                }
                let rec = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
                Some((name, rec))
            })
            .collect()
    }
}
