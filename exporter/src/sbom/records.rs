//! Which files of an image record installed packages, how much of each is read, and what
//! they say.

use super::os_release::OsRelease;
use super::{apk, cargo_auditable, dpkg, npm, os_release, python, Ecosystem};

const MIB: u64 = 1 << 20;

/// A kind of file that records packages (or, for `/etc/os-release`, the distribution).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    DpkgStatus,
    DpkgStatusD,
    ApkInstalled,
    PythonMetadata,
    NpmManifest,
    OsRelease,
    /// An ELF file (recognised by its content, not its path).
    AuditableBinary,
}

impl RecordKind {
    /// The largest file of this kind that is read; a larger one is skipped.
    pub fn size_cap(self) -> u64 {
        match self {
            RecordKind::DpkgStatus | RecordKind::DpkgStatusD | RecordKind::ApkInstalled => 64 * MIB,
            RecordKind::PythonMetadata | RecordKind::NpmManifest => MIB,
            RecordKind::OsRelease => 64 * 1024,
            RecordKind::AuditableBinary => 64 * MIB,
        }
    }

    /// A database of many packages, rewritten whole by each install: a package in it is
    /// attributed to the layer where it first appeared, not the last that wrote the file.
    pub fn lists_many(self) -> bool {
        matches!(self, RecordKind::DpkgStatus | RecordKind::ApkInstalled)
    }
}

/// The kind of record a path (`/var/lib/dpkg/status`) holds, judged by the path alone.
pub fn classify(path: &str) -> Option<RecordKind> {
    if path == dpkg::STATUS_PATH {
        Some(RecordKind::DpkgStatus)
    } else if dpkg::is_status_d_path(path) {
        Some(RecordKind::DpkgStatusD)
    } else if path == apk::INSTALLED_PATH {
        Some(RecordKind::ApkInstalled)
    } else if os_release::PATHS.contains(&path) {
        Some(RecordKind::OsRelease)
    } else if python::is_metadata_path(path) {
        Some(RecordKind::PythonMetadata)
    } else if npm::is_manifest_path(path) {
        Some(RecordKind::NpmManifest)
    } else {
        None
    }
}

/// A package as its record states it, before it has a layer and a purl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    pub arch: Option<String>,
    pub license: Option<String>,
}

impl Found {
    /// What makes two entries of a package database the same package.
    pub fn identity(&self) -> (&str, &str, Option<&str>) {
        (&self.name, &self.version, self.arch.as_deref())
    }
}

/// What a record file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    Packages(Vec<Found>),
    OsRelease(OsRelease),
}

/// Parse a record file of a known kind (at most its size cap long); `path` is for logs.
pub fn parse(kind: RecordKind, bytes: &[u8], path: &str) -> Contents {
    let text = || String::from_utf8_lossy(bytes);
    match kind {
        RecordKind::DpkgStatus => Contents::Packages(dpkg::parse_status(&text(), true)),
        RecordKind::DpkgStatusD => Contents::Packages(dpkg::parse_status(&text(), false)),
        RecordKind::ApkInstalled => Contents::Packages(apk::parse_installed(&text())),
        RecordKind::PythonMetadata => Contents::Packages(python::parse_metadata(&text()).into_iter().collect()),
        RecordKind::NpmManifest => Contents::Packages(npm::parse_manifest(bytes, path).into_iter().collect()),
        RecordKind::OsRelease => Contents::OsRelease(os_release::parse(&text())),
        RecordKind::AuditableBinary => Contents::Packages(cargo_auditable::packages_in_elf(bytes, path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_classify_by_kind() {
        let cases = [
            ("/var/lib/dpkg/status", Some(RecordKind::DpkgStatus)),
            ("/var/lib/dpkg/status-old", None),
            ("/var/lib/dpkg/status.d/libc6", Some(RecordKind::DpkgStatusD)),
            ("/var/lib/dpkg/status.d/libc6.md5sums", None),
            ("/var/lib/dpkg/status.d/sub/x", None),
            ("/lib/apk/db/installed", Some(RecordKind::ApkInstalled)),
            ("/etc/os-release", Some(RecordKind::OsRelease)),
            ("/usr/lib/os-release", Some(RecordKind::OsRelease)),
            ("/usr/lib/python3/site-packages/requests-2.31.0.dist-info/METADATA", Some(RecordKind::PythonMetadata)),
            ("/usr/lib/python3/site-packages/six.egg-info/PKG-INFO", Some(RecordKind::PythonMetadata)),
            ("/usr/lib/python3/dist-packages/six-1.16.0.egg-info", Some(RecordKind::PythonMetadata)),
            ("/usr/lib/python3/site-packages/x.dist-info/RECORD", None),
            ("/app/node_modules/left-pad/package.json", Some(RecordKind::NpmManifest)),
            ("/app/node_modules/@types/node/package.json", Some(RecordKind::NpmManifest)),
            ("/app/node_modules/a/node_modules/b/package.json", Some(RecordKind::NpmManifest)),
            ("/app/node_modules/left-pad/lib/package.json", None),
            ("/app/package.json", None),
            ("/app/node_modules/.bin/package.json", None),
            ("/app/node_modules/@scope/package.json", None),
        ];
        for (path, want) in cases {
            assert_eq!(classify(path), want, "{path}");
        }
    }
}
