//! Image names in the local store (`strata images`, `tag`, `rm`): one small JSON file
//! per name under `ROOT/images/`, written atomically, so concurrent builds that tag
//! different names never conflict and a killed build never leaves a torn record.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::image::Descriptor;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NamedImage {
    pub name: String,
    /// The manifest or index the name points at.
    pub descriptor: Descriptor,
    /// RFC 3339 time the name was set.
    pub created: String,
}

#[derive(Debug, Clone)]
pub struct ImageNames {
    dir: PathBuf,
}

impl ImageNames {
    /// The names of the store `store` (opened, so its lock is held: see
    /// [`crate::store`]).
    pub fn open(store: &crate::store::BlobStore) -> std::io::Result<Self> {
        let dir = store.root().join("images");
        std::fs::create_dir_all(&dir)?;
        Ok(ImageNames { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        let h = crate::digest::Digest::of_bytes(name.as_bytes());
        self.dir.join(format!("{}.json", &h.hex()[..40]))
    }

    pub fn get(&self, name: &str) -> Option<NamedImage> {
        let bytes = std::fs::read(self.path(name)).ok()?;
        serde_json::from_slice(&bytes).ok().filter(|n: &NamedImage| n.name == name)
    }

    /// Point `name` at `descriptor` (nothing is written when it already does).
    pub fn set(&self, name: &str, descriptor: &Descriptor) -> std::io::Result<()> {
        if self.get(name).is_some_and(|n| n.descriptor == *descriptor) {
            return Ok(());
        }
        let rec = NamedImage { name: name.to_string(), descriptor: descriptor.clone(), created: now_rfc3339() };
        crate::store::write_atomic(&self.path(name), &serde_json::to_vec_pretty(&rec).map_err(std::io::Error::other)?)
    }

    /// Remove a name; false when it was not there.
    pub fn remove(&self, name: &str) -> bool {
        self.get(name).is_some() && std::fs::remove_file(self.path(name)).is_ok()
    }

    pub fn list(&self) -> Vec<NamedImage> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut v: Vec<NamedImage> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

/// The current UTC time as RFC 3339 (seconds).
pub fn now_rfc3339() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    rfc3339(secs)
}

/// Seconds since the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_known_values() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
