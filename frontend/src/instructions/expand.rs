//! Variable expansion of typed instructions, where and how BuildKit's dispatcher does
//! it (`SupportsSingleWordExpansion`, `SupportsSingleWordExpansionRaw`, and the
//! word-splitting expansion of EXPOSE).
//!
//! | instruction | what is expanded |
//! |---|---|
//! | FROM | base name and `--platform` (against the global ARGs) |
//! | ENV, LABEL | keys and values |
//! | ADD | sources, destination, `--chown`, `--chmod`, `--checksum`; heredoc bodies (raw) |
//! | COPY | sources, destination, `--chown`, `--chmod`; heredoc bodies (raw) |
//! | RUN | the `--mount` values (then re-read with every rule) |
//! | WORKDIR, USER, STOPSIGNAL, VOLUME | their values |
//! | EXPOSE | each port, split into words |
//! | ARG, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, MAINTAINER, ONBUILD | nothing |
//!
//! ARG is left out on purpose: BuildKit expands an ARG default only when no build
//! argument overrides it, which is the lowering's decision.

use std::collections::BTreeSet;

use super::commands::{Instruction, KeyValue, SourceContent};
use super::mount::{parse_mount, MountError, MountSpec};
use crate::shell::{Env, Lexer, WordError};

/// Why an instruction could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error(transparent)]
    Word(#[from] WordError),
    /// A `--mount` that is invalid once its values are expanded.
    #[error(transparent)]
    Mount(MountError),
}

impl From<MountError> for ExpandError {
    fn from(e: MountError) -> Self {
        match e {
            MountError::Word(w) => ExpandError::Word(w),
            other => ExpandError::Mount(other),
        }
    }
}

/// The three kinds of expansion the dispatcher uses.
pub trait WordExpander {
    /// One word, quotes removed, never split (BuildKit's `ProcessWord`).
    fn word(&mut self, word: &str) -> Result<String, WordError>;
    /// Expand and split into words (`ProcessWords`), for EXPOSE.
    fn words(&mut self, word: &str) -> Result<Vec<String>, WordError>;
    /// A heredoc body: `\` escapes, quotes kept as they are.
    fn raw(&mut self, text: &str) -> Result<String, WordError>;
}

/// A [`WordExpander`] over the shell lexer and an environment, recording which
/// variables were referenced.
pub struct LexerExpander<'e> {
    lexer: Lexer,
    env: &'e dyn Env,
    /// Variables referenced and set.
    pub matched: BTreeSet<String>,
    /// Variables referenced but unset (candidates for the `UndefinedVar` lint).
    pub unmatched: BTreeSet<String>,
}

impl<'e> LexerExpander<'e> {
    /// Expand with the Dockerfile's escape character against `env`.
    pub fn new(escape: char, env: &'e dyn Env) -> Self {
        LexerExpander { lexer: Lexer::new(escape), env, matched: BTreeSet::new(), unmatched: BTreeSet::new() }
    }

    fn record(&mut self, lexer: &Lexer, word: &str) -> Result<String, WordError> {
        let e = lexer.process_word(word, self.env).map_err(|source| WordError { word: word.to_string(), source })?;
        self.matched.extend(e.matched);
        self.unmatched.extend(e.unmatched);
        Ok(e.result)
    }
}

impl WordExpander for LexerExpander<'_> {
    fn word(&mut self, word: &str) -> Result<String, WordError> {
        let lexer = self.lexer.clone();
        self.record(&lexer, word)
    }

    fn words(&mut self, word: &str) -> Result<Vec<String>, WordError> {
        let lexer = self.lexer.clone();
        self.record(&lexer, word)?;
        lexer.process_words(word, self.env).map_err(|source| WordError { word: word.to_string(), source })
    }

    fn raw(&mut self, text: &str) -> Result<String, WordError> {
        let lexer = Lexer { skip_process_quotes: true, ..Lexer::new('\\') };
        self.record(&lexer, text)
    }
}

impl Instruction {
    /// Whether [`Instruction::expand`] changes anything for this instruction.
    pub fn is_expandable(&self) -> bool {
        !matches!(
            self,
            Instruction::Arg(_)
                | Instruction::Cmd(_)
                | Instruction::Entrypoint(_)
                | Instruction::Shell(_)
                | Instruction::Healthcheck(_)
                | Instruction::Maintainer(_)
                | Instruction::Onbuild(_)
        )
    }

    /// Expand the instruction's values in place (see the [module docs](self) for
    /// which). A RUN's mounts are re-read from their expanded text with every rule
    /// applied, so mount errors BuildKit reports at dispatch surface here.
    pub fn expand(&mut self, ex: &mut dyn WordExpander) -> Result<(), ExpandError> {
        match self {
            Instruction::From(f) => {
                f.base_name = ex.word(&f.base_name)?;
                if let Some(p) = &f.platform {
                    f.platform = Some(ex.word(p)?);
                }
            }
            Instruction::Env(kvs) | Instruction::Label(kvs) => expand_kvs(kvs, ex)?,
            Instruction::Add(a) => {
                a.chown = expand_opt(&a.chown, ex)?;
                a.chmod = expand_opt(&a.chmod, ex)?;
                a.checksum = expand_opt(&a.checksum, ex)?;
                expand_sources(&mut a.sources, &mut a.dest, &mut a.heredocs, ex)?;
            }
            Instruction::Copy(c) => {
                c.chown = expand_opt(&c.chown, ex)?;
                c.chmod = expand_opt(&c.chmod, ex)?;
                expand_sources(&mut c.sources, &mut c.dest, &mut c.heredocs, ex)?;
            }
            Instruction::Run(r) => {
                let mut mounts: Vec<MountSpec> = Vec::with_capacity(r.mount_specs.len());
                for spec in &r.mount_specs {
                    mounts.push(parse_mount(spec, Some(&mut |w: &str| ex.word(w)))?);
                }
                r.mounts = mounts;
            }
            Instruction::Workdir(s) | Instruction::User(s) | Instruction::StopSignal(s) => *s = ex.word(s)?,
            Instruction::Volume(v) => {
                for p in v.iter_mut() {
                    *p = ex.word(p)?;
                }
            }
            Instruction::Expose(ports) => {
                let mut out = Vec::with_capacity(ports.len());
                for p in ports.iter() {
                    out.extend(ex.words(p)?);
                }
                *ports = out;
            }
            Instruction::Arg(_)
            | Instruction::Cmd(_)
            | Instruction::Entrypoint(_)
            | Instruction::Shell(_)
            | Instruction::Healthcheck(_)
            | Instruction::Maintainer(_)
            | Instruction::Onbuild(_) => {}
        }
        Ok(())
    }
}

fn expand_kvs(kvs: &mut [KeyValue], ex: &mut dyn WordExpander) -> Result<(), WordError> {
    for kv in kvs {
        kv.key = ex.word(&kv.key)?;
        kv.value = ex.word(&kv.value)?;
    }
    Ok(())
}

/// Expand an optional flag value; an expansion to nothing counts as not given.
fn expand_opt(v: &Option<String>, ex: &mut dyn WordExpander) -> Result<Option<String>, WordError> {
    match v {
        Some(s) => Ok(Some(ex.word(s)?).filter(|s| !s.is_empty())),
        None => Ok(None),
    }
}

fn expand_sources(
    sources: &mut [String],
    dest: &mut String,
    heredocs: &mut [SourceContent],
    ex: &mut dyn WordExpander,
) -> Result<(), WordError> {
    for s in sources.iter_mut() {
        *s = ex.word(s)?;
    }
    *dest = ex.word(dest)?;
    for h in heredocs.iter_mut().filter(|h| h.expand) {
        h.data = ex.raw(&h.data)?;
    }
    Ok(())
}
