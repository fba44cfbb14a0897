//! The push side of the distribution API: an image (a manifest, or an index and its
//! manifests) and its blobs go from the [`BlobStore`] to a registry repository.
//!
//! This module owns the order of a push and its upload protocol; HTTP, authentication
//! and request retries are [`Transport`]'s.
//!
//! - **Plan first, locally.** The manifests are read from the store and walked (an index
//!   → its manifests → their config and layers); every blob must be in the store with
//!   the size its descriptor states, or be known to be in a registry repository (the
//!   store's side index: a layer of an imported build cache, never downloaded). Nothing
//!   is sent for an image that cannot be pushed whole (an index pulled for one platform
//!   lists manifests the store lacks).
//! - **Blobs the store only knows of** are found in the repository (`HEAD`), or mounted
//!   from the one that has them, or else downloaded from it (verified) and uploaded.
//! - **Authenticate before uploading.** The first request is the existence check of one
//!   blob, alone, with a `pull,push` scope: wrong credentials fail there, before any
//!   upload session is opened or any byte of a blob is sent.
//! - **Blobs** (deduplicated; `jobs` at once): `HEAD` and skip the ones the repository
//!   has; mount the ones the store's side index ([`BlobStore::sources`]) says another
//!   repository of the same registry holds (`POST ?mount=&from=`: 201 is done, 202 gives
//!   an upload session to use instead); upload the others: one `PUT ?digest=` with the
//!   body up to [`PushOptions::monolithic_limit`], `PATCH` chunks of
//!   [`PushOptions::chunk_size`] then an empty `PUT ?digest=` above it. Bodies are
//!   streamed from the blob file; nothing holds a whole blob in memory.
//! - **Interruptions.** A data request that fails (connection dropped, 5xx, 429, a
//!   rejected session) is never blindly resent, since the registry may have kept part of
//!   it: the client asks the session's state (`GET` on the upload URL → `Range`) and
//!   continues from the offset the registry reports. A registry that no longer accepts
//!   the session (distribution rejects a session whose offset moved under a broken
//!   request) gets a new one, from the start, unless a `HEAD` shows the blob arrived
//!   after all. Failures without progress are bounded by `RegistryOptions::max_attempts`.
//! - **Manifests last**: each manifest after all blobs, an index after its manifests,
//!   with the exact stored bytes and their media type as `Content-Type`; the root under
//!   every tag asked for.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_oci::names::ImageNames;
//! use strata_oci::registry::{PushOptions, RegistryClient, RegistryOptions};
//! use strata_oci::{reference::Reference, store::BlobStore};
//! let store = BlobStore::open("/var/lib/strata")?;
//! let image = ImageNames::open(&store)?.get("docker.io/library/app:latest").expect("named");
//! let client = RegistryClient::new(RegistryOptions::default())?;
//! let target: Reference = "127.0.0.1:5000/team/app:1.0".parse()?;
//! let report = client
//!     .push_image(&target, &image.descriptor, &store, &PushOptions::default(), |e| eprintln!("{e:?}"))
//!     .await?;
//! println!("{} uploaded, {} mounted, {} skipped", report.blobs_uploaded, report.blobs_mounted, report.blobs_skipped);
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::auth::Scope;
use super::client::{record_source, RegistryClient};
use super::error::{Operation, RegistryError};
use super::manifest::{parse_document, DocumentError, ManifestDocument, MAX_MANIFEST_BYTES};
use super::transport::{registry_error_codes, status_text, BodyFactory, RegistryRequest, Target, Transport};
use crate::digest::Digest;
use crate::image::Descriptor;
use crate::reference::Reference;
use crate::store::{BlobStore, StoreError};

/// Blobs up to this size go in one `PUT`.
pub const DEFAULT_MONOLITHIC_LIMIT: u64 = 8 << 20;
/// The size of each `PATCH` of a chunked upload. Measured on loopback with a 120 MB
/// layer (gzip on two cores, median of three): 4 MiB 1.50 s, 8 MiB 1.21 s, 16 MiB
/// 1.27 s, 32 MiB 1.23 s, 64 MiB 1.42 s. 8 MiB is as fast as larger chunks and loses
/// half as much as 16 MiB when a connection breaks.
pub const DEFAULT_CHUNK_SIZE: u64 = 8 << 20;
/// The smallest chunk: after a request breaks with nothing accepted, the chunk size
/// is halved down to this (the reference registry keeps nothing of a broken `PATCH`,
/// so only a chunk that fits between two breaks is progress), and doubled back after
/// each accepted one.
pub const MIN_CHUNK_SIZE: u64 = 256 << 10;
/// How often byte progress is reported while a request body is being sent.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// Reads from a blob file into a request body.
const READ_SIZE: usize = 128 << 10;
/// Octet-stream, the content type of upload data.
const OCTET_STREAM: &str = "application/octet-stream";

/// How [`RegistryClient::push_image`] pushes.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Blobs uploaded at the same time.
    pub jobs: usize,
    /// Blobs up to this size are uploaded in one request; larger ones in chunks.
    pub monolithic_limit: u64,
    /// Size of each chunk of a chunked upload.
    pub chunk_size: u64,
    /// Tags to set besides the reference's own (same repository).
    pub extra_tags: Vec<String>,
    /// Mount blobs known to be in another repository of the same registry.
    pub cross_repository_mount: bool,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            jobs: 4,
            monolithic_limit: DEFAULT_MONOLITHIC_LIMIT,
            chunk_size: DEFAULT_CHUNK_SIZE,
            extra_tags: Vec::new(),
            cross_repository_mount: true,
        }
    }
}

/// What happens to each blob and manifest during a push, for progress displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// The repository has the blob already.
    Skipped { digest: Digest, size: u64 },
    /// The blob was mounted from another repository (`from`, a repository path).
    Mounted { digest: Digest, size: u64, from: String },
    /// Bytes of the blob sent so far: while a request body goes out, and as each chunk
    /// is accepted (may go back after a restart).
    Progress { digest: Digest, sent: u64, total: u64 },
    /// The registry has the whole blob, verified against its digest.
    Uploaded { digest: Digest, size: u64 },
    /// An upload request failed; after `retry_in` the upload goes on from `resume_at`
    /// (0: started over), in chunks of `chunk` bytes.
    Interrupted { digest: Digest, resume_at: u64, restarted: bool, reason: String, retry_in: Duration, chunk: u64 },
    /// A manifest or index was stored under `reference` (`registry/repo:tag` or `@digest`).
    ManifestPushed { digest: Digest, reference: String },
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    pub reference: Reference,
    /// The manifest or index pushed (what the tags now point at).
    pub descriptor: Descriptor,
    /// The tags set, in order.
    pub tags: Vec<String>,
    /// Blobs the repository had already (only a `HEAD` each).
    pub blobs_skipped: usize,
    /// Blobs mounted from another repository of the registry.
    pub blobs_mounted: usize,
    /// Blobs uploaded.
    pub blobs_uploaded: usize,
    /// Blob bytes sent, counting any sent again after an interruption.
    pub bytes_uploaded: u64,
    /// Manifest `PUT`s (each manifest of an index, then the root under every tag).
    pub manifests_pushed: usize,
    /// Interrupted uploads continued in the same session from the registry's offset.
    pub resumed: usize,
    /// Interrupted uploads started over in a new session.
    pub restarted: usize,
}

/// A manifest or index to `PUT`, with its exact bytes.
struct PlannedManifest {
    digest: Digest,
    media_type: String,
    bytes: Bytes,
}

/// Everything a push sends, in order: blobs, then manifests (children before parents;
/// the root last).
#[derive(Default)]
struct Plan {
    blobs: Vec<Descriptor>,
    manifests: Vec<PlannedManifest>,
}

/// How one blob got to the registry.
enum BlobOutcome {
    Skipped,
    Mounted,
    Uploaded { sent: u64, resumed: usize, restarted: usize },
}

/// What a `POST` to the uploads endpoint gave.
enum Started {
    Mounted,
    Session(String),
}

/// One upload request's result.
struct Attempt {
    outcome: StepOutcome,
    /// Body bytes handed to the connection.
    sent: u64,
}

enum StepOutcome {
    /// The registry accepted a chunk: continue at `offset` with `location`.
    Accepted { location: String, offset: u64 },
    /// The blob is complete.
    Complete,
    /// The request failed in a way worth recovering from (with the server's
    /// `Retry-After`, if it said one).
    Failed(String, Option<Duration>),
}

impl RegistryClient {
    /// Push the image `root` describes (a manifest, or an index whose manifests are all in
    /// `store`) from `store` to `reference`'s repository, and tag it with the reference's
    /// tag and [`PushOptions::extra_tags`] (by digest only, when the reference has no tag).
    /// `progress` hears about every blob and manifest.
    pub async fn push_image(
        &self,
        reference: &Reference,
        root: &Descriptor,
        store: &BlobStore,
        opts: &PushOptions,
        progress: impl Fn(PushEvent) + Send + Sync,
    ) -> Result<PushReport, RegistryError> {
        let op = Operation::on("push", reference);
        if let Some(pinned) = &reference.digest {
            if *pinned != root.digest {
                return Err(RegistryError::Unpushable {
                    op,
                    reason: format!("the reference pins {pinned} but the image is {}", root.digest),
                });
            }
        }
        let mut tags: Vec<String> = Vec::new();
        for t in reference.tag.iter().chain(&opts.extra_tags) {
            reference.with_tag(t).map_err(|e| RegistryError::Unpushable { op: op.clone(), reason: e.to_string() })?;
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        let plan = plan(&op, store, root)?;
        tracing::debug!(%reference, blobs = plan.blobs.len(), manifests = plan.manifests.len(), "push planned");

        let pusher = Pusher {
            client: self,
            transport: self.transport(),
            op: op.clone(),
            r: reference,
            scope: Scope::pull_push(&reference.repository),
            store,
            opts,
            progress: &progress,
        };
        let mut report = PushReport {
            reference: reference.clone(),
            descriptor: root.clone(),
            tags: tags.clone(),
            blobs_skipped: 0,
            blobs_mounted: 0,
            blobs_uploaded: 0,
            bytes_uploaded: 0,
            manifests_pushed: 0,
            resumed: 0,
            restarted: 0,
        };
        let mut tally = |o: BlobOutcome| match o {
            BlobOutcome::Skipped => report.blobs_skipped += 1,
            BlobOutcome::Mounted => report.blobs_mounted += 1,
            BlobOutcome::Uploaded { sent, resumed, restarted } => {
                report.blobs_uploaded += 1;
                report.bytes_uploaded += sent;
                report.resumed += resumed;
                report.restarted += restarted;
            }
        };

        // The first blob alone: its HEAD is the first request, so bad credentials fail
        // once, before anything is uploaded.
        if let Some((first, rest)) = plan.blobs.split_first() {
            tally(pusher.push_blob(first).await?);
            let outcomes: Vec<BlobOutcome> = futures::stream::iter(rest)
                .map(|b| pusher.push_blob(b))
                .buffer_unordered(opts.jobs.max(1))
                .try_collect()
                .await?;
            outcomes.into_iter().for_each(&mut tally);
        }
        for b in &plan.blobs {
            record_source(store, reference, &b.digest);
        }

        let (root_manifest, children) = plan.manifests.split_last().expect("a plan has its root manifest");
        for m in children {
            pusher.put_manifest(m, &m.digest.to_string()).await?;
            report.manifests_pushed += 1;
        }
        if tags.is_empty() {
            pusher.put_manifest(root_manifest, &root_manifest.digest.to_string()).await?;
            report.manifests_pushed += 1;
        }
        for t in &tags {
            pusher.put_manifest(root_manifest, t).await?;
            report.manifests_pushed += 1;
        }
        Ok(report)
    }

    /// Push one blob of the store to `reference`'s repository — found there, mounted or
    /// uploaded — ahead of the manifest that will name it: a build pushes each layer as
    /// soon as it is written, while later steps run.
    pub async fn push_blob(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        store: &BlobStore,
        opts: &PushOptions,
    ) -> Result<(), RegistryError> {
        let quiet = |_: PushEvent| {};
        let pusher = Pusher {
            client: self,
            transport: self.transport(),
            op: Operation::on("push", reference),
            r: reference,
            scope: Scope::pull_push(&reference.repository),
            store,
            opts,
            progress: &quiet,
        };
        pusher.push_blob(desc).await?;
        record_source(store, reference, &desc.digest);
        Ok(())
    }
}

/// Walk the manifests from `root`, checking that everything is in the store.
fn plan(op: &Operation, store: &BlobStore, root: &Descriptor) -> Result<Plan, RegistryError> {
    let mut plan = Plan::default();
    let mut seen_blobs = HashSet::new();
    visit(op, store, root, None, 0, &mut plan, &mut seen_blobs)?;
    Ok(plan)
}

fn visit(
    op: &Operation,
    store: &BlobStore,
    desc: &Descriptor,
    parent: Option<&Digest>,
    depth: usize,
    plan: &mut Plan,
    seen_blobs: &mut HashSet<Digest>,
) -> Result<(), RegistryError> {
    let unpushable = |reason: String| RegistryError::Unpushable { op: op.clone(), reason };
    if depth > 3 {
        return Err(unpushable("indexes nested more than 3 deep".into()));
    }
    if plan.manifests.iter().any(|m| m.digest == desc.digest) {
        return Ok(());
    }
    let size = match store.size(&desc.digest) {
        Ok(s) => s,
        Err(StoreError::Missing(d)) => {
            return Err(match parent {
                Some(index) => unpushable(format!(
                    "index {index} lists manifest {d}{} which is not in the local store (only the platforms \
                     pulled or built are); push one platform's manifest, or bring the others in first",
                    desc.platform.as_ref().map(|p| format!(" ({p})")).unwrap_or_default()
                )),
                None => RegistryError::Store { op: op.clone(), source: StoreError::Missing(d) },
            })
        }
        Err(source) => return Err(RegistryError::Store { op: op.clone(), source }),
    };
    if size > MAX_MANIFEST_BYTES {
        return Err(unpushable(format!("manifest {} is larger than the {MAX_MANIFEST_BYTES}-byte limit", desc.digest)));
    }
    let bytes = store.read_blob(&desc.digest).map_err(|source| RegistryError::Store { op: op.clone(), source })?;
    let actual = Digest::of_bytes(&bytes);
    if actual != desc.digest {
        return Err(RegistryError::Store {
            op: op.clone(),
            source: StoreError::DigestMismatch { expected: desc.digest.clone(), actual, size: bytes.len() as u64 },
        });
    }
    if desc.size != bytes.len() as u64 {
        return Err(unpushable(format!(
            "manifest {} has {} bytes but its descriptor says {}",
            desc.digest,
            bytes.len(),
            desc.size
        )));
    }
    let (media_type, doc) = parse_document(Some(&desc.media_type), &bytes).map_err(|e| {
        unpushable(match e {
            DocumentError::Unsupported { media_type, hint } => {
                format!("manifest {} has the unsupported media type {media_type:?}{hint}", desc.digest)
            }
            DocumentError::Invalid(reason) => format!("manifest {}: {reason}", desc.digest),
        })
    })?;
    match doc {
        ManifestDocument::Index(index) => {
            for m in &index.manifests {
                visit(op, store, m, Some(&desc.digest), depth + 1, plan, seen_blobs)?;
            }
        }
        ManifestDocument::Manifest(m) => {
            for b in std::iter::once(&m.config).chain(&m.layers) {
                if !seen_blobs.insert(b.digest.clone()) {
                    continue;
                }
                match store.size(&b.digest) {
                    Ok(s) if s == b.size => {}
                    Ok(s) => {
                        return Err(unpushable(format!(
                            "blob {} of manifest {} has {s} bytes in the store but the manifest says {}",
                            b.digest, desc.digest, b.size
                        )))
                    }
                    // Known to be in a registry repository: found, mounted or fetched there.
                    Err(StoreError::Missing(_)) if !store.sources(&b.digest).is_empty() => {}
                    Err(StoreError::Missing(d)) => {
                        return Err(unpushable(format!(
                            "blob {d} of manifest {} is not in the local store",
                            desc.digest
                        )))
                    }
                    Err(source) => return Err(RegistryError::Store { op: op.clone(), source }),
                }
                plan.blobs.push(b.clone());
            }
        }
    }
    plan.manifests.push(PlannedManifest { digest: desc.digest.clone(), media_type, bytes: Bytes::from(bytes) });
    Ok(())
}

/// One push in progress: the repository, its scope and the caller's options.
struct Pusher<'a> {
    client: &'a RegistryClient,
    transport: &'a Transport,
    op: Operation,
    r: &'a Reference,
    scope: Scope,
    store: &'a BlobStore,
    opts: &'a PushOptions,
    progress: &'a (dyn Fn(PushEvent) + Send + Sync),
}

impl Pusher<'_> {
    async fn send(&self, req: &RegistryRequest) -> Result<reqwest::Response, RegistryError> {
        self.transport.send(&self.op, &self.r.registry, &self.scope, req).await
    }

    fn unexpected(&self, method: &str, path: &str, status: StatusCode, detail: String) -> RegistryError {
        RegistryError::UnexpectedStatus {
            op: self.op.clone(),
            registry: self.r.registry.clone(),
            method: method.into(),
            path: path.into(),
            status: status_text(status),
            detail: if detail.is_empty() { detail } else { format!(": {detail}") },
        }
    }

    /// Skip, mount or upload one blob; the client then knows the repository has it.
    async fn push_blob(&self, desc: &Descriptor) -> Result<BlobOutcome, RegistryError> {
        let outcome = self.place_blob(desc).await?;
        self.client.remember_present(self.r, &desc.digest);
        Ok(outcome)
    }

    async fn place_blob(&self, desc: &Descriptor) -> Result<BlobOutcome, RegistryError> {
        // Pushed (or found) by this process already, e.g. while the build ran.
        if self.client.known_present(self.r, &desc.digest) || self.blob_exists(&desc.digest).await? {
            (self.progress)(PushEvent::Skipped { digest: desc.digest.clone(), size: desc.size });
            return Ok(BlobOutcome::Skipped);
        }
        let mut session = None;
        if let Some(from) = self.mount_source(&desc.digest) {
            match self.start_upload(Some((&desc.digest, &from))).await {
                Ok(Started::Mounted) => {
                    tracing::debug!(digest = %desc.digest, %from, "blob mounted");
                    (self.progress)(PushEvent::Mounted { digest: desc.digest.clone(), size: desc.size, from });
                    return Ok(BlobOutcome::Mounted);
                }
                Ok(Started::Session(location)) => {
                    tracing::debug!(digest = %desc.digest, %from, "mount not done by the registry; uploading");
                    session = Some(location);
                }
                // No read access to the other repository: upload instead.
                Err(e) if e.is_auth() => tracing::debug!(digest = %desc.digest, %from, "mount refused: {e}"),
                Err(e) => return Err(e),
            }
        }
        if !self.store.contains(&desc.digest) {
            self.fetch_from_source(desc).await?;
        }
        self.upload(desc, session).await
    }

    /// Download a blob the store only knows of from a repository that has it.
    async fn fetch_from_source(&self, desc: &Descriptor) -> Result<(), RegistryError> {
        let mut last = None;
        for source in self.store.sources(&desc.digest).into_iter().rev() {
            let Ok(from) = Reference::parse(&format!("{source}:latest")) else { continue };
            match self.client.fetch_blob(&from, desc, self.store).await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Unpushable {
            op: self.op.clone(),
            reason: format!("blob {} is not in the local store, nor in a repository known to hold it", desc.digest),
        }))
    }

    /// The most recently recorded other repository of this registry holding `digest`.
    fn mount_source(&self, digest: &Digest) -> Option<String> {
        if !self.opts.cross_repository_mount {
            return None;
        }
        self.store
            .sources(digest)
            .into_iter()
            .rev()
            .filter_map(|s| s.split_once('/').map(|(reg, repo)| (reg.to_string(), repo.to_string())))
            .find(|(reg, repo)| *reg == self.r.registry && *repo != self.r.repository)
            .map(|(_, repo)| repo)
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`: does the repository have it?
    async fn blob_exists(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let path = format!("/v2/{}/blobs/{digest}", self.r.repository);
        let resp = self.send(&RegistryRequest::head(path.clone())).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.unexpected("HEAD", &path, s, String::new())),
        }
    }

    /// `POST /v2/<repo>/blobs/uploads/`, with a mount request if `mount` is given.
    async fn start_upload(&self, mount: Option<(&Digest, &str)>) -> Result<Started, RegistryError> {
        let mut path = format!("/v2/{}/blobs/uploads/", self.r.repository);
        if let Some((digest, from)) = mount {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("mount", &digest.to_string())
                .append_pair("from", from)
                .finish();
            path = format!("{path}?{query}");
        }
        let req = RegistryRequest::new(Method::POST, path.clone()).header(CONTENT_LENGTH, "0");
        let resp = self.send(&req).await?;
        match resp.status() {
            StatusCode::CREATED if mount.is_some() => Ok(Started::Mounted),
            StatusCode::ACCEPTED => Ok(Started::Session(self.location(resp.headers(), None).await?)),
            s => {
                let detail = error_detail(resp).await;
                Err(self.unexpected("POST", &path, s, detail))
            }
        }
    }

    /// A new upload session.
    async fn new_session(&self) -> Result<String, RegistryError> {
        match self.start_upload(None).await? {
            Started::Session(location) => Ok(location),
            Started::Mounted => unreachable!("no mount was asked for"),
        }
    }

    /// The absolute upload URL a `Location` header names (relative ones are resolved
    /// against the registry's base URL); `fallback` when there is none.
    async fn location(&self, headers: &HeaderMap, fallback: Option<&str>) -> Result<String, RegistryError> {
        let stated = headers.get(LOCATION).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
        let Some(stated) = stated else {
            return fallback.map(str::to_string).ok_or_else(|| RegistryError::InvalidContent {
                op: self.op.clone(),
                registry: self.r.registry.clone(),
                what: "upload answer".into(),
                reason: "no Location header".into(),
            });
        };
        let base = self.transport.base_url(&self.op, &self.r.registry).await?;
        let joined = url::Url::parse(&format!("{base}/")).and_then(|b| b.join(stated)).map_err(|e| {
            RegistryError::InvalidContent {
                op: self.op.clone(),
                registry: self.r.registry.clone(),
                what: "upload answer".into(),
                reason: format!("unusable Location {stated:?}: {e}"),
            }
        })?;
        Ok(joined.to_string())
    }

    /// Upload a blob, in `session` if one is open already.
    ///
    /// A failed request is never resent blindly: the registry is asked how much it holds
    /// and the upload goes on from there, on a fresh connection, after a backoff (the
    /// server's `Retry-After` when it gave one). A blob that breaks with nothing accepted
    /// is sent in smaller chunks. The budget counts failures in a row that made no
    /// progress at the smallest chunk size: an upload that moves keeps going.
    async fn upload(&self, desc: &Descriptor, session: Option<String>) -> Result<BlobOutcome, RegistryError> {
        let size = desc.size;
        let mut chunked = size > self.opts.monolithic_limit;
        let full_chunk = self.opts.chunk_size.max(1);
        let mut chunk = full_chunk;
        let max = self.transport.max_attempts();
        let mut location = match session {
            Some(l) => l,
            None => self.new_session().await?,
        };
        let mut offset = 0u64;
        let (mut sent, mut resumed, mut restarted) = (0u64, 0usize, 0usize);
        let (mut failures, mut without_progress) = (0u32, 0u32);
        loop {
            let before = offset;
            let attempt = if chunked && offset < size {
                self.patch(desc, &location, offset, chunk.min(size - offset)).await?
            } else {
                self.put_blob(desc, &location, offset).await?
            };
            sent += attempt.sent;
            let (reason, asked) = match attempt.outcome {
                StepOutcome::Accepted { location: l, offset: o } => {
                    location = l;
                    offset = o;
                    if offset > before {
                        without_progress = 0;
                        chunk = (chunk * 2).min(full_chunk);
                    }
                    (self.progress)(PushEvent::Progress { digest: desc.digest.clone(), sent: o, total: size });
                    continue;
                }
                StepOutcome::Complete => break,
                StepOutcome::Failed(reason, asked) => (reason, asked),
            };
            failures += 1;
            // Smaller chunks first; only failures at the smallest size use up the budget.
            let this_chunk = if chunked { chunk.min(size - offset) } else { size - offset };
            if this_chunk > MIN_CHUNK_SIZE {
                chunked = true;
                chunk = (this_chunk / 2).max(MIN_CHUNK_SIZE);
            } else {
                without_progress += 1;
            }
            if without_progress >= max || failures >= max.saturating_mul(16) {
                return Err(RegistryError::UploadInterrupted {
                    op: self.op.clone(),
                    registry: self.r.registry.clone(),
                    digest: desc.digest.clone(),
                    attempts: failures,
                    accepted: offset,
                    size,
                    reason,
                });
            }
            let delay = self.transport.backoff_delay(without_progress, asked);
            tracing::info!(digest = %desc.digest, offset, size, chunk, ?delay, "upload interrupted ({reason}); recovering");
            tokio::time::sleep(delay).await;
            match self.upload_status(&location).await {
                Some((l, o)) if o <= size => {
                    tracing::debug!(digest = %desc.digest, from = o, "continuing the upload session");
                    location = l;
                    offset = o;
                    resumed += 1;
                    let event = PushEvent::Interrupted {
                        digest: desc.digest.clone(),
                        resume_at: o,
                        restarted: false,
                        reason,
                        retry_in: delay,
                        chunk,
                    };
                    (self.progress)(event);
                }
                _ => {
                    if self.blob_exists(&desc.digest).await? {
                        // The registry completed it; only the answer was lost.
                        break;
                    }
                    tracing::debug!(digest = %desc.digest, "upload session lost; starting over");
                    location = self.new_session().await?;
                    offset = 0;
                    restarted += 1;
                    let event = PushEvent::Interrupted {
                        digest: desc.digest.clone(),
                        resume_at: 0,
                        restarted: true,
                        reason,
                        retry_in: delay,
                        chunk,
                    };
                    (self.progress)(event);
                }
            }
        }
        (self.progress)(PushEvent::Uploaded { digest: desc.digest.clone(), size });
        Ok(BlobOutcome::Uploaded { sent, resumed, restarted })
    }

    /// `PATCH` bytes `offset..offset+len` of the blob into the session.
    async fn patch(&self, desc: &Descriptor, location: &str, offset: u64, len: u64) -> Result<Attempt, RegistryError> {
        let counter = Arc::new(AtomicU64::new(0));
        let mut req = RegistryRequest::new(Method::PATCH, String::new());
        req.target = Target::Url(location.to_string());
        req = req
            .header(CONTENT_TYPE, OCTET_STREAM)
            .header(CONTENT_LENGTH, &len.to_string())
            .header(CONTENT_RANGE, &format!("{offset}-{}", offset + len - 1));
        req.body = Some(file_body(self.store.path(&desc.digest), offset, len, counter.clone()));
        req.retry_on_status = false;
        req.retry_on_connection_error = false;
        let resp = self.send_with_progress(&req, desc, offset, &counter).await;
        let sent = counter.load(Ordering::SeqCst);
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return recoverable(e).map(|reason| Attempt { outcome: StepOutcome::Failed(reason, None), sent }),
        };
        let status = resp.status();
        if status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT {
            let next = self.location(resp.headers(), Some(location)).await?;
            let expected = offset + len;
            let acked = range_end(resp.headers()).map(|e| e + 1).unwrap_or(expected);
            if acked > desc.size {
                let reason = format!("the registry reports {acked} bytes of a {}-byte blob", desc.size);
                return Ok(Attempt { outcome: StepOutcome::Failed(reason, None), sent });
            }
            if acked != expected {
                tracing::debug!(digest = %desc.digest, acked, expected, "the registry kept another amount");
            }
            return Ok(Attempt { outcome: StepOutcome::Accepted { location: next, offset: acked }, sent });
        }
        let outcome = self.failed_upload_status("PATCH", location, resp).await?;
        Ok(Attempt { outcome, sent })
    }

    /// `PUT ?digest=` with the rest of the blob (from `offset`; nothing when it is all
    /// there), closing the session.
    async fn put_blob(&self, desc: &Descriptor, location: &str, offset: u64) -> Result<Attempt, RegistryError> {
        let mut url = url::Url::parse(location).map_err(|e| RegistryError::InvalidContent {
            op: self.op.clone(),
            registry: self.r.registry.clone(),
            what: "upload answer".into(),
            reason: format!("unusable Location {location:?}: {e}"),
        })?;
        url.query_pairs_mut().append_pair("digest", &desc.digest.to_string());
        let len = desc.size.saturating_sub(offset);
        let counter = Arc::new(AtomicU64::new(0));
        let mut req = RegistryRequest::new(Method::PUT, String::new());
        req.target = Target::Url(url.to_string());
        req = req.header(CONTENT_TYPE, OCTET_STREAM).header(CONTENT_LENGTH, &len.to_string());
        if len > 0 {
            req.body = Some(file_body(self.store.path(&desc.digest), offset, len, counter.clone()));
        }
        req.retry_on_status = false;
        req.retry_on_connection_error = false;
        let resp = self.send_with_progress(&req, desc, offset, &counter).await;
        let sent = counter.load(Ordering::SeqCst);
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return recoverable(e).map(|reason| Attempt { outcome: StepOutcome::Failed(reason, None), sent }),
        };
        let status = resp.status();
        if status == StatusCode::CREATED || status == StatusCode::NO_CONTENT || status == StatusCode::OK {
            if let Some(stated) = stated_digest(resp.headers()) {
                if stated != desc.digest {
                    return Err(RegistryError::DigestMismatch {
                        op: self.op.clone(),
                        registry: self.r.registry.clone(),
                        what: format!("uploaded blob {}", desc.digest),
                        expected: desc.digest.clone(),
                        actual: stated,
                    });
                }
            }
            return Ok(Attempt { outcome: StepOutcome::Complete, sent });
        }
        let outcome = self.failed_upload_status("PUT", location, resp).await?;
        Ok(Attempt { outcome, sent })
    }

    /// A failed upload request: worth recovering from (5xx, 429, a rejected or lost
    /// session, a range or digest the registry disputes), or an error.
    async fn failed_upload_status(
        &self,
        method: &str,
        location: &str,
        resp: reqwest::Response,
    ) -> Result<StepOutcome, RegistryError> {
        let status = resp.status();
        let asked = super::transport::retry_after(resp.headers());
        let detail = error_detail(resp).await;
        let recoverable = self.transport.retryable_status(status)
            || status == StatusCode::RANGE_NOT_SATISFIABLE
            || status == StatusCode::NOT_FOUND
            || (status == StatusCode::BAD_REQUEST
                && (detail.contains("BLOB_UPLOAD_INVALID") || detail.contains("DIGEST_INVALID")));
        if recoverable {
            let mut reason = format!("{method} answered {}", status_text(status));
            if !detail.is_empty() {
                reason.push_str(&format!(": {detail}"));
            }
            return Ok(StepOutcome::Failed(reason, asked));
        }
        let path = url::Url::parse(location).map(|u| u.path().to_string()).unwrap_or_else(|_| location.to_string());
        Err(self.unexpected(method, &path, status, detail))
    }

    /// Ask the session how much it holds (`GET` on the upload URL): its new URL and the
    /// offset to continue from, or `None` when the session is gone or unusable.
    async fn upload_status(&self, location: &str) -> Option<(String, u64)> {
        let mut req = RegistryRequest::get(String::new());
        req.target = Target::Url(location.to_string());
        let resp = match self.send(&req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("upload status: {e}");
                return None;
            }
        };
        if resp.status() != StatusCode::NO_CONTENT && resp.status() != StatusCode::OK {
            let status = resp.status();
            let detail = error_detail(resp).await;
            tracing::debug!(%status, %detail, "upload session unusable");
            return None;
        }
        let offset = range_end(resp.headers()).map(|e| if e == 0 { 0 } else { e + 1 }).unwrap_or(0);
        let next = self.location(resp.headers(), Some(location)).await.ok()?;
        Some((next, offset))
    }

    /// Send an upload request, reporting byte progress while its body goes out.
    async fn send_with_progress(
        &self,
        req: &RegistryRequest,
        desc: &Descriptor,
        base: u64,
        counter: &AtomicU64,
    ) -> Result<reqwest::Response, RegistryError> {
        let fut = self.send(req);
        tokio::pin!(fut);
        let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate: nothing is sent yet
        let mut last = None;
        loop {
            tokio::select! {
                r = &mut fut => return r,
                _ = tick.tick() => {
                    let sent = base + counter.load(Ordering::SeqCst);
                    if last != Some(sent) {
                        last = Some(sent);
                        (self.progress)(PushEvent::Progress { digest: desc.digest.clone(), sent, total: desc.size });
                    }
                }
            }
        }
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with the exact stored bytes.
    async fn put_manifest(&self, m: &PlannedManifest, reference: &str) -> Result<(), RegistryError> {
        let path = format!("/v2/{}/manifests/{reference}", self.r.repository);
        let bytes = m.bytes.clone();
        let mut req = RegistryRequest::new(Method::PUT, path.clone())
            .header(CONTENT_TYPE, &m.media_type)
            .header(CONTENT_LENGTH, &bytes.len().to_string());
        req.body = Some(Arc::new(move || reqwest::Body::from(bytes.clone())));
        let resp = self.send(&req).await?;
        let status = resp.status();
        if !status.is_success() {
            let detail = error_detail(resp).await;
            return Err(self.unexpected("PUT", &path, status, detail));
        }
        if let Some(stated) = stated_digest(resp.headers()) {
            if stated != m.digest {
                return Err(RegistryError::DigestMismatch {
                    op: self.op.clone(),
                    registry: self.r.registry.clone(),
                    what: format!("stored manifest {reference}"),
                    expected: m.digest.clone(),
                    actual: stated,
                });
            }
        }
        let shown = if reference.starts_with("sha256:") {
            format!("{}@{reference}", self.r.name())
        } else {
            format!("{}:{reference}", self.r.name())
        };
        tracing::debug!(digest = %m.digest, reference = %shown, "manifest pushed");
        (self.progress)(PushEvent::ManifestPushed { digest: m.digest.clone(), reference: shown });
        Ok(())
    }
}

/// A transport failure an upload recovers from (the connection broke), as a reason;
/// anything else (TLS, authentication…) stays an error.
fn recoverable(e: RegistryError) -> Result<String, RegistryError> {
    match e {
        RegistryError::Connect { reason, .. } => Ok(reason),
        other => Err(other),
    }
}

/// `CODE: message; …` of a registry error body.
async fn error_detail(resp: reqwest::Response) -> String {
    registry_error_codes(resp).await.iter().map(|(c, m)| format!("{c}: {m}")).collect::<Vec<_>>().join("; ")
}

fn stated_digest(headers: &HeaderMap) -> Option<Digest> {
    headers.get("docker-content-digest").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
}

/// The last byte of a `Range: 0-N` (or `bytes=0-N`) upload answer.
fn range_end(headers: &HeaderMap) -> Option<u64> {
    parse_range_end(headers.get(RANGE)?)
}

fn parse_range_end(v: &HeaderValue) -> Option<u64> {
    let v = v.to_str().ok()?.trim();
    let v = v.strip_prefix("bytes=").unwrap_or(v);
    let (start, end) = v.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    end.trim().parse().ok()
}

/// A body factory streaming bytes `offset..offset+len` of a blob file, counting what it
/// hands out in `counter` (reset for each attempt).
fn file_body(path: PathBuf, offset: u64, len: u64, counter: Arc<AtomicU64>) -> BodyFactory {
    Arc::new(move || {
        counter.store(0, Ordering::SeqCst);
        let state = FileRange { path: path.clone(), file: None, offset, remaining: len, counter: counter.clone() };
        reqwest::Body::wrap_stream(futures::stream::try_unfold(state, next_piece))
    })
}

struct FileRange {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    offset: u64,
    remaining: u64,
    counter: Arc<AtomicU64>,
}

async fn next_piece(mut st: FileRange) -> std::io::Result<Option<(Bytes, FileRange)>> {
    if st.remaining == 0 {
        return Ok(None);
    }
    let file = match st.file.as_mut() {
        Some(f) => f,
        None => {
            let mut f = tokio::fs::File::open(&st.path).await?;
            f.seek(SeekFrom::Start(st.offset)).await?;
            st.file.insert(f)
        }
    };
    let mut buf = vec![0u8; st.remaining.min(READ_SIZE as u64) as usize];
    let n = file.read(&mut buf).await?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{} ended {} bytes early", st.path.display(), st.remaining),
        ));
    }
    buf.truncate(n);
    st.remaining -= n as u64;
    st.counter.fetch_add(n as u64, Ordering::SeqCst);
    Ok(Some((Bytes::from(buf), st)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(parse_range_end(&h("0-1023")), Some(1023));
        assert_eq!(parse_range_end(&h("bytes=0-99")), Some(99));
        assert_eq!(parse_range_end(&h("0-0")), Some(0));
        assert_eq!(parse_range_end(&h("5-9")), None);
        assert_eq!(parse_range_end(&h("nonsense")), None);
    }
}
