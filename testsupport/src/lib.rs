//! # strata-testsupport
//!
//! What the integration tests of several crates share (a dev-dependency only):
//!
//! - [`fault_proxy`]: a proxy on loopback between strata and a real registry that
//!   injects faults into chosen HTTP requests (cut bodies, lost answers, 429/5xx), or
//!   cuts plain TCP connections after a number of bytes — the bad networks pushes and
//!   pulls must survive.

pub mod fault_proxy;
