//! # strata-exporter
//!
//! Turns snapshot diffs into layers and images and writes them out:
//!
//! - [`layer`]: a diff directory (an overlayfs upper dir) → a deterministic tar stream,
//!   compressed and hashed on the way into the blob store.
//! - [`image`]: the image config, manifest and index of a build, layers written once
//!   (also ahead of the export, while later steps run).
//! - [`pgzip`]: gzip on every core with output independent of their number.
//! - [`recompress`]: the store's uncompressed layers → gzip/zstd for a push or a layout.
//! - [`rootfs`]: an image's layers merged into its final file system (the merge lives
//!   in `strata_fstree::rootfs`), into a directory or one tar (`-o type=local|tar`).
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
pub mod sbom;
