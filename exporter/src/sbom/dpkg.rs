//! Debian/Ubuntu packages: dpkg's status database (`/var/lib/dpkg/status`) and the
//! one-file-per-package directory distroless images use instead
//! (`/var/lib/dpkg/status.d/NAME`, next to `NAME.md5sums` files, which are not records).

use super::records::Found;
use super::rfc822;
use super::Ecosystem;

pub const STATUS_PATH: &str = "/var/lib/dpkg/status";
const STATUS_D_DIR: &str = "/var/lib/dpkg/status.d/";

/// A record file directly in `status.d` (not an `.md5sums` list).
pub fn is_status_d_path(path: &str) -> bool {
    path.strip_prefix(STATUS_D_DIR)
        .is_some_and(|name| !name.is_empty() && !name.contains('/') && !name.ends_with(".md5sums"))
}

/// The packages of a status file. With `require_installed`, only stanzas whose `Status`
/// ends in the word `installed` count (the status database also lists removed packages
/// whose configuration stayed, half-installed ones and the like); `status.d` files have
/// no `Status` field.
pub fn parse_status(text: &str, require_installed: bool) -> Vec<Found> {
    let mut found = Vec::new();
    for stanza in rfc822::stanzas(text) {
        if require_installed {
            let status = rfc822::field(stanza, "Status").unwrap_or_default();
            if status.split_whitespace().last() != Some("installed") {
                continue;
            }
        }
        let (Some(name), Some(version)) = (rfc822::field(stanza, "Package"), rfc822::field(stanza, "Version")) else {
            continue;
        };
        if name.is_empty() || version.is_empty() {
            continue;
        }
        let arch = rfc822::field(stanza, "Architecture").filter(|a| !a.is_empty());
        found.push(Found { ecosystem: Ecosystem::Deb, name, version, arch, license: None });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_installed_packages_count() {
        let text = "Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2+b2\n\n\
                    Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                    Package: half\nStatus: install ok half-installed\nVersion: 1\n\n\
                    Package: noversion\nStatus: install ok installed\n";
        let found = parse_status(text, true);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "bash");
        assert_eq!(found[0].version, "5.2.15-2+b2");
        assert_eq!(found[0].arch.as_deref(), Some("amd64"));
        assert_eq!(parse_status("Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n", false).len(), 1);
    }
}
