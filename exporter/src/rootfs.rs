//! The final file system of an image, for `-o type=local` and `-o type=tar`: the merge
//! of layers and its sinks live in `strata_fstree::rootfs` (shared with the executor's
//! copying snapshotter); this module adds where the result goes.

pub use strata_fstree::rootfs::*;

use std::path::{Path, PathBuf};

/// The `-o type=local|tar` destination rule: a tree into the directory `dest`, or (with
/// `as_tar`, or `dest` = `-`) one tar into the file `dest` (written under a temporary
/// name, then renamed) or standard output.
pub fn export_rootfs_to(
    dest: &str,
    layer_dirs: &[PathBuf],
    as_tar: bool,
    source_date_epoch: Option<i64>,
) -> Result<RootfsStats, RootfsError> {
    if !as_tar && dest != "-" {
        return export_rootfs_to_dir(layer_dirs, Path::new(dest));
    }
    let mut stats = RootfsStats::default();
    crate::docker_archive::write_output(dest, |out| {
        stats = export_rootfs_tar(layer_dirs, out, source_date_epoch)?.1;
        Ok::<(), RootfsError>(())
    })?;
    Ok(stats)
}
