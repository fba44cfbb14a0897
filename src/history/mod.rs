//! What each build did, step by step, kept in the store (`ROOT/history`) so that a later
//! build can say why a step ran (a cache miss's reason) and `strata history` can list,
//! show and compare builds.
//!
//! - [`record`]: the record of a build and of each step (its key and the inputs that
//!   made it), stored bounded: the newest [`record::MAX_BUILDS`] builds, and the files
//!   a COPY selected stored once per content key (zstd), never their contents;
//! - [`explain`]: the reason a step missed, from its record and the same step's in the
//!   latest earlier build (pure);
//! - [`recorder`]: the solver's observer that fills a build's record while it runs;
//! - [`command`]: `strata history ls | show | diff`.

pub mod command;
pub mod explain;
pub mod record;
pub mod recorder;
