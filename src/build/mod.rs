//! `strata build`: flags → Dockerfile → build graph → solve → image → outputs.
//!
//! A build is a chain of phases, each a function of the few values it needs, each in
//! a module of its own:
//!
//! 1. [`plan`]: every flag checked and typed, no I/O (usage errors, exit code 2);
//! 2. [`source`]: the context (directory, URL or stdin) and the Dockerfile's bytes;
//! 3. [`dockerfile`]: parsed, linted; `--call=outline|targets|check` answered here;
//! 4. the store, opened (its lock is held from here to the end: `strata_oci::store`);
//! 5. [`inputs`]: local contexts with `.dockerignore`, named contexts, secrets, ssh;
//! 6. [`lowering`]: base images resolved, one graph for every platform;
//! 7. [`solving`]: the graph run or found in the cache — this store's, or one imported
//!    with `--cache-from` (`crate::cache`, read while the base images resolve);
//! 8. the export (`crate::outputs`), the cache export (`--cache-to`) and the report.
//!
//! Exit codes: 0 built; 1 the build failed — a Dockerfile error, a failed step, a
//! missing file, an unreachable registry (as buildx); 2 the command line is wrong.

pub mod dockerfile;
pub mod inputs;
pub mod lowering;
pub mod plan;
pub mod solving;
pub mod source;

use crate::cache::import::ImportedCache;
use crate::cli::{BuildArgs, Cli, ProgressMode};
use crate::history::record::History;
use crate::history::recorder::Recorder;
use crate::progress::Progress;
use crate::Result;

pub use plan::BuildPlan;

pub async fn run(cli: &Cli, args: &BuildArgs) -> Result<()> {
    let plan = BuildPlan::from_args(cli, args)?;
    let source = source::BuildSource::read(&plan).await?;
    let df = dockerfile::ParsedDockerfile::parse(&source, &plan)?;
    if df.answer_call(&plan)? {
        return Ok(());
    }
    let store = crate::open_store(cli)?;
    let mut inputs = inputs::BuildInputs::gather(&plan, &source)?;
    let progress = Progress::start(plan.progress);
    let identity = crate::history::recorder::BuildIdentity {
        context: if plan.remote { plan.context.clone() } else { source.context_dir.display().to_string() },
        dockerfile: source.dockerfile_path.display().to_string(),
        target: plan.target.clone(),
        platforms: plan.platforms.iter().map(|p| p.to_string()).collect(),
    };
    let mut recorder: Option<std::sync::Arc<Recorder>> = None;
    let outcome: Result<Outcome> = async {
        let client = strata_oci::registry::RegistryClient::new(crate::registry_options(cli))
            .map_err(|e| crate::Failure::build(format!("error: {e}")))?;
        // The imported caches are read while the base images resolve.
        let importing = (!plan.cache_from.is_empty() && plan.print_graph.is_none()).then(|| {
            let (from, client, store, sink) =
                (plan.cache_from.clone(), client.clone(), store.clone(), progress.sink().clone());
            tokio::spawn(async move { ImportedCache::read(&from, &client, &store, &sink).await })
        });
        let lowered = lowering::lower_all(cli, &plan, &df, &store, &mut inputs, source.epoch, progress.sink())?;
        let mut facts = plan.attest.any().then(|| crate::attest::BuildFacts::new(&plan, &source, args));
        if let Some(f) = facts.as_mut() {
            f.bases = lowered.bases.clone();
            f.downloads = lowered.downloads.clone();
        }
        if let Some(format) = plan.print_graph {
            return Ok(Outcome::Graph(render_graph(&lowered.graph, format, &lowered.targets)));
        }
        lowering::check_emulators(&lowered.graph, &plan.host)?;
        let imported = match importing {
            Some(task) => task.await.map_err(|e| crate::Failure::build(format!("error: importing the cache: {e}")))?,
            None => ImportedCache::default(),
        };
        let rec = std::sync::Arc::new(Recorder::new(
            lowered.steps.clone(),
            lowered.step_lines.clone(),
            History::at(store.root()),
            &identity,
            plan.no_cache_filter.clone(),
        ));
        recorder = Some(rec.clone());
        let solved = solving::solve(
            cli,
            args,
            &plan,
            &df,
            &store,
            inputs,
            lowered,
            imported,
            &client,
            source.epoch,
            progress.sink(),
            Some(&rec),
        )
        .await?;
        if plan.dry_run {
            return Ok(Outcome::DryRun);
        }
        if let Some(f) = facts.as_mut().filter(|_| plan.attest.provenance.is_some()) {
            let worker = solved.worker.clone();
            let selection = tokio::task::spawn_blocking(move || worker.context_selection(inputs::MAIN_CONTEXT))
                .await
                .map_err(|e| crate::Failure::build(format!("error: hashing the context: {e}")))?
                .map_err(|e| crate::Failure::build(format!("error: {e}")))?;
            f.context_files = Some(selection);
        }
        let inline = plan.cache_to.iter().any(|c| c.target == crate::cache::spec::ExportTarget::Inline);
        let exported = crate::outputs::export(crate::outputs::ExportRequest {
            args,
            store: &store,
            worker: &solved.worker,
            images: solved.images,
            epoch: source.epoch,
            progress: progress.sink().clone(),
            inline_cache: inline.then_some(&solved.graph),
            pushed_ahead: solved.pushed_ahead.as_ref(),
            client: &client,
            attest: facts.as_ref().map(|f| (&plan.attest, f)),
        })
        .await?;
        if !plan.cache_to.is_empty() {
            let specs = crate::outputs::output_specs(args)?;
            let layer_opts = crate::outputs::image_options(args, &specs, source.epoch)?;
            let cx = crate::cache::export::ExportContext {
                solved: &solved.graph,
                worker: &solved.worker,
                store: &store,
                client: &client,
                layer_opts: &layer_opts,
                progress: progress.sink(),
            };
            crate::cache::export::export_all(&plan.cache_to, &cx).await?;
        }
        Ok(Outcome::Built(exported))
    }
    .await;
    let summary = progress.finish().await;
    if let Some(rec) = recorder.filter(|_| !plan.dry_run) {
        let record = rec.finish(&identity, outcome.is_ok());
        if let Err(e) = rec.history().write(&record) {
            tracing::warn!("could not keep the build's record: {e}");
        }
    }
    match outcome? {
        Outcome::Graph(text) => print!("{text}"),
        Outcome::Built(exported) => report(plan.progress, &summary, &exported),
        Outcome::DryRun => {
            if plan.progress != ProgressMode::Rawjson {
                eprintln!(
                    "Dry run: {} step{} would run, {} cached; nothing was run or written",
                    summary.would_run,
                    if summary.would_run == 1 { "" } else { "s" },
                    summary.cached
                );
            }
        }
    }
    Ok(())
}

/// `--print-graph`.
fn render_graph(
    graph: &strata_solver::graph::Graph,
    format: plan::GraphFormat,
    targets: &[strata_solver::graph::NodeId],
) -> String {
    match format {
        plan::GraphFormat::Dot => graph.to_dot(targets),
        plan::GraphFormat::Json => format!("{}\n", serde_json::to_string_pretty(graph).unwrap_or_default()),
    }
}

/// What a build ended with.
enum Outcome {
    /// `--print-graph`: the graph, rendered.
    Graph(String),
    Built(crate::outputs::Exported),
    /// `--dry-run`: the verdicts were printed as progress.
    DryRun,
}

/// The last line: the image ID alone with `-q`, else a summary (none in rawjson).
fn report(mode: ProgressMode, summary: &crate::progress::Summary, exported: &crate::outputs::Exported) {
    match mode {
        ProgressMode::Quiet => println!("{}", exported.image_id),
        ProgressMode::Rawjson => {}
        _ => eprintln!(
            "Build complete in {:.1}s: {} step{} run, {} cached. Image {}",
            summary.elapsed.as_secs_f64(),
            summary.ran,
            if summary.ran == 1 { "" } else { "s" },
            summary.cached,
            exported.digest
        ),
    }
}
