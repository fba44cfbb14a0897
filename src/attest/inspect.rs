//! `strata inspect --attestations REF`: the in-toto statements a published image carries
//! (a registry reference, or `oci-layout://DIR[:TAG]`), as a JSON array of
//! `{"subject": <image manifest digest>, "predicateType": …, "statement": …}`.

use serde_json::json;
use strata_oci::reference::Reference;
use strata_oci::registry::RegistryClient;
use strata_oci::store::BlobStore;

use super::read::{open_layout, statements, Published};
use crate::cli::Cli;
use crate::{Failure, Result};

pub async fn run(cli: &Cli, name: &str, predicate_type: Option<&str>) -> Result<()> {
    let wanted = predicate_type.map(|t| match t {
        "provenance" => super::PROVENANCE_PREDICATE.to_string(),
        "sbom" | "spdx" => super::SPDX_PREDICATE.to_string(),
        other => other.to_string(),
    });
    let scratch_dir = tempfile::Builder::new()
        .prefix("strata-inspect-")
        .tempdir()
        .map_err(|e| Failure::build(format!("error: a temporary directory: {e}")))?;
    let scratch = BlobStore::open(scratch_dir.path()).map_err(|e| Failure::build(format!("error: {e}")))?;
    let failed = |e: String| Failure::build(format!("error: strata inspect --attestations {name}: {e}"));
    let found = if let Some(spec) = name.strip_prefix("oci-layout://") {
        let (path, selector) = split_layout(spec);
        let layout = open_layout(std::path::Path::new(path), &scratch).map_err(failed)?;
        let root = layout.resolve(selector).map_err(|e| failed(e.to_string()))?;
        statements(&Published::Layout { layout: &layout, root: &root }, &scratch).await.map_err(failed)?
    } else {
        let reference = Reference::parse(name)
            .map_err(|e| Failure::usage(format!("error: strata inspect --attestations {name}: {e}")))?;
        let client =
            RegistryClient::new(crate::registry_options(cli)).map_err(|e| Failure::build(format!("error: {e}")))?;
        statements(&Published::Registry { client: &client, reference: &reference }, &scratch)
            .await
            .map_err(|e| failed(format!("{e} (registry {})", reference.registry)))?
    };
    let shown: Vec<serde_json::Value> = found
        .into_iter()
        .filter(|f| wanted.as_deref().is_none_or(|w| f.predicate_type == w))
        .map(|f| json!({ "subject": f.subject, "predicateType": f.predicate_type, "statement": f.statement }))
        .collect();
    if shown.is_empty() {
        return Err(Failure::build(format!(
            "error: {name} carries no attestations{}",
            wanted.map(|w| format!(" of type {w}")).unwrap_or_default()
        )));
    }
    let text = serde_json::to_string_pretty(&shown).map_err(|e| Failure::build(format!("error: {e}")))?;
    println!("{text}");
    Ok(())
}

/// `DIR[:TAG]` → (DIR, TAG); a `:` that is part of the path (followed by `/`) is kept.
pub fn split_layout(spec: &str) -> (&str, Option<&str>) {
    match spec.rsplit_once(':') {
        Some((dir, tag)) if !tag.is_empty() && !tag.contains('/') => (dir, Some(tag)),
        _ => (spec, None),
    }
}
