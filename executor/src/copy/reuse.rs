//! Incremental COPY: a COPY whose earlier result exists (same instruction and options,
//! same destination parent, same source context) builds its new snapshot from the old
//! one. Each regular file the old run wrote straight into its upper directory is
//! remembered with the identity of the source file it came from
//! ([`SourceId`]: device, inode, size, mtime, ctime, mode, owner — the same stat
//! identity the context's stat cache trusts for content hashes, ctime catching
//! rewrites that keep size and mtime, and xattr or mode changes); when the same
//! destination path is about to be copied from a source with the same identity, the
//! new snapshot gets a hard link to the old file instead of a copy. The old snapshot
//! is never written: snapshots are immutable once committed, and a later step that
//! changes the file gets its own copy from overlayfs (copy-up).
//!
//! A link shares the old file's content, owner, mode, mtime and extended attributes,
//! which are what a copy from the unchanged source would write; the layer writer
//! reads the new snapshot as it would a copy (hard links are only links within a
//! layer), so the layer — and the image digest — are the same as a full COPY's.
//! Files written through the overlay mount (into directories that existed below)
//! and hard-linked sources are always copied.

use std::collections::HashMap;
use std::sync::Mutex;

use rustix::fs::Stat;

use crate::root::Root;

/// The identity of a source file as a copy saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl SourceId {
    #[allow(clippy::unnecessary_cast)] // not the same types on every target
    pub fn of(st: &Stat) -> SourceId {
        SourceId {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as u64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
            mode: st.st_mode as u32,
            uid: st.st_uid,
            gid: st.st_gid,
        }
    }

    const ENCODED: usize = 8 * 7 + 4 * 3;

    fn encode(&self, out: &mut Vec<u8>) {
        for v in [self.dev, self.ino, self.size] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.mode, self.uid, self.gid] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn decode(b: &[u8]) -> Option<SourceId> {
        let u64_at = |i: usize| b.get(i..i + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes);
        let i64_at = |i: usize| b.get(i..i + 8).and_then(|s| s.try_into().ok()).map(i64::from_le_bytes);
        let u32_at = |i: usize| b.get(i..i + 4).and_then(|s| s.try_into().ok()).map(u32::from_le_bytes);
        Some(SourceId {
            dev: u64_at(0)?,
            ino: u64_at(8)?,
            size: u64_at(16)?,
            mtime: (i64_at(24)?, i64_at(32)?),
            ctime: (i64_at(40)?, i64_at(48)?),
            mode: u32_at(56)?,
            uid: u32_at(60)?,
            gid: u32_at(64)?,
        })
    }
}

/// Destination path (real components joined with `/`) → the source it was copied from.
pub type SourceMap = HashMap<Vec<u8>, SourceId>;

/// The earlier result of the same COPY.
pub struct EarlierCopy {
    /// Its snapshot's file system (the old upper directory).
    pub(crate) upper: Root,
    pub(crate) sources: SourceMap,
}

/// What this COPY writes for the next one: filled by the copy, saved with the snapshot.
#[derive(Default)]
pub struct CopyRecord {
    entries: Mutex<Vec<(Vec<u8>, SourceId)>>,
}

/// The first bytes of a saved record; another version is ignored.
const MAGIC: &[u8] = b"strata-copy-sources-1\n";
/// The most entries a saved record is read with (a record is the store's own file, but
/// a damaged one must not take the memory).
const MAX_ENTRIES: usize = 50_000_000;

impl CopyRecord {
    pub fn add(&self, path: Vec<u8>, id: SourceId) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).push((path, id));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record as saved (zstd).
    pub fn encode(&self) -> std::io::Result<Vec<u8>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut raw = Vec::with_capacity(MAGIC.len() + entries.len() * (SourceId::ENCODED + 40));
        raw.extend_from_slice(MAGIC);
        for (path, id) in entries.iter() {
            raw.extend_from_slice(&(path.len() as u32).to_le_bytes());
            raw.extend_from_slice(path);
            id.encode(&mut raw);
        }
        zstd::bulk::compress(&raw, 1)
    }
}

/// A saved record, or None when it is damaged or of another version.
pub fn decode(saved: &[u8]) -> Option<SourceMap> {
    let raw = zstd::stream::decode_all(saved).ok()?;
    let mut rest = raw.strip_prefix(MAGIC)?;
    let mut map = SourceMap::new();
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let path = rest.get(4..4 + len)?.to_vec();
        let id = SourceId::decode(rest.get(4 + len..4 + len + SourceId::ENCODED)?)?;
        rest = &rest[4 + len + SourceId::ENCODED..];
        map.insert(path, id);
        if map.len() > MAX_ENTRIES {
            return None;
        }
    }
    Some(map)
}

/// The key of a destination path in a [`SourceMap`].
pub fn path_key(comps: &[Vec<u8>]) -> Vec<u8> {
    let mut key = Vec::with_capacity(comps.iter().map(|c| c.len() + 1).sum());
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            key.push(b'/');
        }
        key.extend_from_slice(c);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_damage_is_refused() {
        let r = CopyRecord::default();
        let id = SourceId { dev: 1, ino: 2, size: 3, mtime: (4, 5), ctime: (6, 7), mode: 0o100644, uid: 8, gid: 9 };
        r.add(b"app/a".to_vec(), id);
        r.add(b"app/\xffb".to_vec(), SourceId { ino: 10, ..id });
        let saved = r.encode().unwrap();
        let map = decode(&saved).unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map[&b"app/a".to_vec()], id);
        assert_eq!(map[&b"app/\xffb".to_vec()].ino, 10);
        let raw = zstd::stream::decode_all(&saved[..]).unwrap();
        let truncated = zstd::bulk::compress(&raw[..raw.len() - 3], 1).unwrap();
        assert!(decode(&truncated).is_none());
        assert!(decode(b"garbage").is_none());
        assert_eq!(path_key(&[b"app".to_vec(), b"x".to_vec()]), b"app/x");
    }
}
