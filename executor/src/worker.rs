//! The local worker: strata-solver's [`Worker`] on this machine — image layers unpacked
//! into snapshots, RUN in runc over an overlay, COPY/ADD and other file ops into an
//! overlay's upper dir, which then becomes the step's layer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use strata_oci::digest::Digest;
use strata_oci::image::{ImageConfig, Manifest};
use strata_oci::store::BlobStore;
use strata_solver::graph::{CopyOp, ExecOp, Mount, NetworkMode, Node, NodeId, Op};
use strata_solver::progress::ProgressEvent;
use strata_solver::worker::{LayerId, Output, Solved, StepContext, Worker, WorkerError};

use crate::context::{selection, ExcludeFn, LocalContext, SelectedFile, StatCache};
use crate::root::{DirSpec, Root};
use crate::sandbox::{ExtraMount, Runc, SandboxSpec};
use crate::snapshot::{Snapshots, Snapshotter, StepRoot, WorkDir};

/// Builds an exclusion predicate from patterns (`--exclude`), .dockerignore style.
pub type PatternFactory = Arc<dyn Fn(&[String]) -> Result<ExcludeFn, String> + Send + Sync>;

/// Where a secret's value comes from (`--secret id=..,src=FILE|env=VAR`).
#[derive(Debug, Clone)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// What the local worker needs to know.
pub struct WorkerConfig {
    pub root: PathBuf,
    pub runc: Runc,
    pub contexts: HashMap<String, LocalContext>,
    pub secrets: HashMap<String, SecretSource>,
    /// ssh id → agent socket path.
    pub ssh: HashMap<String, PathBuf>,
    pub patterns: PatternFactory,
    pub hostname: String,
    /// Layers known only by their blobs (an imported cache): unpacked into snapshots
    /// when a step runs on them.
    pub remote_layers: HashMap<LayerId, LayerSource>,
    /// Cache mount directories (by their name under `ROOT/cache-mounts`) to fill from a
    /// layer blob before first use (`--cache-from` with mounts).
    pub mount_seeds: HashMap<String, LayerSource>,
    /// Brings a blob the store lacks into it (verified), from where the build knows it
    /// lives; `None`: nothing can be fetched.
    pub fetcher: Option<BlobFetcher>,
}

/// Fetches one blob into the store, verified against its digest.
pub type BlobFetcher = Arc<dyn Fn(strata_oci::image::Descriptor) -> FetchFuture + Send + Sync>;

/// What a [`BlobFetcher`] returns.
pub type FetchFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

pub struct LocalWorker {
    cfg: WorkerConfig,
    store: BlobStore,
    snapshots: Snapshots,
    stat_caches: Mutex<HashMap<String, Arc<StatCache>>>,
    unpack_lock: tokio::sync::Mutex<()>,
    layer_hook: std::sync::OnceLock<LayerHook>,
    /// The cache mounts steps used: directory name → the mount's id.
    used_mounts: Mutex<std::collections::BTreeMap<String, String>>,
    /// What each content key hashed (the files COPYs and bind mounts selected), for
    /// the build's record: content key → the selected entries.
    selections: Mutex<HashMap<[u8; 32], Arc<Vec<SelectedFile>>>>,
}

/// A cache mount a step of this build used.
#[derive(Debug, Clone)]
pub struct UsedCacheMount {
    /// Its `id=` (the target when none was given).
    pub id: String,
    /// Its directory's name under `ROOT/cache-mounts` (the same on every machine).
    pub name: String,
    pub dir: PathBuf,
}

/// Told of each snapshot a step commits (the step, its new layer), as soon as it is
/// committed: the build uses it to write image layers while later steps run.
pub type LayerHook = Arc<dyn Fn(&NodeId, &LayerId) + Send + Sync>;

/// The snapshot id of a layer unpacked from a blob: `i` and its diff_id, the same on
/// every machine (an image's layer and the same layer from an imported cache are one).
pub fn blob_layer_id(diff_id: &Digest) -> LayerId {
    LayerId(format!("i{}", &diff_id.hex()[..31]))
}

/// The side file of a COPY's snapshot that records the sources of its files.
const COPY_SOURCES: &str = "copy-sources";

/// `ROOT/copy-lineage/<key>`: the snapshot of the latest result of a COPY (see
/// `LocalWorker::copy_lineage`); `strata prune` drops those whose snapshot is gone.
pub const COPY_LINEAGE_DIR: &str = "copy-lineage";

/// The snapshot id of a layer whose diff is empty: what an imported record names for a
/// step that changed nothing (its blob-less layer).
pub fn empty_layer_id() -> LayerId {
    LayerId("e0".into())
}

/// Remembered beside an image layer's snapshot: the blob it came from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LayerSource {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub diff_id: Digest,
}

fn werr(context: &str) -> impl Fn(std::io::Error) -> WorkerError + '_ {
    move |e| WorkerError::Other(format!("{context}: {e}"))
}

impl LocalWorker {
    pub fn new(cfg: WorkerConfig) -> Result<Self, WorkerError> {
        let store = BlobStore::open(&cfg.root).map_err(WorkerError::other)?;
        let snapshots = Snapshots::open(&cfg.root).map_err(werr("opening snapshots"))?;
        let snapshotter = Snapshotter::choose(snapshots.root()).map_err(WorkerError::Other)?;
        let snapshots = snapshots.with_snapshotter(snapshotter);
        snapshots.clean_stale();
        clean_stale_shm();
        // Start reading the contexts' stat caches now, while the build gets going.
        let stat_caches: HashMap<String, Arc<StatCache>> =
            cfg.contexts.iter().map(|(name, c)| (name.clone(), Arc::new(StatCache::load(&cfg.root, &c.dir)))).collect();
        Ok(LocalWorker {
            cfg,
            store,
            snapshots,
            stat_caches: Mutex::new(stat_caches),
            unpack_lock: tokio::sync::Mutex::new(()),
            layer_hook: std::sync::OnceLock::new(),
            used_mounts: Mutex::new(Default::default()),
            selections: Mutex::new(HashMap::new()),
        })
    }

    /// The entries a content key was computed from (see [`Worker::content_key`]).
    pub fn selected_files(&self, content_key: &[u8; 32]) -> Option<Arc<Vec<SelectedFile>>> {
        self.selections.lock().unwrap_or_else(|p| p.into_inner()).get(content_key).cloned()
    }

    /// Set the hook told of every committed step snapshot (once per worker).
    pub fn on_layer(&self, hook: LayerHook) {
        let _ = self.layer_hook.set(hook);
    }

    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// The cache mounts the steps of this build used (`--cache-to ...,mounts=true`).
    pub fn used_cache_mounts(&self) -> Vec<UsedCacheMount> {
        let used = self.used_mounts.lock().unwrap_or_else(|p| p.into_inner());
        used.iter()
            .map(|(name, id)| UsedCacheMount {
                id: id.clone(),
                name: name.clone(),
                dir: self.cfg.root.join("cache-mounts").join(name),
            })
            .collect()
    }

    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    pub fn context(&self, name: &str) -> Result<&LocalContext, WorkerError> {
        self.cfg.contexts.get(name).ok_or_else(|| WorkerError::Other(format!("unknown local context {name:?}")))
    }

    /// Every file of a local context a build can read (its `.dockerignore` applied):
    /// the digest provenance records and `strata verify` recomputes, through the same
    /// walk and stat cache as a `COPY .` key.
    pub fn context_selection(&self, name: &str) -> Result<crate::context::Selection, WorkerError> {
        let ctx = self.context(name)?.clone();
        let cache = self.stat_cache(name, &ctx.dir);
        let exclude: ExcludeFn = Arc::new(|_, _| false);
        selection(&ctx, &cache, &[".".to_string()], false, &exclude)
            .map_err(|e| WorkerError::Other(format!("hashing the context: {e}")))
    }

    fn stat_cache(&self, name: &str, dir: &Path) -> Arc<StatCache> {
        let mut m = self.stat_caches.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_string()).or_insert_with(|| Arc::new(StatCache::load(&self.cfg.root, dir))).clone()
    }

    /// Persist the stat caches (call at the end of a build).
    pub fn flush(&self) {
        for c in self.stat_caches.lock().unwrap_or_else(|p| p.into_inner()).values() {
            if let Err(e) = c.save() {
                tracing::warn!("could not save the stat cache: {e}");
            }
        }
    }

    fn layer_dirs(&self, layers: &[LayerId]) -> Vec<PathBuf> {
        layers.iter().map(|l| self.snapshots.layer_dir(l)).collect()
    }

    /// A step that writes a layer: its base layers (inputs[0]), a fresh scratch area,
    /// and the overlay of the base with the scratch upper dir mounted at `work.merged()`.
    fn begin_step(&self, inputs: &[Arc<Solved>]) -> Result<(Vec<LayerId>, WorkDir, StepRoot), WorkerError> {
        let base = inputs.first().map(|s| s.output.layers().to_vec()).unwrap_or_default();
        let work = self.snapshots.new_work().map_err(werr("creating a snapshot"))?;
        let root =
            self.snapshots.step_root(&self.layer_dirs(&base), &work).map_err(werr("making the root file system"))?;
        Ok((base, work, root))
    }

    fn new_layer_id(id: &NodeId) -> LayerId {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let h = blake3::hash(format!("{id}-{nanos}-{}", std::process::id()).as_bytes());
        LayerId(format!("s{}", &h.to_hex()[..31]))
    }

    /// Mount a read-only view of a solved input; `None` for a local context.
    fn view(&self, input: &Solved, at: &Path) -> Result<Option<StepRoot>, WorkerError> {
        match &input.output {
            Output::Local(_) => Ok(None),
            Output::Layers(layers) => {
                std::fs::create_dir_all(at).map_err(werr("creating a mount point"))?;
                let g = self.snapshots.view(&self.layer_dirs(layers), at).map_err(werr("making a read-only view"))?;
                Ok(Some(g))
            }
        }
    }

    async fn run_image(&self, manifest_digest: &str, ctx: &StepContext) -> Result<Output, WorkerError> {
        let digest: Digest = manifest_digest.parse().map_err(WorkerError::other)?;
        let manifest: Manifest = serde_json::from_slice(&self.store.read_blob(&digest).map_err(WorkerError::other)?)
            .map_err(WorkerError::other)?;
        let config: ImageConfig =
            serde_json::from_slice(&self.store.read_blob(&manifest.config.digest).map_err(WorkerError::other)?)
                .map_err(WorkerError::other)?;
        let mut out = Vec::new();
        for (i, layer) in manifest.layers.iter().enumerate() {
            let diff_id = config.rootfs.diff_ids.get(i).cloned();
            let id = blob_layer_id(diff_id.as_ref().unwrap_or(&layer.digest));
            if !self.snapshots.exists(&id) {
                self.unpack_snapshot(&id, layer, diff_id, ctx).await.map_err(WorkerError::Other)?;
            }
            out.push(id);
        }
        Ok(Output::Layers(out))
    }

    /// Unpack the blob `layer` (which must be in the store) into the snapshot `id`,
    /// checking its diff_id when known, and remember where it came from.
    async fn unpack_snapshot(
        &self,
        id: &LayerId,
        layer: &strata_oci::image::Descriptor,
        diff_id: Option<Digest>,
        ctx: &StepContext,
    ) -> Result<(), String> {
        let _guard = self.unpack_lock.lock().await;
        if self.snapshots.exists(id) {
            return Ok(());
        }
        ctx.progress.send(ProgressEvent::Status {
            vertex: ctx.vertex.to_string(),
            name: ctx.name.clone(),
            message: format!("unpacking {}", layer.digest),
        });
        let work = self.snapshots.new_work().map_err(|e| format!("creating a snapshot: {e}"))?;
        let blob_path = self.store.path(&layer.digest);
        let media_type = layer.media_type.clone();
        let upper = work.upper();
        let verify = diff_id.clone();
        let stats = tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::open(&blob_path)?;
            crate::unpack::unpack_layer(
                &mut f,
                Some(&media_type),
                &upper,
                &crate::unpack::UnpackOptions {
                    // Not in a user namespace: the kernel refuses device nodes there.
                    allow_devices: rustix::process::geteuid().is_root() && !crate::userns::in_user_namespace(),
                    verify_diff_id: verify,
                },
            )
            .map_err(std::io::Error::other)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("unpacking layer {}: {e}", layer.digest))?;
        let src = LayerSource {
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
            size: layer.size,
            diff_id: stats.diff_id,
        };
        let json = serde_json::to_vec(&src).map_err(|e| e.to_string())?;
        std::fs::write(work.dir.join("source.json"), json).map_err(|e| format!("writing layer metadata: {e}"))?;
        self.snapshots.commit(work, id).map_err(|e| format!("committing a snapshot: {e}"))
    }

    /// Where the blob of layer `id` is: beside its snapshot (an unpacked blob), or in
    /// the imported cache. `None` for a layer a step made (its blob is written from
    /// its snapshot).
    pub fn layer_source(&self, id: &LayerId) -> Option<LayerSource> {
        std::fs::read(self.snapshots.meta_path(id, "source.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<LayerSource>(&b).ok())
            .or_else(|| self.cfg.remote_layers.get(id).cloned())
    }

    /// Bring the blob of `layer` into the store if it is not there.
    pub async fn ensure_blob(&self, layer: &LayerSource) -> Result<(), String> {
        if self.store.contains(&layer.digest) {
            return Ok(());
        }
        let Some(fetch) = &self.cfg.fetcher else {
            return Err(format!("blob {} is not in the store and nothing can fetch it", layer.digest));
        };
        fetch(strata_oci::image::Descriptor::new(layer.media_type.clone(), layer.digest.clone(), layer.size)).await
    }

    /// The blobs of every imported layer of `layers` in the store (an output that
    /// writes them, e.g. an OCI layout).
    pub async fn ensure_blobs(&self, layers: &[LayerId]) -> Result<(), String> {
        for id in layers {
            if self.snapshots.exists(id) {
                continue;
            }
            if let Some(remote) = self.cfg.remote_layers.get(id) {
                self.ensure_blob(remote).await?;
            }
        }
        Ok(())
    }

    async fn run_exec(
        &self,
        id: NodeId,
        exec: &ExecOp,
        inputs: &[Arc<Solved>],
        ctx: StepContext,
    ) -> Result<Output, WorkerError> {
        let (base, work, root_mount) = self.begin_step(inputs)?;
        let merged = work.merged();
        // Every path of the step's own file system is resolved inside it (crate::root).
        let fs = Root::open(&merged).map_err(werr("opening the root file system"))?;
        let user = crate::users::resolve_user(&fs, &exec.user).map_err(WorkerError::other)?;
        let cwd = if exec.cwd.is_empty() { "/".to_string() } else { exec.cwd.clone() };
        // As BuildKit's runc executor: a missing working directory is made (0755, root),
        // inside the root even when a component is a symlink.
        fs.mkdir_all(&crate::root::clean(cwd.as_bytes()), DirSpec { mode: 0o755, owner: None })
            .map_err(|e| WorkerError::Other(format!("creating the working directory: {}", e.into_io(&cwd))))?;
        let mut env = exec.env.clone();
        let mut mounts = Vec::new();
        let mut guards: Vec<StepRoot> = Vec::new();
        let mut locks: Vec<std::fs::File> = Vec::new();
        let secret_dir = PathBuf::from(format!("/dev/shm/strata-secrets-{}-{}", std::process::id(), id.short()));
        let mut cleanup_secret = false;
        for (mi, m) in exec.mounts.iter().enumerate() {
            match m {
                Mount::Bind { input, source, target, readwrite } => {
                    let solved =
                        inputs.get(*input).ok_or_else(|| WorkerError::Other("bind mount input missing".into()))?;
                    let (src_root, what) = match &solved.output {
                        Output::Local(name) => (self.context(name)?.dir.clone(), "the build context"),
                        Output::Layers(_) => {
                            let at = work.dir.join(format!("m{mi}"));
                            let g = self
                                .view(solved, &at)?
                                .ok_or_else(|| WorkerError::Other("bind mount: no view of the source".into()))?;
                            guards.push(g);
                            (at, "the source stage")
                        }
                    };
                    let mut src = mount_source(&src_root, source, what)?;
                    if *readwrite {
                        // Writes are discarded: an overlay with a throw-away upper dir.
                        let scratch = work.dir.join(format!("rw{mi}"));
                        let (at, g) =
                            self.snapshots.scratch_view(&src, &scratch).map_err(werr("making a writable bind"))?;
                        src = at;
                        guards.push(g);
                    }
                    let opts = vec!["rbind".to_string(), if *readwrite { "rw" } else { "ro" }.to_string()];
                    mounts.push(ExtraMount {
                        destination: target.clone(),
                        source: src,
                        kind: "bind".into(),
                        options: opts,
                    });
                }
                Mount::Cache { id: cid, target, sharing, readonly, mode, uid, gid, from } => {
                    // With `from`, the cache starts as a copy of that source and is its
                    // own cache (BuildKit keys it by id and the source's snapshot).
                    let seed = match from {
                        Some((input, source)) => {
                            let solved = inputs
                                .get(*input)
                                .ok_or_else(|| WorkerError::Other("cache mount source missing".into()))?;
                            Some((solved.clone(), source.clone()))
                        }
                        None => None,
                    };
                    let mut key = blake3::Hasher::new();
                    key.update(cid.as_bytes());
                    if let Some((solved, source)) = &seed {
                        key.update(b"\0from\0");
                        key.update(&solved.cache_key);
                        key.update(source.as_bytes());
                    }
                    let name = key.finalize().to_hex()[..32].to_string();
                    let dir = self.cfg.root.join("cache-mounts").join(&name);
                    self.used_mounts.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone(), cid.clone());
                    if !dir.exists() {
                        let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
                        let _ = crate::remove::remove_tree(&tmp);
                        std::fs::create_dir_all(&tmp).map_err(werr("creating a cache mount"))?;
                        if let Some((solved, source)) = &seed {
                            self.seed_cache_mount(solved, source, &tmp, &work.dir.join(format!("c{mi}"))).await?;
                        }
                        if let Some(layer) = self.cfg.mount_seeds.get(&name) {
                            // Exported by another build (`--cache-to ...,mounts=true`).
                            self.restore_cache_mount(layer, &tmp, &ctx).await?;
                        }
                        std::os::unix::fs::chown(&tmp, Some(*uid), Some(*gid))
                            .map_err(werr("chown of a cache mount"))?;
                        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(*mode))
                            .map_err(werr("chmod of a cache mount"))?;
                        if std::fs::rename(&tmp, &dir).is_err() {
                            let _ = crate::remove::remove_tree(&tmp);
                        }
                    }
                    if matches!(sharing, strata_solver::graph::CacheSharing::Locked) {
                        let f = std::fs::File::open(&dir).map_err(werr("opening a cache mount"))?;
                        let f = tokio::task::spawn_blocking(move || {
                            rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map(|_| f)
                        })
                        .await
                        .map_err(WorkerError::other)?
                        .map_err(|e| WorkerError::Other(format!("locking a cache mount: {e}")))?;
                        locks.push(f);
                    }
                    let opts = vec!["rbind".to_string(), if *readonly { "ro" } else { "rw" }.to_string()];
                    mounts.push(ExtraMount {
                        destination: target.clone(),
                        source: dir,
                        kind: "bind".into(),
                        options: opts,
                    });
                }
                Mount::Tmpfs { target, size } => {
                    let mut opts = vec!["nosuid".to_string(), "nodev".to_string()];
                    if let Some(s) = size {
                        opts.push(format!("size={s}"));
                    }
                    mounts.push(ExtraMount {
                        destination: target.clone(),
                        source: PathBuf::from("tmpfs"),
                        kind: "tmpfs".into(),
                        options: opts,
                    });
                }
                Mount::Secret { id: sid, target, env: env_name, required, mode, uid, gid } => {
                    let value = match self.cfg.secrets.get(sid) {
                        Some(SecretSource::File(p)) => Some(std::fs::read(p).map_err(|e| {
                            WorkerError::Other(format!("reading secret {sid:?} from {}: {e}", p.display()))
                        })?),
                        Some(SecretSource::Env(v)) => std::env::var_os(v).map(|v| v.into_encoded_bytes()),
                        None => None,
                    };
                    let Some(value) = value else {
                        if *required {
                            return Err(WorkerError::Other(format!(
                                "secret {sid} is required but was not provided: pass --secret id={sid},src=FILE"
                            )));
                        }
                        continue;
                    };
                    if let Some(name) = env_name {
                        env.push(format!("{name}={}", String::from_utf8_lossy(&value)));
                    }
                    if target.is_some() || env_name.is_none() {
                        let dest = target.clone().unwrap_or_else(|| format!("/run/secrets/{sid}"));
                        std::fs::create_dir_all(&secret_dir).map_err(werr("creating the secrets dir"))?;
                        cleanup_secret = true;
                        let file = secret_dir.join(format!("s{mi}"));
                        std::fs::write(&file, &value).map_err(werr("writing a secret"))?;
                        std::os::unix::fs::chown(&file, Some(*uid), Some(*gid)).map_err(werr("chown of a secret"))?;
                        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(*mode))
                            .map_err(werr("chmod of a secret"))?;
                        mounts.push(ExtraMount {
                            destination: dest,
                            source: file,
                            kind: "bind".into(),
                            options: vec!["rbind".into(), "ro".into()],
                        });
                    }
                }
                Mount::Ssh { id: sid, target, required, .. } => match self.cfg.ssh.get(sid) {
                    Some(sock) => {
                        mounts.push(ExtraMount {
                            destination: target.clone(),
                            source: sock.clone(),
                            kind: "bind".into(),
                            options: vec!["rbind".into(), "ro".into()],
                        });
                        env.push(format!("SSH_AUTH_SOCK={target}"));
                    }
                    None if *required => {
                        return Err(WorkerError::Other(format!(
                            "ssh agent {sid} is required: pass --ssh {sid}=$SSH_AUTH_SOCK"
                        )))
                    }
                    None => {}
                },
            }
        }
        let spec = SandboxSpec {
            args: exec.args.clone(),
            env,
            cwd,
            uid: user.uid,
            gid: user.gid,
            additional_gids: user.additional_gids.clone(),
            no_network: exec.network == NetworkMode::None,
            insecure: exec.insecure,
            hostname: self.cfg.hostname.clone(),
            mounts,
            extra_hosts: exec.extra_hosts.clone(),
            shm_size: exec.shm_size,
            ulimits: exec.ulimits.clone(),
        };
        // Mount points that do not exist yet are created by runc (inside the root, where
        // the destination resolves to); remember them by their real paths.
        let mut stubs: Vec<crate::root::Comps> = Vec::new();
        for p in crate::sandbox::mount_points(&spec) {
            let (real, stat) = fs.lstat(&p).map_err(werr("looking at a mount point"))?;
            if stat.is_none() {
                stubs.push(real);
            }
        }
        let container_id = format!("strata-{}-{}", std::process::id(), &LocalWorker::new_layer_id(&id).0[1..13]);
        // The bundle (config.json may hold secret env values) lives on tmpfs, never in
        // the store, and is removed whatever the outcome.
        let bundle = PathBuf::from(format!("/dev/shm/strata-bundle-{}-{}", std::process::id(), &container_id[7..]));
        let _bundle_guard = RemoveOnDrop(bundle.clone());
        let vertex = ctx.vertex;
        let progress = ctx.progress.clone();
        let outcome = self
            .cfg
            .runc
            .run(
                &container_id,
                &merged,
                &bundle,
                &spec,
                move |stream, line| progress.log(&vertex, stream, line),
                ctx.cancel.clone(),
            )
            .await;
        drop(guards);
        drop(locks);
        if cleanup_secret {
            let _ = std::fs::remove_dir_all(&secret_dir);
        }
        root_mount.finish().map_err(werr("finishing the root file system"))?;
        let outcome = match outcome {
            Ok(o) => o,
            Err(crate::sandbox::SandboxError::Cancelled) => return Err(WorkerError::Cancelled),
            Err(e) => return Err(WorkerError::other(e)),
        };
        if outcome.exit_code != 0 {
            return Err(WorkerError::StepFailed {
                message: format!(
                    "process {:?} did not complete successfully: exit code: {}",
                    exec.args.join(" "),
                    outcome.exit_code
                ),
                exit_code: Some(outcome.exit_code),
                last_lines: outcome.last_lines,
            });
        }
        remove_stubs(&work.upper(), &stubs);
        self.finish_layer(id, work, base)
    }

    fn finish_layer(&self, id: NodeId, work: WorkDir, mut base: Vec<LayerId>) -> Result<Output, WorkerError> {
        let layer = Self::new_layer_id(&id);
        self.snapshots.commit(work, &layer).map_err(werr("committing a snapshot"))?;
        if let Some(hook) = self.layer_hook.get() {
            hook(&id, &layer);
        }
        base.push(layer);
        Ok(Output::Layers(base))
    }

    async fn run_copy(&self, id: NodeId, op: &CopyOp, inputs: &[Arc<Solved>]) -> Result<Output, WorkerError> {
        let source = inputs.get(1).ok_or_else(|| WorkerError::Other("copy source missing".into()))?;
        let (base, work, root_mount) = self.begin_step(inputs)?;
        let src_at = work.dir.join("src");
        let src_guard = self.view(source, &src_at)?;
        let (src_root, ignore, is_context) = match &source.output {
            Output::Local(name) => {
                let c = self.context(name)?;
                (c.dir.clone(), c.ignore.clone(), true)
            }
            Output::Layers(_) => (src_at.clone(), Arc::new(|_: &str, _: bool| false) as ExcludeFn, false),
        };
        let extra = (self.cfg.patterns)(&op.exclude).map_err(WorkerError::Other)?;
        let merged = work.merged();
        // Writing new directories' contents straight into the upper dir needs overlayfs.
        let upper = (self.snapshots.snapshotter() == Snapshotter::Overlay).then(|| work.upper());
        // Incremental COPY (crate::copy::reuse): the earlier result of this COPY from
        // the same context onto the same layers, if it is still in the store.
        let lineage = match (&source.output, &upper) {
            (Output::Local(name), Some(_)) => Some(self.copy_lineage(op, &base, name, &src_root)),
            _ => None,
        };
        let earlier = lineage.as_ref().and_then(|l| self.earlier_copy(l));
        let record = lineage.is_some().then(|| Arc::new(crate::copy::reuse::CopyRecord::default()));
        let record2 = record.clone();
        let op2 = op.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<crate::copy::CopyStats, WorkerError> {
            // `--chown` is resolved by the copy, in the destination root.
            let owner = None;
            // .dockerignore applies to context-relative paths; --exclude to paths relative
            // to each source, as BuildKit matches them.
            let ignore_fn = move |p: &str, d: bool| ignore(p, d);
            let extra_fn = move |p: &str, d: bool| extra(p, d);
            let req = crate::copy::CopyRequest {
                src_root: &src_root,
                dest_root: &merged,
                op: &op2,
                owner,
                exclude: &ignore_fn,
                source_is_context: is_context,
                dest_upper: upper.as_deref(),
                earlier: earlier.as_ref(),
                record: record2.as_deref(),
            };
            match crate::copy::copy_with_source_excludes(&req, &extra_fn) {
                Ok(stats) => Ok(stats),
                // Say where it was looked for, and whether .dockerignore hid it.
                Err(crate::copy::CopyError::NotFound { path }) if is_context => {
                    let hidden = Root::open(&src_root)
                        .ok()
                        .and_then(|r| r.resolve_path(&path, true).ok())
                        .is_some_and(|r| r.stat.is_some());
                    let why = if hidden { "; it is there, but excluded by .dockerignore" } else { "" };
                    Err(WorkerError::Other(format!(
                        "{path:?}: not found in the build context {}{why}",
                        src_root.display()
                    )))
                }
                Err(e) => Err(WorkerError::other(e)),
            }
        })
        .await
        .map_err(WorkerError::other)?;
        drop(src_guard);
        root_mount.finish().map_err(werr("finishing the root file system"))?;
        let stats = result?;
        if stats.reused > 0 {
            tracing::info!(reused = stats.reused, files = stats.files, dest = %op.dest, "COPY: unchanged files linked from its earlier result");
        }
        // What this COPY wrote, for the next one: saved beside its snapshot.
        let saved = record.filter(|r| !r.is_empty()).and_then(|r| match r.finish() {
            Ok(bytes) => std::fs::write(work.dir.join(COPY_SOURCES), bytes).ok(),
            Err(e) => {
                tracing::debug!(error = %e, "the COPY's record was not saved");
                None
            }
        });
        let output = self.finish_layer(id, work, base)?;
        if let (Some(lineage), Some(()), Some(layer)) = (lineage, saved, output.layers().last()) {
            let path = self.cfg.root.join(COPY_LINEAGE_DIR).join(lineage);
            let _ = std::fs::create_dir_all(path.parent().unwrap_or(&path));
            if let Err(e) = strata_oci::store::write_atomic_unsynced(&path, layer.0.as_bytes()) {
                tracing::debug!(error = %e, "the COPY's lineage was not saved");
            }
        }
        Ok(output)
    }

    /// The key under which the latest result of a COPY from the local context `name`
    /// onto the layers `base` is found: the op (sources, destination, options), the
    /// layers and the context.
    fn copy_lineage(&self, op: &CopyOp, base: &[LayerId], name: &str, dir: &Path) -> String {
        let mut h = blake3::Hasher::new();
        h.update(b"strata-copy-lineage-v1\0");
        h.update(&serde_json::to_vec(op).unwrap_or_default());
        for l in base {
            h.update(b"\0");
            h.update(l.0.as_bytes());
        }
        h.update(b"\0");
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update(dir.as_os_str().as_encoded_bytes());
        h.finalize().to_hex()[..32].to_string()
    }

    /// The earlier result under `lineage`, when its snapshot and record are still there.
    fn earlier_copy(&self, lineage: &str) -> Option<crate::copy::reuse::EarlierCopy> {
        let path = self.cfg.root.join(COPY_LINEAGE_DIR).join(lineage);
        let id = LayerId(std::fs::read_to_string(path).ok()?.trim().to_string());
        if id.0.is_empty() || !id.0.bytes().all(|b| b.is_ascii_alphanumeric()) || !self.snapshots.exists(&id) {
            return None;
        }
        let saved = std::fs::read(self.snapshots.meta_path(&id, COPY_SOURCES)).ok()?;
        let sources = crate::copy::reuse::decode(&saved)?;
        let upper = Root::open(&self.snapshots.layer_dir(&id)).ok()?;
        Some(crate::copy::reuse::EarlierCopy { upper, sources })
    }

    async fn run_file(&self, id: NodeId, op: &Op, inputs: &[Arc<Solved>]) -> Result<Output, WorkerError> {
        let (base, work, root_mount) = self.begin_step(inputs)?;
        let merged = work.merged();
        let result = (|| -> Result<(), WorkerError> {
            let fs = Root::open(&merged).map_err(werr("opening the root file system"))?;
            let owner_of = |chown: &Option<strata_solver::graph::Chown>| match chown {
                Some(c) => {
                    crate::users::resolve_chown(&fs, &c.user, c.group.as_deref()).map(Some).map_err(WorkerError::other)
                }
                None => Ok(None),
            };
            match op {
                Op::Mkdir { path, mode, chown } => {
                    let spec = DirSpec { mode: *mode, owner: owner_of(chown)? };
                    fs.mkdir_all(&crate::root::clean(path.as_bytes()), spec)
                        .map(|_| ())
                        .map_err(|e| WorkerError::Other(format!("creating a directory: {}", e.into_io(path))))
                }
                Op::MkFile { path, data, mode, chown } => {
                    let owner = owner_of(chown)?;
                    fs.write_file(path, data, *mode, owner, DirSpec { mode: 0o755, owner })
                        .map_err(|e| WorkerError::Other(format!("writing {path}: {e}")))
                }
                _ => Err(WorkerError::Other("not a file op".into())),
            }
        })();
        root_mount.finish().map_err(werr("finishing the root file system"))?;
        result?;
        self.finish_layer(id, work, base)
    }

    /// Fill the new cache mount directory `into` with an exported mount's layer.
    async fn restore_cache_mount(
        &self,
        layer: &LayerSource,
        into: &Path,
        ctx: &StepContext,
    ) -> Result<(), WorkerError> {
        self.ensure_blob(layer)
            .await
            .map_err(|e| WorkerError::Other(format!("restoring a cache mount from {}: {e}", layer.digest)))?;
        ctx.progress.send(ProgressEvent::Status {
            vertex: ctx.vertex.to_string(),
            name: ctx.name.clone(),
            message: format!("restoring a cache mount from {}", layer.digest),
        });
        let (blob, media_type, into, diff_id) =
            (self.store.path(&layer.digest), layer.media_type.clone(), into.to_path_buf(), layer.diff_id.clone());
        tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::open(&blob)?;
            crate::unpack::unpack_layer(
                &mut f,
                Some(&media_type),
                &into,
                &crate::unpack::UnpackOptions { allow_devices: false, verify_diff_id: Some(diff_id) },
            )
            .map(|_| ())
            .map_err(std::io::Error::other)
        })
        .await
        .map_err(WorkerError::other)?
        .map_err(|e| WorkerError::Other(format!("restoring a cache mount from {}: {e}", layer.digest)))
    }

    /// Fill the new cache mount directory `into` with what `source` names in `solved`
    /// (`RUN --mount=type=cache,from=STAGE,source=PATH`), read inside that file system.
    async fn seed_cache_mount(
        &self,
        solved: &Solved,
        source: &str,
        into: &Path,
        view_at: &Path,
    ) -> Result<(), WorkerError> {
        let (src_root, guard, is_context) = match &solved.output {
            Output::Local(name) => (self.context(name)?.dir.clone(), None, true),
            Output::Layers(_) => {
                let g = self.view(solved, view_at)?;
                (view_at.to_path_buf(), g, false)
            }
        };
        let op = strata_solver::graph::CopyOp {
            sources: vec![source.to_string()],
            dest: "/".into(),
            dest_is_dir: true,
            chown: None,
            chmod: None,
            exclude: vec![],
            unpack_archives: false,
            parents: false,
            follow_symlinks: true,
            create_dest_path: true,
            allow_empty_wildcard: false,
        };
        let into = into.to_path_buf();
        let result = tokio::task::spawn_blocking(move || {
            crate::copy::copy(&crate::copy::CopyRequest {
                src_root: &src_root,
                dest_root: &into,
                op: &op,
                owner: None,
                exclude: &|_, _| false,
                source_is_context: is_context,
                dest_upper: None,
                earlier: None,
                record: None,
            })
        })
        .await
        .map_err(WorkerError::other)?;
        if let Some(g) = guard {
            g.finish().map_err(werr("finishing a view"))?;
        }
        result.map(|_| ()).map_err(|e| WorkerError::Other(format!("cache mount from {source:?}: {e}")))
    }
}

/// The host path of a bind mount's `source` inside `src_root` (a context directory or
/// a mounted view of a stage), resolved inside it: symlinks are followed as if
/// `src_root` were `/`, so `v -> /etc` names `src_root/etc`, never the host's `/etc`.
/// A source that does not exist there is an error, as in BuildKit.
fn mount_source(src_root: &Path, source: &str, what: &str) -> Result<PathBuf, WorkerError> {
    let root = Root::open(src_root).map_err(werr("opening a bind mount source"))?;
    let resolved = root
        .resolve_path(source, true)
        .map_err(|e| WorkerError::Other(format!("bind mount source: {}", e.into_io(source))))?;
    if resolved.stat.is_none() {
        let shown = crate::root::show(&resolved.real);
        let note = if shown == crate::root::show(&crate::root::clean(source.as_bytes())) {
            String::new()
        } else {
            format!(" (it resolves to {shown:?} inside {what})")
        };
        return Err(WorkerError::Other(format!(
            "bind mount source {:?}: not found{note}",
            format!("/{}", source.trim_start_matches('/'))
        )));
    }
    root.host_path(&resolved.real).map_err(werr("opening a bind mount source"))
}

/// Remove bundles and secret files of strata processes that are gone (a SIGKILL
/// leaves them in /dev/shm).
fn clean_stale_shm() {
    let Ok(rd) = std::fs::read_dir("/dev/shm") else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("strata-bundle-").or_else(|| name.strip_prefix("strata-secrets-")) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Removes a directory tree when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Remove the file mount-point stubs runc created (empty regular files such as
/// /etc/resolv.conf or a secret's target), by their real paths in the step's upper
/// directory. Directory stubs (/proc, /dev, /sys, mount targets and their parents)
/// stay, as the reference BuildKit leaves them.
fn remove_stubs(upper: &Path, stubs: &[crate::root::Comps]) {
    let Ok(upper) = Root::open(upper) else { return };
    for real in stubs {
        if let Err(e) = upper.remove_empty_file(real) {
            tracing::debug!("removing the mount point {}: {e}", crate::root::show(real));
        }
    }
}

#[async_trait]
impl Worker for LocalWorker {
    async fn content_key(&self, node: &Node, inputs: &[Arc<Solved>]) -> Result<Option<[u8; 32]>, WorkerError> {
        // (context name, sources, --parents) of each local selection the node reads.
        let mut reads: Vec<(String, Vec<String>, bool)> = Vec::new();
        match &node.op {
            Op::Copy(c) => {
                if let Some(Output::Local(name)) = inputs.get(1).map(|s| &s.output) {
                    reads.push((name.clone(), c.sources.clone(), c.parents));
                }
            }
            Op::Exec(e) => {
                for m in &e.mounts {
                    if let Mount::Bind { input, source, .. } = m {
                        if let Some(Output::Local(name)) = inputs.get(*input).map(|s| &s.output) {
                            reads.push((name.clone(), vec![source.clone()], false));
                        }
                    }
                }
            }
            _ => {}
        }
        if reads.is_empty() {
            return Ok(None);
        }
        let mut h = blake3::Hasher::new();
        let mut files = Vec::new();
        for (name, sources, parents) in reads {
            let ctx = self.context(&name)?.clone();
            let cache = self.stat_cache(&name, &ctx.dir);
            // --exclude is not applied here: hashing a superset of what is copied can
            // only cost a cache miss, never a stale hit.
            let exclude: ExcludeFn = Arc::new(|_, _| false);
            let selected = tokio::task::spawn_blocking(move || selection(&ctx, &cache, &sources, parents, &exclude))
                .await
                .map_err(WorkerError::other)?
                .map_err(|e| WorkerError::Other(format!("hashing the context: {e}")))?;
            h.update(&selected.hash);
            files.extend(selected.files);
        }
        let key = *h.finalize().as_bytes();
        self.selections.lock().unwrap_or_else(|p| p.into_inner()).insert(key, Arc::new(files));
        Ok(Some(key))
    }

    async fn run(
        &self,
        id: NodeId,
        node: &Node,
        inputs: &[Arc<Solved>],
        ctx: StepContext,
    ) -> Result<Output, WorkerError> {
        match &node.op {
            Op::Image { manifest_digest, .. } => self.run_image(manifest_digest, &ctx).await,
            Op::Exec(exec) => self.run_exec(id, exec, inputs, ctx).await,
            Op::Copy(c) => self.run_copy(id, c, inputs).await,
            Op::Mkdir { .. } | Op::MkFile { .. } => self.run_file(id, &node.op, inputs).await,
            Op::Merge => Ok(Output::Layers(inputs.iter().flat_map(|s| s.output.layers().to_vec()).collect())),
            Op::Scratch => Ok(Output::Layers(Vec::new())),
            Op::Local { name } => Ok(Output::Local(name.clone())),
        }
    }

    fn output_valid(&self, output: &Output) -> bool {
        output
            .layers()
            .iter()
            .all(|l| self.snapshots.exists(l) || self.cfg.remote_layers.contains_key(l) || *l == empty_layer_id())
    }

    async fn materialize(&self, output: &Output, ctx: &StepContext) -> Result<(), WorkerError> {
        for id in output.layers() {
            if self.snapshots.exists(id) {
                continue;
            }
            if *id == empty_layer_id() {
                let work = self.snapshots.new_work().map_err(werr("creating a snapshot"))?;
                if let Err(e) = self.snapshots.commit(work, id) {
                    // Another build made it first.
                    if !self.snapshots.exists(id) {
                        return Err(WorkerError::Other(format!("committing the empty snapshot: {e}")));
                    }
                }
                continue;
            }
            let Some(remote) = self.cfg.remote_layers.get(id) else {
                return Err(WorkerError::UntrustedCache(format!(
                    "layer {} is neither here nor in the imported cache",
                    id.0
                )));
            };
            // A blob that does not match its digest (download) or its diff_id (unpack)
            // refuses the record; the step that made it runs here instead.
            let fetched = !self.store.contains(&remote.digest);
            if let Err(e) = self.ensure_blob(remote).await {
                let named = e.contains(&remote.digest.to_string());
                return Err(WorkerError::UntrustedCache(if named {
                    e
                } else {
                    format!("blob {}: {e}", remote.digest)
                }));
            }
            let desc =
                strata_oci::image::Descriptor::new(remote.media_type.clone(), remote.digest.clone(), remote.size);
            if let Err(e) = self.unpack_snapshot(id, &desc, Some(remote.diff_id.clone()), ctx).await {
                // A blob fetched for this record is not kept: a later build fetches it
                // anew (one that was already here belongs to something else).
                if fetched {
                    let _ = std::fs::remove_file(self.store.path(&remote.digest));
                }
                return Err(WorkerError::UntrustedCache(format!("blob {}: {e}", remote.digest)));
            }
        }
        Ok(())
    }
}
