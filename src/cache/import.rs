//! `--cache-from`: read cache manifests (or images with an inline cache) from registries
//! and OCI layout directories — their manifests and documents only. Their layers stay
//! where they are until a step or an output needs their files: the worker asks the
//! [`BlobFetcher`] made here, which downloads (or copies) and verifies one blob.
//!
//! A cache that is missing or unreadable is a warning, and the build goes on without
//! it (as BuildKit does).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_executor::worker::{blob_layer_id, empty_layer_id, BlobFetcher, LayerSource};
use strata_oci::digest::Digest;
use strata_oci::image::{Descriptor, Manifest};
use strata_oci::layout::OciLayout;
use strata_oci::reference::Reference;
use strata_oci::registry::manifest::{parse_document, ManifestDocument, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES};
use strata_oci::registry::RegistryClient;
use strata_oci::store::BlobStore;
use strata_solver::cache::CacheRecord;
use strata_solver::progress::{ProgressEvent, ProgressSink};
use strata_solver::worker::{LayerId, Output};

use super::document::{CacheDocument, CONFIG_MEDIA_TYPE, INLINE_KEY};
use super::spec::{CacheImport, ImportSource};

/// The most platform manifests of one index read for inline caches.
const MAX_INDEX_ENTRIES: usize = 32;

/// Everything the imported caches hold, for one build.
#[derive(Default)]
pub struct ImportedCache {
    /// Cache key → record (its layers named by [`blob_layer_id`]) and the cache's name.
    pub records: HashMap<[u8; 32], (CacheRecord, String)>,
    /// The blob behind each imported layer.
    pub remote_layers: HashMap<LayerId, LayerSource>,
    /// Cache mount directory name → the layer holding its files.
    pub mount_seeds: HashMap<String, LayerSource>,
    /// Where each blob can be fetched from.
    locations: HashMap<Digest, Vec<Location>>,
}

/// Where a blob of an imported cache is.
#[derive(Debug, Clone)]
enum Location {
    Registry(Reference),
    Local(PathBuf),
}

/// One cache document with the layers it indexes.
struct Found {
    doc: CacheDocument,
    layers: Vec<Descriptor>,
    diff_ids: Vec<Digest>,
}

impl ImportedCache {
    /// Read every `--cache-from` (in order: an earlier one's record wins a key).
    pub async fn read(
        imports: &[CacheImport],
        client: &RegistryClient,
        store: &BlobStore,
        progress: &ProgressSink,
    ) -> ImportedCache {
        let mut cache = ImportedCache::default();
        for import in imports {
            let vertex = format!("cache-from {}", import.shown);
            let name = format!("importing cache manifest from {}", shown_source(&import.source));
            progress.send(ProgressEvent::Started { vertex: vertex.clone(), name: name.clone() });
            let started = std::time::Instant::now();
            let (found, location) = match &import.source {
                ImportSource::Registry(r) => (read_registry(r, client, store).await, Location::Registry(r.clone())),
                ImportSource::Local { dir, tag } => {
                    let (d, t) = (dir.clone(), tag.clone());
                    let found = tokio::task::spawn_blocking(move || read_local(&d, &t))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                    (found, Location::Local(dir.clone()))
                }
            };
            match found {
                Ok(docs) => {
                    let (records, layers) = cache.add(&docs, &location, &shown_source(&import.source), store);
                    progress.send(ProgressEvent::Status {
                        vertex: vertex.clone(),
                        name: name.clone(),
                        message: format!(
                            "{records} record{} ({layers} layer{}, none downloaded)",
                            plural(records),
                            plural(layers)
                        ),
                    });
                    progress.send(ProgressEvent::Done { vertex, name, elapsed: started.elapsed() });
                }
                Err(why) => {
                    progress.send(ProgressEvent::Done { vertex, name, elapsed: started.elapsed() });
                    progress.send(ProgressEvent::Warning {
                        message: format!(
                            "warning: --cache-from {}: {why}; building without it",
                            shown_source(&import.source)
                        ),
                    });
                }
            }
        }
        cache
    }

    /// Take in the documents found at `location`: (records, layers) added.
    fn add(&mut self, docs: &[Found], location: &Location, from: &str, store: &BlobStore) -> (usize, usize) {
        let (mut records, mut layers) = (0, 0);
        for found in docs {
            let sources: Vec<(LayerId, LayerSource)> = found
                .layers
                .iter()
                .zip(&found.diff_ids)
                .map(|(l, diff_id)| {
                    let source = LayerSource {
                        digest: l.digest.clone(),
                        media_type: l.media_type.clone(),
                        size: l.size,
                        diff_id: diff_id.clone(),
                    };
                    (blob_layer_id(diff_id), source)
                })
                .collect();
            for (id, source) in &sources {
                let places = self.locations.entry(source.digest.clone()).or_default();
                if places.is_empty() {
                    layers += 1;
                }
                places.push(location.clone());
                if let Location::Registry(r) = location {
                    // A push to this registry can then find or mount it, not download it.
                    let _ = store.add_source(&source.digest, &r.name());
                }
                self.remote_layers.entry(id.clone()).or_insert_with(|| source.clone());
            }
            for r in &found.doc.records {
                let Ok(key) = hex::decode(&r.key) else { continue };
                let Ok(key) = <[u8; 32]>::try_from(key.as_slice()) else { continue };
                if self.records.contains_key(&key) {
                    continue;
                }
                let ids = r
                    .layers
                    .iter()
                    .map(|i| match i {
                        Some(i) => sources[*i].0.clone(),
                        None => empty_layer_id(),
                    })
                    .collect();
                let record = CacheRecord { output: Output::Layers(ids), name: r.step.clone(), created: r.created };
                self.records.insert(key, (record, from.to_string()));
                records += 1;
            }
            for m in &found.doc.mounts {
                self.mount_seeds.entry(m.dir.clone()).or_insert_with(|| sources[m.layer].1.clone());
            }
        }
        (records, layers)
    }

    /// The fetcher the worker brings imported blobs in with (verified by digest and
    /// size as they are stored; the worker checks the diff_id as it unpacks).
    pub fn fetcher(&self, client: &RegistryClient, store: &BlobStore) -> BlobFetcher {
        let locations = Arc::new(self.locations.clone());
        let (client, store) = (client.clone(), store.clone());
        Arc::new(move |desc: Descriptor| {
            let (locations, client, store) = (locations.clone(), client.clone(), store.clone());
            Box::pin(async move {
                let places =
                    locations.get(&desc.digest).ok_or_else(|| format!("no imported cache holds {}", desc.digest))?;
                let mut last = String::new();
                for place in places {
                    let res = match place {
                        Location::Registry(r) => client.fetch_blob(r, &desc, &store).await.map_err(|e| e.to_string()),
                        Location::Local(dir) => {
                            let (dir, desc, store) = (dir.clone(), desc.clone(), store.clone());
                            tokio::task::spawn_blocking(move || {
                                let layout = OciLayout::open(&dir).map_err(|e| e.to_string())?;
                                layout.import_blob(&desc, &store).map_err(|e| e.to_string())
                            })
                            .await
                            .unwrap_or_else(|e| Err(e.to_string()))
                        }
                    };
                    match res {
                        Ok(()) => return Ok(()),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            })
        })
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The source as a user names it: the reference, or `DIR (tag T)`.
pub fn shown_source(source: &ImportSource) -> String {
    match source {
        ImportSource::Registry(r) => r.to_string(),
        ImportSource::Local { dir, tag } => format!("{} (tag {tag})", dir.display()),
    }
}

/// A cache manifest (or an image with inline caches, or an index of such images) in a
/// registry.
async fn read_registry(r: &Reference, client: &RegistryClient, store: &BlobStore) -> Result<Vec<Found>, String> {
    let top = client.resolve(r).await.map_err(|e| e.to_string())?;
    let (_, doc) = parse_document(Some(&top.media_type), &top.bytes).map_err(|e| format!("{r}: {e}"))?;
    let manifests = match doc {
        ManifestDocument::Manifest(m) => vec![m],
        ManifestDocument::Index(index) => {
            let mut out = Vec::new();
            for d in index.manifests.iter().take(MAX_INDEX_ENTRIES) {
                if d.size > MAX_MANIFEST_BYTES {
                    continue;
                }
                let m = client.resolve(&r.with_digest(d.digest.clone())).await.map_err(|e| e.to_string())?;
                if let Ok((_, ManifestDocument::Manifest(m))) = parse_document(Some(&m.media_type), &m.bytes) {
                    out.push(m);
                }
            }
            out
        }
    };
    let mut found = Vec::new();
    for m in manifests {
        if m.config.size > MAX_CONFIG_BYTES {
            return Err(format!("its config {} is larger than {MAX_CONFIG_BYTES} bytes", m.config.digest));
        }
        client.fetch_blob(r, &m.config, store).await.map_err(|e| e.to_string())?;
        let config = store.read_blob(&m.config.digest).map_err(|e| e.to_string())?;
        if let Some(f) = document_of(&m, &config).map_err(|e| format!("{r}: {e}"))? {
            found.push(f);
        }
    }
    if found.is_empty() {
        return Err(format!("{r} is neither a strata cache nor an image with an inline strata cache"));
    }
    Ok(found)
}

/// The cache manifest tagged `tag` in the OCI layout `dir`.
fn read_local(dir: &Path, tag: &str) -> Result<Vec<Found>, String> {
    let layout = OciLayout::open(dir).map_err(|e| e.to_string())?;
    let desc = layout.resolve(Some(tag)).map_err(|e| e.to_string())?;
    let bytes = layout.read_small_blob(&desc, MAX_MANIFEST_BYTES).map_err(|e| e.to_string())?;
    let m = match parse_document(Some(&desc.media_type), &bytes) {
        Ok((_, ManifestDocument::Manifest(m))) => m,
        Ok(_) => return Err(format!("{tag} in {} is an index, not a strata cache manifest", dir.display())),
        Err(e) => return Err(format!("{tag} in {}: {e}", dir.display())),
    };
    let config = layout.read_small_blob(&m.config, MAX_CONFIG_BYTES).map_err(|e| e.to_string())?;
    match document_of(&m, &config)? {
        Some(f) => Ok(vec![f]),
        None => Err(format!("{tag} in {} is not a strata cache", dir.display())),
    }
}

/// The cache document of a manifest whose config is `config`: a cache manifest's own,
/// or an image's inline one; `None` for an image without one.
fn document_of(m: &Manifest, config: &[u8]) -> Result<Option<Found>, String> {
    if m.config.media_type == CONFIG_MEDIA_TYPE {
        let doc = CacheDocument::parse(config, m.layers.len())?;
        if doc.diff_ids.len() != m.layers.len() {
            return Err(format!("the cache document has {} diffIDs for {} layers", doc.diff_ids.len(), m.layers.len()));
        }
        let diff_ids = doc.diff_ids.clone();
        return Ok(Some(Found { doc, layers: m.layers.clone(), diff_ids }));
    }
    let mut image: serde_json::Value = serde_json::from_slice(config).map_err(|e| format!("image config: {e}"))?;
    let Some(inline) = image.get_mut(INLINE_KEY).map(serde_json::Value::take) else { return Ok(None) };
    let doc: CacheDocument = serde_json::from_value(inline).map_err(|e| format!("inline cache: {e}"))?;
    doc.check(m.layers.len()).map_err(|e| format!("inline cache: {e}"))?;
    let rootfs: strata_oci::image::RootFs =
        serde_json::from_value(image.get_mut("rootfs").map(serde_json::Value::take).unwrap_or_default())
            .map_err(|e| format!("image config rootfs: {e}"))?;
    if rootfs.diff_ids.len() != m.layers.len() {
        return Err(format!("the image config has {} diff_ids for {} layers", rootfs.diff_ids.len(), m.layers.len()));
    }
    Ok(Some(Found { doc, layers: m.layers.clone(), diff_ids: rootfs.diff_ids }))
}
