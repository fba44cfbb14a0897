//! The packages an image holds, as an SPDX 2.3 JSON software bill of materials.
//!
//! [`scan_layers`] streams an image's layers bottom first (gzip, zstd or plain tars,
//! recognised by their first bytes) and keeps only what records installed packages, as
//! the final file system sees it after whiteouts and opaque directories:
//!
//! - [`dpkg`] reads `/var/lib/dpkg/status` and distroless `/var/lib/dpkg/status.d/*`;
//! - [`apk`] reads `/lib/apk/db/installed`;
//! - [`python`] reads `*.dist-info/METADATA`, `*.egg-info/PKG-INFO` and `*.egg-info` files;
//! - [`npm`] reads `package.json` directly under a `node_modules` directory (scoped or not);
//! - [`cargo_auditable`] reads the `.dep-v0` section of ELF binaries built with
//!   cargo-auditable;
//! - [`os_release`] tells which distribution the deb purls name.
//!
//! Everything read from an image is untrusted: each file kind has a size cap
//! ([`records::RecordKind::size_cap`]); a file over it is skipped with a warning, and no
//! more than one capped file is held in memory at a time. [`scan`] decides which layer
//! brought each package; [`purl`] writes package URLs; [`spdx_document`] turns the
//! packages into the document.

pub mod apk;
pub mod cargo_auditable;
pub mod dpkg;
pub mod npm;
pub mod os_release;
pub mod purl;
pub mod python;
pub mod records;
mod rfc822;
pub mod scan;
pub mod spdx;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;

use strata_oci::digest::Digest;

pub use scan::scan_layers;
pub use spdx::spdx_document;

/// One layer of the image: its diff_id and the blob file holding it.
#[derive(Debug, Clone)]
pub struct SbomLayer {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// The layer blob: a tar, plain or compressed with gzip or zstd.
    pub blob: PathBuf,
}

/// What the document describes and who wrote it.
#[derive(Debug, Clone)]
pub struct SbomSubject {
    /// The image name (`registry/app:1`), or `image` when it has none.
    pub name: String,
    /// `linux/amd64`.
    pub platform: String,
    /// SOURCE_DATE_EPOCH seconds; `None`: the document is dated now.
    pub created: Option<i64>,
    /// The creating tool (`strata-0.1.0`).
    pub tool: String,
}

/// Where a package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    Deb,
    Apk,
    Python,
    Npm,
    Cargo,
}

impl Ecosystem {
    pub fn as_str(self) -> &'static str {
        match self {
            Ecosystem::Deb => "deb",
            Ecosystem::Apk => "apk",
            Ecosystem::Python => "python",
            Ecosystem::Npm => "npm",
            Ecosystem::Cargo => "cargo",
        }
    }
}

impl fmt::Display for Ecosystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A package found in the image's final file system.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// The package URL (`pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12`).
    pub purl: String,
    /// diff_id of the layer that brought it.
    pub layer: Digest,
    /// Its position in the image's layers, bottom first, from 0.
    pub layer_index: usize,
    /// The file it was read from (`/var/lib/dpkg/status`).
    pub location: String,
    /// The license as the package declares it: free text, not an SPDX expression.
    pub license: Option<String>,
}
