//! Supply-chain attestations: SLSA v1 provenance and an SPDX SBOM, attached to a pushed
//! image or an OCI layout in BuildKit's layout (one attestation manifest per platform in
//! the image index, `vnd.docker.reference.type: attestation-manifest`).
//!
//! - [`AttestRequest`]: buildx's flags (`--provenance`, `--sbom`, `--attest`) and their
//!   defaults: provenance `mode=min` when the image is pushed or written as an OCI
//!   layout, nothing for the local store;
//! - [`BuildFacts`]: what a build knows that provenance records, gathered as it runs;
//! - [`provenance`]: the SLSA v1 predicate;
//! - [`manifest`]: in-toto statements, attestation manifests and the index holding them;
//! - [`read`]: the attestations of a published image (`strata inspect --attestations`,
//!   `strata verify --against`).

pub mod inspect;
pub mod manifest;
pub mod provenance;
pub mod read;

use std::collections::BTreeMap;

use strata_oci::digest::Digest;

use crate::cli::BuildArgs;
use crate::outputs::OutputSpec;
use crate::{Failure, Result};

pub const PROVENANCE_PREDICATE: &str = "https://slsa.dev/provenance/v1";
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvenanceMode {
    Min,
    Max,
}

/// Which attestations a build attaches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttestRequest {
    pub provenance: Option<ProvenanceMode>,
    pub sbom: bool,
    /// `builder-id=` of `--provenance`/`--attest type=provenance`.
    pub builder_id: Option<String>,
}

impl AttestRequest {
    pub fn any(&self) -> bool {
        self.provenance.is_some() || self.sbom
    }

    /// The flags of `args`, checked (exit 2 on a bad one), with buildx's defaults for
    /// the outputs `specs`.
    pub fn from_args(args: &BuildArgs, specs: &[OutputSpec]) -> Result<AttestRequest> {
        let mut provenance: Option<Option<ProvenanceMode>> = None;
        let mut sbom: Option<bool> = None;
        let mut builder_id = None;
        if let Some(v) = &args.provenance {
            let (mode, id) = parse_provenance("--provenance", v)?;
            provenance = Some(mode);
            builder_id = id;
        }
        if let Some(v) = &args.sbom {
            sbom = Some(parse_sbom("--sbom", v)?);
        }
        for spec in &args.attest {
            let attrs = csv(spec);
            let kind = attrs.iter().find(|(k, _)| k == "type").map(|(_, v)| v.as_str());
            let rest: Vec<String> =
                attrs.iter().filter(|(k, _)| k != "type").map(|(k, v)| format!("{k}={v}")).collect();
            match kind {
                Some("provenance") => {
                    let (mode, id) = parse_provenance("--attest type=provenance", &rest.join(","))?;
                    provenance = Some(mode);
                    builder_id = id.or(builder_id);
                }
                Some("sbom") => sbom = Some(parse_sbom("--attest type=sbom", &rest.join(","))?),
                Some(other) => {
                    return Err(Failure::usage(format!(
                        "error: --attest {spec}: unknown attestation type {other:?} (provenance, sbom)"
                    )))
                }
                None => {
                    return Err(Failure::usage(format!("error: --attest {spec}: needs type=provenance or type=sbom")))
                }
            }
        }
        let carried = specs.iter().any(carries_attestations);
        let explicit = provenance.is_some_and(|m| m.is_some()) || sbom == Some(true);
        if explicit && !carried {
            return Err(Failure::usage(
                "error: attestations (--provenance, --sbom, --attest) are attached to a pushed image or an OCI layout: \
                 add --push, -o type=registry or -o type=oci,dest=…",
            ));
        }
        let provenance = match provenance {
            Some(mode) => mode,
            None if carried && !no_default_attestations() => Some(ProvenanceMode::Min),
            None => None,
        };
        Ok(AttestRequest { provenance, sbom: sbom.unwrap_or(false) && carried, builder_id })
    }
}

/// buildx's `BUILDX_NO_DEFAULT_ATTESTATIONS=1|true`: no provenance unless asked for.
pub fn no_default_attestations() -> bool {
    std::env::var("BUILDX_NO_DEFAULT_ATTESTATIONS")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "t"))
}

/// Does this output keep an index where attestations can live?
fn carries_attestations(spec: &OutputSpec) -> bool {
    spec.kind == "oci"
        || spec.kind == "registry"
        || (spec.kind == "image" && spec.attrs.get("push").is_some_and(|v| v == "true"))
}

fn csv(value: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .filter(|f| !f.is_empty())
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (String::new(), f.trim().to_string()),
        })
        .collect()
}

fn truth(flag: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(Failure::usage(format!("error: {flag}: {other:?}: expected true or false"))),
    }
}

/// `true|false|mode=min|max[,builder-id=URI][,disabled=true]`.
fn parse_provenance(flag: &str, value: &str) -> Result<(Option<ProvenanceMode>, Option<String>)> {
    let mut mode = Some(ProvenanceMode::Min);
    let mut id = None;
    for (k, v) in csv(value) {
        match k.as_str() {
            "" => {
                if !truth(flag, &v)? {
                    mode = None;
                }
            }
            "mode" => {
                mode = Some(match v.as_str() {
                    "min" => ProvenanceMode::Min,
                    "max" => ProvenanceMode::Max,
                    other => return Err(Failure::usage(format!("error: {flag}: mode={other}: expected min or max"))),
                })
            }
            "disabled" => {
                if truth(flag, &v)? {
                    mode = None;
                }
            }
            "builder-id" => id = Some(v),
            "version" if v == "v1" => {}
            "version" => {
                return Err(Failure::usage(format!(
                    "error: {flag}: version={v}: strata writes SLSA provenance v1 only (version=v1)"
                )))
            }
            other => {
                return Err(Failure::usage(format!(
                    "error: {flag}: unknown key {other:?} (mode, builder-id, version, disabled)"
                )))
            }
        }
    }
    Ok((mode, id))
}

/// `true|false[,disabled=true]`; `generator=` is refused: strata writes the SBOM itself.
fn parse_sbom(flag: &str, value: &str) -> Result<bool> {
    let mut on = true;
    for (k, v) in csv(value) {
        match k.as_str() {
            "" => on = truth(flag, &v)?,
            "disabled" => on = !truth(flag, &v)?,
            "generator" => {
                return Err(Failure::usage(format!(
                    "error: {flag}: generator={v}: strata writes the SBOM itself (SPDX 2.3 from the image's package \
                     databases); other generators are not supported"
                )))
            }
            other => return Err(Failure::usage(format!("error: {flag}: unknown key {other:?} (disabled)"))),
        }
    }
    Ok(on)
}

/// One build context as provenance names it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ContextFact {
    pub name: String,
    /// `local`, `git`, `url`, `stdin`, `image` or `oci-layout`.
    pub kind: String,
    /// The Git/HTTP address, or the image reference (never a local path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// What provenance records of a build, gathered as it runs.
#[derive(Debug, Clone, Default)]
pub struct BuildFacts {
    /// The Dockerfile's name as given (relative to the context when it is inside it).
    pub dockerfile_name: String,
    pub dockerfile: Vec<u8>,
    pub target: Option<String>,
    pub platforms: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: Vec<String>,
    pub contexts: Vec<ContextFact>,
    pub secrets: Vec<String>,
    pub ssh: Vec<String>,
    pub epoch: Option<i64>,
    pub bases: Vec<crate::resolve::ResolvedBase>,
    pub downloads: Vec<(String, Digest)>,
    pub git: Option<(String, String)>,
    /// The main context's files after `.dockerignore` (see `LocalWorker::context_selection`).
    pub context_files: Option<strata_executor::context::Selection>,
    /// The tags the image is pushed or written under (the subject's name).
    pub names: Vec<String>,
    /// When the build started (Unix seconds; unused with SOURCE_DATE_EPOCH).
    pub started: i64,
}

/// The hex of a context digest: the blake3 of the walk `COPY .` keys are made of.
pub fn context_digest_hex(selection: &strata_executor::context::Selection) -> String {
    hex::encode(selection.hash)
}

/// `image` with an attestation manifest per platform holding what `request` asks for.
pub fn attach(
    store: &strata_oci::store::BlobStore,
    image: &strata_oci::image::Descriptor,
    request: &AttestRequest,
    facts: &BuildFacts,
) -> std::io::Result<strata_oci::image::Descriptor> {
    manifest::attach(store, image, |subject| {
        let platform = subject.config.platform();
        let name = manifest::subject_name(&facts.names, &platform);
        let mut out = Vec::new();
        if let Some(mode) = request.provenance {
            let steps = provenance::layer_steps(subject.config);
            let predicate = provenance::predicate(facts, mode, &platform, &steps, request.builder_id.as_deref());
            out.push((
                PROVENANCE_PREDICATE.to_string(),
                manifest::statement(&name, &subject.manifest.digest, PROVENANCE_PREDICATE, predicate),
            ));
        }
        if request.sbom {
            use strata_exporter::sbom;
            let layers: Vec<sbom::SbomLayer> = subject
                .layers
                .iter()
                .zip(&subject.config.rootfs.diff_ids)
                .map(|(l, d)| sbom::SbomLayer { diff_id: d.clone(), blob: store.path(&l.digest) })
                .collect();
            let packages = sbom::scan_layers(&layers)?;
            let document = sbom::spdx_document(
                &packages,
                &sbom::SbomSubject {
                    name: facts.names.first().cloned().unwrap_or_else(|| "image".into()),
                    platform: platform.to_string(),
                    created: facts.epoch,
                    tool: concat!("strata-", env!("CARGO_PKG_VERSION")).to_string(),
                },
            );
            out.push((
                SPDX_PREDICATE.to_string(),
                manifest::statement(&name, &subject.manifest.digest, SPDX_PREDICATE, document),
            ));
        }
        Ok(out)
    })
}

impl BuildFacts {
    /// What the command line and the source say; the lowering and the solve add the rest.
    pub fn new(
        plan: &crate::build::plan::BuildPlan,
        source: &crate::build::source::BuildSource,
        args: &BuildArgs,
    ) -> BuildFacts {
        use crate::build::plan::NamedContextSpec;
        let dockerfile_name = match source.dockerfile_path.strip_prefix(&source.context_dir) {
            Ok(rel) => rel.to_string_lossy().to_string(),
            Err(_) => source
                .dockerfile_path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "Dockerfile".into()),
        };
        let main_kind = if source.git_commit.is_some() {
            ("git", Some(plan.context.clone()))
        } else if plan.remote {
            ("url", Some(plan.context.clone()))
        } else if plan.context == "-" {
            ("stdin", None)
        } else {
            ("local", None)
        };
        let mut contexts = vec![ContextFact { name: "context".into(), kind: main_kind.0.into(), source: main_kind.1 }];
        for (name, spec) in &plan.named_contexts {
            let (kind, source) = match spec {
                NamedContextSpec::Image(r) if r.starts_with("oci-layout://") => ("oci-layout", Some(r.clone())),
                NamedContextSpec::Image(r) => ("image", Some(r.clone())),
                NamedContextSpec::Dir(_) => ("local", None),
            };
            contexts.push(ContextFact { name: name.clone(), kind: kind.into(), source });
        }
        BuildFacts {
            dockerfile_name,
            dockerfile: source.dockerfile.clone(),
            target: plan.target.clone(),
            platforms: plan.platforms.iter().map(|p| p.to_string()).collect(),
            build_args: plan.build_args.clone(),
            labels: plan.labels.clone(),
            annotations: args.annotations.clone(),
            contexts,
            secrets: plan.secrets.iter().map(|(id, _)| id.clone()).collect(),
            ssh: plan.ssh.iter().map(|s| s.id.clone()).collect(),
            epoch: source.epoch,
            git: source.git_commit.clone().map(|c| (plan.context.clone(), c)),
            names: args.tags.clone(),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
            ..Default::default()
        }
    }
}
