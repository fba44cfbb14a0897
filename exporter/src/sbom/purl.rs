//! Package URLs (<https://github.com/package-url/purl-spec>):
//! `pkg:TYPE/NAMESPACE/NAME@VERSION?KEY=VALUE&...`, every part percent-encoded except the
//! unreserved characters (`A-Z a-z 0-9 . - _ ~`), qualifiers sorted by key, empty ones left
//! out.

use super::os_release::OsRelease;
use super::python;
use super::records::Found;
use super::Ecosystem;

/// The purl of a package; `distro` names the deb namespace and `distro` qualifier.
pub fn for_package(found: &Found, distro: &OsRelease) -> String {
    let arch = found.arch.as_deref().unwrap_or("");
    match found.ecosystem {
        Ecosystem::Deb => {
            let id = distro.id.as_deref().unwrap_or("debian");
            let distro_qualifier = match (&distro.id, &distro.version_id) {
                (Some(id), Some(version)) => format!("{id}-{version}"),
                _ => String::new(),
            };
            let name = found.name.to_lowercase();
            build("deb", Some(id), &name, &found.version, &[("arch", arch), ("distro", &distro_qualifier)])
        }
        Ecosystem::Apk => build("apk", Some("alpine"), &found.name.to_lowercase(), &found.version, &[("arch", arch)]),
        Ecosystem::Python => build("pypi", None, &python::normalize_name(&found.name), &found.version, &[]),
        Ecosystem::Npm => {
            let lower = found.name.to_lowercase();
            match lower.split_once('/') {
                Some((scope, name)) if scope.starts_with('@') => build("npm", Some(scope), name, &found.version, &[]),
                _ => build("npm", None, &lower, &found.version, &[]),
            }
        }
        Ecosystem::Cargo => build("cargo", None, &found.name, &found.version, &[]),
    }
}

/// Assemble a purl; `qualifiers` must be sorted by key.
pub fn build(ty: &str, namespace: Option<&str>, name: &str, version: &str, qualifiers: &[(&str, &str)]) -> String {
    let mut purl = format!("pkg:{ty}/");
    if let Some(namespace) = namespace {
        for segment in namespace.split('/').filter(|s| !s.is_empty()) {
            purl.push_str(&encode(segment));
            purl.push('/');
        }
    }
    purl.push_str(&encode(name));
    if !version.is_empty() {
        purl.push('@');
        purl.push_str(&encode(version));
    }
    let mut separator = '?';
    for (key, value) in qualifiers.iter().filter(|(_, v)| !v.is_empty()) {
        purl.push(separator);
        purl.push_str(key);
        purl.push('=');
        purl.push_str(&encode(value));
        separator = '&';
    }
    purl
}

/// Percent-encode all but the unreserved characters.
pub fn encode(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for &b in part.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(ecosystem: Ecosystem, name: &str, version: &str, arch: Option<&str>) -> Found {
        Found { ecosystem, name: name.into(), version: version.into(), arch: arch.map(Into::into), license: None }
    }

    #[test]
    fn deb_purls_encode_epoch_and_plus() {
        let bookworm = OsRelease { id: Some("debian".into()), version_id: Some("12".into()) };
        assert_eq!(
            for_package(&found(Ecosystem::Deb, "libfoo", "1:2.3+dfsg", Some("amd64")), &bookworm),
            "pkg:deb/debian/libfoo@1%3A2.3%2Bdfsg?arch=amd64&distro=debian-12"
        );
        assert_eq!(
            for_package(&found(Ecosystem::Deb, "g++", "12.2.0-14~bpo", None), &OsRelease::default()),
            "pkg:deb/debian/g%2B%2B@12.2.0-14~bpo"
        );
        let noble = OsRelease { id: Some("ubuntu".into()), version_id: Some("24.04".into()) };
        assert_eq!(
            for_package(&found(Ecosystem::Deb, "bash", "5.2.21-2ubuntu4", Some("arm64")), &noble),
            "pkg:deb/ubuntu/bash@5.2.21-2ubuntu4?arch=arm64&distro=ubuntu-24.04"
        );
    }

    #[test]
    fn other_ecosystems() {
        let none = OsRelease::default();
        assert_eq!(
            for_package(&found(Ecosystem::Apk, "musl", "1.2.4-r2", Some("x86_64")), &none),
            "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64"
        );
        assert_eq!(
            for_package(&found(Ecosystem::Python, "Flask_SQLAlchemy", "3.1.1", None), &none),
            "pkg:pypi/flask-sqlalchemy@3.1.1"
        );
        assert_eq!(
            for_package(&found(Ecosystem::Npm, "@types/node", "20.1.0", None), &none),
            "pkg:npm/%40types/node@20.1.0"
        );
        assert_eq!(for_package(&found(Ecosystem::Npm, "left-pad", "1.3.0", None), &none), "pkg:npm/left-pad@1.3.0");
        assert_eq!(for_package(&found(Ecosystem::Cargo, "serde", "1.0.200", None), &none), "pkg:cargo/serde@1.0.200");
        assert_eq!(encode("a b/c?d#é"), "a%20b%2Fc%3Fd%23%C3%A9");
    }
}
