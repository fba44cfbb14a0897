//! Docker archives: what `docker save` writes and `docker load` reads.
//!
//! This module owns the `-o type=docker` and `strata save --format docker` format: a
//! tar holding an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) plus
//! Docker's `manifest.json`, as modern `docker save` and BuildKit's docker exporter
//! write it:
//!
//! ```json
//! [{"Config": "blobs/sha256/<hex>", "RepoTags": ["app:latest"], "Layers": ["blobs/sha256/<hex>", …]}]
//! ```
//!
//! `RepoTags` are the image names in Docker's familiar form (`app:latest`,
//! `user/app:1`, `registry:5000/app:1`); `index.json` names each image with
//! `io.containerd.image.name` (the full name) and `org.opencontainers.image.ref.name`
//! (its tag). The images keep Docker schema2 media types ([`docker_media_types`]
//! rewrites an OCI-typed manifest without touching the layers).
//!
//! The tar is deterministic — entries sorted by name, mtime 0, uid/gid 0, modes
//! 0644/0755, no owner names — and blobs are streamed from the store file by file,
//! never held in memory; only manifests (bounded in size) are read whole.
//! [`write_output`] is the destination rule of file outputs: `-` is standard output,
//! anything else is written to a temporary name beside it, synced, then renamed.
//!
//! ```no_run
//! use strata_exporter::docker_archive::{docker_media_types, write_docker_archive, ArchiveImage};
//! use strata_oci::store::BlobStore;
//! # fn demo(manifest: strata_oci::image::Descriptor) -> Result<(), Box<dyn std::error::Error>> {
//! let store = BlobStore::open("/var/lib/strata")?;
//! let image = ArchiveImage { manifest: docker_media_types(&store, &manifest)?, names: vec!["app:latest".into()] };
//! let file = std::fs::File::create("app.tar")?;
//! write_docker_archive(file, &store, &[image])?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use strata_oci::digest::Digest;
use strata_oci::image::{canonical_json, Descriptor, Index, Manifest};
use strata_oci::media;
use strata_oci::reference::Reference;
use strata_oci::store::{BlobStore, StoreError};

/// Manifests larger than this are refused (they are a few KiB in practice).
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";

#[derive(Debug, thiserror::Error)]
pub enum DockerArchiveError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{digest} is a {media_type}, not a single-platform image manifest; a docker archive holds images of one platform: pick one with --platform")]
    NotAManifest { digest: Digest, media_type: String },
    #[error("manifest {digest}: {reason}")]
    InvalidManifest { digest: Digest, reason: String },
    #[error("image name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("blob {digest}: the store has {actual} bytes, its descriptor says {expected}")]
    SizeMismatch { digest: Digest, expected: u64, actual: u64 },
    #[error("writing the docker archive: {0}")]
    Write(io::Error),
    #[error("writing the docker archive: {0}")]
    Layout(Box<strata_oci::layout::LayoutError>),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// One image of an archive.
#[derive(Debug, Clone)]
pub struct ArchiveImage {
    /// The image manifest (not an index).
    pub manifest: Descriptor,
    /// Its names (any form `Reference` parses); those with a tag become `RepoTags`.
    pub names: Vec<String>,
}

fn read_manifest(store: &BlobStore, desc: &Descriptor) -> Result<Manifest, DockerArchiveError> {
    if media::is_index(&desc.media_type) {
        return Err(DockerArchiveError::NotAManifest {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
        });
    }
    let size = store.size(&desc.digest)?;
    if size > MAX_MANIFEST_BYTES {
        return Err(DockerArchiveError::InvalidManifest {
            digest: desc.digest.clone(),
            reason: format!("{size} bytes is too large for a manifest"),
        });
    }
    let bytes = store.read_blob(&desc.digest)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| DockerArchiveError::InvalidManifest { digest: desc.digest.clone(), reason: e.to_string() })?;
    if v.get("manifests").is_some() {
        return Err(DockerArchiveError::NotAManifest {
            digest: desc.digest.clone(),
            media_type: media::OCI_INDEX.into(),
        });
    }
    serde_json::from_value(v)
        .map_err(|e| DockerArchiveError::InvalidManifest { digest: desc.digest.clone(), reason: e.to_string() })
}

fn docker_layer_type(t: &str) -> String {
    match t {
        media::OCI_LAYER_GZIP => media::DOCKER_LAYER_GZIP.into(),
        media::OCI_LAYER_TAR => media::DOCKER_LAYER_TAR.into(),
        // Docker schema2 has no zstd type: BuildKit keeps the OCI one too.
        other => other.into(),
    }
}

/// The same image with Docker schema2 media types (manifest, config, layers): the
/// manifest is rewritten and stored when it has OCI types; blobs are untouched.
pub fn docker_media_types(store: &BlobStore, desc: &Descriptor) -> Result<Descriptor, DockerArchiveError> {
    if desc.media_type == media::DOCKER_MANIFEST {
        return Ok(desc.clone());
    }
    let m = read_manifest(store, desc)?;
    let mut config = m.config.clone();
    if config.media_type == media::OCI_CONFIG {
        config.media_type = media::DOCKER_CONFIG.into();
    }
    let converted = Manifest {
        schema_version: 2,
        media_type: Some(media::DOCKER_MANIFEST.into()),
        config,
        layers: m
            .layers
            .iter()
            .map(|l| {
                let mut l = l.clone();
                l.media_type = docker_layer_type(&l.media_type);
                l
            })
            .collect(),
        annotations: m.annotations.clone(),
    };
    let bytes = canonical_json(&converted);
    let digest = store.put_bytes(&bytes)?;
    let mut out = Descriptor::new(media::DOCKER_MANIFEST, digest, bytes.len() as u64);
    out.platform = desc.platform.clone();
    Ok(out)
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// The files besides the blobs: `index.json`, `manifest.json`, and every blob to carry
/// (digest → size, checked against the store).
struct Plan {
    blobs: BTreeMap<Digest, u64>,
    index_json: Vec<u8>,
    manifest_json: Vec<u8>,
}

fn plan(store: &BlobStore, images: &[ArchiveImage]) -> Result<Plan, DockerArchiveError> {
    let mut blobs = BTreeMap::new();
    let mut index_entries = Vec::new();
    let mut manifest_entries = Vec::new();
    let want = |d: &Descriptor, blobs: &mut BTreeMap<Digest, u64>| -> Result<(), DockerArchiveError> {
        let actual = store.size(&d.digest)?;
        if actual != d.size {
            return Err(DockerArchiveError::SizeMismatch { digest: d.digest.clone(), expected: d.size, actual });
        }
        blobs.insert(d.digest.clone(), actual);
        Ok(())
    };
    for img in images {
        let m = read_manifest(store, &img.manifest)?;
        want(&img.manifest, &mut blobs)?;
        want(&m.config, &mut blobs)?;
        for l in &m.layers {
            want(l, &mut blobs)?;
        }
        let mut repo_tags = Vec::new();
        let mut entry = img.manifest.clone();
        entry.annotations.remove(REF_NAME);
        entry.annotations.remove(CONTAINERD_IMAGE_NAME);
        let mut named = false;
        for n in &img.names {
            let r = Reference::parse(n)
                .map_err(|e| DockerArchiveError::InvalidName { name: n.clone(), reason: e.to_string() })?;
            let mut e = entry.clone();
            e.annotations.insert(CONTAINERD_IMAGE_NAME.into(), r.to_string());
            if let Some(tag) = &r.tag {
                e.annotations.insert(REF_NAME.into(), tag.clone());
                if r.digest.is_none() {
                    repo_tags.push(r.familiar());
                }
            }
            index_entries.push(e);
            named = true;
        }
        if !named {
            index_entries.push(entry);
        }
        manifest_entries.push(serde_json::json!({
            "Config": blob_name(&m.config.digest),
            "RepoTags": repo_tags,
            "Layers": m.layers.iter().map(|l| blob_name(&l.digest)).collect::<Vec<_>>(),
        }));
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.into()),
        manifests: index_entries,
        annotations: BTreeMap::new(),
    };
    Ok(Plan {
        blobs,
        index_json: canonical_json(&index),
        manifest_json: serde_json::to_vec(&serde_json::Value::Array(manifest_entries)).expect("JSON values serialise"),
    })
}

/// Write a docker archive of `images` (blobs from `store`) to `out`; returns `out`.
pub fn write_docker_archive<W: Write>(
    out: W,
    store: &BlobStore,
    images: &[ArchiveImage],
) -> Result<W, DockerArchiveError> {
    let plan = plan(store, images)?;
    let marker = br#"{"imageLayoutVersion":"1.0.0"}"#;
    let files: [(&str, &[u8]); 3] =
        [("index.json", &plan.index_json), ("manifest.json", &plan.manifest_json), ("oci-layout", &marker[..])];
    strata_oci::layout::write_layout_tar(out, store, &plan.blobs, &files)
        .map_err(|e| DockerArchiveError::Layout(Box::new(e)))
}

/// Write to `dest`: `-` for standard output, else a file written under a temporary
/// name beside it, synced and renamed into place (removed on failure).
pub fn write_output<E: From<io::Error>>(
    dest: &str,
    write: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<(), E> {
    if dest == "-" {
        let mut out = BufWriter::with_capacity(128 * 1024, io::stdout().lock());
        write(&mut out)?;
        out.flush()?;
        return Ok(());
    }
    let path = Path::new(dest);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "output".into());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let file = File::options().write(true).create(true).truncate(true).open(&tmp)?;
        let mut out = BufWriter::with_capacity(128 * 1024, file);
        write(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write_docker_archive`] to a file or `-` (see [`write_output`]).
pub fn write_docker_archive_to(
    dest: &str,
    store: &BlobStore,
    images: &[ArchiveImage],
) -> Result<(), DockerArchiveError> {
    write_output(dest, |out| write_docker_archive(out, store, images).map(|_| ()))
}

/// The `-o type=docker` / `strata save --format docker` entry point: one image, with
/// Docker media types unless `oci_media_types`, named `names`, to a file or `-`.
pub fn write_docker_image_to(
    dest: &str,
    store: &BlobStore,
    manifest: &Descriptor,
    names: &[String],
    oci_media_types: bool,
) -> Result<(), DockerArchiveError> {
    let manifest = if oci_media_types { manifest.clone() } else { docker_media_types(store, manifest)? };
    write_docker_archive_to(dest, store, &[ArchiveImage { manifest, names: names.to_vec() }])
}

impl From<io::Error> for DockerArchiveError {
    fn from(e: io::Error) -> Self {
        DockerArchiveError::Write(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use strata_oci::image::{ImageConfig, RootFs};

    fn tiny_image(store: &BlobStore) -> Descriptor {
        let layer = store.put_bytes(b"not really a layer").unwrap();
        let config = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            rootfs: RootFs { kind: "layers".into(), diff_ids: vec![layer.clone()] },
            ..Default::default()
        };
        let cb = canonical_json(&config);
        let cd = store.put_bytes(&cb).unwrap();
        let m = Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            config: Descriptor::new(media::OCI_CONFIG, cd, cb.len() as u64),
            layers: vec![Descriptor::new(media::OCI_LAYER_GZIP, layer, 18)],
            annotations: BTreeMap::new(),
        };
        let mb = canonical_json(&m);
        Descriptor::new(media::OCI_MANIFEST, store.put_bytes(&mb).unwrap(), mb.len() as u64)
    }

    #[test]
    fn archive_has_manifest_json_and_a_layout() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path()).unwrap();
        let oci = tiny_image(&store);
        let docker = docker_media_types(&store, &oci).unwrap();
        assert_eq!(docker.media_type, media::DOCKER_MANIFEST);
        let m: Manifest = serde_json::from_slice(&store.read_blob(&docker.digest).unwrap()).unwrap();
        assert_eq!(m.config.media_type, media::DOCKER_CONFIG);
        assert_eq!(m.layers[0].media_type, media::DOCKER_LAYER_GZIP);
        assert_eq!(docker_media_types(&store, &docker).unwrap(), docker, "already docker: unchanged");

        let images = [ArchiveImage {
            manifest: docker.clone(),
            names: vec!["app".into(), "registry.example:5000/team/app:v1".into()],
        }];
        let a = write_docker_archive(Vec::new(), &store, &images).unwrap();
        assert_eq!(a, write_docker_archive(Vec::new(), &store, &images).unwrap(), "deterministic");
        let mut ar = tar::Archive::new(a.as_slice());
        let mut files = BTreeMap::new();
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header();
            assert_eq!((h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap()), (0, 0, 0));
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            names.push(name.clone());
            files.insert(name, data);
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let mj: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(mj[0]["Config"], blob_name(&m.config.digest));
        assert_eq!(mj[0]["RepoTags"], serde_json::json!(["app:latest", "registry.example:5000/team/app:v1"]));
        assert_eq!(mj[0]["Layers"][0], blob_name(&m.layers[0].digest));
        for p in [mj[0]["Config"].as_str().unwrap(), mj[0]["Layers"][0].as_str().unwrap()] {
            assert!(files.contains_key(p), "{p} in the archive");
        }
        let idx: Index = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(idx.manifests.len(), 2);
        assert_eq!(idx.manifests[0].digest, docker.digest);
        assert_eq!(idx.manifests[0].annotations[CONTAINERD_IMAGE_NAME], "docker.io/library/app:latest");
        assert_eq!(idx.manifests[0].annotations[REF_NAME], "latest");
        assert!(files.contains_key("oci-layout"));
    }

    #[test]
    fn output_file_appears_only_when_complete() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out.tar");
        let r: Result<(), io::Error> = write_output(dest.to_str().unwrap(), |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("boom"))
        });
        assert!(r.is_err());
        assert!(!dest.exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0, "temp file removed");
        write_output::<io::Error>(dest.to_str().unwrap(), |w| w.write_all(b"done")).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"done");
    }
}
