//! `strata verify`: is this build reproducible? It builds the image twice, each time in
//! a fresh root (no shared cache) with a different temp directory and `--jobs` (1 and
//! 2), and compares the two results platform by platform; with `--against REF` it
//! builds once and compares with a published image (a registry reference, or
//! `oci-layout://DIR[:TAG]`). The comparison and its report are
//! `strata_exporter::compare`'s; this module runs the builds and fetches the published
//! image.
//!
//! Each build is this binary run as a child process, `strata --root R --jobs N build
//! <the user's build options> -o type=oci,dest=R/layout,tar=false PATH`, so it is
//! exactly the build a user would run. Verify decides the outputs, the roots and the
//! jobs: `-o` (other than its own report format), `--push`, `--load`, `-t`, `--iidfile`,
//! `--metadata-file`, `--print-graph` and `--call` are refused (exit 2) before anything
//! is built, and so are `--root` and `--jobs` among the build options; the global ones
//! are not used. A context or Dockerfile on stdin is read once and given to both builds.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use clap::Parser;
use serde::Serialize;
use strata_exporter::compare::{
    compare_images, platform_manifests, DocumentComparison, ImageComparison, ImageSource, PlatformComparison,
    SideSummary,
};
use strata_oci::image::{Descriptor, Index, Platform};
use strata_oci::layout::OciLayout;
use strata_oci::reference::Reference;
use strata_oci::registry::RegistryClient;
use strata_oci::store::BlobStore;

use crate::cli::{BuildArgs, Cli, Command, ReportFormat, VerifyArgs};
use crate::{Failure, Result};

mod provenance;

/// Entry lines per layer in the text report.
const MAX_ENTRY_LINES: usize = 50;

/// The `--jobs` of the two builds.
const BUILD_JOBS: [usize; 2] = [1, 2];

/// What verify was asked, once its own options are taken out of the build options.
struct VerifyRequest {
    against: Option<String>,
    format: ReportFormat,
    keep: bool,
    /// The build options and PATH, passed to each build as they are.
    build_argv: Vec<String>,
    /// `build_argv` parsed as `strata build` parses it.
    build: Box<BuildArgs>,
    /// Registry options given among the build options (`--tls-ca`, `--insecure-registry`).
    extra_ca_files: Vec<PathBuf>,
    extra_insecure_registries: Vec<String>,
}

/// Where SOURCE_DATE_EPOCH came from, if it was given.
#[derive(Debug, Serialize)]
struct EpochSource {
    value: String,
    from: &'static str,
}

/// One finished build and the OCI layout it wrote (under the verify's temporary directory).
struct FinishedBuild {
    label: String,
    jobs: usize,
    layout_dir: PathBuf,
}

/// The JSON report: what was compared, then the comparison.
#[derive(Serialize)]
struct JsonReport<'a> {
    #[serde(rename = "match")]
    matches: bool,
    mode: &'static str,
    source_date_epoch: Option<&'a EpochSource>,
    builds: Vec<JsonBuild<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    against: Option<&'a str>,
    left: &'a SideSummary,
    right: &'a SideSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<&'a DocumentComparison>,
    platforms: &'a [PlatformComparison],
}

#[derive(Serialize)]
struct JsonBuild<'a> {
    label: &'a str,
    jobs: usize,
}

/// A published image to compare with.
enum Published {
    Registry(Reference),
    Layout { path: PathBuf, selector: Option<String> },
}

pub async fn run(cli: &Cli, args: &VerifyArgs) -> Result<()> {
    // The global --root and --jobs (flags, STRATA_ROOT or the configuration file) are not
    // used: each build gets a fresh root and --jobs 1 or 2.
    let mut request = parse_request(args)?;
    let published = request.against.as_deref().map(parse_published).transpose()?;
    let work = tempfile::Builder::new()
        .prefix("strata-verify-")
        .tempdir()
        .map_err(|e| Failure::build(format!("error: strata verify: cannot create a temporary directory: {e}")))?;
    let published_store = BlobStore::open(work.path().join("published"))
        .map_err(|e| Failure::build(format!("error: strata verify: {e}")))?;
    // A published layout is opened before building, so a wrong path fails at once.
    let published_layout = match &published {
        Some(Published::Layout { path, selector }) => {
            Some(open_published_layout(path, selector.as_deref(), &published_store)?)
        }
        _ => None,
    };
    if let Some(published) = &published {
        let found = published_statements(cli, &request, published, published_layout.as_ref(), &published_store).await?;
        let against = request.against.clone().unwrap_or_default();
        match crate::attest::read::provenance_of(&found, None) {
            Some(p) => {
                let recorded = provenance::recorded(&p.statement)?;
                let extra = provenance::build_options(&recorded, &request.build)?;
                eprintln!(
                    "strata verify: the build's parameters come from the provenance of {against}:{}{}",
                    if extra.is_empty() { "" } else { " " },
                    extra.join(" ")
                );
                request.build_argv.extend(extra);
                request.build = reparse_build(&request.build_argv)?;
                check_context(cli, &request, &recorded, &against).await?;
            }
            None => eprintln!("strata verify: {against} carries no provenance: the build options are used as given"),
        }
    }
    let epoch = source_date_epoch(&request.build);
    let stdin_copy = save_stdin_if_read(&request.build, work.path())?;
    match &epoch {
        Some(e) => eprintln!("strata verify: SOURCE_DATE_EPOCH={} (from {})", e.value, e.from),
        None => eprintln!(
            "strata verify: warning: SOURCE_DATE_EPOCH is not set: timestamps (config `created`, history, file \
             mtimes) are expected to differ; set it (--source-date-epoch, --build-arg or the environment) for a \
             reproducible build"
        ),
    }

    let runs = if published.is_some() { 1 } else { BUILD_JOBS.len() };
    let mut builds = Vec::new();
    for (n, jobs) in BUILD_JOBS.iter().take(runs).enumerate() {
        let label = if published.is_some() { "build".to_string() } else { format!("build {}", n + 1) };
        // The second root's path is longer: a path that leaks into the image shows.
        let dir = work.path().join(if n == 0 { "build-1" } else { "build-two" });
        builds.push(run_build(cli, &request, &label, *jobs, &dir, stdin_copy.as_deref()).await?);
    }

    let first = open_layout(&builds[0].layout_dir)?;
    let left = built_image(&builds[0], &first)?;
    let comparison = match (&published, &published_layout) {
        (Some(Published::Registry(reference)), _) => {
            let wanted = built_platforms(&left)?;
            let root = pull_published(cli, &request, reference, &wanted, &published_store).await?;
            compare_blocking(&left, &ImageSource { label: "published".into(), blobs: &published_store, root })?
        }
        (_, Some((layout, root))) => {
            compare_blocking(&left, &ImageSource { label: "published".into(), blobs: layout, root: root.clone() })?
        }
        _ => {
            let second = open_layout(&builds[1].layout_dir)?;
            compare_blocking(&left, &built_image(&builds[1], &second)?)?
        }
    };

    print_report(&request, &builds, epoch.as_ref(), &comparison)?;
    if request.keep {
        let kept = work.keep();
        eprintln!("strata verify: kept the build roots and layouts in {}", kept.display());
    }
    if comparison.matches {
        Ok(())
    } else {
        Err(Failure::build(""))
    }
}

/// Split verify's own options out of the trailing arguments (they may come after build
/// options too), then parse the rest as `strata build` would, to refuse what verify
/// cannot honour before building anything.
fn parse_request(args: &VerifyArgs) -> Result<VerifyRequest> {
    let mut against = args.against.clone();
    let mut format = args.output;
    let mut keep = args.keep;
    let mut build_argv = Vec::new();
    let mut rest = args.build.iter();
    while let Some(arg) = rest.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let (flag, inline) = match flag.strip_prefix("-o").filter(|v| !v.is_empty() && !flag.starts_with("--")) {
            Some(v) => ("-o", Some(v.trim_start_matches('=').to_string())),
            None => (flag, inline),
        };
        match flag {
            "--keep" if inline.is_none() => keep = true,
            "--against" => {
                let value = inline.or_else(|| rest.next().cloned()).ok_or_else(|| {
                    Failure::usage("error: strata verify: --against needs a value (REF or oci-layout://DIR[:TAG])")
                })?;
                if against.replace(value).is_some() {
                    return Err(Failure::usage("error: strata verify: --against was given twice"));
                }
            }
            "-o" | "--output" => {
                let value = inline.or_else(|| rest.next().cloned()).unwrap_or_default();
                format = match value.as_str() {
                    "json" => ReportFormat::Json,
                    "text" | "human" => ReportFormat::Text,
                    other => {
                        return Err(Failure::usage(format!(
                            "error: strata verify: -o/--output {other}: verify writes each build to an OCI layout of \
                             its own and compares them; its --output is the report format (text or json)"
                        )))
                    }
                };
            }
            _ => build_argv.push(arg.clone()),
        }
    }
    for token in &build_argv {
        let name = token.split_once('=').map(|(f, _)| f).unwrap_or(token);
        if name == "--root" || name == "--jobs" {
            return Err(Failure::usage(format!(
                "error: strata verify: {name}: verify builds in fresh roots of its own with --jobs 1 and 2; \
                 drop {name} from the build options"
            )));
        }
    }
    let (build, tls_ca, insecure_registries) = parse_build(&build_argv)?;
    refuse_outputs(&build)?;
    Ok(VerifyRequest {
        against,
        format,
        keep,
        build_argv,
        build,
        extra_ca_files: tls_ca,
        extra_insecure_registries: insecure_registries,
    })
}

/// The build options as `strata build` parses them, and the registry options among them.
fn parse_build(build_argv: &[String]) -> Result<(Box<BuildArgs>, Vec<PathBuf>, Vec<String>)> {
    let inner_cli = match Cli::try_parse_from(
        ["strata".to_string(), "build".to_string()].into_iter().chain(build_argv.iter().cloned()),
    ) {
        Ok(c) => c,
        Err(e) => {
            return Err(Failure::usage(format!(
                "{}\n(strata verify passes these options to `strata build`)",
                e.to_string().trim_end()
            )))
        }
    };
    let Cli { command: Command::Build(build), tls_ca, insecure_registries, .. } = inner_cli else {
        return Err(Failure::usage("error: strata verify: expected build options and a PATH"));
    };
    Ok((build, tls_ca, insecure_registries))
}

fn reparse_build(build_argv: &[String]) -> Result<Box<BuildArgs>> {
    parse_build(build_argv).map(|(b, _, _)| b)
}

/// The statements the published image carries.
async fn published_statements(
    cli: &Cli,
    request: &VerifyRequest,
    published: &Published,
    layout: Option<&(OciLayout, Descriptor)>,
    scratch: &BlobStore,
) -> Result<Vec<crate::attest::read::Found>> {
    use crate::attest::read::{statements, Published as Source};
    let against = request.against.as_deref().unwrap_or_default();
    let failed =
        |e: String| Failure::build(format!("error: strata verify --against {against}: reading its attestations: {e}"));
    match (published, layout) {
        (Published::Registry(reference), _) => {
            let mut options = crate::registry_options(cli);
            options.ca_files.extend(request.extra_ca_files.iter().cloned());
            options.insecure_registries.extend(request.extra_insecure_registries.iter().cloned());
            let client = RegistryClient::new(options).map_err(|e| failed(e.to_string()))?;
            statements(&Source::Registry { client: &client, reference }, scratch)
                .await
                .map_err(|e| failed(format!("{e} (registry {})", reference.registry)))
        }
        (_, Some((layout, root))) => statements(&Source::Layout { layout, root }, scratch).await.map_err(failed),
        _ => Ok(Vec::new()),
    }
}

/// The local context must be the one the provenance records, before anything is built.
async fn check_context(
    cli: &Cli,
    request: &VerifyRequest,
    recorded: &provenance::RecordedBuild,
    against: &str,
) -> Result<()> {
    let Some((digest, files)) = &recorded.context else {
        eprintln!(
            "strata verify: the provenance records no context digest: the context is not checked before the build"
        );
        return Ok(());
    };
    let build = &request.build;
    if build.context == "-" || crate::remote_context::is_remote(&build.context) {
        eprintln!("strata verify: the context is not a local directory: it is not checked before the build");
        return Ok(());
    }
    let plan = crate::build::plan::BuildPlan::from_args(cli, build)?;
    let source = crate::build::source::BuildSource::read(&plan).await?;
    let inputs = crate::build::inputs::BuildInputs::gather(&plan, &source)?;
    let ctx = inputs
        .contexts
        .get(crate::build::inputs::MAIN_CONTEXT)
        .cloned()
        .ok_or_else(|| Failure::build("error: strata verify: the build has no main context"))?;
    let cache_dir = tempfile::tempdir().map_err(|e| Failure::build(format!("error: strata verify: {e}")))?;
    let selection = tokio::task::spawn_blocking(move || {
        let cache = strata_executor::context::StatCache::load(cache_dir.path(), &ctx.dir);
        let none: strata_executor::context::ExcludeFn = std::sync::Arc::new(|_, _| false);
        strata_executor::context::selection(&ctx, &cache, &[".".to_string()], false, &none)
    })
    .await
    .map_err(|e| Failure::build(format!("error: strata verify: hashing the context: {e}")))?
    .map_err(|e| Failure::build(format!("error: strata verify: hashing the context {}: {e}", build.context)))?;
    let here = crate::attest::context_digest_hex(&selection);
    if &here == digest {
        eprintln!("strata verify: the context {} matches the provenance (blake3 {})", build.context, &here[..16]);
        return Ok(());
    }
    let mut message = format!(
        "error: strata verify: the context {} is not the one {against} was built from: its files' digest is blake3:{here}, the provenance records blake3:{digest}; nothing was built",
        build.context
    );
    match files {
        Some(files) => {
            for line in provenance::context_differences(files, &selection.files, 20) {
                message.push_str("\n  ");
                message.push_str(&line);
            }
        }
        None => message.push_str(
            "\n  (the provenance is mode=min; an image built with --provenance=mode=max lets verify name the files)",
        ),
    }
    Err(Failure::build(message))
}

/// Build options that would write somewhere else than verify's own layouts.
fn refuse_outputs(build: &BuildArgs) -> Result<()> {
    let refused = [
        (!build.outputs.is_empty(), "-o/--output"),
        (build.push, "--push"),
        (build.load, "--load"),
        (!build.tags.is_empty(), "-t/--tag"),
        (build.iidfile.is_some(), "--iidfile"),
        (build.metadata_file.is_some(), "--metadata-file"),
        (build.print_graph.is_some(), "--print-graph"),
        (build.call != "build", "--call"),
        (build.provenance.is_some(), "--provenance"),
        (build.sbom.is_some(), "--sbom"),
        (!build.attest.is_empty(), "--attest"),
    ];
    if let Some((_, flag)) = refused.iter().find(|(given, _)| *given) {
        return Err(Failure::usage(format!(
            "error: strata verify: {flag}: verify decides what each build writes (an OCI layout in a temporary \
             root, compared and then removed); drop {flag}"
        )));
    }
    Ok(())
}

/// `SOURCE_DATE_EPOCH` as the build will see it: the flag, the build arg, the environment.
fn source_date_epoch(build: &BuildArgs) -> Option<EpochSource> {
    if let Some(v) = build.source_date_epoch.as_ref().filter(|v| !v.is_empty()) {
        return Some(EpochSource { value: v.clone(), from: "--source-date-epoch" });
    }
    for arg in build.build_args.iter().rev() {
        match arg.split_once('=') {
            Some(("SOURCE_DATE_EPOCH", v)) if !v.is_empty() => {
                return Some(EpochSource { value: v.to_string(), from: "--build-arg" })
            }
            None if arg == "SOURCE_DATE_EPOCH" => {
                if let Some(v) = std::env::var("SOURCE_DATE_EPOCH").ok().filter(|v| !v.is_empty()) {
                    return Some(EpochSource { value: v, from: "--build-arg (from the environment)" });
                }
            }
            _ => {}
        }
    }
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|value| EpochSource { value, from: "the environment" })
}

fn parse_published(against: &str) -> Result<Published> {
    if let Some(spec) = against.strip_prefix("oci-layout://") {
        // oci-layout://PATH[:TAG|@DIGEST], as --build-context reads it.
        let (path, selector) = if let Some((p, d)) = spec.rsplit_once('@') {
            (p.to_string(), Some(d.to_string()))
        } else {
            match spec.rsplit_once(':') {
                Some((p, t)) if !t.contains('/') => (p.to_string(), Some(t.to_string())),
                _ => (spec.to_string(), None),
            }
        };
        if !Path::new(&path).exists() {
            return Err(Failure::usage(format!("error: strata verify --against {against}: {path} does not exist")));
        }
        return Ok(Published::Layout { path: PathBuf::from(path), selector });
    }
    let reference = against
        .strip_prefix("docker-image://")
        .unwrap_or(against)
        .parse::<Reference>()
        .map_err(|e| Failure::usage(format!("error: strata verify --against {against}: {e}")))?;
    Ok(Published::Registry(reference))
}

/// A context or Dockerfile read from stdin is read once and given to every build.
fn save_stdin_if_read(build: &BuildArgs, work: &Path) -> Result<Option<PathBuf>> {
    if build.context != "-" && build.file.as_deref() != Some("-") {
        return Ok(None);
    }
    let path = work.join("stdin");
    let mut data = Vec::new();
    std::io::stdin()
        .read_to_end(&mut data)
        .map_err(|e| Failure::build(format!("error: strata verify: reading standard input: {e}")))?;
    std::fs::write(&path, &data)
        .map_err(|e| Failure::build(format!("error: strata verify: {}: {e}", path.display())))?;
    Ok(Some(path))
}

/// Run one build as a child process in a fresh root under `dir`.
async fn run_build(
    cli: &Cli,
    request: &VerifyRequest,
    label: &str,
    jobs: usize,
    dir: &Path,
    stdin_copy: Option<&Path>,
) -> Result<FinishedBuild> {
    let (root, tmp, layout_dir) = (dir.join("root"), dir.join("tmp"), dir.join("layout"));
    for d in [&root, &tmp] {
        std::fs::create_dir_all(d)
            .map_err(|e| Failure::build(format!("error: strata verify: {}: {e}", d.display())))?;
    }
    let mut command = tokio::process::Command::new(own_executable()?);
    command.arg("--root").arg(&root).arg("--jobs").arg(jobs.to_string());
    if let Some(config) = &cli.config {
        command.arg("--config").arg(config);
    }
    if cli.log_level != "warn" {
        command.arg("--log-level").arg(&cli.log_level);
    }
    if let Some(runtime) = &cli.runtime {
        command.arg("--runtime").arg(runtime);
    }
    for ca in &cli.tls_ca {
        command.arg("--tls-ca").arg(ca);
    }
    for host in &cli.insecure_registries {
        command.arg("--insecure-registry").arg(host);
    }
    command.arg("build").args(&request.build_argv);
    command.arg("-o").arg(format!("type=oci,dest={},tar=false", layout_dir.display()));
    // The built image is compared without attestations (the published one's are skipped).
    command.arg("--provenance=false");
    command.env("TMPDIR", &tmp).env_remove("STRATA_ROOT");
    // The report owns stdout; whatever a build prints goes to stderr with its progress.
    let stderr_copy = duplicate_stderr()
        .map_err(|e| Failure::build(format!("error: strata verify: cannot duplicate stderr: {e}")))?;
    command.stdout(Stdio::from(stderr_copy)).stderr(Stdio::inherit());
    match stdin_copy {
        Some(p) => {
            let f = std::fs::File::open(p)
                .map_err(|e| Failure::build(format!("error: strata verify: {}: {e}", p.display())))?;
            command.stdin(Stdio::from(f));
        }
        None => {
            command.stdin(Stdio::null());
        }
    }
    eprintln!("strata verify: {label}: fresh root {}, --jobs {jobs}", root.display());
    let status = command
        .status()
        .await
        .map_err(|e| Failure::build(format!("error: strata verify: cannot run the {label}: {e}")))?;
    match status.code() {
        Some(0) => Ok(FinishedBuild { label: label.to_string(), jobs, layout_dir }),
        Some(2) => {
            Err(Failure::usage(format!("error: strata verify: the {label} refused its options (exit 2; see above)")))
        }
        Some(code) => Err(Failure::build(format!("error: strata verify: the {label} failed (exit {code}; see above)"))),
        None => Err(Failure::build(format!("error: strata verify: the {label} was killed ({status})"))),
    }
}

/// This very binary: `/proc/self/exe` still runs it when the file was replaced on disk
/// meanwhile (a rebuild), where the path `current_exe` gives would run the new one or
/// nothing.
fn own_executable() -> Result<PathBuf> {
    let proc_exe = PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe);
    }
    std::env::current_exe()
        .map_err(|e| Failure::build(format!("error: strata verify: cannot find the strata binary: {e}")))
}

/// Our stderr's file descriptor, duplicated (for a child's stdout).
fn duplicate_stderr() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    std::io::stderr().as_fd().try_clone_to_owned()
}

fn open_layout(dir: &Path) -> Result<OciLayout> {
    OciLayout::open(dir).map_err(|e| Failure::build(format!("error: strata verify: reading the build's layout: {e}")))
}

/// A published layout (a directory, or a tar unpacked into `store`'s temp area) and the
/// image in it that `selector` (a tag or digest; none: the only one) names.
fn open_published_layout(path: &Path, selector: Option<&str>, store: &BlobStore) -> Result<(OciLayout, Descriptor)> {
    let failed =
        |e: String| Failure::usage(format!("error: strata verify --against oci-layout://{}: {e}", path.display()));
    let layout = if path.is_dir() {
        OciLayout::open(path).map_err(|e| failed(e.to_string()))?
    } else {
        let file = std::fs::File::open(path).map_err(|e| failed(e.to_string()))?;
        OciLayout::open_tar(std::io::BufReader::new(file), store).map_err(|e| failed(e.to_string()))?
    };
    let root = layout.resolve(selector).map_err(|e| failed(e.to_string()))?;
    Ok((layout, root))
}

/// A finished build's image, as one side of the comparison.
fn built_image<'a>(build: &FinishedBuild, layout: &'a OciLayout) -> Result<ImageSource<'a>> {
    let root = layout
        .resolve(None)
        .map_err(|e| Failure::build(format!("error: strata verify: the {}'s layout: {e}", build.label)))?;
    Ok(ImageSource { label: build.label.clone(), blobs: layout, root })
}

/// The platforms of the built image, to pull the same ones.
fn built_platforms(built: &ImageSource) -> Result<Vec<Platform>> {
    let manifests = platform_manifests(built).map_err(|e| Failure::build(format!("error: strata verify: {e}")))?;
    let mut out = Vec::new();
    for m in manifests {
        let name = m.platform.split(" #").next().unwrap_or(&m.platform);
        let p = name.parse::<Platform>().map_err(|e| Failure::build(format!("error: strata verify: {e}")))?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Bring the published image into `store`: what the reference names (an index or a
/// manifest), then every built platform it has, pinned to that digest.
async fn pull_published(
    cli: &Cli,
    request: &VerifyRequest,
    reference: &Reference,
    platforms: &[Platform],
    store: &BlobStore,
) -> Result<Descriptor> {
    let mut options = crate::registry_options(cli);
    options.ca_files.extend(request.extra_ca_files.iter().cloned());
    options.insecure_registries.extend(request.extra_insecure_registries.iter().cloned());
    let failed = |e: String| Failure::build(format!("error: strata verify --against {reference}: {e}"));
    let client = RegistryClient::new(options).map_err(|e| failed(e.to_string()))?;
    eprintln!("strata verify: pulling {reference}");
    let resolved = client.resolve(reference).await.map_err(|e| failed(e.to_string()))?;
    store.put_bytes(&resolved.bytes).map_err(|e| failed(e.to_string()))?;
    let pinned = Reference { tag: None, digest: Some(resolved.digest.clone()), ..reference.clone() };
    let index: Option<Index> = if resolved.is_index() {
        Some(serde_json::from_slice(&resolved.bytes).map_err(|e| failed(format!("invalid index: {e}")))?)
    } else {
        None
    };
    for platform in platforms {
        let offered = index.as_ref().is_none_or(|i| i.select_platform(platform).is_ok());
        if offered {
            client.pull_image(&pinned, platform, store).await.map_err(|e| failed(e.to_string()))?;
        }
        if index.is_none() {
            break;
        }
    }
    Ok(resolved.descriptor())
}

/// Compare on a blocking thread: layers are read and hashed whole.
fn compare_blocking(left: &ImageSource, right: &ImageSource) -> Result<ImageComparison> {
    tokio::task::block_in_place(|| compare_images(left, right))
        .map_err(|e| Failure::build(format!("error: strata verify: comparing: {e}")))
}

fn print_report(
    request: &VerifyRequest,
    builds: &[FinishedBuild],
    epoch: Option<&EpochSource>,
    comparison: &ImageComparison,
) -> Result<()> {
    let text = match request.format {
        ReportFormat::Json => {
            let report = JsonReport {
                mode: if request.against.is_some() { "against" } else { "rebuild" },
                source_date_epoch: epoch,
                builds: builds.iter().map(|b| JsonBuild { label: &b.label, jobs: b.jobs }).collect(),
                against: request.against.as_deref(),
                matches: comparison.matches,
                left: &comparison.left,
                right: &comparison.right,
                index: comparison.index.as_ref(),
                platforms: &comparison.platforms,
            };
            let mut json = serde_json::to_string_pretty(&report)
                .map_err(|e| Failure::build(format!("error: strata verify: writing the report: {e}")))?;
            json.push('\n');
            json
        }
        ReportFormat::Text => {
            let mut s = comparison.render_text(MAX_ENTRY_LINES);
            if epoch.is_none() && !comparison.matches {
                s.push_str("note: SOURCE_DATE_EPOCH was not set, so differing timestamps are expected\n");
            }
            s.push_str(if comparison.matches {
                "result: MATCH (every platform's manifest digest is the same)\n"
            } else {
                "result: MISMATCH\n"
            });
            s
        }
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Failure::build(format!("error: strata verify: writing the report: {e}")))
}
