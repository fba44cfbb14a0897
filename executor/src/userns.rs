//! Whether this process runs in a user namespace (rootless strata, or root inside a
//! container that maps its ids), and what that changes for snapshots and the sandbox:
//! overlayfs keeps its metadata in `user.overlay.*` xattrs (`userxattr`), /sys is
//! bound rather than mounted, resource limits cannot go above the host's.

use std::sync::OnceLock;

/// The process's uid map is not the whole identity map of the initial namespace.
pub fn in_user_namespace() -> bool {
    static IN: OnceLock<bool> = OnceLock::new();
    *IN.get_or_init(|| match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => !is_identity_map(&map),
        Err(_) => false,
    })
}

fn is_identity_map(map: &str) -> bool {
    let fields: Vec<&str> = map.split_whitespace().collect();
    fields == ["0", "0", "4294967295"]
}

/// The xattr namespace overlayfs reads its metadata from (opaque directories,
/// redirects): `trusted.overlay.` normally, `user.overlay.` with `userxattr`.
pub fn overlay_xattr_prefix() -> &'static str {
    if in_user_namespace() {
        "user.overlay."
    } else {
        "trusted.overlay."
    }
}

/// The ids mapped into this namespace: (first inside id, count) ranges of the uid map.
pub fn mapped_uids() -> Vec<(u32, u32)> {
    read_map("/proc/self/uid_map")
}

/// [`mapped_uids`] for groups.
pub fn mapped_gids() -> Vec<(u32, u32)> {
    read_map("/proc/self/gid_map")
}

fn read_map(path: &str) -> Vec<(u32, u32)> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .filter_map(|l| {
            let f: Vec<u32> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            (f.len() == 3).then(|| (f[0], f[2]))
        })
        .collect()
}

/// What to do about a file whose owner the namespace cannot hold.
pub const UNMAPPED_OWNER_HINT: &str = "strata runs rootless with only your own id mapped; give your user \
     subordinate ids (as root: `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER`, \
     package uidmap) and run the build again";

/// Is `id` mapped by `ranges`?
pub fn is_mapped(ranges: &[(u32, u32)], id: u32) -> bool {
    ranges.iter().any(|(first, count)| id >= *first && (id - first) < *count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_map_is_the_initial_namespace() {
        assert!(is_identity_map("         0          0 4294967295\n"));
        assert!(!is_identity_map("0 1000 1\n1 100000 65536\n"));
        assert!(is_mapped(&[(0, 1), (1, 65536)], 1000));
        assert!(!is_mapped(&[(0, 1)], 1000));
    }
}
