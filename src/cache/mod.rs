//! A build cache that travels between machines: `--cache-to` writes the solved build's
//! records (cache key → layers) with their layer blobs to a registry, an OCI layout
//! directory or the image itself; `--cache-from` reads them back on another runner.
//!
//! - [`spec`]: the flags, buildx's syntax, checked before anything runs;
//! - [`document`]: strata's cache document (the cache manifest's config), versioned,
//!   canonical, checked as hostile input;
//! - [`import`]: manifests and documents read; layers fetched only when needed;
//! - [`export`]: the records of `mode=min` or `max`, the same blobs as the image's,
//!   cache mounts as layers with `mounts=true`.
//!
//! Cache keys are machine-independent (`strata_solver::scheduler::cache_key`), so a
//! record found on one runner is the step another runner would run.

pub mod document;
pub mod export;
pub mod import;
pub mod spec;
