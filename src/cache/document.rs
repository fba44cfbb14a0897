//! strata's cache document: the config blob of a cache manifest (or, inline, a key of
//! an image's config). Versioned, canonical JSON (keys sorted, no whitespace), so the
//! same records always give the same bytes:
//!
//! ```json
//! {"diffIDs":["sha256:…"],              // one per manifest layer, in order
//!  "mounts":[{"dir":"…","id":"npm","layer":2,"size":1234}],
//!  "records":[{"created":1700000000,"key":"<64 hex>","layers":[0,null,1],
//!              "platform":"linux/amd64","step":"[2/4] RUN make"}],
//!  "schemaVersion":1}
//! ```
//!
//! A record maps a step's cache key (machine-independent: `strata_solver::scheduler::
//! cache_key`) to the layers of its file system, bottom first, as indexes into the
//! manifest's layers; `null` is a layer whose diff is empty (no blob). A mount is the
//! content of one `RUN --mount=type=cache` directory, by the name strata gives it.
//!
//! A document read from a registry or a directory is hostile input: [`CacheDocument::
//! parse`] checks every index, key and name before anything is used.

use serde::{Deserialize, Serialize};
use strata_oci::digest::Digest;

/// The media type of the cache manifest's config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.strata.cache.config.v1+json";

/// The key of an image config that holds an inline cache document.
pub const INLINE_KEY: &str = "io.strata.cache.v1";

/// The one version this code writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The most records, layers or mounts a document may hold.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheDocument {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The diff_id of each layer of the manifest, in order (empty inline: the image
    /// config's `rootfs.diff_ids` are those).
    #[serde(rename = "diffIDs", default, skip_serializing_if = "Vec::is_empty")]
    pub diff_ids: Vec<Digest>,
    pub records: Vec<Record>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The cache key, 64 hex digits.
    pub key: String,
    /// The step's file system, bottom first: manifest layer indexes, `None` for an
    /// empty layer.
    pub layers: Vec<Option<usize>>,
    /// The step's progress label when it ran.
    pub step: String,
    pub platform: String,
    /// Seconds since the epoch when the step ran.
    pub created: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRecord {
    /// The `id=` of the cache mount (its target when none was given).
    pub id: String,
    /// The directory name strata keys the mount by (32 hex digits).
    pub dir: String,
    /// The manifest layer holding its files.
    pub layer: usize,
    /// Its unpacked size in bytes.
    pub size: u64,
}

impl CacheDocument {
    pub fn to_bytes(&self) -> Vec<u8> {
        strata_oci::image::canonical_json(self)
    }

    /// Parse and check a document whose manifest has `layer_count` layers.
    pub fn parse(bytes: &[u8], layer_count: usize) -> Result<CacheDocument, String> {
        let doc: CacheDocument =
            serde_json::from_slice(bytes).map_err(|e| format!("not a strata cache document: {e}"))?;
        doc.check(layer_count)?;
        Ok(doc)
    }

    /// Every index in range, every key and name well formed.
    pub fn check(&self, layer_count: usize) -> Result<(), String> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(format!(
                "cache document version {} (this strata reads version {SCHEMA_VERSION})",
                self.schema_version
            ));
        }
        if self.records.len() > MAX_ENTRIES || self.mounts.len() > MAX_ENTRIES || layer_count > MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries"));
        }
        if !self.diff_ids.is_empty() && self.diff_ids.len() != layer_count {
            return Err(format!("{} diffIDs for {layer_count} layers", self.diff_ids.len()));
        }
        for r in &self.records {
            if !is_hex(&r.key, 64) {
                return Err(format!("record key {:?} is not 64 hex digits", clip(&r.key)));
            }
            if let Some(i) = r.layers.iter().flatten().find(|i| **i >= layer_count) {
                return Err(format!("record {} names layer {i} of {layer_count}", &r.key[..12]));
            }
        }
        for m in &self.mounts {
            if !is_hex(&m.dir, 32) {
                return Err(format!("cache mount {:?} has a malformed name", clip(&m.id)));
            }
            if m.layer >= layer_count {
                return Err(format!("cache mount {:?} names layer {} of {layer_count}", clip(&m.id), m.layer));
            }
        }
        Ok(())
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// At most 64 characters of a hostile string, for a message.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> CacheDocument {
        CacheDocument {
            schema_version: 1,
            diff_ids: vec![Digest::of_bytes(b"a"), Digest::of_bytes(b"b")],
            records: vec![Record {
                key: "ab".repeat(32),
                layers: vec![Some(0), None, Some(1)],
                step: "[1/2] RUN x".into(),
                platform: "linux/amd64".into(),
                created: 7,
            }],
            mounts: vec![MountRecord { id: "npm".into(), dir: "0f".repeat(16), layer: 1, size: 3 }],
        }
    }

    #[test]
    fn round_trips_canonically() {
        let d = doc();
        let bytes = d.to_bytes();
        assert_eq!(CacheDocument::parse(&bytes, 2).unwrap(), d);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("{\"diffIDs\":"), "{text}");
        assert!(text.contains("\"layers\":[0,null,1]"), "{text}");
        assert!(!text.contains(' ') || text.contains("RUN x"), "{text}");
    }

    #[test]
    fn hostile_documents_are_refused() {
        let mut d = doc();
        d.records[0].layers.push(Some(2));
        assert!(CacheDocument::parse(&d.to_bytes(), 2).unwrap_err().contains("names layer 2 of 2"));
        let mut d = doc();
        d.records[0].key = "../../etc".into();
        assert!(CacheDocument::parse(&d.to_bytes(), 2).unwrap_err().contains("not 64 hex"));
        let mut d = doc();
        d.mounts[0].dir = "../../../../etc/x".into();
        assert!(CacheDocument::parse(&d.to_bytes(), 2).unwrap_err().contains("malformed name"));
        let mut d = doc();
        d.schema_version = 2;
        assert!(CacheDocument::parse(&d.to_bytes(), 2).unwrap_err().contains("version 2"));
        assert!(CacheDocument::parse(&doc().to_bytes(), 3).unwrap_err().contains("2 diffIDs for 3 layers"));
        assert!(CacheDocument::parse(b"{\"schemaVersion\":1,\"records\":[],\"extra\":1}", 0).is_err());
        assert!(CacheDocument::parse(b"[]", 0).is_err());
    }
}
