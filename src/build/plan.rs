//! The first phase of a build: every flag of `strata build` turned into a typed value
//! and checked, with no I/O at all — so every usage error (exit code 2) is reported
//! before a file is read, a registry is asked or a step runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use strata_executor::worker::SecretSource;
use strata_oci::image::Platform;
use strata_solver::graph::{NetworkMode, Ulimit, UlimitKind};

use crate::cli::{BuildArgs, Cli, ProgressMode};
use crate::resolve::PullPolicy;
use crate::{Failure, Result};

/// What `--call` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Build,
    Outline,
    Targets,
    Check,
}

/// `--print-graph` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    Dot,
    Json,
}

/// Where the Dockerfile comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerfileSpec {
    /// `-f -`.
    Stdin,
    /// `-f PATH`, or `None`: `Dockerfile` in the context.
    Path(Option<String>),
}

/// `SOURCE_DATE_EPOCH` as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochSpec {
    Seconds(i64),
    /// `--source-date-epoch=git`: the context's last commit (read with the context).
    Git,
}

/// `--ssh ID[=SOCKET|KEY[,KEY]]`, parsed (the paths are looked at later).
#[derive(Debug, Clone)]
pub struct SshSpec {
    pub id: String,
    pub paths: Vec<PathBuf>,
    /// As given, for messages.
    pub shown: String,
}

/// `--build-context NAME=VALUE`.
#[derive(Debug, Clone)]
pub enum NamedContextSpec {
    /// `docker-image://REF` or `oci-layout://PATH[:TAG]`, as given.
    Image(String),
    /// A local directory.
    Dir(PathBuf),
}

/// Every flag of one `strata build`, checked.
#[derive(Debug)]
pub struct BuildPlan {
    pub context: String,
    pub remote: bool,
    pub dockerfile: DockerfileSpec,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platforms: Vec<Platform>,
    pub host: Platform,
    pub named_contexts: BTreeMap<String, NamedContextSpec>,
    pub secrets: Vec<(String, SecretSource)>,
    pub ssh: Vec<SshSpec>,
    pub network: NetworkMode,
    pub allow_insecure: bool,
    pub add_hosts: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub pull: PullPolicy,
    pub no_cache: bool,
    pub no_cache_filter: Vec<String>,
    pub epoch: Option<EpochSpec>,
    pub call: Call,
    pub print_graph: Option<GraphFormat>,
    pub progress: ProgressMode,
    pub shm_size: Option<u64>,
    pub ulimits: Vec<Ulimit>,
    pub load: bool,
    pub jobs: Option<usize>,
    /// `--cache-from` (else `cache.from` of strata.toml).
    pub cache_from: Vec<crate::cache::spec::CacheImport>,
    /// `--cache-to` (else `cache.to` of strata.toml).
    pub cache_to: Vec<crate::cache::spec::CacheExport>,
    /// Some output needs the result's files or blobs on this machine (everything but a
    /// push): imported cache records are then brought in.
    pub needs_local_result: bool,
    /// `--dry-run`: keys computed and looked up, nothing run, exported or recorded.
    pub dry_run: bool,
    /// `--provenance`, `--sbom`, `--attest`, with buildx's defaults for the outputs.
    pub attest: crate::attest::AttestRequest,
}

impl BuildPlan {
    /// Check every flag of `args`; a bad one is a usage error (exit code 2).
    pub fn from_args(cli: &Cli, args: &BuildArgs) -> Result<BuildPlan> {
        let call = match args.call.as_str() {
            "build" => Call::Build,
            "outline" => Call::Outline,
            "targets" => Call::Targets,
            "check" => Call::Check,
            other => {
                return Err(Failure::usage(format!("error: --call={other}: expected build, outline, targets or check")))
            }
        };
        let print_graph = match args.print_graph.as_deref() {
            None => None,
            Some("dot") => Some(GraphFormat::Dot),
            Some("json") => Some(GraphFormat::Json),
            Some(other) => return Err(Failure::usage(format!("error: --print-graph={other}: expected dot or json"))),
        };
        let mut allow_insecure = false;
        for a in &args.allow {
            match a.as_str() {
                "security.insecure" => allow_insecure = true,
                "network.host" => {}
                _ => {
                    return Err(Failure::usage(format!(
                        "error: --allow {a}: unknown entitlement (security.insecure, network.host)"
                    )))
                }
            }
        }
        let network = match args.network.as_str() {
            "default" | "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            other => return Err(Failure::usage(format!("error: --network={other}: expected default, host or none"))),
        };
        let pull = match args.pull.as_deref() {
            None | Some("missing") | Some("false") => PullPolicy::Missing,
            Some("always") | Some("true") => PullPolicy::Always,
            Some("never") => PullPolicy::Never,
            Some(other) => {
                return Err(Failure::usage(format!("error: --pull={other}: expected always, missing or never")))
            }
        };
        let host = Platform::host();
        let platforms = target_platforms(&args.platform, &host)?;
        if args.load && platforms.len() > 1 {
            return Err(Failure::usage(
                "error: --load cannot hold several platforms: a Docker daemon loads one; use --push or -o type=oci",
            ));
        }
        // Outputs: their types, keys and values, and how they combine with platforms.
        let specs = crate::outputs::output_specs(args)?;
        if platforms.len() > 1 {
            if let Some(s) = specs.iter().find(|s| s.kind == "docker" || s.kind == "tar") {
                return Err(Failure::usage(format!(
                    "error: -o type={} cannot hold several platforms ({}): use type=oci, type=local, type=image or --push",
                    s.kind,
                    args.platform.join(",")
                )));
            }
        }
        crate::outputs::image_options(args, &specs, None)?;
        if platforms.len() == 1 && crate::outputs::annotations_of(args, &specs)?.need_index() {
            return Err(Failure::usage(
                "error: --annotation index:/manifest-descriptor: a single-platform image has no index; build several platforms, or annotate the manifest",
            ));
        }
        let dockerfile = match args.file.as_deref() {
            Some("-") => DockerfileSpec::Stdin,
            other => DockerfileSpec::Path(other.map(str::to_string)),
        };
        if dockerfile == DockerfileSpec::Stdin && args.context == "-" {
            return Err(Failure::usage("error: -f - and a context from - cannot both read standard input"));
        }
        let build_args = parse_kv(&args.build_args, "--build-arg")?;
        let epoch = epoch_spec(args, &build_args)?;
        let (cache_from, cache_to) = cache_specs(cli, args)?;
        let inline = cache_to.iter().any(|c| c.target == crate::cache::spec::ExportTarget::Inline);
        if inline
            && !specs.iter().any(|s| matches!(s.kind.as_str(), "image" | "registry" | "oci" | "docker"))
            && args.tags.is_empty()
        {
            return Err(Failure::usage(
                "error: --cache-to type=inline: the records travel in the image, and this build exports none (give -t, --push or -o type=image|registry|oci|docker)",
            ));
        }
        // Only a push can do with blobs it never downloads.
        let needs_local_result =
            args.load || specs.iter().any(|s| s.kind != "registry") || (specs.is_empty() && !args.tags.is_empty());
        Ok(BuildPlan {
            context: args.context.clone(),
            remote: crate::remote_context::is_remote(&args.context),
            dockerfile,
            build_args,
            target: args.target.clone(),
            platforms,
            host,
            named_contexts: named_contexts(&args.build_contexts)?,
            secrets: secrets(&args.secrets)?,
            ssh: ssh_specs(&args.ssh)?,
            network,
            allow_insecure,
            add_hosts: args.add_hosts.clone(),
            labels: parse_kv(&args.labels, "--label")?,
            pull,
            no_cache: args.no_cache,
            no_cache_filter: args.no_cache_filter.clone(),
            epoch,
            call,
            print_graph,
            progress: crate::progress::effective_mode(args.progress, args.quiet),
            shm_size: args
                .shm_size
                .as_deref()
                .map(|s| crate::units::parse_size(s).map_err(|e| Failure::usage(format!("error: --shm-size {e}"))))
                .transpose()?,
            ulimits: args.ulimit.iter().map(|u| parse_ulimit(u)).collect::<Result<_>>()?,
            load: args.load,
            jobs: cli.jobs,
            cache_from,
            cache_to,
            needs_local_result: needs_local_result && !args.dry_run,
            dry_run: args.dry_run,
            attest: crate::attest::AttestRequest::from_args(args, &specs)?,
        })
    }
}

/// `--cache-from` / `--cache-to`, or strata.toml's defaults when the command line
/// gives none.
fn cache_specs(
    cli: &Cli,
    args: &BuildArgs,
) -> Result<(Vec<crate::cache::spec::CacheImport>, Vec<crate::cache::spec::CacheExport>)> {
    use crate::cache::spec::{parse_export, parse_import};
    let from = if args.cache_from.is_empty() { &cli.settings.cache.from } else { &args.cache_from };
    let to = if args.cache_to.is_empty() { &cli.settings.cache.to } else { &args.cache_to };
    let from = from
        .iter()
        .map(|s| parse_import(s).map_err(|e| Failure::usage(format!("error: --cache-from {s}: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    let to = to
        .iter()
        .map(|s| parse_export(s).map_err(|e| Failure::usage(format!("error: --cache-to {s}: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    Ok((from, to))
}

/// `KEY=VALUE` pairs; `--build-arg NAME` alone takes the value from the environment.
pub fn parse_kv(list: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for s in list {
        match s.split_once('=') {
            Some((k, v)) => {
                m.insert(k.to_string(), v.to_string());
            }
            None if what == "--build-arg" => {
                if let Ok(v) = std::env::var(s) {
                    m.insert(s.clone(), v);
                }
            }
            None => return Err(Failure::usage(format!("error: {what} {s:?}: expected KEY=VALUE"))),
        }
    }
    Ok(m)
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

/// `SOURCE_DATE_EPOCH` from `--source-date-epoch`, the build arg, or the environment.
fn epoch_spec(args: &BuildArgs, build_args: &BTreeMap<String, String>) -> Result<Option<EpochSpec>> {
    let raw = args
        .source_date_epoch
        .clone()
        .or_else(|| build_args.get("SOURCE_DATE_EPOCH").cloned())
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        .filter(|s| !s.is_empty());
    match raw.as_deref() {
        None => Ok(None),
        Some("git") => Ok(Some(EpochSpec::Git)),
        Some(raw) => raw
            .parse::<i64>()
            .map(|s| Some(EpochSpec::Seconds(s)))
            .map_err(|_| Failure::usage(format!("error: SOURCE_DATE_EPOCH={raw:?} is not a number of seconds"))),
    }
}

fn named_contexts(specs: &[String]) -> Result<BTreeMap<String, NamedContextSpec>> {
    let mut named = BTreeMap::new();
    for spec in specs {
        let (name, value) = spec
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("error: --build-context {spec:?}: expected NAME=VALUE")))?;
        let ctx = if value.starts_with("docker-image://") || value.starts_with("oci-layout://") {
            NamedContextSpec::Image(value.to_string())
        } else if value.contains("://") {
            return Err(Failure::usage(format!(
                "error: --build-context {spec}: only paths, docker-image:// and oci-layout:// are supported"
            )));
        } else {
            NamedContextSpec::Dir(PathBuf::from(value))
        };
        named.insert(name.to_string(), ctx);
    }
    Ok(named)
}

/// `--secret id=ID[,src=FILE|,env=VAR]`; an id alone reads the variable of that name.
fn secrets(specs: &[String]) -> Result<Vec<(String, SecretSource)>> {
    let mut out = Vec::new();
    for s in specs {
        let fields: BTreeMap<String, String> =
            s.split(',').filter_map(|f| f.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect();
        for k in fields.keys() {
            if !matches!(k.as_str(), "id" | "src" | "source" | "env" | "type" | "required") {
                return Err(Failure::usage(format!("error: --secret {s:?}: unknown key {k:?} (id, src, env, type)")));
            }
        }
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
        out.push((id, source));
    }
    Ok(out)
}

fn ssh_specs(specs: &[String]) -> Result<Vec<SshSpec>> {
    let mut out = Vec::new();
    for s in specs {
        let (id, paths) = match s.split_once('=') {
            Some((id, p)) => (id.to_string(), p.split(',').map(PathBuf::from).collect::<Vec<_>>()),
            None => (
                s.clone(),
                vec![std::env::var_os("SSH_AUTH_SOCK")
                    .map(PathBuf::from)
                    .ok_or_else(|| Failure::usage(format!("error: --ssh {s}: SSH_AUTH_SOCK is not set")))?],
            ),
        };
        out.push(SshSpec { id, paths, shown: s.clone() });
    }
    Ok(out)
}

/// `--ulimit nofile=1024[:2048]` (docker's names; `-1` is unlimited).
fn parse_ulimit(spec: &str) -> Result<Ulimit> {
    let bad = |why: &str| Failure::usage(format!("error: --ulimit {spec}: {why}"));
    let (name, values) = spec.split_once('=').ok_or_else(|| bad("expected TYPE=SOFT[:HARD]"))?;
    let kind = UlimitKind::from_name(name).ok_or_else(|| {
        bad(&format!(
            "unknown type {name:?} ({})",
            UlimitKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    let value = |v: &str| -> Result<u64> {
        if v == "-1" || v == "unlimited" {
            return Ok(u64::MAX);
        }
        v.parse::<u64>().map_err(|_| bad(&format!("{v:?} is not a number")))
    };
    let (soft, hard) = match values.split_once(':') {
        Some((s, h)) => (value(s)?, value(h)?),
        None => {
            let v = value(values)?;
            (v, v)
        }
    };
    if soft > hard {
        return Err(bad("the soft limit is above the hard limit"));
    }
    Ok(Ulimit { kind, soft, hard })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_parse_as_docker_writes_them() {
        let u = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!((u.kind.name(), u.soft, u.hard), ("nofile", 1024, 2048));
        let u = parse_ulimit("nproc=-1").unwrap();
        assert_eq!((u.soft, u.hard), (u64::MAX, u64::MAX));
        assert!(parse_ulimit("nofile=2048:1024").is_err());
        assert!(parse_ulimit("bogus=1").is_err());
        assert!(parse_ulimit("nofile").is_err());
    }
}
