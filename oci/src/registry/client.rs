//! The pull side of the distribution API: resolve a reference to a manifest, pick the
//! platform from an index, and bring manifest, config and layers into the [`BlobStore`].
//!
//! This module owns the order of a pull and its checks (digests, sizes, size limits,
//! platform choice); HTTP, auth and retries are [`Transport`]'s, the byte-level download
//! loop is [`super::blob`]'s.

use futures::{StreamExt, TryStreamExt};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::StatusCode;

use super::auth::Scope;
use super::blob::download_blob;
use super::credentials::Credential;
use super::error::{Operation, RegistryError};
use super::manifest::{
    bare_media_type, parse_document, DocumentError, ManifestDocument, MANIFEST_ACCEPT, MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
};
use super::transport::{read_limited, registry_error_codes, status_text, ReadError, RegistryRequest, Transport};
use super::RegistryOptions;
use crate::digest::Digest;
use crate::image::{Descriptor, ImageConfig, Manifest, Platform};
use crate::reference::Reference;
use crate::store::BlobStore;

/// A manifest or index as the registry served it (digest verified).
#[derive(Debug, Clone)]
pub struct ResolvedManifest {
    /// Index/manifest media type (from the body or Content-Type).
    pub media_type: String,
    pub digest: Digest,
    /// The exact bytes; their sha256 is `digest`.
    pub bytes: Vec<u8>,
}

impl ResolvedManifest {
    /// A descriptor of these bytes.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.digest.clone(), self.bytes.len() as u64)
    }
    pub fn is_index(&self) -> bool {
        crate::media::is_index(&self.media_type)
    }
}

/// An image brought into the store by [`RegistryClient::pull_image`].
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub reference: Reference,
    /// The index the reference resolved to, when it named a multi-platform image.
    pub index_digest: Option<Digest>,
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub manifest_media_type: String,
    pub config_digest: Digest,
    pub config: ImageConfig,
}

impl PulledImage {
    /// The descriptor of the platform manifest (its size read from the store).
    pub fn manifest_descriptor(&self, store: &BlobStore) -> Result<Descriptor, crate::store::StoreError> {
        let size = store.size(&self.manifest_digest)?;
        let mut d = Descriptor::new(self.manifest_media_type.clone(), self.manifest_digest.clone(), size);
        d.platform = Some(self.config.platform());
        Ok(d)
    }
}

/// A registry client (pull). Cheap to clone; clones share connections and tokens.
#[derive(Clone)]
pub struct RegistryClient {
    transport: Transport,
    max_concurrent_downloads: usize,
    /// Download an image's config and layers even when the store has them (`--pull=always`).
    refetch: bool,
    /// Blobs this process pushed or found in a repository (`registry/repository`):
    /// a later push there in the same process asks nothing about them.
    present: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<(String, Digest)>>>,
}

impl RegistryClient {
    /// A client with these options (CA files are read now; nothing is contacted).
    pub fn new(opts: RegistryOptions) -> Result<Self, RegistryError> {
        Ok(RegistryClient {
            transport: Transport::new(&opts)?,
            max_concurrent_downloads: opts.max_concurrent_downloads.max(1),
            refetch: false,
            present: Default::default(),
        })
    }

    /// This client, downloading every blob of the images it pulls again (verified, and
    /// replacing the stored copy) rather than trusting the store: `--pull=always`.
    pub fn refetching(mut self) -> Self {
        self.refetch = true;
        self
    }

    /// Does this process know that `r`'s repository holds `digest` (it pushed or found
    /// it there)?
    pub(crate) fn known_present(&self, r: &Reference, digest: &Digest) -> bool {
        self.present.lock().unwrap_or_else(|p| p.into_inner()).contains(&(r.name(), digest.clone()))
    }

    pub(crate) fn remember_present(&self, r: &Reference, digest: &Digest) {
        self.present.lock().unwrap_or_else(|p| p.into_inner()).insert((r.name(), digest.clone()));
    }

    /// The authenticated transport, for other protocol parts (push).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Fetch the manifest or index `r` names (GET), verifying its digest against the
    /// reference's digest if it has one, else against `Docker-Content-Digest`.
    pub async fn resolve(&self, r: &Reference) -> Result<ResolvedManifest, RegistryError> {
        let op = Operation::on("resolve", r);
        self.fetch_manifest(&op, r, &r.manifest_reference(), r.digest.as_ref(), None).await
    }

    /// The descriptor (media type, digest, size) of what `r` names, by a HEAD request;
    /// falls back to GET when the registry does not state the digest.
    pub async fn resolve_descriptor(&self, r: &Reference) -> Result<Descriptor, RegistryError> {
        let op = Operation::on("resolve", r);
        let path = format!("/v2/{}/manifests/{}", r.repository, r.manifest_reference());
        let req = RegistryRequest::head(path).header(ACCEPT, MANIFEST_ACCEPT);
        let resp = self.transport.send(&op, &r.registry, &Scope::pull(&r.repository), &req).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(manifest_not_found(&op, r, &r.manifest_reference(), Vec::new()));
        }
        if status.is_success() {
            let h = resp.headers();
            let digest =
                h.get("docker-content-digest").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<Digest>().ok());
            let media_type = h.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|v| bare_media_type(v).to_string());
            let size = h.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
            if let (Some(digest), Some(mt), Some(size)) = (digest, media_type, size) {
                if crate::media::is_index(&mt) || crate::media::is_manifest(&mt) {
                    if let Some(want) = &r.digest {
                        if *want != digest {
                            return Err(RegistryError::DigestMismatch {
                                op,
                                registry: r.registry.clone(),
                                what: "manifest".into(),
                                expected: want.clone(),
                                actual: digest,
                            });
                        }
                    }
                    return Ok(Descriptor::new(mt, digest, size));
                }
            }
        }
        // No usable HEAD answer: GET and compute.
        let m = self.fetch_manifest(&op, r, &r.manifest_reference(), r.digest.as_ref(), None).await?;
        Ok(m.descriptor())
    }

    /// Pull the image `r` names for `platform` into `store`: index (if any), platform
    /// manifest, config and all layers (in parallel, resumable, verified). Blobs already
    /// in the store are not downloaded again, unless the client is [`Self::refetching`].
    pub async fn pull_image(
        &self,
        r: &Reference,
        platform: &Platform,
        store: &BlobStore,
    ) -> Result<PulledImage, RegistryError> {
        let op = Operation::on("pull", r);
        let mut current = self.fetch_manifest(&op, r, &r.manifest_reference(), r.digest.as_ref(), None).await?;
        let mut index_digest = None;
        let mut depth = 0;
        let (manifest, manifest_media_type) = loop {
            let (media_type, doc) = parse_document(Some(&current.media_type), &current.bytes)
                .map_err(|e| document_error(&op, r, e, "manifest"))?;
            self.keep(&op, store, &current)?;
            match doc {
                ManifestDocument::Manifest(m) => break (m, media_type),
                ManifestDocument::Index(index) => {
                    depth += 1;
                    if depth > 3 {
                        return Err(invalid(&op, r, "index", "indexes nested more than 3 deep".into()));
                    }
                    index_digest.get_or_insert_with(|| current.digest.clone());
                    let chosen = index.select_platform(platform).map_err(|e| RegistryError::NoMatchingPlatform {
                        op: op.clone(),
                        index: current.digest.clone(),
                        wanted: e.wanted,
                        available: e.available,
                    })?;
                    if chosen.size > MAX_MANIFEST_BYTES {
                        return Err(too_large(&op, r, format!("manifest {}", chosen.digest), MAX_MANIFEST_BYTES));
                    }
                    tracing::debug!(reference = %r, %platform, manifest = %chosen.digest, "platform chosen from index");
                    let chosen = chosen.clone();
                    let mut next = self
                        .fetch_manifest(&op, r, &chosen.digest.to_string(), Some(&chosen.digest), Some(chosen.size))
                        .await?;
                    if !crate::media::is_index(&next.media_type) && !crate::media::is_manifest(&next.media_type) {
                        next.media_type = chosen.media_type.clone();
                    }
                    current = next;
                }
            }
        };
        let manifest_digest = current.digest.clone();

        // Config: small, verified, parsed.
        let config_desc = manifest.config.clone();
        if config_desc.size > MAX_CONFIG_BYTES {
            return Err(too_large(&op, r, format!("image config {}", config_desc.digest), MAX_CONFIG_BYTES));
        }
        download_blob(&self.transport, &op, r, &config_desc, store, self.refetch).await?;
        let config_bytes =
            store.read_blob(&config_desc.digest).map_err(|source| RegistryError::Store { op: op.clone(), source })?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(&op, r, "image config", format!("{}: {e}", config_desc.digest)))?;
        if !platform.matches(&config.platform()) {
            tracing::warn!(
                reference = %r,
                "image is for {} but {} was asked for; using it anyway",
                config.platform(),
                platform
            );
        }

        // Layers: in parallel, bounded, each streamed and verified.
        let mut layers: Vec<&Descriptor> = Vec::new();
        for l in &manifest.layers {
            if !layers.iter().any(|x| x.digest == l.digest) && (self.refetch || !store.contains(&l.digest)) {
                layers.push(l);
            }
        }
        futures::stream::iter(layers)
            .map(|l| download_blob(&self.transport, &op, r, l, store, self.refetch))
            .buffer_unordered(self.max_concurrent_downloads)
            .try_collect::<Vec<()>>()
            .await?;
        for d in std::iter::once(&config_desc).chain(&manifest.layers) {
            record_source(store, r, &d.digest);
        }

        Ok(PulledImage {
            reference: r.clone(),
            index_digest,
            manifest_digest,
            manifest,
            manifest_media_type,
            config_digest: config_desc.digest,
            config,
        })
    }

    /// Download one blob of `r`'s repository into `store` (no-op if present).
    pub async fn fetch_blob(&self, r: &Reference, d: &Descriptor, store: &BlobStore) -> Result<(), RegistryError> {
        let op = Operation::new("fetch blob", format!("{}@{}", r.name(), d.digest));
        download_blob(&self.transport, &op, r, d, store, self.refetch).await?;
        record_source(store, r, &d.digest);
        Ok(())
    }

    /// Check `credential` against `registry` (what `strata login` does before saving).
    pub async fn verify_login(&self, registry: &str, credential: &Credential) -> Result<(), RegistryError> {
        let op = Operation::new("login", registry);
        self.transport.verify_credentials(&op, registry, credential).await
    }

    /// Store manifest bytes whose digest was already verified.
    fn keep(&self, op: &Operation, store: &BlobStore, m: &ResolvedManifest) -> Result<(), RegistryError> {
        store.put_bytes(&m.bytes).map(|_| ()).map_err(|source| RegistryError::Store { op: op.clone(), source })
    }

    async fn fetch_manifest(
        &self,
        op: &Operation,
        r: &Reference,
        reference: &str,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<ResolvedManifest, RegistryError> {
        let path = format!("/v2/{}/manifests/{}", r.repository, reference);
        let req = RegistryRequest::get(path.clone()).header(ACCEPT, MANIFEST_ACCEPT);
        let scope = Scope::pull(&r.repository);
        let mut attempt = 0;
        loop {
            let resp = self.transport.send(op, &r.registry, &scope, &req).await?;
            let status = resp.status();
            if status == StatusCode::NOT_FOUND {
                let codes = registry_error_codes(resp).await;
                return Err(manifest_not_found(op, r, reference, codes));
            }
            if !status.is_success() {
                let codes = registry_error_codes(resp).await;
                let detail = codes.iter().map(|(c, m)| format!("{c}: {m}")).collect::<Vec<_>>().join("; ");
                return Err(RegistryError::UnexpectedStatus {
                    op: op.clone(),
                    registry: r.registry.clone(),
                    method: "GET".into(),
                    path,
                    status: status_text(status),
                    detail: if detail.is_empty() { detail } else { format!(": {detail}") },
                });
            }
            let headers = resp.headers().clone();
            let bytes = match read_limited(resp, MAX_MANIFEST_BYTES).await {
                Ok(b) => b,
                Err(ReadError::TooLarge) => return Err(too_large(op, r, "manifest".into(), MAX_MANIFEST_BYTES)),
                Err(ReadError::Broken(reason)) => {
                    if attempt + 1 < self.transport.max_attempts() {
                        self.transport.backoff(attempt, None).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(RegistryError::Connect { op: op.clone(), host: r.api_host().to_string(), reason });
                }
            };
            let actual = Digest::of_bytes(&bytes);
            let stated = headers
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Digest>().ok());
            if let Some(want) = expected.or(stated.as_ref()) {
                if *want != actual {
                    return Err(RegistryError::DigestMismatch {
                        op: op.clone(),
                        registry: r.registry.clone(),
                        what: format!("manifest {reference}"),
                        expected: want.clone(),
                        actual,
                    });
                }
            }
            if let Some(size) = expected_size {
                if bytes.len() as u64 != size {
                    return Err(RegistryError::SizeMismatch {
                        op: op.clone(),
                        registry: r.registry.clone(),
                        what: format!("manifest {reference}"),
                        expected: size,
                        actual: bytes.len() as u64,
                    });
                }
            }
            let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
            let media_type = match parse_document(content_type, &bytes) {
                Ok((mt, _)) => mt,
                Err(e) => return Err(document_error(op, r, e, "manifest")),
            };
            return Ok(ResolvedManifest { media_type, digest: actual, bytes });
        }
    }
}

/// Note in the store's side index that `r`'s repository holds `digest`, so a later push to
/// another repository of the same registry can mount it instead of uploading it.
pub(crate) fn record_source(store: &BlobStore, r: &Reference, digest: &Digest) {
    if let Err(e) = store.add_source(digest, &r.name()) {
        tracing::debug!(%digest, "cannot record the blob's source repository: {e}");
    }
}

fn manifest_not_found(op: &Operation, r: &Reference, reference: &str, codes: Vec<(String, String)>) -> RegistryError {
    if codes.iter().any(|(c, _)| c == "NAME_UNKNOWN") {
        return RegistryError::RepositoryUnknown { op: op.clone(), repository: r.name() };
    }
    let what =
        if reference.starts_with("sha256:") { format!("manifest {reference}") } else { format!("tag {reference:?}") };
    RegistryError::ManifestUnknown { op: op.clone(), what, repository: r.name() }
}

fn document_error(op: &Operation, r: &Reference, e: DocumentError, what: &str) -> RegistryError {
    match e {
        DocumentError::Unsupported { media_type, hint } => {
            RegistryError::UnsupportedMediaType { op: op.clone(), registry: r.registry.clone(), media_type, hint }
        }
        DocumentError::Invalid(reason) => invalid(op, r, what, reason),
    }
}

fn invalid(op: &Operation, r: &Reference, what: &str, reason: String) -> RegistryError {
    RegistryError::InvalidContent { op: op.clone(), registry: r.registry.clone(), what: what.to_string(), reason }
}

fn too_large(op: &Operation, r: &Reference, what: String, limit: u64) -> RegistryError {
    RegistryError::TooLarge { op: op.clone(), registry: r.registry.clone(), what, limit }
}
