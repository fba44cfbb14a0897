//! # strata-executor
//!
//! Where a build touches the kernel:
//!
//! - [`unpack`]: safe extraction of image layers into snapshot directories (nothing
//!   written outside the root; whiteouts turned into overlayfs form).
pub mod chmod;
pub mod context;
pub mod copied_root;
pub mod copy;
pub mod emulation;
pub mod mount;
pub mod root;
pub mod sandbox;
pub mod snapshot;
pub mod unpack;
pub mod users;
pub mod worker;
