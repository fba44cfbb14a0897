//! npm packages: `package.json` files directly under a `node_modules` directory
//! (`node_modules/NAME/package.json`, `node_modules/@SCOPE/NAME/package.json`); a
//! `package.json` deeper inside a package is one of its files, not a package.

use serde::Deserialize;

use super::records::Found;
use super::Ecosystem;

/// A path that is the manifest of an installed package.
pub fn is_manifest_path(path: &str) -> bool {
    let mut parts = path.rsplit('/');
    if parts.next() != Some("package.json") {
        return false;
    }
    let Some(package_dir) = parts.next() else { return false };
    if package_dir.is_empty() || package_dir.starts_with(['.', '@']) {
        return false;
    }
    match parts.next() {
        Some("node_modules") => true,
        Some(scope) if scope.len() > 1 && scope.starts_with('@') => parts.next() == Some("node_modules"),
        _ => false,
    }
}

/// Only the fields used; each may be of any JSON type in a hostile file.
#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    name: Option<serde_json::Value>,
    #[serde(default)]
    version: Option<serde_json::Value>,
    #[serde(default)]
    license: Option<serde_json::Value>,
}

/// `name`, `version` and (when it is a string) `license`; `None` when the file is not
/// JSON or lacks a string name or version.
pub fn parse_manifest(bytes: &[u8], path: &str) -> Option<Found> {
    let manifest: Manifest = match serde_json::from_slice(bytes) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(path, "npm package.json skipped: {e}");
            return None;
        }
    };
    let text = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    };
    let name = text(manifest.name)?;
    let version = text(manifest.version)?;
    Some(Found { ecosystem: Ecosystem::Npm, name, version, arch: None, license: text(manifest.license) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_parse_leniently() {
        let found =
            parse_manifest(br#"{"name":"@types/node","version":"20.1.0","license":"MIT","deps":{"a":[1,{}]}}"#, "p")
                .unwrap();
        assert_eq!((found.name.as_str(), found.version.as_str()), ("@types/node", "20.1.0"));
        assert_eq!(found.license.as_deref(), Some("MIT"));
        let found = parse_manifest(br#"{"name":"x","version":"1.0.0","license":{"type":"MIT"}}"#, "p").unwrap();
        assert_eq!(found.license, None);
        assert_eq!(parse_manifest(br#"{"name":"x"}"#, "p"), None);
        assert_eq!(parse_manifest(br#"{"name":1,"version":"1"}"#, "p"), None);
        assert_eq!(parse_manifest(b"not json", "p"), None);
        assert_eq!(parse_manifest(br#"["name"]"#, "p"), None);
        // Deep nesting: no stack overflow (ignored fields are skipped without recursion,
        // a kept field stops at serde_json's depth limit).
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let ignored = format!(r#"{{"name":"x","version":"1","a":{deep}}}"#);
        assert_eq!(parse_manifest(ignored.as_bytes(), "p").map(|f| f.name).as_deref(), Some("x"));
        let kept = format!(r#"{{"name":"x","version":"1","license":{deep}}}"#);
        assert_eq!(parse_manifest(kept.as_bytes(), "p"), None);
    }
}
