//! `strata verify --against REF` when REF carries SLSA provenance (see `crate::attest`):
//! the build's parameters come from it — build args, target, platforms, labels,
//! annotations, SOURCE_DATE_EPOCH, and every base image pinned to the digest it was
//! built from — and the local context is checked against the recorded digest before
//! anything is built (with a `mode=max` provenance, the differing files are named).

use std::collections::BTreeMap;

use serde_json::Value;
use strata_oci::reference::Reference;

use crate::attest::provenance::{CONTEXT_DEPENDENCY, CONTEXT_FILES_ANNOTATION, FROM_ANNOTATION, INDEX_ANNOTATION};
use crate::cli::BuildArgs;
use crate::{Failure, Result};

/// A `mode=max` provenance's context files: path → (mode in octal, content id).
pub type RecordedFiles = BTreeMap<String, (String, String)>;

/// What the provenance says the build was.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecordedBuild {
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platforms: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: Vec<String>,
    pub epoch: Option<String>,
    /// FROM text → `REPOSITORY@DIGEST` it resolved to.
    pub pins: BTreeMap<String, String>,
    /// The context digest (blake3 hex) and, with mode=max, its files: path → (mode, content id).
    pub context: Option<(String, Option<RecordedFiles>)>,
}

fn strings(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// Read a provenance statement (hostile input: every field optional, types checked).
pub fn recorded(statement: &Value) -> Result<RecordedBuild> {
    let def = &statement["predicate"]["buildDefinition"];
    if !def.is_object() {
        return Err(Failure::build("error: strata verify: the provenance has no buildDefinition"));
    }
    let ext = &def["externalParameters"];
    let mut r = RecordedBuild {
        build_args: strings(&ext["buildArgs"]),
        target: ext["target"].as_str().map(str::to_string),
        platforms: ext["platforms"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
        labels: strings(&ext["labels"]),
        annotations: ext["annotations"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
        epoch: def["internalParameters"]["sourceDateEpoch"].as_str().map(str::to_string),
        ..Default::default()
    };
    for dep in def["resolvedDependencies"].as_array().into_iter().flatten() {
        let annotations = &dep["annotations"];
        if let Some(from) = annotations[FROM_ANNOTATION].as_str() {
            if from.starts_with("docker-image://") || from.starts_with("oci-layout://") {
                continue;
            }
            let uri = dep["uri"].as_str().unwrap_or_default();
            // pkg:docker/NAME@TAG?platform=…
            let Some(name) = uri.strip_prefix("pkg:docker/").and_then(|rest| rest.rsplit_once('@')).map(|(n, _)| n)
            else {
                continue;
            };
            let digest = match annotations[INDEX_ANNOTATION].as_str() {
                Some(index) => index.to_string(),
                None => match dep["digest"]["sha256"].as_str() {
                    Some(hex) => format!("sha256:{hex}"),
                    None => continue,
                },
            };
            let pin = format!("{name}@{digest}");
            if Reference::parse(&pin).is_err() {
                return Err(Failure::build(format!(
                    "error: strata verify: the provenance's base image {pin:?} is not a reference"
                )));
            }
            // Several platforms of one base: one index pins them all; different
            // manifests without an index cannot be pinned with one name.
            match r.pins.get(from) {
                Some(existing) if existing != &pin => {
                    r.pins.remove(from);
                }
                _ => {
                    r.pins.insert(from.to_string(), pin);
                }
            }
        }
        if dep["name"].as_str() == Some(CONTEXT_DEPENDENCY) {
            if let Some(hex) = dep["digest"]["blake3"].as_str() {
                let files = annotations[CONTEXT_FILES_ANNOTATION].as_array().map(|list| {
                    list.iter()
                        .filter_map(|f| {
                            Some((
                                f["path"].as_str()?.to_string(),
                                (f["mode"].as_str()?.to_string(), f["content"].as_str()?.to_string()),
                            ))
                        })
                        .collect()
                });
                r.context = Some((hex.to_string(), files));
            }
        }
    }
    Ok(r)
}

/// The build options the provenance adds to the user's; a flag the user gave with
/// another value is an error (the provenance is what the image was built with).
pub fn build_options(recorded: &RecordedBuild, given: &BuildArgs) -> Result<Vec<String>> {
    let conflict = |flag: &str, yours: &str, theirs: &str| {
        Failure::usage(format!(
            "error: strata verify: {flag} {yours} differs from the provenance ({theirs}); drop it: the published \
             image's provenance gives the build's parameters"
        ))
    };
    let mut out = Vec::new();
    let given_args = crate::build::plan::parse_kv(&given.build_args, "--build-arg")?;
    for (k, v) in &recorded.build_args {
        match given_args.get(k) {
            Some(mine) if mine != v => {
                return Err(conflict("--build-arg", &format!("{k}={mine}"), &format!("{k}={v}")))
            }
            Some(_) => {}
            None => out.push(format!("--build-arg={k}={v}")),
        }
    }
    match (&given.target, &recorded.target) {
        (Some(mine), Some(theirs)) if mine != theirs => return Err(conflict("--target", mine, theirs)),
        (None, Some(t)) => out.push(format!("--target={t}")),
        _ => {}
    }
    if !recorded.platforms.is_empty() {
        let theirs = recorded.platforms.join(",");
        if given.platform.is_empty() {
            out.push(format!("--platform={theirs}"));
        } else if given.platform.join(",") != theirs {
            return Err(conflict("--platform", &given.platform.join(","), &theirs));
        }
    }
    let given_labels = crate::build::plan::parse_kv(&given.labels, "--label")?;
    for (k, v) in &recorded.labels {
        if !given_labels.contains_key(k) {
            out.push(format!("--label={k}={v}"));
        }
    }
    for a in &recorded.annotations {
        if !given.annotations.contains(a) {
            out.push(format!("--annotation={a}"));
        }
    }
    if let Some(e) = &recorded.epoch {
        match &given.source_date_epoch {
            Some(mine) if mine != e => return Err(conflict("--source-date-epoch", mine, e)),
            Some(_) => {}
            None => out.push(format!("--source-date-epoch={e}")),
        }
    }
    let named: Vec<&str> = given.build_contexts.iter().filter_map(|c| c.split_once('=').map(|(n, _)| n)).collect();
    for (from, pin) in &recorded.pins {
        if !named.contains(&from.as_str()) {
            out.push(format!("--build-context={from}=docker-image://{pin}"));
        }
    }
    Ok(out)
}

/// How the local context differs from the recorded files (mode=max): at most `limit`
/// lines, then a count.
pub fn context_differences(
    recorded: &RecordedFiles,
    here: &[strata_executor::context::SelectedFile],
    limit: usize,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for f in here {
        seen.insert(f.path.as_str());
        let mode = format!("{:o}", f.mode);
        let content = format!("{:016x}", f.content);
        match recorded.get(&f.path) {
            None => lines.push(format!("added: {}", f.path)),
            Some((_, c)) if *c != content => lines.push(format!("changed: {}", f.path)),
            Some((m, _)) if *m != mode => lines.push(format!("mode changed: {} {m} → {mode}", f.path)),
            _ => {}
        }
    }
    for path in recorded.keys() {
        if !seen.contains(path.as_str()) {
            lines.push(format!("removed: {path}"));
        }
    }
    if lines.len() > limit {
        let more = lines.len() - limit;
        lines.truncate(limit);
        lines.push(format!("and {more} more"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_parameters_and_pins_from_a_statement() {
        let s = json!({"predicate": {"buildDefinition": {
        "externalParameters": {"buildArgs": {"A": "1"}, "target": "t", "platforms": ["linux/amd64"]},
        "internalParameters": {"sourceDateEpoch": "1700000000"},
        "resolvedDependencies": [
            {"uri": "pkg:docker/127.0.0.1:5000/library/busybox@latest?platform=linux%2Famd64",
             "digest": {"sha256": "aa"}, "annotations": {"strata.from": "127.0.0.1:5000/library/busybox",
             "strata.index-digest": format!("sha256:{}", "b".repeat(64))}},
            {"name": "context", "digest": {"blake3": "cc"}}
        ]}}});
        let r = recorded(&s).unwrap();
        assert_eq!(r.build_args["A"], "1");
        assert_eq!(r.target.as_deref(), Some("t"));
        assert_eq!(r.epoch.as_deref(), Some("1700000000"));
        assert_eq!(
            r.pins["127.0.0.1:5000/library/busybox"],
            format!("127.0.0.1:5000/library/busybox@sha256:{}", "b".repeat(64))
        );
        assert_eq!(r.context, Some(("cc".into(), None)));
        assert!(recorded(&json!({"predicate": 3})).is_err());
    }

    #[test]
    fn names_changed_added_and_removed_files() {
        use strata_executor::context::SelectedFile;
        let recorded: BTreeMap<String, (String, String)> = [
            ("a".to_string(), ("100644".to_string(), format!("{:016x}", 1))),
            ("b".to_string(), ("100644".to_string(), format!("{:016x}", 2))),
        ]
        .into();
        let here = vec![
            SelectedFile { path: "a".into(), mode: 0o100644, content: 9 },
            SelectedFile { path: "c".into(), mode: 0o100644, content: 3 },
        ];
        assert_eq!(context_differences(&recorded, &here, 10), vec!["changed: a", "added: c", "removed: b"]);
        assert_eq!(context_differences(&recorded, &here, 1), vec!["changed: a", "and 2 more"]);
    }
}
