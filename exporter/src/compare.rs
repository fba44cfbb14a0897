//! Comparing two images bit for bit, and saying where they differ when they do: the
//! library behind `strata verify`.
//!
//! Each side is an [`ImageSource`]: where its blobs are (an OCI layout or a blob store,
//! see [`BlobSource`]) and the descriptor to start from (an index or a manifest).
//! [`compare_images`] resolves both to their manifests per platform (an index gives its
//! entries, a manifest its config's platform) and compares the manifest digests. Where
//! a platform's digests differ it says why: the manifest and the config field by field
//! ([`json_diff`]), the layer count, and each pair of layers with different digests
//! entry by entry ([`layer_diff`]: content, mode, owner, mtime, xattrs, type, link
//! target, present in one only). Manifests, indexes and configs are read whole (they
//! are small, and bounded); layers are streamed. Every blob read is checked against its
//! digest.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_exporter::compare::{compare_images, ImageSource};
//! use strata_oci::layout::OciLayout;
//! let (a, b) = (OciLayout::open("./first")?, OciLayout::open("./second")?);
//! let left = ImageSource { label: "first".into(), blobs: &a, root: a.resolve(None)? };
//! let right = ImageSource { label: "second".into(), blobs: &b, root: b.resolve(None)? };
//! let comparison = compare_images(&left, &right)?;
//! print!("{}", comparison.render_text(50));
//! std::process::exit(if comparison.matches { 0 } else { 1 });
//! # }
//! ```

pub mod json_diff;
pub mod layer_diff;

use std::fmt::Write as _;
use std::io::{self, Read};
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;
use strata_oci::digest::Digest;
use strata_oci::image::{Descriptor, Index, Manifest, Platform};
use strata_oci::layout::OciLayout;
use strata_oci::media;
use strata_oci::registry::manifest::{MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES};
use strata_oci::store::BlobStore;

use self::json_diff::{diff_json, show_value, ValueDifference};
use self::layer_diff::{diff_layers, read_layer_file, EntryDifference};

/// How deep indexes may nest before a source is refused.
const MAX_INDEX_DEPTH: usize = 3;

/// Where the blobs of an image are on disk.
pub trait BlobSource {
    /// The file that holds `digest` (whether or not it exists).
    fn blob_path(&self, digest: &Digest) -> PathBuf;
}

impl BlobSource for OciLayout {
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        OciLayout::blob_path(self, digest)
    }
}

impl BlobSource for BlobStore {
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.path(digest)
    }
}

/// One side of a comparison.
pub struct ImageSource<'a> {
    /// How reports name this side (`build 1`, `127.0.0.1:5000/app:1`).
    pub label: String,
    pub blobs: &'a dyn BlobSource,
    /// The index or manifest the image is.
    pub root: Descriptor,
}

/// Failures reading either side.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{label}: blob {digest} is missing ({path})")]
    Missing { label: String, digest: Digest, path: PathBuf },
    #[error("{label}: reading {what} {digest}: {source}")]
    Read {
        label: String,
        what: &'static str,
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("{label}: {what} {digest} failed verification: its content has digest {actual}")]
    Corrupt { label: String, what: &'static str, digest: Digest, actual: Digest },
    #[error("{label}: {what} {digest} is larger than the {limit}-byte limit")]
    TooLarge { label: String, what: &'static str, digest: Digest, limit: u64 },
    #[error("{label}: {what} {digest} is not valid: {reason}")]
    Invalid { label: String, what: &'static str, digest: Digest, reason: String },
    #[error("{label}: {digest} has media type {media_type:?}, neither an image index nor a manifest")]
    NotAnImage { label: String, digest: Digest, media_type: String },
    #[error("{label}: indexes nested more than {MAX_INDEX_DEPTH} deep")]
    TooDeep { label: String },
}

/// One image manifest of a source, and the platform it is for.
#[derive(Debug, Clone)]
pub struct PlatformManifest {
    /// `linux/amd64`, normalised; a second entry for the same platform gets ` #2`.
    pub platform: String,
    pub descriptor: Descriptor,
}

/// The result of [`compare_images`].
#[derive(Debug, Clone, Serialize)]
pub struct ImageComparison {
    /// Every platform's manifest digest is the same on both sides (and no platform is
    /// on one side only, and two indexes are the same).
    #[serde(rename = "match")]
    pub matches: bool,
    pub left: SideSummary,
    pub right: SideSummary,
    /// When both sides are indexes with different digests: how the indexes differ
    /// outside their manifest lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<DocumentComparison>,
    pub platforms: Vec<PlatformComparison>,
}

/// What one side is.
#[derive(Debug, Clone, Serialize)]
pub struct SideSummary {
    pub label: String,
    pub digest: Digest,
    pub media_type: String,
}

/// Two JSON documents (configs, indexes) with different digests and their differences.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentComparison {
    pub left: Digest,
    pub right: Digest,
    pub differences: Vec<ValueDifference>,
}

/// One platform's images side by side.
#[derive(Debug, Clone, Serialize)]
pub struct PlatformComparison {
    pub platform: String,
    #[serde(rename = "match")]
    pub matches: bool,
    /// The manifest digest on each side (`None`: the platform is not on that side).
    pub left: Option<Digest>,
    pub right: Option<Digest>,
    /// Manifest fields other than `config` and `layers` that differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub manifest: Vec<ValueDifference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<DocumentComparison>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_count: Option<LayerCount>,
    /// The layers (by position) whose digests differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerComparison>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct LayerCount {
    pub left: usize,
    pub right: usize,
}

/// Two layers at the same position with different digests (or a layer on one side only).
#[derive(Debug, Clone, Serialize)]
pub struct LayerComparison {
    /// Position in the manifest's `layers`, from 0.
    pub index: usize,
    pub left: Option<LayerSummary>,
    pub right: Option<LayerSummary>,
    /// What the entries cannot say (same tar, different compression; same entries in
    /// another order; a layer on one side only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<EntryDifference>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// From the config's `rootfs.diff_ids`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Digest>,
}

/// A manifest read and parsed, with its config.
struct LoadedImage {
    manifest_json: Value,
    manifest: Manifest,
    config_json: Value,
    diff_ids: Vec<Digest>,
}

impl ImageSource<'_> {
    /// Read a small blob whole: bounded, and checked against its digest.
    fn read_small(&self, what: &'static str, digest: &Digest, limit: u64) -> Result<Vec<u8>, CompareError> {
        let path = self.blobs.blob_path(digest);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CompareError::Missing { label: self.label.clone(), digest: digest.clone(), path })
            }
            Err(source) => return Err(self.read_error(what, digest, source)),
        };
        let mut bytes = Vec::new();
        file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| self.read_error(what, digest, e))?;
        if bytes.len() as u64 > limit {
            return Err(CompareError::TooLarge { label: self.label.clone(), what, digest: digest.clone(), limit });
        }
        let actual = Digest::of_bytes(&bytes);
        if actual != *digest {
            return Err(CompareError::Corrupt { label: self.label.clone(), what, digest: digest.clone(), actual });
        }
        Ok(bytes)
    }

    fn read_json(&self, what: &'static str, digest: &Digest, limit: u64) -> Result<Value, CompareError> {
        let bytes = self.read_small(what, digest, limit)?;
        serde_json::from_slice(&bytes).map_err(|e| self.invalid(what, digest, e.to_string()))
    }

    fn read_error(&self, what: &'static str, digest: &Digest, source: io::Error) -> CompareError {
        CompareError::Read { label: self.label.clone(), what, digest: digest.clone(), source }
    }

    fn invalid(&self, what: &'static str, digest: &Digest, reason: String) -> CompareError {
        CompareError::Invalid { label: self.label.clone(), what, digest: digest.clone(), reason }
    }

    fn load_image(&self, manifest_digest: &Digest) -> Result<LoadedImage, CompareError> {
        let manifest_json = self.read_json("manifest", manifest_digest, MAX_MANIFEST_BYTES)?;
        let manifest: Manifest = serde_json::from_value(manifest_json.clone())
            .map_err(|e| self.invalid("manifest", manifest_digest, e.to_string()))?;
        let config_json = self.read_json("image config", &manifest.config.digest, MAX_CONFIG_BYTES)?;
        let diff_ids = config_json["rootfs"]["diff_ids"]
            .as_array()
            .map(|ids| ids.iter().filter_map(|d| d.as_str()?.parse().ok()).collect())
            .unwrap_or_default();
        Ok(LoadedImage { manifest_json, manifest, config_json, diff_ids })
    }

    /// The platform a manifest's config names.
    fn config_platform(&self, manifest_digest: &Digest) -> Result<Platform, CompareError> {
        let image = self.load_image(manifest_digest)?;
        let field = |name: &str| image.config_json[name].as_str().unwrap_or("unknown").to_string();
        let variant = image.config_json["variant"].as_str();
        Ok(Platform::new(&field("os"), &field("architecture"), variant))
    }
}

/// The image manifests `source` reaches, in index order: an index's entries (nested
/// indexes followed; attestation manifests left out), or the manifest itself.
pub fn platform_manifests(source: &ImageSource) -> Result<Vec<PlatformManifest>, CompareError> {
    let mut found: Vec<(Platform, Descriptor)> = Vec::new();
    collect_manifests(source, &source.root, None, 0, &mut found)?;
    let mut out: Vec<PlatformManifest> = Vec::new();
    for (platform, descriptor) in found {
        let base = platform.normalized().to_string();
        let mut key = base.clone();
        let mut n = 1;
        while out.iter().any(|m| m.platform == key) {
            n += 1;
            key = format!("{base} #{n}");
        }
        out.push(PlatformManifest { platform: key, descriptor });
    }
    Ok(out)
}

fn collect_manifests(
    source: &ImageSource,
    desc: &Descriptor,
    platform: Option<&Platform>,
    depth: usize,
    out: &mut Vec<(Platform, Descriptor)>,
) -> Result<(), CompareError> {
    if media::is_manifest(&desc.media_type) {
        let platform = match platform.or(desc.platform.as_ref()) {
            Some(p) => p.clone(),
            None => source.config_platform(&desc.digest)?,
        };
        out.push((platform, desc.clone()));
        return Ok(());
    }
    if !media::is_index(&desc.media_type) {
        return Err(CompareError::NotAnImage {
            label: source.label.clone(),
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
        });
    }
    if depth >= MAX_INDEX_DEPTH {
        return Err(CompareError::TooDeep { label: source.label.clone() });
    }
    let json = source.read_json("index", &desc.digest, MAX_MANIFEST_BYTES)?;
    let index: Index =
        serde_json::from_value(json).map_err(|e| source.invalid("index", &desc.digest, e.to_string()))?;
    for entry in &index.manifests {
        if is_attestation(entry) || !(media::is_manifest(&entry.media_type) || media::is_index(&entry.media_type)) {
            continue;
        }
        collect_manifests(source, entry, entry.platform.as_ref(), depth + 1, out)?;
    }
    Ok(())
}

fn is_attestation(d: &Descriptor) -> bool {
    d.annotations.get("vnd.docker.reference.type").is_some_and(|t| t == "attestation-manifest")
        || d.platform.as_ref().is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
}

/// Compare two images platform by platform (see the module overview).
pub fn compare_images(left: &ImageSource, right: &ImageSource) -> Result<ImageComparison, CompareError> {
    let summary = |s: &ImageSource| SideSummary {
        label: s.label.clone(),
        digest: s.root.digest.clone(),
        media_type: s.root.media_type.clone(),
    };
    let index = if media::is_index(&left.root.media_type)
        && media::is_index(&right.root.media_type)
        && left.root.digest != right.root.digest
    {
        Some(compare_indexes(left, right)?)
    } else {
        None
    };
    let left_manifests = platform_manifests(left)?;
    let right_manifests = platform_manifests(right)?;
    let mut platforms: Vec<String> = left_manifests.iter().map(|m| m.platform.clone()).collect();
    for m in &right_manifests {
        if !platforms.contains(&m.platform) {
            platforms.push(m.platform.clone());
        }
    }
    let mut compared = Vec::new();
    for platform in platforms {
        let l = left_manifests.iter().find(|m| m.platform == platform).map(|m| &m.descriptor);
        let r = right_manifests.iter().find(|m| m.platform == platform).map(|m| &m.descriptor);
        compared.push(compare_platform(left, right, platform, l, r)?);
    }
    let matches = compared.iter().all(|p| p.matches) && index.is_none();
    Ok(ImageComparison { matches, left: summary(left), right: summary(right), index, platforms: compared })
}

fn compare_indexes(left: &ImageSource, right: &ImageSource) -> Result<DocumentComparison, CompareError> {
    let without_manifests = |s: &ImageSource| -> Result<Value, CompareError> {
        let mut v = s.read_json("index", &s.root.digest, MAX_MANIFEST_BYTES)?;
        if let Some(o) = v.as_object_mut() {
            o.remove("manifests");
        }
        Ok(v)
    };
    Ok(DocumentComparison {
        left: left.root.digest.clone(),
        right: right.root.digest.clone(),
        differences: diff_json(&without_manifests(left)?, &without_manifests(right)?),
    })
}

fn compare_platform(
    left: &ImageSource,
    right: &ImageSource,
    platform: String,
    l: Option<&Descriptor>,
    r: Option<&Descriptor>,
) -> Result<PlatformComparison, CompareError> {
    let mut out = PlatformComparison {
        platform,
        matches: false,
        left: l.map(|d| d.digest.clone()),
        right: r.map(|d| d.digest.clone()),
        manifest: Vec::new(),
        config: None,
        layer_count: None,
        layers: Vec::new(),
    };
    let (Some(l), Some(r)) = (l, r) else { return Ok(out) };
    if l.digest == r.digest {
        out.matches = true;
        return Ok(out);
    }
    let a = left.load_image(&l.digest)?;
    let b = right.load_image(&r.digest)?;
    let outside_config_and_layers = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("config");
            o.remove("layers");
        }
        v
    };
    out.manifest =
        diff_json(&outside_config_and_layers(&a.manifest_json), &outside_config_and_layers(&b.manifest_json));
    if a.manifest.config.digest != b.manifest.config.digest {
        out.config = Some(DocumentComparison {
            left: a.manifest.config.digest.clone(),
            right: b.manifest.config.digest.clone(),
            differences: diff_json(&a.config_json, &b.config_json),
        });
    }
    if a.manifest.layers.len() != b.manifest.layers.len() {
        out.layer_count = Some(LayerCount { left: a.manifest.layers.len(), right: b.manifest.layers.len() });
    }
    for i in 0..a.manifest.layers.len().max(b.manifest.layers.len()) {
        let summary = |image: &LoadedImage| {
            image.manifest.layers.get(i).map(|d| LayerSummary {
                digest: d.digest.clone(),
                media_type: d.media_type.clone(),
                size: d.size,
                diff_id: image.diff_ids.get(i).cloned(),
            })
        };
        let (ls, rs) = (summary(&a), summary(&b));
        if let (Some(x), Some(y)) = (&ls, &rs) {
            if x.digest == y.digest {
                continue;
            }
        }
        out.layers.push(compare_layer(left, right, i, ls, rs)?);
    }
    Ok(out)
}

fn compare_layer(
    left: &ImageSource,
    right: &ImageSource,
    index: usize,
    l: Option<LayerSummary>,
    r: Option<LayerSummary>,
) -> Result<LayerComparison, CompareError> {
    let mut out = LayerComparison { index, left: l.clone(), right: r.clone(), note: None, entries: Vec::new() };
    let (l, r) = match (l, r) {
        (Some(l), Some(r)) => (l, r),
        (Some(_), None) => {
            out.note = Some(format!("only in {}", left.label));
            return Ok(out);
        }
        (None, _) => {
            out.note = Some(format!("only in {}", right.label));
            return Ok(out);
        }
    };
    if l.diff_id.is_some() && l.diff_id == r.diff_id {
        out.note = Some(format!(
            "the uncompressed tars are identical (diff_id {}); only the compression differs ({}, {} bytes vs {}, {} bytes)",
            short(l.diff_id.as_ref().unwrap_or(&l.digest)),
            l.media_type,
            l.size,
            r.media_type,
            r.size
        ));
        return Ok(out);
    }
    let a = read_layer(left, &l.digest)?;
    let b = read_layer(right, &r.digest)?;
    let diff = diff_layers(&a.index, &b.index);
    out.entries = diff.entries;
    if out.entries.is_empty() {
        out.note = Some(if a.diff_id == b.diff_id {
            format!("the uncompressed tars are identical (sha256 {}); only the compression differs", short(&a.diff_id))
        } else if diff.order_differs {
            "the same entries in a different order".to_string()
        } else {
            "no entry differs in what is compared; the tar streams differ in encoding (padding, header fields)"
                .to_string()
        });
    }
    Ok(out)
}

fn read_layer(source: &ImageSource, digest: &Digest) -> Result<layer_diff::LayerRead, CompareError> {
    let path = source.blobs.blob_path(digest);
    if !path.is_file() {
        return Err(CompareError::Missing { label: source.label.clone(), digest: digest.clone(), path });
    }
    let read = read_layer_file(&path).map_err(|e| source.read_error("layer", digest, e))?;
    if read.blob_digest != *digest {
        return Err(CompareError::Corrupt {
            label: source.label.clone(),
            what: "layer",
            digest: digest.clone(),
            actual: read.blob_digest,
        });
    }
    Ok(read)
}

/// `sha256:0123456789ab`.
pub fn short(d: &Digest) -> String {
    format!("{}:{}", d.algorithm(), &d.hex()[..12.min(d.hex().len())])
}

fn short_or_absent(d: Option<&Digest>) -> String {
    d.map(short).unwrap_or_else(|| "(absent)".to_string())
}

impl ImageComparison {
    /// The report for people: one `platform P: MATCH|MISMATCH` line per platform, and
    /// under each mismatch one line per difference; at most `max_entries` entry lines
    /// per layer (the JSON form has them all).
    pub fn render_text(&self, max_entries: usize) -> String {
        let (ll, rl) = (self.left.label.as_str(), self.right.label.as_str());
        let mut s = String::new();
        if let Some(index) = &self.index {
            let _ = writeln!(s, "index: MISMATCH ({} vs {})", short(&index.left), short(&index.right));
            for d in &index.differences {
                let _ = writeln!(s, "  index: {}", show_difference(d));
            }
        } else if media::is_index(&self.left.media_type) && self.left.digest == self.right.digest {
            let _ = writeln!(s, "index: MATCH {}", self.left.digest);
        }
        for p in &self.platforms {
            match (&p.left, &p.right) {
                (Some(d), Some(_)) if p.matches => {
                    let _ = writeln!(s, "platform {}: MATCH {d}", p.platform);
                    continue;
                }
                (Some(l), Some(r)) => {
                    let _ = writeln!(s, "platform {}: MISMATCH", p.platform);
                    let _ = writeln!(s, "  {ll}: {l}");
                    let _ = writeln!(s, "  {rl}: {r}");
                }
                (l, r) => {
                    let (has, lacks) = if l.is_some() { (ll, rl) } else { (rl, ll) };
                    let digest = l.as_ref().or(r.as_ref()).map(|d| d.to_string()).unwrap_or_default();
                    let _ = writeln!(s, "platform {}: MISMATCH: only in {has} ({digest}), not in {lacks}", p.platform);
                    continue;
                }
            }
            for d in &p.manifest {
                let _ = writeln!(s, "  manifest: {}", show_difference(d));
            }
            if let Some(c) = &p.config {
                for d in &c.differences {
                    let _ = writeln!(s, "  config: {}", show_difference(d));
                }
            }
            if let Some(n) = &p.layer_count {
                let _ = writeln!(s, "  layer count: {} vs {}", n.left, n.right);
            }
            for layer in &p.layers {
                let prefix = format!(
                    "layer {} ({} vs {})",
                    layer.index,
                    short_or_absent(layer.left.as_ref().map(|l| &l.digest)),
                    short_or_absent(layer.right.as_ref().map(|l| &l.digest))
                );
                if let Some(note) = &layer.note {
                    let _ = writeln!(s, "  {prefix}: {note}");
                }
                for e in layer.entries.iter().take(max_entries) {
                    let changes: Vec<String> = e.changes.iter().map(|c| c.describe(ll, rl)).collect();
                    let _ = writeln!(s, "  {prefix}: {}: {}", e.path, changes.join(", "));
                }
                if layer.entries.len() > max_entries {
                    let _ = writeln!(
                        s,
                        "  {prefix}: ... and {} more paths (--output json lists them all)",
                        layer.entries.len() - max_entries
                    );
                }
            }
        }
        s
    }
}

fn show_difference(d: &ValueDifference) -> String {
    format!("{}: {} vs {}", d.path, show_value(d.left.as_ref()), show_value(d.right.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_oci::image::canonical_json;

    /// A one-layer image in a store: (manifest descriptor, layer tar bytes used).
    fn image(store: &BlobStore, created: &str, file_content: &str, mode: u32) -> Descriptor {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_path("stamp").unwrap();
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(file_content.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, file_content.as_bytes()).unwrap();
        let tar = b.into_inner().unwrap();
        let layer = store.put_bytes(&tar).unwrap();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux", "created": created,
            "rootfs": {"type": "layers", "diff_ids": [layer.to_string()]},
            "config": {}
        });
        let config_bytes = canonical_json(&config);
        let config_digest = store.put_bytes(&config_bytes).unwrap();
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            config: Descriptor::new(media::OCI_CONFIG, config_digest, config_bytes.len() as u64),
            layers: vec![Descriptor::new(media::OCI_LAYER_TAR, layer, tar.len() as u64)],
            annotations: Default::default(),
        };
        let bytes = canonical_json(&manifest);
        let digest = store.put_bytes(&bytes).unwrap();
        Descriptor::new(media::OCI_MANIFEST, digest, bytes.len() as u64)
    }

    #[test]
    fn identical_images_match_and_different_ones_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let a = image(&store, "2023-11-14T22:13:20Z", "one", 0o644);
        let b = image(&store, "2023-11-14T22:13:21Z", "two", 0o600);
        let side =
            |label: &str, root: &Descriptor| ImageSource { label: label.into(), blobs: &store, root: root.clone() };

        let same = compare_images(&side("x", &a), &side("y", &a)).unwrap();
        assert!(same.matches);
        assert_eq!(same.render_text(10), format!("platform linux/amd64: MATCH {}\n", a.digest));

        let c = compare_images(&side("build 1", &a), &side("build 2", &b)).unwrap();
        assert!(!c.matches);
        let p = &c.platforms[0];
        let config = p.config.as_ref().unwrap();
        let paths: Vec<&str> = config.differences.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["created", "rootfs.diff_ids[0]"]);
        assert_eq!(p.layers.len(), 1);
        assert_eq!(p.layers[0].entries[0].path, "/stamp");
        let text = c.render_text(10);
        assert!(text.contains("platform linux/amd64: MISMATCH"), "{text}");
        assert!(text.contains("config: created: \"2023-11-14T22:13:20Z\" vs \"2023-11-14T22:13:21Z\""), "{text}");
        assert!(text.contains(": /stamp: content differs (sha256 "), "{text}");
        assert!(text.contains("mode 0644 vs 0600"), "{text}");
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["match"], false);
        assert_eq!(json["platforms"][0]["layers"][0]["entries"][0]["changes"][0]["what"], "content");
    }

    #[test]
    fn index_entries_are_keyed_by_platform() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let amd = image(&store, "t", "a", 0o644);
        let mut arm = image(&store, "t", "b", 0o644);
        arm.platform = Some(Platform::new("linux", "arm64", Some("v8")));
        let index = Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.into()),
            manifests: vec![amd.clone(), arm.clone()],
            annotations: Default::default(),
        };
        let bytes = canonical_json(&index);
        let digest = store.put_bytes(&bytes).unwrap();
        let root = Descriptor::new(media::OCI_INDEX, digest, bytes.len() as u64);
        let source = ImageSource { label: "i".into(), blobs: &store, root: root.clone() };
        let found: Vec<String> = platform_manifests(&source).unwrap().into_iter().map(|m| m.platform).collect();
        assert_eq!(found, ["linux/amd64", "linux/arm64"]);

        // The single amd64 manifest against the index: arm64 is on one side only.
        let single = ImageSource { label: "single".into(), blobs: &store, root: amd };
        let c = compare_images(&single, &source).unwrap();
        assert!(!c.matches);
        assert!(c.platforms[0].matches);
        assert!(!c.platforms[1].matches && c.platforms[1].left.is_none());
        assert!(c.render_text(5).contains("platform linux/arm64: MISMATCH: only in i"), "{}", c.render_text(5));
    }

    #[test]
    fn a_corrupt_blob_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let a = image(&store, "t", "a", 0o644);
        std::fs::write(store.path(&a.digest), b"{}").unwrap();
        let side = ImageSource { label: "x".into(), blobs: &store, root: a.clone() };
        let err = platform_manifests(&side).unwrap_err();
        assert!(matches!(err, CompareError::Corrupt { .. }), "{err}");
    }
}
