//! The scheduler: cache keys, cache lookups and concurrent execution.
//!
//! Every node of the targets' closure becomes two shared futures:
//!
//! - *solved*: waits for its inputs to be solved, computes its cache key — blake3 over
//!   the node id, the inputs' cache keys and the content the worker reports for it
//!   (e.g. the COPY-selected context files) — and either reuses a cached output (local,
//!   or imported with `--cache-from`) or runs the step;
//! - *local*: the solved output with its files on this machine. An imported output's
//!   layers are only blobs until a step that runs on them (or the caller) asks for this:
//!   then the worker downloads and verifies them; a record it cannot trust is refused
//!   and the step runs after all.
//!
//! A step runs on its inputs' *local* outputs, holding one of `jobs` permits only while
//! it runs. Identical nodes are one node, so they run once. The first failure sets the
//! cancel flag every running step watches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::future::{BoxFuture, FutureExt, Shared};

use crate::cache::{CacheIndex, CacheRecord, Origin};
use crate::graph::{Graph, NodeId, Op};
use crate::progress::{ProgressEvent, ProgressSink};
use crate::worker::{Output, Solved, StepContext, Worker, WorkerError};

#[derive(Clone)]
pub struct SolveOptions {
    pub jobs: usize,
    /// Ignore the cache for every step (`--no-cache`).
    pub no_cache: bool,
    /// Ignore the cache for the steps of these stages (`--no-cache-filter`).
    pub no_cache_filter: Vec<String>,
    /// Compute every key and look it up, run nothing (`build --dry-run`): a step that
    /// misses is reported as one that would run, and its output is left empty.
    pub dry_run: bool,
    /// Told of every step's key, why a step misses, and how it ended.
    pub observer: Option<Arc<dyn StepObserver>>,
}

impl Default for SolveOptions {
    fn default() -> Self {
        SolveOptions {
            jobs: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            no_cache: false,
            no_cache_filter: Vec::new(),
            dry_run: false,
            observer: None,
        }
    }
}

impl std::fmt::Debug for SolveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SolveOptions")
            .field("jobs", &self.jobs)
            .field("no_cache", &self.no_cache)
            .field("no_cache_filter", &self.no_cache_filter)
            .field("dry_run", &self.dry_run)
            .finish()
    }
}

/// Why a step's cached result is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissCause {
    /// `--no-cache`.
    NoCache,
    /// `--no-cache-filter` names one of its stages.
    NoCacheFilter,
    /// Its key is in no cache: this store's, nor an imported one.
    NotFound,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepResult {
    Cached,
    Ran,
    Failed,
    /// `--dry-run`: it would run.
    WouldRun,
}

/// Watches a solve step by step (the build's record, and the reasons for misses). Each
/// method is called from the step's own task and must not block for long.
pub trait StepObserver: Send + Sync {
    /// The step's key is known: its inputs' keys and the content key the worker gave.
    fn keyed(&self, id: &NodeId, key: &[u8; 32], input_keys: &[[u8; 32]], content: Option<&[u8; 32]>);
    /// The step misses and will run (or would, in a dry run): why, in one line — the
    /// kind of reason and its text.
    fn explain(&self, id: &NodeId, cause: MissCause) -> Option<(String, String)>;
    /// The step ended.
    fn ended(&self, id: &NodeId, result: StepResult, elapsed: std::time::Duration);
}

/// A failed build: which step, and why.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {error}")]
pub struct SolveError {
    pub step: String,
    pub error: WorkerError,
}

type NodeFuture = Shared<BoxFuture<'static, Result<Arc<Solved>, Arc<SolveError>>>>;

pub struct Scheduler<W: Worker> {
    worker: Arc<W>,
    cache: CacheIndex,
    options: SolveOptions,
    progress: ProgressSink,
    cancel_tx: Arc<tokio::sync::watch::Sender<bool>>,
}

/// The futures of every node of a solve.
struct Futures {
    solved: HashMap<NodeId, NodeFuture>,
    local: HashMap<NodeId, NodeFuture>,
}

impl<W: Worker> Scheduler<W> {
    pub fn new(worker: Arc<W>, cache: CacheIndex, options: SolveOptions, progress: ProgressSink) -> Self {
        let (tx, _rx) = tokio::sync::watch::channel(false);
        Scheduler { worker, cache, options, progress, cancel_tx: Arc::new(tx) }
    }

    /// A handle that cancels the running build (Ctrl-C).
    pub fn canceller(&self) -> Arc<tokio::sync::watch::Sender<bool>> {
        self.cancel_tx.clone()
    }

    /// Solve the targets; returns every solved node of their closure. With `local`, the
    /// targets' outputs are brought onto this machine too (an imported one materialized).
    pub async fn solve(
        &self,
        graph: Arc<Graph>,
        targets: &[NodeId],
    ) -> Result<HashMap<NodeId, Arc<Solved>>, Arc<SolveError>> {
        self.solve_with(graph, targets, false).await
    }

    /// [`Scheduler::solve`], choosing whether the targets must be local.
    pub async fn solve_with(
        &self,
        graph: Arc<Graph>,
        targets: &[NodeId],
        local_targets: bool,
    ) -> Result<HashMap<NodeId, Arc<Solved>>, Arc<SolveError>> {
        let mut order = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for t in targets {
            for id in graph.closure(*t) {
                if seen.insert(id) {
                    order.push(id);
                }
            }
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(self.options.jobs.max(1)));
        let mut f = Futures { solved: HashMap::new(), local: HashMap::new() };
        for id in &order {
            let node = graph.get(id).expect("closure nodes exist").clone();
            let solved_inputs: Vec<NodeFuture> = node.inputs.iter().map(|i| f.solved[i].clone()).collect();
            let local_inputs: Vec<NodeFuture> = node.inputs.iter().map(|i| f.local[i].clone()).collect();
            let ctx = Arc::new(NodeRun {
                id: *id,
                node,
                worker: self.worker.clone(),
                cache: self.cache.clone(),
                options: self.options.clone(),
                progress: self.progress.clone(),
                cancel_tx: self.cancel_tx.clone(),
                permits: permits.clone(),
                local_inputs,
            });
            let solved = {
                let ctx = ctx.clone();
                async move { ctx.solve(solved_inputs).await }.boxed().shared()
            };
            let local = {
                let solved = solved.clone();
                async move { ctx.localize(solved).await }.boxed().shared()
            };
            f.solved.insert(*id, solved);
            f.local.insert(*id, local);
        }
        // Drive every node concurrently (each in its own task, so steps run in parallel):
        // the solved futures of all, and the local ones of the targets when asked.
        let mut handles: Vec<_> = order.iter().map(|id| (*id, tokio::spawn(f.solved[id].clone()))).collect();
        if local_targets {
            handles.extend(targets.iter().map(|id| (*id, tokio::spawn(f.local[id].clone()))));
        }
        let mut out = HashMap::new();
        let mut first_err: Option<Arc<SolveError>> = None;
        for (id, h) in handles {
            match h.await {
                Ok(Ok(s)) => {
                    // A target made local replaces its solved (possibly imported) form.
                    out.insert(id, s);
                }
                Ok(Err(e)) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
                Err(join) => {
                    if first_err.is_none() {
                        first_err =
                            Some(Arc::new(SolveError { step: "scheduler".into(), error: WorkerError::other(join) }));
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

struct NodeRun<W: Worker> {
    id: NodeId,
    node: crate::graph::Node,
    worker: Arc<W>,
    cache: CacheIndex,
    options: SolveOptions,
    progress: ProgressSink,
    cancel_tx: Arc<tokio::sync::watch::Sender<bool>>,
    permits: Arc<tokio::sync::Semaphore>,
    /// The inputs' local futures (what a run of this step needs).
    local_inputs: Vec<NodeFuture>,
}

impl<W: Worker> NodeRun<W> {
    fn name(&self) -> String {
        self.node.names.first().cloned().unwrap_or_else(|| self.id.short())
    }

    fn fail(&self, error: WorkerError) -> Arc<SolveError> {
        let _ = self.cancel_tx.send(true);
        Arc::new(SolveError { step: self.name(), error })
    }

    fn cancelled(&self) -> Option<Arc<SolveError>> {
        (*self.cancel_tx.borrow()).then(|| Arc::new(SolveError { step: self.name(), error: WorkerError::Cancelled }))
    }

    /// The node's key, and its output from the cache or from running it.
    async fn solve(&self, inputs: Vec<NodeFuture>) -> Result<Arc<Solved>, Arc<SolveError>> {
        let mut solved_inputs = Vec::with_capacity(inputs.len());
        for f in inputs {
            solved_inputs.push(f.await?);
        }
        if let Some(e) = self.cancelled() {
            return Err(e);
        }
        // Sources that need no work.
        match &self.node.op {
            Op::Local { name: local } => {
                return Ok(Arc::new(Solved {
                    output: Output::Local(local.clone()),
                    cache_key: self.id.0,
                    cached: true,
                    imported: None,
                }));
            }
            Op::Scratch => {
                return Ok(Arc::new(Solved {
                    output: Output::Layers(Vec::new()),
                    cache_key: self.id.0,
                    cached: true,
                    imported: None,
                }));
            }
            _ => {}
        }
        let content = self.worker.content_key(&self.node, &solved_inputs).await.map_err(|e| self.fail(e))?;
        let key = cache_key(&self.id, solved_inputs.iter().map(|i| &i.cache_key), content.as_ref());
        if let Some(o) = &self.options.observer {
            let input_keys: Vec<[u8; 32]> = solved_inputs.iter().map(|i| i.cache_key).collect();
            o.keyed(&self.id, &key, &input_keys, content.as_ref());
        }

        let is_source = matches!(self.node.op, Op::Image { .. });
        let bypass = !is_source
            && (self.options.no_cache
                || self
                    .node
                    .stages
                    .iter()
                    .any(|s| self.options.no_cache_filter.iter().any(|f| f.eq_ignore_ascii_case(s))));
        if !bypass {
            if let Some((rec, origin)) = self.cache.lookup(&key) {
                if self.worker.output_valid(&rec.output) {
                    let imported = match origin {
                        Origin::Local => None,
                        Origin::Imported(from) => Some(from),
                    };
                    if !is_source {
                        self.progress.send(ProgressEvent::Cached { vertex: self.id.to_string(), name: self.name() });
                    }
                    self.ended(StepResult::Cached, std::time::Duration::ZERO);
                    return Ok(Arc::new(Solved { output: rec.output, cache_key: key, cached: true, imported }));
                }
            }
        }
        let cause = if !bypass {
            MissCause::NotFound
        } else if self.options.no_cache {
            MissCause::NoCache
        } else {
            MissCause::NoCacheFilter
        };
        if self.options.dry_run {
            // Nothing runs: later steps get an empty output and their own keys.
            if !is_source {
                self.explain_miss(cause);
                self.ended(StepResult::WouldRun, std::time::Duration::ZERO);
            }
            return Ok(Arc::new(Solved {
                output: Output::Layers(Vec::new()),
                cache_key: key,
                cached: false,
                imported: None,
            }));
        }
        self.execute(key, (!is_source).then_some(cause)).await
    }

    /// Report why the step will run (a line under it in the progress).
    fn explain_miss(&self, cause: MissCause) {
        let (kind, reason) = match self.options.observer.as_ref().and_then(|o| o.explain(&self.id, cause)) {
            Some(r) => r,
            None => match cause {
                MissCause::NoCache => ("no_cache".to_string(), "--no-cache".to_string()),
                MissCause::NoCacheFilter => ("no_cache_filter".to_string(), "--no-cache-filter".to_string()),
                MissCause::NotFound => ("no_record".to_string(), "no earlier build of this step".to_string()),
            },
        };
        self.progress.send(ProgressEvent::CacheMiss {
            vertex: self.id.to_string(),
            name: self.name(),
            kind,
            reason,
            dry_run: self.options.dry_run,
        });
    }

    fn ended(&self, result: StepResult, elapsed: std::time::Duration) {
        if let Some(o) = &self.options.observer {
            o.ended(&self.id, result, elapsed);
        }
    }

    /// The solved output with its files here: an imported one is materialized, or
    /// refused and run.
    async fn localize(&self, solved: NodeFuture) -> Result<Arc<Solved>, Arc<SolveError>> {
        let s = solved.await?;
        let Some(from) = &s.imported else { return Ok(s) };
        let ctx = self.step_context();
        match self.worker.materialize(&s.output, &ctx).await {
            Ok(()) => Ok(s),
            Err(WorkerError::UntrustedCache(why)) => {
                self.progress.send(ProgressEvent::Warning {
                    message: format!(
                        "warning: {}: the record imported from {from} was refused ({why}); running the step",
                        self.name()
                    ),
                });
                self.execute(s.cache_key, None).await
            }
            Err(WorkerError::Cancelled) => {
                Err(Arc::new(SolveError { step: self.name(), error: WorkerError::Cancelled }))
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn step_context(&self) -> StepContext {
        StepContext {
            name: self.name(),
            progress: self.progress.clone(),
            vertex: self.id,
            cancel: self.cancel_tx.subscribe(),
        }
    }

    /// Run the step on its inputs' local outputs and record the result under `key`;
    /// `miss`: why the cache was not used, reported as the step starts (after it got
    /// its permit, so the progress shows steps in the order they run).
    async fn execute(&self, key: [u8; 32], miss: Option<MissCause>) -> Result<Arc<Solved>, Arc<SolveError>> {
        let mut inputs = Vec::with_capacity(self.local_inputs.len());
        for f in &self.local_inputs {
            inputs.push(f.clone().await?);
        }
        let name = self.name();
        let _permit = self.permits.acquire().await.map_err(|e| self.fail(WorkerError::other(e)))?;
        if let Some(e) = self.cancelled() {
            return Err(e);
        }
        if let Some(cause) = miss {
            self.explain_miss(cause);
        }
        let started = Instant::now();
        self.progress.send(ProgressEvent::Started { vertex: self.id.to_string(), name: name.clone() });
        match self.worker.run(self.id, &self.node, &inputs, self.step_context()).await {
            Ok(output) => {
                self.progress.send(ProgressEvent::Done {
                    vertex: self.id.to_string(),
                    name: name.clone(),
                    elapsed: started.elapsed(),
                });
                self.ended(StepResult::Ran, started.elapsed());
                let created = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                if let Err(e) =
                    self.cache.put(&key, &CacheRecord { output: output.clone(), name: name.clone(), created })
                {
                    tracing::warn!("could not record {name} in the cache index: {e}");
                }
                Ok(Arc::new(Solved { output, cache_key: key, cached: false, imported: None }))
            }
            Err(WorkerError::Cancelled) => Err(Arc::new(SolveError { step: name, error: WorkerError::Cancelled })),
            Err(e) => {
                self.progress.send(ProgressEvent::Failed {
                    vertex: self.id.to_string(),
                    name: name.clone(),
                    error: e.to_string(),
                });
                self.ended(StepResult::Failed, started.elapsed());
                Err(self.fail(e))
            }
        }
    }
}

/// A node's cache key: blake3 over a version tag, the node id (its definition and its
/// inputs' ids), the inputs' cache keys, and the content it reads that the graph does
/// not name. Machine-independent: the same inputs give the same key on any runner,
/// which is what lets a cache travel.
pub fn cache_key<'a>(
    id: &NodeId,
    input_keys: impl Iterator<Item = &'a [u8; 32]>,
    content: Option<&[u8; 32]>,
) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"strata-cache-v2\0");
    h.update(&id.0);
    for k in input_keys {
        h.update(k);
    }
    if let Some(c) = content {
        h.update(c);
    }
    *h.finalize().as_bytes()
}
