//! In-toto statements in BuildKit's layout: for each platform's image manifest, an
//! attestation manifest (an OCI image manifest whose layers are `application/vnd.in-toto+json`
//! statements with that manifest as their subject), listed in the image index with
//! platform `unknown/unknown` and the annotations `vnd.docker.reference.type:
//! attestation-manifest` and `vnd.docker.reference.digest: <image manifest digest>`.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use strata_oci::digest::Digest;
use strata_oci::image::{canonical_json, Descriptor, ImageConfig, Index, Manifest, Platform};
use strata_oci::media;
use strata_oci::store::BlobStore;

use super::STATEMENT_TYPE;

pub const IN_TOTO_MEDIA_TYPE: &str = "application/vnd.in-toto+json";
pub const PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";

/// One platform's image, as the statements about it see it.
pub struct Subject<'a> {
    pub manifest: &'a Descriptor,
    pub config: &'a ImageConfig,
    pub layers: &'a [Descriptor],
}

/// Is this index entry an attestation manifest?
pub fn is_attestation(d: &Descriptor) -> bool {
    d.annotations.get(REFERENCE_TYPE).is_some_and(|t| t == ATTESTATION_MANIFEST)
}

/// An in-toto v1 statement about `subject` (named `name`: `pkg:docker/REPO@TAG?platform=…`).
pub fn statement(name: &str, subject: &Digest, predicate_type: &str, predicate: Value) -> Vec<u8> {
    let s = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{ "name": name, "digest": { subject.algorithm(): subject.hex() } }],
        "predicateType": predicate_type,
        "predicate": predicate,
    });
    serde_json::to_vec(&s).unwrap_or_default()
}

/// The subject's name as BuildKit gives it: the image's first name, else `_`.
pub fn subject_name(names: &[String], platform: &Platform) -> String {
    let platform = platform.to_string().replace('/', "%2F");
    match names.first().and_then(|n| strata_oci::reference::Reference::parse(n).ok()) {
        Some(r) => {
            format!("pkg:docker/{}@{}?platform={platform}", r.name(), r.tag.clone().unwrap_or_else(|| "latest".into()))
        }
        None => "_".into(),
    }
}

/// `image` (a manifest, or an index of platform manifests) as an index that also holds
/// one attestation manifest per platform, each with the statements `make` gives for
/// that platform's image: `(predicate type, statement bytes)`.
pub fn attach(
    store: &BlobStore,
    image: &Descriptor,
    mut make: impl FnMut(&Subject<'_>) -> std::io::Result<Vec<(String, Vec<u8>)>>,
) -> std::io::Result<Descriptor> {
    let bad = |what: &str, d: &Digest, e: String| std::io::Error::other(format!("{what} {d}: {e}"));
    let (mut entries, annotations) = if media::is_index(&image.media_type) {
        let index: Index = serde_json::from_slice(&store.read_blob(&image.digest).map_err(std::io::Error::other)?)
            .map_err(|e| bad("index", &image.digest, e.to_string()))?;
        let entries: Vec<Descriptor> = index.manifests.into_iter().filter(|d| !is_attestation(d)).collect();
        (entries, index.annotations)
    } else {
        (vec![image.clone()], BTreeMap::new())
    };
    let mut attestations = Vec::new();
    for entry in &mut entries {
        let manifest: Manifest =
            serde_json::from_slice(&store.read_blob(&entry.digest).map_err(std::io::Error::other)?)
                .map_err(|e| bad("manifest", &entry.digest, e.to_string()))?;
        let config: ImageConfig =
            serde_json::from_slice(&store.read_blob(&manifest.config.digest).map_err(std::io::Error::other)?)
                .map_err(|e| bad("config", &manifest.config.digest, e.to_string()))?;
        if entry.platform.is_none() {
            entry.platform = Some(config.platform());
        }
        let statements = make(&Subject { manifest: entry, config: &config, layers: &manifest.layers })?;
        if statements.is_empty() {
            continue;
        }
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for (predicate_type, bytes) in statements {
            let digest = store.put_bytes(&bytes).map_err(std::io::Error::other)?;
            let mut d = Descriptor::new(IN_TOTO_MEDIA_TYPE, digest.clone(), bytes.len() as u64);
            d.annotations.insert(PREDICATE_TYPE_ANNOTATION.into(), predicate_type);
            layers.push(d);
            diff_ids.push(digest.to_string());
        }
        // As BuildKit: a config of an unknown platform whose diff_ids are the statements'.
        let config = json!({
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
        let config_digest = store.put_bytes(&config_bytes).map_err(std::io::Error::other)?;
        let att = Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            config: Descriptor::new(media::OCI_CONFIG, config_digest, config_bytes.len() as u64),
            layers,
            annotations: BTreeMap::new(),
        };
        let bytes = canonical_json(&att);
        let digest = store.put_bytes(&bytes).map_err(std::io::Error::other)?;
        let mut d = Descriptor::new(media::OCI_MANIFEST, digest, bytes.len() as u64);
        d.platform = Some(Platform::new("unknown", "unknown", None));
        d.annotations.insert(REFERENCE_DIGEST.into(), entry.digest.to_string());
        d.annotations.insert(REFERENCE_TYPE.into(), ATTESTATION_MANIFEST.into());
        attestations.push(d);
    }
    entries.extend(attestations);
    let index = Index { schema_version: 2, media_type: Some(media::OCI_INDEX.into()), manifests: entries, annotations };
    let bytes = canonical_json(&index);
    let digest = store.put_bytes(&bytes).map_err(std::io::Error::other)?;
    let mut d = Descriptor::new(media::OCI_INDEX, digest, bytes.len() as u64);
    d.annotations = image.annotations.clone();
    Ok(d)
}
