//! What strata writes is read back by independent tools: an image pushed to the plain,
//! TLS + basic-auth and token-auth registries is inspected and copied by skopeo with the
//! digest strata reported; an OCI layout tar is unpacked by umoci and its CMD run by
//! runc; every manifest, index, config and descriptor validates against the OCI
//! image-spec JSON schemas (`../shared/corpus/oci-image-spec-schema`), with a validator
//! first checked against the corpus' test vectors and against deliberately broken
//! documents.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use common::*;

const DOCKERFILE: &str = r#"FROM busybox
RUN echo hello-from-strata > /greeting && head -c 200000 /dev/urandom > /noise
CMD ["cat", "/greeting"]
"#;

/// strata with a root, extra environment variables, and global flags before the command.
fn strata_with(root: &Path, global: &[&str], args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(strata_bin());
    cmd.arg("--root").arg(root).args(global).args(args).env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run strata")
}

fn context(dockerfile: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("Dockerfile"), dockerfile).unwrap();
    d
}

fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed: {}", text(&o));
    o.stdout
}

fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The blob file of `digest` in an OCI layout directory.
fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(alg).join(hex)
}

// ---------------------------------------------------------------------------------------
// OCI image-spec schemas

/// The OCI image-spec schemas (draft-04), every `$ref` resolved from the local files.
struct OciSchemas {
    by_kind: HashMap<&'static str, jsonschema::Validator>,
}

/// Each schema file and the URIs it is known by upstream (its `id` and the aliases
/// relative `$ref`s resolve to): see the corpus README.
const SCHEMA_FILES: &[(&str, &str, &[&str])] = &[
    ("manifest", "image-manifest-schema.json", &["https://opencontainers.org/schema/image/manifest"]),
    ("index", "image-index-schema.json", &["https://opencontainers.org/schema/image/index"]),
    ("config", "config-schema.json", &["https://opencontainers.org/schema/image/config"]),
    ("layout", "image-layout-schema.json", &["https://opencontainers.org/schema/image/layout"]),
    (
        "descriptor",
        "content-descriptor.json",
        &[
            "https://opencontainers.org/schema/descriptor",
            "https://opencontainers.org/schema/image/content-descriptor.json",
        ],
    ),
    (
        "",
        "defs-descriptor.json",
        &[
            "https://opencontainers.org/schema/image/descriptor/mediaType",
            "https://opencontainers.org/schema/defs-descriptor.json",
            "https://opencontainers.org/schema/image/defs-descriptor.json",
        ],
    ),
    (
        "",
        "defs.json",
        &[
            "https://opencontainers.org/schema/defs.json",
            "https://opencontainers.org/schema/image/defs.json",
            "https://opencontainers.org/schema/image/descriptor/defs.json",
        ],
    ),
];

fn oci_corpus() -> Option<PathBuf> {
    let dir = corpus()?.join("oci-image-spec-schema");
    if dir.join("schema").is_dir() {
        Some(dir)
    } else {
        strata_testsupport::skip::shared_missing(&dir, "OCI schema validation");
        None
    }
}

impl OciSchemas {
    fn load(corpus: &Path) -> OciSchemas {
        let dir = corpus.join("schema");
        let read = |f: &str| -> Value { json_file(&dir.join(f)) };
        let mut builder = jsonschema::Registry::new();
        for (_, file, uris) in SCHEMA_FILES {
            for uri in *uris {
                builder = builder.add(uri, read(file)).unwrap();
            }
        }
        let registry = builder.prepare().expect("schema registry");
        let mut by_kind = HashMap::new();
        for (kind, file, _) in SCHEMA_FILES.iter().filter(|(k, _, _)| !k.is_empty()) {
            let v = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft4)
                .should_validate_formats(true)
                .offline()
                .with_registry(&registry)
                .build(&read(file))
                .unwrap_or_else(|e| panic!("compiling {file}: {e}"));
            by_kind.insert(*kind, v);
        }
        OciSchemas { by_kind }
    }

    /// The problems of document `text` as a `kind` (manifest, index, config, layout,
    /// descriptor): JSON syntax, the schema, and the checks upstream's validator makes
    /// besides the schema (digest encoding, base64 `data`, `Env` entries).
    fn problems(&self, kind: &str, text: &str) -> Vec<String> {
        let doc: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return vec![format!("not JSON: {e}")],
        };
        let mut out: Vec<String> =
            self.by_kind[kind].iter_errors(&doc).map(|e| format!("{e} at {}", e.instance_path())).collect();
        if kind == "descriptor" {
            if let Some(d) = doc.get("digest").and_then(Value::as_str) {
                if let Some(p) = digest_problem(d) {
                    out.push(p);
                }
            }
        }
        let mut descriptors: Vec<&Value> = Vec::new();
        match kind {
            "descriptor" => descriptors.push(&doc),
            "manifest" => {
                descriptors.extend(doc.get("config"));
                descriptors.extend(doc.get("subject"));
                descriptors.extend(doc.get("layers").and_then(Value::as_array).into_iter().flatten());
            }
            "index" => {
                descriptors.extend(doc.get("subject"));
                descriptors.extend(doc.get("manifests").and_then(Value::as_array).into_iter().flatten());
            }
            _ => {}
        }
        for d in descriptors {
            if let Some(data) = d.get("data").and_then(Value::as_str) {
                if !is_std_base64(data) {
                    out.push(format!("data {data:?} is not standard padded base64"));
                }
            }
        }
        if kind == "config" {
            for e in doc.pointer("/config/Env").and_then(Value::as_array).into_iter().flatten() {
                match e.as_str() {
                    Some(s) if s.split_once('=').is_some_and(|(k, _)| !k.is_empty()) => {}
                    _ => out.push(format!("Env entry {e} is not NAME=VALUE")),
                }
            }
        }
        out
    }

    fn assert_valid(&self, kind: &str, what: &str, text: &str) {
        let p = self.problems(kind, text);
        assert!(p.is_empty(), "{what} is not a valid OCI {kind}: {p:?}\n{text}");
    }

    fn assert_invalid(&self, kind: &str, what: &str, doc: &Value) {
        let p = self.problems(kind, &doc.to_string());
        assert!(!p.is_empty(), "{what}: the validator accepted a broken {kind}: {doc}");
        eprintln!("rejected as expected ({what}): {p:?}");
    }
}

/// Registered algorithms must be lowercase hex of their exact length.
fn digest_problem(d: &str) -> Option<String> {
    let (alg, hex) = d.split_once(':')?;
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return None,
    };
    let ok = hex.len() == len && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (!ok).then(|| format!("digest {d} is not {len} lowercase hex digits"))
}

fn is_std_base64(s: &str) -> bool {
    s.len().is_multiple_of(4)
        && s.trim_end_matches('=').len() + 2 >= s.len()
        && s.trim_end_matches('=').bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Validate an OCI layout directory: `oci-layout`, `index.json`, and every manifest,
/// config and layer descriptor reachable from it, plus each blob's digest and size.
/// Returns the number of documents validated.
fn validate_layout(schemas: &OciSchemas, layout: &Path) -> usize {
    let mut n = 0;
    schemas.assert_valid("layout", "oci-layout", &std::fs::read_to_string(layout.join("oci-layout")).unwrap());
    let index_text = std::fs::read_to_string(layout.join("index.json")).unwrap();
    schemas.assert_valid("index", "index.json", &index_text);
    n += 2;
    let index: Value = serde_json::from_str(&index_text).unwrap();
    let mut todo: Vec<Value> = index["manifests"].as_array().unwrap().clone();
    assert!(!todo.is_empty(), "index.json lists no manifest: {index}");
    while let Some(desc) = todo.pop() {
        schemas.assert_valid("descriptor", "a descriptor of index.json", &desc.to_string());
        let bytes = check_blob(layout, &desc);
        let text = String::from_utf8(bytes).unwrap();
        n += 2;
        match desc["mediaType"].as_str().unwrap() {
            "application/vnd.oci.image.index.v1+json" => {
                schemas.assert_valid("index", "a nested index", &text);
                let v: Value = serde_json::from_str(&text).unwrap();
                todo.extend(v["manifests"].as_array().unwrap().iter().cloned());
            }
            "application/vnd.oci.image.manifest.v1+json" => {
                schemas.assert_valid("manifest", &format!("manifest {}", desc["digest"]), &text);
                let m: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(m["mediaType"], desc["mediaType"], "the manifest's own mediaType");
                let config = &m["config"];
                assert_eq!(config["mediaType"], "application/vnd.oci.image.config.v1+json");
                schemas.assert_valid("descriptor", "the config descriptor", &config.to_string());
                let config_text = String::from_utf8(check_blob(layout, config)).unwrap();
                schemas.assert_valid("config", &format!("config {}", config["digest"]), &config_text);
                n += 2;
                let layers = m["layers"].as_array().unwrap();
                let c: Value = serde_json::from_str(&config_text).unwrap();
                assert_eq!(c["rootfs"]["diff_ids"].as_array().unwrap().len(), layers.len(), "one diff_id per layer");
                for l in layers {
                    schemas.assert_valid("descriptor", "a layer descriptor", &l.to_string());
                    n += 1;
                    let mt = l["mediaType"].as_str().unwrap();
                    assert!(mt.starts_with("application/vnd.oci.image.layer.v1.tar"), "{mt}");
                    check_blob_file(layout, l);
                }
            }
            other => panic!("index.json refers to a {other}"),
        }
    }
    n
}

/// The blob of `desc` in `layout`: its size and sha256 (by sha256sum) as the descriptor says.
fn check_blob(layout: &Path, desc: &Value) -> Vec<u8> {
    check_blob_file(layout, desc);
    std::fs::read(blob_path(layout, desc["digest"].as_str().unwrap())).unwrap()
}

fn check_blob_file(layout: &Path, desc: &Value) {
    let digest = desc["digest"].as_str().unwrap();
    let p = blob_path(layout, digest);
    let len = std::fs::metadata(&p).unwrap_or_else(|e| panic!("blob {digest}: {e}")).len();
    assert_eq!(Some(len), desc["size"].as_u64(), "size of {digest}");
    assert_eq!(sha256_file(&p), digest, "content of {}", p.display());
}

// ---------------------------------------------------------------------------------------

#[test]
fn oci_schema_validator_agrees_with_upstream_test_vectors_and_rejects_broken_documents() {
    let Some(dir) = oci_corpus() else { return };
    let schemas = OciSchemas::load(&dir);
    let vectors = json_file(&dir.join("test-vectors.json"));
    let kinds: HashMap<&str, &str> = [
        ("application/vnd.oci.descriptor.v1+json", "descriptor"),
        ("application/vnd.oci.image.manifest.v1+json", "manifest"),
        ("application/vnd.oci.image.index.v1+json", "index"),
        ("application/vnd.oci.image.config.v1+json", "config"),
        ("application/vnd.oci.layout.header.v1+json", "layout"),
    ]
    .into();
    let mut disagree = Vec::new();
    let (mut valid, mut invalid) = (0, 0);
    for case in vectors["test_cases"].as_array().unwrap().iter().chain(vectors["spec_examples"].as_array().unwrap()) {
        let kind = kinds[case["media_type"].as_str().unwrap()];
        let doc = case.get("document_converted").unwrap_or(&case["document"]).as_str().unwrap();
        let problems = schemas.problems(kind, doc);
        let expect = case["expect_valid"].as_bool().unwrap();
        if expect {
            valid += 1;
        } else {
            invalid += 1;
        }
        if problems.is_empty() != expect {
            disagree.push(format!(
                "{} / {:?}: expected valid={expect}, problems {problems:?}",
                case["source"],
                case.get("comment").or(case.get("title"))
            ));
        }
    }
    eprintln!("test vectors: {valid} valid, {invalid} invalid");
    assert!(valid >= 30 && invalid >= 30, "the corpus has 39 valid and 40 invalid documents");
    assert!(
        disagree.is_empty(),
        "the validator disagrees with upstream on {} documents:\n{}",
        disagree.len(),
        disagree.join("\n")
    );

    // Deliberately broken variants of a valid manifest, config and index are rejected.
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 7023,
                   "digest": "sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7"},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 32654,
                    "digest": "sha256:9834876dcfb05cb167a5c24953eba58c4ac89b1adf57f28f2f9d09af107ee8f0"}]
    });
    schemas.assert_valid("manifest", "the valid manifest", &manifest.to_string());
    let mut m = manifest.clone();
    m["schemaVersion"] = "2".into();
    schemas.assert_invalid("manifest", "schemaVersion as a string", &m);
    let mut m = manifest.clone();
    m["layers"][0].as_object_mut().unwrap().remove("mediaType");
    schemas.assert_invalid("manifest", "a layer without mediaType", &m);
    let mut m = manifest.clone();
    m["config"]["digest"] = "sha256:not-hex!".into();
    schemas.assert_invalid("manifest", "a malformed config digest", &m);
    let mut m = manifest.clone();
    m["layers"][0]["size"] = (-1).into();
    schemas.assert_invalid("manifest", "a negative layer size", &m);

    let config = serde_json::json!({
        "created": "2015-10-31T22:22:56.015925234Z", "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:c6f988f4874bb0add23a778f753c65efe992244e148a1d2ec2a8b664fb66bbd1"]}
    });
    schemas.assert_valid("config", "the valid config", &config.to_string());
    let mut c = config.clone();
    c["created"] = "yesterday".into();
    schemas.assert_invalid("config", "created not a date-time", &c);
    let mut c = config.clone();
    c["rootfs"].as_object_mut().unwrap().remove("diff_ids");
    schemas.assert_invalid("config", "rootfs without diff_ids", &c);
    let mut c = config.clone();
    c["config"]["Env"] = serde_json::json!(["NOEQUALS"]);
    schemas.assert_invalid("config", "an Env entry without =", &c);

    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 7143,
                       "digest": "sha256:e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f",
                       "platform": {"architecture": "amd64", "os": "linux"}}]
    });
    schemas.assert_valid("index", "the valid index", &index.to_string());
    let mut i = index.clone();
    i["manifests"][0]["platform"].as_object_mut().unwrap().remove("os");
    schemas.assert_invalid("index", "a platform without os", &i);
    let mut i = index.clone();
    i.as_object_mut().unwrap().remove("manifests");
    schemas.assert_invalid("index", "no manifests", &i);
    schemas.assert_invalid("layout", "imageLayoutVersion 2.0.0", &serde_json::json!({"imageLayoutVersion": "2.0.0"}));
}

#[test]
fn oci_layout_tar_validates_against_the_image_spec_schemas() {
    let Some(env) = test_env() else { return };
    let Some(dir) = oci_corpus() else { return };
    let schemas = OciSchemas::load(&dir);
    let root = tempfile::tempdir().unwrap();
    let ctx = context(DOCKERFILE);
    let work = tempfile::tempdir().unwrap();
    let bb = busybox_context(&env);
    // The default (gzip) and zstd layouts, an OCI layout dir (tar=false) too.
    let outputs = [
        ("gzip.tar", "type=oci,dest={}".to_string(), true),
        ("zstd.tar", "type=oci,compression=zstd,dest={}".to_string(), true),
        ("dir", "type=oci,tar=false,dest={}".to_string(), false),
    ];
    for (name, spec, is_tar) in outputs {
        let dest = work.path().join(name);
        let spec = spec.replace("{}", dest.to_str().unwrap());
        let o = strata(
            root.path(),
            &[
                "build",
                "--progress=plain",
                "--build-context",
                &bb,
                "-t",
                "schema-check:1",
                "-o",
                &spec,
                ctx.path().to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "build {spec}: {}", text(&o));
        let layout = if is_tar {
            let x = work.path().join(format!("{name}.x"));
            std::fs::create_dir_all(&x).unwrap();
            run_ok(Command::new("tar").arg("-xf").arg(&dest).arg("-C").arg(&x));
            x
        } else {
            dest
        };
        let n = validate_layout(&schemas, &layout);
        eprintln!("{name}: {n} documents valid");
        assert!(n >= 7, "oci-layout, index.json, manifest, config and at least 2 layers: {n}");
        let index = json_file(&layout.join("index.json"));
        assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "1", "{index}");
        if name == "zstd.tar" {
            let m = json_file(&blob_path(&layout, index["manifests"][0]["digest"].as_str().unwrap()));
            let built = m["layers"].as_array().unwrap().last().unwrap()["mediaType"].clone();
            assert_eq!(built, "application/vnd.oci.image.layer.v1.tar+zstd", "{m}");
        }
    }
}

/// Deletes a runc container (and its state) when dropped, even after a failed assertion.
struct RuncContainer<'a> {
    state: &'a Path,
    id: String,
}

impl Drop for RuncContainer<'_> {
    fn drop(&mut self) {
        let _ = Command::new("runc").arg("--root").arg(self.state).args(["delete", "-f", &self.id]).output();
    }
}

#[test]
fn oci_tar_unpacked_by_umoci_runs_its_cmd_under_runc() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = context(DOCKERFILE);
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("image.tar");
    let o = strata(
        root.path(),
        &[
            "build",
            "--progress=plain",
            "--build-context",
            &busybox_context(&env),
            "-t",
            "runc-check:v1",
            "-o",
            &format!("type=oci,dest={}", tar.display()),
            ctx.path().to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let rootfs = umoci_unpack(&tar, work.path(), "v1");
    assert_eq!(std::fs::read_to_string(rootfs.join("greeting")).unwrap(), "hello-from-strata\n");
    let bundle = rootfs.parent().unwrap().to_path_buf();

    // umoci turned the image config into a runtime config: the CMD is the process.
    let config_path = bundle.join("config.json");
    let mut config = json_file(&config_path);
    assert_eq!(config["process"]["args"], serde_json::json!(["cat", "/greeting"]), "CMD became the args");
    let env_list: Vec<&str> = config["process"]["env"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(env_list.iter().any(|e| e.starts_with("PATH=")), "{env_list:?}");
    config["process"]["terminal"] = false.into();
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

    let state = work.path().join("runc-state");
    std::fs::create_dir_all(&state).unwrap();
    let container = RuncContainer { state: &state, id: format!("strata-readback-{}", std::process::id()) };
    let out = Command::new("runc")
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&container.id)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "runc run failed: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello-from-strata\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(container);
    let list = run_ok(Command::new("runc").arg("--root").arg(&state).arg("list").arg("-q"));
    assert!(String::from_utf8_lossy(&list).trim().is_empty(), "container deleted: {}", String::from_utf8_lossy(&list));
}

#[test]
fn pushes_to_plain_tls_and_token_registries_are_read_back_by_skopeo_with_the_reported_digest() {
    let Some(env) = test_env() else { return };
    let schemas = oci_corpus().map(|d| OciSchemas::load(&d));
    let root = tempfile::tempdir().unwrap();
    let ctx = context(DOCKERFILE);
    let work = tempfile::tempdir().unwrap();
    let (user, pass) = (env["RIG_USER"].as_str(), env["RIG_PASS"].as_str());
    let cfg = docker_config_with(&[(&env["RIG_TLS_REGISTRY"], user, pass), (&env["RIG_TOKEN_REGISTRY"], user, pass)]);
    let bb = busybox_context(&env);
    let mut config_digests = Vec::new();
    for registry in [&env["RIG_REGISTRY"], &env["RIG_TLS_REGISTRY"], &env["RIG_TOKEN_REGISTRY"]] {
        let repo = unique_repo("readback");
        let reference = format!("{registry}/{repo}:v1");
        let meta_file = work.path().join(format!("meta-{}.json", registry.replace(':', "_")));
        let o = strata_with(
            root.path(),
            &["--tls-ca", &env["RIG_CA"]],
            &[
                "build",
                "--progress=plain",
                "--build-context",
                &bb,
                "--push",
                "-t",
                &reference,
                "--metadata-file",
                meta_file.to_str().unwrap(),
                ctx.path().to_str().unwrap(),
            ],
            // One timestamp: the three pushes are of one image.
            &[("DOCKER_CONFIG", cfg.path().to_str().unwrap()), ("SOURCE_DATE_EPOCH", "1700000000")],
        );
        let out = text(&o);
        assert!(o.status.success(), "push to {reference}: {out}");
        let meta = json_file(&meta_file);
        let digest = meta["containerimage.digest"].as_str().unwrap().to_string();
        eprintln!("{reference}: strata reported {digest}");

        // The manifest skopeo reads is the one strata reported, byte for byte.
        let flags = skopeo_flags(&env, registry, &work.path().join("certs"));
        let raw =
            run_ok(Command::new("skopeo").args(["inspect", "--raw"]).args(&flags).arg(format!("docker://{reference}")));
        assert_eq!(
            sha256_bytes(&raw),
            digest,
            "{reference}: the registry's manifest is the one the metadata file names"
        );
        assert_eq!(meta["containerimage.descriptor"]["digest"], digest.as_str());
        assert_eq!(meta["containerimage.descriptor"]["size"].as_u64(), Some(raw.len() as u64));
        let (_, hex) = digest.split_once(':').unwrap();
        assert!(out.contains(&hex[..12]), "the progress names the pushed manifest {digest}: {out}");
        let manifest: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(meta["containerimage.descriptor"]["mediaType"], manifest["mediaType"]);
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2, "busybox + one RUN: {manifest}");
        for l in layers {
            assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip", "layers leave compressed");
        }
        let inspect: Value = serde_json::from_slice(&run_ok(
            Command::new("skopeo").arg("inspect").args(&flags).arg(format!("docker://{reference}")),
        ))
        .unwrap();
        assert_eq!(inspect["Digest"], digest.as_str(), "{inspect}");
        assert_eq!(inspect["Architecture"], "amd64");
        let config = run_ok(
            Command::new("skopeo")
                .args(["inspect", "--raw", "--config"])
                .args(&flags)
                .arg(format!("docker://{reference}")),
        );
        assert_eq!(sha256_bytes(&config), manifest["config"]["digest"].as_str().unwrap());
        assert_eq!(meta["containerimage.config.digest"], manifest["config"]["digest"]);
        let config_json: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config_json["config"]["Cmd"], serde_json::json!(["cat", "/greeting"]));
        if let Some(s) = &schemas {
            s.assert_valid("manifest", &format!("the manifest of {reference}"), std::str::from_utf8(&raw).unwrap());
            s.assert_valid("config", &format!("the config of {reference}"), std::str::from_utf8(&config).unwrap());
        }
        config_digests.push(manifest["config"]["digest"].clone());

        // skopeo copies it to an OCI layout without changing a byte (it verifies every
        // blob's digest on the way); umoci unpacks the copy.
        let copy = work.path().join(format!("copy-{}", registry.replace(':', "_")));
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--preserve-digests"]);
        // --tls-verify, --cert-dir and --creds are --src-* flags for copy.
        cmd.args(flags.iter().map(|f| f.strip_prefix("--").map(|f| format!("--src-{f}")).unwrap_or_else(|| f.clone())));
        cmd.arg(format!("docker://{reference}")).arg(format!("oci:{}:v1", copy.display()));
        run_ok(&mut cmd);
        let index = json_file(&copy.join("index.json"));
        assert_eq!(index["manifests"][0]["digest"], digest.as_str(), "skopeo copy kept the digest: {index}");
        assert_eq!(std::fs::read(blob_path(&copy, &digest)).unwrap(), raw);
        for l in layers {
            check_blob_file(&copy, l);
        }
        if let Some(s) = &schemas {
            validate_layout(s, &copy);
        }
        let bundle = work.path().join(format!("bundle-{}", registry.replace(':', "_")));
        run_ok(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:v1", copy.display())).arg(&bundle));
        assert_eq!(std::fs::read_to_string(bundle.join("rootfs/greeting")).unwrap(), "hello-from-strata\n");
        assert_eq!(std::fs::metadata(bundle.join("rootfs/noise")).unwrap().len(), 200_000);
    }
    assert!(config_digests.windows(2).all(|w| w[0] == w[1]), "one image pushed three times: {config_digests:?}");
}

/// Build `DOCKERFILE` with `extra` arguments and a metadata file; returns the
/// metadata file's `containerimage.digest`.
fn build_with_metadata(root: &Path, env: &HashMap<String, String>, extra: &[&str]) -> String {
    let ctx = context(DOCKERFILE);
    let meta = ctx.path().join("metadata.json");
    let mut args = vec!["build", "--progress=plain", "--build-context"];
    let bb = busybox_context(env);
    args.push(&bb);
    args.extend_from_slice(extra);
    args.extend(["--metadata-file", meta.to_str().unwrap(), ctx.path().to_str().unwrap()]);
    let o = strata(root, &args);
    assert!(o.status.success(), "{}", text(&o));
    json_file(&meta)["containerimage.digest"].as_str().unwrap().to_string()
}

#[test]
fn zstd_push_is_read_back_with_the_reported_digest() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let reference = format!("{}/{}:zstd", env["RIG_REGISTRY"], unique_repo("readback-zstd"));
    let digest =
        build_with_metadata(root.path(), &env, &["-o", &format!("type=registry,name={reference},compression=zstd")]);
    let raw = run_ok(
        Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{reference}")),
    );
    assert_eq!(sha256_bytes(&raw), digest, "the metadata file names the pushed manifest");
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    let built = manifest["layers"].as_array().unwrap().last().unwrap();
    assert_eq!(built["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd", "{manifest}");
    let copy = work.path().join("copy");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}:zstd", copy.display())),
    );
    assert_eq!(json_file(&copy.join("index.json"))["manifests"][0]["digest"], digest.as_str());
    // (Debian's umoci cannot unpack zstd layers: the zstd tool and GNU tar read it.)
    let blob = blob_path(&copy, built["digest"].as_str().unwrap());
    match Command::new("zstd").arg("-dc").arg(&blob).stdout(std::process::Stdio::piped()).spawn() {
        Ok(mut z) => {
            let o =
                Command::new("tar").args(["-xOf", "-", "greeting"]).stdin(z.stdout.take().unwrap()).output().unwrap();
            assert!(z.wait().unwrap().success(), "zstd -d of the pushed layer");
            assert!(o.status.success(), "{}", text(&o));
            assert_eq!(String::from_utf8_lossy(&o.stdout), "hello-from-strata\n");
        }
        Err(e) => skipped(&format!("zstd not runnable ({e}): the zstd layer's content NOT checked")),
    }
}

// BuildKit's `containerimage.digest` is the digest of the manifest that was exported or
// pushed, and so is strata's: the OCI layout's manifest (gzip layers) for type=oci, the
// pushed manifest for a push, plain layers included with `compression=uncompressed`.

#[test]
fn metadata_file_names_the_manifest_in_the_oci_layout() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("image.tar");
    let digest = build_with_metadata(
        root.path(),
        &env,
        &["-t", "meta-check:1", "-o", &format!("type=oci,dest={}", tar.display())],
    );
    let x = work.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    run_ok(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&x));
    let index = json_file(&x.join("index.json"));
    assert_eq!(
        index["manifests"][0]["digest"],
        digest.as_str(),
        "the metadata file names the manifest of the layout: {index}"
    );
}

#[test]
fn uncompressed_push_sends_plain_layers_and_reports_the_pushed_digest() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let reference = format!("{}/{}:1", env["RIG_REGISTRY"], unique_repo("meta-uncompressed"));
    let digest = build_with_metadata(
        root.path(),
        &env,
        &["-o", &format!("type=registry,name={reference},compression=uncompressed")],
    );
    let raw = run_ok(
        Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{reference}")),
    );
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    let built = manifest["layers"].as_array().unwrap().last().unwrap();
    assert_eq!(built["mediaType"], "application/vnd.oci.image.layer.v1.tar", "compression=uncompressed: {manifest}");
    assert_eq!(sha256_bytes(&raw), digest, "the metadata file names the pushed manifest");
}
