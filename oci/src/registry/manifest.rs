//! Telling an index from a manifest: the media type a registry (or a layout) states, the
//! `mediaType` inside the JSON, or its shape; then parsing into [`Index`] or [`Manifest`].
//! Shared by the registry client and the OCI layout reader. Pure, no I/O.

use serde::Deserialize;

use crate::image::{Index, Manifest};
use crate::media;

/// Largest manifest or index strata reads (containerd uses the same bound).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest image configuration strata reads.
pub const MAX_CONFIG_BYTES: u64 = 32 << 20;

/// The Accept header for manifest requests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A parsed index or manifest. (One lives per request, briefly: the size difference
/// between the variants costs nothing, and boxing would only add an allocation.)
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum ManifestDocument {
    Index(Index),
    Manifest(Manifest),
}

/// Why manifest bytes are not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentError {
    /// A media type strata does not pull, with a hint (may be empty).
    Unsupported { media_type: String, hint: &'static str },
    /// Not valid JSON of the announced kind.
    Invalid(String),
}

impl std::fmt::Display for DocumentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DocumentError::Unsupported { media_type, hint } => write!(f, "unsupported media type {media_type:?}{hint}"),
            DocumentError::Invalid(reason) => f.write_str(reason),
        }
    }
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default, rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(default, rename = "mediaType")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    config: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "fsLayers")]
    fs_layers: Option<serde::de::IgnoredAny>,
}

const SCHEMA1_HINT: &str =
    ": Docker schema 1 images are deprecated and not supported; re-push the image with a current client";

/// `application/json; charset=utf-8` → `application/json`.
pub fn bare_media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Parse manifest bytes, given the media type stated outside them (a `Content-Type` or a
/// descriptor), if any. Returns the effective media type and the document.
pub fn parse_document(stated: Option<&str>, bytes: &[u8]) -> Result<(String, ManifestDocument), DocumentError> {
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| DocumentError::Invalid(format!("not JSON: {e}")))?;
    let stated = stated.map(bare_media_type).filter(|m| !m.is_empty());
    let known = |m: &str| media::is_index(m) || media::is_manifest(m);
    let media_type = match (probe.media_type.as_deref(), stated) {
        (Some(inner), _) if known(inner) => inner.to_string(),
        (_, Some(s)) if known(s) => s.to_string(),
        (Some(inner), _) if !inner.is_empty() => inner.to_string(),
        _ if probe.schema_version == Some(1) || probe.fs_layers.is_some() => {
            "application/vnd.docker.distribution.manifest.v1+json".to_string()
        }
        _ if probe.manifests.is_some() => media::OCI_INDEX.to_string(),
        _ if probe.config.is_some() => media::OCI_MANIFEST.to_string(),
        (_, Some(s)) => s.to_string(),
        _ => return Err(DocumentError::Invalid("neither an image index nor an image manifest".into())),
    };
    if media_type.starts_with("application/vnd.docker.distribution.manifest.v1") || probe.schema_version == Some(1) {
        return Err(DocumentError::Unsupported { media_type, hint: SCHEMA1_HINT });
    }
    if media::is_index(&media_type) {
        let index: Index =
            serde_json::from_slice(bytes).map_err(|e| DocumentError::Invalid(format!("image index: {e}")))?;
        return Ok((media_type, ManifestDocument::Index(index)));
    }
    if media::is_manifest(&media_type) {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| DocumentError::Invalid(format!("image manifest: {e}")))?;
        return Ok((media_type, ManifestDocument::Manifest(m)));
    }
    Err(DocumentError::Unsupported { media_type, hint: "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;

    #[test]
    fn detection() {
        let (mt, d) = parse_document(Some("application/vnd.oci.image.manifest.v1+json"), MANIFEST.as_bytes()).unwrap();
        assert_eq!(mt, media::OCI_MANIFEST);
        assert!(matches!(d, ManifestDocument::Manifest(_)));
        // Generic content types: judged from the shape.
        let (mt, _) = parse_document(Some("application/json; charset=utf-8"), MANIFEST.as_bytes()).unwrap();
        assert_eq!(mt, media::OCI_MANIFEST);
        let (mt, d) = parse_document(None, br#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
        assert_eq!(mt, media::OCI_INDEX);
        assert!(matches!(d, ManifestDocument::Index(_)));
        // mediaType in the body wins.
        let list = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        assert_eq!(parse_document(Some("text/plain"), list).unwrap().0, media::DOCKER_MANIFEST_LIST);
    }

    #[test]
    fn rejections() {
        let e = parse_document(None, br#"{"schemaVersion":1,"fsLayers":[]}"#).unwrap_err();
        assert!(matches!(e, DocumentError::Unsupported { hint, .. } if hint.contains("schema 1")));
        assert!(matches!(parse_document(None, b"nope"), Err(DocumentError::Invalid(_))));
        assert!(matches!(parse_document(None, b"{}"), Err(DocumentError::Invalid(_))));
        let e = parse_document(Some(media::OCI_MANIFEST), br#"{"schemaVersion":2,"config":{}}"#).unwrap_err();
        assert!(matches!(e, DocumentError::Invalid(_)));
        let e = parse_document(None, br#"{"mediaType":"application/vnd.foo+json"}"#).unwrap_err();
        assert!(matches!(e, DocumentError::Unsupported { .. }));
    }
}
