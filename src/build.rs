//! `strata build`: flags → Dockerfile → build graph → solve → image → outputs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_executor::context::{ExcludeFn, LocalContext};
use strata_executor::sandbox::Runc;
use strata_executor::worker::{LocalWorker, PatternFactory, SecretSource, WorkerConfig};
use strata_frontend::dockerignore::{read_ignore_file, PatternMatcher};
use strata_frontend::lower::{self, LowerOptions, NamedContext};
use strata_oci::image::Platform;
use strata_oci::store::BlobStore;
use strata_solver::cache::CacheIndex;
use strata_solver::graph::NetworkMode;
use strata_solver::progress::{ProgressEvent, ProgressSink};
use strata_solver::scheduler::{Scheduler, SolveOptions};
use strata_solver::worker::WorkerError;

use crate::cli::{BuildArgs, Cli};
use crate::diagnostics::{dockerfile_error, dockerfile_warning};
use crate::resolve::{PullPolicy, Resolver};
use crate::{Failure, Result};

/// The name the main build context is registered under.
const MAIN_CONTEXT: &str = "context";

/// Flags buildx accepts that strata does not support yet: fail loudly.
fn reject_unsupported(args: &BuildArgs) -> Result<()> {
    if !args.cache_from.is_empty() || !args.cache_to.is_empty() {
        return Err(Failure::usage(
            "error: --cache-from/--cache-to are not supported yet: strata keeps its cache in --root; share that directory between CI runs instead",
        ));
    }
    if args.load {
        let sock = crate::docker_load::daemon_socket().map_err(|e| Failure::usage(format!("error: --load: {e}")))?;
        if !sock.exists() {
            return Err(Failure::usage(format!(
                "error: --load: no Docker daemon is reachable at {}; use -o type=docker,dest=image.tar and `docker load -i image.tar`",
                sock.display()
            )));
        }
        if args.platform.len() > 1 {
            return Err(Failure::usage(
                "error: --load cannot hold several platforms: a Docker daemon loads one; use --push or -o type=oci",
            ));
        }
    }
    if args.shm_size.is_some() {
        return Err(Failure::usage("error: --shm-size is not supported yet (RUN steps get a 64MB /dev/shm)"));
    }
    if !args.ulimit.is_empty() {
        return Err(Failure::usage("error: --ulimit is not supported yet (RUN steps get nofile=1048576)"));
    }
    if args.platform.len() > 1 {
        for o in &args.outputs {
            let kind = crate::outputs::parse_output(o)?.kind;
            if kind == "docker" || kind == "tar" {
                return Err(Failure::usage(format!(
                    "error: -o type={kind} cannot hold several platforms ({}): use type=oci, type=local, type=image or --push",
                    args.platform.join(",")
                )));
            }
        }
    }
    match args.call.as_str() {
        "build" | "outline" | "targets" | "check" => {}
        other => {
            return Err(Failure::usage(format!("error: --call={other}: expected build, outline, targets or check")))
        }
    }
    for a in &args.allow {
        if a != "security.insecure" && a != "network.host" {
            return Err(Failure::usage(format!(
                "error: --allow {a}: unknown entitlement (security.insecure, network.host)"
            )));
        }
    }
    Ok(())
}

fn parse_kv(list: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for s in list {
        match s.split_once('=') {
            Some((k, v)) => {
                m.insert(k.to_string(), v.to_string());
            }
            None if what == "--build-arg" => {
                // `--build-arg NAME` takes the value from the environment, as docker does.
                if let Ok(v) = std::env::var(s) {
                    m.insert(s.clone(), v);
                }
            }
            None => return Err(Failure::usage(format!("error: {what} {s:?}: expected KEY=VALUE"))),
        }
    }
    Ok(m)
}

/// The build context directory, and a temp dir that must live as long as the build.
fn prepare_context(
    args: &BuildArgs,
    dockerfile_from_stdin: bool,
) -> Result<(PathBuf, Option<tempfile::TempDir>, Option<Vec<u8>>)> {
    if args.context != "-" {
        let p = PathBuf::from(&args.context);
        if !p.is_dir() {
            return Err(Failure::usage(format!("error: build context {:?} is not a directory", args.context)));
        }
        let p = std::fs::canonicalize(&p)
            .map_err(|e| Failure::usage(format!("error: build context {}: {e}", args.context)))?;
        return Ok((p, None, None));
    }
    if dockerfile_from_stdin {
        return Err(Failure::usage("error: -f - and a context from - cannot both read standard input"));
    }
    use std::io::Read;
    let mut data = Vec::new();
    std::io::stdin()
        .read_to_end(&mut data)
        .map_err(|e| Failure::usage(format!("error: reading the context from stdin: {e}")))?;
    let tmp = tempfile::tempdir().map_err(|e| Failure::build(format!("error: {e}")))?;
    let is_tar = data.len() > 262 && &data[257..262] == b"ustar"
        || data.starts_with(&[0x1f, 0x8b])
        || data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    if is_tar {
        let mut reader = strata_executor::unpack::open_decompressed(&data[..])
            .map_err(|e| Failure::usage(format!("error: context from stdin: {e}")))?;
        let mut plain = Vec::new();
        reader.read_to_end(&mut plain).map_err(|e| Failure::usage(format!("error: context from stdin: {e}")))?;
        let mut ar = tar::Archive::new(&plain[..]);
        for entry in ar.entries().map_err(|e| Failure::usage(format!("error: context from stdin: {e}")))? {
            let mut entry = entry.map_err(|e| Failure::usage(format!("error: context from stdin: {e}")))?;
            // unpack_in refuses paths that leave the directory.
            entry.unpack_in(tmp.path()).map_err(|e| Failure::usage(format!("error: context from stdin: {e}")))?;
        }
        Ok((tmp.path().to_path_buf(), Some(tmp), None))
    } else {
        // A Dockerfile alone, with an empty context.
        Ok((tmp.path().to_path_buf(), Some(tmp), Some(data)))
    }
}

fn store_root(cli: &Cli) -> PathBuf {
    crate::store_root(cli)
}

pub async fn run(cli: &Cli, args: &BuildArgs) -> Result<()> {
    reject_unsupported(args)?;
    let dockerfile_from_stdin = args.file.as_deref() == Some("-");
    let remote = crate::remote_context::is_remote(&args.context);
    let (context_dir, _tmp_ctx, stdin_dockerfile) = if remote {
        let tmp = tempfile::tempdir().map_err(|e| Failure::build(format!("error: {e}")))?;
        let fetched = crate::remote_context::fetch(&args.context, tmp.path())
            .await
            .map_err(|e| Failure::build(format!("error: build context: {e}")))?;
        (fetched.context, Some(tmp), fetched.dockerfile)
    } else {
        prepare_context(args, dockerfile_from_stdin)?
    };

    // The Dockerfile.
    let (dockerfile_path, source) = if dockerfile_from_stdin {
        use std::io::Read;
        let mut s = Vec::new();
        std::io::stdin()
            .read_to_end(&mut s)
            .map_err(|e| Failure::usage(format!("error: reading the Dockerfile from stdin: {e}")))?;
        (PathBuf::from("Dockerfile"), s)
    } else if let Some(d) = stdin_dockerfile {
        (PathBuf::from("Dockerfile"), d)
    } else {
        let p = match &args.file {
            // With a remote context, -f names a file in it (as buildx).
            Some(f) if remote && !f.starts_with('/') => context_dir.join(f),
            Some(f) => PathBuf::from(f),
            None => context_dir.join("Dockerfile"),
        };
        let bytes = match read_confined(&p, &context_dir, MAX_DOCKERFILE) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Err(Failure::usage(format!(
                    "error: cannot read the Dockerfile {}: no such file (symlinks are followed only inside its directory or the context)",
                    p.display()
                )))
            }
            Err(e) => {
                return Err(Failure::usage(format!("error: cannot read the Dockerfile {}: {e}", p.display())))
            }
        };
        (p, bytes)
    };
    let source_text = String::from_utf8_lossy(&source).to_string();
    let shown_path = dockerfile_path.clone();

    let parsed = strata_frontend::parse(&source).map_err(|e| {
        Failure::usage(dockerfile_error(&shown_path, &source_text, Some(e.start_line), e.column, &e.message))
    })?;
    if let Some(syntax) = &parsed.directives.syntax {
        let s = syntax.trim_start_matches("docker.io/");
        let builtin =
            s == "docker/dockerfile" || s.starts_with("docker/dockerfile:") || s.starts_with("docker/dockerfile@");
        let upstream = s.starts_with("docker/dockerfile-upstream");
        let line = parsed.directives.seen.iter().find(|(n, _, _)| n == "syntax").map(|(_, _, l)| *l);
        if upstream {
            eprintln!(
                "{}",
                dockerfile_warning(
                    &shown_path,
                    line,
                    &format!("syntax {syntax:?}: using strata's built-in Dockerfile frontend instead")
                )
            );
        } else if !builtin {
            let message = format!(
                "syntax {syntax:?}: strata does not run frontend images; it accepts docker/dockerfile:1 (its built-in frontend) — remove the directive or point it at docker/dockerfile:1"
            );
            if args.call == "build" {
                return Err(Failure::usage(dockerfile_error(&shown_path, &source_text, line, None, &message)));
            }
            eprintln!("{}", dockerfile_warning(&shown_path, line, &message));
        }
    }
    for w in &parsed.warnings {
        eprintln!("{}", dockerfile_warning(&shown_path, Some(w.line), &w.short));
    }
    let dockerfile = strata_frontend::instructions::parse_dockerfile(&parsed).map_err(|mut e| {
        e.locate_column(&source_text);
        Failure::usage(dockerfile_error(&shown_path, &source_text, Some(e.location.start_line), e.column, &e.message()))
    })?;
    for w in &dockerfile.warnings {
        eprintln!(
            "{}",
            dockerfile_warning(&shown_path, Some(w.location.start_line), &format!("{}: {}", w.rule.name(), w.message))
        );
    }

    let build_args = parse_kv(&args.build_args, "--build-arg")?;
    match args.call.as_str() {
        "outline" => {
            let host = Platform::host().to_string();
            let target_p = args.platform.first().cloned().unwrap_or_else(|| host.clone());
            let mut o =
                strata_frontend::outline::OutlineOptions::for_platforms(&host, &target_p, args.target.as_deref());
            o.build_args = build_args.clone();
            let outline = strata_frontend::outline::outline(&dockerfile, &o)
                .map_err(|e| Failure::usage(format!("error: {e}")))?;
            print!("{}", outline.to_text());
            return Ok(());
        }
        "targets" => {
            print!("{}", strata_frontend::outline::targets(&dockerfile).to_text());
            return Ok(());
        }
        "check" => {
            let n = parsed.warnings.len() + dockerfile.warnings.len();
            if n == 0 {
                println!("Check complete, no warnings found.");
                return Ok(());
            }
            return Err(Failure::build(format!("Check complete, {n} warning{} found.", if n == 1 { "" } else { "s" })));
        }
        _ => {}
    }

    // Platforms: each gets its own lowering; their graphs are merged, so what they
    // share (the context, `FROM --platform=$BUILDPLATFORM` stages) is built once.
    let host = Platform::host();
    let platforms = target_platforms(&args.platform, &host)?;

    // The store.
    let root = store_root(cli);
    std::fs::create_dir_all(&root).map_err(|e| Failure::build(format!("error: store {}: {e}", root.display())))?;
    let store = BlobStore::open(&root).map_err(|e| Failure::build(format!("error: {e}")))?;
    let _prune_guard =
        crate::prune::shared_lock(&root).map_err(|e| Failure::build(format!("error: locking the store: {e}")))?;

    // Contexts.
    let ignore_file = strata_frontend::dockerignore::ignore_file_for(&context_dir, &dockerfile_path);
    let ignore_patterns = match &ignore_file {
        Some(f) => match read_confined(f, &context_dir, MAX_DOCKERFILE) {
            Ok(b) => read_ignore_file(&String::from_utf8_lossy(&b.unwrap_or_default())),
            Err(e) => return Err(Failure::usage(format!("error: cannot read {}: {e}", f.display()))),
        },
        None => Vec::new(),
    };
    let patterns: PatternFactory = Arc::new(|pats: &[String]| -> std::result::Result<ExcludeFn, String> {
        if pats.is_empty() {
            return Ok(Arc::new(|_: &str, _: bool| false));
        }
        let m = PatternMatcher::new(pats).map_err(|e| format!("invalid exclude pattern: {e}"))?;
        Ok(Arc::new(move |p: &str, _d: bool| m.matches_or_parent_matches(p).unwrap_or(false)))
    });
    let main_ignore = patterns(&ignore_patterns).map_err(|e| {
        Failure::usage(format!("error: {}: {e}", ignore_file.map(|f| f.display().to_string()).unwrap_or_default()))
    })?;
    let mut contexts = HashMap::new();
    contexts.insert(MAIN_CONTEXT.to_string(), LocalContext { dir: context_dir.clone(), ignore: main_ignore });
    let mut named = BTreeMap::new();
    for spec in &args.build_contexts {
        let (name, value) = spec
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("error: --build-context {spec:?}: expected NAME=VALUE")))?;
        if value.starts_with("docker-image://") || value.starts_with("oci-layout://") {
            named.insert(name.to_string(), NamedContext::Image(value.to_string()));
        } else if value.contains("://") {
            return Err(Failure::usage(format!(
                "error: --build-context {spec}: only paths, docker-image:// and oci-layout:// are supported"
            )));
        } else {
            let dir = std::fs::canonicalize(value)
                .map_err(|e| Failure::usage(format!("error: --build-context {spec}: {e}")))?;
            let local = format!("ctx:{name}");
            contexts.insert(local.clone(), LocalContext { dir, ignore: Arc::new(|_: &str, _: bool| false) });
            named.insert(name.to_string(), NamedContext::Local(local));
        }
    }

    // Secrets and ssh.
    let mut secrets = HashMap::new();
    for s in &args.secrets {
        let fields: BTreeMap<String, String> =
            s.split(',').filter_map(|f| f.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect();
        let id = fields
            .get("id")
            .cloned()
            .ok_or_else(|| Failure::usage(format!("error: --secret {s:?}: id= is required")))?;
        let source = if let Some(src) = fields.get("src").or_else(|| fields.get("source")) {
            SecretSource::File(PathBuf::from(src))
        } else if let Some(env) = fields.get("env") {
            SecretSource::Env(env.clone())
        } else if std::env::var_os(&id).is_some() {
            SecretSource::Env(id.clone())
        } else {
            return Err(Failure::usage(format!("error: --secret {s:?}: give src=FILE or env=VAR")));
        };
        secrets.insert(id, source);
    }
    // An agent socket is passed on; key files are served by an agent of the build's own.
    let mut ssh = HashMap::new();
    let mut key_agents = Vec::new();
    for s in &args.ssh {
        let (id, paths) = match s.split_once('=') {
            Some((id, p)) => (id.to_string(), p.split(',').map(PathBuf::from).collect::<Vec<_>>()),
            None => (
                s.clone(),
                vec![std::env::var_os("SSH_AUTH_SOCK")
                    .map(PathBuf::from)
                    .ok_or_else(|| Failure::usage("error: --ssh default: SSH_AUTH_SOCK is not set"))?],
            ),
        };
        let is_socket = |p: &PathBuf| {
            std::fs::metadata(p).map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())).unwrap_or(false)
        };
        if let [one] = paths.as_slice() {
            if is_socket(one) {
                ssh.insert(id, one.clone());
                continue;
            }
        }
        for p in &paths {
            if !p.is_file() {
                return Err(Failure::usage(format!(
                    "error: --ssh {s}: {} is neither an agent socket nor a key file",
                    p.display()
                )));
            }
        }
        let agent = crate::ssh_keys::KeyAgent::start(&id, &paths).map_err(|e| Failure::usage(format!("error: {e}")))?;
        ssh.insert(id, agent.socket.clone());
        key_agents.push(agent);
    }

    let network = match args.network.as_str() {
        "default" | "host" => NetworkMode::Host,
        "none" => NetworkMode::None,
        other => return Err(Failure::usage(format!("error: --network={other}: expected default, host or none"))),
    };
    let epoch = crate::outputs::source_date_epoch(args, &build_args, &context_dir)?;
    let created = Some(match epoch {
        Some(e) => strata_oci::names::rfc3339(e),
        None => strata_oci::names::now_rfc3339(),
    });
    let base_opts = LowerOptions {
        build_args: build_args.clone(),
        target: args.target.clone(),
        target_platform: host.clone(),
        build_platform: host.clone(),
        named_contexts: named,
        main_context: MAIN_CONTEXT.to_string(),
        labels: parse_kv(&args.labels, "--label")?,
        network,
        allow_insecure: args.allow.iter().any(|a| a == "security.insecure"),
        extra_hosts: args.add_hosts.clone(),
        created,
        platform_label: None,
    };

    // Progress.
    let mode = crate::progress::effective_mode(args.progress, args.quiet);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let sink = ProgressSink::new(tx);
    let printer = tokio::spawn(crate::progress::print(mode, rx));

    // Resolve base images and lower.
    let reg_opts = crate::registry_options(cli);
    let client =
        strata_oci::registry::RegistryClient::new(reg_opts).map_err(|e| Failure::build(format!("error: {e}")))?;
    let policy = match args.pull.as_deref() {
        None | Some("missing") | Some("false") => PullPolicy::Missing,
        Some("always") | Some("true") => PullPolicy::Always,
        Some("never") => PullPolicy::Never,
        Some(other) => return Err(Failure::usage(format!("error: --pull={other}: expected always, missing or never"))),
    };
    let pull_client = if policy == PullPolicy::Always { client.clone().refetching() } else { client.clone() };
    let mut resolver = Resolver::new(pull_client, store.clone(), root.clone(), policy, sink.clone());
    resolver.mirrors = cli.settings.registry.mirrors.clone();
    let mut lowerings = Vec::with_capacity(platforms.len());
    for platform in &platforms {
        let opts = LowerOptions {
            target_platform: platform.clone(),
            platform_label: (platforms.len() > 1).then(|| platform.to_string()),
            ..base_opts.clone()
        };
        match lower::lower(&dockerfile, &opts, &mut resolver) {
            Ok(l) => lowerings.push(l),
            Err(e) => {
                drop(resolver);
                drop(sink);
                let _ = printer.await;
                let code = if e.message.contains("could not be found")
                    || e.message.contains("circular")
                    || e.message.contains("invalid stage")
                {
                    2
                } else {
                    1
                };
                let text = dockerfile_error(&shown_path, &source_text, e.line, None, &e.message);
                return Err(Failure { code, message: text });
            }
        }
    }
    // Files ADD downloaded are local contexts of their own.
    for (name, dir) in std::mem::take(&mut resolver.url_contexts) {
        contexts.insert(name, LocalContext { dir, ignore: Arc::new(|_: &str, _: bool| false) });
    }
    drop(resolver);
    let mut warned = Vec::new();
    for w in lowerings.iter().flat_map(|l| &l.warnings) {
        if !warned.contains(w) {
            sink.send(ProgressEvent::Warning { message: dockerfile_warning(&shown_path, w.line, &w.message) });
            warned.push(w.clone());
        }
    }
    let targets: Vec<_> = lowerings.iter().map(|l| l.target).collect();
    let step_lines: BTreeMap<String, usize> =
        lowerings.iter().flat_map(|l| l.step_lines.iter().map(|(k, v)| (k.clone(), *v))).collect();
    let mut graph = strata_solver::graph::Graph::default();
    for l in &lowerings {
        graph.merge(l.graph.clone());
    }
    if let Some(fmt) = &args.print_graph {
        drop(sink);
        let _ = printer.await;
        match fmt.as_str() {
            "dot" => print!("{}", graph.to_dot(&targets)),
            "json" => println!("{}", serde_json::to_string_pretty(&graph).unwrap_or_default()),
            other => return Err(Failure::usage(format!("error: --print-graph={other}: expected dot or json"))),
        }
        return Ok(());
    }
    if let Err(e) = check_emulators(&graph, &host) {
        drop(sink);
        let _ = printer.await;
        return Err(Failure::build(format!("error: {e}")));
    }

    // Solve.
    let layer_options = match crate::outputs::layer_options(args, epoch) {
        Ok(o) => o,
        Err(e) => {
            drop(sink);
            let _ = printer.await;
            return Err(e);
        }
    };
    let runc =
        Runc::locate(cli.runtime.as_deref(), root.join("runc")).map_err(|e| Failure::build(format!("error: {e}")))?;
    runc.clean_stale().await;
    let worker = Arc::new(
        LocalWorker::new(WorkerConfig {
            root: root.clone(),
            runc,
            contexts,
            secrets,
            ssh,
            patterns,
            hostname: "buildkitsandbox".into(),
        })
        .map_err(|e| Failure::build(format!("error: {e}")))?,
    );
    let cache = CacheIndex::open(&root).map_err(|e| Failure::build(format!("error: cache index: {e}")))?;
    let solve_opts = SolveOptions {
        jobs: cli.jobs.unwrap_or_else(|| SolveOptions::default().jobs),
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
    };
    if solve_opts.jobs > 1 {
        if let Some(opts) = layer_options {
            write_layers_ahead(&worker, &store, &graph, &targets, opts);
        }
    }
    let scheduler = Scheduler::new(worker.clone(), cache, solve_opts, sink.clone());
    let cancel = scheduler.canceller();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = cancel.send(true);
        }
    });
    let solved = scheduler.solve(Arc::new(graph), &targets).await;
    ctrl_c.abort();
    worker.flush();
    let solved = match solved {
        Ok(s) => s,
        Err(e) => {
            drop(scheduler);
            drop(sink);
            let _ = printer.await;
            let mut message = format_solve_error(&e);
            // Where the failing step is (a cancelled build failed nowhere).
            if let Some(line) = step_lines.get(&e.step).filter(|_| !matches!(e.error, WorkerError::Cancelled)) {
                message.push('\n');
                message.push_str(&crate::diagnostics::step_location(&shown_path, &source_text, *line));
            }
            return Err(Failure::build(message));
        }
    };
    let mut images = Vec::with_capacity(lowerings.len());
    for l in lowerings {
        let Some(result) = solved.get(&l.target) else {
            drop(scheduler);
            drop(sink);
            let _ = printer.await;
            return Err(Failure::build("error: the solver returned no result for the target"));
        };
        // Without SOURCE_DATE_EPOCH, an unchanged result keeps its first build's timestamps.
        let config = if epoch.is_none() { crate::created::reuse(&root, &result.cache_key, l.config) } else { l.config };
        images.push(crate::outputs::PlatformImage { layers: result.output.layers().to_vec(), config });
    }

    // Export.
    let export = crate::outputs::export(crate::outputs::ExportRequest {
        cli,
        args,
        store: &store,
        worker: &worker,
        images,
        epoch,
        progress: sink.clone(),
    })
    .await;
    drop(scheduler);
    drop(sink);
    let summary = printer.await.unwrap_or_default();
    let exported = export?;
    if mode == crate::cli::ProgressMode::Quiet {
        println!("{}", exported.image_id);
    } else if mode != crate::cli::ProgressMode::Rawjson {
        eprintln!(
            "Build complete in {:.1}s: {} step{} run, {} cached. Image {}",
            summary.elapsed.as_secs_f64(),
            summary.ran,
            if summary.ran == 1 { "" } else { "s" },
            summary.cached,
            exported.digest
        );
    }
    Ok(())
}

/// Write the image layer of each step of the exported stages as soon as the step is
/// done, while later steps run, rather than all of them after the last one: the
/// export then finds them written (or waits for the one still being written).
fn write_layers_ahead(
    worker: &Arc<LocalWorker>,
    store: &strata_oci::store::BlobStore,
    graph: &strata_solver::graph::Graph,
    targets: &[strata_solver::graph::NodeId],
    opts: strata_exporter::image::ExportOptions,
) {
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
        let (store, opts) = (store.clone(), opts.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = strata_exporter::image::ensure_layer(&store, &input, &opts) {
                // The export writes it again and reports what goes wrong.
                tracing::debug!(layer = %input.dir.display(), error = %e, "writing a layer ahead failed");
            }
        });
    }));
}

/// The `--platform` list (comma separated, repeatable), normalised and without
/// duplicates; the host's platform when none is given.
fn target_platforms(given: &[String], host: &Platform) -> Result<Vec<Platform>> {
    let mut platforms: Vec<Platform> = Vec::new();
    for p in given.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let parsed = if p == "local" {
            host.clone()
        } else {
            p.parse::<Platform>().map_err(|e| Failure::usage(format!("error: --platform {p}: {e}")))?
        };
        if !platforms.iter().any(|q| q.matches(&parsed)) {
            platforms.push(parsed);
        }
    }
    if platforms.is_empty() {
        platforms.push(host.clone());
    }
    Ok(platforms)
}

/// Every RUN of a foreign platform needs a QEMU emulator in binfmt_misc: say which one
/// is missing before anything runs.
fn check_emulators(graph: &strata_solver::graph::Graph, host: &Platform) -> std::result::Result<(), String> {
    let mut checked: Vec<&Platform> = Vec::new();
    for node in graph.nodes.values() {
        let strata_solver::graph::Op::Exec(exec) = &node.op else { continue };
        if checked.contains(&&exec.platform) {
            continue;
        }
        checked.push(&exec.platform);
        if let Some(arch) = strata_executor::emulation::qemu_arch(&exec.platform, host) {
            strata_executor::emulation::check_emulator(&exec.platform, &arch)?;
        }
    }
    Ok(())
}

fn format_solve_error(e: &strata_solver::scheduler::SolveError) -> String {
    match &e.error {
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
    }
}

/// The largest Dockerfile or .dockerignore read.
const MAX_DOCKERFILE: u64 = 32 << 20;

/// Read the file at `path`, with symlinks resolved inside the context (when `path` is
/// in it) or else inside the file's own directory, as BuildKit reads a Dockerfile from
/// its directory: a context's `Dockerfile -> /root/.docker/config.json` is not found.
fn read_confined(path: &Path, context_dir: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let (dir, rel) = match path.strip_prefix(context_dir) {
        Ok(rel) => (context_dir.to_path_buf(), rel.to_path_buf()),
        Err(_) => match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => {
                let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
                (parent.to_path_buf(), PathBuf::from(name))
            }
            _ => return Ok(None),
        },
    };
    strata_executor::root::read_file_in(&dir, &rel.to_string_lossy(), max)
}
