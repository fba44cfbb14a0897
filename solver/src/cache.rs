//! The cache index: cache key → output, one small JSON file per key under
//! `ROOT/cache/`, written atomically, so concurrent builds and killed builds leave it
//! consistent. A record whose snapshots are gone is ignored (and overwritten).

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

#[derive(Debug, Clone)]
pub struct CacheIndex {
    dir: PathBuf,
}

impl CacheIndex {
    pub fn open(root: &Path) -> std::io::Result<Self> {
        let dir = root.join("cache");
        std::fs::create_dir_all(&dir)?;
        Ok(CacheIndex { dir })
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
        strata_oci::store::write_atomic(&self.path(key), &bytes)
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
