//! The conventions of a diff directory (an overlayfs upper directory, and every
//! snapshot strata keeps): how a deletion and an opaque directory are written, and
//! which extended attributes are the file's own.
//!
//! - a deleted path is a character device 0/0 with that name (a *whiteout*); in a
//!   layer it becomes an empty file `.wh.<name>`;
//! - a directory whose lower contents are hidden is *opaque*: it carries
//!   `trusted.overlay.opaque=y`, or `user.overlay.opaque=y` where overlayfs is mounted
//!   with `userxattr` (unprivileged); in a layer the directory is followed by an empty
//!   `<dir>/.wh..wh..opq`;
//! - overlayfs's own attributes (`trusted.overlay.*`, `user.overlay.*`) and the build
//!   host's SELinux label (`security.selinux`) are not the file's; everything else
//!   (`security.capability`, `user.*`) is;
//! - overlay features a diff cannot express (`redirect`, `metacopy`) are refused.

use std::ffi::OsString;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The prefix of a whiteout's name in a layer.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name that marks an opaque directory in a layer.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// The xattrs that mark an opaque directory (privileged, then `userxattr` mounts).
pub const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// Extended attributes as (name, value) pairs.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("reading the extended attributes of {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} uses the overlay feature {xattr}, which a layer cannot express (mount overlayfs without redirect_dir and metacopy)")]
    Unsupported { path: PathBuf, xattr: String },
}

/// Is this entry of a diff directory a whiteout?
pub fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Is overlayfs's own attribute `name` (privileged or `userxattr` form)?
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// An attribute the file system could not give (not supported, gone, not allowed).
pub fn is_unsupported(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA) | Some(libc::EPERM))
}

/// A diff-directory entry's own extended attributes (sorted by name, values read),
/// and whether it is an opaque directory.
pub fn diff_xattrs(path: &Path, is_dir: bool) -> Result<(Xattrs, bool), OverlayError> {
    let read_err = |source| OverlayError::Read { path: path.to_path_buf(), source };
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
        if is_overlay_xattr(n) {
            let feature = n.rsplit(|&b| b == b'.').next().unwrap_or_default();
            if feature == b"redirect" || feature == b"metacopy" {
                return Err(OverlayError::Unsupported {
                    path: path.to_path_buf(),
                    xattr: name.to_string_lossy().into_owned(),
                });
            }
            if is_dir && feature == b"opaque" {
                opaque |= matches!(xattr::get(path, &name), Ok(Some(v)) if v == b"y");
            }
            continue;
        }
        if n == b"security.selinux" {
            continue;
        }
        match xattr::get(path, &name) {
            Ok(Some(value)) => out.push((n.to_vec(), value)),
            // Gone between list and get: nothing to keep.
            Ok(None) => {}
            Err(err) if is_unsupported(&err) => {}
            Err(err) => return Err(read_err(err)),
        }
    }
    Ok((out, opaque))
}

/// Is the directory `dir` of a diff directory opaque?
pub fn is_opaque(dir: &Path) -> Result<bool, OverlayError> {
    for name in OPAQUE_XATTRS {
        match xattr::get(dir, name) {
            Ok(Some(v)) if v == b"y" => return Ok(true),
            Ok(_) => {}
            Err(e) if is_unsupported(&e) => {}
            Err(e) => return Err(OverlayError::Read { path: dir.to_path_buf(), source: e }),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_attributes_are_kept_and_overlay_ones_are_not() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "x").unwrap();
        xattr::set(&f, "user.keep", b"1").expect("user xattrs (ext4, xfs and tmpfs have them)");
        xattr::set(&f, "user.overlay.opaque", b"y").unwrap();
        let (kept, opaque) = diff_xattrs(&f, false).unwrap();
        assert_eq!(kept, vec![(b"user.keep".to_vec(), b"1".to_vec())]);
        assert!(!opaque);
        let dir = d.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        xattr::set(&dir, "user.overlay.opaque", b"y").unwrap();
        assert!(diff_xattrs(&dir, true).unwrap().1);
        assert!(is_opaque(&dir).unwrap());
        xattr::set(&dir, "user.overlay.redirect", b"/x").unwrap();
        assert!(matches!(diff_xattrs(&dir, true), Err(OverlayError::Unsupported { .. })));
    }
}
