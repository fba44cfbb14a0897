//! `--chown` names and numbers → a numeric owner, looked up in the destination's
//! `/etc/passwd` and `/etc/group` (resolved inside the destination root).
//!
//! Follows BuildKit (`client/llb` `WithUser` + `solver/llbsolver/ops` `readUser`):
//!
//! - `USER[:GROUP]`; a part that is a number (or `root`) is taken as is, anything else
//!   is a name;
//! - a numeric user without group gives `uid:uid` (`--chown=1000` → `1000:1000`); a
//!   named user without group gives the user's primary group from `/etc/passwd`;
//! - an empty user (`--chown=:staff`) is root, an empty group is no group;
//! - where BuildKit silently falls back to root for a name it cannot find, strata fails
//!   and says which name and which file (Docker's documented behaviour).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use rustix::fs::{FileType, OFlags};
use strata_solver::graph::Chown;

use super::root::{clean, file_type, Root};
use super::CopyError;

/// The largest user database read (BuildKit's limit too).
const MAX_USER_FILE: u64 = 10 << 20;

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
    let (mut uid, mut gid) = match numeric(&chown.user) {
        Some(n) => (n, n),
        None => {
            let name = chown.user.as_str();
            let entry = lookup(root, "/etc/passwd", |fields| fields.first() == Some(&name.as_bytes()))?;
            match entry {
                Lookup::Found(fields) => {
                    let num = |i: usize, what: &str| -> Result<u32, CopyError> {
                        let raw = fields.get(i).map(|f| String::from_utf8_lossy(f).into_owned()).unwrap_or_default();
                        raw.trim().parse::<u32>().map_err(|_| CopyError::UserDatabase {
                            path: "/etc/passwd".into(),
                            reason: format!("the entry of user {name:?} has an invalid {what} {raw:?}"),
                        })
                    };
                    (num(2, "uid")?, num(3, "gid")?)
                }
                Lookup::NotFound => {
                    return Err(CopyError::UnknownUser {
                        user: name.to_string(),
                        reason: "no such user in /etc/passwd".into(),
                    })
                }
                Lookup::NoFile => {
                    return Err(CopyError::UnknownUser {
                        user: name.to_string(),
                        reason: "the destination has no /etc/passwd".into(),
                    })
                }
            }
        }
    };
    if let Some(group) = chown.group.as_deref().filter(|g| !g.is_empty()) {
        gid = match numeric(group) {
            Some(n) => n,
            None => match lookup(root, "/etc/group", |fields| fields.first() == Some(&group.as_bytes()))? {
                Lookup::Found(fields) => {
                    let raw = fields.get(2).map(|f| String::from_utf8_lossy(f).into_owned()).unwrap_or_default();
                    raw.trim().parse::<u32>().map_err(|_| CopyError::UserDatabase {
                        path: "/etc/group".into(),
                        reason: format!("the entry of group {group:?} has an invalid gid {raw:?}"),
                    })?
                }
                Lookup::NotFound => {
                    return Err(CopyError::UnknownGroup {
                        group: group.to_string(),
                        reason: "no such group in /etc/group".into(),
                    })
                }
                Lookup::NoFile => {
                    return Err(CopyError::UnknownGroup {
                        group: group.to_string(),
                        reason: "the destination has no /etc/group".into(),
                    })
                }
            },
        };
    }
    if chown.user.is_empty() {
        uid = 0;
    }
    Ok((uid, gid))
}

/// A number, `root`, or empty (root) — `None` for a name to look up.
fn numeric(s: &str) -> Option<u32> {
    if s.is_empty() || s == "root" {
        return Some(0);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    None
}

enum Lookup {
    Found(Vec<Vec<u8>>),
    NotFound,
    NoFile,
}

/// The first line of the colon-separated database at `path` (inside `root`) whose
/// fields satisfy `want`.
fn lookup(root: &Root, path: &str, want: impl Fn(&[&[u8]]) -> bool) -> Result<Lookup, CopyError> {
    let db_err = |reason: String| CopyError::UserDatabase { path: path.to_string(), reason };
    let resolved =
        root.resolve(&clean(path.as_bytes()), true, None).map_err(|_| db_err("cannot be resolved".into()))?;
    let Some(st) = &resolved.stat else {
        return Ok(Lookup::NoFile);
    };
    if file_type(st) != FileType::RegularFile {
        return Err(db_err("is not a regular file".into()));
    }
    let fd = root.open_real(&resolved.real, OFlags::RDONLY).map_err(|e| db_err(format!("cannot be opened: {e}")))?;
    let mut reader = BufReader::new(File::from(fd).take(MAX_USER_FILE + 1));
    let mut line = Vec::new();
    let mut total = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(|e| db_err(format!("cannot be read: {e}")))?;
        if n == 0 {
            return Ok(Lookup::NotFound);
        }
        total += n as u64;
        if total > MAX_USER_FILE {
            return Err(db_err(format!("is larger than {MAX_USER_FILE} bytes")));
        }
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() || trimmed.starts_with(b"#") {
            continue;
        }
        let fields: Vec<&[u8]> = trimmed.split(|&b| b == b':').collect();
        if want(&fields) {
            return Ok(Lookup::Found(fields.into_iter().map(|f| f.to_vec()).collect()));
        }
    }
}
