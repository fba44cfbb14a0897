//! Bringing base images into the store for the lowering: registry references (pulled
//! with strata-oci's distribution client), `docker-image://REF` and
//! `oci-layout://PATH[:TAG|@DIGEST]` named contexts.

use std::collections::HashMap;
use std::path::PathBuf;

use strata_frontend::lower::{ImageResolver, ResolvedImage};
use strata_oci::image::Platform;
use strata_oci::layout::OciLayout;
use strata_oci::reference::Reference;
use strata_oci::registry::RegistryClient;
use strata_oci::store::BlobStore;
use strata_solver::progress::{ProgressEvent, ProgressSink};

/// Pull policy (`--pull`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Re-resolve tags each build (the default; one request per image).
    Missing,
    Always,
    Never,
}

pub struct Resolver {
    pub client: RegistryClient,
    pub store: BlobStore,
    pub root: PathBuf,
    pub policy: PullPolicy,
    pub progress: ProgressSink,
    pub handle: tokio::runtime::Handle,
    /// Registry host → mirrors tried first (the configuration's `registry.mirrors`).
    pub mirrors: std::collections::BTreeMap<String, Vec<String>>,
    cache: HashMap<(String, String), ResolvedImage>,
}

impl Resolver {
    pub fn new(
        client: RegistryClient,
        store: BlobStore,
        root: PathBuf,
        policy: PullPolicy,
        progress: ProgressSink,
    ) -> Self {
        Resolver {
            client,
            store,
            root,
            policy,
            progress,
            handle: tokio::runtime::Handle::current(),
            mirrors: Default::default(),
            cache: HashMap::new(),
        }
    }

    fn remembered_path(&self, reference: &str, platform: &Platform) -> PathBuf {
        let key = blake3::hash(format!("{reference}\0{platform}").as_bytes()).to_hex();
        self.root.join("resolved").join(&key[..32])
    }

    fn remember(&self, reference: &str, platform: &Platform, manifest_digest: &str) {
        let path = self.remembered_path(reference, platform);
        if std::fs::read_to_string(&path).is_ok_and(|d| d.trim() == manifest_digest) {
            return;
        }
        let _ = strata_oci::store::write_atomic(&path, manifest_digest.as_bytes());
    }

    /// A previous resolution whose blobs are all still in the store.
    fn remembered(&self, reference: &str, platform: &Platform) -> Option<ResolvedImage> {
        let digest = std::fs::read_to_string(self.remembered_path(reference, platform)).ok()?;
        self.stored_image(reference, digest.trim()).ok()
    }

    fn stored_image(&self, reference: &str, manifest_digest: &str) -> Result<ResolvedImage, String> {
        let d: strata_oci::digest::Digest = manifest_digest.parse().map_err(|e| format!("{e}"))?;
        let manifest: strata_oci::image::Manifest =
            serde_json::from_slice(&self.store.read_blob(&d).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        for l in &manifest.layers {
            if !self.store.contains(&l.digest) {
                return Err(format!("layer {} missing", l.digest));
            }
        }
        let config = serde_json::from_slice(&self.store.read_blob(&manifest.config.digest).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        Ok(ResolvedImage { reference: reference.to_string(), manifest_digest: manifest_digest.to_string(), config })
    }

    fn resolve_layout(&self, spec: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        // oci-layout://PATH[:TAG|@DIGEST]
        let (path, sel) = if let Some((p, d)) = spec.rsplit_once('@') {
            (p.to_string(), Some(d.to_string()))
        } else {
            match spec.rsplit_once(':') {
                Some((p, t)) if !t.contains('/') => (p.to_string(), Some(t.to_string())),
                _ => (spec.to_string(), None),
            }
        };
        let layout = OciLayout::open(&path).map_err(|e| format!("oci-layout://{spec}: {e}"))?;
        let desc = layout.resolve(sel.as_deref()).map_err(|e| format!("oci-layout://{spec}: {e}"))?;
        let img = layout.import_image(&desc, platform, &self.store).map_err(|e| format!("oci-layout://{spec}: {e}"))?;
        Ok(ResolvedImage {
            reference: format!("oci-layout://{spec}"),
            manifest_digest: img.manifest_digest.to_string(),
            config: img.config,
        })
    }

    fn resolve_registry(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        let r = Reference::parse(reference).map_err(|e| e.to_string())?;
        if self.policy == PullPolicy::Never {
            return self
                .remembered(reference, platform)
                .ok_or_else(|| format!("{r}: not in the local store and --pull=never was given"));
        }
        let vertex = format!("pull-{reference}-{platform}");
        let name = format!("[internal] load metadata for {}", r);
        self.progress.send(ProgressEvent::Started { vertex: vertex.clone(), name: name.clone() });
        let started = std::time::Instant::now();
        let pull = |from: &Reference| {
            tokio::task::block_in_place(|| {
                self.handle.block_on(self.client.pull_image(from, platform, &self.store)).map_err(|e| e.to_string())
            })
        };
        // Mirrors first, in order; the registry itself when none of them has it.
        let mut pulled = None;
        for mirror in self.mirrors.get(&r.registry).into_iter().flatten() {
            let via = Reference { registry: mirror.clone(), ..r.clone() };
            match pull(&via) {
                Ok(p) => {
                    self.progress.send(ProgressEvent::Status {
                        vertex: vertex.clone(),
                        name: name.clone(),
                        message: format!("pulled from mirror {mirror}"),
                    });
                    pulled = Some(Ok(p));
                    break;
                }
                Err(e) => self.progress.send(ProgressEvent::Status {
                    vertex: vertex.clone(),
                    name: name.clone(),
                    message: format!("mirror {mirror} failed ({e}); trying the next source"),
                }),
            }
        }
        let pulled = match pulled {
            Some(p) => p,
            None => pull(&r),
        };
        match pulled {
            Ok(p) => {
                self.progress.send(ProgressEvent::Done { vertex, name, elapsed: started.elapsed() });
                self.remember(reference, platform, &p.manifest_digest.to_string());
                Ok(ResolvedImage {
                    reference: r.to_string(),
                    manifest_digest: p.manifest_digest.to_string(),
                    config: p.config,
                })
            }
            Err(e) => {
                self.progress.send(ProgressEvent::Failed { vertex, name, error: e.to_string() });
                Err(e.to_string())
            }
        }
    }
}

impl ImageResolver for Resolver {
    fn resolve(&mut self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        let key = (reference.to_string(), platform.to_string());
        if let Some(r) = self.cache.get(&key) {
            return Ok(r.clone());
        }
        let r = if let Some(spec) = reference.strip_prefix("oci-layout://") {
            self.resolve_layout(spec, platform)?
        } else {
            let reference = reference.strip_prefix("docker-image://").unwrap_or(reference);
            self.resolve_registry(reference, platform)?
        };
        self.cache.insert(key, r.clone());
        Ok(r)
    }
}
