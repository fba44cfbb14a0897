//! `USER` and `--chown` names → numeric ids, from the `/etc/passwd` and `/etc/group`
//! of the step's root file system, as Docker and BuildKit resolve them.
//!
//! Both files are read *inside* the root ([`crate::root`]): an image that replaces
//! `/etc/passwd` with a symlink to `/home/ci/passwd` gets its own `/home/ci/passwd`,
//! never the host's.
//!
//! Rules (BuildKit `executor/oci/user.go`, `client/llb` `WithUser`, moby's `user`):
//!
//! - `USER name[:group]`, `uid[:gid]`; an empty user, and `root`, are uid 0 even
//!   without a passwd file; a number is taken as is (its passwd entry, when there is
//!   one, gives the primary group and home);
//! - without a group, `USER` gets the user's primary group and the supplementary
//!   groups that list the user in `/etc/group`;
//! - `--chown=1000` gives `1000:1000`, `--chown=name` the user's primary group, an
//!   empty group (`--chown=app:`) the user's primary group too;
//! - a name that is not in the file is an error naming it (BuildKit silently falls back
//!   to root for `--chown`; Docker documents the error).

use crate::root::Root;

/// The largest user database read (BuildKit's limit too).
const MAX_USER_FILE: u64 = 10 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    #[error("unable to find user {0}: the image has no /etc/passwd")]
    NoPasswdFile(String),
    #[error("unable to find group {0}: the image has no /etc/group")]
    NoGroupFile(String),
    #[error("{path} of the image {reason}")]
    Database { path: &'static str, reason: String },
}

/// One line of `/etc/passwd`.
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// One line of `/etc/group`.
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The lines of a colon-separated database inside `root` (`None`: no such file).
fn read_db(root: &Root, path: &'static str) -> Result<Option<Vec<Vec<String>>>, UserError> {
    let bytes = root
        .read_file(path, MAX_USER_FILE)
        .map_err(|e| UserError::Database { path, reason: format!("cannot be read: {e}") })?;
    Ok(bytes.map(|b| {
        String::from_utf8_lossy(&b)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.split(':').map(str::to_string).collect())
            .collect()
    }))
}

fn read_passwd(root: &Root) -> Result<Option<Vec<PasswdEntry>>, UserError> {
    Ok(read_db(root, "/etc/passwd")?.map(|lines| {
        lines
            .into_iter()
            .filter(|f| f.len() >= 4)
            .filter_map(|f| {
                Some(PasswdEntry {
                    uid: f[2].trim().parse().ok()?,
                    gid: f[3].trim().parse().ok()?,
                    home: f.get(5).cloned().unwrap_or_default(),
                    name: f[0].clone(),
                })
            })
            .collect()
    }))
}

fn read_group(root: &Root) -> Result<Option<Vec<GroupEntry>>, UserError> {
    Ok(read_db(root, "/etc/group")?.map(|lines| {
        lines
            .into_iter()
            .filter(|f| f.len() >= 3)
            .filter_map(|f| {
                Some(GroupEntry {
                    gid: f[2].trim().parse().ok()?,
                    members: f
                        .get(3)
                        .map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
                        .unwrap_or_default(),
                    name: f[0].clone(),
                })
            })
            .collect()
    }))
}

/// A number, `root`, or empty (root): `None` for a name to look up.
fn numeric(s: &str) -> Option<u32> {
    if s.is_empty() || s == "root" {
        return Some(0);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    None
}

/// The gid of group `g` (a number, or a name in `/etc/group`).
fn group_id(root: &Root, g: &str) -> Result<u32, UserError> {
    if let Some(n) = numeric(g) {
        return Ok(n);
    }
    let groups = read_group(root)?.ok_or_else(|| UserError::NoGroupFile(g.to_string()))?;
    groups.iter().find(|e| e.name == g).map(|e| e.gid).ok_or_else(|| UserError::NoGroup(g.to_string()))
}

/// The passwd entry of `user` (a number or a name): `(uid, primary gid, name, home)`.
fn user_entry(root: &Root, user: &str) -> Result<(u32, u32, Option<String>, Option<String>), UserError> {
    match numeric(user) {
        Some(uid) => {
            let passwd = read_passwd(root)?.unwrap_or_default();
            Ok(match passwd.iter().find(|p| p.uid == uid) {
                Some(p) => (uid, p.gid, Some(p.name.clone()), Some(p.home.clone())),
                None => (uid, 0, None, None),
            })
        }
        None => {
            let passwd = read_passwd(root)?.ok_or_else(|| UserError::NoPasswdFile(user.to_string()))?;
            let p = passwd.iter().find(|p| p.name == user).ok_or_else(|| UserError::NoUser(user.to_string()))?;
            Ok((p.uid, p.gid, Some(p.name.clone()), Some(p.home.clone())))
        }
    }
}

/// Resolve a `USER` value inside `root`. An empty spec means root.
pub(crate) fn resolve_user(root: &Root, spec: &str) -> Result<ResolvedUser, UserError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, mut gid, name, home) = user_entry(root, user)?;
    let mut additional_gids = Vec::new();
    match group {
        Some(g) if !g.is_empty() => gid = group_id(root, g)?,
        _ => {
            if let Some(name) = &name {
                for g in read_group(root)?.unwrap_or_default() {
                    if g.members.iter().any(|m| m == name) && g.gid != gid && !additional_gids.contains(&g.gid) {
                        additional_gids.push(g.gid);
                    }
                }
            }
        }
    }
    Ok(ResolvedUser { uid, gid, additional_gids, home })
}

/// Resolve `--chown=user[:group]` inside `root`: a user name gives its primary group
/// when no group is named; a number without a group gives the same number as gid.
pub(crate) fn resolve_chown(root: &Root, user: &str, group: Option<&str>) -> Result<(u32, u32), UserError> {
    let (uid, primary) = match numeric(user) {
        Some(n) if user.is_empty() => (0, n),
        Some(n) => (n, n),
        None => {
            let (uid, gid, _, _) = user_entry(root, user)?;
            (uid, gid)
        }
    };
    let gid = match group {
        None | Some("") => primary,
        Some(g) => group_id(root, g)?,
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(passwd: &str, group: &str) -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(d.path().join("etc/group"), group).unwrap();
        let r = Root::open(d.path()).unwrap();
        (d, r)
    }

    #[test]
    fn resolves_names_and_numbers() {
        let (_d, r) = root_with(
            "root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234::/home/app:/bin/sh\n",
            "root:x:0:\ngrp:x:4321:app\napp:x:1234:\n",
        );
        let u = resolve_user(&r, "app").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids.clone()), (1234, 1234, vec![4321]));
        let u = resolve_user(&r, "1234:4321").unwrap();
        assert_eq!((u.uid, u.gid), (1234, 4321));
        assert_eq!(resolve_user(&r, "").unwrap().uid, 0);
        assert!(matches!(resolve_user(&r, "nobody"), Err(UserError::NoUser(_))));
        assert_eq!(resolve_chown(&r, "app", Some("grp")).unwrap(), (1234, 4321));
        assert_eq!(resolve_chown(&r, "1000", None).unwrap(), (1000, 1000));
        assert_eq!(resolve_chown(&r, "", Some("grp")).unwrap(), (0, 4321));
        assert!(matches!(resolve_chown(&r, "app", Some("nogroup")), Err(UserError::NoGroup(_))));
    }

    #[test]
    fn an_absolute_symlink_is_read_inside_the_root() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("passwd"), "alice:x:4242:4242::/:/bin/sh\n").unwrap();
        let d = tempfile::tempdir().unwrap();
        let inside = d.path().join(host.path().strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("passwd"), "alice:x:1111:1111::/:/bin/sh\n").unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(host.path().join("passwd"), d.path().join("etc/passwd")).unwrap();
        let r = Root::open(d.path()).unwrap();
        assert_eq!(resolve_user(&r, "alice").unwrap().uid, 1111);
        assert_eq!(resolve_chown(&r, "alice", None).unwrap(), (1111, 1111));
        // With no such file inside the root, the host's is not consulted either.
        std::fs::remove_file(inside.join("passwd")).unwrap();
        assert!(matches!(resolve_user(&r, "alice"), Err(UserError::NoPasswdFile(_))));
    }

    #[test]
    fn root_needs_no_passwd_file() {
        let d = tempfile::tempdir().unwrap();
        let r = Root::open(d.path()).unwrap();
        assert_eq!(resolve_user(&r, "root").unwrap().uid, 0);
        assert_eq!(resolve_chown(&r, "root", Some("0")).unwrap(), (0, 0));
    }
}
