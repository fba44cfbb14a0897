//! Resolving `USER` / `--chown` names against a root file system's /etc/passwd and
//! /etc/group, as Docker does (`name`, `name:group`, `uid:gid`, numbers as they are).

use std::path::Path;

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
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn read_passwd(root: &Path) -> Vec<PasswdEntry> {
    let text = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].trim().parse().ok()?,
                gid: f[3].trim().parse().ok()?,
                home: f.get(5).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// (name, gid, members)
fn read_group(root: &Path) -> Vec<(String, u32, Vec<String>)> {
    let text = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            let members = f
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
                .unwrap_or_default();
            Some((f[0].to_string(), f[2].trim().parse().ok()?, members))
        })
        .collect()
}

/// Resolve a `USER` value inside `root`. An empty spec means root.
pub fn resolve_user(root: &Path, spec: &str) -> Result<ResolvedUser, UserError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let passwd = read_passwd(root);
    let (uid, mut gid, name, home) = if let Ok(uid) = user.parse::<u32>() {
        match passwd.iter().find(|p| p.uid == uid) {
            Some(p) => (uid, p.gid, Some(p.name.clone()), Some(p.home.clone())),
            None => (uid, 0, None, None),
        }
    } else {
        let p = passwd.iter().find(|p| p.name == user).ok_or_else(|| UserError::NoUser(user.to_string()))?;
        (p.uid, p.gid, Some(p.name.clone()), Some(p.home.clone()))
    };
    let groups = read_group(root);
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|(n, _, _)| n == g)
                .map(|(_, id, _)| *id)
                .ok_or_else(|| UserError::NoGroup(g.to_string()))?,
        };
    }
    let mut additional_gids = Vec::new();
    if group.is_none() {
        if let Some(name) = &name {
            for (_, id, members) in &groups {
                if members.iter().any(|m| m == name) && *id != gid && !additional_gids.contains(id) {
                    additional_gids.push(*id);
                }
            }
        }
    }
    Ok(ResolvedUser { uid, gid, additional_gids, home })
}

/// Resolve `--chown=user[:group]`: a user name gives its primary group when no group
/// is named; a number without a group gives the same number as gid.
pub fn resolve_chown(root: &Path, user: &str, group: Option<&str>) -> Result<(u32, u32), UserError> {
    let passwd = read_passwd(root);
    let (uid, primary) = match user.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => {
            let p = passwd.iter().find(|p| p.name == user).ok_or_else(|| UserError::NoUser(user.to_string()))?;
            (p.uid, p.gid)
        }
    };
    let gid = match group {
        None | Some("") => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => read_group(root)
                .iter()
                .find(|(n, _, _)| n == g)
                .map(|(_, id, _)| *id)
                .ok_or_else(|| UserError::NoGroup(g.to_string()))?,
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_and_numbers() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\ngrp:x:4321:app\napp:x:1234:\n").unwrap();
        let u = resolve_user(d.path(), "app").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids.clone()), (1234, 1234, vec![4321]));
        let u = resolve_user(d.path(), "1234:4321").unwrap();
        assert_eq!((u.uid, u.gid), (1234, 4321));
        assert_eq!(resolve_user(d.path(), "").unwrap().uid, 0);
        assert!(resolve_user(d.path(), "nobody").is_err());
        assert_eq!(resolve_chown(d.path(), "app", Some("grp")).unwrap(), (1234, 4321));
        assert_eq!(resolve_chown(d.path(), "1000", None).unwrap(), (1000, 1000));
    }
}
