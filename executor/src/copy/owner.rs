//! `--chown` of a COPY/ADD → a numeric owner, with the destination's user database
//! ([`crate::users`], read inside the destination root).

use std::path::Path;

use strata_solver::graph::Chown;

use super::CopyError;
use crate::root::Root;
use crate::users::UserError;

/// Resolve `chown` to `(uid, gid)` with the user database of the file system at
/// `dest_root`.
pub fn resolve_chown(dest_root: &Path, chown: &Chown) -> Result<(u32, u32), CopyError> {
    let root = Root::open(dest_root).map_err(|source| CopyError::Io {
        op: "opening the destination root",
        path: dest_root.display().to_string(),
        source,
    })?;
    resolve_chown_in(&root, chown)
}

pub(crate) fn resolve_chown_in(root: &Root, chown: &Chown) -> Result<(u32, u32), CopyError> {
    crate::users::resolve_chown(root, &chown.user, chown.group.as_deref()).map_err(|e| match e {
        UserError::NoUser(user) => CopyError::UnknownUser { user, reason: "no such user in /etc/passwd".into() },
        UserError::NoPasswdFile(user) => {
            CopyError::UnknownUser { user, reason: "the destination has no /etc/passwd".into() }
        }
        UserError::NoGroup(group) => CopyError::UnknownGroup { group, reason: "no such group in /etc/group".into() },
        UserError::NoGroupFile(group) => {
            CopyError::UnknownGroup { group, reason: "the destination has no /etc/group".into() }
        }
        UserError::Database { path, reason } => CopyError::UserDatabase { path: path.into(), reason },
    })
}
