//! Compressing a stored image's uncompressed layers when it leaves the machine.
//!
//! The local store keeps layers as plain tars (as Docker's image store does), so a
//! build never pays for compression it may not need. A push or an OCI layout export
//! turns each plain layer into a compressed blob — on every core — and writes a manifest that points at them; the config (and so the image's
//! diff_ids) is unchanged. Each compressed blob is remembered beside the plain one, so
//! a second push compresses nothing.

use std::io::{BufReader, BufWriter, Read, Write};

use strata_oci::digest::Digest;
use strata_oci::image::{canonical_json, Descriptor, Index, Manifest};
use strata_oci::media;
use strata_oci::store::BlobStore;

use crate::image::ExportError;
use crate::layer::{Compression, Compressor};

fn key(c: Compression) -> String {
    match c {
        Compression::Gzip { level } => format!("gzip{level}"),
        Compression::Zstd { level } => format!("zstd{level}"),
        Compression::Uncompressed => "tar".into(),
    }
}

fn remembered_path(store: &BlobStore, plain: &Digest, c: Compression) -> std::path::PathBuf {
    store.root().join("compressed").join(format!("{}-{}", plain.hex(), key(c)))
}

/// Compress one plain-tar blob (or find the remembered result): (digest, size).
pub fn compress_blob(store: &BlobStore, plain: &Digest, c: Compression) -> Result<(Digest, u64), ExportError> {
    let memo = remembered_path(store, plain, c);
    if let Ok(text) = std::fs::read_to_string(&memo) {
        if let Some((d, n)) = text.trim().split_once(' ') {
            if let (Ok(d), Ok(n)) = (d.parse::<Digest>(), n.parse::<u64>()) {
                if store.contains(&d) {
                    return Ok((d, n));
                }
            }
        }
    }
    let mut input = BufReader::with_capacity(1 << 20, store.open_blob(plain)?);
    let temp = store.temp_file()?;
    let mut enc = Compressor::new(BufWriter::with_capacity(1 << 20, temp), c)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        enc.write_all(&buf[..n])?;
    }
    let temp = enc.finish()?.into_inner().map_err(|e| e.into_error())?;
    let (digest, size) = temp.commit(store, None, None)?;
    strata_oci::store::write_atomic_unsynced(&memo, format!("{digest} {size}").as_bytes())?;
    Ok((digest, size))
}

/// The media type of a layer compressed with `c` in a manifest of `manifest_type`.
pub fn compressed_type(manifest_type: &str, c: Compression) -> &'static str {
    let docker = manifest_type == media::DOCKER_MANIFEST;
    match (c, docker) {
        (Compression::Gzip { .. }, true) => media::DOCKER_LAYER_GZIP,
        (Compression::Gzip { .. }, false) => media::OCI_LAYER_GZIP,
        (Compression::Zstd { .. }, _) => media::OCI_LAYER_ZSTD,
        (Compression::Uncompressed, true) => media::DOCKER_LAYER_TAR,
        (Compression::Uncompressed, false) => media::OCI_LAYER_TAR,
    }
}

/// The image behind `image` (a manifest, or an index of several platforms' manifests)
/// with every plain layer compressed; returns the new manifest's or index's descriptor
/// (the same one when nothing needed compressing).
pub fn compress_image(
    store: &BlobStore,
    image: &Descriptor,
    c: Compression,
    jobs: usize,
) -> Result<Descriptor, ExportError> {
    if image.media_type == media::OCI_INDEX || image.media_type == media::DOCKER_MANIFEST_LIST {
        return compress_index(store, image, c, jobs);
    }
    compress_manifest(store, image, c, jobs)
}

fn compress_index(
    store: &BlobStore,
    index: &Descriptor,
    c: Compression,
    jobs: usize,
) -> Result<Descriptor, ExportError> {
    let mut i: Index = serde_json::from_slice(&store.read_blob(&index.digest)?)
        .map_err(|e| ExportError::Io(std::io::Error::other(format!("index {}: {e}", index.digest))))?;
    let mut changed = false;
    for m in &mut i.manifests {
        let compressed = compress_image(store, m, c, jobs)?;
        changed |= compressed.digest != m.digest;
        *m = compressed;
    }
    if !changed {
        return Ok(index.clone());
    }
    let bytes = canonical_json(&i);
    let digest = store.put_bytes(&bytes)?;
    let mut d = Descriptor::new(index.media_type.clone(), digest, bytes.len() as u64);
    d.annotations = index.annotations.clone();
    Ok(d)
}

fn compress_manifest(
    store: &BlobStore,
    manifest: &Descriptor,
    c: Compression,
    jobs: usize,
) -> Result<Descriptor, ExportError> {
    let mut m: Manifest = serde_json::from_slice(&store.read_blob(&manifest.digest)?)
        .map_err(|e| ExportError::Io(std::io::Error::other(format!("manifest {}: {e}", manifest.digest))))?;
    let plain: Vec<usize> = m
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| l.media_type == media::OCI_LAYER_TAR || l.media_type == media::DOCKER_LAYER_TAR)
        .map(|(i, _)| i)
        .collect();
    if plain.is_empty() || c == Compression::Uncompressed {
        return Ok(manifest.clone());
    }
    // One layer at a time, each compressed on every core (gzip and zstd both use all
    // of them), so big layers are never stuck on one core.
    let _ = jobs;
    let manifest_type = m.media_type.clone().unwrap_or_else(|| media::OCI_MANIFEST.to_string());
    for i in plain {
        let (digest, size) = compress_blob(store, &m.layers[i].digest, c)?;
        let l = &mut m.layers[i];
        l.digest = digest;
        l.size = size;
        l.media_type = compressed_type(&manifest_type, c).to_string();
    }
    let bytes = canonical_json(&m);
    let digest = store.put_bytes(&bytes)?;
    let mut d = Descriptor::new(manifest_type, digest, bytes.len() as u64);
    d.platform = manifest.platform.clone();
    d.annotations = manifest.annotations.clone();
    Ok(d)
}
