//! What `strata build --call=outline` and `--call=targets` report, as data and as the
//! text buildx prints.
//!
//! * [`targets`] lists every stage: name, base, platform, doc comment, and which one
//!   is built by default (the last), as BuildKit's `ListTargets`.
//! * [`outline`] describes what building one target takes, as BuildKit's
//!   `Dockerfile2Outline`: the build arguments it declares or reads (with their
//!   resolved defaults, doc comments and the lines that use them), and the secrets
//!   and SSH agents its `RUN --mount`s need. Only the target and the stages it
//!   depends on count (its base stage chain, `COPY --from` and `RUN --mount from=`).
//!
//! Base images are not consulted: a variable an image's config would define is
//! unknown here, so an ARG default that refers to one resolves as if it were unset.
//!
//! ```
//! use strata_frontend::instructions::parse_dockerfile;
//! use strata_frontend::outline::{outline, OutlineOptions};
//!
//! let src = b"# VERSION picks the release\nARG VERSION=1.0\nFROM alpine:${VERSION}\n\
//!             RUN --mount=type=secret,id=token,required make\n";
//! let df = parse_dockerfile(&strata_frontend::parse(src).unwrap()).unwrap();
//! let o = outline(&df, &OutlineOptions::default()).unwrap();
//! assert_eq!(o.args[0].name, "VERSION");
//! assert_eq!(o.args[0].value.as_deref(), Some("1.0"));
//! assert_eq!(o.args[0].description.as_deref(), Some("picks the release"));
//! assert_eq!((o.secrets[0].name.as_str(), o.secrets[0].required), ("token", true));
//! assert!(o.to_text().contains("BUILD ARG   VALUE   DESCRIPTION\nVERSION     1.0     picks the release\n"));
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::ast::go_quote;
use crate::instructions::{
    suggest, ArgDef, Dockerfile, ExpandError, Instruction, LexerExpander, Location, MountError, MountType, ShellOrExec,
};
use crate::shell::{Env, Lexer};

/// One stage as `--call=targets` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The stage's `AS` name; empty for an unnamed stage.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Built when no `--target` is given (the last stage).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The base image or stage, unexpanded.
    pub base: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    pub location: Location,
}

/// Every stage of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Targets {
    pub targets: Vec<Target>,
}

/// A build argument the target uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlineArg {
    pub name: String,
    /// The value it resolves to: the `--build-arg` given, else its expanded default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where it is declared.
    pub location: Location,
    /// Instructions whose values refer to it (`FROM`, `COPY`, `RUN`…), in file order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uses: Vec<ArgUse>,
}

/// An instruction that refers to a build argument.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ArgUse {
    /// The stage's name, or `stage-N`.
    pub stage: String,
    pub line: usize,
}

/// A secret (`RUN --mount=type=secret`) or SSH agent (`type=ssh`) the build needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlineSecret {
    pub name: String,
    /// The build fails when the client does not provide it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// The first RUN that mounts it.
    pub location: Location,
}

/// What building one target takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outline {
    /// The target stage's name (`None` for an unnamed last stage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The target stage's doc comment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<OutlineArg>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<OutlineSecret>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh: Vec<OutlineSecret>,
}

/// Inputs of [`outline`].
#[derive(Debug, Clone, Default)]
pub struct OutlineOptions {
    /// The stage to describe; the last stage when `None`.
    pub target: Option<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// Automatic global values (`TARGETPLATFORM`, `BUILDPLATFORM`, …) visible to FROM
    /// and global ARG defaults.
    pub builtin_args: BTreeMap<String, String>,
}

impl OutlineOptions {
    /// Options whose automatic arguments describe a build on `build_platform` for
    /// `target_platform` (`os/arch[/variant]`, e.g. `linux/arm64/v8`), as BuildKit
    /// defines them: `BUILDPLATFORM`, `BUILDOS`, `BUILDARCH`, `BUILDVARIANT`,
    /// `TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`, `TARGETVARIANT`, the `…OSVERSION`
    /// pair and `TARGETSTAGE`.
    pub fn for_platforms(build_platform: &str, target_platform: &str, target: Option<&str>) -> Self {
        let mut builtin_args = BTreeMap::new();
        for (prefix, platform) in [("BUILD", build_platform), ("TARGET", target_platform)] {
            let mut parts = platform.splitn(3, '/');
            let os = parts.next().unwrap_or_default();
            let arch = parts.next().unwrap_or_default();
            let variant = parts.next().unwrap_or_default();
            for (name, value) in
                [("PLATFORM", platform), ("OS", os), ("OSVERSION", ""), ("ARCH", arch), ("VARIANT", variant)]
            {
                builtin_args.insert(format!("{prefix}{name}"), value.to_string());
            }
        }
        builtin_args.insert("TARGETSTAGE".to_string(), target.unwrap_or("default").to_string());
        OutlineOptions { target: target.map(str::to_string), build_args: BTreeMap::new(), builtin_args }
    }
}

/// Why an outline could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutlineError {
    #[error("dockerfile contains no stages to build")]
    NoStages,
    #[error("target stage {} could not be found{}", go_quote(name), suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    TargetNotFound { name: String, suggestion: Option<String> },
    #[error("line {}: {source}", location.start_line)]
    Expand { location: Location, source: ExpandError },
    #[error("line {}: {source}", location.start_line)]
    Mount { location: Location, source: MountError },
}

/// List the stages of a Dockerfile (`--call=targets`).
pub fn targets(df: &Dockerfile) -> Targets {
    let last = df.stages.len().saturating_sub(1);
    Targets {
        targets: df
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| Target {
                name: s.name.clone().unwrap_or_default(),
                default: i == last,
                description: s.doc.clone(),
                base: s.base_name.clone(),
                platform: s.platform.clone(),
                location: s.location,
            })
            .collect(),
    }
}

/// What BuildKit knows about one declared argument.
#[derive(Debug, Clone)]
struct ArgInfo {
    def: ArgDef,
    value: Option<String>,
    location: Location,
    /// Position among the names of its ARG instruction (`ARG A B`: 0, 1).
    position: usize,
    /// Global arguments its default refers to (they count as used with it).
    deps: BTreeSet<String>,
}

/// The per-stage state of the walk.
#[derive(Debug, Clone, Default)]
struct StageState {
    env: BTreeMap<String, String>,
    /// Arguments in scope: global ones first, then those declared in the stage.
    args: BTreeMap<String, ArgInfo>,
    used: BTreeSet<String>,
    secrets: BTreeMap<String, (bool, Location)>,
    ssh: BTreeMap<String, (bool, Location)>,
    /// Stages this one reads from (`COPY --from`, `RUN --mount from=`).
    deps: BTreeSet<usize>,
    base: Option<usize>,
}

/// Describe what building the target takes (`--call=outline`).
pub fn outline(df: &Dockerfile, opts: &OutlineOptions) -> Result<Outline, OutlineError> {
    if df.stages.is_empty() {
        return Err(OutlineError::NoStages);
    }
    let lexer = Lexer::new(df.escape);
    let mut uses: BTreeMap<String, BTreeSet<ArgUse>> = BTreeMap::new();

    // Global arguments (BuildKit's buildMetaArgs).
    let mut global: BTreeMap<String, String> = opts.builtin_args.clone();
    for (k, v) in global.iter_mut() {
        if let Some(given) = opts.build_args.get(k) {
            v.clone_from(given);
        }
    }
    let mut global_args: BTreeMap<String, ArgInfo> = BTreeMap::new();
    for meta in &df.meta_args {
        for (position, def) in meta.instruction.iter().enumerate() {
            let mut info =
                ArgInfo { def: def.clone(), value: None, location: meta.location, position, deps: BTreeSet::new() };
            if let Some(v) = opts.build_args.get(&def.key) {
                info.value = Some(v.clone());
            } else if let Some(default) = &def.value {
                let e = lexer
                    .process_word(default, &global)
                    .map_err(|source| expand_error(meta.location, default, source))?;
                info.deps = e.matched;
                if info.deps.remove(&def.key) {
                    if let Some(old) = global_args.get(&def.key) {
                        info.deps.extend(old.deps.iter().cloned());
                    }
                }
                info.value = Some(e.result);
            }
            if let Some(v) = &info.value {
                global.insert(def.key.clone(), v.clone());
            }
            global_args.insert(def.key.clone(), info);
        }
    }

    // Stages: FROM expansion, base stages, then each stage's commands.
    let mut states: Vec<StageState> = Vec::with_capacity(df.stages.len());
    for (i, stage) in df.stages.iter().enumerate() {
        let stage_name = stage.display_name(i);
        let mut used = BTreeSet::new();
        let mut record_from = |word: &str| -> Result<String, OutlineError> {
            let e = lexer.process_word(word, &global).map_err(|source| expand_error(stage.location, word, source))?;
            for name in e.matched.iter().chain(&e.unmatched) {
                if global_args.contains_key(name) {
                    uses.entry(name.clone())
                        .or_default()
                        .insert(ArgUse { stage: stage_name.clone(), line: stage.location.start_line });
                }
            }
            used.extend(e.matched);
            Ok(e.result)
        };
        let base_name = record_from(&stage.base_name)?;
        if let Some(p) = &stage.platform {
            record_from(p)?;
        }
        let base = df.stages[..i].iter().rposition(|s| s.name.as_deref() == Some(base_name.as_str()));
        let mut st = match base {
            Some(b) => {
                let parent = &states[b];
                StageState {
                    env: parent.env.clone(),
                    args: parent.args.clone(),
                    used: BTreeSet::new(),
                    ..StageState::default()
                }
            }
            None => StageState { args: global_args.clone(), ..StageState::default() },
        };
        st.base = base;
        st.used = used;
        walk_commands(df, i, &global, opts, &lexer, &mut st, &mut uses)?;
        states.push(st);
    }

    // The target and everything it depends on.
    let target = match &opts.target {
        None => df.stages.len() - 1,
        Some(name) => df.find_stage(name).ok_or_else(|| OutlineError::TargetNotFound {
            name: name.clone(),
            suggestion: suggest(name, df.stages.iter().filter_map(|s| s.name.as_deref()), true),
        })?,
    };
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![target];
    while let Some(i) = stack.pop() {
        if !seen.insert(i) {
            continue;
        }
        order.push(i);
        stack.extend(states[i].base);
        stack.extend(states[i].deps.iter().rev().copied());
    }
    let reachable_names: BTreeSet<String> = order.iter().map(|&i| df.stages[i].display_name(i)).collect();

    let mut args: Vec<(usize, usize, OutlineArg)> = Vec::new();
    let mut secrets: BTreeMap<String, (bool, Location)> = BTreeMap::new();
    let mut ssh: BTreeMap<String, (bool, Location)> = BTreeMap::new();
    let mut reported = BTreeSet::new();
    for &i in &order {
        let st = &states[i];
        let mut used = st.used.clone();
        let mut pending: Vec<String> = used.iter().cloned().collect();
        while let Some(k) = pending.pop() {
            if let Some(info) = st.args.get(&k) {
                for d in &info.deps {
                    if used.insert(d.clone()) {
                        pending.push(d.clone());
                    }
                }
            }
        }
        for k in used {
            let Some(info) = st.args.get(&k) else { continue };
            if !reported.insert(k.clone()) {
                continue;
            }
            let arg_uses = uses
                .get(&k)
                .map(|u| u.iter().filter(|u| reachable_names.contains(&u.stage)).cloned().collect())
                .unwrap_or_default();
            args.push((
                info.location.start_line,
                info.position,
                OutlineArg {
                    name: info.def.key.clone(),
                    value: info.value.clone(),
                    description: info.def.doc.clone(),
                    location: info.location,
                    uses: arg_uses,
                },
            ));
        }
        for (k, v) in &st.secrets {
            secrets.entry(k.clone()).or_insert(*v);
        }
        for (k, v) in &st.ssh {
            ssh.entry(k.clone()).or_insert(*v);
        }
    }
    args.sort_by_key(|(line, position, _)| (*line, *position));
    let args: Vec<OutlineArg> = args.into_iter().map(|(_, _, a)| a).collect();
    let list = |m: BTreeMap<String, (bool, Location)>| {
        let mut v: Vec<OutlineSecret> =
            m.into_iter().map(|(name, (required, location))| OutlineSecret { name, required, location }).collect();
        v.sort_by_key(|s| s.location.start_line);
        v
    };
    let stage = &df.stages[target];
    Ok(Outline {
        name: stage.name.clone(),
        description: stage.doc.clone(),
        args,
        secrets: list(secrets),
        ssh: list(ssh),
    })
}

/// Walk one stage's commands: ARG and ENV build the environment, every value that
/// refers to an argument is a use, RUN mounts name secrets, ssh agents and stages.
fn walk_commands(
    df: &Dockerfile,
    index: usize,
    global: &BTreeMap<String, String>,
    opts: &OutlineOptions,
    lexer: &Lexer,
    st: &mut StageState,
    uses: &mut BTreeMap<String, BTreeSet<ArgUse>>,
) -> Result<(), OutlineError> {
    let stage = &df.stages[index];
    let stage_name = stage.display_name(index);
    for cmd in &stage.commands {
        let location = cmd.location;
        let mut referenced: BTreeSet<String> = BTreeSet::new();
        match &cmd.instruction {
            Instruction::Arg(defs) => {
                for (position, def) in defs.iter().enumerate() {
                    let given = opts.build_args.get(&def.key).cloned();
                    let mut value = def.value.clone();
                    let mut inherited = false;
                    if value.is_none() && given.is_none() {
                        if let Some(v) = global.get(&def.key) {
                            value = Some(v.clone());
                            inherited = true;
                        }
                    }
                    if given.is_some() {
                        value = given;
                    } else if let (Some(default), false) = (&def.value, inherited) {
                        let e = lexer
                            .process_word(default, &st.env)
                            .map_err(|source| expand_error(location, default, source))?;
                        referenced.extend(e.matched.into_iter().chain(e.unmatched));
                        value = Some(e.result);
                    }
                    if let Some(v) = &value {
                        st.env.insert(def.key.clone(), v.clone());
                    }
                    if !inherited {
                        let info = ArgInfo { def: def.clone(), value, location, position, deps: BTreeSet::new() };
                        st.args.insert(def.key.clone(), info);
                    }
                    st.used.insert(def.key.clone());
                }
            }
            instruction => {
                let mut expanded = instruction.clone();
                let mut ex = LexerExpander::new(df.escape, &st.env);
                expanded.expand(&mut ex).map_err(|source| match source {
                    ExpandError::Mount(source) => OutlineError::Mount { location, source },
                    source => OutlineError::Expand { location, source },
                })?;
                referenced.extend(ex.matched);
                referenced.extend(ex.unmatched);
                match &expanded {
                    Instruction::Env(kvs) => {
                        for kv in kvs {
                            st.env.insert(kv.key.clone(), kv.value.clone());
                        }
                    }
                    Instruction::Copy(copy) => {
                        if let Some(dep) = copy.from.as_deref().and_then(|f| stage_ref(df, index, f)) {
                            st.deps.insert(dep);
                        }
                    }
                    Instruction::Run(run) => {
                        referenced.extend(shell_references(lexer, &run.cmd, &st.env));
                        for m in &run.mounts {
                            if let Some(dep) = m.from.as_deref().and_then(|f| stage_ref(df, index, f)) {
                                st.deps.insert(dep);
                            }
                            let (map, id) = match m.mount_type {
                                MountType::Secret => (&mut st.secrets, m.secret_id()),
                                MountType::Ssh => (&mut st.ssh, m.ssh_id()),
                                _ => continue,
                            };
                            let id = id.map_err(|source| OutlineError::Mount { location, source })?;
                            map.entry(id).or_insert((m.required, location));
                        }
                    }
                    Instruction::Cmd(c) | Instruction::Entrypoint(c) => {
                        referenced.extend(shell_references(lexer, c, &st.env));
                    }
                    _ => {}
                }
            }
        }
        for name in referenced {
            if st.args.contains_key(&name) {
                uses.entry(name).or_default().insert(ArgUse { stage: stage_name.clone(), line: location.start_line });
            }
        }
    }
    Ok(())
}

/// Variables a shell-form command refers to (the shell expands them when it runs).
fn shell_references(lexer: &Lexer, cmd: &ShellOrExec, env: &dyn Env) -> BTreeSet<String> {
    let ShellOrExec::Shell(script) = cmd else { return BTreeSet::new() };
    match lexer.process_word(script, env) {
        Ok(e) => e.matched.into_iter().chain(e.unmatched).collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// The stage a `--from` names: an earlier stage by name, or a stage index.
fn stage_ref(df: &Dockerfile, current: usize, from: &str) -> Option<usize> {
    if let Ok(i) = from.parse::<usize>() {
        return (i < df.stages.len() && i != current).then_some(i);
    }
    df.stages[..current].iter().rposition(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(from)))
}

fn expand_error(location: Location, word: &str, source: crate::shell::ShellError) -> OutlineError {
    OutlineError::Expand {
        location,
        source: ExpandError::Word(crate::instructions::WordError { word: word.to_string(), source }),
    }
}

impl Outline {
    /// The text buildx prints for `--call=outline`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if self.name.is_some() || self.description.is_some() {
            let mut rows = vec![vec!["TARGET:".to_string(), self.name.clone().unwrap_or_else(|| "(default)".into())]];
            if let Some(d) = &self.description {
                rows.push(vec!["DESCRIPTION:".to_string(), d.clone()]);
            }
            out.push_str(&tabulate(&rows, 1));
            out.push('\n');
        }
        if !self.args.is_empty() {
            let mut rows = vec![vec!["BUILD ARG".to_string(), "VALUE".to_string(), "DESCRIPTION".to_string()]];
            for a in &self.args {
                rows.push(vec![
                    a.name.clone(),
                    a.value.clone().unwrap_or_default(),
                    a.description.clone().unwrap_or_default(),
                ]);
            }
            out.push_str(&tabulate(&rows, 3));
            out.push('\n');
        }
        for (title, list) in [("SECRET", &self.secrets), ("SSH", &self.ssh)] {
            if list.is_empty() {
                continue;
            }
            let mut rows = vec![vec![title.to_string(), "REQUIRED".to_string()]];
            for s in list {
                rows.push(vec![s.name.clone(), if s.required { "true".into() } else { String::new() }]);
            }
            out.push_str(&tabulate(&rows, 3));
            out.push('\n');
        }
        out
    }
}

impl Targets {
    /// The text buildx prints for `--call=targets`.
    pub fn to_text(&self) -> String {
        let mut rows = vec![vec!["TARGET".to_string(), "DESCRIPTION".to_string()]];
        for t in &self.targets {
            let name = match (t.name.is_empty(), t.default) {
                (true, true) => "(default)".to_string(),
                (false, true) => format!("{} (default)", t.name),
                _ => t.name.clone(),
            };
            rows.push(vec![name, t.description.clone().unwrap_or_default()]);
        }
        tabulate(&rows, 1)
    }
}

/// Go's `text/tabwriter` for rows of equal length: every cell but the last of a row
/// is padded to its column's widest cell plus `padding` spaces.
fn tabulate(rows: &[Vec<String>], padding: usize) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                out.extend(std::iter::repeat_n(' ', widths[i] + padding - cell.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instructions::parse_dockerfile;

    fn df(src: &str) -> Dockerfile {
        parse_dockerfile(&crate::parse(src.as_bytes()).unwrap()).unwrap()
    }

    const MULTI: &str = "\
# GO_VERSION is the Go toolchain
ARG GO_VERSION=1.22
ARG UNUSED=x
ARG ALPINE=3.19
# base is the build environment
FROM golang:${GO_VERSION}-alpine${ALPINE} AS base
ARG TARGETOS
# LDFLAGS extra link flags
ARG LDFLAGS=\"-s -w\"
RUN --mount=type=ssh go mod download

FROM base AS build
RUN --mount=type=secret,id=netrc,target=/root/.netrc,required=true go build -ldflags \"$LDFLAGS\"

FROM alpine AS tools
RUN --mount=type=secret,id=other true

# release is the shipped image
FROM scratch AS release
COPY --from=build /out/app /app
";

    #[test]
    fn targets_list_every_stage() {
        let t = targets(&df(MULTI));
        let names: Vec<_> = t.targets.iter().map(|t| (t.name.as_str(), t.default)).collect();
        assert_eq!(names, [("base", false), ("build", false), ("tools", false), ("release", true)]);
        assert_eq!(t.targets[0].description.as_deref(), Some("is the build environment"));
        assert_eq!(
            t.to_text(),
            "TARGET            DESCRIPTION\nbase              is the build environment\nbuild             \n\
             tools             \nrelease (default) is the shipped image\n"
        );
    }

    #[test]
    fn outline_follows_dependencies() {
        let o = outline(&df(MULTI), &OutlineOptions::default()).unwrap();
        assert_eq!(o.name.as_deref(), Some("release"));
        let args: Vec<_> = o.args.iter().map(|a| (a.name.as_str(), a.value.as_deref())).collect();
        assert_eq!(
            args,
            [("GO_VERSION", Some("1.22")), ("ALPINE", Some("3.19")), ("TARGETOS", None), ("LDFLAGS", Some("-s -w"))]
        );
        assert_eq!(o.args[0].uses, [ArgUse { stage: "base".into(), line: 6 }]);
        assert_eq!(o.args[3].uses, [ArgUse { stage: "build".into(), line: 13 }]);
        let secrets: Vec<_> = o.secrets.iter().map(|s| (s.name.as_str(), s.required)).collect();
        assert_eq!(secrets, [("netrc", true)]);
        assert_eq!(o.ssh[0].name, "default");
        let text = o.to_text();
        assert!(text.starts_with("TARGET:      release\nDESCRIPTION: is the shipped image\n\n"), "{text}");
        assert!(text.contains("SECRET   REQUIRED\nnetrc    true\n\nSSH       REQUIRED\ndefault   \n\n"), "{text}");

        let opts = OutlineOptions {
            target: Some("tools".into()),
            build_args: [("GO_VERSION".to_string(), "1.23".to_string())].into(),
            ..OutlineOptions::default()
        };
        let o = outline(&df(MULTI), &opts).unwrap();
        assert!(o.args.is_empty());
        assert_eq!(o.secrets[0].name, "other");

        let df2 = df("ARG V=1\nFROM alpine AS base-linux\nARG V\nFROM base-$TARGETOS AS out\nCOPY --from=1 /a /b\n");
        let o = outline(&df2, &OutlineOptions::for_platforms("linux/amd64", "linux/arm64/v8", None)).unwrap();
        let args: Vec<_> = o.args.iter().map(|a| (a.name.as_str(), a.value.as_deref())).collect();
        assert_eq!(args, [("V", Some("1"))], "reached through the base stage chosen by TARGETOS");

        let opts = OutlineOptions { target: Some("biuld".into()), ..OutlineOptions::default() };
        assert_eq!(
            outline(&df(MULTI), &opts).unwrap_err().to_string(),
            "target stage \"biuld\" could not be found (did you mean build?)"
        );
    }
}
