//! The fourth phase: what a build reads besides the Dockerfile — the local contexts
//! (the main one with its `.dockerignore`, named `--build-context` directories),
//! named image contexts, secrets and ssh agents (an agent of the build's own for key
//! files, stopped with the build).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use strata_executor::context::{ExcludeFn, LocalContext};
use strata_executor::worker::{PatternFactory, SecretSource};
use strata_frontend::dockerignore::{read_ignore_file, PatternMatcher};
use strata_frontend::lower::NamedContext;

use super::plan::{BuildPlan, NamedContextSpec};
use super::source::{read_confined, BuildSource, MAX_DOCKERFILE};
use crate::{Failure, Result};

/// The name the main build context is registered under.
pub const MAIN_CONTEXT: &str = "context";

pub struct BuildInputs {
    /// Local directories by context name.
    pub contexts: HashMap<String, LocalContext>,
    /// `--build-context` names → what the frontend sees.
    pub named: BTreeMap<String, NamedContext>,
    pub secrets: HashMap<String, SecretSource>,
    /// ssh id → agent socket.
    pub ssh: HashMap<String, PathBuf>,
    /// `.dockerignore`-style matchers for `--exclude`.
    pub patterns: PatternFactory,
    /// Agents serving `--ssh` key files; stopped when dropped.
    _key_agents: Vec<crate::ssh_keys::KeyAgent>,
}

impl BuildInputs {
    pub fn gather(plan: &BuildPlan, source: &BuildSource) -> Result<BuildInputs> {
        if plan.load {
            check_docker_daemon()?;
        }
        let patterns: PatternFactory = Arc::new(|pats: &[String]| -> std::result::Result<ExcludeFn, String> {
            if pats.is_empty() {
                return Ok(Arc::new(|_: &str, _: bool| false));
            }
            let m = PatternMatcher::new(pats).map_err(|e| format!("invalid exclude pattern: {e}"))?;
            // A directory is left out only when no `!pattern` could bring back anything
            // below it (`secrets/` with `!secrets/public.txt` keeps the walk going).
            Ok(Arc::new(
                move |p: &str, is_dir: bool| {
                    if is_dir {
                        m.can_skip_dir(p)
                    } else {
                        m.matches_or_parent_matches(p).unwrap_or(false)
                    }
                },
            ))
        });
        let mut contexts = HashMap::new();
        contexts.insert(
            MAIN_CONTEXT.to_string(),
            LocalContext { dir: source.context_dir.clone(), ignore: main_ignore(source, &patterns)? },
        );
        let mut named = BTreeMap::new();
        for (name, spec) in &plan.named_contexts {
            match spec {
                NamedContextSpec::Image(r) => {
                    named.insert(name.clone(), NamedContext::Image(r.clone()));
                }
                NamedContextSpec::Dir(dir) => {
                    let dir = std::fs::canonicalize(dir)
                        .map_err(|e| Failure::build(format!("error: --build-context {name}={}: {e}", dir.display())))?;
                    let local = format!("ctx:{name}");
                    contexts.insert(local.clone(), LocalContext { dir, ignore: Arc::new(|_: &str, _: bool| false) });
                    named.insert(name.clone(), NamedContext::Local(local));
                }
            }
        }
        let secrets = plan.secrets.iter().cloned().collect();
        // An agent socket is passed on; key files are served by an agent of the build's own.
        let mut ssh = HashMap::new();
        let mut key_agents = Vec::new();
        for spec in &plan.ssh {
            let is_socket = |p: &PathBuf| {
                std::fs::metadata(p).map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())).unwrap_or(false)
            };
            if let [one] = spec.paths.as_slice() {
                if is_socket(one) {
                    ssh.insert(spec.id.clone(), one.clone());
                    continue;
                }
            }
            if let Some(p) = spec.paths.iter().find(|p| !p.is_file()) {
                return Err(Failure::build(format!(
                    "error: --ssh {}: {} is neither an agent socket nor a key file",
                    spec.shown,
                    p.display()
                )));
            }
            let agent = crate::ssh_keys::KeyAgent::start(&spec.id, &spec.paths)
                .map_err(|e| Failure::build(format!("error: {e}")))?;
            ssh.insert(spec.id.clone(), agent.socket.clone());
            key_agents.push(agent);
        }
        Ok(BuildInputs { contexts, named, secrets, ssh, patterns, _key_agents: key_agents })
    }
}

/// The main context's `.dockerignore` (or `<Dockerfile>.dockerignore`), as a matcher.
fn main_ignore(source: &BuildSource, patterns: &PatternFactory) -> Result<ExcludeFn> {
    let ignore_file = strata_frontend::dockerignore::ignore_file_for(&source.context_dir, &source.dockerfile_path);
    let Some(file) = ignore_file else { return patterns(&[]).map_err(Failure::build) };
    let text = read_confined(&file, &source.context_dir, MAX_DOCKERFILE)
        .map_err(|e| Failure::build(format!("error: cannot read {}: {e}", file.display())))?
        .unwrap_or_default();
    patterns(&read_ignore_file(&String::from_utf8_lossy(&text)))
        .map_err(|e| Failure::build(format!("error: {}: {e}", file.display())))
}

/// `--load` needs a Docker daemon: say so before anything is built.
fn check_docker_daemon() -> Result<()> {
    let sock = crate::docker_load::daemon_socket().map_err(|e| Failure::usage(format!("error: --load: {e}")))?;
    if !sock.exists() {
        return Err(Failure::usage(format!(
            "error: --load: no Docker daemon is reachable at {}; use -o type=docker,dest=image.tar and `docker load -i image.tar`",
            sock.display()
        )));
    }
    Ok(())
}
