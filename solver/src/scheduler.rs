//! The scheduler: cache keys, cache lookups and concurrent execution.
//!
//! Every node of the targets' closure becomes one shared future that waits for its
//! inputs, computes its cache key — blake3 over the node id, the inputs' cache keys and
//! the content the worker reports for it (e.g. the COPY-selected context files) — and
//! either reuses the cached output or runs the step, holding one of `jobs` permits only
//! while it runs. Identical nodes are one node, so they run once. The first failure
//! sets the cancel flag every running step watches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::future::{BoxFuture, FutureExt, Shared};

use crate::cache::{CacheIndex, CacheRecord};
use crate::graph::{Graph, NodeId, Op};
use crate::progress::{ProgressEvent, ProgressSink};
use crate::worker::{Output, Solved, StepContext, Worker, WorkerError};

#[derive(Debug, Clone)]
pub struct SolveOptions {
    pub jobs: usize,
    /// Ignore the cache for every step (`--no-cache`).
    pub no_cache: bool,
    /// Ignore the cache for the steps of these stages (`--no-cache-filter`).
    pub no_cache_filter: Vec<String>,
}

impl Default for SolveOptions {
    fn default() -> Self {
        SolveOptions {
            jobs: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            no_cache: false,
            no_cache_filter: Vec::new(),
        }
    }
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

impl<W: Worker> Scheduler<W> {
    pub fn new(worker: Arc<W>, cache: CacheIndex, options: SolveOptions, progress: ProgressSink) -> Self {
        let (tx, _rx) = tokio::sync::watch::channel(false);
        Scheduler { worker, cache, options, progress, cancel_tx: Arc::new(tx) }
    }

    /// A handle that cancels the running build (Ctrl-C).
    pub fn canceller(&self) -> Arc<tokio::sync::watch::Sender<bool>> {
        self.cancel_tx.clone()
    }

    /// Solve the targets; returns every solved node of their closure.
    pub async fn solve(
        &self,
        graph: Arc<Graph>,
        targets: &[NodeId],
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
        let mut futures: HashMap<NodeId, NodeFuture> = HashMap::new();
        for id in &order {
            let node = graph.get(id).expect("closure nodes exist").clone();
            let inputs: Vec<NodeFuture> = node.inputs.iter().map(|i| futures[i].clone()).collect();
            let ctx = NodeRun {
                id: *id,
                worker: self.worker.clone(),
                cache: self.cache.clone(),
                options: self.options.clone(),
                progress: self.progress.clone(),
                cancel_tx: self.cancel_tx.clone(),
                permits: permits.clone(),
            };
            let fut = async move { ctx.run(node, inputs).await }.boxed().shared();
            futures.insert(*id, fut);
        }
        // Drive every node concurrently (each in its own task, so steps run in parallel).
        let handles: Vec<_> = order.iter().map(|id| (*id, tokio::spawn(futures[id].clone()))).collect();
        let mut out = HashMap::new();
        let mut first_err: Option<Arc<SolveError>> = None;
        for (id, h) in handles {
            match h.await {
                Ok(Ok(s)) => {
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
    worker: Arc<W>,
    cache: CacheIndex,
    options: SolveOptions,
    progress: ProgressSink,
    cancel_tx: Arc<tokio::sync::watch::Sender<bool>>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl<W: Worker> NodeRun<W> {
    async fn run(self, node: crate::graph::Node, inputs: Vec<NodeFuture>) -> Result<Arc<Solved>, Arc<SolveError>> {
        let mut solved_inputs = Vec::with_capacity(inputs.len());
        for f in inputs {
            solved_inputs.push(f.await?);
        }
        let name = node.names.first().cloned().unwrap_or_else(|| self.id.short());
        let fail = |error: WorkerError| {
            let _ = self.cancel_tx.send(true);
            Arc::new(SolveError { step: name.clone(), error })
        };
        if *self.cancel_tx.borrow() {
            return Err(Arc::new(SolveError { step: name.clone(), error: WorkerError::Cancelled }));
        }
        // Sources that need no work.
        match &node.op {
            Op::Local { name: local } => {
                return Ok(Arc::new(Solved {
                    output: Output::Local(local.clone()),
                    cache_key: self.id.0,
                    cached: true,
                }));
            }
            Op::Scratch => {
                return Ok(Arc::new(Solved { output: Output::Layers(Vec::new()), cache_key: self.id.0, cached: true }));
            }
            _ => {}
        }
        let content = self.worker.content_key(&node, &solved_inputs).await.map_err(&fail)?;
        let mut h = blake3::Hasher::new();
        h.update(b"strata-cache-v2\0");
        h.update(&self.id.0);
        for i in &solved_inputs {
            h.update(&i.cache_key);
        }
        if let Some(c) = content {
            h.update(&c);
        }
        let key = *h.finalize().as_bytes();

        let is_source = matches!(node.op, Op::Image { .. });
        let bypass = !is_source
            && (self.options.no_cache
                || node.stages.iter().any(|s| self.options.no_cache_filter.iter().any(|f| f.eq_ignore_ascii_case(s))));
        if !bypass {
            if let Some(rec) = self.cache.get(&key) {
                if self.worker.output_valid(&rec.output) {
                    if !is_source {
                        self.progress.send(ProgressEvent::Cached { vertex: self.id.to_string(), name: name.clone() });
                    }
                    return Ok(Arc::new(Solved { output: rec.output, cache_key: key, cached: true }));
                }
            }
        }

        let _permit = self.permits.acquire().await.map_err(|e| fail(WorkerError::other(e)))?;
        if *self.cancel_tx.borrow() {
            return Err(Arc::new(SolveError { step: name.clone(), error: WorkerError::Cancelled }));
        }
        let started = Instant::now();
        self.progress.send(ProgressEvent::Started { vertex: self.id.to_string(), name: name.clone() });
        let ctx = StepContext {
            name: name.clone(),
            progress: self.progress.clone(),
            vertex: self.id,
            cancel: self.cancel_tx.subscribe(),
        };
        match self.worker.run(self.id, &node, &solved_inputs, ctx).await {
            Ok(output) => {
                self.progress.send(ProgressEvent::Done {
                    vertex: self.id.to_string(),
                    name: name.clone(),
                    elapsed: started.elapsed(),
                });
                let created = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                if let Err(e) =
                    self.cache.put(&key, &CacheRecord { output: output.clone(), name: name.clone(), created })
                {
                    tracing::warn!("could not record {name} in the cache index: {e}");
                }
                Ok(Arc::new(Solved { output, cache_key: key, cached: false }))
            }
            Err(WorkerError::Cancelled) => Err(Arc::new(SolveError { step: name, error: WorkerError::Cancelled })),
            Err(e) => {
                self.progress.send(ProgressEvent::Failed {
                    vertex: self.id.to_string(),
                    name: name.clone(),
                    error: e.to_string(),
                });
                Err(fail(e))
            }
        }
    }
}
