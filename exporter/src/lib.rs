//! # strata-exporter
//!
//! Turns snapshot diffs into layers and images and writes them out:
//!
//! - [`layer`]: a diff directory (an overlayfs upper dir) → a deterministic tar stream,
//!   compressed and hashed on the way into the blob store.
pub mod image;
pub mod layer;
