//! # strata-fstree
//!
//! File trees in the form strata's snapshots keep them — overlayfs upper directories
//! ("diff directories") — and the two ways they leave a snapshot: merged into the one
//! tree a container sees, and encoded as tar. The executor (which makes snapshots and
//! copies roots for the copying snapshotter) and the exporter (which writes layers and
//! `-o type=local|tar` outputs) both build on it; neither depends on the other.
//!
//! - [`overlay`]: the conventions of a diff directory — a whiteout is a character
//!   device 0/0, an opaque directory carries `trusted.overlay.opaque=y` (or its
//!   `user.` form) — and which extended attributes travel with a file.
//! - [`rootfs`]: merging a stack of diff directories into one tree, handed entry by
//!   entry to a sink: [`rootfs::DirSink`] writes it into a directory without ever
//!   following a symlink, [`rootfs::TarSink`] into one tar stream.
//! - [`tar`]: the deterministic tar encoder both layers and root file system tars use
//!   (ustar headers built field by field, PAX records only when needed, as Go's
//!   `archive/tar` writes them), and the PAX time parser the readers share.
//!
//! ```no_run
//! use std::path::PathBuf;
//! use strata_fstree::rootfs::{export_rootfs, DirSink};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layers = vec![PathBuf::from("/var/lib/strata/snapshots/i0/fs"), PathBuf::from("/var/lib/strata/snapshots/s1/fs")];
//! let mut sink = DirSink::create("./rootfs".as_ref())?;
//! export_rootfs(&layers, &mut sink)?;
//! sink.finish()?;
//! # Ok(()) }
//! ```

pub mod overlay;
pub mod rootfs;
pub mod tar;
