//! The attestations of a published image — in a registry, or an OCI layout — read back:
//! each attestation manifest's statements, checked as hostile input (sizes capped,
//! digests verified by the registry client or the layout, JSON parsed once).

use std::path::Path;

use serde_json::Value;
use strata_oci::image::{Descriptor, Index, Manifest};
use strata_oci::layout::OciLayout;
use strata_oci::media;
use strata_oci::reference::Reference;
use strata_oci::registry::RegistryClient;
use strata_oci::store::BlobStore;

use super::manifest::{is_attestation, IN_TOTO_MEDIA_TYPE, REFERENCE_DIGEST};

/// The largest statement read (a `mode=max` provenance of a 300 000-file context).
const MAX_STATEMENT: u64 = 256 << 20;
/// The largest index or manifest read.
const MAX_MANIFEST: u64 = 4 << 20;

/// One statement of a published image.
#[derive(Debug, Clone)]
pub struct Found {
    /// The image manifest it is about.
    pub subject: String,
    pub predicate_type: String,
    pub statement: Value,
}

/// Where a published image is.
pub enum Published<'a> {
    Registry { client: &'a RegistryClient, reference: &'a Reference },
    Layout { layout: &'a OciLayout, root: &'a Descriptor },
}

/// Every statement the image at `source` carries, in index order.
pub async fn statements(source: &Published<'_>, scratch: &BlobStore) -> Result<Vec<Found>, String> {
    let index_bytes = match source {
        Published::Registry { client, reference } => {
            let resolved = client.resolve(reference).await.map_err(|e| e.to_string())?;
            if !resolved.is_index() {
                return Ok(Vec::new());
            }
            resolved.bytes
        }
        Published::Layout { layout, root } => {
            if !media::is_index(&root.media_type) {
                return Ok(Vec::new());
            }
            layout.read_small_blob(root, MAX_MANIFEST).map_err(|e| e.to_string())?
        }
    };
    let index: Index = serde_json::from_slice(&index_bytes).map_err(|e| format!("invalid index: {e}"))?;
    let mut out = Vec::new();
    for entry in index.manifests.iter().filter(|d| is_attestation(d)) {
        let subject = entry.annotations.get(REFERENCE_DIGEST).cloned().unwrap_or_default();
        let manifest_bytes = read(source, entry, MAX_MANIFEST, scratch).await?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| format!("attestation manifest {}: {e}", entry.digest))?;
        for layer in manifest.layers.iter().filter(|l| l.media_type == IN_TOTO_MEDIA_TYPE) {
            if layer.size > MAX_STATEMENT {
                return Err(format!("statement {} is {} bytes, more than {MAX_STATEMENT}", layer.digest, layer.size));
            }
            let bytes = read(source, layer, MAX_STATEMENT, scratch).await?;
            let statement: Value =
                serde_json::from_slice(&bytes).map_err(|e| format!("statement {}: {e}", layer.digest))?;
            let predicate_type = statement["predicateType"].as_str().unwrap_or_default().to_string();
            out.push(Found { subject: subject.clone(), predicate_type, statement });
        }
    }
    Ok(out)
}

async fn read(source: &Published<'_>, d: &Descriptor, limit: u64, scratch: &BlobStore) -> Result<Vec<u8>, String> {
    if d.size > limit {
        return Err(format!("{} is {} bytes, more than {limit}", d.digest, d.size));
    }
    match source {
        Published::Registry { client, reference } => {
            let pinned = Reference { tag: None, digest: Some(d.digest.clone()), ..(*reference).clone() };
            if media::is_manifest(&d.media_type) {
                return client.resolve(&pinned).await.map(|r| r.bytes).map_err(|e| e.to_string());
            }
            client.fetch_blob(reference, d, scratch).await.map_err(|e| e.to_string())?;
            scratch.read_blob(&d.digest).map_err(|e| e.to_string())
        }
        Published::Layout { layout, .. } => layout.read_small_blob(d, limit).map_err(|e| e.to_string()),
    }
}

/// The provenance statement about `manifest` among `found`.
pub fn provenance_of<'a>(found: &'a [Found], manifest: Option<&str>) -> Option<&'a Found> {
    found
        .iter()
        .filter(|f| f.predicate_type == super::PROVENANCE_PREDICATE)
        .find(|f| manifest.is_none_or(|m| f.subject == m))
}

/// An OCI layout directory or tar, opened (a tar's blobs go to `scratch`).
pub fn open_layout(path: &Path, scratch: &BlobStore) -> Result<OciLayout, String> {
    if path.is_dir() {
        OciLayout::open(path).map_err(|e| e.to_string())
    } else {
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        OciLayout::open_tar(std::io::BufReader::new(file), scratch).map_err(|e| e.to_string())
    }
}
