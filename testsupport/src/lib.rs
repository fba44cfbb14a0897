//! # strata-testsupport
//!
//! What the integration tests of several crates share (a dev-dependency only):
//!
//! - [`fault_proxy`]: a proxy on loopback between strata and a real registry that
//!   injects faults into chosen HTTP requests (cut bodies, lost answers, 429/5xx), or
//!   cuts plain TCP connections after a number of bytes — the bad networks pushes and
//!   pulls must survive.

//! - [`skip`]: the one marker for a test that cannot run here, fatal under
//!   `STRATA_TEST_STRICT=1` (CI) unless allowlisted.

pub mod fault_proxy;
pub mod skip;
