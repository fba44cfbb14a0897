//! The sixth phase: the graph solved — cached steps found, the others run in runc, in
//! parallel up to `--jobs` — and each platform's result made an image to export. The
//! layers of the exported stages are written while later steps still run.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_executor::sandbox::Runc;
use strata_executor::worker::{LocalWorker, WorkerConfig};
use strata_oci::image::Descriptor;
use strata_oci::reference::Reference;
use strata_oci::registry::{PushOptions, RegistryClient};
use strata_oci::store::BlobStore;
use strata_solver::cache::CacheIndex;
use strata_solver::graph::{Graph, NodeId};
use strata_solver::progress::ProgressSink;
use strata_solver::scheduler::{Scheduler, SolveOptions};
use strata_solver::worker::WorkerError;

use super::dockerfile::ParsedDockerfile;
use super::inputs::BuildInputs;
use super::lowering::LoweredBuild;
use super::plan::BuildPlan;
use crate::cli::{BuildArgs, Cli};
use crate::outputs::PlatformImage;
use crate::{Failure, Result};

/// The solved build: one image per platform, the worker that holds their snapshots
/// (the export reads them), and every solved step (a cache export reads those).
pub struct SolvedBuild {
    pub images: Vec<PlatformImage>,
    pub worker: Arc<LocalWorker>,
    pub graph: crate::cache::export::SolvedGraph,
    /// The layers pushed while the build ran (`--push`).
    pub pushed_ahead: Option<PushAhead>,
}

/// Layer blobs pushed while the build runs, each as soon as it is written, to each
/// push target (by clones of the build's registry client, which remembers them: the
/// push at the end asks nothing about them).
#[derive(Clone, Default)]
pub struct PushAhead {
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl PushAhead {
    /// Wait for the layers still on their way. One that failed is pushed again, and
    /// reported, by the final push.
    pub async fn finish(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn solve(
    cli: &Cli,
    args: &BuildArgs,
    plan: &BuildPlan,
    df: &ParsedDockerfile,
    store: &BlobStore,
    inputs: BuildInputs,
    lowered: LoweredBuild,
    imported: crate::cache::import::ImportedCache,
    client: &RegistryClient,
    epoch: Option<i64>,
    progress: &ProgressSink,
    recorder: Option<&Arc<crate::history::recorder::Recorder>>,
) -> Result<SolvedBuild> {
    let root = store.root().to_path_buf();
    let runc =
        Runc::locate(cli.runtime.as_deref(), root.join("runc")).map_err(|e| Failure::build(format!("error: {e}")))?;
    runc.clean_stale().await;
    let worker = Arc::new(
        LocalWorker::new(WorkerConfig {
            root: root.clone(),
            runc,
            contexts: inputs.contexts.clone(),
            secrets: inputs.secrets.clone(),
            ssh: inputs.ssh.clone(),
            patterns: inputs.patterns.clone(),
            hostname: "buildkitsandbox".into(),
            fetcher: Some(imported.fetcher(client, store)),
            remote_layers: imported.remote_layers,
            mount_seeds: imported.mount_seeds,
        })
        .map_err(|e| Failure::build(format!("error: {e}")))?,
    );
    let cache = CacheIndex::open(&root)
        .map_err(|e| Failure::build(format!("error: cache index: {e}")))?
        .with_imported(imported.records);
    let graph = Arc::new(lowered.graph);
    if let Some(r) = recorder {
        r.attach(graph.clone(), worker.clone(), cache.imported_len());
    }
    let solve_opts = SolveOptions {
        jobs: plan.jobs.unwrap_or_else(|| SolveOptions::default().jobs),
        no_cache: plan.no_cache,
        no_cache_filter: plan.no_cache_filter.clone(),
        dry_run: plan.dry_run,
        observer: recorder.map(|r| r.clone() as Arc<dyn strata_solver::scheduler::StepObserver>),
    };
    let mut pushed_ahead = None;
    if solve_opts.jobs > 1 && !plan.dry_run {
        if let Some(opts) = crate::outputs::layer_options(args, epoch)? {
            let push_to = crate::outputs::push_targets(&crate::outputs::output_specs(args)?, args)?;
            let push = (!push_to.is_empty()).then(|| {
                let ahead = PushAhead::default();
                pushed_ahead = Some(ahead.clone());
                (client.clone(), push_to, ahead)
            });
            write_layers_ahead(&worker, store, &graph, &lowered.targets, opts, push);
        }
    }
    let scheduler = Scheduler::new(worker.clone(), cache.clone(), solve_opts, progress.clone());
    let cancel = scheduler.canceller();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = cancel.send(true);
        }
    });
    // Imported records stay blobs unless an output needs the result here.
    let solved = scheduler.solve_with(graph.clone(), &lowered.targets, plan.needs_local_result).await;
    ctrl_c.abort();
    worker.flush();
    drop(inputs);
    let solved = solved.map_err(|e| Failure::build(solve_error(&e, df, &lowered.step_lines)))?;
    let mut images = Vec::with_capacity(lowered.targets.len());
    let platforms = lowered.configs.iter().map(|c| c.platform()).collect();
    for (target, config) in lowered.targets.iter().zip(lowered.configs) {
        let result =
            solved.get(target).ok_or_else(|| Failure::build("error: the solver returned no result for the target"))?;
        // Without SOURCE_DATE_EPOCH, an unchanged result keeps its first build's timestamps.
        let config = if epoch.is_none() && !plan.dry_run {
            crate::created::reuse(&root, &result.cache_key, config)
        } else {
            config
        };
        images.push(PlatformImage { layers: result.output.layers().to_vec(), config });
    }
    let graph = crate::cache::export::SolvedGraph { graph, targets: lowered.targets, platforms, nodes: solved, cache };
    Ok(SolvedBuild { images, worker, graph, pushed_ahead })
}

/// The message of a failed solve, with where the failing step is in the Dockerfile (a
/// cancelled build failed nowhere).
fn solve_error(
    e: &strata_solver::scheduler::SolveError,
    df: &ParsedDockerfile,
    step_lines: &BTreeMap<String, usize>,
) -> String {
    let mut message = match &e.error {
        WorkerError::StepFailed { message, last_lines, .. } => {
            let mut s = format!("ERROR: failed to solve: {}: {message}", e.step);
            if !last_lines.is_empty() {
                s.push_str("\n------\n");
                for l in last_lines {
                    s.push_str(&format!(" > {l}\n"));
                }
                s.push_str("------");
            }
            s
        }
        WorkerError::Cancelled => format!("ERROR: build cancelled ({})", e.step),
        other => format!("ERROR: failed to solve: {}: {other}", e.step),
    };
    if let Some(line) = step_lines.get(&e.step).filter(|_| !matches!(e.error, WorkerError::Cancelled)) {
        message.push('\n');
        message.push_str(&crate::diagnostics::step_location(&df.path, &df.text, *line));
    }
    message
}

/// Why a layer pushed ahead did not arrive, in the debug log (the final push sends it
/// again and reports).
fn log_failed_push_ahead(
    target: &Reference,
    desc: &Descriptor,
    pushed: std::result::Result<(), strata_oci::registry::RegistryError>,
) {
    if let Err(e) = &pushed {
        tracing::debug!(%target, digest = %desc.digest, "pushing a layer ahead failed: {e}");
    }
}

/// Write the image layer of each step of the exported stages as soon as the step is
/// done, while later steps run, rather than all of them after the last one: the
/// export then finds them written (or waits for the one still being written). With
/// `push`, each layer written compressed (as it will be pushed) is uploaded to every
/// push target straight away too.
fn write_layers_ahead(
    worker: &Arc<LocalWorker>,
    store: &BlobStore,
    graph: &Graph,
    targets: &[NodeId],
    opts: strata_exporter::image::ExportOptions,
    push: Option<(RegistryClient, Vec<Reference>, PushAhead)>,
) {
    let runtime = tokio::runtime::Handle::current();
    let push = push.map(Arc::new);
    let chain: std::collections::HashSet<_> = targets.iter().flat_map(|t| graph.layer_chain(t)).collect();
    let snapshots = worker.snapshots().clone();
    let store = store.clone();
    let opts = Arc::new(opts);
    worker.on_layer(Arc::new(move |node, layer| {
        if !chain.contains(node) {
            return;
        }
        let input = strata_exporter::image::LayerInput {
            dir: snapshots.layer_dir(layer),
            meta_dir: snapshots.root().join(&layer.0),
            source: None,
        };
        let (store, opts, push, runtime) = (store.clone(), opts.clone(), push.clone(), runtime.clone());
        tokio::task::spawn_blocking(move || {
            let blob = match strata_exporter::image::ensure_layer(&store, &input, &opts) {
                Ok(Some(blob)) => blob,
                Ok(None) => return,
                Err(e) => {
                    // The export writes it again and reports what goes wrong.
                    tracing::debug!(layer = %input.dir.display(), error = %e, "writing a layer ahead failed");
                    return;
                }
            };
            let plain = blob.media_type.ends_with(".tar") || blob.media_type.ends_with("tar");
            let Some(push) = push.as_deref().filter(|_| !plain) else { return };
            let (client, targets, ahead) = push;
            let desc = Descriptor::new(blob.media_type.clone(), blob.digest.clone(), blob.size);
            let mut tasks = ahead.tasks.lock().unwrap_or_else(|p| p.into_inner());
            for target in targets {
                let (client, target, desc, store) = (client.clone(), target.clone(), desc.clone(), store.clone());
                tasks.push(runtime.spawn(async move {
                    let pushed = client.push_blob(&target, &desc, &store, &PushOptions::default()).await;
                    log_failed_push_ahead(&target, &desc, pushed);
                }));
            }
        });
    }));
}
