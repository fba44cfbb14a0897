//! The SLSA v1 provenance predicate of one platform's image.
//!
//! `buildDefinition.externalParameters` holds what a user chose (Dockerfile, target,
//! platforms, build args, labels, annotations, contexts; secrets and ssh by id only);
//! `internalParameters` strata's version and SOURCE_DATE_EPOCH; `resolvedDependencies`
//! the base images (reference and manifest digest, plus the FROM text and the index
//! digest so `strata verify` can pin them), the main context by the blake3 of its files
//! after `.dockerignore` (path, mode, size, content; the walk `COPY .` keys use, so any
//! machine computes it the same way), `ADD` URLs and a Git context's commit. `mode=max`
//! adds the Dockerfile's text, the context's file list and, as byproducts, each layer
//! with the step that made it. With SOURCE_DATE_EPOCH nothing depends on the clock or
//! on chance: the invocation id is derived from the parameters.

use serde_json::{json, Map, Value};
use strata_oci::image::Platform;

use super::{context_digest_hex, BuildFacts, ProvenanceMode};

/// The build type URI: what `externalParameters` means.
pub const BUILD_TYPE: &str = "https://github.com/strata-build/strata/blob/main/docs/provenance-v1.md";
/// The default builder id.
pub const BUILDER_ID: &str = "https://github.com/strata-build/strata";

/// Annotation keys on resolved dependencies (read back by `strata verify`).
pub const FROM_ANNOTATION: &str = "strata.from";
pub const INDEX_ANNOTATION: &str = "strata.index-digest";
pub const PLATFORM_ANNOTATION: &str = "strata.platform";
pub const CONTEXT_FILES_ANNOTATION: &str = "strata.files";
pub const CONTEXT_DEPENDENCY: &str = "context";
pub const DOCKERFILE_DEPENDENCY: &str = "dockerfile";

/// One layer of the image and the history entry that made it.
pub struct LayerStep {
    pub diff_id: String,
    pub created_by: String,
}

/// A `sha256:HEX` digest as an in-toto digest set.
fn digest_set(digest: &str) -> Value {
    match digest.split_once(':') {
        Some((alg, hex)) => json!({ alg: hex }),
        None => json!({ "sha256": digest }),
    }
}

/// `pkg:docker/REPOSITORY@TAG?platform=…`, as BuildKit names images in provenance.
fn image_purl(reference: &str, platform: &Platform) -> String {
    let platform = platform.to_string().replace('/', "%2F");
    match strata_oci::reference::Reference::parse(reference) {
        Ok(r) => {
            let version = r.tag.clone().unwrap_or_else(|| "latest".into());
            format!("pkg:docker/{}@{version}?platform={platform}", r.name())
        }
        Err(_) => format!("{reference}?platform={platform}"),
    }
}

pub fn external_parameters(facts: &BuildFacts) -> Value {
    let mut p = Map::new();
    p.insert("frontend".into(), json!("dockerfile.v0"));
    p.insert(
        "dockerfile".into(),
        json!({ "path": facts.dockerfile_name, "digest": digest_set(&strata_oci::digest::Digest::of_bytes(&facts.dockerfile).to_string()) }),
    );
    if let Some(t) = &facts.target {
        p.insert("target".into(), json!(t));
    }
    p.insert("platforms".into(), json!(facts.platforms));
    p.insert("buildArgs".into(), json!(facts.build_args));
    if !facts.labels.is_empty() {
        p.insert("labels".into(), json!(facts.labels));
    }
    if !facts.annotations.is_empty() {
        p.insert("annotations".into(), json!(facts.annotations));
    }
    p.insert("contexts".into(), json!(facts.contexts));
    if !facts.secrets.is_empty() {
        p.insert("secrets".into(), Value::Array(facts.secrets.iter().map(|id| json!({ "id": id })).collect()));
    }
    if !facts.ssh.is_empty() {
        p.insert("ssh".into(), Value::Array(facts.ssh.iter().map(|id| json!({ "id": id })).collect()));
    }
    Value::Object(p)
}

/// The predicate for the image of `platform`.
pub fn predicate(
    facts: &BuildFacts,
    mode: ProvenanceMode,
    platform: &Platform,
    layers: &[LayerStep],
    builder_id: Option<&str>,
) -> Value {
    let external = external_parameters(facts);
    let mut internal = Map::new();
    internal.insert("builderVersion".into(), json!(concat!("strata ", env!("CARGO_PKG_VERSION"))));
    if let Some(e) = facts.epoch {
        internal.insert("sourceDateEpoch".into(), json!(e.to_string()));
    }

    let mut deps = Vec::new();
    let mut df = Map::new();
    df.insert("name".into(), json!(DOCKERFILE_DEPENDENCY));
    df.insert("digest".into(), digest_set(&strata_oci::digest::Digest::of_bytes(&facts.dockerfile).to_string()));
    if mode == ProvenanceMode::Max {
        use base64::Engine;
        df.insert("content".into(), json!(base64::engine::general_purpose::STANDARD.encode(&facts.dockerfile)));
    }
    deps.push(Value::Object(df));
    let wanted = platform.clone().normalized();
    let mut seen = Vec::new();
    for b in &facts.bases {
        // A platform's own bases, and those of stages built for the build platform.
        let key = (b.written.clone(), b.platform.to_string());
        if seen.contains(&key) {
            continue;
        }
        if b.platform.clone().normalized() != wanted && facts.platforms.len() > 1 {
            let other_target = facts.platforms.iter().any(|p| *p == b.platform.to_string());
            if other_target {
                continue;
            }
        }
        seen.push(key);
        let mut annotations = Map::new();
        annotations.insert(FROM_ANNOTATION.into(), json!(b.written));
        annotations.insert(PLATFORM_ANNOTATION.into(), json!(b.platform.to_string()));
        if let Some(i) = &b.index_digest {
            annotations.insert(INDEX_ANNOTATION.into(), json!(i));
        }
        let uri = if b.reference.starts_with("oci-layout://") {
            b.reference.clone()
        } else {
            image_purl(&b.reference, &b.platform)
        };
        deps.push(json!({ "uri": uri, "digest": digest_set(&b.manifest_digest), "annotations": annotations }));
    }
    if let Some(sel) = &facts.context_files {
        let mut ctx = Map::new();
        ctx.insert("name".into(), json!(CONTEXT_DEPENDENCY));
        ctx.insert("digest".into(), json!({ "blake3": context_digest_hex(sel) }));
        let mut annotations = Map::new();
        annotations.insert(
            "strata.digest-of".into(),
            json!("the context's files after .dockerignore, in path order: path, mode, size and content blake3 (or a symlink's target)"),
        );
        annotations.insert("strata.file-count".into(), json!(sel.files.len()));
        if mode == ProvenanceMode::Max {
            let files: Vec<Value> = sel
                .files
                .iter()
                .map(|f| json!({ "path": f.path, "mode": format!("{:o}", f.mode), "content": format!("{:016x}", f.content) }))
                .collect();
            annotations.insert(CONTEXT_FILES_ANNOTATION.into(), Value::Array(files));
        }
        ctx.insert("annotations".into(), Value::Object(annotations));
        deps.push(Value::Object(ctx));
    }
    if let Some((url, commit)) = &facts.git {
        deps.push(json!({ "uri": url, "digest": { "gitCommit": commit } }));
    }
    for (url, digest) in &facts.downloads {
        deps.push(json!({ "uri": url, "digest": digest_set(&digest.to_string()) }));
    }

    let build_definition = json!({
        "buildType": BUILD_TYPE,
        "externalParameters": external,
        "internalParameters": Value::Object(internal),
        "resolvedDependencies": deps,
    });
    let mut metadata = Map::new();
    let invocation = match facts.epoch {
        // Derived: the same build gives the same id.
        Some(_) => {
            let mut h = blake3::Hasher::new();
            h.update(serde_json::to_string(&build_definition).unwrap_or_default().as_bytes());
            h.update(platform.to_string().as_bytes());
            h.finalize().to_hex()[..32].to_string()
        }
        None => {
            let mut h = blake3::Hasher::new();
            h.update(format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes());
            h.finalize().to_hex()[..32].to_string()
        }
    };
    metadata.insert("invocationId".into(), json!(invocation));
    if facts.epoch.is_none() {
        metadata.insert("startedOn".into(), json!(strata_oci::names::rfc3339(facts.started)));
        metadata.insert("finishedOn".into(), json!(strata_oci::names::now_rfc3339()));
    }
    let mut run = Map::new();
    run.insert("builder".into(), json!({ "id": builder_id.unwrap_or(BUILDER_ID) }));
    run.insert("metadata".into(), Value::Object(metadata));
    if mode == ProvenanceMode::Max {
        let layers: Vec<Value> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                json!({ "name": format!("layer {}", i + 1), "digest": digest_set(&l.diff_id), "annotations": { "strata.created-by": l.created_by } })
            })
            .collect();
        run.insert("byproducts".into(), Value::Array(layers));
    }
    json!({ "buildDefinition": build_definition, "runDetails": Value::Object(run) })
}

/// The layers of an image with the history entries that made them (empty-layer
/// entries skipped).
pub fn layer_steps(config: &strata_oci::image::ImageConfig) -> Vec<LayerStep> {
    let mut made_by =
        config.history.iter().filter(|h| !h.empty_layer).map(|h| h.created_by.clone().unwrap_or_default());
    config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| LayerStep { diff_id: d.to_string(), created_by: made_by.next().unwrap_or_default() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> BuildFacts {
        BuildFacts {
            dockerfile_name: "Dockerfile".into(),
            dockerfile: b"FROM busybox\n".to_vec(),
            platforms: vec!["linux/amd64".into()],
            build_args: [("A".to_string(), "1".to_string())].into(),
            secrets: vec!["token".into()],
            epoch: Some(1_700_000_000),
            bases: vec![crate::resolve::ResolvedBase {
                written: "127.0.0.1:5000/library/busybox".into(),
                reference: "127.0.0.1:5000/library/busybox:latest".into(),
                platform: Platform::new("linux", "amd64", None),
                manifest_digest: format!("sha256:{}", "a".repeat(64)),
                index_digest: Some(format!("sha256:{}", "b".repeat(64))),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn with_an_epoch_the_predicate_is_the_same_each_time_and_has_no_clock() {
        let p = Platform::new("linux", "amd64", None);
        let a = predicate(&facts(), ProvenanceMode::Min, &p, &[], None);
        let b = predicate(&facts(), ProvenanceMode::Min, &p, &[], None);
        assert_eq!(a, b);
        let text = a.to_string();
        assert!(!text.contains("startedOn"), "{text}");
        assert_eq!(a["buildDefinition"]["externalParameters"]["buildArgs"]["A"], "1");
        assert_eq!(a["buildDefinition"]["externalParameters"]["secrets"][0]["id"], "token");
        let base = &a["buildDefinition"]["resolvedDependencies"][1];
        assert_eq!(base["uri"], "pkg:docker/127.0.0.1:5000/library/busybox@latest?platform=linux%2Famd64");
        assert_eq!(base["digest"]["sha256"], "a".repeat(64));
        let mut no_epoch = facts();
        no_epoch.epoch = None;
        let c = predicate(&no_epoch, ProvenanceMode::Min, &p, &[], None);
        assert!(c["runDetails"]["metadata"]["startedOn"].is_string());
    }

    #[test]
    fn max_mode_adds_the_dockerfile_text_and_the_layers() {
        let p = Platform::new("linux", "amd64", None);
        let layers = [LayerStep { diff_id: format!("sha256:{}", "c".repeat(64)), created_by: "RUN make".into() }];
        let min = predicate(&facts(), ProvenanceMode::Min, &p, &layers, None);
        let max = predicate(&facts(), ProvenanceMode::Max, &p, &layers, Some("urn:test"));
        assert!(min["runDetails"]["byproducts"].is_null());
        assert_eq!(max["runDetails"]["byproducts"][0]["annotations"]["strata.created-by"], "RUN make");
        assert_eq!(max["buildDefinition"]["resolvedDependencies"][0]["content"], "RlJPTSBidXN5Ym94Cg==");
        assert_eq!(max["runDetails"]["builder"]["id"], "urn:test");
    }
}
