//! The third phase: the Dockerfile parsed (syntax directive, instructions, lint
//! warnings), and the `--call` answers that need nothing more (outline, targets,
//! check). A Dockerfile error fails the build (exit code 1, as buildx) and shows
//! file:line:column with the offending line.

use std::path::PathBuf;

use strata_frontend::instructions::Dockerfile;
use strata_oci::image::Platform;

use super::plan::{BuildPlan, Call};
use super::source::BuildSource;
use crate::diagnostics::{dockerfile_error, dockerfile_warning};
use crate::{Failure, Result};

/// A parsed Dockerfile with what messages about it need.
pub struct ParsedDockerfile {
    pub dockerfile: Dockerfile,
    /// Its text (lossy UTF-8), to quote lines in errors.
    pub text: String,
    /// Its path as shown in messages.
    pub path: PathBuf,
    /// Lint warnings of the parser and of the instructions.
    pub warnings: usize,
}

impl ParsedDockerfile {
    pub fn parse(source: &BuildSource, plan: &BuildPlan) -> Result<ParsedDockerfile> {
        let path = source.dockerfile_path.clone();
        let text = String::from_utf8_lossy(&source.dockerfile).to_string();
        let parsed = strata_frontend::parse(&source.dockerfile)
            .map_err(|e| Failure::build(dockerfile_error(&path, &text, Some(e.start_line), e.column, &e.message)))?;
        if let Some(syntax) = &parsed.directives.syntax {
            let s = syntax.trim_start_matches("docker.io/");
            let builtin =
                s == "docker/dockerfile" || s.starts_with("docker/dockerfile:") || s.starts_with("docker/dockerfile@");
            let upstream = s.starts_with("docker/dockerfile-upstream");
            let line = parsed.directives.seen.iter().find(|(n, _, _)| n == "syntax").map(|(_, _, l)| *l);
            if upstream {
                let note = format!("syntax {syntax:?}: using strata's built-in Dockerfile frontend instead");
                eprintln!("{}", dockerfile_warning(&path, line, &note));
            } else if !builtin {
                let message = format!(
                    "syntax {syntax:?}: strata does not run frontend images; it accepts docker/dockerfile:1 (its built-in frontend) — remove the directive or point it at docker/dockerfile:1"
                );
                if plan.call == Call::Build {
                    return Err(Failure::build(dockerfile_error(&path, &text, line, None, &message)));
                }
                eprintln!("{}", dockerfile_warning(&path, line, &message));
            }
        }
        for w in &parsed.warnings {
            eprintln!("{}", dockerfile_warning(&path, Some(w.line), &w.short));
        }
        let dockerfile = strata_frontend::instructions::parse_dockerfile(&parsed).map_err(|mut e| {
            e.locate_column(&text);
            Failure::build(dockerfile_error(&path, &text, Some(e.location.start_line), e.column, &e.message()))
        })?;
        for w in &dockerfile.warnings {
            let message = format!("{}: {}", w.rule.name(), w.message);
            eprintln!("{}", dockerfile_warning(&path, Some(w.location.start_line), &message));
        }
        let warnings = parsed.warnings.len() + dockerfile.warnings.len();
        Ok(ParsedDockerfile { dockerfile, text, path, warnings })
    }

    /// `--call=outline|targets|check`: print the answer; `false` for a build.
    pub fn answer_call(&self, plan: &BuildPlan) -> Result<bool> {
        match plan.call {
            Call::Build => Ok(false),
            Call::Outline => {
                let host = Platform::host().to_string();
                let target = plan.platforms.first().map(|p| p.to_string()).unwrap_or_else(|| host.clone());
                let mut o =
                    strata_frontend::outline::OutlineOptions::for_platforms(&host, &target, plan.target.as_deref());
                o.build_args = plan.build_args.clone();
                let outline = strata_frontend::outline::outline(&self.dockerfile, &o)
                    .map_err(|e| Failure::build(format!("error: {e}")))?;
                print!("{}", outline.to_text());
                Ok(true)
            }
            Call::Targets => {
                print!("{}", strata_frontend::outline::targets(&self.dockerfile).to_text());
                Ok(true)
            }
            Call::Check => {
                let n = self.warnings;
                if n == 0 {
                    println!("Check complete, no warnings found.");
                    return Ok(true);
                }
                Err(Failure::build(format!("Check complete, {n} warning{} found.", if n == 1 { "" } else { "s" })))
            }
        }
    }
}
