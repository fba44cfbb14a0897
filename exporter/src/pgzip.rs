//! Parallel gzip whose bytes do not depend on the number of threads.
//!
//! The input is cut into fixed 1 MiB blocks; each block is deflated on its own (raw
//! deflate ending in a full flush, the last one finished), several blocks at once, and
//! the pieces are written in order behind one gzip header with the combined CRC-32.
//! Because the cut points never move, one core or eight give the same stream (pigz's
//! independent-block mode). Memory stays at two batches of `threads` blocks.

use std::io::{self, Write};

use flate2::{Compress, Compression, FlushCompress};

/// Bytes per independently deflated block.
pub const BLOCK: usize = 1 << 20;

/// A gzip encoder that compresses on several threads.
pub struct ParallelGzip<W: Write> {
    out: W,
    level: u32,
    threads: usize,
    pending: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
    header_written: bool,
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(out: W, level: u32, threads: usize) -> Self {
        ParallelGzip {
            out,
            level: level.min(9),
            threads: threads.max(1),
            pending: Vec::with_capacity(BLOCK * threads.max(1)),
            crc: crc32fast::Hasher::new(),
            total: 0,
            header_written: false,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_written {
            // magic, CM=deflate, no flags, mtime 0, XFL 0, OS 255 (unknown): fixed bytes.
            self.out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
            self.header_written = true;
        }
        Ok(())
    }

    /// Compress the complete blocks of `pending` (all of it when `last`).
    fn flush_blocks(&mut self, last: bool) -> io::Result<()> {
        self.header()?;
        // A block is deflated as non-final only when more input follows it, so where the
        // final block starts depends on the total length alone, never on write sizes.
        let full = if last { self.pending.len() } else { self.pending.len().saturating_sub(1) / BLOCK * BLOCK };
        if full == 0 && !last {
            return Ok(());
        }
        let data = &self.pending[..full];
        let chunks: Vec<&[u8]> = if data.is_empty() { vec![&[][..]] } else { data.chunks(BLOCK).collect() };
        let n = chunks.len();
        let level = self.level;
        let mut outputs: Vec<io::Result<Vec<u8>>> = (0..n).map(|_| Ok(Vec::new())).collect();
        std::thread::scope(|s| {
            let per = n.div_ceil(self.threads);
            for (ci, slot) in chunks.chunks(per).zip(outputs.chunks_mut(per)).enumerate() {
                let base = ci * per;
                s.spawn(move || {
                    for (k, (chunk, out)) in slot.0.iter().zip(slot.1.iter_mut()).enumerate() {
                        let is_final = last && base + k == n - 1;
                        *out = deflate_block(chunk, level, is_final);
                    }
                });
            }
        });
        for o in outputs {
            self.out.write_all(&o?)?;
        }
        self.pending.drain(..full);
        Ok(())
    }

    /// Write the last block and the trailer; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_blocks(true)?;
        let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&(self.total as u32).to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Bytes of each sample taken to judge whether a block compresses at all.
const PROBE: usize = 8 * 1024;
/// Samples per block, spread evenly through it.
const PROBES: usize = 4;
/// A block whose samples shrink by less than this (per mille) is stored, not deflated.
const STORE_BELOW_SAVING: usize = 30;

/// Does `data` look incompressible (random bytes, already compressed files)? A few
/// samples are deflated at the fastest level; a pure function of the bytes, so the
/// stream stays the same whatever the thread count. Deflating such data at level 6
/// costs as much as compressible data and gains nothing: those blocks are stored.
fn looks_incompressible(data: &[u8]) -> bool {
    if data.len() < PROBE * PROBES {
        return false;
    }
    let step = (data.len() - PROBE) / (PROBES - 1);
    let (mut input, mut output) = (0usize, 0usize);
    for i in 0..PROBES {
        let sample = &data[i * step..i * step + PROBE];
        let mut c = Compress::new(Compression::new(1), false);
        let mut out = Vec::with_capacity(PROBE + 1024);
        if c.compress_vec(sample, &mut out, FlushCompress::Finish).is_err() {
            return false;
        }
        input += sample.len();
        output += out.len();
    }
    output * 1000 >= input * (1000 - STORE_BELOW_SAVING)
}

/// `data` as raw deflate stored blocks (at most 65 535 bytes each), the last marked
/// final when `last`; byte-aligned like a full flush.
fn stored_blocks(data: &[u8], last: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65_535 * 5 + 10);
    let mut pieces = data.chunks(65_535).peekable();
    if pieces.peek().is_none() {
        out.extend_from_slice(&[u8::from(last), 0, 0, 0xff, 0xff]);
        return out;
    }
    while let Some(piece) = pieces.next() {
        let is_final = last && pieces.peek().is_none();
        let len = piece.len() as u16;
        out.push(u8::from(is_final));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
    out
}

/// Raw deflate of one block: a full flush (byte-aligned, not final) or, for the last
/// block, a finished stream. Incompressible blocks are stored as they are.
fn deflate_block(data: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    if level > 0 && looks_incompressible(data) {
        return Ok(stored_blocks(data, last));
    }
    let mut c = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Full };
    let mut input = data;
    loop {
        if out.capacity() - out.len() < 64 * 1024 {
            out.reserve(256 * 1024);
        }
        let before_in = c.total_in();
        let status = c.compress_vec(input, &mut out, flush).map_err(io::Error::other)?;
        input = &input[(c.total_in() - before_in) as usize..];
        match status {
            flate2::Status::StreamEnd => break,
            _ if input.is_empty() && !last && out.len() < out.capacity() => break,
            _ => {}
        }
    }
    Ok(out)
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.crc.update(buf);
        self.total += buf.len() as u64;
        self.pending.extend_from_slice(buf);
        if self.pending.len() > BLOCK * self.threads {
            self.flush_blocks(false)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        let mut x: u32 = 1;
        while v.len() < n {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            if x.is_multiple_of(3) {
                v.extend_from_slice(b"some compressible text line ");
            } else {
                v.push((x >> 16) as u8);
            }
        }
        v.truncate(n);
        v
    }

    fn gz(data: &[u8], threads: usize) -> Vec<u8> {
        let mut e = ParallelGzip::new(Vec::new(), 6, threads);
        for piece in data.chunks(777_777) {
            e.write_all(piece).unwrap();
        }
        e.finish().unwrap()
    }

    fn random(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn incompressible_blocks_are_stored_and_still_round_trip() {
        let mut data = random(3 * BLOCK + 999);
        // One compressible block in the middle stays deflated.
        data[BLOCK..2 * BLOCK].copy_from_slice(&sample(BLOCK));
        assert!(looks_incompressible(&data[..BLOCK]));
        assert!(!looks_incompressible(&data[BLOCK..2 * BLOCK]));
        let one = gz(&data, 1);
        assert_eq!(one, gz(&data, 2));
        assert!(one.len() < data.len() + data.len() / 1000, "stored blocks add little: {}", one.len());
        assert!(one.len() > data.len() * 2 / 3, "random data cannot shrink much: {}", one.len());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&one[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        // And an external gunzip agrees.
        let mut child = std::process::Command::new("gzip")
            .args(["-dc"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || stdin.write_all(&one));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }

    #[test]
    fn stored_blocks_cover_empty_and_exact_sizes() {
        for n in [0usize, 1, 65_535, 65_536, 200_000] {
            let data = random(n);
            let stored = stored_blocks(&data, true);
            let mut d = flate2::read::DeflateDecoder::new(&stored[..]);
            let mut back = Vec::new();
            d.read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "n={n}");
        }
    }

    #[test]
    fn round_trips_and_is_independent_of_threads() {
        for n in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 5 * BLOCK + 12345] {
            let data = sample(n);
            let one = gz(&data, 1);
            assert_eq!(one, gz(&data, 2), "n={n}");
            assert_eq!(one, gz(&data, 7), "n={n}");
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..]).read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "n={n}");
        }
    }
}
