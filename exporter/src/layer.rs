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

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use strata_oci::digest::{Digest, HashingWriter};
use strata_oci::media;
use strata_oci::store::{BlobStore, StoreError};

/// Number of zstd worker threads, fixed so the output never depends on the machine.
pub const ZSTD_WORKERS: u32 = 2;

/// The name of the opaque-directory marker inside a layer tar.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// The prefix of a whiteout entry's name inside a layer tar.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The xattr that marks an opaque directory in an overlay upper dir.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

const BLOCK: usize = 512;
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
    #[error("{path} has the overlayfs attribute {xattr}, which a layer cannot express; mount overlays with redirect_dir=off,metacopy=off")]
    UnsupportedOverlay { path: PathBuf, xattr: String },
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
        // bytes are hashed once, not twice.
        let mut tar_out = BufWriter::with_capacity(STREAM_BUFFER, &mut tmp);
        write_tar_stream(diff_dir, &mut tar_out, opts, &tmp_path)?;
        tar_out.flush().map_err(write_err)?;
        drop(tar_out);
        let (digest, size) = tmp.commit(store, None, None)?;
        let blob = LayerBlob { diff_id: digest.clone(), digest, size, media_type: layer_media_type(opts).to_string() };
        tracing::debug!(dir = %diff_dir.display(), digest = %blob.digest, size, "layer written");
        return Ok(blob);
    }
    let diff_id = {
        let sink = BufWriter::with_capacity(STREAM_BUFFER, &mut tmp);
        let compressor = Compressor::new(sink, opts.compression)?;
        let mut tar_out = BufWriter::with_capacity(STREAM_BUFFER, HashingWriter::new(compressor));
        write_tar_stream(diff_dir, &mut tar_out, opts, &tmp_path)?;
        let hashing = tar_out.into_inner().map_err(|e| write_err(e.into_error()))?;
        let (compressor, diff_id, _) = hashing.finish();
        let mut sink = compressor.finish().map_err(write_err)?;
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
    out: &'a mut W,
    opts: &'a LayerOptions,
    out_name: &'a Path,
    /// (dev, ino) → the archive name of its first appearance.
    links: HashMap<(u64, u64), Vec<u8>>,
    copy_buf: Vec<u8>,
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
    let mut walk = Walk { out, opts, out_name, links: HashMap::new(), copy_buf: vec![0; 64 * 1024] };
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
    walk.write(&[0u8; 2 * BLOCK])?;
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
        let whiteout = meta.file_type().is_char_device() && meta.rdev() == 0;
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

/// A tar entry, before encoding.
struct TarEntry {
    name: Vec<u8>,
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    linkname: Vec<u8>,
    devmajor: u32,
    devminor: u32,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl<W: Write> Walk<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), LayerError> {
        self.out.write_all(bytes).map_err(|source| LayerError::Write { path: self.out_name.to_path_buf(), source })
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
            kind: b'0',
            mode: c.meta.mode() & 0o7777,
            uid: c.meta.uid() as u64,
            gid: c.meta.gid() as u64,
            size: 0,
            mtime: self.mtime(&c.meta),
            linkname: Vec::new(),
            devmajor: 0,
            devminor: 0,
            xattrs: Vec::new(),
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
                e.kind = b'1';
                e.linkname = first.clone();
                self.header(&e)?;
                return Ok(false);
            }
            self.links.insert(key, c.rel.clone());
        }
        let (xattrs, opaque) = read_xattrs(&c.abs, ft.is_dir())?;
        e.xattrs = xattrs;
        if ft.is_dir() {
            e.kind = b'5';
            e.name.push(b'/');
            self.header(&e)?;
            if opaque {
                let mut name = c.rel.clone();
                name.push(b'/');
                name.extend_from_slice(OPAQUE_WHITEOUT.as_bytes());
                let marker = TarEntry { name, mode: 0, uid: 0, gid: 0, xattrs: Vec::new(), ..e };
                self.header(&TarEntry { kind: b'0', ..marker })?;
            }
            return Ok(true);
        }
        if ft.is_symlink() {
            let target = fs::read_link(&c.abs).map_err(|source| LayerError::Read { path: c.abs.clone(), source })?;
            e.kind = b'2';
            e.linkname = target.into_os_string().into_vec();
            self.header(&e)?;
        } else if ft.is_fifo() {
            e.kind = b'6';
            self.header(&e)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            e.kind = if ft.is_char_device() { b'3' } else { b'4' };
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
        let mut buf = std::mem::take(&mut self.copy_buf);
        let mut done = 0u64;
        let result = (|| {
            while done < size {
                let want = (size - done).min(buf.len() as u64) as usize;
                let n = match f.read(&mut buf[..want]) {
                    Ok(0) => {
                        return Err(LayerError::FileChanged { path: path.to_path_buf(), expected: size, actual: done })
                    }
                    Ok(n) => n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(read_err(err)),
                };
                self.write(&buf[..n])?;
                done += n as u64;
            }
            Ok(())
        })();
        self.copy_buf = buf;
        result?;
        let pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        self.write(&[0u8; BLOCK][..pad])
    }

    /// The PAX header (when needed) and the ustar header of `e`.
    fn header(&mut self, e: &TarEntry) -> Result<(), LayerError> {
        let mut pax: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        if e.name.len() > 100 {
            pax.insert(b"path".to_vec(), e.name.clone());
        }
        if e.linkname.len() > 100 {
            pax.insert(b"linkpath".to_vec(), e.linkname.clone());
        }
        if e.size > MAX_OCTAL_12 {
            pax.insert(b"size".to_vec(), e.size.to_string().into_bytes());
        }
        if e.uid > MAX_OCTAL_8 {
            pax.insert(b"uid".to_vec(), e.uid.to_string().into_bytes());
        }
        if e.gid > MAX_OCTAL_8 {
            pax.insert(b"gid".to_vec(), e.gid.to_string().into_bytes());
        }
        for (name, value) in &e.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(name);
            pax.insert(key, value.clone());
        }
        if !pax.is_empty() {
            let mut data = Vec::new();
            for (k, v) in &pax {
                pax_record(&mut data, k, v);
            }
            let hdr = ustar_header(&UstarFields {
                name: &pax_header_name(&e.name),
                kind: b'x',
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: data.len() as u64,
                mtime: 0,
                linkname: b"",
                devmajor: 0,
                devminor: 0,
            });
            self.write(&hdr)?;
            self.write(&data)?;
            let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
            self.write(&[0u8; BLOCK][..pad])?;
        }
        let hdr = ustar_header(&UstarFields {
            name: &e.name,
            kind: e.kind,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            mtime: e.mtime,
            linkname: &e.linkname,
            devmajor: e.devmajor,
            devminor: e.devminor,
        });
        self.write(&hdr)
    }
}

/// Extended attributes as (name, value) pairs.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The xattrs to store (sorted by name) and whether the directory is opaque.
fn read_xattrs(path: &Path, is_dir: bool) -> Result<(Xattrs, bool), LayerError> {
    let read_err = |source| LayerError::Read { path: path.to_path_buf(), source };
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(err) if is_unsupported(&err) => return Ok((Vec::new(), false)),
        Err(err) => return Err(read_err(err)),
    };
    let mut names: Vec<OsString> = names.collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut out = Vec::new();
    let mut opaque = false;
    for name in names {
        let n = name.as_bytes();
        if let Some(feature) = n.strip_prefix(b"trusted.overlay.") {
            if feature == b"redirect" || feature == b"metacopy" {
                return Err(LayerError::UnsupportedOverlay {
                    path: path.to_path_buf(),
                    xattr: name.to_string_lossy().into_owned(),
                });
            }
            if is_dir && feature == b"opaque" {
                opaque = xattr::get(path, &name).map_err(read_err)?.as_deref() == Some(b"y");
            }
            continue;
        }
        if n == b"security.selinux" {
            continue;
        }
        // Gone between list and get: nothing to store.
        if let Some(value) = xattr::get(path, &name).map_err(read_err)? {
            out.push((n.to_vec(), value));
        }
    }
    Ok((out, opaque))
}

fn is_unsupported(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA))
}

// ---------------------------------------------------------------------------------
// Header encoding

const MAX_OCTAL_8: u64 = 0o7777777; // 7 digits + NUL
const MAX_OCTAL_12: u64 = 0o77777777777; // 11 digits + NUL

struct UstarFields<'a> {
    name: &'a [u8],
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    linkname: &'a [u8],
    devmajor: u32,
    devminor: u32,
}

/// One 512-byte ustar header. Names longer than their fields are truncated (the PAX
/// header carries the full value); numbers too large for octal are written base-256.
fn ustar_header(f: &UstarFields<'_>) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    copy_truncated(&mut h[0..100], f.name);
    numeric(&mut h[100..108], f.mode as u64);
    numeric(&mut h[108..116], f.uid);
    numeric(&mut h[116..124], f.gid);
    numeric(&mut h[124..136], f.size);
    numeric(&mut h[136..148], f.mtime);
    h[156] = f.kind;
    copy_truncated(&mut h[157..257], f.linkname);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // uname [265..297] and gname [297..329] stay empty.
    numeric(&mut h[329..337], f.devmajor as u64);
    numeric(&mut h[337..345], f.devminor as u64);
    // prefix [345..500] stays empty: long names go to PAX.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let digits = format!("{sum:06o}");
    h[148..154].copy_from_slice(&digits.as_bytes()[digits.len() - 6..]);
    h[154] = 0;
    h[155] = b' ';
    h
}

fn copy_truncated(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Zero-padded octal and a NUL, or base-256 (high bit set) when it does not fit.
fn numeric(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    if digits >= 22 || value < (1u64 << (3 * digits)) {
        let s = format!("{value:0digits$o}");
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        let bytes = value.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&bytes);
        field[0] |= 0x80;
    }
}

/// `"<len> <key>=<value>\n"`, where `<len>` counts the whole record including itself.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// The name of a PAX header entry, as Go's archive/tar writes it:
/// `<dir>/PaxHeaders.0/<base>`, truncated to 100 bytes.
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let (dir, base) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..i + 1], &trimmed[i + 1..]),
        None => (&b""[..], trimmed),
    };
    let mut out = dir.to_vec();
    out.extend_from_slice(b"PaxHeaders.0/");
    out.extend_from_slice(base);
    out.truncate(100);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        for (k, v) in [(&b"path"[..], &b"x"[..]), (b"path", &[b'a'; 93][..]), (b"path", &[b'a'; 994][..])] {
            let mut out = Vec::new();
            pax_record(&mut out, k, v);
            let space = out.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&out[..space]).unwrap().parse().unwrap();
            assert_eq!(len, out.len());
        }
    }

    #[test]
    fn numeric_fields() {
        let mut f = [0u8; 8];
        numeric(&mut f, 0o755);
        assert_eq!(&f, b"0000755\0");
        numeric(&mut f, 1 << 21);
        assert_eq!(f[0], 0x80);
        assert_eq!(&f[1..], &[0, 0, 0, 0, 0x20, 0, 0]);
        let mut f = [0u8; 12];
        numeric(&mut f, 1);
        assert_eq!(&f, b"00000000001\0");
    }

    #[test]
    fn large_sizes_and_ids_get_pax_records_and_base256_fields() {
        let opts = LayerOptions::default();
        let mut out = Vec::new();
        let mut walk = Walk {
            out: &mut out,
            opts: &opts,
            out_name: Path::new("mem"),
            links: HashMap::new(),
            copy_buf: Vec::new(),
        };
        let size = 10u64 << 30;
        walk.header(&TarEntry {
            name: b"huge".to_vec(),
            kind: b'0',
            mode: 0o644,
            uid: 3_000_000,
            gid: 7,
            size,
            mtime: 1,
            linkname: Vec::new(),
            devmajor: 0,
            devminor: 0,
            xattrs: Vec::new(),
        })
        .unwrap();
        let pax = tar::Header::from_byte_slice(&out[..BLOCK]);
        assert_eq!(pax.entry_type(), tar::EntryType::XHeader);
        let len = pax.size().unwrap() as usize;
        let records = &out[BLOCK..BLOCK + len];
        let keys: Vec<&str> = tar::PaxExtensions::new(records).map(|e| e.unwrap().key().unwrap()).collect();
        assert_eq!(keys, ["size", "uid"], "sorted, only what is needed");
        let main_at = BLOCK + len.div_ceil(BLOCK) * BLOCK;
        let main = tar::Header::from_byte_slice(&out[main_at..main_at + BLOCK]);
        assert_eq!(main.size().unwrap(), size);
        assert_eq!(main.uid().unwrap(), 3_000_000);
        assert_eq!(main.gid().unwrap(), 7);
    }

    #[test]
    fn pax_header_names() {
        assert_eq!(pax_header_name(b"a/b/c"), b"a/b/PaxHeaders.0/c");
        assert_eq!(pax_header_name(b"dir/"), b"PaxHeaders.0/dir");
        assert!(pax_header_name(&[b'x'; 300]).len() == 100);
    }

    #[test]
    fn header_checksum_is_valid_for_tar_crate() {
        let h = ustar_header(&UstarFields {
            name: b"etc/passwd",
            kind: b'0',
            mode: 0o4755,
            uid: 1000,
            gid: 1000,
            size: 12,
            mtime: 1_700_000_000,
            linkname: b"",
            devmajor: 0,
            devminor: 0,
        });
        let parsed = tar::Header::from_byte_slice(&h);
        assert_eq!(parsed.cksum().unwrap(), {
            let mut copy = h;
            copy[148..156].copy_from_slice(b"        ");
            copy.iter().map(|&b| b as u32).sum::<u32>()
        });
        assert_eq!(parsed.mode().unwrap(), 0o4755);
        assert_eq!(parsed.path().unwrap().to_str(), Some("etc/passwd"));
        assert_eq!(parsed.uid().unwrap(), 1000);
        assert_eq!(parsed.mtime().unwrap(), 1_700_000_000);
    }
}
