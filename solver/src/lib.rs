//! # strata-solver
//!
//! The build graph and how it is run, with nothing about Dockerfiles:
//!
//! - [`graph`]: the op vocabulary (in the spirit of BuildKit's LLB) — sources, exec,
//!   file copies, merges — and nodes addressed by a digest of their definition and
//!   their inputs' digests.
//! - [`cache`]: the cache index (cache key → result), persistent and crash-safe.
//! - [`worker`]: the trait an executor implements to run ops, and the result types.
//! - [`scheduler`]: computes cache keys, looks them up, and runs the rest concurrently
//!   (bounded by `--jobs`), each identical node once; the first failure cancels the rest.
//! - [`progress`]: the events the scheduler reports while it works.
//!
//! ```
//! use strata_solver::graph::{Graph, Op};
//! let mut g = Graph::default();
//! let a = g.add(Op::Scratch, vec![], "scratch");
//! let b = g.add(Op::Scratch, vec![], "scratch again");
//! assert_eq!(a, b, "identical definitions are one node");
//! ```

pub mod cache;
pub mod graph;
pub mod progress;
pub mod scheduler;
pub mod worker;
