//! Snapshots: one directory per layer under `ROOT/snapshots/<id>/fs`, in overlayfs
//! upper-dir form, plus the scratch directories a running step writes into.
//!
//! A snapshot appears under its id only by an atomic rename of a finished directory,
//! so a killed build leaves at most a `tmp-*` directory, which the next start removes.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use strata_solver::worker::LayerId;

#[derive(Debug, Clone)]
pub struct Snapshots {
    root: PathBuf,
    snapshotter: Snapshotter,
}

/// How a step's root file system (and a read-only view of layers) is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshotter {
    /// An overlayfs mount of the layers; the step's diff is its upper directory.
    Overlay,
    /// A full copy of the layers, compared afterwards ([`crate::copied_root`]): where
    /// overlayfs cannot be mounted.
    Copying,
}

impl Snapshotter {
    /// `STRATA_SNAPSHOTTER=overlay|copying` when set; else overlayfs if a probe mount
    /// under `scratch` works, the copying snapshotter (said in the log) if not.
    pub fn choose(scratch: &Path) -> Result<Snapshotter, String> {
        match std::env::var("STRATA_SNAPSHOTTER").as_deref() {
            Ok("overlay") | Ok("overlayfs") => return Ok(Snapshotter::Overlay),
            Ok("copying") | Ok("copy") | Ok("native") => return Ok(Snapshotter::Copying),
            Ok("") | Err(_) => {}
            Ok(other) => return Err(format!("STRATA_SNAPSHOTTER={other}: expected overlay or copying")),
        }
        if crate::mount::overlay_supported(scratch) {
            Ok(Snapshotter::Overlay)
        } else {
            tracing::warn!(
                "overlayfs cannot be mounted here: using the copying snapshotter (each step copies its whole root file system; slower)"
            );
            Ok(Snapshotter::Copying)
        }
    }
}

/// A step's root file system, or a read-only view of layers, while it is in use.
pub enum StepRoot {
    Mounted(crate::mount::MountGuard),
    Copied(crate::copied_root::CopiedRoot),
}

impl StepRoot {
    /// Done with it: unmounted, or (a step's copied root) its diff written to the step's
    /// upper directory and the copy removed.
    pub fn finish(self) -> io::Result<()> {
        match self {
            StepRoot::Mounted(g) => g.unmount(),
            StepRoot::Copied(c) => c.finish(),
        }
    }
}

/// A step's scratch space: `fs/` (the new layer, an overlay upper dir), `work/`
/// (overlay's work dir) and `mnt/` (the merged mount point). Removed on drop unless
/// committed.
pub struct WorkDir {
    pub dir: PathBuf,
}

impl WorkDir {
    pub fn upper(&self) -> PathBuf {
        self.dir.join("fs")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    pub fn merged(&self) -> PathBuf {
        self.dir.join("mnt")
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.dir.exists() {
            let _ = crate::remove::remove_tree(&self.dir);
        }
    }
}

/// Ask ext4 to place each snapshot directory (and so the files under it) in a block
/// group of its own (`chattr +T`, the Orlov allocator's "top directory" hint).
///
/// Without it a new snapshot lands in the groups of the snapshots deleted just before
/// (a pruned or removed root), and on ext4 without a journal every inode allocation
/// then scans past each recently deleted inode of the group: creating 30 000 files
/// took 30 s instead of 4 s. Best effort: other file systems don't have the flag.
fn spread_children(dir: &Path) {
    use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags};
    let Ok(fd) =
        rustix::fs::open(dir, rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY, rustix::fs::Mode::empty())
    else {
        return;
    };
    if let Ok(flags) = ioctl_getflags(&fd) {
        if !flags.contains(IFlags::TOPDIR) {
            let _ = ioctl_setflags(&fd, flags | IFlags::TOPDIR);
        }
    }
}

impl Snapshots {
    pub fn open(store_root: &Path) -> io::Result<Self> {
        let dir = store_root.join("snapshots");
        fs::create_dir_all(&dir)?;
        spread_children(&dir);
        fs::create_dir_all(dir.join("empty"))?;
        Ok(Snapshots { root: dir, snapshotter: Snapshotter::Overlay })
    }

    /// These snapshots with step roots made by `snapshotter`.
    pub fn with_snapshotter(mut self, snapshotter: Snapshotter) -> Self {
        self.snapshotter = snapshotter;
        self
    }

    pub fn snapshotter(&self) -> Snapshotter {
        self.snapshotter
    }

    /// The root file system of a step in `work` over `lowers` (bottom first), at
    /// `work.merged()`, writing into `work.upper()`.
    pub fn step_root(&self, lowers: &[PathBuf], work: &WorkDir) -> io::Result<StepRoot> {
        match self.snapshotter {
            Snapshotter::Overlay => crate::mount::mount_overlay(
                lowers,
                Some((&work.upper(), &work.work())),
                &work.merged(),
                &self.empty_dir(),
            )
            .map(StepRoot::Mounted),
            Snapshotter::Copying => {
                crate::copied_root::CopiedRoot::step(lowers, &work.merged(), &work.upper()).map(StepRoot::Copied)
            }
        }
    }

    /// A view of `lowers` at `at` whose changes are thrown away (read-only when mounted).
    pub fn view(&self, lowers: &[PathBuf], at: &Path) -> io::Result<StepRoot> {
        match self.snapshotter {
            Snapshotter::Overlay => {
                crate::mount::mount_overlay(lowers, None, at, &self.empty_dir()).map(StepRoot::Mounted)
            }
            Snapshotter::Copying => crate::copied_root::CopiedRoot::view(lowers, at).map(StepRoot::Copied),
        }
    }

    /// A writable copy of the directory `src` at `scratch/m` whose writes are thrown
    /// away (`RUN --mount=type=bind,rw`).
    pub fn scratch_view(&self, src: &Path, scratch: &Path) -> io::Result<(PathBuf, StepRoot)> {
        let at = scratch.join("m");
        for d in ["u", "w", "m"] {
            fs::create_dir_all(scratch.join(d))?;
        }
        let root = match self.snapshotter {
            Snapshotter::Overlay => StepRoot::Mounted(crate::mount::mount_overlay(
                &[src.to_path_buf()],
                Some((&scratch.join("u"), &scratch.join("w"))),
                &at,
                &self.empty_dir(),
            )?),
            Snapshotter::Copying => StepRoot::Copied(crate::copied_root::CopiedRoot::view(&[src.to_path_buf()], &at)?),
        };
        Ok((at, root))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An always-empty directory (a lower layer for steps on scratch).
    pub fn empty_dir(&self) -> PathBuf {
        self.root.join("empty")
    }

    /// The file system of a committed snapshot.
    pub fn layer_dir(&self, id: &LayerId) -> PathBuf {
        self.root.join(&id.0).join("fs")
    }

    pub fn exists(&self, id: &LayerId) -> bool {
        self.layer_dir(id).is_dir()
    }

    /// Side files of a snapshot (e.g. the exported layer's digests).
    pub fn meta_path(&self, id: &LayerId, name: &str) -> PathBuf {
        self.root.join(&id.0).join(name)
    }

    /// A fresh scratch area.
    pub fn new_work(&self) -> io::Result<WorkDir> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = self.root.join(format!("tmp-{}-{nanos:x}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir_all(dir.join("fs"))?;
        fs::create_dir_all(dir.join("work"))?;
        fs::create_dir_all(dir.join("mnt"))?;
        Ok(WorkDir { dir })
    }

    /// Make a scratch area's `fs/` the snapshot `id`. If another build committed the
    /// same id first, ours is discarded (the two are equivalent).
    pub fn commit(&self, work: WorkDir, id: &LayerId) -> io::Result<()> {
        let _ = crate::remove::remove_tree(&work.work());
        let _ = fs::remove_dir(work.merged());
        let dst = self.root.join(&id.0);
        if dst.join("fs").is_dir() {
            return Ok(()); // dropping `work` removes ours
        }
        if dst.exists() {
            // A half-made entry from a killed build: replace it.
            crate::remove::remove_tree(&dst)?;
        }
        match fs::rename(&work.dir, &dst) {
            Ok(()) => {
                std::mem::forget(work);
                Ok(())
            }
            Err(_) if dst.join("fs").is_dir() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Remove scratch areas left by builds that are no longer running.
    pub fn clean_stale(&self) {
        let Ok(rd) = fs::read_dir(&self.root) else { return };
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(rest) = name.strip_prefix("tmp-") else { continue };
            let pid: Option<i32> = rest.split('-').next().and_then(|p| p.parse().ok());
            let alive = pid.map(|p| Path::new(&format!("/proc/{p}")).exists()).unwrap_or(false);
            if !alive {
                let merged = e.path().join("mnt");
                let _ = rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::DETACH);
                let _ = crate::remove::remove_tree(&e.path());
            }
        }
    }
}
