//! Assembling an image from a build result: layers (reused base blobs, or diffs written
//! by [`crate::layer`] and remembered beside their snapshot), the image configuration
//! with its history aligned to the layers, and the manifest — all into the blob store.

use std::path::PathBuf;

use strata_oci::digest::Digest;
use strata_oci::image::{canonical_json, Descriptor, History, ImageConfig, Index, Manifest};
use strata_oci::media;
use strata_oci::store::BlobStore;

use crate::layer::{write_layer, Compression, LayerBlob, LayerOptions};

/// One layer of the result.
#[derive(Debug, Clone)]
pub struct LayerInput {
    /// The snapshot's diff directory (overlay upper-dir form).
    pub dir: PathBuf,
    /// Where this layer's exported blob is remembered (a directory beside the snapshot).
    pub meta_dir: PathBuf,
    /// The blob a base-image layer came from, reused as is.
    pub source: Option<LayerBlob>,
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub compression: Compression,
    pub oci_media_types: bool,
    pub source_date_epoch: Option<i64>,
    /// Recompress base layers whose compression differs (`force-compression=true`).
    pub force_compression: bool,
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            compression: Compression::default(),
            oci_media_types: true,
            source_date_epoch: None,
            force_compression: false,
            annotations: Default::default(),
        }
    }
}

/// The image written to the store.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest: Descriptor,
    pub config_digest: Digest,
    pub config: ImageConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing a layer: {0}")]
    Layer(#[from] crate::layer::LayerError),
    #[error("store: {0}")]
    Store(#[from] strata_oci::store::StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn dir_is_empty(p: &std::path::Path) -> bool {
    std::fs::read_dir(p).map(|mut d| d.next().is_none()).unwrap_or(true)
}

fn cached_blob(meta: &std::path::Path, key: &str, store: &BlobStore) -> Option<LayerBlob> {
    let bytes = std::fs::read(meta.join(format!("layer-{key}.json"))).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let blob = LayerBlob {
        digest: v["digest"].as_str()?.parse().ok()?,
        diff_id: v["diff_id"].as_str()?.parse().ok()?,
        size: v["size"].as_u64()?,
        media_type: v["media_type"].as_str()?.to_string(),
    };
    store.contains(&blob.digest).then_some(blob)
}

fn remember_blob(meta: &std::path::Path, key: &str, blob: &LayerBlob) {
    let v = serde_json::json!({"digest": blob.digest.to_string(), "diff_id": blob.diff_id.to_string(), "size": blob.size, "media_type": blob.media_type});
    let _ = strata_oci::store::write_atomic_unsynced(&meta.join(format!("layer-{key}.json")), v.to_string().as_bytes());
}

fn options_key(opts: &ExportOptions) -> String {
    let c = match opts.compression {
        Compression::Gzip { level } => format!("gzip{level}"),
        Compression::Zstd { level } => format!("zstd{level}"),
        Compression::Uncompressed => "tar".to_string(),
    };
    format!(
        "{c}-{}-{}",
        if opts.oci_media_types { "oci" } else { "docker" },
        opts.source_date_epoch.map(|e| e.to_string()).unwrap_or_else(|| "none".into())
    )
}

fn docker_media_type(oci: &str) -> String {
    match oci {
        media::OCI_LAYER_GZIP => media::DOCKER_LAYER_GZIP.into(),
        media::OCI_LAYER_TAR => media::DOCKER_LAYER_TAR.into(),
        other => other.into(),
    }
}

/// The OCI media type of a layer given either type.
pub fn oci_media_type(docker: &str) -> String {
    match docker {
        media::DOCKER_LAYER_GZIP => media::OCI_LAYER_GZIP.into(),
        media::DOCKER_LAYER_TAR => media::OCI_LAYER_TAR.into(),
        other => other.into(),
    }
}

/// The blob of one layer with these options: a base layer's own, the one written
/// before (remembered beside the snapshot), or a new one. `None` for an empty diff.
///
/// Safe to call for the same layer from several threads or processes at once (the
/// build writes layers ahead while later steps run): one writes, the others wait
/// for it and reuse its blob.
pub fn ensure_layer(store: &BlobStore, l: &LayerInput, opts: &ExportOptions) -> Result<Option<LayerBlob>, ExportError> {
    if let Some(src) = &l.source {
        let mut b = src.clone();
        b.media_type =
            if opts.oci_media_types { oci_media_type(&b.media_type) } else { docker_media_type(&b.media_type) };
        return Ok(Some(b));
    }
    if dir_is_empty(&l.dir) {
        return Ok(None);
    }
    let key = options_key(opts);
    if let Some(b) = cached_blob(&l.meta_dir, &key, store) {
        return Ok(Some(b));
    }
    let _writing = LayerLock::acquire(&l.meta_dir, &key);
    if let Some(b) = cached_blob(&l.meta_dir, &key, store) {
        return Ok(Some(b));
    }
    let lo = LayerOptions {
        compression: opts.compression,
        source_date_epoch: opts.source_date_epoch,
        oci_media_types: opts.oci_media_types,
    };
    let b = write_layer(&l.dir, store, &lo)?;
    remember_blob(&l.meta_dir, &key, &b);
    Ok(Some(b))
}

/// An exclusive `flock` on the file naming one layer blob being written; released on
/// drop (or when the process dies). Without it (no lock file possible) writers may
/// both write: the results are identical, so that is only wasted work.
struct LayerLock {
    _file: Option<std::fs::File>,
}

impl LayerLock {
    fn acquire(meta: &std::path::Path, key: &str) -> LayerLock {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(meta.join(format!("layer-{key}.lock")))
            .ok()
            .filter(|f| rustix::fs::flock(f, rustix::fs::FlockOperation::LockExclusive).is_ok());
        LayerLock { _file: file }
    }
}

/// Write the layers, config and manifest of an image into the store.
///
/// `config.history` holds one entry per instruction; entries with `empty_layer == false`
/// are matched in order with the layers that are not empty. A layer whose diff is
/// empty is left out and its history entry marked `empty_layer`.
pub fn build_image(
    store: &BlobStore,
    mut config: ImageConfig,
    layers: &[LayerInput],
    opts: &ExportOptions,
) -> Result<BuiltImage, ExportError> {
    let mut blobs: Vec<Option<LayerBlob>> = Vec::with_capacity(layers.len());
    for l in layers {
        blobs.push(ensure_layer(store, l, opts)?);
    }
    // Align history with the layers.
    let mut layer_iter = blobs.iter();
    let mut new_history = Vec::with_capacity(config.history.len());
    for h in config.history.drain(..) {
        let mut h: History = h;
        if !h.empty_layer {
            match layer_iter.next() {
                Some(Some(_)) => {}
                Some(None) => h.empty_layer = true,
                None => h.empty_layer = true,
            }
        }
        new_history.push(h);
    }
    // Layers without a history entry (should not happen): add generic entries.
    for b in layer_iter {
        if b.is_some() {
            new_history.push(History { created_by: Some("strata".into()), ..Default::default() });
        }
    }
    config.history = new_history;
    let kept: Vec<LayerBlob> = blobs.into_iter().flatten().collect();
    config.rootfs.kind = "layers".into();
    config.rootfs.diff_ids = kept.iter().map(|b| b.diff_id.clone()).collect();
    let config_bytes = canonical_json(&config);
    let config_digest = store.put_bytes(&config_bytes)?;
    let (manifest_type, config_type) = if opts.oci_media_types {
        (media::OCI_MANIFEST, media::OCI_CONFIG)
    } else {
        (media::DOCKER_MANIFEST, media::DOCKER_CONFIG)
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(manifest_type.to_string()),
        config: Descriptor::new(config_type, config_digest.clone(), config_bytes.len() as u64),
        layers: kept.iter().map(|b| Descriptor::new(b.media_type.clone(), b.digest.clone(), b.size)).collect(),
        annotations: opts.annotations.clone(),
    };
    let manifest_bytes = canonical_json(&manifest);
    let manifest_digest = store.put_bytes(&manifest_bytes)?;
    let mut desc = Descriptor::new(manifest_type, manifest_digest, manifest_bytes.len() as u64);
    desc.platform = Some(config.platform());
    Ok(BuiltImage { manifest: desc, config_digest, config })
}

/// One image index over several platforms' manifests (each descriptor carries its
/// platform), in the order given: an OCI index, or a Docker manifest list when the
/// manifests use Docker media types.
pub fn build_index(
    store: &BlobStore,
    manifests: &[Descriptor],
    annotations: std::collections::BTreeMap<String, String>,
) -> Result<Descriptor, ExportError> {
    let docker = manifests.iter().all(|m| m.media_type == media::DOCKER_MANIFEST);
    let media_type = if docker { media::DOCKER_MANIFEST_LIST } else { media::OCI_INDEX };
    let index = Index {
        schema_version: 2,
        media_type: Some(media_type.to_string()),
        manifests: manifests.to_vec(),
        annotations,
    };
    let bytes = canonical_json(&index);
    let digest = store.put_bytes(&bytes)?;
    Ok(Descriptor::new(media_type, digest, bytes.len() as u64))
}
