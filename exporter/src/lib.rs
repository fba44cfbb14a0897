//! # strata-exporter
//!
//! Turns snapshot diffs into layers and images and writes them out:
//!
//! - [`layer`]: a diff directory (an overlayfs upper dir) → a deterministic tar stream,
//!   compressed and hashed on the way into the blob store.
//! - [`rootfs`]: an image's layers merged into its final file system (whiteouts and
//!   opaque directories applied), into a directory or one tar (`-o type=local|tar`).
//! - [`docker_archive`]: the `docker save` / `docker load` archive (`-o type=docker`).
//! - [`compare`]: two images compared per platform, config field by field and layer
//!   entry by entry (`strata verify`).
pub mod compare;
pub mod docker_archive;
pub mod image;
pub mod layer;
pub mod pgzip;
pub mod recompress;
pub mod rootfs;
