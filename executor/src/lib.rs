//! # strata-executor
//!
//! Where a build touches the kernel: strata-solver's [`worker::Worker`] on this
//! machine. Image layers become snapshot directories, a step's root file system is an
//! overlay of them (or a copy), RUN runs in runc, COPY/ADD write into the step's upper
//! directory, and what the step wrote is its new layer.
//!
//! - [`worker`]: the local worker — runs each op over snapshots and wires the others.
//! - [`root`]: every path that comes from a Dockerfile, a context or an image is
//!   resolved *inside* its root here (symlinks and `..` never reach the host).
//! - [`snapshot`]: the snapshot store (`ROOT/snapshots`) and a step's scratch space;
//!   chooses the overlay or the copying snapshotter.
//! - [`mount`]: overlayfs mounts (and the probe that tells whether they work).
//! - [`copied_root`]: the copying snapshotter: a full copy per step, diffed afterwards.
//! - [`unpack`]: safe extraction of image layers into snapshot directories (nothing
//!   written outside the root; whiteouts turned into overlayfs form).
//! - [`copy`]: COPY and ADD with BuildKit's semantics (sources, destinations, owners,
//!   `--chmod`, `--parents`, archives), through descriptors of both roots.
//! - [`chmod`]: `--chmod` values (octal and symbolic).
//! - [`users`]: `USER` and `--chown` names → ids, from the image's own user database.
//! - [`context`]: local contexts: what a COPY selects and its content hash (the cache
//!   key), with a persistent stat cache.
//! - [`sandbox`]: the runc bundle (OCI runtime config) and the run of one process.
//! - [`userns`]: running in a user namespace (rootless): what changes for overlayfs and runc.
//! - [`seccomp`]: the default seccomp profile of a RUN (Docker's syscalls, strata's data).
//! - [`emulation`]: QEMU user emulation checks for foreign-platform RUN steps.
//! - [`remove`]: removal of the store's own scratch trees.
pub mod chmod;
pub mod context;
pub mod copied_root;
pub mod copy;
pub mod emulation;
pub mod mount;
pub mod remove;
pub mod root;
pub mod sandbox;
pub mod seccomp;
pub mod snapshot;
pub mod unpack;
pub mod userns;
pub mod users;
pub mod worker;
