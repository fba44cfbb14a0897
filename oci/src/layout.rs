//! OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/…`), as directories or
//! tar archives.
//!
//! This module owns reading a layout ([`OciLayout`]: find an image by tag or digest,
//! import it into the [`BlobStore`] with every blob verified, choosing the platform from an
//! index) and writing one from blobs in the store ([`LayoutWriter`]: a directory, or a
//! deterministic tar: sorted entries, mtime 0, uid/gid 0, modes 0644/0755). Blobs are
//! streamed from file to file, never held in memory; only manifests, indexes and configs
//! (bounded in size) are read whole.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_oci::layout::{LayoutWriter, OciLayout};
//! use strata_oci::store::BlobStore;
//! let store = BlobStore::open("/var/lib/strata")?;
//! let layout = OciLayout::open("./busybox-layout")?;
//! let desc = layout.resolve(Some("latest"))?;
//! let image = layout.import_image(&desc, &"linux/amd64".parse()?, &store)?;
//! let entry = (layout.resolve(Some("latest"))?, Some("latest".to_string()));
//! LayoutWriter::write_dir("./copy".as_ref(), &store, &[entry])?;
//! # let _ = image; Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::digest::Digest;
use crate::image::{canonical_json, Descriptor, ImageConfig, Index, Manifest, NoMatchingPlatform, Platform};
use crate::media;
use crate::registry::manifest::{
    parse_document, DocumentError, ManifestDocument, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES,
};
use crate::store::{BlobStore, StoreError};

/// The file that marks a layout.
pub const LAYOUT_FILE: &str = "oci-layout";
pub const INDEX_FILE: &str = "index.json";
/// The annotation that tags an entry of `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's full image name annotation (also accepted when resolving).
pub const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
const LAYOUT_VERSION: &str = "1.0.0";
const MAX_INDEX_JSON: u64 = 16 << 20;

/// Failures reading or writing layouts.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{dir}: not an OCI image layout: {reason}")]
    NotALayout { dir: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: invalid {what}: {reason}")]
    Invalid { path: PathBuf, what: String, reason: String },
    #[error("{path}: unsupported media type {media_type:?}{hint}")]
    Unsupported { path: PathBuf, media_type: String, hint: &'static str },
    #[error("{dir}: no image tagged {tag:?} (tags: {available})")]
    TagNotFound { dir: PathBuf, tag: String, available: String },
    #[error("{dir}: no manifest or index with digest {digest}")]
    DigestNotFound { dir: PathBuf, digest: Digest },
    #[error("{dir}: index.json lists {count} images; name one by tag or digest (tags: {available})")]
    Ambiguous { dir: PathBuf, count: usize, available: String },
    #[error("{dir}: index.json lists no image")]
    Empty { dir: PathBuf },
    #[error("{dir}: blob {digest} is missing")]
    MissingBlob { dir: PathBuf, digest: Digest },
    #[error("{dir}: blob {digest} failed verification: {source}")]
    Corrupt {
        dir: PathBuf,
        digest: Digest,
        #[source]
        source: StoreError,
    },
    #[error("{dir}: index {index}: {source}")]
    NoMatchingPlatform {
        dir: PathBuf,
        index: Digest,
        #[source]
        source: NoMatchingPlatform,
    },
    #[error("{path} is larger than the {limit}-byte limit")]
    FileTooLarge { path: PathBuf, limit: u64 },
    #[error("{what} {digest} is larger than the {limit}-byte limit")]
    TooLarge { what: String, digest: Digest, limit: u64 },
    #[error("blob {digest} ({role}) is not in the store{hint}")]
    NotInStore { digest: Digest, role: String, hint: &'static str },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("layout archive: unsafe entry {entry:?} ({reason})")]
    UnsafeEntry { entry: String, reason: &'static str },
    #[error("writing layout archive: {0}")]
    Tar(io::Error),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io { path: path.to_path_buf(), source }
}

/// An image imported from a layout by [`OciLayout::import_image`].
#[derive(Debug, Clone)]
pub struct LayoutImage {
    /// What was asked to be imported (an index or a manifest).
    pub descriptor: Descriptor,
    pub index_digest: Option<Digest>,
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub manifest_media_type: String,
    pub config_digest: Digest,
    pub config: ImageConfig,
}

/// A directory a tarred layout was unpacked into; removed when dropped.
#[derive(Debug)]
struct ExtractedDir(PathBuf);

impl Drop for ExtractedDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A layout opened for reading.
#[derive(Debug)]
pub struct OciLayout {
    dir: PathBuf,
    index: Index,
    _extracted: Option<ExtractedDir>,
}

impl OciLayout {
    /// Open the layout in `dir`: `oci-layout` must name version 1.x, `index.json` must parse.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, LayoutError> {
        let dir = dir.into();
        let not_layout = |reason: String| LayoutError::NotALayout { dir: dir.clone(), reason };
        let marker = dir.join(LAYOUT_FILE);
        let text = match read_bounded(&marker, 1 << 16) {
            Ok(t) => t,
            Err(LayoutError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(not_layout(format!("no {LAYOUT_FILE} file")))
            }
            Err(e) => return Err(e),
        };
        #[derive(serde::Deserialize)]
        struct Marker {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let m: Marker = serde_json::from_slice(&text).map_err(|e| not_layout(format!("{LAYOUT_FILE}: {e}")))?;
        if !m.version.starts_with("1.") {
            return Err(not_layout(format!("unsupported imageLayoutVersion {:?}", m.version)));
        }
        let index_path = dir.join(INDEX_FILE);
        let bytes = read_bounded(&index_path, MAX_INDEX_JSON)?;
        let index: Index = serde_json::from_slice(&bytes).map_err(|e| LayoutError::Invalid {
            path: index_path.clone(),
            what: "index.json".into(),
            reason: e.to_string(),
        })?;
        Ok(OciLayout { dir, index, _extracted: None })
    }

    /// Open a tarred layout (as `skopeo copy … oci-archive:` or [`LayoutWriter::write_tar`]
    /// make): it is unpacked under the store's temp directory and removed when the
    /// returned value is dropped. Only `oci-layout`, `index.json` and `blobs/ALG/HEX`
    /// are extracted; links, devices and paths escaping the layout are refused.
    pub fn open_tar(reader: impl Read, store: &BlobStore) -> Result<Self, LayoutError> {
        let tmp = store.root().join("tmp").join(format!("layout-{}-{}", std::process::id(), unique()));
        fs::create_dir_all(tmp.join("blobs")).map_err(io_at(&tmp))?;
        let guard = ExtractedDir(tmp.clone());
        extract_layout_tar(reader, &tmp)?;
        let mut layout = OciLayout::open(&tmp)?;
        layout._extracted = Some(guard);
        Ok(layout)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The tags (`org.opencontainers.image.ref.name`) in index.json, in order.
    pub fn tags(&self) -> Vec<String> {
        self.index.manifests.iter().filter_map(|d| d.annotations.get(REF_NAME).cloned()).collect()
    }

    /// Where a blob is in this layout.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join(digest.algorithm()).join(digest.hex())
    }

    /// Find an image: by tag (`ref.name`, or containerd's full image name), by digest
    /// (`sha256:…`, listed in index.json or present in blobs/), or — with `None` — the
    /// only entry of index.json.
    pub fn resolve(&self, tag_or_digest: Option<&str>) -> Result<Descriptor, LayoutError> {
        let available = || {
            let t = self.tags();
            if t.is_empty() {
                "none".to_string()
            } else {
                t.join(", ")
            }
        };
        let Some(wanted) = tag_or_digest.filter(|s| !s.is_empty()) else {
            return match self.index.manifests.as_slice() {
                [] => Err(LayoutError::Empty { dir: self.dir.clone() }),
                [only] => Ok(only.clone()),
                many => {
                    Err(LayoutError::Ambiguous { dir: self.dir.clone(), count: many.len(), available: available() })
                }
            };
        };
        if wanted.starts_with("sha256:") {
            let digest: Digest = wanted.parse().map_err(|_| LayoutError::Invalid {
                path: self.dir.clone(),
                what: "digest".into(),
                reason: format!("{wanted:?} is not sha256: and 64 hex digits"),
            })?;
            if let Some(d) = self.index.manifests.iter().find(|d| d.digest == digest) {
                return Ok(d.clone());
            }
            // Not listed (e.g. a platform manifest under an index): look in blobs/.
            let path = self.blob_path(&digest);
            let size = match fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(_) => return Err(LayoutError::DigestNotFound { dir: self.dir.clone(), digest }),
            };
            if size > MAX_MANIFEST_BYTES {
                return Err(LayoutError::TooLarge { what: "manifest".into(), digest, limit: MAX_MANIFEST_BYTES });
            }
            let probe = Descriptor::new(media::OCI_MANIFEST, digest.clone(), size);
            let bytes = self.read_small_blob(&probe, MAX_MANIFEST_BYTES)?;
            let (media_type, _) = parse_document(None, &bytes).map_err(|e| self.document_error(&path, e))?;
            return Ok(Descriptor::new(media_type, digest, size));
        }
        self.index
            .manifests
            .iter()
            .find(|d| d.annotations.get(REF_NAME).is_some_and(|t| t == wanted))
            .or_else(|| {
                self.index
                    .manifests
                    .iter()
                    .find(|d| d.annotations.get(CONTAINERD_IMAGE_NAME).is_some_and(|t| t == wanted))
            })
            .cloned()
            .ok_or_else(|| LayoutError::TagNotFound {
                dir: self.dir.clone(),
                tag: wanted.to_string(),
                available: available(),
            })
    }

    /// Copy the image `desc` names into `store`, verifying every blob: the index (if
    /// `desc` is one; the `platform` entry is chosen from it), the manifest, the config
    /// and the layers.
    pub fn import_image(
        &self,
        desc: &Descriptor,
        platform: &Platform,
        store: &BlobStore,
    ) -> Result<LayoutImage, LayoutError> {
        let mut current = desc.clone();
        let mut index_digest = None;
        let mut depth = 0;
        let (manifest, manifest_media_type, manifest_digest) = loop {
            if current.size > MAX_MANIFEST_BYTES {
                return Err(LayoutError::TooLarge {
                    what: "manifest".into(),
                    digest: current.digest,
                    limit: MAX_MANIFEST_BYTES,
                });
            }
            let bytes = self.read_small_blob(&current, MAX_MANIFEST_BYTES)?;
            let path = self.blob_path(&current.digest);
            let (media_type, doc) =
                parse_document(Some(&current.media_type), &bytes).map_err(|e| self.document_error(&path, e))?;
            store.put_bytes(&bytes)?;
            match doc {
                ManifestDocument::Manifest(m) => break (m, media_type, current.digest.clone()),
                ManifestDocument::Index(index) => {
                    depth += 1;
                    if depth > 3 {
                        return Err(LayoutError::Invalid {
                            path,
                            what: "index".into(),
                            reason: "indexes nested more than 3 deep".into(),
                        });
                    }
                    index_digest.get_or_insert_with(|| current.digest.clone());
                    let chosen = index.select_platform(platform).map_err(|source| LayoutError::NoMatchingPlatform {
                        dir: self.dir.clone(),
                        index: current.digest.clone(),
                        source,
                    })?;
                    current = chosen.clone();
                }
            }
        };

        let config_desc = manifest.config.clone();
        if config_desc.size > MAX_CONFIG_BYTES {
            return Err(LayoutError::TooLarge {
                what: "image config".into(),
                digest: config_desc.digest,
                limit: MAX_CONFIG_BYTES,
            });
        }
        self.import_blob(&config_desc, store)?;
        let config_bytes = store.read_blob(&config_desc.digest)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| LayoutError::Invalid {
            path: self.blob_path(&config_desc.digest),
            what: "image config".into(),
            reason: e.to_string(),
        })?;
        if !platform.matches(&config.platform()) {
            tracing::warn!(
                layout = %self.dir.display(),
                "image is for {} but {} was asked for; using it anyway",
                config.platform(),
                platform
            );
        }
        for layer in &manifest.layers {
            self.import_blob(layer, store)?;
        }
        Ok(LayoutImage {
            descriptor: desc.clone(),
            index_digest,
            manifest_digest,
            manifest,
            manifest_media_type,
            config_digest: config_desc.digest,
            config,
        })
    }

    /// Stream one blob into the store, verifying digest and size (no-op if present).
    pub fn import_blob(&self, desc: &Descriptor, store: &BlobStore) -> Result<(), LayoutError> {
        if store.contains(&desc.digest) {
            return Ok(());
        }
        let path = self.blob_path(&desc.digest);
        let mut f = match open_regular(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LayoutError::MissingBlob { dir: self.dir.clone(), digest: desc.digest.clone() })
            }
            Err(e) => return Err(LayoutError::Io { path, source: e }),
        };
        match store.put_reader(&mut f, Some(&desc.digest), Some(desc.size)) {
            Ok(_) => Ok(()),
            Err(e @ (StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. })) => {
                Err(LayoutError::Corrupt { dir: self.dir.clone(), digest: desc.digest.clone(), source: e })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Read a small blob whole, checking its digest and size.
    pub fn read_small_blob(&self, desc: &Descriptor, limit: u64) -> Result<Vec<u8>, LayoutError> {
        let path = self.blob_path(&desc.digest);
        let bytes = match read_bounded(&path, limit) {
            Ok(b) => b,
            Err(LayoutError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(LayoutError::MissingBlob { dir: self.dir.clone(), digest: desc.digest.clone() })
            }
            Err(LayoutError::FileTooLarge { .. }) => {
                return Err(LayoutError::TooLarge { what: "manifest".into(), digest: desc.digest.clone(), limit })
            }
            Err(e) => return Err(e),
        };
        let actual = Digest::of_bytes(&bytes);
        let size = bytes.len() as u64;
        let mismatch = if actual != desc.digest {
            Some(StoreError::DigestMismatch { expected: desc.digest.clone(), actual, size })
        } else if size != desc.size {
            Some(StoreError::SizeMismatch { digest: desc.digest.clone(), expected: desc.size, actual: size })
        } else {
            None
        };
        match mismatch {
            Some(source) => Err(LayoutError::Corrupt { dir: self.dir.clone(), digest: desc.digest.clone(), source }),
            None => Ok(bytes),
        }
    }

    fn document_error(&self, path: &Path, e: DocumentError) -> LayoutError {
        match e {
            DocumentError::Unsupported { media_type, hint } => {
                LayoutError::Unsupported { path: path.to_path_buf(), media_type, hint }
            }
            DocumentError::Invalid(reason) => {
                LayoutError::Invalid { path: path.to_path_buf(), what: "manifest".into(), reason }
            }
        }
    }
}

/// Read a file of at most `limit` bytes.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, LayoutError> {
    let f = open_regular(path).map_err(io_at(path))?;
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf).map_err(io_at(path))?;
    if buf.len() as u64 > limit {
        return Err(LayoutError::FileTooLarge { path: path.to_path_buf(), limit });
    }
    Ok(buf)
}

/// Open a file of a layout for reading, refusing anything but a regular file: a FIFO
/// planted in a layout would otherwise block the open (and the build) forever.
fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = File::options().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
    }
    Ok(f)
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{nanos:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Unpack the layout members of a tar into `dest`.
fn extract_layout_tar(reader: impl Read, dest: &Path) -> Result<(), LayoutError> {
    let tar_err = |e: io::Error| LayoutError::Io { path: dest.to_path_buf(), source: e };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let raw = entry.path().map_err(tar_err)?.into_owned();
        let name = raw.to_string_lossy().to_string();
        let mut parts: Vec<String> = Vec::new();
        for c in raw.components() {
            match c {
                Component::CurDir => {}
                Component::Normal(p) => parts.push(p.to_string_lossy().to_string()),
                _ => return Err(LayoutError::UnsafeEntry { entry: name, reason: "path leaves the layout" }),
            }
        }
        let kind = entry.header().entry_type();
        let wanted = match parts.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            [] | ["blobs"] => false,
            [LAYOUT_FILE] | [INDEX_FILE] => true,
            ["blobs", alg] => {
                if kind.is_dir() && alg.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    fs::create_dir_all(dest.join("blobs").join(alg)).map_err(io_at(dest))?;
                }
                false
            }
            ["blobs", alg, hex]
                if alg.bytes().all(|b| b.is_ascii_alphanumeric()) && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                true
            }
            _ => {
                tracing::debug!(entry = %name, "skipping non-layout member of layout archive");
                false
            }
        };
        if !wanted || kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(LayoutError::UnsafeEntry { entry: name, reason: "not a regular file" });
        }
        let target = parts.iter().fold(dest.to_path_buf(), |p, c| p.join(c));
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_at(parent))?;
        }
        let mut out = File::options().write(true).create_new(true).open(&target).map_err(io_at(&target))?;
        io::copy(&mut entry, &mut out).map_err(io_at(&target))?;
    }
    Ok(())
}

/// Writes OCI layouts from blobs in a [`BlobStore`].
pub struct LayoutWriter;

/// An entry of index.json to write: a descriptor (index or manifest) and its tag.
pub type LayoutEntry = (Descriptor, Option<String>);

impl LayoutWriter {
    /// Write (or add to) the layout in `dir`: every blob the entries reach is copied from
    /// the store, then `oci-layout`, then `index.json` (atomically, last). Entries of an
    /// existing index.json are kept unless a new entry takes their tag.
    pub fn write_dir(dir: &Path, store: &BlobStore, entries: &[LayoutEntry]) -> Result<(), LayoutError> {
        let blobs = collect_blobs(store, entries)?;
        let blob_dir = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blob_dir).map_err(io_at(&blob_dir))?;
        for (digest, size) in &blobs {
            let dst = blob_dir.join(digest.hex());
            if fs::metadata(&dst).is_ok_and(|m| m.is_file() && m.len() == *size) {
                continue;
            }
            let tmp = blob_dir.join(format!(".{}.tmp-{}", digest.hex(), unique()));
            let res = fs::copy(store.path(digest), &tmp)
                .and_then(|_| File::open(&tmp)?.sync_all())
                .and_then(|_| set_mode(&tmp, 0o644))
                .and_then(|_| fs::rename(&tmp, &dst));
            if let Err(e) = res {
                let _ = fs::remove_file(&tmp);
                return Err(LayoutError::Io { path: dst, source: e });
            }
        }

        // Keep what an existing index.json lists, minus entries whose tag is taken.
        let mut manifests: Vec<Descriptor> = Vec::new();
        let existing = dir.join(INDEX_FILE);
        if dir.join(LAYOUT_FILE).is_file() && existing.is_file() {
            let old = OciLayout::open(dir)?;
            let new_tags: Vec<&str> = entries.iter().filter_map(|(_, t)| t.as_deref()).collect();
            manifests.extend(
                old.index
                    .manifests
                    .into_iter()
                    .filter(|d| d.annotations.get(REF_NAME).is_none_or(|t| !new_tags.contains(&t.as_str()))),
            );
        }
        for d in new_index_entries(entries) {
            if !manifests.contains(&d) {
                manifests.push(d);
            }
        }
        let index = Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.to_string()),
            manifests,
            annotations: BTreeMap::new(),
        };
        let marker = dir.join(LAYOUT_FILE);
        crate::store::write_atomic(&marker, layout_marker().as_bytes()).map_err(io_at(&marker))?;
        crate::store::write_atomic(&existing, &canonical_json(&index)).map_err(io_at(&existing))?;
        Ok(())
    }

    /// Write a layout as a tar stream: `blobs/`, `blobs/sha256/`, the blobs by digest,
    /// `index.json`, `oci-layout`, in that (sorted) order, with mtime 0, uid/gid 0 and
    /// modes 0755/0644, so the same entries always give the same bytes. Returns the
    /// writer (for a compressor to finish).
    pub fn write_tar<W: Write>(writer: W, store: &BlobStore, entries: &[LayoutEntry]) -> Result<W, LayoutError> {
        let blobs = collect_blobs(store, entries)?;
        let index = Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.to_string()),
            manifests: new_index_entries(entries),
            annotations: BTreeMap::new(),
        };
        let index_json = canonical_json(&index);
        let marker = layout_marker();
        write_layout_tar(writer, store, &blobs, &[(INDEX_FILE, &index_json), (LAYOUT_FILE, marker.as_bytes())])
    }
}

/// The tar form of a layout (also a docker archive's, which adds `manifest.json`):
/// `blobs/`, `blobs/sha256/`, each blob of `blobs` (digest → size, checked against the
/// store) read from `store`, then `files` in name order; mtime 0, uid/gid 0, modes
/// 0755/0644, so the same content always gives the same bytes. Returns the writer.
pub fn write_layout_tar<W: Write>(
    writer: W,
    store: &BlobStore,
    blobs: &BTreeMap<Digest, u64>,
    files: &[(&str, &[u8])],
) -> Result<W, LayoutError> {
    let mut b = tar::Builder::new(writer);
    let t = LayoutError::Tar;
    for d in ["blobs/", "blobs/sha256/"] {
        b.append(&header(d, 0, tar::EntryType::Directory, 0o755), io::empty()).map_err(t)?;
    }
    for (digest, size) in blobs {
        let path = store.path(digest);
        let f = File::open(&path).map_err(io_at(&path))?;
        let actual = f.metadata().map_err(io_at(&path))?.len();
        if actual != *size {
            return Err(LayoutError::Store(StoreError::SizeMismatch {
                digest: digest.clone(),
                expected: *size,
                actual,
            }));
        }
        let h = header(&format!("blobs/sha256/{}", digest.hex()), *size, tar::EntryType::Regular, 0o644);
        b.append(&h, f.take(*size)).map_err(t)?;
    }
    let mut files = files.to_vec();
    files.sort_by_key(|(name, _)| *name);
    for (name, data) in files {
        b.append(&header(name, data.len() as u64, tar::EntryType::Regular, 0o644), data).map_err(t)?;
    }
    b.into_inner().map_err(LayoutError::Tar)
}

fn layout_marker() -> String {
    format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}")
}

fn header(path: &str, size: u64, kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    // Paths here are short ASCII; set_path cannot fail for them.
    let _ = h.set_path(path);
    h.set_size(size);
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    h
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// The descriptors for index.json, tagged with `ref.name`.
fn new_index_entries(entries: &[LayoutEntry]) -> Vec<Descriptor> {
    entries
        .iter()
        .map(|(d, tag)| {
            let mut d = d.clone();
            d.annotations.remove(REF_NAME);
            if let Some(t) = tag {
                d.annotations.insert(REF_NAME.to_string(), t.clone());
            }
            d
        })
        .collect()
}

/// Every blob the entries reach (indexes, manifests, configs, layers), with sizes,
/// checked to be in the store with the size their descriptors state.
fn collect_blobs(store: &BlobStore, entries: &[LayoutEntry]) -> Result<BTreeMap<Digest, u64>, LayoutError> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<(Descriptor, String)> =
        entries.iter().map(|(d, _)| (d.clone(), "entry of index.json".to_string())).collect();
    while let Some((d, role)) = stack.pop() {
        if out.contains_key(&d.digest) {
            continue;
        }
        let size = match store.size(&d.digest) {
            Ok(s) => s,
            Err(StoreError::Missing(_)) => {
                let hint = if role.starts_with("manifest for") {
                    "; pull that platform too, or write the platform manifest instead of the index"
                } else {
                    ""
                };
                return Err(LayoutError::NotInStore { digest: d.digest.clone(), role, hint });
            }
            Err(e) => return Err(e.into()),
        };
        if size != d.size {
            return Err(LayoutError::Store(StoreError::SizeMismatch {
                digest: d.digest.clone(),
                expected: d.size,
                actual: size,
            }));
        }
        out.insert(d.digest.clone(), size);
        if media::is_index(&d.media_type) || media::is_manifest(&d.media_type) {
            if size > MAX_MANIFEST_BYTES {
                return Err(LayoutError::TooLarge {
                    what: "manifest".into(),
                    digest: d.digest,
                    limit: MAX_MANIFEST_BYTES,
                });
            }
            let bytes = store.read_blob(&d.digest)?;
            let path = store.path(&d.digest);
            let doc = parse_document(Some(&d.media_type), &bytes).map_err(|e| match e {
                DocumentError::Unsupported { media_type, hint } => {
                    LayoutError::Unsupported { path: path.clone(), media_type, hint }
                }
                DocumentError::Invalid(reason) => {
                    LayoutError::Invalid { path: path.clone(), what: "manifest".into(), reason }
                }
            })?;
            match doc.1 {
                ManifestDocument::Index(i) => {
                    for m in i.manifests {
                        let role = match &m.platform {
                            Some(p) => format!("manifest for {p} in index {}", d.digest),
                            None => format!("entry of index {}", d.digest),
                        };
                        stack.push((m, role));
                    }
                }
                ManifestDocument::Manifest(m) => {
                    stack.push((m.config.clone(), format!("config of manifest {}", d.digest)));
                    for l in m.layers {
                        stack.push((l, format!("layer of manifest {}", d.digest)));
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{RootFs, RunConfig};

    /// A one-layer image for `arch`, in `store`; returns the manifest descriptor.
    fn tiny_image(store: &BlobStore, arch: &str) -> Descriptor {
        let layer = store.put_bytes(format!("layer for {arch}").as_bytes()).unwrap();
        let config = ImageConfig {
            architecture: arch.into(),
            os: "linux".into(),
            config: RunConfig::default(),
            rootfs: RootFs { kind: "layers".into(), diff_ids: vec![layer.clone()] },
            ..Default::default()
        };
        let cfg_bytes = canonical_json(&config);
        let cfg = store.put_bytes(&cfg_bytes).unwrap();
        let m = Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            config: Descriptor::new(media::OCI_CONFIG, cfg, cfg_bytes.len() as u64),
            layers: vec![Descriptor::new(media::OCI_LAYER_TAR, layer, format!("layer for {arch}").len() as u64)],
            annotations: BTreeMap::new(),
        };
        let mb = canonical_json(&m);
        let md = store.put_bytes(&mb).unwrap();
        let mut d = Descriptor::new(media::OCI_MANIFEST, md, mb.len() as u64);
        d.platform = Some(Platform::new("linux", arch, None));
        d
    }

    fn index_of(store: &BlobStore, manifests: Vec<Descriptor>) -> Descriptor {
        let i = Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.into()),
            manifests,
            annotations: BTreeMap::new(),
        };
        let b = canonical_json(&i);
        Descriptor::new(media::OCI_INDEX, store.put_bytes(&b).unwrap(), b.len() as u64)
    }

    #[test]
    fn write_read_round_trip_and_platform_choice() {
        let src = tempfile::tempdir().unwrap();
        let store = BlobStore::open(src.path()).unwrap();
        let amd = tiny_image(&store, "amd64");
        let arm = tiny_image(&store, "arm64");
        let idx = index_of(&store, vec![amd.clone(), arm.clone()]);

        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("layout");
        LayoutWriter::write_dir(
            &dir,
            &store,
            &[(idx.clone(), Some("latest".into())), (amd.clone(), Some("amd".into()))],
        )
        .unwrap();
        let layout = OciLayout::open(&dir).unwrap();
        assert_eq!(layout.tags(), ["latest", "amd"]);
        assert!(matches!(layout.resolve(None), Err(LayoutError::Ambiguous { count: 2, .. })));
        assert_eq!(layout.resolve(Some("latest")).unwrap().digest, idx.digest);
        assert_eq!(layout.resolve(Some(&arm.digest.to_string())).unwrap().media_type, media::OCI_MANIFEST);
        let e = layout.resolve(Some("nope")).unwrap_err();
        assert_eq!(e.to_string(), format!("{}: no image tagged \"nope\" (tags: latest, amd)", dir.display()));

        let dst_dir = tempfile::tempdir().unwrap();
        let dst = BlobStore::open(dst_dir.path()).unwrap();
        let img = layout
            .import_image(&layout.resolve(Some("latest")).unwrap(), &"linux/arm64".parse().unwrap(), &dst)
            .unwrap();
        assert_eq!(img.index_digest, Some(idx.digest.clone()));
        assert_eq!(img.manifest_digest, arm.digest);
        assert_eq!(img.config.architecture, "arm64");
        assert!(dst.contains(&img.manifest.layers[0].digest));
        assert!(!dst.contains(&amd.digest), "only the chosen platform is imported");
        let e = layout.import_image(&idx, &"linux/s390x".parse().unwrap(), &dst).unwrap_err();
        assert!(
            e.to_string().contains("no image for linux/s390x in the index (available: linux/amd64, linux/arm64)"),
            "{e}"
        );

        // Re-writing a tag replaces that entry only.
        LayoutWriter::write_dir(&dir, &store, &[(arm.clone(), Some("latest".into()))]).unwrap();
        let layout = OciLayout::open(&dir).unwrap();
        assert_eq!(layout.tags(), ["amd", "latest"]);
        assert_eq!(layout.resolve(Some("latest")).unwrap().digest, arm.digest);

        // A corrupted blob is caught on import.
        let layer = &img.manifest.layers[0];
        fs::write(layout.blob_path(&layer.digest), b"tampered!").unwrap();
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = BlobStore::open(fresh_dir.path()).unwrap();
        let e = layout.import_image(&arm, &"linux/arm64".parse().unwrap(), &fresh).unwrap_err();
        assert!(matches!(e, LayoutError::Corrupt { .. }), "{e}");
        assert!(!fresh.contains(&layer.digest));
    }

    #[test]
    fn tar_is_deterministic_and_reads_back() {
        let src = tempfile::tempdir().unwrap();
        let store = BlobStore::open(src.path()).unwrap();
        let amd = tiny_image(&store, "amd64");
        let entries = [(amd.clone(), Some("v1".to_string()))];
        let a = LayoutWriter::write_tar(Vec::new(), &store, &entries).unwrap();
        let b = LayoutWriter::write_tar(Vec::new(), &store, &entries).unwrap();
        assert_eq!(a, b);

        let mut names = Vec::new();
        let mut ar = tar::Archive::new(a.as_slice());
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!((h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap()), (0, 0, 0));
            let mode = h.mode().unwrap();
            assert!(mode == 0o644 || mode == 0o755);
            names.push(e.path().unwrap().to_string_lossy().to_string());
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 2 + 3 + 2);

        let layout = OciLayout::open_tar(a.as_slice(), &store).unwrap();
        let extracted = layout.dir().to_path_buf();
        assert!(extracted.starts_with(store.root()));
        let d = layout.resolve(Some("v1")).unwrap();
        assert_eq!(layout.resolve(None).unwrap(), d);
        let dst_dir = tempfile::tempdir().unwrap();
        let dst = BlobStore::open(dst_dir.path()).unwrap();
        let img = layout.import_image(&d, &Platform::new("linux", "amd64", None), &dst).unwrap();
        assert_eq!(img.manifest_digest, amd.digest);
        drop(layout);
        assert!(!extracted.exists(), "extracted layout removed on drop");
    }

    #[test]
    fn missing_platform_manifest_is_named() {
        let src = tempfile::tempdir().unwrap();
        let store = BlobStore::open(src.path()).unwrap();
        let amd = tiny_image(&store, "amd64");
        let mut ghost = Descriptor::new(media::OCI_MANIFEST, Digest::of_bytes(b"ghost"), 5);
        ghost.platform = Some(Platform::new("linux", "arm64", None));
        let idx = index_of(&store, vec![amd, ghost]);
        let e = LayoutWriter::write_tar(Vec::new(), &store, &[(idx, None)]).unwrap_err();
        assert!(e.to_string().contains("manifest for linux/arm64 in index"), "{e}");
    }

    #[test]
    fn unsafe_tar_entries_are_refused() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        // Bypass the builder's own path checks by writing the name bytes directly.
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../index.json");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let s = tempfile::tempdir().unwrap();
        let store = BlobStore::open(s.path()).unwrap();
        let e = OciLayout::open_tar(data.as_slice(), &store).unwrap_err();
        assert!(matches!(e, LayoutError::UnsafeEntry { .. }), "{e}");
        assert_eq!(fs::read_dir(s.path().join("tmp")).unwrap().count(), 0, "nothing left behind");
        assert!(!s.path().join("index.json").exists());

        assert!(matches!(OciLayout::open(s.path()), Err(LayoutError::NotALayout { .. })));
    }
}
