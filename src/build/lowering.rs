//! The fifth phase: base images resolved (pulled as needed) and the Dockerfile lowered
//! to one build graph, once per target platform; the platforms' graphs are merged, so
//! what they share (the context, `FROM --platform=$BUILDPLATFORM` stages) is built once.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_executor::context::LocalContext;
use strata_frontend::lower::{self, LowerOptions};
use strata_oci::image::{ImageConfig, Platform};
use strata_oci::store::BlobStore;
use strata_solver::graph::{Graph, NodeId};
use strata_solver::progress::{ProgressEvent, ProgressSink};

use super::dockerfile::ParsedDockerfile;
use super::inputs::{BuildInputs, MAIN_CONTEXT};
use super::plan::BuildPlan;
use crate::cli::Cli;
use crate::diagnostics::{dockerfile_error, dockerfile_warning};
use crate::resolve::{PullPolicy, Resolver};
use crate::{Failure, Result};

/// The build graph of every platform, and what the later phases need of the lowering.
pub struct LoweredBuild {
    pub graph: Graph,
    /// One target node per platform, in `--platform` order.
    pub targets: Vec<NodeId>,
    /// Each platform's image configuration.
    pub configs: Vec<ImageConfig>,
    /// Step → its Dockerfile line, for error messages.
    pub step_lines: BTreeMap<String, usize>,
    /// Step → where it comes from (the build's record compares steps by this).
    pub steps: BTreeMap<String, lower::StepSource>,
    /// The base images resolved, per platform (provenance names them).
    pub bases: Vec<crate::resolve::ResolvedBase>,
    /// `ADD URL` downloads: URL and digest.
    pub downloads: Vec<(String, strata_oci::digest::Digest)>,
}

pub fn lower_all(
    cli: &Cli,
    plan: &BuildPlan,
    df: &ParsedDockerfile,
    store: &BlobStore,
    inputs: &mut BuildInputs,
    epoch: Option<i64>,
    progress: &ProgressSink,
) -> Result<LoweredBuild> {
    let created = Some(match epoch {
        Some(e) => strata_oci::names::rfc3339(e),
        None => strata_oci::names::now_rfc3339(),
    });
    let base_opts = LowerOptions {
        build_args: plan.build_args.clone(),
        target: plan.target.clone(),
        target_platform: plan.host.clone(),
        build_platform: plan.host.clone(),
        named_contexts: inputs.named.clone(),
        main_context: MAIN_CONTEXT.to_string(),
        labels: plan.labels.clone(),
        network: plan.network,
        allow_insecure: plan.allow_insecure,
        extra_hosts: plan.add_hosts.clone(),
        shm_size: plan.shm_size,
        ulimits: plan.ulimits.clone(),
        created,
        platform_label: None,
    };
    let client = strata_oci::registry::RegistryClient::new(crate::registry_options(cli))
        .map_err(|e| Failure::build(format!("error: {e}")))?;
    let client = if plan.pull == PullPolicy::Always { client.refetching() } else { client };
    let mut resolver = Resolver::new(client, store.clone(), store.root().to_path_buf(), plan.pull, progress.clone());
    resolver.mirrors = cli.settings.registry.mirrors.clone();
    let mut lowerings = Vec::with_capacity(plan.platforms.len());
    for platform in &plan.platforms {
        let opts = LowerOptions {
            target_platform: platform.clone(),
            platform_label: (plan.platforms.len() > 1).then(|| platform.to_string()),
            ..base_opts.clone()
        };
        let lowered = lower::lower(&df.dockerfile, &opts, &mut resolver)
            .map_err(|e| Failure::build(dockerfile_error(&df.path, &df.text, e.line, None, &e.message)))?;
        lowerings.push(lowered);
    }
    // Files ADD downloaded are local contexts of their own.
    for (name, dir) in std::mem::take(&mut resolver.url_contexts) {
        inputs.contexts.insert(name, LocalContext { dir, ignore: Arc::new(|_: &str, _: bool| false) });
    }
    let mut warned = Vec::new();
    for w in lowerings.iter().flat_map(|l| &l.warnings) {
        if !warned.contains(w) {
            progress.send(ProgressEvent::Warning { message: dockerfile_warning(&df.path, w.line, &w.message) });
            warned.push(w.clone());
        }
    }
    let mut graph = Graph::default();
    let mut targets = Vec::new();
    let mut configs = Vec::new();
    let mut step_lines = BTreeMap::new();
    let mut steps = BTreeMap::new();
    for l in lowerings {
        graph.merge(l.graph);
        targets.push(l.target);
        configs.push(l.config);
        step_lines.extend(l.step_lines);
        steps.extend(l.steps);
    }
    let (bases, downloads) = (std::mem::take(&mut resolver.bases), std::mem::take(&mut resolver.downloads));
    Ok(LoweredBuild { graph, targets, configs, step_lines, steps, bases, downloads })
}

/// Every RUN of a foreign platform needs a QEMU emulator in binfmt_misc: say which one
/// is missing before anything runs.
pub fn check_emulators(graph: &Graph, host: &Platform) -> Result<()> {
    let mut checked: Vec<&Platform> = Vec::new();
    for node in graph.nodes.values() {
        let strata_solver::graph::Op::Exec(exec) = &node.op else { continue };
        if checked.contains(&&exec.platform) {
            continue;
        }
        checked.push(&exec.platform);
        if let Some(arch) = strata_executor::emulation::qemu_arch(&exec.platform, host) {
            strata_executor::emulation::check_emulator(&exec.platform, &arch)
                .map_err(|e| Failure::build(format!("error: {e}")))?;
        }
    }
    Ok(())
}
