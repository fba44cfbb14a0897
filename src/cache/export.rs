//! `--cache-to`: the solved build's records written as a cache manifest — its config
//! strata's cache document, its layers the very blobs the image has (written with the
//! image's options, compressed as a push compresses them), so a cache exported next
//! to a pushed image uploads nothing twice — and pushed to a registry or written to
//! an OCI layout directory. `type=inline` puts the records of each image's own layer
//! chain in its config instead ([`inline_document`], called by the image export).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use strata_executor::worker::{empty_layer_id, LayerSource, LocalWorker, UsedCacheMount};
use strata_exporter::image::{ensure_layer, ExportOptions, LayerInput};
use strata_exporter::layer::{write_layer, Compression, LayerBlob, LayerOptions};
use strata_oci::digest::Digest;
use strata_oci::image::{canonical_json, Descriptor, Manifest, Platform};
use strata_oci::layout::{LayoutWriter, OciLayout};
use strata_oci::media;
use strata_oci::registry::RegistryClient;
use strata_oci::store::BlobStore;
use strata_solver::cache::CacheIndex;
use strata_solver::graph::{Graph, NodeId, Op};
use strata_solver::progress::{ProgressEvent, ProgressSink};
use strata_solver::worker::{LayerId, Solved};

use super::document::{CacheDocument, MountRecord, Record, CONFIG_MEDIA_TYPE, SCHEMA_VERSION};
use super::spec::{CacheExport, CacheMode, ExportTarget};
use crate::{Failure, Result};

/// What a cache export reads of a solved build.
pub struct SolvedGraph {
    pub graph: Arc<Graph>,
    pub targets: Vec<NodeId>,
    /// The platform of each target.
    pub platforms: Vec<Platform>,
    /// Every solved node of the targets' closure.
    pub nodes: HashMap<NodeId, Arc<Solved>>,
    /// The cache index the build used (local and imported records), for creation times.
    pub cache: CacheIndex,
}

/// One step's record, its layers still by snapshot id.
struct StepRecord {
    key: [u8; 32],
    layers: Vec<LayerId>,
    step: String,
    platform: String,
    created: u64,
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The records a cache of `mode` holds; only target `only`'s with `Some`.
fn step_records(solved: &SolvedGraph, mode: CacheMode, only: Option<usize>) -> Vec<StepRecord> {
    let mut out: BTreeMap<[u8; 32], StepRecord> = BTreeMap::new();
    for (i, target) in solved.targets.iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let platform = solved.platforms.get(i).map(|p| p.to_string()).unwrap_or_default();
        let nodes = match mode {
            CacheMode::Min => solved.graph.file_system_chain(target),
            CacheMode::Max => solved.graph.closure(*target),
        };
        for id in nodes {
            let (Some(node), Some(s)) = (solved.graph.get(&id), solved.nodes.get(&id)) else { continue };
            if matches!(node.op, Op::Local { .. } | Op::Scratch) || s.output.layers().is_empty() {
                continue;
            }
            out.entry(s.cache_key).or_insert_with(|| StepRecord {
                key: s.cache_key,
                layers: s.output.layers().to_vec(),
                step: node.names.first().cloned().unwrap_or_else(|| id.short()),
                platform: platform.clone(),
                created: solved.cache.lookup(&s.cache_key).map(|(r, _)| r.created).unwrap_or_else(now),
            });
        }
    }
    out.into_values().collect()
}

/// The blob of each layer, as the image has it: a base or imported layer's own blob,
/// else the one written for the image with `opts` and compressed with `compression`
/// (the bytes a push of the image sends). `None` for a layer whose diff is empty.
fn layer_blobs(
    worker: &LocalWorker,
    store: &BlobStore,
    layers: &[LayerId],
    opts: &ExportOptions,
    compression: Compression,
) -> std::result::Result<HashMap<LayerId, Option<LayerSource>>, String> {
    let mut out = HashMap::new();
    for id in layers {
        if out.contains_key(id) {
            continue;
        }
        let blob = if *id == empty_layer_id() {
            None
        } else if let Some(source) = worker.layer_source(id) {
            Some(LayerSource { media_type: strata_exporter::image::oci_media_type(&source.media_type), ..source })
        } else {
            let snaps = worker.snapshots();
            let input = LayerInput { dir: snaps.layer_dir(id), meta_dir: snaps.root().join(&id.0), source: None };
            match ensure_layer(store, &input, opts).map_err(|e| format!("layer {}: {e}", id.0))? {
                None => None,
                Some(b) => Some(compressed(store, b, compression)?),
            }
        };
        out.insert(id.clone(), blob);
    }
    Ok(out)
}

/// A written layer blob, compressed with `c` if it is a plain tar (as a push does).
fn compressed(store: &BlobStore, b: LayerBlob, c: Compression) -> std::result::Result<LayerSource, String> {
    let plain = b.media_type == media::OCI_LAYER_TAR || b.media_type == media::DOCKER_LAYER_TAR;
    if !plain || c == Compression::Uncompressed {
        return Ok(LayerSource {
            media_type: strata_exporter::image::oci_media_type(&b.media_type),
            digest: b.digest,
            size: b.size,
            diff_id: b.diff_id,
        });
    }
    let (digest, size) = strata_exporter::recompress::compress_blob(store, &b.digest, c)
        .map_err(|e| format!("compressing layer {}: {e}", b.digest))?;
    Ok(LayerSource {
        digest,
        size,
        media_type: strata_exporter::recompress::compressed_type(media::OCI_MANIFEST, c).to_string(),
        diff_id: b.diff_id,
    })
}

/// The layers of a document being built: each blob once, in order of first use.
#[derive(Default)]
struct LayerTable {
    blobs: Vec<LayerSource>,
    index: HashMap<Digest, usize>,
}

impl LayerTable {
    fn add(&mut self, b: &LayerSource) -> usize {
        if let Some(i) = self.index.get(&b.digest) {
            return *i;
        }
        self.blobs.push(b.clone());
        self.index.insert(b.digest.clone(), self.blobs.len() - 1);
        self.blobs.len() - 1
    }
}

/// The inline cache of target `i`'s image, whose layers are `image_layers` with the
/// blobs `blobs` (`None`: empty, left out of the image): the records of its layer
/// chain, indexing the image's own (non-empty) layers.
pub fn inline_document(
    solved: &SolvedGraph,
    i: usize,
    image_layers: &[LayerId],
    blobs: &[Option<LayerBlob>],
) -> CacheDocument {
    let mut index: HashMap<&LayerId, Option<usize>> = HashMap::new();
    let mut kept = 0;
    for (id, b) in image_layers.iter().zip(blobs) {
        index.insert(id, b.as_ref().map(|_| kept));
        kept += usize::from(b.is_some());
    }
    let records = step_records(solved, CacheMode::Min, Some(i))
        .into_iter()
        .filter_map(|r| {
            let layers = r
                .layers
                .iter()
                .map(|l| if *l == empty_layer_id() { Some(None) } else { index.get(l).copied() })
                .collect::<Option<Vec<_>>>()?;
            Some(Record { key: hex::encode(r.key), layers, step: r.step, platform: r.platform, created: r.created })
        })
        .collect();
    CacheDocument { schema_version: SCHEMA_VERSION, diff_ids: Vec::new(), records, mounts: Vec::new() }
}

/// Everything one `--cache-to` needs.
pub struct ExportContext<'a> {
    pub solved: &'a SolvedGraph,
    pub worker: &'a Arc<LocalWorker>,
    pub store: &'a BlobStore,
    pub client: &'a RegistryClient,
    /// The options the image's layers were written with.
    pub layer_opts: &'a ExportOptions,
    pub progress: &'a ProgressSink,
}

/// Export to every `--cache-to` but the inline ones (written with the image).
pub async fn export_all(exports: &[CacheExport], cx: &ExportContext<'_>) -> Result<()> {
    for e in exports.iter().filter(|e| e.target != ExportTarget::Inline) {
        let vertex = format!("cache-to {}", e.shown);
        let name = format!("exporting cache to {}", shown_target(&e.target));
        cx.progress.send(ProgressEvent::Started { vertex: vertex.clone(), name: name.clone() });
        let started = std::time::Instant::now();
        match export_one(e, cx, &vertex, &name).await {
            Ok(summary) => {
                cx.progress.send(ProgressEvent::Status {
                    vertex: vertex.clone(),
                    name: name.clone(),
                    message: format!("{summary} in {:.1}s", started.elapsed().as_secs_f64()),
                });
                cx.progress.send(ProgressEvent::Done { vertex, name, elapsed: started.elapsed() });
            }
            Err(why) if e.ignore_error => {
                cx.progress.send(ProgressEvent::Done { vertex, name, elapsed: started.elapsed() });
                cx.progress.send(ProgressEvent::Warning {
                    message: format!(
                        "warning: --cache-to {}: {why} (ignored: ignore-error=true)",
                        shown_target(&e.target)
                    ),
                });
            }
            Err(why) => {
                cx.progress.send(ProgressEvent::Failed { vertex, name, error: why.clone() });
                return Err(Failure::build(format!(
                    "error: --cache-to {}: {why}\n(add ignore-error=true to build on when the cache cannot be exported)",
                    shown_target(&e.target)
                )));
            }
        }
    }
    Ok(())
}

fn shown_target(t: &ExportTarget) -> String {
    match t {
        ExportTarget::Registry(r) => r.to_string(),
        ExportTarget::Local { dir, tag, .. } => format!("{} (tag {tag})", dir.display()),
        ExportTarget::Inline => "the image (inline)".into(),
    }
}

/// Write one cache; returns a summary of what was written.
async fn export_one(
    e: &CacheExport,
    cx: &ExportContext<'_>,
    vertex: &str,
    name: &str,
) -> std::result::Result<String, String> {
    let records = step_records(cx.solved, e.mode, None);
    let ids: Vec<LayerId> = records.iter().flat_map(|r| r.layers.iter().cloned()).collect();
    let mounts = if e.mounts { cx.worker.used_cache_mounts() } else { Vec::new() };
    let (worker, store, opts, compression) =
        (cx.worker.clone(), cx.store.clone(), cx.layer_opts.clone(), e.compression);
    let max = e.mounts_max_size;
    let (blobs, mount_layers) = tokio::task::spawn_blocking(move || {
        let blobs = layer_blobs(&worker, &store, &ids, &opts, compression)?;
        let mounts = mount_layers(&store, &mounts, compression, max)?;
        Ok::<_, String>((blobs, mounts))
    })
    .await
    .map_err(|e| e.to_string())??;

    let mut table = LayerTable::default();
    let mut doc_records = Vec::with_capacity(records.len());
    for r in &records {
        let layers =
            r.layers.iter().map(|l| blobs.get(l).cloned().flatten().map(|b| table.add(&b))).collect::<Vec<_>>();
        doc_records.push(Record {
            key: hex::encode(r.key),
            layers,
            step: r.step.clone(),
            platform: r.platform.clone(),
            created: r.created,
        });
    }
    let mut doc_mounts = Vec::new();
    let mut left_out = Vec::new();
    for m in mount_layers {
        match m {
            MountLayer::Kept { mount, blob, size } => {
                doc_mounts.push(MountRecord { id: mount.id, dir: mount.name, layer: table.add(&blob), size })
            }
            MountLayer::TooLarge { mount, size } => {
                left_out.push(format!("{} ({})", mount.id, crate::units::human_bytes(size)))
            }
        }
    }
    if !left_out.is_empty() {
        cx.progress.send(ProgressEvent::Warning {
            message: format!(
                "warning: --cache-to {}: cache mounts larger than mounts-max-size={} left out: {}",
                shown_target(&e.target),
                crate::units::human_bytes(e.mounts_max_size),
                left_out.join(", ")
            ),
        });
    }
    let doc = CacheDocument {
        schema_version: SCHEMA_VERSION,
        diff_ids: table.blobs.iter().map(|b| b.diff_id.clone()).collect(),
        records: doc_records,
        mounts: doc_mounts,
    };
    let manifest = write_manifest(cx.store, &doc, &table.blobs).map_err(|e| e.to_string())?;
    let counts = format!(
        "{} record{}, {} layer{}{}",
        doc.records.len(),
        if doc.records.len() == 1 { "" } else { "s" },
        table.blobs.len(),
        if table.blobs.len() == 1 { "" } else { "s" },
        if doc.mounts.is_empty() { String::new() } else { format!(", {} cache mount(s)", doc.mounts.len()) }
    );
    cx.progress.send(ProgressEvent::Status { vertex: vertex.into(), name: name.into(), message: counts.clone() });
    match &e.target {
        ExportTarget::Registry(r) => {
            fetch_unplaced(cx.worker, cx.store, &table.blobs).await?;
            let report = crate::outputs::push_image_to(
                cx.client,
                cx.store,
                &manifest,
                r,
                Compression::Uncompressed,
                strata_oci::registry::PushOptions::default(),
                cx.progress,
            )
            .await
            .map_err(|f| f.message.trim_start_matches("error: ").to_string())?;
            Ok(format!(
                "{counts}: {} sent in {} blob{}, {} already there, {} mounted",
                crate::units::human_bytes(report.bytes_uploaded),
                report.blobs_uploaded,
                if report.blobs_uploaded == 1 { "" } else { "s" },
                report.blobs_skipped,
                report.blobs_mounted
            ))
        }
        ExportTarget::Local { dir, tag, reset } => {
            // Every blob on this machine first (an imported layer may not be yet).
            for b in &table.blobs {
                cx.worker.ensure_blob(b).await.map_err(|e| format!("blob {}: {e}", b.digest))?;
            }
            let (store, dir, tag, reset) = (cx.store.clone(), dir.clone(), tag.clone(), *reset);
            let removed = tokio::task::spawn_blocking(move || {
                LayoutWriter::write_dir(&dir, &store, &[(manifest, Some(tag))]).map_err(|e| e.to_string())?;
                if reset {
                    remove_unreferenced(&dir)
                } else {
                    Ok((0, 0))
                }
            })
            .await
            .map_err(|e| e.to_string())??;
            Ok(match removed {
                (0, _) => counts,
                (n, bytes) => format!(
                    "{counts}; reset: {n} unreferenced blob{} removed ({})",
                    if n == 1 { "" } else { "s" },
                    crate::units::human_bytes(bytes)
                ),
            })
        }
        ExportTarget::Inline => Ok(counts),
    }
}

/// Bring into the store the blobs of `layers` that it lacks and that no registry
/// repository is known to hold (layers of a cache imported from a directory), so a
/// push can send them; the others a push finds, mounts or fetches itself.
pub async fn fetch_unplaced(
    worker: &LocalWorker,
    store: &BlobStore,
    layers: &[LayerSource],
) -> std::result::Result<(), String> {
    for l in layers {
        if !store.contains(&l.digest) && store.sources(&l.digest).is_empty() {
            worker.ensure_blob(l).await.map_err(|e| format!("error: blob {}: {e}", l.digest))?;
        }
    }
    Ok(())
}

/// The cache manifest of `doc` over `layers`, written into the store.
fn write_manifest(
    store: &BlobStore,
    doc: &CacheDocument,
    layers: &[LayerSource],
) -> std::result::Result<Descriptor, strata_oci::store::StoreError> {
    let config = doc.to_bytes();
    let config_digest = store.put_bytes(&config)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.to_string()),
        config: Descriptor::new(CONFIG_MEDIA_TYPE, config_digest, config.len() as u64),
        layers: layers.iter().map(|l| Descriptor::new(l.media_type.clone(), l.digest.clone(), l.size)).collect(),
        annotations: Default::default(),
    };
    let bytes = canonical_json(&manifest);
    let digest = store.put_bytes(&bytes)?;
    Ok(Descriptor::new(media::OCI_MANIFEST, digest, bytes.len() as u64))
}

/// A cache mount, as a layer or left out.
enum MountLayer {
    Kept { mount: UsedCacheMount, blob: LayerSource, size: u64 },
    TooLarge { mount: UsedCacheMount, size: u64 },
}

/// Each used cache mount's files as a tar layer (mtimes kept: build tools compare
/// them), unless it is larger than `max` bytes.
fn mount_layers(
    store: &BlobStore,
    mounts: &[UsedCacheMount],
    compression: Compression,
    max: u64,
) -> std::result::Result<Vec<MountLayer>, String> {
    let mut out = Vec::new();
    for m in mounts {
        if !m.dir.is_dir() {
            continue;
        }
        let size = tree_size(&m.dir, max);
        if size > max {
            out.push(MountLayer::TooLarge { mount: m.clone(), size });
            continue;
        }
        let opts = LayerOptions { compression, source_date_epoch: None, oci_media_types: true };
        let blob = write_layer(&m.dir, store, &opts).map_err(|e| format!("cache mount {}: {e}", m.id))?;
        out.push(MountLayer::Kept {
            mount: m.clone(),
            blob: LayerSource {
                digest: blob.digest,
                media_type: blob.media_type,
                size: blob.size,
                diff_id: blob.diff_id,
            },
            size,
        });
    }
    Ok(out)
}

/// The bytes of the regular files under `dir` (symlinks not followed), counting stops
/// once past `stop`.
fn tree_size(dir: &Path, stop: u64) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else {
                total += md.len();
            }
            if total > stop {
                return total;
            }
        }
    }
    total
}

/// `reset=true`: remove every blob of the layout in `dir` that no entry of its
/// index.json reaches. Returns (blobs removed, bytes freed).
fn remove_unreferenced(dir: &Path) -> std::result::Result<(usize, u64), String> {
    let layout = OciLayout::open(dir).map_err(|e| e.to_string())?;
    let mut keep: HashSet<String> = HashSet::new();
    let mut stack: Vec<Descriptor> = layout.index().manifests.clone();
    while let Some(d) = stack.pop() {
        if !keep.insert(d.digest.hex().to_string()) {
            continue;
        }
        if !(media::is_index(&d.media_type) || media::is_manifest(&d.media_type)) {
            continue;
        }
        let bytes = layout
            .read_small_blob(&d, strata_oci::registry::manifest::MAX_MANIFEST_BYTES)
            .map_err(|e| format!("reading {}: {e}", d.digest))?;
        match strata_oci::registry::manifest::parse_document(Some(&d.media_type), &bytes) {
            Ok((_, strata_oci::registry::manifest::ManifestDocument::Index(i))) => stack.extend(i.manifests),
            Ok((_, strata_oci::registry::manifest::ManifestDocument::Manifest(m))) => {
                keep.insert(m.config.digest.hex().to_string());
                keep.extend(m.layers.iter().map(|l| l.digest.hex().to_string()));
            }
            Err(e) => return Err(format!("{}: {e}", d.digest)),
        }
    }
    let blobs = dir.join("blobs").join("sha256");
    let (mut removed, mut bytes) = (0, 0);
    for e in std::fs::read_dir(&blobs).map_err(|e| format!("{}: {e}", blobs.display()))?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if keep.contains(&name) {
            continue;
        }
        let size = e.metadata().map(|m| m.len()).unwrap_or(0);
        if std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
            bytes += size;
        }
    }
    Ok((removed, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_table_holds_each_blob_once_in_order_of_use() {
        let b = |s: &[u8]| LayerSource {
            digest: Digest::of_bytes(s),
            media_type: media::OCI_LAYER_GZIP.into(),
            size: 1,
            diff_id: Digest::of_bytes(s),
        };
        let mut t = LayerTable::default();
        assert_eq!((t.add(&b(b"x")), t.add(&b(b"y")), t.add(&b(b"x"))), (0, 1, 0));
        assert_eq!(t.blobs.len(), 2);
    }
}
