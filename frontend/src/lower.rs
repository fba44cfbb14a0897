//! Lowering: a typed Dockerfile → strata's build graph, with BuildKit's dispatch
//! semantics (dockerfile2llb): stages and `--target`, ARG/ENV scoping and expansion,
//! automatic platform ARGs, base-image configs, ONBUILD triggers, `COPY --from`,
//! `RUN --mount`, and the image configuration changes carried as config, not steps.
//!
//! Base images are resolved through an [`ImageResolver`] the caller provides (the CLI
//! pulls them); the lowering itself does no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use strata_oci::image::{Healthcheck, History, ImageConfig, Platform};
use strata_solver::graph::{Chown, CopyOp, ExecOp, Graph, Mount, NetworkMode, NodeId, Op};

use crate::instructions::commands::{Command, Instruction, ShellOrExec};
use crate::instructions::expand::{LexerExpander, WordExpander};
use crate::instructions::mount::{MountSpec, MountType};
use crate::instructions::Dockerfile;
use crate::shell::{EnvList, Lexer};

/// Linux's default PATH, added to images that have none (as BuildKit does).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Build args every build accepts without an `ARG` line.
pub const PROXY_ARGS: [&str; 8] =
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy"];

/// A base image as the resolver found it.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The reference as resolved (for labels and errors).
    pub reference: String,
    pub manifest_digest: String,
    pub config: ImageConfig,
}

/// What a `--build-context name=...` provides.
#[derive(Debug, Clone)]
pub enum NamedContext {
    /// A local directory registered with the worker under this name.
    Local(String),
    /// An image (`docker-image://` or `oci-layout://`), passed to the resolver as is.
    Image(String),
}

/// Resolves image references for a platform (the CLI pulls them).
pub trait ImageResolver {
    fn resolve(&mut self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String>;

    /// Download `url` for `ADD URL` (verified against `checksum`, `sha256:HEX`, when
    /// given) into a local context of its own holding the one file.
    fn fetch_url(&mut self, url: &str, checksum: Option<&str>) -> Result<FetchedUrl, String> {
        let _ = checksum;
        Err(format!("ADD {url}: downloading is not available here"))
    }
}

/// A file `ADD` downloaded: the local context that holds it, and its name there.
#[derive(Debug, Clone)]
pub struct FetchedUrl {
    pub context: String,
    pub file_name: String,
}

#[derive(Debug, Clone)]
pub struct LowerOptions {
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub target_platform: Platform,
    pub build_platform: Platform,
    /// `--build-context` entries, plus `context` for the main context.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// The name the main build context is registered under.
    pub main_context: String,
    pub labels: BTreeMap<String, String>,
    pub network: NetworkMode,
    pub allow_insecure: bool,
    pub extra_hosts: Vec<String>,
    /// `--shm-size` of every RUN, in bytes.
    pub shm_size: Option<u64>,
    /// `--ulimit`s of every RUN.
    pub ulimits: Vec<strata_solver::graph::Ulimit>,
    /// `created` of the config and history entries (RFC 3339).
    pub created: Option<String>,
    /// Shown first in every step's progress label (`[linux/arm64 build 2/5] RUN make`)
    /// when several platforms are built at once.
    pub platform_label: Option<String>,
}

/// A warning with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowerWarning {
    pub line: Option<usize>,
    pub message: String,
}

/// An error with its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LowerError {
    pub line: Option<usize>,
    pub message: String,
}

fn lerr(line: impl Into<Option<usize>>, message: impl Into<String>) -> LowerError {
    LowerError { line: line.into(), message: message.into() }
}

/// The lowered build.
#[derive(Debug, Clone)]
pub struct Lowered {
    pub graph: Graph,
    /// The target stage's file system.
    pub target: NodeId,
    /// The target stage's image configuration (history included, rootfs left empty).
    pub config: ImageConfig,
    pub warnings: Vec<LowerWarning>,
    /// The stages that will be built, by index.
    pub stages_built: Vec<usize>,
    /// Each step's progress label → the Dockerfile line of its instruction (errors
    /// at a step show it).
    pub step_lines: BTreeMap<String, usize>,
    /// Each step's progress label → where it comes from in the Dockerfile (a build's
    /// record names steps by this, to compare them with an earlier build's).
    pub steps: BTreeMap<String, StepSource>,
}

/// Where a step comes from: its stage, its place there, its text as written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepSource {
    /// The stage's name, or `stage-N`.
    pub stage: String,
    /// 2 for the first instruction after FROM (as the progress label counts); 0 for an
    /// ONBUILD trigger.
    pub position: usize,
    /// The Dockerfile line of its instruction.
    pub line: usize,
    /// The instruction as written (continuations joined).
    pub text: String,
    /// The ARGs in scope when it ran (their values reach a RUN as environment).
    pub args: Vec<String>,
    /// The platform label of a multi-platform build (`linux/arm64`).
    pub platform: Option<String>,
}

#[derive(Clone)]
struct StageState {
    node: NodeId,
    config: ImageConfig,
    /// Declared ARGs in scope, with values.
    args: Vec<(String, String)>,
    cmd_set: bool,
    platform: Platform,
}

impl StageState {
    /// The environment for expanding words: ARGs, then ENV (ENV wins).
    fn expansion_env(&self) -> EnvList {
        let mut v: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        v.extend(self.config.config.env.clone().unwrap_or_default());
        EnvList(v)
    }

    /// The environment of a RUN: ENV, plus ARGs not shadowed by ENV.
    fn run_env(&self, proxies: &[(String, String)]) -> Vec<String> {
        let mut env = self.config.config.env.clone().unwrap_or_default();
        let has = |env: &Vec<String>, k: &str| env.iter().any(|e| e.split_once('=').map(|(a, _)| a).unwrap_or(e) == k);
        for (k, v) in self.args.iter().chain(proxies.iter()) {
            if !has(&env, k) {
                env.push(format!("{k}={v}"));
            }
        }
        env
    }
}

fn platform_args(prefix: &str, p: &Platform) -> Vec<(String, String)> {
    vec![
        (format!("{prefix}PLATFORM"), p.to_string()),
        (format!("{prefix}OS"), p.os.clone()),
        (format!("{prefix}ARCH"), p.architecture.clone()),
        (format!("{prefix}VARIANT"), p.variant.clone().unwrap_or_default()),
    ]
}

struct Lowerer<'a> {
    df: &'a Dockerfile,
    opts: &'a LowerOptions,
    resolver: &'a mut dyn ImageResolver,
    graph: Graph,
    warnings: Vec<LowerWarning>,
    meta: Vec<(String, String)>,
    auto_args: Vec<(String, String)>,
    used_build_args: BTreeSet<String>,
    states: HashMap<usize, StageState>,
    images: HashMap<(String, String), ResolvedImage>,
    multi_stage: bool,
    step_lines: BTreeMap<String, usize>,
    steps: BTreeMap<String, StepSource>,
    /// Bytes of ARG/ENV/LABEL values kept so far (see [`MAX_KEPT_VALUES`]).
    kept_bytes: usize,
}

/// The most a stage's ARGs and ENV may hold together: a process cannot be started with
/// an environment larger than a few MiB anyway (Linux's `ARG_MAX`).
const MAX_STAGE_ENV: usize = 4 << 20;
/// The most ARG, ENV and LABEL values (and the history lines that repeat them) one
/// lowering may keep: each stage inherits its base's environment, so a hostile
/// Dockerfile could otherwise multiply a large one by its number of stages.
const MAX_KEPT_VALUES: usize = 256 << 20;

/// Lower a parsed Dockerfile to a build graph for one platform.
pub fn lower(df: &Dockerfile, opts: &LowerOptions, resolver: &mut dyn ImageResolver) -> Result<Lowered, LowerError> {
    let mut auto_args = platform_args("TARGET", &opts.target_platform);
    auto_args.extend(platform_args("BUILD", &opts.build_platform));
    let mut l = Lowerer {
        df,
        opts,
        resolver,
        graph: Graph::default(),
        warnings: Vec::new(),
        meta: Vec::new(),
        auto_args,
        used_build_args: BTreeSet::new(),
        states: HashMap::new(),
        images: HashMap::new(),
        multi_stage: df.stages.len() > 1,
        kept_bytes: 0,
        step_lines: BTreeMap::new(),
        steps: BTreeMap::new(),
    };
    l.eval_meta_args()?;
    let target = l.target_index()?;
    let order = l.stage_order(target)?;
    for i in &order {
        l.lower_stage(*i)?;
    }
    let unused: Vec<&String> = opts
        .build_args
        .keys()
        .filter(|k| !l.used_build_args.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
        .collect();
    if !unused.is_empty() {
        let list = unused.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
        l.warnings
            .push(LowerWarning { line: None, message: format!("One or more build-args [{list}] were not consumed") });
    }
    let st = l.states.remove(&target).expect("target lowered");
    let mut config = st.config;
    if !opts.labels.is_empty() {
        let labels = config.config.labels.get_or_insert_with(BTreeMap::new);
        for (k, v) in &opts.labels {
            labels.insert(k.clone(), v.clone());
        }
    }
    config.created = opts.created.clone();
    Ok(Lowered {
        graph: l.graph,
        target: st.node,
        config,
        warnings: l.warnings,
        stages_built: order,
        step_lines: l.step_lines,
        steps: l.steps,
    })
}

impl<'a> Lowerer<'a> {
    /// Count `bytes` of kept values against [`MAX_KEPT_VALUES`].
    fn keep(&mut self, bytes: usize, line: usize, what: &str) -> Result<(), LowerError> {
        self.kept_bytes += bytes;
        if self.kept_bytes > MAX_KEPT_VALUES {
            return Err(lerr(
                line,
                format!(
                    "{what}: the ARG, ENV and LABEL values of this Dockerfile add up to more than {} MiB; strata stops here",
                    MAX_KEPT_VALUES >> 20
                ),
            ));
        }
        Ok(())
    }

    /// Refuse a stage environment over [`MAX_STAGE_ENV`].
    fn check_stage_env(st: &StageState, line: usize, what: &str) -> Result<(), LowerError> {
        let size: usize = st.args.iter().map(|(k, v)| k.len() + v.len() + 1).sum::<usize>()
            + st.config.config.env.as_ref().map(|e| e.iter().map(String::len).sum()).unwrap_or(0);
        if size > MAX_STAGE_ENV {
            return Err(lerr(
                line,
                format!(
                    "{what}: the ARGs and ENV of this stage would hold {size} bytes, over strata's limit of {} MiB (no process can be started with an environment that large)",
                    MAX_STAGE_ENV >> 20
                ),
            ));
        }
        Ok(())
    }

    fn meta_env(&self) -> EnvList {
        let mut v: Vec<String> = self.auto_args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        v.extend(self.meta.iter().map(|(k, v)| format!("{k}={v}")));
        EnvList(v)
    }

    fn expand_word(&self, word: &str, env: &EnvList, line: usize) -> Result<String, LowerError> {
        Lexer::new(self.df.escape)
            .process_word(word, env)
            .map(|e| e.result)
            .map_err(|e| lerr(line, format!("failed to process {word:?}: {e}")))
    }

    fn eval_meta_args(&mut self) -> Result<(), LowerError> {
        for arg in &self.df.meta_args {
            let line = arg.location.start_line;
            for def in &arg.instruction {
                let value = if let Some(v) = self.opts.build_args.get(&def.key) {
                    self.used_build_args.insert(def.key.clone());
                    Some(v.clone())
                } else if let Some(d) = &def.value {
                    Some(self.expand_word(d, &self.meta_env(), line)?)
                } else {
                    None
                };
                self.meta.retain(|(k, _)| k != &def.key);
                if let Some(v) = value {
                    self.keep(v.len(), line, &format!("ARG {}", def.key))?;
                    self.meta.push((def.key.clone(), v));
                }
                let size: usize = self.meta.iter().map(|(k, v)| k.len() + v.len() + 1).sum();
                if size > MAX_STAGE_ENV {
                    return Err(lerr(
                        line,
                        format!("ARG {}: the ARGs before the first FROM would hold {size} bytes, over strata's limit of {} MiB", def.key, MAX_STAGE_ENV >> 20),
                    ));
                }
            }
        }
        Ok(())
    }

    fn stage_label(&self, i: usize) -> String {
        match &self.df.stages[i].name {
            Some(n) => n.clone(),
            None => format!("stage-{i}"),
        }
    }

    fn find_stage(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Some(i) = self.df.stages[..before].iter().position(|s| s.name.as_deref() == Some(lower.as_str())) {
            return Some(i);
        }
        name.parse::<usize>().ok().filter(|i| *i < before)
    }

    fn target_index(&self) -> Result<usize, LowerError> {
        if self.df.stages.is_empty() {
            // Only ARGs (and directives): nothing to build.
            return Err(lerr(None, "dockerfile contains no stages to build (a FROM is missing)"));
        }
        match &self.opts.target {
            None => Ok(self.df.stages.len() - 1),
            Some(t) => {
                let lower = t.to_ascii_lowercase();
                self.df
                    .stages
                    .iter()
                    .position(|s| s.name.as_deref() == Some(lower.as_str()))
                    .ok_or_else(|| lerr(None, format!("target stage {t:?} could not be found")))
            }
        }
    }

    fn base_name(&self, i: usize) -> Result<String, LowerError> {
        let s = &self.df.stages[i];
        self.expand_word(&s.base_name, &self.meta_env(), s.location.start_line)
    }

    /// Stages the target needs, dependencies first.
    fn stage_order(&self, target: usize) -> Result<Vec<usize>, LowerError> {
        let mut order = Vec::new();
        let mut state: HashMap<usize, u8> = HashMap::new(); // 1 visiting, 2 done
        self.visit(target, &mut state, &mut order)?;
        Ok(order)
    }

    fn deps(&self, i: usize) -> Result<Vec<usize>, LowerError> {
        let mut out = Vec::new();
        let base = self.base_name(i)?;
        if let Some(d) = self.find_stage(&base, i) {
            out.push(d);
        }
        let stage = &self.df.stages[i];
        for c in &stage.commands {
            let from: Vec<&str> = match &c.instruction {
                Instruction::Copy(cp) => cp.from.iter().map(String::as_str).collect(),
                Instruction::Run(r) => r.mounts.iter().filter_map(|m| m.from.as_deref()).collect(),
                _ => Vec::new(),
            };
            for f in from {
                // `--from` may use ARGs of the stage; meta args cover the common case.
                let name =
                    self.expand_word(f, &self.meta_env(), c.location.start_line).unwrap_or_else(|_| f.to_string());
                if let Some(d) = self.find_stage(&name, self.df.stages.len()) {
                    if d >= i && self.df.stages[d].name.as_deref() != Some(name.to_ascii_lowercase().as_str()) {
                        continue;
                    }
                    if d == i {
                        return Err(lerr(
                            c.location.start_line,
                            format!("circular dependency detected on stage: {}", self.stage_label(i)),
                        ));
                    }
                    out.push(d);
                } else if name.parse::<usize>().is_ok() {
                    return Err(lerr(
                        c.location.start_line,
                        format!("invalid stage index {name}: there is no stage {name} before this one"),
                    ));
                }
            }
        }
        Ok(out)
    }

    fn visit(&self, i: usize, state: &mut HashMap<usize, u8>, order: &mut Vec<usize>) -> Result<(), LowerError> {
        match state.get(&i) {
            Some(2) => return Ok(()),
            Some(1) => {
                return Err(lerr(
                    self.df.stages[i].location.start_line,
                    format!("circular dependency detected on stage: {}", self.stage_label(i)),
                ))
            }
            _ => {}
        }
        state.insert(i, 1);
        for d in self.deps(i)? {
            self.visit(d, state, order)?;
        }
        state.insert(i, 2);
        order.push(i);
        Ok(())
    }

    fn resolve_image(
        &mut self,
        reference: &str,
        platform: &Platform,
        line: usize,
    ) -> Result<ResolvedImage, LowerError> {
        let key = (reference.to_string(), platform.to_string());
        if let Some(r) = self.images.get(&key) {
            return Ok(r.clone());
        }
        let r = self.resolver.resolve(reference, platform).map_err(|e| lerr(line, e))?;
        self.images.insert(key, r.clone());
        Ok(r)
    }

    fn image_node(&mut self, img: &ResolvedImage, platform: &Platform) -> NodeId {
        let op = Op::Image {
            reference: img.reference.clone(),
            manifest_digest: img.manifest_digest.clone(),
            platform: platform.clone(),
        };
        self.graph.add(op, vec![], format!("[internal] load {}", img.reference))
    }

    /// The file system and config a stage starts from.
    fn start_stage(&mut self, i: usize) -> Result<(StageState, Vec<String>), LowerError> {
        let stage = &self.df.stages[i];
        let line = stage.location.start_line;
        let platform = match &stage.platform {
            Some(p) => {
                let v = self.expand_word(p, &self.meta_env(), line)?;
                v.parse::<Platform>().map_err(|e| lerr(line, e.to_string()))?
            }
            None => self.opts.target_platform.clone(),
        };
        let base = self.base_name(i)?;
        if base.is_empty() {
            return Err(lerr(line, "base name (empty) should not be blank"));
        }
        if let Some(d) = self.find_stage(&base, i) {
            let mut st =
                self.states.get(&d).cloned().ok_or_else(|| lerr(line, format!("stage {base} was not built")))?;
            let inherited = st.config.config.env.as_ref().map(|e| e.iter().map(String::len).sum()).unwrap_or(0);
            self.keep(inherited, line, &format!("FROM {base}"))?;
            st.args.clear();
            st.cmd_set = false;
            let triggers = st.config.config.on_build.take().unwrap_or_default();
            return Ok((st, triggers));
        }
        let mut config = ImageConfig {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            ..Default::default()
        };
        let (node, triggers) = if base == "scratch" {
            (self.graph.add(Op::Scratch, vec![], "scratch"), Vec::new())
        } else {
            let reference = match self.opts.named_contexts.get(&base) {
                Some(NamedContext::Image(r)) => r.clone(),
                Some(NamedContext::Local(_)) => {
                    return Err(lerr(
                        line,
                        format!("FROM {base}: a local directory context cannot be used as a base image"),
                    ));
                }
                None => base.clone(),
            };
            let img = self.resolve_image(&reference, &platform, line)?;
            let mut base_cfg = img.config.clone();
            let triggers = base_cfg.config.on_build.take().unwrap_or_default();
            config.config = base_cfg.config;
            config.history = base_cfg.history;
            config.author = base_cfg.author;
            if let Some(v) = base_cfg.variant.take() {
                config.variant = Some(v);
            }
            (self.image_node(&img, &platform), triggers)
        };
        if config.config.env_get("PATH").is_none() {
            config.config.env_set("PATH", DEFAULT_PATH);
        }
        Ok((StageState { node, config, args: Vec::new(), cmd_set: false, platform }, triggers))
    }

    fn lower_stage(&mut self, i: usize) -> Result<(), LowerError> {
        let (mut st, triggers) = self.start_stage(i)?;
        let stage = &self.df.stages[i];
        let total = stage.commands.len() + 1;
        let mut label = if self.multi_stage { format!("{} ", self.stage_label(i)) } else { String::new() };
        if let Some(p) = &self.opts.platform_label {
            label = format!("{p} {label}");
        }
        // ONBUILD triggers of the base image run first.
        for (n, t) in triggers.iter().enumerate() {
            let parsed = crate::ast::parse(format!("{t}\n").as_bytes())
                .map_err(|e| lerr(stage.location.start_line, format!("ONBUILD trigger {t:?}: {e}")))?;
            let cmds = parsed
                .children
                .iter()
                .map(crate::instructions::parse_instruction)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| lerr(stage.location.start_line, format!("ONBUILD trigger {t:?}: {}", e.message())))?;
            for c in &cmds {
                let name = format!("[{label}onbuild {}/{}] {}", n + 1, triggers.len(), c.code);
                // A trigger runs where the stage starts (its FROM).
                self.step_lines.insert(name.clone(), stage.location.start_line);
                self.note_step(&name, i, 0, stage.location.start_line, &c.code, &st);
                self.dispatch(i, &mut st, c, &name)?;
            }
        }
        for (n, c) in stage.commands.iter().enumerate() {
            let name = format!("[{label}{}/{}] {}", n + 2, total, c.code);
            self.step_lines.insert(name.clone(), c.location.start_line);
            self.note_step(&name, i, n + 2, c.location.start_line, &c.code, &st);
            self.dispatch(i, &mut st, c, &name)?;
        }
        self.states.insert(i, st);
        Ok(())
    }

    fn note_step(&mut self, name: &str, stage: usize, position: usize, line: usize, text: &str, st: &StageState) {
        let source = StepSource {
            stage: self.stage_label(stage),
            position,
            line,
            text: text.to_string(),
            args: st.args.iter().map(|(k, _)| k.clone()).collect(),
            platform: self.opts.platform_label.clone(),
        };
        self.steps.insert(name.to_string(), source);
    }

    fn history(&self, st: &mut StageState, created_by: String, empty_layer: bool) {
        st.config.history.push(History {
            created: self.opts.created.clone(),
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer,
            ..Default::default()
        });
    }

    /// Resolve `--from` / mount `from=`: a stage, a named context or an image.
    fn source_node(&mut self, from: &str, current: usize, st: &StageState, line: usize) -> Result<NodeId, LowerError> {
        if let Some(d) = self.find_stage(from, current) {
            return self
                .states
                .get(&d)
                .map(|s| s.node)
                .ok_or_else(|| lerr(line, format!("stage {from} was not built")));
        }
        if let Some(ctx) = self.opts.named_contexts.get(from).cloned() {
            return Ok(match ctx {
                NamedContext::Local(name) => {
                    self.graph.add(Op::Local { name: name.clone() }, vec![], format!("[context {name}]"))
                }
                NamedContext::Image(r) => {
                    let img = self.resolve_image(&r, &st.platform, line)?;
                    self.image_node(&img, &st.platform)
                }
            });
        }
        if from.parse::<usize>().is_ok() {
            return Err(lerr(line, format!("invalid from flag value {from}: stage index out of range")));
        }
        let img = self.resolve_image(from, &st.platform, line)?;
        Ok(self.image_node(&img, &st.platform))
    }

    fn main_context(&mut self) -> NodeId {
        let name = self.opts.main_context.clone();
        self.graph.add(Op::Local { name: name.clone() }, vec![], "[internal] load build context")
    }

    fn join_workdir(st: &StageState, p: &str) -> String {
        if p.starts_with('/') {
            return p.to_string();
        }
        let wd = st.config.config.working_dir.clone().unwrap_or_else(|| "/".into());
        let mut s = if wd.ends_with('/') { wd } else { format!("{wd}/") };
        s.push_str(p);
        s
    }

    fn parse_chown(s: &str) -> Chown {
        match s.split_once(':') {
            Some((u, g)) => Chown { user: u.to_string(), group: Some(g.to_string()) },
            None => Chown { user: s.to_string(), group: None },
        }
    }

    fn dispatch(
        &mut self,
        stage_index: usize,
        st: &mut StageState,
        cmd: &Command,
        name: &str,
    ) -> Result<(), LowerError> {
        let line = cmd.location.start_line;
        let mut inst = cmd.instruction.clone();
        let env = st.expansion_env();
        if !matches!(inst, Instruction::Arg(_)) {
            let mut ex = LexerExpander::new(self.df.escape, &env);
            inst.expand(&mut ex).map_err(|e| lerr(line, e.to_string()))?;
            // BuildKit's UndefinedVar lint: a variable used here that no ARG or ENV defines.
            for var in &ex.unmatched {
                if PROXY_ARGS.contains(&var.as_str()) {
                    continue;
                }
                self.warnings.push(LowerWarning {
                    line: Some(line),
                    message: format!("UndefinedVar: Usage of undefined variable '${var}'"),
                });
            }
        }
        let stage_name = self.df.stages[stage_index].name.clone().unwrap_or_else(|| format!("{stage_index}"));
        match inst {
            Instruction::From(_) => {}
            Instruction::Arg(defs) => {
                for def in defs {
                    let value = if let Some(v) = self.opts.build_args.get(&def.key) {
                        self.used_build_args.insert(def.key.clone());
                        Some(v.clone())
                    } else if let Some(d) = &def.value {
                        let env = st.expansion_env();
                        let mut ex = LexerExpander::new(self.df.escape, &env);
                        Some(ex.word(d).map_err(|e| lerr(line, e.to_string()))?)
                    } else if let Some((_, v)) = self.meta.iter().find(|(k, _)| *k == def.key) {
                        Some(v.clone())
                    } else {
                        self.auto_args.iter().find(|(k, _)| *k == def.key).map(|(_, v)| v.clone())
                    };
                    st.args.retain(|(k, _)| *k != def.key);
                    if let Some(v) = value {
                        self.keep(v.len(), line, &format!("ARG {}", def.key))?;
                        st.args.push((def.key.clone(), v));
                    }
                    Self::check_stage_env(st, line, &format!("ARG {}", def.key))?;
                }
                self.history(st, format!("ARG {}", cmd.code.split_once(' ').map(|x| x.1).unwrap_or("")), true);
            }
            Instruction::Env(kvs) => {
                for kv in &kvs {
                    // Twice: the value, and the history line that repeats it.
                    self.keep(2 * kv.value.len(), line, &format!("ENV {}", kv.key))?;
                    st.config.config.env_set(&kv.key, &kv.value);
                    Self::check_stage_env(st, line, &format!("ENV {}", kv.key))?;
                }
                let desc = kvs.iter().map(|kv| format!("{}={}", kv.key, kv.value)).collect::<Vec<_>>().join(" ");
                self.history(st, format!("ENV {desc}"), true);
            }
            Instruction::Label(kvs) => {
                for kv in &kvs {
                    self.keep(2 * (kv.key.len() + kv.value.len()), line, &format!("LABEL {}", kv.key))?;
                }
                let labels = st.config.config.labels.get_or_insert_with(BTreeMap::new);
                for kv in &kvs {
                    labels.insert(kv.key.clone(), kv.value.clone());
                }
                let desc = kvs.iter().map(|kv| format!("{}={}", kv.key, kv.value)).collect::<Vec<_>>().join(" ");
                self.history(st, format!("LABEL {desc}"), true);
            }
            Instruction::Maintainer(m) => {
                st.config.author = Some(m.clone());
                self.history(st, format!("MAINTAINER {m}"), true);
            }
            Instruction::Expose(ports) => {
                let map = st.config.config.exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in &ports {
                    for port in expand_port_spec(p).map_err(|e| lerr(line, e))? {
                        map.insert(port, serde_json::json!({}));
                    }
                }
                self.history(st, format!("EXPOSE map[{}]", ports.join(" ")), true);
            }
            Instruction::Volume(vols) => {
                let map = st.config.config.volumes.get_or_insert_with(BTreeMap::new);
                for v in &vols {
                    if v.trim().is_empty() {
                        return Err(lerr(line, "VOLUME specified can not be an empty string"));
                    }
                    map.insert(v.clone(), serde_json::json!({}));
                }
                self.history(st, format!("VOLUME {:?}", vols), true);
            }
            Instruction::User(u) => {
                st.config.config.user = Some(u.clone());
                self.history(st, format!("USER {u}"), true);
            }
            Instruction::StopSignal(s) => {
                st.config.config.stop_signal = Some(s.clone());
                self.history(st, format!("STOPSIGNAL {s}"), true);
            }
            Instruction::Shell(v) => {
                st.config.config.shell = Some(v.clone());
                self.history(st, format!("SHELL {v:?}"), true);
            }
            Instruction::Onbuild(expr) => {
                st.config.config.on_build.get_or_insert_with(Vec::new).push(expr.clone());
                self.history(st, format!("ONBUILD {expr}"), true);
            }
            Instruction::Cmd(c) => {
                let args = self.with_shell(st, &c);
                st.config.config.cmd = Some(args.clone());
                st.cmd_set = true;
                self.history(st, format!("CMD {}", json_list(&args)), true);
            }
            Instruction::Entrypoint(c) => {
                let args = self.with_shell(st, &c);
                st.config.config.entrypoint =
                    if args.is_empty() && !c.is_shell_form() { Some(Vec::new()) } else { Some(args.clone()) };
                if !st.cmd_set {
                    st.config.config.cmd = None;
                }
                self.history(st, format!("ENTRYPOINT {}", json_list(&args)), true);
            }
            Instruction::Healthcheck(h) => {
                st.config.config.healthcheck = Some(Healthcheck {
                    test: h.test.clone(),
                    interval: h.interval.as_nanos() as i64,
                    timeout: h.timeout.as_nanos() as i64,
                    start_period: h.start_period.as_nanos() as i64,
                    start_interval: h.start_interval.as_nanos() as i64,
                    retries: h.retries as i32,
                });
                self.history(st, format!("HEALTHCHECK {}", json_list(&h.test)), true);
            }
            Instruction::Workdir(w) => {
                let path = clean_abs(&Self::join_workdir(st, &w));
                st.config.config.working_dir = Some(path.clone());
                let chown = st.config.config.user.as_ref().filter(|u| !u.is_empty()).map(|u| Self::parse_chown(u));
                let op = Op::Mkdir { path: path.clone(), mode: 0o755, chown };
                st.node = self.graph.add_in_stage(op, vec![st.node], name, Some(&stage_name));
                self.history(st, format!("WORKDIR {path}"), false);
            }
            Instruction::Run(r) => {
                let args = match &r.cmd {
                    ShellOrExec::Exec(v) => v.clone(),
                    ShellOrExec::Shell(s) => {
                        let mut shell =
                            st.config.config.shell.clone().unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
                        let script = heredoc_script(s, &r.heredocs);
                        shell.push(script);
                        shell
                    }
                };
                let proxies: Vec<(String, String)> = PROXY_ARGS
                    .iter()
                    .filter_map(|k| self.opts.build_args.get(*k).map(|v| (k.to_string(), v.clone())))
                    .collect();
                let mut inputs = vec![st.node];
                let mut mounts = Vec::new();
                for m in &r.mounts {
                    mounts.push(self.lower_mount(m, stage_index, st, &mut inputs, line)?);
                }
                let network = match r.network {
                    Some(crate::instructions::run_options::NetworkMode::None) => NetworkMode::None,
                    Some(_) => NetworkMode::Host,
                    None => self.opts.network,
                };
                let insecure = matches!(r.security, Some(crate::instructions::run_options::Security::Insecure));
                if insecure && !self.opts.allow_insecure {
                    return Err(lerr(
                        line,
                        "RUN --security=insecure needs the entitlement: pass --allow security.insecure",
                    ));
                }
                let exec = ExecOp {
                    args: args.clone(),
                    env: st.run_env(&proxies),
                    cwd: st.config.config.working_dir.clone().unwrap_or_else(|| "/".into()),
                    user: st.config.config.user.clone().unwrap_or_default(),
                    network,
                    insecure,
                    platform: st.platform.clone(),
                    mounts,
                    extra_hosts: self.opts.extra_hosts.clone(),
                    shm_size: self.opts.shm_size,
                    ulimits: self.opts.ulimits.clone(),
                };
                st.node = self.graph.add_in_stage(Op::Exec(exec), inputs, name, Some(&stage_name));
                let shown = match &r.cmd {
                    ShellOrExec::Exec(v) => format!("RUN {}", json_list(v)),
                    ShellOrExec::Shell(_) => format!("RUN {}", args.join(" ")),
                };
                self.history(st, format!("{shown} # buildkit"), false);
            }
            Instruction::Copy(c) => {
                let src_node = match &c.from {
                    Some(f) => self.source_node(f, stage_index, st, line)?,
                    None => self.main_context(),
                };
                self.lower_copy(
                    st,
                    name,
                    &stage_name,
                    src_node,
                    c.sources.clone(),
                    &c.dest,
                    c.chown.as_deref(),
                    c.chmod.clone(),
                    c.link,
                    c.parents,
                    c.exclude.clone(),
                    false,
                    &c.heredocs,
                    line,
                )?;
                self.history(
                    st,
                    format!("COPY {} # buildkit", cmd.code.split_once(' ').map(|x| x.1).unwrap_or("")),
                    false,
                );
            }
            Instruction::Add(a) => {
                let is_url = |s: &String| s.starts_with("http://") || s.starts_with("https://");
                if a.sources.iter().any(|s| s.starts_with("git@") || s.ends_with(".git") && is_url(s)) {
                    return Err(lerr(line, "ADD of a git repository is not supported yet: clone it in a RUN step or use a git URL as the build context"));
                }
                let urls = a.sources.iter().filter(|s| is_url(s)).count();
                if a.checksum.is_some() && (urls != 1 || a.sources.len() != 1) {
                    return Err(lerr(line, "ADD --checksum needs exactly one source, an http(s) URL"));
                }
                let (src_node, sources, unpack) = if urls > 0 {
                    if urls != a.sources.len() {
                        return Err(lerr(line, "ADD cannot mix URLs and local sources in one instruction"));
                    }
                    // Each URL becomes a local context of its own holding the one file;
                    // several URLs are fetched into one when they are several sources.
                    let [url] = a.sources.as_slice() else {
                        return Err(lerr(
                            line,
                            "ADD of several URLs at once is not supported yet: use one ADD per URL",
                        ));
                    };
                    let fetched = self.resolver.fetch_url(url, a.checksum.as_deref()).map_err(|e| lerr(line, e))?;
                    let node = self.graph.add(
                        Op::Local { name: fetched.context.clone() },
                        vec![],
                        format!("[internal] load remote file {url}"),
                    );
                    // A download is never extracted (as BuildKit).
                    (node, vec![fetched.file_name], false)
                } else {
                    (self.main_context(), a.sources.clone(), a.unpack.unwrap_or(true))
                };
                self.lower_copy(
                    st,
                    name,
                    &stage_name,
                    src_node,
                    sources,
                    &a.dest,
                    a.chown.as_deref(),
                    a.chmod.clone(),
                    a.link,
                    false,
                    a.exclude.clone(),
                    unpack,
                    &a.heredocs,
                    line,
                )?;
                self.history(
                    st,
                    format!("ADD {} # buildkit", cmd.code.split_once(' ').map(|x| x.1).unwrap_or("")),
                    false,
                );
            }
        }
        Ok(())
    }

    fn with_shell(&self, st: &StageState, c: &ShellOrExec) -> Vec<String> {
        match c {
            ShellOrExec::Exec(v) => v.clone(),
            ShellOrExec::Shell(s) => {
                let mut shell = st.config.config.shell.clone().unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
                shell.push(s.clone());
                shell
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn lower_copy(
        &mut self,
        st: &mut StageState,
        name: &str,
        stage_name: &str,
        mut src_node: NodeId,
        mut sources: Vec<String>,
        dest: &str,
        chown: Option<&str>,
        chmod: Option<String>,
        link: bool,
        parents: bool,
        exclude: Vec<String>,
        unpack: bool,
        heredocs: &[crate::instructions::commands::SourceContent],
        _line: usize,
    ) -> Result<(), LowerError> {
        if !heredocs.is_empty() {
            // Heredoc sources become files of a scratch source.
            let mut node = self.graph.add(Op::Scratch, vec![], "scratch");
            for h in heredocs {
                let op = Op::MkFile {
                    path: format!("/{}", h.path),
                    data: h.data.clone().into_bytes(),
                    mode: 0o644,
                    chown: None,
                };
                node =
                    self.graph.add_in_stage(op, vec![node], format!("{name} (heredoc {})", h.path), Some(stage_name));
            }
            src_node = node;
            sources = heredocs.iter().map(|h| h.path.clone()).collect();
        }
        let dest_is_dir = dest.ends_with('/') || dest == "." || dest.ends_with("/.") || sources.len() > 1;
        let mut full = Self::join_workdir(st, dest);
        if dest_is_dir && !full.ends_with('/') {
            full.push('/');
        }
        let copy = CopyOp {
            sources,
            dest: full,
            dest_is_dir,
            chown: chown.map(Self::parse_chown),
            chmod,
            exclude,
            unpack_archives: unpack,
            parents,
            follow_symlinks: true,
            create_dest_path: true,
            allow_empty_wildcard: true,
        };
        if link {
            let scratch = self.graph.add(Op::Scratch, vec![], "scratch");
            let layer = self.graph.add_in_stage(Op::Copy(copy), vec![scratch, src_node], name, Some(stage_name));
            st.node =
                self.graph.add_in_stage(Op::Merge, vec![st.node, layer], format!("{name} (link)"), Some(stage_name));
        } else {
            st.node = self.graph.add_in_stage(Op::Copy(copy), vec![st.node, src_node], name, Some(stage_name));
        }
        Ok(())
    }

    fn lower_mount(
        &mut self,
        m: &MountSpec,
        stage_index: usize,
        st: &StageState,
        inputs: &mut Vec<NodeId>,
        line: usize,
    ) -> Result<Mount, LowerError> {
        let target = m.target.clone().unwrap_or_default();
        let target =
            if target.starts_with('/') || target.is_empty() { target } else { Self::join_workdir(st, &target) };
        let mut input_for = |l: &mut Self, from: &Option<String>| -> Result<usize, LowerError> {
            let node = match from {
                Some(f) => l.source_node(f, stage_index, st, line)?,
                None => l.main_context(),
            };
            inputs.push(node);
            Ok(inputs.len() - 1)
        };
        Ok(match m.mount_type {
            MountType::Bind => {
                let input = input_for(self, &m.from)?;
                Mount::Bind {
                    input,
                    source: m.source.clone().unwrap_or_else(|| "/".into()),
                    target,
                    readwrite: !m.read_only,
                }
            }
            MountType::Cache => {
                let from = match &m.from {
                    Some(_) => Some((input_for(self, &m.from)?, m.source.clone().unwrap_or_else(|| "/".into()))),
                    None => None,
                };
                Mount::Cache {
                    id: m.id.clone().unwrap_or_else(|| target.clone()),
                    target,
                    sharing: match m.sharing {
                        Some(crate::instructions::mount::CacheSharing::Private) => {
                            strata_solver::graph::CacheSharing::Private
                        }
                        Some(crate::instructions::mount::CacheSharing::Locked) => {
                            strata_solver::graph::CacheSharing::Locked
                        }
                        _ => strata_solver::graph::CacheSharing::Shared,
                    },
                    readonly: m.read_only,
                    mode: m.mode.unwrap_or(0o755),
                    uid: m.uid.unwrap_or(0),
                    gid: m.gid.unwrap_or(0),
                    from,
                }
            }
            MountType::Tmpfs => Mount::Tmpfs { target, size: m.size },
            MountType::Secret => Mount::Secret {
                id: m.id.clone().unwrap_or_default(),
                target: if m.target.is_some() { Some(target) } else { None },
                env: m.env.clone(),
                required: m.required,
                mode: m.mode.unwrap_or(0o400),
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
            },
            MountType::Ssh => Mount::Ssh {
                id: m.id.clone().unwrap_or_else(|| "default".into()),
                target: if target.is_empty() { "/run/buildkit/ssh_agent.0".into() } else { target },
                required: m.required,
                mode: m.mode.unwrap_or(0o600),
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
            },
        })
    }
}

/// The script a shell-form RUN with heredocs runs.
fn heredoc_script(cmd: &str, heredocs: &[crate::instructions::commands::InlineFile]) -> String {
    if heredocs.is_empty() {
        return cmd.to_string();
    }
    // `RUN <<EOF` alone: the body is the script.
    if heredocs.len() == 1 {
        let only = cmd.trim();
        if let Ok(Some(h)) = crate::ast::parse_heredoc(only) {
            if h.name == heredocs[0].name {
                return heredocs[0].content();
            }
        }
    }
    // Otherwise the shell reads the heredocs itself.
    let mut s = cmd.to_string();
    s.push('\n');
    for h in heredocs {
        s.push_str(&h.data);
        s.push_str(&h.name);
        s.push('\n');
    }
    s
}

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Clean an absolute path (`/a/./b/../c/` → `/a/c`).
pub fn clean_abs(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `80`, `80/udp`, `8080-8081` → `80/tcp`, `80/udp`, `8080/tcp`, `8081/tcp`.
pub fn expand_port_spec(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    let ports = ports.rsplit(':').next().unwrap_or(ports);
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (a, b),
        None => (ports, ports),
    };
    let lo: u32 = lo.parse().map_err(|_| format!("invalid containerPort: {spec}"))?;
    let hi: u32 = hi.parse().map_err(|_| format!("invalid containerPort: {spec}"))?;
    if hi < lo || hi > 65535 {
        return Err(format!("invalid range specified for containerPort: {spec}"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoImages;
    impl ImageResolver for NoImages {
        fn resolve(&mut self, r: &str, _: &Platform) -> Result<ResolvedImage, String> {
            Err(format!("no image {r} in this test"))
        }
    }

    fn lower_src(src: &str) -> Lowered {
        let parsed = crate::parse(src.as_bytes()).unwrap();
        let df = crate::instructions::parse_dockerfile(&parsed).unwrap();
        let opts = LowerOptions {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: "linux/amd64".parse().unwrap(),
            build_platform: "linux/amd64".parse().unwrap(),
            named_contexts: BTreeMap::new(),
            main_context: "context".into(),
            labels: BTreeMap::new(),
            network: NetworkMode::Host,
            allow_insecure: false,
            extra_hosts: Vec::new(),
            shm_size: None,
            ulimits: Vec::new(),
            created: None,
            platform_label: None,
        };
        lower(&df, &opts, &mut NoImages).unwrap()
    }

    #[test]
    fn undefined_variables_are_warned_about() {
        let l = lower_src("FROM scratch\nARG A=1\nENV B=$A C=$NOPE\nWORKDIR /$B\n");
        let msgs: Vec<_> = l.warnings.iter().map(|w| (w.line, w.message.clone())).collect();
        assert_eq!(msgs, vec![(Some(3), "UndefinedVar: Usage of undefined variable '$NOPE'".to_string())]);
        assert_eq!(l.config.config.env_get("B"), Some("1"));
        assert_eq!(l.config.config.working_dir.as_deref(), Some("/1"));
    }

    #[test]
    fn ports_and_paths() {
        assert_eq!(expand_port_spec("8080-8081").unwrap(), vec!["8080/tcp", "8081/tcp"]);
        assert_eq!(expand_port_spec("53/UDP").unwrap(), vec!["53/udp"]);
        assert!(expand_port_spec("x").is_err());
        assert_eq!(clean_abs("/a/./b/../c/"), "/a/c");
        assert_eq!(clean_abs("/"), "/");
    }
}
