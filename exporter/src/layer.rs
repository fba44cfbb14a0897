//! A diff directory → a deterministic layer blob.
//!
//! This module owns the writing end of a layer: it walks a *diff directory* (an
//! overlayfs upper dir, or anything in that form) and streams a tar archive out of it,
//! through a compressor, into the blob store. The reading end (layer → directory) is
//! `strata_executor::unpack`; the two agree on the overlay form described below.
//!
//! # The diff directory
//!
//! A deleted path is a character device 0/0 with that name; a directory whose lower
//! contents are hidden carries the xattr `trusted.overlay.opaque=y`. In the tar these
//! become the OCI/AUFS whiteouts: a device `x` → an empty regular file `.wh.x` (mode 0,
//! owner 0:0), an opaque directory `d` → the entry `d/` immediately followed by an empty
//! `d/.wh..wh..opq`. Overlay features that a diff cannot express (`redirect_dir`,
//! `metacopy`) are refused with [`LayerError::UnsupportedOverlay`].
//!
//! # The tar stream (same input → same bytes)
//!
//! Headers are built here, field by field, rather than by `tar::Builder` (whose
//! `append_dir_all` and deterministic mode rewrite owners and modes, and whose sparse
//! detection depends on the file system):
//!
//! - entries in a depth-first walk, each directory's children sorted by the bytes of
//!   their names in the archive, parents before children; the root itself is not
//!   stored;
//! - names relative, no `./` or `/` prefix, directories end with `/` (as BuildKit and
//!   Docker write them);
//! - ustar headers: numeric uid/gid from the file, empty uname/gname, mode = permission
//!   bits with setuid/setgid/sticky, mtime in whole seconds (clamped to
//!   `source_date_epoch` when set; times before 1970 are written as 0), no atime/ctime;
//! - a PAX extended header (`x`) only when needed: names or link targets over 100
//!   bytes (`path`, `linkpath`), sizes ≥ 8 GiB and ids ≥ 2²¹ (`size`, `uid`, `gid`, also
//!   written base-256 in the ustar field), and xattrs (`SCHILY.xattr.<name>`, records
//!   sorted by key). `trusted.overlay.*` is never stored, nor `security.selinux` (a
//!   label of the build host, not of the image); `security.capability` is;
//! - hard links: the second path of an inode seen twice is a link entry to the first;
//! - symlinks, FIFOs, char and block devices; sockets are skipped (Docker does too);
//! - two zero blocks at the end and no padding to a record size, like Go's
//!   `archive/tar`.
//!
//! # Compression
//!
//! The tar stream goes `tar → sha256 (diff_id) → compressor → sha256 (digest) → store
//! temp file` with bounded buffers; a layer is never held in memory.
//!
//! - gzip: flate2 with the zlib-rs backend, one stream, header mtime 0, no file name,
//!   OS byte 255 ("unknown", as Go writes it). Single-threaded, so the output does not
//!   depend on the machine.
//! - zstd: always libzstd's multithreaded mode with [`ZSTD_WORKERS`] workers, whatever
//!   the number of cores. libzstd's output depends on whether workers are used at all
//!   (0 vs ≥ 1) but not on how fast they run, so fixing the count keeps the bytes the
//!   same on a laptop and a 64-core CI runner while still using two cores.
//!
//! Media types are OCI's unless `oci_media_types` is false, then Docker schema2's;
//! zstd layers always use the OCI type (Docker schema2 has none; BuildKit does the
//! same).
//!
//! ```no_run
//! use strata_exporter::layer::{write_layer, LayerOptions, Compression};
//! use strata_oci::store::BlobStore;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = BlobStore::open("/var/lib/strata/store")?;
//! let opts = LayerOptions { compression: Compression::Gzip { level: 6 }, source_date_epoch: Some(0), oci_media_types: true };
//! let blob = write_layer("/var/lib/strata/snapshots/42/upper".as_ref(), &store, &opts)?;
//! println!("{} (diff_id {}) {} bytes {}", blob.digest, blob.diff_id, blob.size, blob.media_type);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use strata_fstree::overlay::{diff_xattrs, is_whiteout};
use strata_fstree::tar::{kind, ContentError, TarEntry, TarWriter};
use strata_oci::digest::{Digest, HashingWriter};
use strata_oci::media;
use strata_oci::store::{BlobStore, StoreError};

/// Number of zstd worker threads, fixed so the output never depends on the machine.
pub const ZSTD_WORKERS: u32 = 2;

pub use strata_fstree::overlay::{OPAQUE_WHITEOUT, WHITEOUT_PREFIX};

const STREAM_BUFFER: usize = 128 * 1024;

/// How the tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip, `level` 0–9.
    Gzip {
        level: u32,
    },
    /// zstd, `level` in libzstd's range (1–22, or negative for the fast levels).
    Zstd {
        level: i32,
    },
    Uncompressed,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip { level: 6 }
    }
}

/// How a layer is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerOptions {
    pub compression: Compression,
    /// Clamp every mtime to at most this (seconds since the epoch), as `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: Option<i64>,
    /// OCI media types (true) or Docker schema2 ones (false).
    pub oci_media_types: bool,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions { compression: Compression::default(), source_date_epoch: None, oci_media_types: true }
    }
}

/// A layer written to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// Digest of the blob as stored (compressed).
    pub digest: Digest,
    /// Digest of the uncompressed tar stream (the image config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Size of the blob as stored.
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("diff directory {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("reading {path} for the layer: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing the layer stream (at {path}): {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} changed while it was archived: its size was {expected} bytes but only {actual} could be read; make sure nothing writes to the snapshot while it is exported")]
    FileChanged { path: PathBuf, expected: u64, actual: u64 },
    #[error(transparent)]
    Overlay(#[from] strata_fstree::overlay::OverlayError),
    #[error("invalid {algorithm} compression level {level}: {expected}")]
    InvalidLevel { algorithm: &'static str, level: i64, expected: &'static str },
    #[error("starting the {algorithm} compressor: {source}")]
    Compressor { algorithm: &'static str, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The media type a layer written with these options gets.
pub fn layer_media_type(opts: &LayerOptions) -> &'static str {
    match (opts.compression, opts.oci_media_types) {
        (Compression::Gzip { .. }, true) => media::OCI_LAYER_GZIP,
        (Compression::Gzip { .. }, false) => media::DOCKER_LAYER_GZIP,
        // Docker schema2 has no zstd layer type; BuildKit uses the OCI one too.
        (Compression::Zstd { .. }, _) => media::OCI_LAYER_ZSTD,
        (Compression::Uncompressed, true) => media::OCI_LAYER_TAR,
        (Compression::Uncompressed, false) => media::DOCKER_LAYER_TAR,
    }
}

/// Write the layer of `diff_dir` into `store`: tar, compress, hash, commit.
pub fn write_layer(diff_dir: &Path, store: &BlobStore, opts: &LayerOptions) -> Result<LayerBlob, LayerError> {
    check_level(opts.compression)?;
    let mut tmp = store.temp_file()?;
    let tmp_path = tmp.path().to_path_buf();
    let write_err = |source: io::Error| LayerError::Write { path: tmp_path.clone(), source };

    if opts.compression == Compression::Uncompressed {
        // The blob is the tar: the store's own digest of it is the diff_id, so the
        // bytes are hashed once, not twice. No buffer in between: the store's blob file
        // collects what it is given in chunks of its own, and a second buffer would
        // copy every byte of the layer once more.
        write_tar_stream(diff_dir, &mut tmp, opts, &tmp_path)?;
        tmp.flush().map_err(write_err)?;
        let (digest, size) = tmp.commit(store, None, None)?;
        let blob = LayerBlob { diff_id: digest.clone(), digest, size, media_type: layer_media_type(opts).to_string() };
        tracing::debug!(dir = %diff_dir.display(), digest = %blob.digest, size, "layer written");
        return Ok(blob);
    }
    let diff_id = {
        // The compressor's output goes straight into the blob file's chunks.
        let compressor = Compressor::new(&mut tmp, opts.compression)?;
        let mut tar_out = BufWriter::with_capacity(STREAM_BUFFER, HashingWriter::new(compressor));
        write_tar_stream(diff_dir, &mut tar_out, opts, &tmp_path)?;
        let hashing = tar_out.into_inner().map_err(|e| write_err(e.into_error()))?;
        let (compressor, diff_id, _) = hashing.finish();
        let sink = compressor.finish().map_err(write_err)?;
        sink.flush().map_err(write_err)?;
        diff_id
    };
    let (digest, size) = tmp.commit(store, None, None)?;
    let blob = LayerBlob { digest, diff_id, size, media_type: layer_media_type(opts).to_string() };
    tracing::debug!(dir = %diff_dir.display(), digest = %blob.digest, diff_id = %blob.diff_id, size, "layer written");
    Ok(blob)
}

/// Write the uncompressed tar stream of `diff_dir` to `out`; returns its digest (the diff_id).
///
/// `opts.compression` and `opts.oci_media_types` are not used here.
pub fn write_layer_tar(diff_dir: &Path, out: &mut dyn Write, opts: &LayerOptions) -> Result<Digest, LayerError> {
    let out_name = PathBuf::from("<tar output>");
    let write_err = |source: io::Error| LayerError::Write { path: out_name.clone(), source };
    let mut tar_out = BufWriter::with_capacity(STREAM_BUFFER, HashingWriter::new(out));
    write_tar_stream(diff_dir, &mut tar_out, opts, &out_name)?;
    let hashing = tar_out.into_inner().map_err(|e| write_err(e.into_error()))?;
    let (out, diff_id, _) = hashing.finish();
    out.flush().map_err(write_err)?;
    Ok(diff_id)
}

fn check_level(c: Compression) -> Result<(), LayerError> {
    match c {
        Compression::Gzip { level } if level > 9 => {
            Err(LayerError::InvalidLevel { algorithm: "gzip", level: level as i64, expected: "use 0 to 9" })
        }
        Compression::Zstd { level } if !zstd::compression_level_range().contains(&level) => {
            Err(LayerError::InvalidLevel {
                algorithm: "zstd",
                level: level as i64,
                expected: "use 1 to 22 (or a negative fast level)",
            })
        }
        _ => Ok(()),
    }
}

/// The compressing stage of the pipeline.
pub(crate) enum Compressor<W: Write> {
    Gzip(crate::pgzip::ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Plain(W),
}

impl<W: Write> Compressor<W> {
    pub(crate) fn new(w: W, c: Compression) -> Result<Self, LayerError> {
        Ok(match c {
            // Every core, same bytes whatever their number (fixed 1 MiB blocks).
            Compression::Gzip { level } => Compressor::Gzip(crate::pgzip::ParallelGzip::new(
                w,
                level,
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            )),
            Compression::Zstd { level } => {
                let err = |source| LayerError::Compressor { algorithm: "zstd", source };
                let mut e = zstd::stream::write::Encoder::new(w, level).map_err(err)?;
                e.multithread(ZSTD_WORKERS).map_err(err)?;
                Compressor::Zstd(e)
            }
            Compression::Uncompressed => Compressor::Plain(w),
        })
    }

    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Gzip(e) => e.finish(),
            Compressor::Zstd(e) => e.finish(),
            Compressor::Plain(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(e) => e.write(buf),
            Compressor::Zstd(e) => e.write(buf),
            Compressor::Plain(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(e) => e.flush(),
            Compressor::Zstd(e) => e.flush(),
            Compressor::Plain(w) => w.flush(),
        }
    }
}

// ---------------------------------------------------------------------------------
// The walk

/// One child of a directory being walked.
struct Child {
    abs: PathBuf,
    /// The name in the archive, relative, without a trailing `/`.
    rel: Vec<u8>,
    meta: Metadata,
    whiteout: bool,
}

struct Walk<'a, W: Write> {
    tar: TarWriter<&'a mut W>,
    opts: &'a LayerOptions,
    out_name: &'a Path,
    /// (dev, ino) → the archive name of its first appearance.
    links: HashMap<(u64, u64), Vec<u8>>,
}

fn write_tar_stream<W: Write>(
    diff_dir: &Path,
    out: &mut W,
    opts: &LayerOptions,
    out_name: &Path,
) -> Result<(), LayerError> {
    let meta = fs::metadata(diff_dir).map_err(|source| LayerError::Read { path: diff_dir.to_path_buf(), source })?;
    if !meta.is_dir() {
        return Err(LayerError::NotADirectory { path: diff_dir.to_path_buf() });
    }
    let mut walk = Walk { tar: TarWriter::new(out), opts, out_name, links: HashMap::new() };
    // Depth-first with an explicit stack: deep trees do not grow the call stack.
    let mut stack: Vec<std::vec::IntoIter<Child>> = vec![read_children(diff_dir, b"")?.into_iter()];
    while let Some(top) = stack.last_mut() {
        let Some(child) = top.next() else {
            stack.pop();
            continue;
        };
        if walk.entry(&child)? {
            stack.push(read_children(&child.abs, &child.rel)?.into_iter());
        }
    }
    walk.tar.finish().map_err(|source| LayerError::Write { path: out_name.to_path_buf(), source })?;
    Ok(())
}

/// The children of `dir`, sorted by their names in the archive.
fn read_children(dir: &Path, rel: &[u8]) -> Result<Vec<Child>, LayerError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LayerError::Read { path, source }
    };
    let mut children = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err(dir))? {
        let entry = entry.map_err(read_err(dir))?;
        let abs = entry.path();
        let meta = fs::symlink_metadata(&abs).map_err(read_err(&abs))?;
        let whiteout = is_whiteout(&meta);
        let name = entry.file_name();
        let mut child_rel = Vec::with_capacity(rel.len() + name.len() + 5);
        if !rel.is_empty() {
            child_rel.extend_from_slice(rel);
            child_rel.push(b'/');
        }
        if whiteout {
            child_rel.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
        }
        child_rel.extend_from_slice(name.as_bytes());
        children.push((name, Child { abs, rel: child_rel, meta, whiteout }));
    }
    // By archive name; the source name breaks the (pathological) tie between a
    // whiteout `x` and a file literally named `.wh.x`.
    children.sort_by(|(an, a), (bn, b)| a.rel.cmp(&b.rel).then_with(|| an.as_bytes().cmp(bn.as_bytes())));
    Ok(children.into_iter().map(|(_, c)| c).collect())
}

impl<W: Write> Walk<'_, W> {
    fn header(&mut self, e: &TarEntry) -> Result<(), LayerError> {
        self.tar.header(e).map_err(|source| LayerError::Write { path: self.out_name.to_path_buf(), source })
    }

    fn mtime(&self, meta: &Metadata) -> u64 {
        let mut t = meta.mtime();
        if let Some(epoch) = self.opts.source_date_epoch {
            t = t.min(epoch);
        }
        t.max(0) as u64
    }

    /// Write one child's entries; true if it is a directory to descend into.
    fn entry(&mut self, c: &Child) -> Result<bool, LayerError> {
        let ft = c.meta.file_type();
        let mut e = TarEntry {
            name: c.rel.clone(),
            kind: kind::REGULAR,
            mode: c.meta.mode() & 0o7777,
            uid: c.meta.uid() as u64,
            gid: c.meta.gid() as u64,
            mtime: self.mtime(&c.meta),
            ..TarEntry::default()
        };
        if c.whiteout {
            e.mode = 0;
            e.uid = 0;
            e.gid = 0;
            self.header(&e)?;
            return Ok(false);
        }
        if ft.is_socket() {
            tracing::debug!(path = %c.abs.display(), "socket skipped: sockets cannot be stored in a layer");
            return Ok(false);
        }
        if !ft.is_dir() && c.meta.nlink() > 1 {
            let key = (c.meta.dev(), c.meta.ino());
            if let Some(first) = self.links.get(&key) {
                e.kind = kind::HARD_LINK;
                e.linkname = first.clone();
                self.header(&e)?;
                return Ok(false);
            }
            self.links.insert(key, c.rel.clone());
        }
        let (xattrs, opaque) = diff_xattrs(&c.abs, ft.is_dir())?;
        e.xattrs = xattrs;
        if ft.is_dir() {
            e.kind = kind::DIRECTORY;
            e.name.push(b'/');
            self.header(&e)?;
            if opaque {
                let mut name = c.rel.clone();
                name.push(b'/');
                name.extend_from_slice(OPAQUE_WHITEOUT.as_bytes());
                let marker = TarEntry { name, kind: kind::REGULAR, mode: 0, uid: 0, gid: 0, xattrs: Vec::new(), ..e };
                self.header(&marker)?;
            }
            return Ok(true);
        }
        if ft.is_symlink() {
            let target = fs::read_link(&c.abs).map_err(|source| LayerError::Read { path: c.abs.clone(), source })?;
            e.kind = kind::SYMLINK;
            e.linkname = target.into_os_string().into_vec();
            self.header(&e)?;
        } else if ft.is_fifo() {
            e.kind = kind::FIFO;
            self.header(&e)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            e.kind = if ft.is_char_device() { kind::CHAR_DEVICE } else { kind::BLOCK_DEVICE };
            let dev = c.meta.rdev();
            e.devmajor = rustix::fs::major(dev);
            e.devminor = rustix::fs::minor(dev);
            self.header(&e)?;
        } else {
            e.size = c.meta.len();
            self.file(&c.abs, e)?;
        }
        Ok(false)
    }

    /// A regular file: header, exactly `size` bytes of content, padding.
    fn file(&mut self, path: &Path, e: TarEntry) -> Result<(), LayerError> {
        let read_err = |source| LayerError::Read { path: path.to_path_buf(), source };
        let mut f =
            File::options().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY).open(path).map_err(read_err)?;
        let size = e.size;
        self.header(&e)?;
        self.tar.content(&mut f, size).map_err(|err| match err {
            ContentError::Read(source) => LayerError::Read { path: path.to_path_buf(), source },
            ContentError::Short(actual) => LayerError::FileChanged { path: path.to_path_buf(), expected: size, actual },
            ContentError::Write(source) => LayerError::Write { path: self.out_name.to_path_buf(), source },
        })
    }
}
