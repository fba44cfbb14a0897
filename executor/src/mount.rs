//! Overlay and bind mounts for a step's root file system, unmounted on drop.
//!
//! Overlays are made with the new mount API (`fsopen`/`fsconfig` with one `lowerdir+`
//! per layer) so the number of layers is not limited by the one-page option string of
//! `mount(2)`; older kernels fall back to `mount(2)`.

use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount, FsMountFlags, FsOpenFlags,
    MountAttrFlags, MoveMountFlags, UnmountFlags,
};

/// A mounted file system; unmounted (lazily) when dropped.
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
    active: bool,
}

impl MountGuard {
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Unmount now, reporting errors.
    pub fn unmount(mut self) -> io::Result<()> {
        self.active = false;
        rustix::mount::unmount(&self.target, UnmountFlags::empty())
            .or_else(|_| rustix::mount::unmount(&self.target, UnmountFlags::DETACH))
            .map_err(io::Error::from)
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.active {
            let _ = rustix::mount::unmount(&self.target, UnmountFlags::DETACH);
        }
    }
}

/// Mount an overlay of `lowers` (bottom first) at `target`, writable into `upper`
/// (with overlay's `work` dir) or read-only when `upper` is `None`.
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
    empty: &Path,
) -> io::Result<MountGuard> {
    let mut lowers: Vec<PathBuf> = lowers.to_vec();
    if lowers.is_empty() {
        lowers.push(empty.to_path_buf());
    }
    if upper.is_none() && lowers.len() == 1 {
        lowers.insert(0, empty.to_path_buf());
    }
    match mount_overlay_fsconfig(&lowers, upper, target) {
        Ok(()) => {}
        Err(e) => {
            tracing::debug!("fsconfig overlay failed ({e}), falling back to mount(2)");
            mount_overlay_legacy(&lowers, upper, target)?;
        }
    }
    Ok(MountGuard { target: target.to_path_buf(), active: true })
}

fn mount_overlay_fsconfig(lowers: &[PathBuf], upper: Option<(&Path, &Path)>, target: &Path) -> io::Result<()> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    // overlayfs wants the topmost lower first.
    for l in lowers.iter().rev() {
        fsconfig_set_string(&fs, "lowerdir+", l)?;
    }
    if crate::userns::in_user_namespace() {
        // Unprivileged overlayfs (Linux 5.11+): its metadata in user.overlay.* xattrs.
        fsconfig_set_flag(&fs, "userxattr")?;
    }
    if let Some((up, work)) = upper {
        fsconfig_set_string(&fs, "upperdir", up)?;
        fsconfig_set_string(&fs, "workdir", work)?;
        // No syncs of the upper file system (and none on unmount, which otherwise
        // writes back everything the step wrote before the snapshot is committed): a
        // snapshot is a cache, rebuilt if a machine crash loses it, as its blobs are
        // fsynced where they are stored. Kernels before 5.10 lack it.
        if let Err(e) = fsconfig_set_flag(&fs, "volatile") {
            tracing::debug!("overlay without volatile: {e}");
        }
    }
    fsconfig_create(&fs)?;
    let flags = if upper.is_some() { MountAttrFlags::empty() } else { MountAttrFlags::MOUNT_ATTR_RDONLY };
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, flags)?;
    move_mount(&mnt, "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)?;
    Ok(())
}

fn mount_overlay_legacy(lowers: &[PathBuf], upper: Option<(&Path, &Path)>, target: &Path) -> io::Result<()> {
    let lower = lowers.iter().rev().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>().join(":");
    let mut data = format!("lowerdir={lower}");
    if crate::userns::in_user_namespace() {
        data.push_str(",userxattr");
    }
    if let Some((up, work)) = upper {
        data.push_str(&format!(",upperdir={},workdir={}", up.display(), work.display()));
    }
    let flags = if upper.is_some() { rustix::mount::MountFlags::empty() } else { rustix::mount::MountFlags::RDONLY };
    let data = std::ffi::CString::new(data).map_err(io::Error::other)?;
    rustix::mount::mount("overlay", target, "overlay", flags, Some(data.as_c_str())).map_err(io::Error::from)
}

/// Is overlayfs usable here? (Tries a tiny mount under `scratch`.)
pub fn overlay_supported(scratch: &Path) -> bool {
    let base = scratch.join(format!("overlay-probe-{}", std::process::id()));
    let (l, u, w, m) = (base.join("l"), base.join("u"), base.join("w"), base.join("m"));
    let ok = [&l, &u, &w, &m].iter().all(|d| std::fs::create_dir_all(d).is_ok())
        && mount_overlay(std::slice::from_ref(&l), Some((&u, &w)), &m, &l).and_then(|g| g.unmount()).is_ok();
    let _ = crate::remove::remove_tree(&base);
    ok
}
