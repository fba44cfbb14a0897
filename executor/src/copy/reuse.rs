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
use std::io::{Read, Write};
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

    /// The identity as saved: each field little-endian, in declaration order.
    fn bytes(self) -> [u8; SourceId::ENCODED] {
        let mut out = [0u8; SourceId::ENCODED];
        let fields = [self.dev, self.ino, self.size]
            .into_iter()
            .map(u64::to_le_bytes)
            .chain([self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1].into_iter().map(i64::to_le_bytes));
        let mut at = 0;
        for f in fields {
            out[at..at + 8].copy_from_slice(&f);
            at += 8;
        }
        for v in [self.mode, self.uid, self.gid] {
            out[at..at + 4].copy_from_slice(&v.to_le_bytes());
            at += 4;
        }
        out
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

/// The earlier result's sources, compactly: a digest of each destination path (real
/// components joined with `/`) → a digest of the identity of the source it was copied
/// from, 16 bytes each (300 000 files take about 17 MB, not the ~60 MB of the paths and
/// identities themselves).
#[derive(Default)]
pub struct SourceMap {
    map: HashMap<[u8; 16], [u8; 16]>,
}

fn short_digest(bytes: &[u8]) -> [u8; 16] {
    let mut d = [0u8; 16];
    d.copy_from_slice(&blake3::hash(bytes).as_bytes()[..16]);
    d
}

impl SourceId {
    fn digest(&self) -> [u8; 16] {
        short_digest(&self.bytes())
    }
}

impl SourceMap {
    pub fn insert(&mut self, path: &[u8], id: &SourceId) {
        self.map.insert(short_digest(path), id.digest());
    }

    /// Was `path` copied from a source of identity `id`?
    pub fn matches(&self, path: &[u8], id: &SourceId) -> bool {
        self.map.get(&short_digest(path)) == Some(&id.digest())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The earlier result of the same COPY.
pub struct EarlierCopy {
    /// Its snapshot's file system (the old upper directory).
    pub(crate) upper: Root,
    pub(crate) sources: SourceMap,
}

/// What this COPY writes for the next one: filled by the copy as it goes, straight
/// into its compressed form (the entries are never all held), saved with the snapshot.
pub struct CopyRecord {
    writer: Mutex<RecordWriter>,
}

struct RecordWriter {
    /// None once finished, or after a write failed (then nothing is saved).
    encoder: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    entries: usize,
}

/// The first bytes of a saved record; another version is ignored.
const MAGIC: &[u8] = b"strata-copy-sources-1\n";
/// The most entries a saved record is read with (a record is the store's own file, but
/// a damaged one must not take the memory).
const MAX_ENTRIES: usize = 50_000_000;
/// The longest path a saved record is read with (Linux paths are at most 4096 bytes).
const MAX_PATH: usize = 64 << 10;

impl Default for CopyRecord {
    fn default() -> Self {
        let encoder =
            zstd::stream::write::Encoder::new(Vec::new(), 1).and_then(|mut e| e.write_all(MAGIC).map(|_| e)).ok();
        CopyRecord { writer: Mutex::new(RecordWriter { encoder, entries: 0 }) }
    }
}

impl CopyRecord {
    pub fn add(&self, path: Vec<u8>, id: SourceId) {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(encoder) = w.encoder.as_mut() else { return };
        let written = encoder
            .write_all(&(path.len() as u32).to_le_bytes())
            .and_then(|()| encoder.write_all(&path))
            .and_then(|()| encoder.write_all(&id.bytes()));
        if written.is_err() {
            w.encoder = None;
            return;
        }
        w.entries += 1;
    }

    pub fn len(&self) -> usize {
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).entries
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record as saved (zstd); an error when a write into it failed, or when it
    /// was finished already.
    pub fn finish(&self) -> std::io::Result<Vec<u8>> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        match w.encoder.take() {
            Some(e) => e.finish(),
            None => Err(std::io::Error::other("the COPY's record could not be written")),
        }
    }
}

/// A saved record, read as a stream, or None when it is damaged or of another version.
pub fn decode(saved: &[u8]) -> Option<SourceMap> {
    let mut r = zstd::stream::read::Decoder::new(saved).ok()?;
    let mut magic = vec![0u8; MAGIC.len()];
    r.read_exact(&mut magic).ok()?;
    if magic != MAGIC {
        return None;
    }
    let mut map = SourceMap::default();
    let mut path = Vec::new();
    let mut id = [0u8; SourceId::ENCODED];
    loop {
        let mut len = [0u8; 4];
        match r.read(&mut len[..1]).ok()? {
            0 => return Some(map),
            _ => r.read_exact(&mut len[1..]).ok()?,
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_PATH || map.len() >= MAX_ENTRIES {
            return None;
        }
        path.resize(len, 0);
        r.read_exact(&mut path).ok()?;
        r.read_exact(&mut id).ok()?;
        map.insert(&path, &SourceId::decode(&id)?);
    }
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
        assert_eq!(r.len(), 2);
        let saved = r.finish().unwrap();
        assert!(r.finish().is_err(), "a record is finished once");
        let map = decode(&saved).unwrap();
        assert_eq!(map.len(), 2);
        assert!(map.matches(b"app/a", &id));
        assert!(map.matches(b"app/\xffb", &SourceId { ino: 10, ..id }));
        assert!(!map.matches(b"app/\xffb", &id), "another identity");
        assert!(!map.matches(b"app/b", &id), "another path");
        let raw = zstd::stream::decode_all(&saved[..]).unwrap();
        let truncated = zstd::bulk::compress(&raw[..raw.len() - 3], 1).unwrap();
        assert!(decode(&truncated).is_none());
        let mut huge = raw[..MAGIC.len()].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&zstd::bulk::compress(&huge, 1).unwrap()).is_none(), "a damaged length is refused");
        assert_eq!(decode(&zstd::bulk::compress(MAGIC, 1).unwrap()).map(|m| m.len()), Some(0));
        assert!(decode(b"garbage").is_none());
        assert_eq!(path_key(&[b"app".to_vec(), b"x".to_vec()]), b"app/x");
    }
}
