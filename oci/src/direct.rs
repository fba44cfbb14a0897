//! Writing a blob past the page cache, hashing it on the way.
//!
//! A layer of hundreds of megabytes written through the page cache costs more than its
//! bytes: every page has to be allocated (on a virtual machine whose free memory went
//! back to the host, each first touch is a fault in the host too), copied into, and
//! written back by fsync afterwards. Measured here, 450 MB took 1.7 s that way (1.5 s of
//! it in the kernel) and 0.26 s with `O_DIRECT`. A blob is written once, hashed on the
//! way in, and read again (if ever) by a push or an export much later; keeping it in the
//! page cache buys nothing.
//!
//! [`BlobFile`] collects what is written in an aligned chunk; each full chunk goes down a
//! pipeline of two threads: one SHA-256s it, the next `pwrite`s it with `O_DIRECT`, while
//! the caller produces the next one. The producer (a tar walk reading files), the hash
//! (about 1.4 GB/s here) and the disk each take about a third of a second for 450 MB;
//! in a line on one thread they took 0.75 s, side by side they take the slowest one's
//! time. At most [`BUFFERS`] chunks exist at once. Small blobs (manifests, configs) never
//! fill a chunk and are hashed and written normally at the end. Where the file system
//! refuses `O_DIRECT` (setting the flag, or the first write, fails with `EINVAL`) the
//! chunks are hashed and written on the caller's thread instead: the bytes in the file
//! and the digest are the same either way.
//!
//! The tail (the last, partial chunk) is hashed and written without `O_DIRECT`, after
//! the pipeline has finished. Durability is the caller's `fsync`, as before.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use rustix::fs::OFlags;

use crate::digest::{Digest, Hasher};

/// Bytes per chunk handed to the writer thread (a multiple of any block size).
pub const CHUNK: usize = 4 << 20;
/// Alignment of a chunk's memory and file offset for `O_DIRECT`.
const ALIGN: usize = 4096;
/// Chunks in flight at most: one being filled, one being hashed, one being written, and
/// one queued between each.
pub const BUFFERS: usize = 5;

/// A chunk's memory: a `Vec` with room to start at an aligned address, `cap` bytes
/// from there on ([`CHUNK`], or less for the first chunk of a blob that may be small).
struct Chunk {
    mem: Vec<u8>,
    start: usize,
    cap: usize,
    len: usize,
}

impl Chunk {
    fn new() -> Chunk {
        let mem = vec![0u8; CHUNK + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN).min(ALIGN);
        Chunk { mem, start, cap: CHUNK, len: 0 }
    }
    /// The first chunk of a blob: as small as its first write allows, so that a
    /// manifest does not cost 4 MiB of memory; replaced by a full chunk when more comes.
    fn first(write: usize) -> Chunk {
        if write >= CHUNK / 4 {
            return Chunk::new();
        }
        let cap = (write * 2).max(64 << 10);
        Chunk { mem: vec![0u8; cap], start: 0, cap, len: 0 }
    }
    fn filled(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
    fn room(&mut self) -> &mut [u8] {
        let from = self.start + self.len;
        &mut self.mem[from..self.start + self.cap]
    }
    fn is_full(&self) -> bool {
        self.cap == CHUNK && self.len == CHUNK
    }
}

/// The pipeline: full chunks go to the hasher thread, from there to the writer thread,
/// and come back empty.
struct Writer {
    full: SyncSender<(Chunk, u64)>,
    empty: Receiver<Chunk>,
    hasher: JoinHandle<Hasher>,
    writer: JoinHandle<io::Result<()>>,
    allocated: usize,
}

/// A file being written whole, front to back, and hashed; see the module overview.
pub struct BlobFile {
    file: File,
    chunk: Option<Chunk>,
    /// File offset of the current chunk's first byte.
    offset: u64,
    /// What is hashed on the caller's thread; handed to the pipeline when it starts.
    hasher: Option<Hasher>,
    writer: Option<Writer>,
    /// `O_DIRECT` could not be set: chunks are hashed and written on the caller's thread.
    buffered: bool,
}

impl BlobFile {
    pub fn new(file: File) -> BlobFile {
        BlobFile { file, chunk: None, offset: 0, hasher: Some(Hasher::new()), writer: None, buffered: false }
    }

    /// Hand the full current chunk on and take an empty one.
    fn flush_chunk(&mut self) -> io::Result<()> {
        let Some(chunk) = self.chunk.take() else { return Ok(()) };
        if self.writer.is_none() && !self.buffered {
            self.writer = self.start_writer()?;
            self.buffered = self.writer.is_none();
        }
        let offset = self.offset;
        self.offset += chunk.len as u64;
        let Some(w) = self.writer.as_mut() else {
            self.hasher.as_mut().ok_or_else(lost_hash)?.update(chunk.filled());
            self.file.write_all_at(chunk.filled(), offset)?;
            self.chunk = Some(Chunk { len: 0, ..chunk });
            return Ok(());
        };
        if w.full.send((chunk, offset)).is_err() {
            return Err(self.writer_failed());
        }
        let next = match w.empty.try_recv() {
            Ok(c) => c,
            Err(_) if w.allocated < BUFFERS => {
                w.allocated += 1;
                Chunk::new()
            }
            Err(_) => match w.empty.recv() {
                Ok(c) => c,
                Err(_) => return Err(self.writer_failed()),
            },
        };
        self.chunk = Some(Chunk { len: 0, ..next });
        Ok(())
    }

    /// The hasher and writer threads, with `O_DIRECT` set on the file; `None` where it
    /// cannot be.
    fn start_writer(&mut self) -> io::Result<Option<Writer>> {
        let flags = rustix::fs::fcntl_getfl(&self.file).map_err(io::Error::from)?;
        if rustix::fs::fcntl_setfl(&self.file, flags | OFlags::DIRECT).is_err() {
            return Ok(None);
        }
        let file = self.file.try_clone()?;
        let (full, full_rx) = mpsc::sync_channel::<(Chunk, u64)>(1);
        let (hashed, hashed_rx) = mpsc::sync_channel::<(Chunk, u64)>(1);
        let (empty_tx, empty) = mpsc::sync_channel::<Chunk>(BUFFERS);
        let writer = std::thread::Builder::new().name("blob-writer".into()).spawn(move || {
            let mut direct = true;
            for (mut chunk, offset) in hashed_rx {
                match file.write_all_at(chunk.filled(), offset) {
                    Err(e) if direct && e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                        // Accepted by fcntl, refused on write: no O_DIRECT after all.
                        direct = false;
                        rustix::fs::fcntl_setfl(&file, flags).map_err(io::Error::from)?;
                        file.write_all_at(chunk.filled(), offset)?;
                    }
                    other => other?,
                }
                chunk.len = 0;
                if empty_tx.send(chunk).is_err() {
                    break;
                }
            }
            Ok(())
        })?;
        let mut hash = self.hasher.take().ok_or_else(lost_hash)?;
        let hasher = std::thread::Builder::new().name("blob-hasher".into()).spawn(move || {
            for (chunk, offset) in full_rx {
                hash.update(chunk.filled());
                // The writer stopped (its error is reported at the join): stop too.
                if hashed.send((chunk, offset)).is_err() {
                    break;
                }
            }
            hash
        });
        let hasher = match hasher {
            Ok(h) => h,
            Err(e) => {
                // `hashed` is gone with the closure: the writer thread ends.
                let _ = writer.join();
                return Err(e);
            }
        };
        // The chunk being handed over now is the first; the caller fills a second.
        Ok(Some(Writer { full, empty, hasher, writer, allocated: 1 }))
    }

    /// The writer thread's error (the pipeline stopped taking chunks).
    fn writer_failed(&mut self) -> io::Error {
        match self.writer.take().map(|w| {
            drop(w.full);
            let _ = w.hasher.join();
            w.writer.join()
        }) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the blob writer thread panicked"),
            _ => io::Error::other("the blob writer thread stopped"),
        }
    }

    /// Whether full chunks go past the page cache (set once the first chunk is full).
    pub fn is_direct(&self) -> bool {
        self.writer.is_some()
    }

    /// Write what is left, wait for the pipeline and return the file, written whole (not
    /// yet synced), with the digest and size of what was written.
    pub fn finish(mut self) -> io::Result<(File, Digest, u64)> {
        if let Some(w) = self.writer.take() {
            drop(w.full);
            let hashed = w.hasher.join();
            match w.writer.join() {
                Ok(r) => r?,
                Err(_) => return Err(io::Error::other("the blob writer thread panicked")),
            }
            self.hasher = Some(hashed.map_err(|_| io::Error::other("the blob hasher thread panicked"))?);
            let flags = rustix::fs::fcntl_getfl(&self.file).map_err(io::Error::from)?;
            rustix::fs::fcntl_setfl(&self.file, flags.difference(OFlags::DIRECT)).map_err(io::Error::from)?;
        }
        let mut hasher = self.hasher.take().ok_or_else(lost_hash)?;
        if let Some(chunk) = self.chunk.take() {
            hasher.update(chunk.filled());
            self.file.write_all_at(chunk.filled(), self.offset)?;
        }
        let (digest, size) = hasher.finish();
        Ok((self.file, digest, size))
    }
}

/// A write after the pipeline failed: the hash went with it.
fn lost_hash() -> io::Error {
    io::Error::other("the blob was not written whole: an earlier write failed")
}

impl Write for BlobFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.chunk.as_ref().is_some_and(Chunk::is_full) {
            self.flush_chunk()?;
        }
        let chunk = self.chunk.get_or_insert_with(|| Chunk::first(buf.len()));
        if chunk.cap < CHUNK && chunk.room().len() < buf.len() {
            // A small blob grew: give it a full chunk.
            let mut big = Chunk::new();
            big.room()[..chunk.len].copy_from_slice(chunk.filled());
            big.len = chunk.len;
            *chunk = big;
        }
        let room = chunk.room();
        let n = room.len().min(buf.len());
        room[..n].copy_from_slice(&buf[..n]);
        chunk.len += n;
        Ok(n)
    }

    /// Chunks are written when full or at [`BlobFile::finish`]; nothing to do here.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes that differ at every offset of a chunk.
    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
    }

    fn written(data: &[u8], piece: usize, dir: &std::path::Path, direct_expected: bool) -> Vec<u8> {
        let path = dir.join(format!("blob-{}-{piece}", data.len()));
        let mut f = BlobFile::new(File::create(&path).unwrap());
        for p in data.chunks(piece) {
            f.write_all(p).unwrap();
        }
        if data.len() > CHUNK && direct_expected {
            assert!(f.is_direct(), "O_DIRECT was not used on {}", dir.display());
        }
        let (file, digest, size) = f.finish().unwrap();
        assert_eq!(file.metadata().unwrap().len(), data.len() as u64);
        assert_eq!((digest, size), (Digest::of_bytes(data), data.len() as u64), "{} bytes", data.len());
        // The file was written whole: the flag is off again for whoever reads it.
        let flags = rustix::fs::fcntl_getfl(&file).unwrap();
        assert!(!flags.contains(OFlags::DIRECT));
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn every_size_around_the_chunk_edges_is_written_exactly() {
        // /var/tmp is on disk on Debian: there the chunks go past the page cache.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        for n in [0, 1, 4095, 4096, 65_537, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12_345, 7 * CHUNK] {
            let data = pattern(n);
            for piece in [1 << 10, 64 << 10, 1 << 20, CHUNK + 7] {
                if n > CHUNK && piece == 1 << 10 {
                    continue; // the same path as 64 KiB pieces, only slower
                }
                assert!(written(&data, piece, dir.path(), true) == data, "{n} bytes in pieces of {piece}");
            }
        }
    }

    #[test]
    fn a_tmpfs_or_a_refusing_file_system_gets_the_same_bytes() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let data = pattern(2 * CHUNK + 99);
        assert!(written(&data, 1 << 20, dir.path(), false) == data);
    }
}
