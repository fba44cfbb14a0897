//! Errors of the instruction layer, with BuildKit's messages and the location of the
//! offending instruction.

use super::commands::Location;
use super::flags::FlagError;
use super::mount::MountError;
use super::run_options::RunOptionError;
use super::suggest::did_you_mean;
use crate::ast::go_quote;

/// What is wrong with an instruction. The `Display` text is BuildKit's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstructionErrorKind {
    #[error("{0} requires exactly one argument")]
    ExactlyOneArgument(&'static str),
    #[error("{0} requires at least one argument")]
    AtLeastOneArgument(&'static str),
    #[error("{0} requires at least two arguments, but only one was provided. Destination could not be determined")]
    NoDestination(&'static str),
    #[error("{0} cannot accept a heredoc as {1}")]
    HeredocNotAllowed(&'static str, &'static str),
    #[error("{0} names can not be blank")]
    BlankName(&'static str),
    #[error("Bad input to {0}, too many arguments")]
    TooManyArguments(&'static str),
    #[error("{0} requires the arguments to be in JSON form")]
    NotJson(&'static str),
    #[error("unknown instruction: {instruction}{}", did_you_mean(suggestion))]
    UnknownInstruction { instruction: String, suggestion: Option<String> },
    #[error("FROM requires either one or three arguments")]
    FromArguments,
    #[error("invalid name for build stage: {}, name can't start with a number or contain symbols", go_quote(.0))]
    InvalidStageName(String),
    #[error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChaining,
    #[error("{0} isn't allowed as an ONBUILD trigger")]
    OnbuildTrigger(String),
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArguments,
    #[error("Missing command after HEALTHCHECK CMD")]
    HealthcheckMissingCommand,
    #[error("Unknown type {} in HEALTHCHECK (try CMD)", go_quote(.0))]
    HealthcheckType(String),
    /// A Go duration that does not parse (`time: invalid duration "x"`).
    #[error("{0}")]
    Duration(String),
    #[error("Interval {} cannot be less than 1ms", go_quote(.0))]
    IntervalTooShort(&'static str),
    /// `strconv.ParseInt: parsing "x": invalid syntax`.
    #[error("{0}")]
    Retries(String),
    #[error("--retries cannot be negative ({0})")]
    NegativeRetries(i32),
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    #[error("no build stage in current context")]
    NoStage,
    #[error(transparent)]
    Flag(#[from] FlagError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    RunOption(#[from] RunOptionError),
}

/// An instruction that could not be converted, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dockerfile parse error on line {}: {kind}", location.start_line)]
pub struct InstructionError {
    pub kind: InstructionErrorKind,
    pub location: Location,
    /// 1-based column of [`Self::token`] on its physical line, once
    /// [`Self::locate_column`] found it in the source.
    pub column: Option<usize>,
    /// The offending text when it is a single token (an unknown keyword or flag).
    pub token: Option<String>,
    /// The instruction as written (trimmed logical line).
    pub code: String,
}

impl InstructionError {
    /// BuildKit's message without the location prefix.
    pub fn message(&self) -> String {
        self.kind.to_string()
    }

    /// Find [`Self::token`] on the instruction's physical lines of `source` and record
    /// its 1-based column (in characters). Returns the column.
    pub fn locate_column(&mut self, source: &str) -> Option<usize> {
        let token = self.token.as_deref()?;
        let source = source.strip_prefix('\u{FEFF}').unwrap_or(source);
        let first = self.location.start_line.max(1);
        let last = self.location.end_line.max(first);
        for line in source.lines().skip(first - 1).take(last - first + 1) {
            if let Some(byte) = line.find(token) {
                self.column = Some(line[..byte].chars().count() + 1);
                return self.column;
            }
        }
        None
    }
}
