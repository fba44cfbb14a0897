//! Removing the store's own scratch trees (a step's work directory, a copied root, a
//! probe mount's directories): paths strata made itself, never paths from a build.

use std::fs;
use std::io;
use std::path::Path;

/// Remove a tree even where permission bits would forbid it (overlay work dirs are 000).
pub fn remove_tree(p: &Path) -> io::Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            for entry in walkdir::WalkDir::new(p).into_iter().filter_map(|e| e.ok()) {
                if entry.file_type().is_dir() {
                    let _ = fs::set_permissions(entry.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700));
                }
            }
            fs::remove_dir_all(p)
        }
    }
}
