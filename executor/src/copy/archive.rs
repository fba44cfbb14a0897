//! `ADD` of a local tar archive: detection by content and confined extraction.
//!
//! Follows BuildKit (`solver/llbsolver/file/unpack.go`) and moby's `chrootarchive.Untar`:
//!
//! - a source is an archive when it is a regular file whose stream — decompressed by
//!   its magic bytes (gzip, bzip2, xz, zstd, or none) — starts with a valid tar header;
//!   the file name plays no part. Anything else is copied as a file;
//! - the destination is a directory (created with 0755 and the `--chown` owner);
//!   entries are placed with the destination directory as their root, as moby does
//!   by chrooting into it: names are cleaned as if rooted (`../x` and `/x` are both
//!   `x` of the destination), symlinks in the tree are followed inside the destination
//!   (not through one whose target is missing, where moby fails), hard links must name
//!   an entry the archive made;
//! - an existing entry is replaced unless both are directories (then merged); missing
//!   parents are created 0755 and owned by root; the `.` entry is skipped;
//! - owners come from the archive unless `--chown` is given; modes (setuid, setgid,
//!   sticky included) and times from the archive; `SCHILY.xattr.*` records become
//!   extended attributes (unsupported ones skipped); directory times are set last;
//! - `--chmod` does not apply to extracted entries.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;
use tar::EntryType;

use super::{CopyError, CopyStats};
use crate::root::{clean, file_type, remove_all, show, Comps, DirSpec, ResolveError, Root};

const READ_BUFFER: usize = 128 * 1024;

/// Whether the open regular file `file` is a (possibly compressed) tar archive. The
/// file position is restored to the start.
pub(crate) fn is_archive(file: &mut File) -> io::Result<bool> {
    file.seek(SeekFrom::Start(0))?;
    let result = {
        let stream = crate::unpack::open_decompressed(&mut *file);
        match stream {
            Ok(mut stream) => {
                let mut header = [0u8; 512];
                match read_full(&mut stream, &mut header) {
                    Ok(true) => valid_tar_header(&header),
                    Ok(false) => false,
                    // Not decodable as what its magic announced: not an archive.
                    Err(_) => false,
                }
            }
            Err(_) => false,
        }
    };
    file.seek(SeekFrom::Start(0))?;
    Ok(result)
}

/// Fill `buf` completely; `false` at a short read (EOF).
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => return Ok(false),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// A non-zero block whose checksum (unsigned or signed, as Go accepts) is right.
fn valid_tar_header(h: &[u8; 512]) -> bool {
    if h.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &h[148..156];
    let digits: Vec<u8> =
        field.iter().copied().skip_while(|b| *b == b' ').take_while(|b| (b'0'..=b'7').contains(b)).collect();
    if digits.is_empty() {
        return false;
    }
    let Ok(stored) = i64::from_str_radix(std::str::from_utf8(&digits).unwrap_or("x"), 8) else {
        return false;
    };
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as i64;
        signed += (b as i8) as i64;
    }
    stored == unsigned || stored == signed
}

/// A directory whose times are set once everything below it is written.
struct DirTime {
    comps: Comps,
    times: Timestamps,
}

/// Extract the archive `file` into the directory `dest` (an `O_PATH` descriptor; it is
/// the root for every entry). `owner` overrides the archive's owners. `archive` and
/// `dest_shown` name things in errors.
pub(crate) fn extract(
    file: File,
    dest: OwnedFd,
    owner: Option<(u32, u32)>,
    archive: &str,
    dest_shown: &str,
    stats: &mut CopyStats,
) -> Result<(), CopyError> {
    let root = Root::from_fd(dest);
    let read_err = |source: io::Error| CopyError::ArchiveRead { archive: archive.to_string(), source };
    let stream = crate::unpack::open_decompressed(BufReader::with_capacity(READ_BUFFER, file)).map_err(read_err)?;
    let mut tar = tar::Archive::new(stream);
    let mut x = Extractor { root: &root, owner, archive, dest_shown, dir_times: Vec::new(), stats };
    for entry in tar.entries().map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        x.entry(entry)?;
    }
    x.finish_dir_times()?;
    stats.archives += 1;
    Ok(())
}

struct Extractor<'a> {
    root: &'a Root,
    owner: Option<(u32, u32)>,
    archive: &'a str,
    dest_shown: &'a str,
    dir_times: Vec<DirTime>,
    stats: &'a mut CopyStats,
}

/// A numeric header field; an empty one (all NULs or spaces) is 0, as Go's reader
/// takes it.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> io::Result<u64> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        Err(e) => Err(e),
    }
}

/// A PAX time as a [`Timespec`].
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    strata_fstree::tar::parse_pax_time(v).map(|(sec, nsec)| Timespec { tv_sec: sec, tv_nsec: nsec as _ })
}

impl Extractor<'_> {
    fn entry_err(&self, entry: &[u8], reason: impl Into<String>) -> CopyError {
        CopyError::ArchiveEntry {
            archive: self.archive.to_string(),
            entry: String::from_utf8_lossy(entry).into_owned(),
            reason: reason.into(),
        }
    }

    fn io_err(&self, entry: &[u8], what: &str) -> impl Fn(Errno) -> CopyError + '_ {
        let entry = String::from_utf8_lossy(entry).into_owned();
        let what = what.to_string();
        move |e| CopyError::ArchiveEntry {
            archive: self.archive.to_string(),
            entry: entry.clone(),
            reason: format!("{what} in {}: {}", self.dest_shown, io::Error::from(e)),
        }
    }

    fn resolve_err(&self, entry: &[u8], e: ResolveError) -> CopyError {
        let reason = match e {
            ResolveError::NotADirectory(p) => {
                format!("{} in the destination is not a directory", show(&p))
            }
            ResolveError::TooManySymlinks => "too many levels of symbolic links".to_string(),
            ResolveError::TooDeep => "the path is too deep".to_string(),
            ResolveError::Io(p, e) => format!("{}: {}", show(&p), io::Error::from(e)),
        };
        self.entry_err(entry, reason)
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), CopyError> {
        let ty = entry.header().entry_type();
        if matches!(ty, EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink)
        {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        // Cleaned as if rooted: `../x` and `/x` are `x` of the destination, as with
        // moby's chroot into it.
        let comps = clean(&raw);
        let Some((name, parent)) = comps.split_last() else {
            // `.`: the destination itself keeps its metadata.
            return Ok(());
        };
        self.stats.archive_entries += 1;

        // Header fields, read before the data.
        let header = entry.header();
        let old = header.as_old();
        let mode = numeric(header.mode().map(u64::from), &old.mode)
            .map_err(|e| self.entry_err(&raw, format!("bad mode field: {e}")))? as u32
            & 0o7777;
        let (uid, gid) = match self.owner {
            Some(o) => o,
            None => (
                numeric(header.uid(), &old.uid).map_err(|e| self.entry_err(&raw, format!("bad uid field: {e}")))?
                    as u32,
                numeric(header.gid(), &old.gid).map_err(|e| self.entry_err(&raw, format!("bad gid field: {e}")))?
                    as u32,
            ),
        };
        let mtime_secs =
            numeric(header.mtime(), &old.mtime).map_err(|e| self.entry_err(&raw, format!("bad mtime field: {e}")))?;
        let mut mtime = Timespec { tv_sec: mtime_secs as i64, tv_nsec: 0 };
        let mut atime: Option<Timespec> = None;
        let dev =
            (header.device_major().ok().flatten().unwrap_or(0), header.device_minor().ok().flatten().unwrap_or(0));
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(|e| self.entry_err(&raw, format!("bad PAX records: {e}")))? {
            for ext in exts {
                let ext = ext.map_err(|e| self.entry_err(&raw, format!("bad PAX record: {e}")))?;
                let key = ext.key_bytes();
                if let Some(xname) = key.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((xname.to_vec(), ext.value_bytes().to_vec()));
                } else if key == b"mtime" {
                    if let Some(t) = parse_pax_time(ext.value_bytes()) {
                        mtime = t;
                    }
                } else if key == b"atime" {
                    atime = parse_pax_time(ext.value_bytes());
                }
            }
        }
        // moby: atime is the later of atime and mtime.
        let atime = match atime {
            Some(a) if (a.tv_sec, a.tv_nsec) > (mtime.tv_sec, mtime.tv_nsec) => a,
            _ => mtime,
        };
        let times = Timestamps { last_access: atime, last_modification: mtime };

        // The parent, resolved inside the destination directory; missing parents 0755,
        // owned by root. Not through a symlink whose target is missing: moby's untar
        // (BuildKit's ADD) fails there ("no such file or directory") rather than make
        // the directories a link points at.
        if let Ok(r) = self.root.resolve(parent, true, None) {
            if r.stat.is_none() && r.real.as_slice() != parent {
                return Err(self.entry_err(
                    &raw,
                    format!("its parent {} is a symbolic link to a missing directory", show(parent)),
                ));
            }
        }
        let (_, pfd) =
            self.root.mkdir_all(parent, DirSpec { mode: 0o755, owner: None }).map_err(|e| self.resolve_err(&raw, e))?;
        let pfd = pfd.as_fd();
        let name = name.as_slice();

        // Replace what is there, unless a directory meets a directory.
        let existing = match rustix::fs::statat(pfd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(file_type(&st)),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(self.io_err(&raw, "inspecting")(e)),
        };
        let is_dir_entry = ty == EntryType::Directory;
        if let Some(ft) = existing {
            if !(ft == FileType::Directory && is_dir_entry) {
                remove_all(pfd, name).map_err(self.io_err(&raw, "removing what is in the way of"))?;
            }
        }

        let mut set_mode = true;
        let mut set_times = true;
        match ty {
            EntryType::Directory => {
                if existing != Some(FileType::Directory) {
                    rustix::fs::mkdirat(pfd, name, Mode::from_raw_mode(0o700))
                        .map_err(self.io_err(&raw, "creating the directory"))?;
                }
                self.stats.dirs += 1;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let fd = rustix::fs::openat(
                    pfd,
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(self.io_err(&raw, "creating the file"))?;
                let mut out = File::from(fd);
                let n = io::copy(&mut entry, &mut out)
                    .map_err(|e| self.entry_err(&raw, format!("writing the file: {e}")))?;
                self.stats.files += 1;
                self.stats.bytes += n;
            }
            EntryType::Symlink => {
                let target = link.clone().unwrap_or_default();
                rustix::fs::symlinkat(target.as_slice(), pfd, name)
                    .map_err(self.io_err(&raw, "creating the symlink"))?;
                set_mode = false;
                self.stats.symlinks += 1;
            }
            EntryType::Link => {
                let target = link.clone().unwrap_or_default();
                let tcomps = clean(&target);
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(self.entry_err(
                        &raw,
                        format!(
                            "hard link target {:?} is the destination directory itself",
                            String::from_utf8_lossy(&target)
                        ),
                    ));
                };
                let resolved = self.root.resolve(tparent, true, None).map_err(|e| self.resolve_err(&raw, e))?;
                if !resolved.is_dir() {
                    return Err(self.entry_err(
                        &raw,
                        format!("hard link target {:?} is not in the archive", String::from_utf8_lossy(&target)),
                    ));
                }
                let tfd = self
                    .root
                    .open_dir_nofollow(&resolved.real)
                    .map_err(self.io_err(&raw, "opening the hard link target's directory"))?;
                let tst = match rustix::fs::statat(&tfd, tname.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    Err(Errno::NOENT) => {
                        return Err(self.entry_err(
                            &raw,
                            format!("hard link target {:?} is not in the archive", String::from_utf8_lossy(&target)),
                        ))
                    }
                    Err(e) => return Err(self.io_err(&raw, "inspecting the hard link target")(e)),
                };
                rustix::fs::linkat(&tfd, tname.as_slice(), pfd, name, AtFlags::empty())
                    .map_err(self.io_err(&raw, "creating the hard link"))?;
                // The shared inode keeps the metadata of a symlink target alone.
                if file_type(&tst) == FileType::Symlink {
                    set_mode = false;
                    set_times = false;
                }
                self.stats.hardlinks += 1;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let ft = match ty {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let rdev = rustix::fs::makedev(dev.0, dev.1);
                rustix::fs::mknodat(pfd, name, ft, Mode::from_raw_mode(0o600), rdev)
                    .map_err(self.io_err(&raw, "creating the special file"))?;
                self.stats.special += 1;
            }
            other => {
                return Err(self.entry_err(
                    &raw,
                    format!("unhandled tar header type {:?} ({:?})", other, other.as_byte() as char),
                ));
            }
        }

        // Owner, xattrs, mode (after chown, which may clear setuid), times.
        rustix::fs::chownat(pfd, name, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(self.io_err(&raw, "changing the owner of"))?;
        if !xattrs.is_empty() {
            let mut path = format!("/proc/self/fd/{}/", pfd.as_raw_fd()).into_bytes();
            path.extend_from_slice(name);
            let path = OsStr::from_bytes(&path);
            for (xname, value) in &xattrs {
                if xname.starts_with(b"trusted.overlay.") || xname.starts_with(b"user.overlay.") {
                    continue;
                }
                match xattr::set(path, OsStr::from_bytes(xname), value) {
                    Ok(()) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {
                        tracing::warn!(archive = self.archive, entry = %String::from_utf8_lossy(&raw), xattr = %String::from_utf8_lossy(xname), error = %e, "extended attribute not set");
                        self.stats.xattrs_skipped += 1;
                    }
                    Err(e) => {
                        return Err(self.entry_err(
                            &raw,
                            format!("setting extended attribute {:?}: {e}", String::from_utf8_lossy(xname)),
                        ))
                    }
                }
            }
        }
        if set_mode {
            rustix::fs::chmodat(pfd, name, Mode::from_raw_mode(mode), AtFlags::empty())
                .map_err(self.io_err(&raw, "changing the mode of"))?;
        }
        if is_dir_entry {
            self.dir_times.push(DirTime { comps: comps.clone(), times });
        } else if set_times {
            rustix::fs::utimensat(pfd, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(self.io_err(&raw, "setting the times of"))?;
        }
        Ok(())
    }

    fn finish_dir_times(&mut self) -> Result<(), CopyError> {
        for d in std::mem::take(&mut self.dir_times) {
            let Some((name, parent)) = d.comps.split_last() else {
                continue;
            };
            let Ok(resolved) = self.root.resolve(parent, true, None) else {
                continue;
            };
            if !resolved.is_dir() {
                continue;
            }
            let Ok(pfd) = self.root.open_dir_nofollow(&resolved.real) else {
                continue;
            };
            match rustix::fs::statat(&pfd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if file_type(&st) == FileType::Directory => {}
                _ => continue,
            }
            let shown = crate::root::rel_str(&d.comps);
            rustix::fs::utimensat(&pfd, name.as_slice(), &d.times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(self.io_err(shown.as_bytes(), "setting the times of"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(clean(b"/abs/x"), vec![b"abs".to_vec(), b"x".to_vec()]);
        assert_eq!(clean(b"../x"), vec![b"x".to_vec()]);
        assert_eq!(clean(b"a/../../x"), vec![b"x".to_vec()]);
        assert!(clean(b"./").is_empty());
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000.5"), Some(Timespec { tv_sec: 1_700_000_000, tv_nsec: 500_000_000 }));
        assert_eq!(parse_pax_time(b"-1.25"), Some(Timespec { tv_sec: -2, tv_nsec: 750_000_000 }));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn header_checksum() {
        let mut h = tar::Header::new_gnu();
        h.set_path("a").unwrap();
        h.set_size(0);
        h.set_cksum();
        let mut block = [0u8; 512];
        block.copy_from_slice(h.as_bytes());
        assert!(valid_tar_header(&block));
        block[0] = b'b';
        assert!(!valid_tar_header(&block));
        assert!(!valid_tar_header(&[0u8; 512]));
    }
}
