//! # strata-oci
//!
//! OCI plumbing that pulls and pushes share, and nothing about Dockerfiles:
//!
//! - [`digest`]: `sha256:` digests, a hashing writer, verification.
//! - [`store`]: the content-addressed blob store (temp name, fsync, rename; verified),
//!   written past the page cache ([`direct`]),
//!   and the store's lock, held by opening it.
//! - [`names`]: image names (`strata tag`, `-t`) → their descriptors, in the store.
//! - [`image`]: OCI image types (descriptor, manifest, index, platform) and strata's own
//!   image configuration, serialised canonically (sorted keys) so digests are stable.
//! - [`media`]: media type constants (OCI and Docker schema2).
//! - [`reference`]: image references, normalised as docker does (`busybox` →
//!   `docker.io/library/busybox:latest`).
//! - [`layout`]: reading and writing OCI image layouts (directories and tars).
//! - [`registry`]: the OCI distribution client (pull and push; auth, TLS, retries).
//!
//! ```
//! use strata_oci::digest::Digest;
//! let d = Digest::of_bytes(b"");
//! assert_eq!(d.to_string(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
//! ```

// Registry and layout errors carry the operation, registry and reference they concern
// (up to ~190 bytes). They are returned once per failed network or file operation, so
// their size costs nothing measurable; boxing them would only add allocations.
#![allow(clippy::result_large_err)]

pub mod digest;
pub mod direct;
pub mod image;
pub mod layout;
pub mod media;
pub mod names;
pub mod reference;
pub mod registry;
pub mod store;
