//! Typed Dockerfile instructions: BuildKit's `frontend/dockerfile/instructions`
//! layer, between the syntax tree ([`crate::ast`]) and the lowering to build ops.
//!
//! [`parse_dockerfile`] turns a [`Parsed`](crate::ast::Parsed) file into a
//! [`Dockerfile`]: the global ARGs, and one [`Stage`] per FROM holding typed
//! [`Command`]s. Each instruction accepts only its own builder flags (`COPY --from`,
//! `RUN --mount`, …) with BuildKit's rules and error messages, and every error names
//! the line of the instruction.
//!
//! Values stay as written: `COPY $SRC /app` keeps `$SRC`. The lowering expands them
//! with [`Instruction::expand`] once it knows the stage's environment, exactly where
//! BuildKit does (see [`expand`] for which values of which instruction).
//!
//! ```
//! use strata_frontend::instructions::{parse_dockerfile, Instruction};
//!
//! let parsed = strata_frontend::parse(
//!     b"ARG GO=1.22\nFROM golang:${GO} AS build\nRUN --mount=type=cache,target=/root/.cache go build\n",
//! )
//! .unwrap();
//! let df = parse_dockerfile(&parsed).unwrap();
//! assert_eq!(df.meta_args[0].instruction[0].key, "GO");
//! assert_eq!(df.stages[0].name.as_deref(), Some("build"));
//! assert_eq!(df.stages[0].base_name, "golang:${GO}");
//! let Instruction::Run(run) = &df.stages[0].commands[0].instruction else { panic!() };
//! assert_eq!(run.mounts[0].target.as_deref(), Some("/root/.cache"));
//! ```

pub mod commands;
pub mod csv;
pub mod dockerfile;
pub mod errors;
pub mod expand;
pub mod flags;
pub mod lint;
pub mod mount;
pub mod parse;
pub mod run_options;
pub mod suggest;
pub mod units;

pub use crate::shell::WordError;
pub use commands::{
    AddCommand, ArgDef, Command, CopyCommand, FromCommand, HealthcheckCommand, InlineFile, Instruction, KeyValue,
    Located, Location, RunCommand, ShellOrExec, SourceContent,
};
pub use csv::{csv_fields, CsvError};
pub use dockerfile::{parse_dockerfile, Dockerfile, MetaArg, Stage};
pub use errors::{InstructionError, InstructionErrorKind};
pub use expand::{ExpandError, LexerExpander, WordExpander};
pub use flags::{parse_flags, FlagError, FlagKind, FlagValue, ParsedFlags};
pub use lint::{Lint, LintRule};
pub use mount::{parse_mount, parse_mount_literal, CacheSharing, MountError, MountExpander, MountSpec, MountType};
pub use parse::{doc_comment, is_valid_stage_name, parse_healthcheck_duration, parse_instruction, INSTRUCTIONS};
pub use run_options::{parse_device, DeviceSpec, NetworkMode, RunOptionError, Security};
pub use suggest::suggest;

#[cfg(test)]
mod tests;
