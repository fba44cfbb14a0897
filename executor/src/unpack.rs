//! A layer blob → a snapshot directory, safely.
//!
//! This module owns the reading end of a layer: it decompresses a layer blob (or any
//! tar archive, for `ADD`), hashes the uncompressed stream (the diff_id), and extracts
//! it into a directory in overlayfs upper-dir form, so that the directory can serve
//! directly as an overlay lowerdir. The writing end is the exporter's `layer` module.
//!
//! # Nothing is written outside the root
//!
//! Layers come from registries and tarballs and are hostile until proven otherwise.
//! Every entry is placed by file descriptors relative to a descriptor of `dest`, never
//! by joining host paths:
//!
//! - names are cleaned as if rooted at `dest`: a leading `/` is dropped, `.` and empty
//!   components are ignored, and `..` stops at the root (`../escape` → `escape`);
//! - the parent directory of an entry is resolved with `openat2(RESOLVE_IN_ROOT)`, so a
//!   symlink in the image is followed *inside* the image: with `etc -> /etc`, the entry
//!   `etc/passwd` lands at `dest/etc/passwd`, and `up -> ../../..` resolves to `dest`.
//!   Missing parents are created the same way, component by component (a userspace walk
//!   with the same rules, also used where `openat2` is unavailable);
//! - the last component is never followed: files are created with
//!   `O_CREAT|O_EXCL|O_NOFOLLOW` after whatever was there is removed; times and owners
//!   are set with `AT_SYMLINK_NOFOLLOW`;
//! - hard links must name a path inside the layer: an absolute target or one whose
//!   `..` climbs above the root is refused ([`UnpackError::HardlinkOutsideRoot`]), and
//!   the target is resolved in the root like any other path;
//! - device nodes are created only with [`UnpackOptions::allow_devices`] (otherwise
//!   skipped and counted); FIFOs always;
//! - `trusted.overlay.*` and `user.overlay.*` xattrs from the archive are dropped, so a
//!   layer cannot forge overlay metadata (redirects, opaqueness) except through the
//!   whiteout entries below.
//!
//! # Whiteouts become overlay form
//!
//! Each layer is unpacked into its own empty directory, so a whiteout does not delete
//! anything from a lower layer here; it is *recorded* the way overlayfs records it:
//! `.wh.<name>` → a character device 0/0 named `<name>` (replacing anything the same
//! archive put there), `.wh..wh..opq` → the xattr `trusted.overlay.opaque=y` on its
//! directory. Other `.wh..wh.*` names (AUFS bookkeeping) are ignored.
//!
//! # What is preserved
//!
//! Mode bits including setuid/setgid/sticky, numeric uid/gid (`lchown` for symlinks),
//! mtimes (PAX sub-second mtimes too; atime is set equal), xattrs from PAX
//! `SCHILY.xattr.*` records, hard links, symlinks, FIFOs and devices. Directory mtimes
//! are set after the whole archive is written, so their contents do not disturb them.
//!
//! # Verification
//!
//! The diff_id (sha256 of the uncompressed tar, including anything after the end
//! blocks) is computed while reading and checked against
//! [`UnpackOptions::verify_diff_id`] at the end. On any error — a mismatch included —
//! the destination is left partially written: unpack into a fresh directory and rename
//! it into place only on success.
//!
//! ```no_run
//! use strata_executor::unpack::{unpack_layer, UnpackOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut blob = std::fs::File::open("layer.tar.gz")?;
//! let opts = UnpackOptions { allow_devices: true, verify_diff_id: None };
//! let stats = unpack_layer(&mut blob, None, "/var/lib/strata/snapshots/1/fs".as_ref(), &opts)?;
//! println!("{} entries, diff_id {}", stats.entries, stats.diff_id);
//! # Ok(()) }
//! ```

use std::collections::VecDeque;

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use strata_oci::digest::{Digest, HashingReader};
use strata_oci::media;

/// How many symlinks one path may traverse (the kernel's limit too).
const MAX_SYMLINKS: u32 = 40;
/// How deep the userspace walk may go (each level holds a file descriptor).
const MAX_WALK_DEPTH: usize = 512;
const READ_BUFFER: usize = 128 * 1024;

/// The compression of an archive stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveCompression {
    None,
    Gzip,
    Zstd,
    Bzip2,
    Xz,
}

impl ArchiveCompression {
    /// Judge by the first bytes of the stream (6 are enough); anything unknown is plain.
    pub fn detect(magic: &[u8]) -> ArchiveCompression {
        match media::LayerCompression::sniff(magic) {
            media::LayerCompression::Gzip => return ArchiveCompression::Gzip,
            media::LayerCompression::Zstd => return ArchiveCompression::Zstd,
            media::LayerCompression::None => {}
        }
        if magic.len() >= 4 && magic.starts_with(b"BZh") && (b'1'..=b'9').contains(&magic[3]) {
            ArchiveCompression::Bzip2
        } else if magic.starts_with(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
            ArchiveCompression::Xz
        } else {
            ArchiveCompression::None
        }
    }

    /// The compression a layer media type announces, if strata knows the type.
    pub fn from_media_type(media_type: &str) -> Option<ArchiveCompression> {
        media::layer_compression(media_type).map(|c| match c {
            media::LayerCompression::None => ArchiveCompression::None,
            media::LayerCompression::Gzip => ArchiveCompression::Gzip,
            media::LayerCompression::Zstd => ArchiveCompression::Zstd,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ArchiveCompression::None => "uncompressed",
            ArchiveCompression::Gzip => "gzip",
            ArchiveCompression::Zstd => "zstd",
            ArchiveCompression::Bzip2 => "bzip2",
            ArchiveCompression::Xz => "xz",
        }
    }
}

/// Peek at the first bytes of `r` to detect its compression; returns it with a reader
/// that still yields every byte.
pub fn sniff_compression<'a>(mut r: impl Read + 'a) -> io::Result<(ArchiveCompression, Box<dyn Read + 'a>)> {
    let mut magic = [0u8; 6];
    let mut n = 0;
    while n < magic.len() {
        match r.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let c = ArchiveCompression::detect(&magic[..n]);
    Ok((c, Box::new(io::Cursor::new(magic[..n].to_vec()).chain(r))))
}

/// A reader of `r` decompressed as `c` (multi-member gzip/bzip2/xz and multi-frame
/// zstd streams are read to the end).
pub fn decompress_as<'a>(r: impl Read + 'a, c: ArchiveCompression) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        ArchiveCompression::None => Box::new(r),
        ArchiveCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        // libzstd's default window limit (128 MiB) applies, as with the zstd CLI.
        ArchiveCompression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        ArchiveCompression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
        ArchiveCompression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
    })
}

/// A reader of `r` decompressed by its magic bytes (gzip, zstd, bzip2, xz, or plain).
pub fn open_decompressed<'a>(r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let (c, r) = sniff_compression(r)?;
    decompress_as(r, c)
}

/// How a layer is unpacked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackOptions {
    /// Create character and block devices (true only when running as root).
    pub allow_devices: bool,
    /// Fail unless the uncompressed stream has this digest.
    pub verify_diff_id: Option<Digest>,
}

/// What an unpack did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Size of the uncompressed tar stream.
    pub tar_size: u64,
    pub compression: ArchiveCompression,
    /// Archive entries read (PAX and long-name headers not counted).
    pub entries: u64,
    pub files: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub devices: u64,
    pub fifos: u64,
    /// `.wh.<name>` entries turned into 0/0 character devices.
    pub whiteouts: u64,
    /// `.wh..wh..opq` entries turned into `trusted.overlay.opaque=y`.
    pub opaque_dirs: u64,
    /// Entries not created: devices without `allow_devices`, unknown entry types,
    /// AUFS bookkeeping.
    pub skipped: u64,
    /// Extended attributes the file system refused as unsupported.
    pub xattrs_skipped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("unsupported layer media type {media_type:?}: expected a tar, tar+gzip or tar+zstd layer")]
    UnsupportedMediaType { media_type: String },
    #[error("opening the unpack destination {path}: {source}")]
    Dest { path: PathBuf, source: io::Error },
    #[error("reading the {compression} layer stream after {entries} entries: {source}")]
    Read { compression: &'static str, entries: u64, source: io::Error },
    #[error("{op} {entry:?} in {dest}: {source}")]
    Io { op: &'static str, entry: String, dest: PathBuf, source: io::Error },
    #[error("invalid archive entry {entry:?}: {reason}")]
    InvalidEntry { entry: String, reason: String },
    #[error("hard link {entry:?} points outside the layer root to {target:?}; refusing to extract it")]
    HardlinkOutsideRoot { entry: String, target: String },
    #[error("hard link {entry:?} points to {target:?}, which is not in the layer")]
    HardlinkTargetMissing { entry: String, target: String },
    #[error("cannot place {entry:?}: {component:?} is in the way and is not a directory")]
    NotADirectory { entry: String, component: String },
    #[error("cannot place {entry:?}: too many levels of symbolic links")]
    TooManySymlinks { entry: String },
    #[error("cannot place {entry:?}: the path is too deep")]
    PathTooDeep { entry: String },
    #[error("{entry:?} is owned by {uid}:{gid}, an id this user namespace does not map: {hint}")]
    UnmappedOwner { entry: String, uid: u32, gid: u32, hint: &'static str },
    #[error("layer diff_id mismatch: expected {expected}, the uncompressed stream has {actual}; the blob is corrupt or not the layer the image config names")]
    DiffIdMismatch { expected: Digest, actual: Digest },
}

/// Unpack the layer `blob` into `dest` (an existing, normally empty directory).
///
/// `media_type_or_autodetect`: a layer media type (its compression is trusted), or
/// `None` to detect the compression from the first bytes.
pub fn unpack_layer(
    blob: &mut dyn Read,
    media_type_or_autodetect: Option<&str>,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let root = rustix::fs::open(dest, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| UnpackError::Dest { path: dest.to_path_buf(), source: e.into() })?;

    let (compression, stream): (ArchiveCompression, Box<dyn Read + '_>) = match media_type_or_autodetect {
        Some(mt) => {
            let c = ArchiveCompression::from_media_type(mt)
                .ok_or_else(|| UnpackError::UnsupportedMediaType { media_type: mt.to_string() })?;
            (c, Box::new(blob))
        }
        None => {
            sniff_compression(blob).map_err(|source| UnpackError::Read { compression: "layer", entries: 0, source })?
        }
    };
    let read_err = |entries: u64| move |source| UnpackError::Read { compression: compression.name(), entries, source };
    let decompressed = decompress_as(stream, compression).map_err(read_err(0))?;
    let mut tar_stream = BufReader::with_capacity(READ_BUFFER, HashingReader::new(decompressed));

    let mut unpacker = Unpacker {
        root,
        dest: dest.to_path_buf(),
        opts,
        openat2_works: true,
        dir_times: Vec::new(),
        stats: UnpackStats {
            diff_id: Digest::of_bytes(b""),
            tar_size: 0,
            compression,
            entries: 0,
            files: 0,
            bytes: 0,
            dirs: 0,
            symlinks: 0,
            hardlinks: 0,
            devices: 0,
            fifos: 0,
            whiteouts: 0,
            opaque_dirs: 0,
            skipped: 0,
            xattrs_skipped: 0,
        },
    };

    {
        let mut archive = tar::Archive::new(&mut tar_stream);
        let entries = archive.entries().map_err(read_err(0))?;
        for entry in entries {
            let entry = entry.map_err(read_err(unpacker.stats.entries))?;
            unpacker.stats.entries += 1;
            unpacker.entry(entry)?;
        }
    }
    // Whatever follows the end blocks is part of the diff_id too.
    io::copy(&mut tar_stream, &mut io::sink()).map_err(read_err(unpacker.stats.entries))?;
    let (_, diff_id, tar_size) = tar_stream.into_inner().finish();
    unpacker.finish_dir_times()?;

    let mut stats = unpacker.stats;
    stats.diff_id = diff_id;
    stats.tar_size = tar_size;
    if let Some(expected) = &opts.verify_diff_id {
        if *expected != stats.diff_id {
            return Err(UnpackError::DiffIdMismatch { expected: expected.clone(), actual: stats.diff_id });
        }
    }
    tracing::debug!(dest = %dest.display(), diff_id = %stats.diff_id, entries = stats.entries, "layer unpacked");
    Ok(stats)
}

/// Why a directory could not be resolved inside the root.
enum ResolveError {
    NotFound,
    NotADirectory(Vec<u8>),
    TooManySymlinks,
    TooDeep,
    Io(io::Error),
}

struct Unpacker<'o> {
    root: OwnedFd,
    dest: PathBuf,
    opts: &'o UnpackOptions,
    openat2_works: bool,
    /// Directories whose mtime is set at the end: cleaned path and time.
    dir_times: Vec<(Vec<Vec<u8>>, Timespec)>,
    stats: UnpackStats,
}

/// What one entry asks for, read from its headers.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Clean a hard link target; `None` if it is absolute or climbs above the root.
fn clean_link_target(target: &[u8]) -> Option<Vec<Vec<u8>>> {
    if target.starts_with(b"/") {
        return None;
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c.to_vec()),
        }
    }
    Some(out)
}

/// A PAX time as a [`Timespec`].
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    strata_fstree::tar::parse_pax_time(v).map(|(sec, nsec)| Timespec { tv_sec: sec, tv_nsec: nsec as _ })
}

fn is_unsupported(e: Errno) -> bool {
    e == Errno::OPNOTSUPP || e == Errno::NOTSUP
}

impl Unpacker<'_> {
    fn io_err<'a>(&'a self, op: &'static str, entry: &'a [u8]) -> impl FnOnce(Errno) -> UnpackError + 'a {
        move |e| UnpackError::Io { op, entry: lossy(entry), dest: self.dest.clone(), source: e.into() }
    }

    /// A failed chown: in a user namespace, EINVAL means the owner is not mapped.
    fn chown_err<'a>(&'a self, entry: &'a [u8], meta: &'a Meta) -> impl FnOnce(Errno) -> UnpackError + 'a {
        move |e| {
            if e == Errno::INVAL && crate::userns::in_user_namespace() {
                UnpackError::UnmappedOwner {
                    entry: lossy(entry),
                    uid: meta.uid,
                    gid: meta.gid,
                    hint: crate::userns::UNMAPPED_OWNER_HINT,
                }
            } else {
                self.io_err("changing the owner of", entry)(e)
            }
        }
    }

    fn resolve_err(&self, entry: &[u8], e: ResolveError) -> UnpackError {
        match e {
            ResolveError::NotFound => UnpackError::Io {
                op: "resolving the parent of",
                entry: lossy(entry),
                dest: self.dest.clone(),
                source: io::ErrorKind::NotFound.into(),
            },
            ResolveError::NotADirectory(c) => UnpackError::NotADirectory { entry: lossy(entry), component: lossy(&c) },
            ResolveError::TooManySymlinks => UnpackError::TooManySymlinks { entry: lossy(entry) },
            ResolveError::TooDeep => UnpackError::PathTooDeep { entry: lossy(entry) },
            ResolveError::Io(source) => {
                UnpackError::Io { op: "resolving the parent of", entry: lossy(entry), dest: self.dest.clone(), source }
            }
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let header = entry.header().clone();
        let mut kind = header.entry_type();
        let invalid = |reason: &str| UnpackError::InvalidEntry { entry: lossy(&raw), reason: reason.to_string() };

        let mut xattrs = Vec::new();
        let mut pax_mtime = None;
        let read_err = |source| UnpackError::Read {
            compression: self.stats.compression.name(),
            entries: self.stats.entries,
            source,
        };
        if let Some(exts) = entry.pax_extensions().map_err(read_err)? {
            for ext in exts {
                let ext = ext.map_err(read_err)?;
                let key = ext.key_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                } else if key == b"mtime" {
                    pax_mtime = parse_pax_time(ext.value_bytes());
                }
            }
        }
        let uid = header.uid().map_err(|_| invalid("unreadable uid"))?;
        let gid = header.gid().map_err(|_| invalid("unreadable gid"))?;
        let uid = u32::try_from(uid).map_err(|_| invalid("uid out of range"))?;
        let gid = u32::try_from(gid).map_err(|_| invalid("gid out of range"))?;
        let mtime = match pax_mtime {
            Some(t) => t,
            None => {
                let secs = header.mtime().map_err(|_| invalid("unreadable mtime"))?;
                Timespec { tv_sec: i64::try_from(secs).unwrap_or(i64::MAX), tv_nsec: 0 }
            }
        };
        let meta =
            Meta { mode: header.mode().map_err(|_| invalid("unreadable mode"))? & 0o7777, uid, gid, mtime, xattrs };

        // Old archives mark directories only by a trailing slash.
        if (kind.is_file() || kind == tar::EntryType::Continuous) && raw.ends_with(b"/") {
            kind = tar::EntryType::Directory;
        }

        let comps = crate::root::clean(&raw);
        let Some((name, parent)) = comps.split_last() else {
            if kind.is_dir() {
                return self.root_dir(&raw, meta);
            }
            return Err(invalid("a non-directory entry names the root"));
        };

        // Whiteouts.
        if let Some(rest) = name.strip_prefix(b".wh.") {
            if name == b".wh..wh..opq" {
                return self.opaque(&raw, parent);
            }
            if rest.starts_with(b".wh.") {
                tracing::debug!(entry = %lossy(&raw), "AUFS bookkeeping entry skipped");
                self.stats.skipped += 1;
                return Ok(());
            }
            if rest.is_empty() || rest == b"." || rest == b".." {
                return Err(invalid("whiteout without a name"));
            }
            return self.whiteout(&raw, parent, rest);
        }

        use tar::EntryType as T;
        match kind {
            T::Directory => self.dir(&raw, &comps, meta),
            T::Regular | T::Continuous | T::GNUSparse => self.file(&raw, parent, name, meta, &mut entry),
            T::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| invalid("symlink without a target"))?.into_owned();
                self.symlink(&raw, parent, name, &target, meta)
            }
            T::Link => {
                let target = entry.link_name_bytes().ok_or_else(|| invalid("hard link without a target"))?.into_owned();
                self.hardlink(&raw, parent, name, &target)
            }
            T::Char | T::Block | T::Fifo => self.node(&raw, parent, name, kind, &header, meta),
            T::XGlobalHeader => Ok(()),
            other => {
                tracing::warn!(entry = %lossy(&raw), kind = ?other, "unsupported tar entry type skipped");
                self.stats.skipped += 1;
                Ok(())
            }
        }
    }

    // ---- placing entries

    fn root_dir(&mut self, raw: &[u8], meta: Meta) -> Result<(), UnpackError> {
        let fd =
            rustix::fs::openat(&self.root, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(self.io_err("opening", raw))?;
        self.apply_fd_meta(raw, fd.as_fd(), &meta)?;
        self.dir_times.push((Vec::new(), meta.mtime));
        self.stats.dirs += 1;
        Ok(())
    }

    fn dir(&mut self, raw: &[u8], comps: &[Vec<u8>], meta: Meta) -> Result<(), UnpackError> {
        let (name, parent) = comps.split_last().expect("dir() gets a non-empty path");
        let pfd = self.resolve_dir(parent, true).map_err(|e| self.resolve_err(raw, e))?;
        match rustix::fs::statat(&pfd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
            Ok(_) => {
                crate::root::remove_all(pfd.as_fd(), name).map_err(self.io_err("replacing", raw))?;
                rustix::fs::mkdirat(&pfd, name.as_slice(), Mode::from_raw_mode(0o700))
                    .map_err(self.io_err("creating", raw))?;
            }
            Err(Errno::NOENT) => {
                rustix::fs::mkdirat(&pfd, name.as_slice(), Mode::from_raw_mode(0o700))
                    .map_err(self.io_err("creating", raw))?;
            }
            Err(e) => return Err(self.io_err("inspecting", raw)(e)),
        }
        let fd = rustix::fs::openat(
            &pfd,
            name.as_slice(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(self.io_err("opening", raw))?;
        self.apply_fd_meta(raw, fd.as_fd(), &meta)?;
        self.dir_times.push((comps.to_vec(), meta.mtime));
        self.stats.dirs += 1;
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        raw: &[u8],
        parent: &[Vec<u8>],
        name: &[u8],
        meta: Meta,
        data: &mut R,
    ) -> Result<(), UnpackError> {
        let pfd = self.resolve_dir(parent, true).map_err(|e| self.resolve_err(raw, e))?;
        crate::root::remove_all(pfd.as_fd(), name).map_err(self.io_err("replacing", raw))?;
        let fd = rustix::fs::openat(
            &pfd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(self.io_err("creating", raw))?;
        let mut file = File::from(fd);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(UnpackError::Read {
                        compression: self.stats.compression.name(),
                        entries: self.stats.entries,
                        source,
                    })
                }
            };
            file.write_all(&buf[..n]).map_err(|source| UnpackError::Io {
                op: "writing",
                entry: lossy(raw),
                dest: self.dest.clone(),
                source,
            })?;
            self.stats.bytes += n as u64;
        }
        self.apply_fd_meta(raw, file.as_fd(), &meta)?;
        rustix::fs::futimens(&file, &times(meta.mtime)).map_err(self.io_err("setting the mtime of", raw))?;
        self.stats.files += 1;
        Ok(())
    }

    fn symlink(
        &mut self,
        raw: &[u8],
        parent: &[Vec<u8>],
        name: &[u8],
        target: &[u8],
        meta: Meta,
    ) -> Result<(), UnpackError> {
        let pfd = self.resolve_dir(parent, true).map_err(|e| self.resolve_err(raw, e))?;
        crate::root::remove_all(pfd.as_fd(), name).map_err(self.io_err("replacing", raw))?;
        // The target is data: it is only ever followed by resolve_dir, inside the root.
        rustix::fs::symlinkat(target, &pfd, name).map_err(self.io_err("creating the symlink", raw))?;
        self.apply_at_meta(raw, pfd.as_fd(), name, &meta, false)?;
        self.stats.symlinks += 1;
        Ok(())
    }

    fn hardlink(&mut self, raw: &[u8], parent: &[Vec<u8>], name: &[u8], target: &[u8]) -> Result<(), UnpackError> {
        let outside = || UnpackError::HardlinkOutsideRoot { entry: lossy(raw), target: lossy(target) };
        let tcomps = clean_link_target(target).ok_or_else(outside)?;
        let Some((tname, tparent)) = tcomps.split_last() else {
            return Err(outside());
        };
        let missing = || UnpackError::HardlinkTargetMissing { entry: lossy(raw), target: lossy(target) };
        let tfd = match self.resolve_dir(tparent, false) {
            Ok(fd) => fd,
            Err(ResolveError::NotFound | ResolveError::NotADirectory(_)) => return Err(missing()),
            Err(e) => return Err(self.resolve_err(raw, e)),
        };
        match rustix::fs::statat(&tfd, tname.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(UnpackError::InvalidEntry {
                    entry: lossy(raw),
                    reason: format!("hard link to the directory {:?}", lossy(target)),
                })
            }
            Ok(_) => {}
            Err(Errno::NOENT) => return Err(missing()),
            Err(e) => return Err(self.io_err("inspecting the link target of", raw)(e)),
        }
        let pfd = self.resolve_dir(parent, true).map_err(|e| self.resolve_err(raw, e))?;
        // A link to itself: nothing to do (removing it first would lose the target).
        if let (Ok(a), Ok(b)) = (
            rustix::fs::statat(&tfd, tname.as_slice(), AtFlags::SYMLINK_NOFOLLOW),
            rustix::fs::statat(&pfd, name, AtFlags::SYMLINK_NOFOLLOW),
        ) {
            if a.st_dev == b.st_dev && a.st_ino == b.st_ino {
                self.stats.hardlinks += 1;
                return Ok(());
            }
        }
        crate::root::remove_all(pfd.as_fd(), name).map_err(self.io_err("replacing", raw))?;
        // Flags 0: a symlink target is linked itself, never followed.
        rustix::fs::linkat(&tfd, tname.as_slice(), &pfd, name, AtFlags::empty())
            .map_err(self.io_err("creating the hard link", raw))?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    fn node(
        &mut self,
        raw: &[u8],
        parent: &[Vec<u8>],
        name: &[u8],
        kind: tar::EntryType,
        header: &tar::Header,
        meta: Meta,
    ) -> Result<(), UnpackError> {
        let (ft, dev) = if kind == tar::EntryType::Fifo {
            (FileType::Fifo, 0)
        } else {
            if !self.opts.allow_devices {
                tracing::debug!(entry = %lossy(raw), "device node skipped (devices not allowed)");
                self.stats.skipped += 1;
                return Ok(());
            }
            let invalid = |what: &str| UnpackError::InvalidEntry {
                entry: lossy(raw),
                reason: format!("unreadable device {what}"),
            };
            let major = header.device_major().map_err(|_| invalid("major"))?.unwrap_or(0);
            let minor = header.device_minor().map_err(|_| invalid("minor"))?.unwrap_or(0);
            let ft = if kind == tar::EntryType::Char { FileType::CharacterDevice } else { FileType::BlockDevice };
            (ft, rustix::fs::makedev(major, minor))
        };
        let pfd = self.resolve_dir(parent, true).map_err(|e| self.resolve_err(raw, e))?;
        crate::root::remove_all(pfd.as_fd(), name).map_err(self.io_err("replacing", raw))?;
        rustix::fs::mknodat(&pfd, name, ft, Mode::from_raw_mode(0o600), dev).map_err(self.io_err("creating", raw))?;
        self.apply_at_meta(raw, pfd.as_fd(), name, &meta, true)?;
        if ft == FileType::Fifo {
            self.stats.fifos += 1;
        } else {
            self.stats.devices += 1;
        }
        Ok(())
    }

    fn whiteout(&mut self, raw: &[u8], parent: &[Vec<u8>], name: &[u8]) -> Result<(), UnpackError> {
        let pfd = self.resolve_dir(parent, true).map_err(|e| self.resolve_err(raw, e))?;
        crate::root::remove_all(pfd.as_fd(), name).map_err(self.io_err("replacing", raw))?;
        rustix::fs::mknodat(&pfd, name, FileType::CharacterDevice, Mode::empty(), rustix::fs::makedev(0, 0))
            .map_err(self.io_err("creating the overlay whiteout (a 0/0 character device; needs CAP_MKNOD) for", raw))?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    fn opaque(&mut self, raw: &[u8], parent: &[Vec<u8>]) -> Result<(), UnpackError> {
        let pfd = self.resolve_dir(parent, true).map_err(|e| self.resolve_err(raw, e))?;
        let dfd = rustix::fs::openat(&pfd, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(self.io_err("opening the directory of", raw))?;
        let xattr = format!("{}opaque", crate::userns::overlay_xattr_prefix());
        rustix::fs::fsetxattr(&dfd, xattr.as_str(), b"y", XattrFlags::empty()).map_err(
            self.io_err("marking opaque (overlay's opaque xattr; trusted.* needs CAP_SYS_ADMIN) the directory of", raw),
        )?;
        self.stats.opaque_dirs += 1;
        Ok(())
    }

    // ---- metadata

    /// Owner, mode, xattrs of an open file or directory (mode after owner: chown
    /// clears setuid/setgid).
    fn apply_fd_meta(&mut self, raw: &[u8], fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), UnpackError> {
        rustix::fs::fchown(fd, Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)))
            .map_err(self.chown_err(raw, meta))?;
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(self.io_err("changing the mode of", raw))?;
        for (name, value) in &meta.xattrs {
            if skip_xattr(name) {
                continue;
            }
            match rustix::fs::fsetxattr(fd, name.as_slice(), value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(e) if is_unsupported(e) => self.xattr_skipped(raw, name, e),
                Err(e) => return Err(self.io_err("setting an extended attribute of", raw)(e)),
            }
        }
        Ok(())
    }

    /// Owner, (mode), xattrs and mtime of a symlink, device or FIFO, by name, never
    /// following it.
    fn apply_at_meta(
        &mut self,
        raw: &[u8],
        pfd: BorrowedFd<'_>,
        name: &[u8],
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        rustix::fs::chownat(
            pfd,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(self.chown_err(raw, meta))?;
        if chmod {
            // `name` was just created by mknodat (not a symlink), so following is moot.
            rustix::fs::chmodat(pfd, name, Mode::from_raw_mode(meta.mode), AtFlags::empty())
                .map_err(self.io_err("changing the mode of", raw))?;
        }
        let wanted: Vec<&(Vec<u8>, Vec<u8>)> = meta.xattrs.iter().filter(|(n, _)| !skip_xattr(n)).collect();
        if !wanted.is_empty() {
            // lsetxattr through the parent's descriptor: the last component is not followed.
            use std::os::fd::AsRawFd;
            let mut path = format!("/proc/self/fd/{}/", pfd.as_raw_fd()).into_bytes();
            path.extend_from_slice(name);
            for (xname, value) in wanted {
                match rustix::fs::lsetxattr(path.as_slice(), xname.as_slice(), value, XattrFlags::empty()) {
                    Ok(()) => {}
                    // user.* is not allowed on symlinks and devices.
                    Err(e) if is_unsupported(e) || (e == Errno::PERM && xname.starts_with(b"user.")) => {
                        self.xattr_skipped(raw, xname, e)
                    }
                    Err(e) => return Err(self.io_err("setting an extended attribute of", raw)(e)),
                }
            }
        }
        rustix::fs::utimensat(pfd, name, &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(self.io_err("setting the mtime of", raw))?;
        Ok(())
    }

    fn xattr_skipped(&mut self, raw: &[u8], name: &[u8], e: Errno) {
        tracing::warn!(entry = %lossy(raw), xattr = %lossy(name), error = %e, "extended attribute not set");
        self.stats.xattrs_skipped += 1;
    }

    /// Directory mtimes, now that nothing more is written into them.
    fn finish_dir_times(&mut self) -> Result<(), UnpackError> {
        let dir_times = std::mem::take(&mut self.dir_times);
        for (comps, t) in dir_times {
            let shown = comps.join(&b'/');
            let Some((name, parent)) = comps.split_last() else {
                let fd = rustix::fs::openat(
                    &self.root,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(self.io_err("opening", b"/"))?;
                rustix::fs::futimens(&fd, &times(t)).map_err(self.io_err("setting the mtime of", b"/"))?;
                continue;
            };
            // A directory that a later entry removed or replaced keeps no time.
            let Ok(pfd) = self.resolve_dir(parent, false) else { continue };
            match rustix::fs::statat(&pfd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                _ => continue,
            }
            rustix::fs::utimensat(&pfd, name.as_slice(), &times(t), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(self.io_err("setting the mtime of", &shown))?;
        }
        Ok(())
    }

    // ---- resolution inside the root

    /// A descriptor (`O_PATH`) of the directory `comps` inside the root, following
    /// symlinks as if the root were `/`; missing directories are created when `create`.
    fn resolve_dir(&mut self, comps: &[Vec<u8>], create: bool) -> Result<OwnedFd, ResolveError> {
        if comps.is_empty() {
            return rustix::fs::openat(
                &self.root,
                ".",
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| ResolveError::Io(e.into()));
        }
        if self.openat2_works {
            let joined = comps.join(&b'/');
            for _ in 0..4 {
                match rustix::fs::openat2(
                    &self.root,
                    joined.as_slice(),
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                ) {
                    Ok(fd) => return Ok(fd),
                    // Missing components: the walk below creates them (or reports them).
                    Err(Errno::NOENT) => break,
                    // A concurrent rename somewhere in the kernel's view: try again.
                    Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
                    Err(Errno::NOSYS) | Err(Errno::PERM) => {
                        self.openat2_works = false;
                        break;
                    }
                    // ENOTDIR, ELOOP, ENAMETOOLONG: let the walk name the culprit.
                    Err(_) => break,
                }
            }
        }
        self.walk_in_root(comps, create)
    }

    /// The userspace equivalent of `openat2(RESOLVE_IN_ROOT)`, one component at a
    /// time, creating missing directories (0755, owned by the unpacker) when asked.
    fn walk_in_root(&self, comps: &[Vec<u8>], create: bool) -> Result<OwnedFd, ResolveError> {
        let io = |e: Errno| ResolveError::Io(e.into());
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut pending: VecDeque<Vec<u8>> = comps.iter().cloned().collect();
        let mut links = 0u32;
        while let Some(c) = pending.pop_front() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    stack.pop();
                    continue;
                }
                _ => {}
            }
            if stack.len() >= MAX_WALK_DEPTH {
                return Err(ResolveError::TooDeep);
            }
            let cur = stack.last().map(|f| f.as_fd()).unwrap_or(self.root.as_fd());
            let next = match rustix::fs::statat(cur, c.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => {
                        rustix::fs::openat(cur, c.as_slice(), dir_flags, Mode::empty()).map_err(io)?
                    }
                    FileType::Symlink => {
                        links += 1;
                        if links > MAX_SYMLINKS {
                            return Err(ResolveError::TooManySymlinks);
                        }
                        let target = rustix::fs::readlinkat(cur, c.as_slice(), Vec::new()).map_err(io)?;
                        let target = target.as_bytes();
                        if target.starts_with(b"/") {
                            stack.clear();
                        }
                        for t in target.split(|&b| b == b'/').rev() {
                            pending.push_front(t.to_vec());
                        }
                        continue;
                    }
                    _ => return Err(ResolveError::NotADirectory(c)),
                },
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(cur, c.as_slice(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io(e)),
                    }
                    rustix::fs::chmodat(cur, c.as_slice(), Mode::from_raw_mode(0o755), AtFlags::empty()).map_err(io)?;
                    rustix::fs::openat(cur, c.as_slice(), dir_flags, Mode::empty()).map_err(io)?
                }
                Err(Errno::NOENT) => return Err(ResolveError::NotFound),
                Err(e) => return Err(io(e)),
            };
            stack.push(next);
        }
        match stack.pop() {
            Some(fd) => Ok(fd),
            None => {
                rustix::fs::openat(&self.root, ".", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                    .map_err(io)
            }
        }
    }
}

fn times(t: Timespec) -> Timestamps {
    Timestamps { last_access: t, last_modification: t }
}

/// Overlay metadata is never taken from an archive.
fn skip_xattr(name: &[u8]) -> bool {
    strata_fstree::overlay::is_overlay_xattr(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_as_if_rooted() {
        let c = |s: &str| {
            crate::root::clean(s.as_bytes()).into_iter().map(|c| String::from_utf8(c).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(c("../escape"), ["escape"]);
        assert_eq!(c("/abs-file"), ["abs-file"]);
        assert_eq!(c("./a/./b/../c/"), ["a", "c"]);
        assert_eq!(c("../../../../etc/passwd"), ["etc", "passwd"]);
        assert!(c("./").is_empty());
    }

    #[test]
    fn link_targets_may_not_leave_the_root() {
        assert!(clean_link_target(b"/etc/passwd").is_none());
        assert!(clean_link_target(b"../etc/passwd").is_none());
        assert!(clean_link_target(b"a/../../b").is_none());
        assert_eq!(clean_link_target(b"a/../b").unwrap(), vec![b"b".to_vec()]);
    }

    #[test]
    fn magic_bytes() {
        use ArchiveCompression as C;
        assert_eq!(C::detect(&[0x1f, 0x8b, 8, 0, 0, 0]), C::Gzip);
        assert_eq!(C::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]), C::Zstd);
        assert_eq!(C::detect(b"BZh91A"), C::Bzip2);
        assert_eq!(C::detect(b"BZhello"), C::None);
        assert_eq!(C::detect(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), C::Xz);
        assert_eq!(C::detect(b"etc/"), C::None);
        assert_eq!(C::detect(b""), C::None);
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000.5"), Some(Timespec { tv_sec: 1_700_000_000, tv_nsec: 500_000_000 }));
        assert_eq!(parse_pax_time(b"12"), Some(Timespec { tv_sec: 12, tv_nsec: 0 }));
        assert_eq!(parse_pax_time(b"-1.25"), Some(Timespec { tv_sec: -2, tv_nsec: 750_000_000 }));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
