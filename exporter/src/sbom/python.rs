//! Python distributions: the core metadata of an installed distribution
//! (`NAME.dist-info/METADATA`, `NAME.egg-info/PKG-INFO`, or an `NAME.egg-info` file that
//! is itself the metadata), read from its header block.

use super::records::Found;
use super::rfc822;
use super::Ecosystem;

/// A path that holds a distribution's metadata.
pub fn is_metadata_path(path: &str) -> bool {
    let Some((dir, file)) = path.rsplit_once('/') else { return false };
    let dir_name = dir.rsplit('/').next().unwrap_or("");
    (file == "METADATA" && dir_name.len() > ".dist-info".len() && dir_name.ends_with(".dist-info"))
        || (file == "PKG-INFO" && dir_name.len() > ".egg-info".len() && dir_name.ends_with(".egg-info"))
        || (file.len() > ".egg-info".len() && file.ends_with(".egg-info"))
}

/// `Name`, `Version` and the license (`License-Expression`, else `License`) of a metadata
/// file; `None` without a name or a version.
pub fn parse_metadata(text: &str) -> Option<Found> {
    let headers = rfc822::first_stanza(text);
    let name = rfc822::field(headers, "Name").filter(|n| !n.is_empty())?;
    let version = rfc822::field(headers, "Version").filter(|v| !v.is_empty())?;
    let license = ["License-Expression", "License"]
        .iter()
        .filter_map(|f| rfc822::field(headers, f))
        .find(|l| !l.is_empty() && !l.eq_ignore_ascii_case("UNKNOWN"));
    Some(Found { ecosystem: Ecosystem::Python, name, version, arch: None, license })
}

/// A project name normalized as PEP 503 says: lowercase, each run of `-`, `_` and `.`
/// one `-`.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.extend(c.to_lowercase());
            in_run = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_give_name_version_license() {
        let text = "Metadata-Version: 2.1\nName: Flask_SQLAlchemy\nVersion: 3.1.1\nLicense: BSD\n  more text\n\nName: Not-This\n";
        let found = parse_metadata(text).unwrap();
        assert_eq!(found.name, "Flask_SQLAlchemy");
        assert_eq!(found.version, "3.1.1");
        assert_eq!(found.license.as_deref(), Some("BSD\nmore text"));
        assert_eq!(parse_metadata("Name: x\n").map(|f| f.name), None);
        assert_eq!(parse_metadata("Name: x\nVersion: 1\nLicense: UNKNOWN\n").unwrap().license, None);
    }

    #[test]
    fn pep503_normalization() {
        assert_eq!(normalize_name("Flask_SQLAlchemy"), "flask-sqlalchemy");
        assert_eq!(normalize_name("zope.interface"), "zope-interface");
        assert_eq!(normalize_name("A-_.-b"), "a-b");
    }
}
