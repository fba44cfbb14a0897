//! A whole Dockerfile as build stages (BuildKit's `instructions.Parse` plus the
//! stage-level checks of `dockerfile2llb`): the ARGs before the first FROM, then one
//! [`Stage`] per FROM with the commands that follow it, and the static lint findings.

use serde::Serialize;

use super::commands::{ArgDef, Command, Instruction, Located, Location};
use super::errors::{InstructionError, InstructionErrorKind};
use super::lint::{Lint, LintRule};
use super::parse::parse_node;
use crate::ast::{go_quote, Parsed};
use crate::scanner::Directives;

/// An `ARG` before the first `FROM` (a global build argument).
pub type MetaArg = Located<Vec<ArgDef>>;

/// A build stage: a FROM and the commands up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// The `AS` name, lower-cased.
    pub name: Option<String>,
    /// The image or stage it starts from, unexpanded (`golang:${GO_VERSION}`).
    pub base_name: String,
    /// `--platform`, unexpanded.
    pub platform: Option<String>,
    /// The doc comment above FROM (`# build compiles the app` above `FROM … AS build`).
    pub doc: Option<String>,
    pub commands: Vec<Command>,
    /// The FROM keyword as written.
    pub keyword: String,
    /// The FROM line as written, trimmed.
    pub code: String,
    /// Where the FROM is.
    pub location: Location,
    /// Comment lines directly above the FROM.
    pub comments: Vec<String>,
}

impl Stage {
    /// The name to show for the stage: its `AS` name, or `stage-<index>`.
    pub fn display_name(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("stage-{index}"))
    }
}

/// A Dockerfile read into stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    /// ARGs before the first FROM.
    pub meta_args: Vec<MetaArg>,
    pub stages: Vec<Stage>,
    /// The escape character (`\` or `` ` ``), for the shell lexer.
    pub escape: char,
    /// Parser directives (`# syntax=`, `# check=`, `# escape=`).
    #[serde(skip)]
    pub directives: Directives,
    /// Lint findings, in file order.
    pub warnings: Vec<Lint>,
}

impl Dockerfile {
    /// The index of the stage named `name` (case-insensitive; the last one wins when
    /// names repeat, as in BuildKit) or, for a number, the stage at that index.
    pub fn find_stage(&self, name: &str) -> Option<usize> {
        if let Some(i) =
            self.stages.iter().rposition(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        {
            return Some(i);
        }
        name.parse::<usize>().ok().filter(|i| *i < self.stages.len())
    }
}

/// Read a parsed Dockerfile into stages. Fails on the first instruction that does not
/// convert; the error names its line. A file with no FROM gives no stages (BuildKit
/// reports that when building, not here).
pub fn parse_dockerfile(parsed: &Parsed) -> Result<Dockerfile, InstructionError> {
    let mut meta_args: Vec<MetaArg> = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut warnings: Vec<Lint> = parsed
        .warnings
        .iter()
        .map(|w| Lint {
            rule: LintRule::NoEmptyContinuation,
            message: "Empty continuation line".to_string(),
            location: Location { start_line: w.line, end_line: w.line },
            stage: None,
        })
        .collect();
    for node in &parsed.children {
        let mut lints = Vec::new();
        let cmd = parse_node(node, &mut lints)?;
        let stage_index = match &cmd.instruction {
            Instruction::From(_) => Some(stages.len()),
            _ => stages.len().checked_sub(1),
        };
        warnings.extend(lints.into_iter().map(|l| Lint { stage: stage_index, ..l }));
        let Located { keyword, code, location, comments, flags_used, instruction } = cmd;
        match instruction {
            Instruction::Arg(args) if stages.is_empty() => {
                meta_args.push(Located { keyword, code, location, comments, flags_used, instruction: args });
            }
            Instruction::From(from) => stages.push(Stage {
                name: from.stage_name,
                base_name: from.base_name,
                platform: from.platform,
                doc: from.doc,
                commands: Vec::new(),
                keyword,
                code,
                location,
                comments,
            }),
            instruction => {
                let Some(stage) = stages.last_mut() else {
                    return Err(InstructionError {
                        kind: InstructionErrorKind::NoStage,
                        location,
                        column: None,
                        token: None,
                        code,
                    });
                };
                stage.commands.push(Located { keyword, code, location, comments, flags_used, instruction });
            }
        }
    }
    warnings.extend(stage_lints(&stages));
    warnings.sort_by_key(|w| (w.location.start_line, w.rule));
    Ok(Dockerfile {
        meta_args,
        stages,
        escape: parsed.directives.escape,
        directives: parsed.directives.clone(),
        warnings,
    })
}

/// Stage names (reserved, duplicate), instruction casing, and the per-stage rules
/// BuildKit applies when dispatching CMD / ENTRYPOINT / HEALTHCHECK / ENV / LABEL.
fn stage_lints(stages: &[Stage]) -> Vec<Lint> {
    let mut out = Vec::new();
    let mut lint =
        |rule, message: String, location, stage| out.push(Lint { rule, message, location, stage: Some(stage) });

    let mut seen: Vec<&str> = Vec::new();
    for (i, stage) in stages.iter().enumerate() {
        let Some(name) = stage.name.as_deref() else { continue };
        if name == "context" || name == "scratch" {
            lint(
                LintRule::ReservedStageName,
                format!("Stage name should not use the same name as reserved stage {}", go_quote(name)),
                stage.location,
                i,
            );
        }
        if seen.contains(&name) {
            lint(
                LintRule::DuplicateStageName,
                format!("Duplicate stage name {}, stage names should be unique", go_quote(name)),
                stage.location,
                i,
            );
        }
        seen.push(name);
    }

    // ConsistentInstructionCasing: compare each keyword with the majority casing.
    let consistent = |k: &str| k == k.to_lowercase() || k == k.to_uppercase();
    let (mut lower, mut upper) = (0usize, 0usize);
    let keywords = stages.iter().enumerate().flat_map(|(i, s)| {
        std::iter::once((i, s.keyword.as_str(), s.location))
            .chain(s.commands.iter().map(move |c| (i, c.keyword.as_str(), c.location)))
    });
    for (_, k, _) in keywords.clone() {
        if consistent(k) {
            if k == k.to_lowercase() {
                lower += 1;
            } else {
                upper += 1;
            }
        }
    }
    let majority_lower = lower > upper;
    for (i, k, loc) in keywords {
        let wanted = if majority_lower && k.to_lowercase() != k {
            Some("lowercase")
        } else if !majority_lower && k.to_uppercase() != k {
            Some("uppercase")
        } else {
            None
        };
        if let Some(wanted) = wanted {
            lint(
                LintRule::ConsistentInstructionCasing,
                format!("Command '{k}' should match the case of the command majority ({wanted})"),
                loc,
                i,
            );
        }
    }

    // Per-stage dispatch rules. A SHELL set in this stage or in the stage it builds
    // on silences JSONArgsRecommended (the base image's own SHELL is unknown here).
    let mut shell_set: Vec<bool> = Vec::with_capacity(stages.len());
    for (i, stage) in stages.iter().enumerate() {
        let base = stages[..i]
            .iter()
            .rposition(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(&stage.base_name)));
        let mut has_shell = base.is_some_and(|b| shell_set[b]);
        let mut last_cmd: Option<Location> = None;
        let mut last_entrypoint: Option<Location> = None;
        let mut last_healthcheck: Option<Location> = None;
        for c in &stage.commands {
            let once = match &c.instruction {
                Instruction::Shell(_) => {
                    has_shell = true;
                    None
                }
                Instruction::Cmd(cmd) | Instruction::Entrypoint(cmd) => {
                    if cmd.is_shell_form() && !has_shell {
                        lint(
                            LintRule::JsonArgsRecommended,
                            format!(
                                "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                                c.keyword
                            ),
                            c.location,
                            i,
                        );
                    }
                    if matches!(c.instruction, Instruction::Cmd(_)) {
                        Some(&mut last_cmd)
                    } else {
                        Some(&mut last_entrypoint)
                    }
                }
                Instruction::Healthcheck(_) => Some(&mut last_healthcheck),
                Instruction::Env(kvs) | Instruction::Label(kvs) => {
                    for _ in kvs.iter().filter(|kv| kv.no_delim) {
                        lint(
                            LintRule::LegacyKeyValueFormat,
                            format!(
                                "\"{0} key=value\" should be used instead of legacy \"{0} key value\" format",
                                c.keyword
                            ),
                            c.location,
                            i,
                        );
                    }
                    None
                }
                _ => None,
            };
            if let Some(previous) = once {
                if let Some(prev) = previous.replace(c.location) {
                    lint(
                        LintRule::MultipleInstructionsDisallowed,
                        format!(
                            "Multiple {} instructions should not be used in the same stage because only the last one will be used",
                            c.keyword
                        ),
                        prev,
                        i,
                    );
                }
            }
        }
        shell_set.push(has_shell);
    }
    out
}
