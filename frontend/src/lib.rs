//! # strata-frontend
//!
//! Everything strata knows about Dockerfiles, and nothing about running them.
//!
//! - [`scanner`] turns the bytes of a Dockerfile into logical instructions the way
//!   BuildKit's line parser does: parser directives, the escape character,
//!   continuations, comment lines inside continuations and heredoc bodies.
//! - [`grammar`] parses each logical instruction's structure with a pest grammar
//!   (keyword, `--flags`, JSON exec form, key=value lists, words).
//! - [`ast`] is the resulting syntax tree and its BuildKit-compatible dump.
//! - [`shell`] expands `$VAR` / `${VAR…}` words with BuildKit's shell-lexer rules.
//! - [`dockerignore`] matches paths against `.dockerignore` patterns with
//!   moby/patternmatcher semantics.
//! - [`instructions`] turns the tree into typed instructions and stages with
//!   BuildKit's flag rules, error messages and lint checks.
//! - [`outline`] describes a Dockerfile without building it (`--call=outline|targets`).
//! - [`lower`] lowers the stages a target needs to strata's build graph.
//! - [`words`] splits instruction arguments into words as BuildKit's parser does.
//!
//! ```
//! let parsed = strata_frontend::parse(b"FROM busybox\nRUN echo hi\n").unwrap();
//! assert_eq!(parsed.dump(), "(from \"busybox\")\n(run \"echo hi\")\n");
//! ```

// A Dockerfile error carries its instruction's location and source text (~150 bytes);
// it is returned once per failed parse, never in a loop that its size could slow.
#![allow(clippy::result_large_err)]

pub mod ast;
pub mod dockerignore;
pub mod grammar;
pub mod instructions;
pub mod lower;
pub mod outline;
pub mod scanner;
pub mod shell;
pub mod words;

pub use ast::{parse, Parsed};
