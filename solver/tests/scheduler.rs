//! The scheduler's rules with an in-memory worker (pure logic: no runtime, no files but
//! the cache index): cache keys change with exactly the inputs they should, the cache
//! is bypassed by `--no-cache` and `--no-cache-filter` as asked, identical nodes run
//! once even when several targets need them at the same time, and a failure cancels
//! what has not started.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use strata_solver::cache::{CacheIndex, CacheRecord};
use strata_solver::graph::{ExecOp, Graph, NetworkMode, Node, NodeId, Op};
use strata_solver::progress::ProgressSink;
use strata_solver::scheduler::{cache_key, Scheduler, SolveOptions};
use strata_solver::worker::{LayerId, Output, Solved, StepContext, Worker, WorkerError};

/// Runs nothing: each run makes a new layer named after the step and a counter, after
/// an optional delay; content keys come from a table (the "context files").
#[derive(Default)]
struct FakeWorker {
    runs: Mutex<Vec<String>>,
    counter: AtomicUsize,
    /// node label → content bytes (what a COPY would hash).
    content: Mutex<HashMap<String, Vec<u8>>>,
    /// Labels whose run fails.
    failing: Mutex<Vec<String>>,
    delay: Duration,
    /// Labels whose imported output was made local.
    materialized: Mutex<Vec<String>>,
    /// Labels whose imported output cannot be trusted.
    untrusted: Mutex<Vec<String>>,
}

impl FakeWorker {
    fn runs(&self) -> Vec<String> {
        self.runs.lock().unwrap().clone()
    }
}

#[async_trait]
impl Worker for FakeWorker {
    async fn content_key(&self, node: &Node, _inputs: &[Arc<Solved>]) -> Result<Option<[u8; 32]>, WorkerError> {
        let label = node.names.first().cloned().unwrap_or_default();
        Ok(self.content.lock().unwrap().get(&label).map(|c| *blake3::hash(c).as_bytes()))
    }

    async fn run(
        &self,
        _id: NodeId,
        node: &Node,
        _inputs: &[Arc<Solved>],
        ctx: StepContext,
    ) -> Result<Output, WorkerError> {
        let label = node.names.first().cloned().unwrap_or_default();
        self.runs.lock().unwrap().push(label.clone());
        tokio::time::sleep(self.delay).await;
        if *ctx.cancel.borrow() {
            return Err(WorkerError::Cancelled);
        }
        if self.failing.lock().unwrap().contains(&label) {
            return Err(WorkerError::StepFailed {
                message: format!("{label} failed"),
                exit_code: Some(1),
                last_lines: vec![],
            });
        }
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        Ok(Output::Layers(vec![LayerId(format!("{label}-{n}"))]))
    }

    fn output_valid(&self, _output: &Output) -> bool {
        true
    }

    async fn materialize(&self, _output: &Output, ctx: &StepContext) -> Result<(), WorkerError> {
        self.materialized.lock().unwrap().push(ctx.name.clone());
        if self.untrusted.lock().unwrap().contains(&ctx.name) {
            return Err(WorkerError::UntrustedCache(format!("{} does not match its digest", ctx.name)));
        }
        Ok(())
    }
}

fn exec(args: &[&str], env: &[&str]) -> Op {
    Op::Exec(ExecOp {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: env.iter().map(|s| s.to_string()).collect(),
        cwd: "/".into(),
        user: String::new(),
        network: NetworkMode::Host,
        insecure: false,
        platform: "linux/amd64".parse().unwrap(),
        mounts: Vec::new(),
        extra_hosts: Vec::new(),
        shm_size: None,
        ulimits: Vec::new(),
    })
}

fn image(digest: &str) -> Op {
    Op::Image {
        reference: "example/base:1".into(),
        manifest_digest: digest.into(),
        platform: "linux/amd64".parse().unwrap(),
    }
}

struct Env {
    _dir: tempfile::TempDir,
    cache: CacheIndex,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheIndex::open(dir.path()).unwrap();
    Env { _dir: dir, cache }
}

/// Solve `targets` and return each solved node's cache key by its first label.
async fn solve(
    worker: &Arc<FakeWorker>,
    env: &Env,
    graph: &Graph,
    targets: &[NodeId],
    opts: SolveOptions,
) -> Result<HashMap<String, [u8; 32]>, String> {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let s = Scheduler::new(worker.clone(), env.cache.clone(), opts, ProgressSink::new(tx));
    let solved = s.solve(Arc::new(graph.clone()), targets).await.map_err(|e| e.to_string())?;
    Ok(solved.iter().map(|(id, s)| (graph.nodes[id].names[0].clone(), s.cache_key)).collect())
}

fn opts() -> SolveOptions {
    SolveOptions { jobs: 4, no_cache: false, no_cache_filter: Vec::new(), ..Default::default() }
}

/// base → run (env) → copy-like step with content.
fn chain(base_digest: &str, run_env: &str) -> (Graph, NodeId) {
    let mut g = Graph::default();
    let base = g.add(image(base_digest), vec![], "base");
    let run = g.add_in_stage(exec(&["sh", "-c", "make"], &[run_env]), vec![base], "run", Some("build"));
    let copy = g.add_in_stage(exec(&["copy"], &[]), vec![run], "copy", Some("final"));
    (g, copy)
}

#[tokio::test]
async fn keys_change_with_exactly_their_inputs() {
    let worker = Arc::new(FakeWorker::default());
    worker.content.lock().unwrap().insert("copy".into(), b"files v1".to_vec());
    let e = env();
    let (g, t) = chain("sha256:aa", "A=1");
    let first = solve(&worker, &e, &g, &[t], opts()).await.unwrap();
    assert_eq!(worker.runs(), ["base", "run", "copy"]);

    // The same again: the same keys, nothing runs.
    let again = solve(&worker, &e, &g, &[t], opts()).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(worker.runs().len(), 3, "a cached build ran a step");

    // The content a step reads changes: that step's key only.
    worker.content.lock().unwrap().insert("copy".into(), b"files v2".to_vec());
    let content = solve(&worker, &e, &g, &[t], opts()).await.unwrap();
    assert_eq!((content["base"], content["run"]), (first["base"], first["run"]));
    assert_ne!(content["copy"], first["copy"]);
    assert_eq!(worker.runs()[3..], ["copy"]);

    // The step's own definition changes (an ENV/ARG value): it and what follows.
    let (g2, t2) = chain("sha256:aa", "A=2");
    let def = solve(&worker, &e, &g2, &[t2], opts()).await.unwrap();
    assert_eq!(def["base"], first["base"]);
    assert_ne!(def["run"], first["run"]);
    assert_ne!(def["copy"], content["copy"]);

    // The base image moves: every key.
    let (g3, t3) = chain("sha256:bb", "A=1");
    let base = solve(&worker, &e, &g3, &[t3], opts()).await.unwrap();
    assert!(base.iter().all(|(k, v)| v != &first[k]), "{base:?}");
}

#[tokio::test]
async fn a_dry_run_runs_nothing_and_its_keys_are_the_real_build_s() {
    let worker = Arc::new(FakeWorker::default());
    worker.content.lock().unwrap().insert("copy".into(), b"files v1".to_vec());
    let e = env();
    let (g, t) = chain("sha256:aa", "A=1");
    let dry = SolveOptions { dry_run: true, ..opts() };
    let would = solve(&worker, &e, &g, &[t], dry.clone()).await.unwrap();
    assert!(worker.runs().is_empty(), "a dry run ran {:?}", worker.runs());
    assert!(std::fs::read_dir(e._dir.path().join("cache")).unwrap().next().is_none(), "a dry run wrote a cache record");
    let real = solve(&worker, &e, &g, &[t], opts()).await.unwrap();
    assert_eq!(would, real, "the dry run's keys are not the build's");
    // Content changes: the dry run's key moves with it, and still nothing runs.
    worker.content.lock().unwrap().insert("copy".into(), b"files v2".to_vec());
    let before = worker.runs().len();
    let would = solve(&worker, &e, &g, &[t], dry).await.unwrap();
    assert_eq!(worker.runs().len(), before);
    assert_eq!(would["run"], real["run"]);
    assert_ne!(would["copy"], real["copy"]);
}

#[tokio::test]
async fn no_cache_reruns_every_step_but_sources_and_the_filter_only_its_stages() {
    let worker = Arc::new(FakeWorker::default());
    let e = env();
    let (g, t) = chain("sha256:aa", "A=1");
    solve(&worker, &e, &g, &[t], opts()).await.unwrap();
    let before = worker.runs().len();

    let all = SolveOptions { no_cache: true, ..opts() };
    solve(&worker, &e, &g, &[t], all).await.unwrap();
    assert_eq!(worker.runs()[before..], ["run", "copy"], "--no-cache reruns steps, not the base image");

    let before = worker.runs().len();
    let filtered = SolveOptions { no_cache_filter: vec!["FINAL".into()], ..opts() };
    solve(&worker, &e, &g, &[t], filtered).await.unwrap();
    assert_eq!(worker.runs()[before..], ["copy"], "--no-cache-filter final (any case) reruns only that stage");
}

#[tokio::test]
async fn identical_nodes_needed_by_several_targets_run_once() {
    let worker = Arc::new(FakeWorker { delay: Duration::from_millis(50), ..Default::default() });
    let e = env();
    let mut g = Graph::default();
    let base = g.add(image("sha256:aa"), vec![], "base");
    // Two stages (and two platforms' lowerings) that share one step definition.
    let shared1 = g.add_in_stage(exec(&["gen"], &[]), vec![base], "shared", Some("a"));
    let shared2 = g.add_in_stage(exec(&["gen"], &[]), vec![base], "shared again", Some("b"));
    assert_eq!(shared1, shared2, "one definition, one node");
    let a = g.add(exec(&["use-a"], &[]), vec![shared1], "a");
    let b = g.add(exec(&["use-b"], &[]), vec![shared2], "b");
    solve(&worker, &e, &g, &[a, b, a], opts()).await.unwrap();
    let runs = worker.runs();
    assert_eq!(runs.iter().filter(|r| *r == "shared").count(), 1, "{runs:?}");
    assert_eq!(runs.len(), 4, "{runs:?}");
}

#[tokio::test]
async fn a_failure_cancels_the_rest_and_names_the_step() {
    let worker = Arc::new(FakeWorker { delay: Duration::from_millis(20), ..Default::default() });
    worker.failing.lock().unwrap().push("run".into());
    let e = env();
    let (g, t) = chain("sha256:aa", "A=1");
    let err = solve(&worker, &e, &g, &[t], opts()).await.unwrap_err();
    assert!(err.contains("run failed"), "{err}");
    assert!(!worker.runs().contains(&"copy".to_string()), "a step after the failed one ran");
    // Nothing of the failed step was recorded: fixed, it runs (and the base is cached).
    worker.failing.lock().unwrap().clear();
    let before = worker.runs().len();
    solve(&worker, &e, &g, &[t], opts()).await.unwrap();
    assert_eq!(worker.runs()[before..], ["run", "copy"]);
}

/// The keys of `chain`'s three nodes, as any machine computes them, with `copy` reading
/// `content`.
fn chain_keys(g: &Graph, content: &[u8]) -> HashMap<String, [u8; 32]> {
    let id = |label: &str| *g.nodes.iter().find(|(_, n)| n.names[0] == label).unwrap().0;
    let base = cache_key(&id("base"), std::iter::empty(), None);
    let run = cache_key(&id("run"), [&base].into_iter(), None);
    let copy = cache_key(&id("copy"), [&run].into_iter(), Some(blake3::hash(content).as_bytes()));
    HashMap::from([("base".to_string(), base), ("run".to_string(), run), ("copy".to_string(), copy)])
}

fn imported(keys: &HashMap<String, [u8; 32]>, labels: &[&str]) -> HashMap<[u8; 32], (CacheRecord, String)> {
    labels
        .iter()
        .map(|l| {
            let rec = CacheRecord {
                output: Output::Layers(vec![LayerId(format!("remote-{l}"))]),
                name: l.to_string(),
                created: 0,
            };
            (keys[*l], (rec, "registry.example/cache:1".to_string()))
        })
        .collect()
}

#[tokio::test]
async fn imported_records_stay_remote_unless_a_step_runs_on_them() {
    let worker = Arc::new(FakeWorker::default());
    worker.content.lock().unwrap().insert("copy".into(), b"v1".to_vec());
    let e = env();
    let (g, t) = chain("sha256:aa", "A=1");
    let keys = chain_keys(&g, b"v1");
    // Another runner's cache holds every step: nothing runs, nothing is downloaded.
    let cache = e.cache.clone().with_imported(imported(&keys, &["base", "run", "copy"]));
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let s = Scheduler::new(worker.clone(), cache.clone(), opts(), ProgressSink::new(tx));
    let solved = s.solve(Arc::new(g.clone()), &[t]).await.unwrap();
    assert!(worker.runs().is_empty(), "{:?}", worker.runs());
    assert!(worker.materialized.lock().unwrap().is_empty(), "lazy: nothing was needed here");
    assert_eq!(solved[&t].imported.as_deref(), Some("registry.example/cache:1"));
    assert_eq!(solved[&t].cache_key, keys["copy"], "the keys are the other runner's");

    // The context changed: COPY runs, on its input made local (only that one).
    worker.content.lock().unwrap().insert("copy".into(), b"v2".to_vec());
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let s = Scheduler::new(worker.clone(), cache.clone(), opts(), ProgressSink::new(tx));
    s.solve(Arc::new(g.clone()), &[t]).await.unwrap();
    assert_eq!(worker.runs(), ["copy"]);
    assert_eq!(*worker.materialized.lock().unwrap(), ["run"]);

    // Asked for local targets (an output that writes files): the target is materialized.
    worker.materialized.lock().unwrap().clear();
    worker.content.lock().unwrap().insert("copy".into(), b"v1".to_vec());
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let s = Scheduler::new(worker.clone(), cache, opts(), ProgressSink::new(tx));
    s.solve_with(Arc::new(g), &[t], true).await.unwrap();
    assert_eq!(*worker.materialized.lock().unwrap(), ["copy"]);
}

#[tokio::test]
async fn an_imported_record_that_cannot_be_trusted_is_refused_and_the_step_runs() {
    let worker = Arc::new(FakeWorker::default());
    worker.content.lock().unwrap().insert("copy".into(), b"v2".to_vec());
    worker.untrusted.lock().unwrap().push("run".into());
    let e = env();
    let (g, t) = chain("sha256:aa", "A=1");
    let keys = chain_keys(&g, b"v1");
    let cache = e.cache.clone().with_imported(imported(&keys, &["base", "run"]));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let s = Scheduler::new(worker.clone(), cache, opts(), ProgressSink::new(tx));
    s.solve(Arc::new(g), &[t]).await.unwrap();
    // The run step's record was refused when COPY needed it: it ran, then COPY ran.
    assert_eq!(worker.runs(), ["run", "copy"]);
    let mut warned = false;
    while let Ok(ev) = rx.try_recv() {
        if let strata_solver::progress::ProgressEvent::Warning { message } = ev {
            warned |= message.contains("was refused") && message.contains("registry.example/cache:1");
        }
    }
    assert!(warned, "the refusal is reported");
}
