//! Supply-chain attestations (issue #17), through the binary against the test
//! environment's registries: SLSA v1 provenance and SPDX SBOMs in BuildKit's layout
//! (read back with skopeo), checked against the in-toto v1 statement and SLSA v1
//! provenance schemas (tests/schemas, offline, with Python's jsonschema) and with
//! `pyspdxtools`; `strata verify --against` from the provenance alone; reproducible
//! attestations; one attestation manifest per platform.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

const EPOCH: &str = "1700000000";

fn run(root: &Path, args: &[&str]) -> Output {
    Command::new(strata_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("RUST_BACKTRACE", "1")
        // The other tests turn buildx's default attestations off; these test them.
        .env_remove("BUILDX_NO_DEFAULT_ATTESTATIONS")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run strata")
}

/// `strata build --progress=plain FLAGS --push -t TAG CONTEXT`, which must succeed.
fn push_build(root: &Path, flags: &[&str], tag: &str, ctx: &Path) {
    let mut args = vec!["build", "--progress=plain"];
    args.extend_from_slice(flags);
    args.extend(["--push", "-t", tag, ctx.to_str().unwrap()]);
    let o = run(root, &args);
    assert!(o.status.success(), "{}", text(&o));
}

fn skopeo_raw(env: &HashMap<String, String>, reference: &str) -> Value {
    let o = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo inspect {reference}: {}", text(&o));
    let _ = env;
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The statements `strata inspect --attestations` prints.
fn attestations(root: &Path, reference: &str) -> Vec<Value> {
    let o = run(root, &["inspect", "--attestations", reference]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice::<Vec<Value>>(&o.stdout).unwrap()
}

fn predicate<'a>(found: &'a [Value], kind: &str) -> &'a Value {
    &found.iter().find(|f| f["predicateType"] == kind).unwrap_or_else(|| panic!("no {kind} in {found:?}"))["statement"]
}

/// The schema check (tests/schemas/check.py) of a `strata inspect --attestations` output.
fn schema_check(env: &HashMap<String, String>, statements: &[Value]) -> Output {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), serde_json::to_vec(statements).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/check.py");
    Command::new(&env["RIG_PYTHON"]).arg(script).arg(f.path()).output().unwrap()
}

fn index_entries(index: &Value) -> (Vec<&Value>, Vec<&Value>) {
    let all: Vec<&Value> = index["manifests"].as_array().unwrap().iter().collect();
    let (att, img): (Vec<&Value>, Vec<&Value>) =
        all.into_iter().partition(|m| m["annotations"]["vnd.docker.reference.type"] == "attestation-manifest");
    (img, att)
}

#[test]
fn a_pushed_debian_image_carries_provenance_and_an_sbom_that_independent_tools_accept() {
    let Some(env) = test_env() else { return };
    if !env.contains_key("RIG_DEBIAN_LAYOUT") {
        panic!("the test environment has no Debian image: run tests/setup --debian");
    }
    let reg = &env["RIG_REGISTRY"];
    let ctx = tempfile::tempdir().unwrap();
    // python3-six is a Debian package whose files include a Python distribution's
    // metadata (dist-packages/six-*.egg-info or .dist-info): a Python package a RUN installed.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {reg}/library/debian:bookworm\nARG GREETING\n\
             RUN apt-get update -q && apt-get install -y -q --no-install-recommends python3-six && rm -rf /var/lib/apt/lists/*\n\
             RUN echo \"$GREETING\" > /greeting\n"
        ),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let repo = format!("{reg}/{}", unique_repo("attest-debian"));
    let tag = format!("{repo}:1");
    push_build(
        root.path(),
        &["--build-arg", "GREETING=hello", "--sbom=true", "--provenance=mode=max"],
        &tag,
        ctx.path(),
    );

    // The index as skopeo reads it: the image, then its attestation manifest.
    let index = skopeo_raw(&env, &tag);
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json", "{index}");
    let (images, atts) = index_entries(&index);
    assert_eq!((images.len(), atts.len()), (1, 1), "{index}");
    let att = atts[0];
    assert_eq!(att["platform"]["os"], "unknown");
    assert_eq!(att["platform"]["architecture"], "unknown");
    assert_eq!(att["annotations"]["vnd.docker.reference.digest"], images[0]["digest"], "{index}");
    let att_manifest = skopeo_raw(&env, &format!("{repo}@{}", att["digest"].as_str().unwrap()));
    let layer_types: Vec<&str> = att_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["annotations"]["in-toto.io/predicate-type"].as_str().unwrap())
        .collect();
    assert_eq!(layer_types, ["https://slsa.dev/provenance/v1", "https://spdx.dev/Document"], "{att_manifest}");
    assert!(att_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["mediaType"] == "application/vnd.in-toto+json"));

    let found = attestations(root.path(), &tag);
    // Provenance: the base image by its manifest digest (as skopeo sees it), the build args.
    let prov = predicate(&found, "https://slsa.dev/provenance/v1");
    assert_eq!(
        prov["subject"][0]["digest"]["sha256"],
        images[0]["digest"].as_str().unwrap().trim_start_matches("sha256:")
    );
    let debian = skopeo_raw(&env, &format!("{reg}/library/debian:bookworm"));
    let debian_manifest = match debian["manifests"].as_array() {
        Some(list) => list.iter().find(|m| m["platform"]["architecture"] == "amd64").unwrap()["digest"].clone(),
        None => {
            let o = Command::new("skopeo")
                .args(["inspect", "--tls-verify=false", &format!("docker://{reg}/library/debian:bookworm")])
                .output()
                .unwrap();
            serde_json::from_slice::<Value>(&o.stdout).unwrap()["Digest"].clone()
        }
    };
    let deps = prov["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    let base = deps
        .iter()
        .find(|d| {
            d["uri"].as_str().is_some_and(|u| u.starts_with(&format!("pkg:docker/{reg}/library/debian@bookworm")))
        })
        .unwrap_or_else(|| panic!("no debian in {deps:?}"));
    assert_eq!(format!("sha256:{}", base["digest"]["sha256"].as_str().unwrap()), debian_manifest.as_str().unwrap());
    assert_eq!(prov["predicate"]["buildDefinition"]["externalParameters"]["buildArgs"]["GREETING"], "hello");
    assert_eq!(prov["predicate"]["buildDefinition"]["internalParameters"]["sourceDateEpoch"], EPOCH);
    // mode=max: the Dockerfile's text and the step of each layer.
    let steps = prov["predicate"]["runDetails"]["byproducts"].as_array().unwrap();
    assert!(steps.iter().any(|s| s["annotations"]["strata.created-by"].as_str().unwrap_or("").contains("python3-six")));

    // Both statements pass the in-toto v1 and SLSA v1 schemas; a broken one does not.
    let checked = schema_check(&env, &found);
    assert!(checked.status.success(), "{}", text(&checked));
    let mut broken = found.clone();
    broken[0]["statement"].as_object_mut().unwrap().remove("subject");
    broken[0]["statement"]["predicate"]["runDetails"]["builder"].as_object_mut().unwrap().remove("id");
    let refused = schema_check(&env, &broken);
    assert!(!refused.status.success(), "the schema check cannot fail: {}", text(&refused));
    assert!(text(&refused).contains("subject") && text(&refused).contains("id"), "{}", text(&refused));

    // The SBOM: SPDX 2.3 that pyspdxtools validates, with the base's and the RUN's packages.
    let sbom = &predicate(&found, "https://spdx.dev/Document")["predicate"];
    let file = tempfile::Builder::new().suffix(".spdx.json").tempfile().unwrap();
    std::fs::write(file.path(), serde_json::to_vec_pretty(sbom).unwrap()).unwrap();
    let v = Command::new(&env["RIG_PYSPDXTOOLS"]).arg("-i").arg(file.path()).output().unwrap();
    assert!(v.status.success(), "pyspdxtools: {}", text(&v));
    assert!(!text(&v).to_lowercase().contains("validation error"), "pyspdxtools: {}", text(&v));
    let packages = sbom["packages"].as_array().unwrap();
    let purls: Vec<&str> = packages
        .iter()
        .flat_map(|p| p["externalRefs"].as_array().into_iter().flatten())
        .filter_map(|r| r["referenceLocator"].as_str())
        .collect();
    for deb in ["base-files", "dpkg", "bash"] {
        assert!(purls.iter().any(|p| p.starts_with(&format!("pkg:deb/debian/{deb}@"))), "{deb} missing: {purls:?}");
    }
    assert!(purls.iter().any(|p| p.starts_with("pkg:deb/debian/python3-six@")), "{purls:?}");
    assert!(purls.iter().any(|p| p.starts_with("pkg:pypi/six@")), "the Python package six: {purls:?}");
    // The layer that brought each: base packages the base's layer, six the RUN's.
    let layer_of = |purl_prefix: &str| {
        packages
            .iter()
            .find(|p| p["externalRefs"][0]["referenceLocator"].as_str().unwrap_or("").starts_with(purl_prefix))
            .map(|p| p["sourceInfo"].as_str().unwrap_or("").to_string())
            .unwrap()
    };
    assert!(layer_of("pkg:deb/debian/bash@").starts_with("layer 0 "), "{}", layer_of("pkg:deb/debian/bash@"));
    assert!(!layer_of("pkg:pypi/six@").starts_with("layer 0 "), "{}", layer_of("pkg:pypi/six@"));
}

fn busybox_app(env: &HashMap<String, String>) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}/library/busybox:latest\nARG VERSION\nCOPY app/ /app/\nRUN echo \"$VERSION\" > /version\n",
            env["RIG_REGISTRY"]
        ),
    )
    .unwrap();
    std::fs::create_dir(ctx.path().join("app")).unwrap();
    std::fs::write(ctx.path().join("app/main.sh"), "echo main\n").unwrap();
    std::fs::write(ctx.path().join("app/lib.sh"), "echo lib\n").unwrap();
    ctx
}

#[test]
fn verify_takes_the_build_from_the_provenance_and_checks_the_context_first() {
    let Some(env) = test_env() else { return };
    let reg = &env["RIG_REGISTRY"];
    let ctx = busybox_app(&env);
    let root = tempfile::tempdir().unwrap();
    let tag = format!("{reg}/{}:1", unique_repo("attest-verify"));
    push_build(root.path(), &["--build-arg", "VERSION=4.2", "--provenance=mode=max"], &tag, ctx.path());

    // No build arg, no SOURCE_DATE_EPOCH repeated: both come from the provenance.
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--against", &tag];
        args.extend_from_slice(extra);
        args.push(ctx.path().to_str().unwrap());
        Command::new(strata_bin())
            .arg("--root")
            .arg(root.path())
            .args(&args)
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("BUILDX_NO_DEFAULT_ATTESTATIONS")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let o = verify(&[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("--build-arg=VERSION=4.2"), "{}", text(&o));
    assert!(text(&o).contains("--source-date-epoch=1700000000"), "{}", text(&o));
    assert!(text(&o).contains("MATCH"), "{}", text(&o));

    // A build arg given with another value is refused (exit 2), before anything is built.
    let o = verify(&["--build-arg", "VERSION=5"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // A changed file: reported before any build, and named (mode=max).
    std::fs::write(ctx.path().join("app/lib.sh"), "echo changed\n").unwrap();
    std::fs::write(ctx.path().join("app/new.sh"), "echo new\n").unwrap();
    let o = verify(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("is not the one") && t.contains("nothing was built"), "{t}");
    assert!(t.contains("changed: app/lib.sh") && t.contains("added: app/new.sh"), "{t}");
    assert!(!t.contains("fresh root"), "a build started: {t}");
}

#[test]
fn with_source_date_epoch_two_builds_write_identical_attestations() {
    let Some(env) = test_env() else { return };
    let ctx = busybox_app(&env);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("layout");
        let out = format!("type=oci,dest={},tar=false", dest.display());
        let o =
            run(root.path(), &["build", "--progress=plain", "--sbom=true", "-o", &out, ctx.path().to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        let top: Value = serde_json::from_slice(&std::fs::read(dest.join("index.json")).unwrap()).unwrap();
        let index_digest = top["manifests"][0]["digest"].as_str().unwrap().to_string();
        let index: Value = serde_json::from_slice(
            &std::fs::read(dest.join("blobs/sha256").join(index_digest.trim_start_matches("sha256:"))).unwrap(),
        )
        .unwrap();
        let (_, atts) = index_entries(&index);
        assert_eq!(atts.len(), 1, "default provenance for an OCI layout: {index}");
        seen.push((index_digest, atts[0]["digest"].clone()));
    }
    assert_eq!(seen[0], seen[1]);

    // buildx's BUILDX_NO_DEFAULT_ATTESTATIONS=1 turns the default off.
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("layout");
    let o = Command::new(strata_bin())
        .arg("--root")
        .arg(root.path())
        .args(["build", "--progress=plain", "-o", &format!("type=oci,dest={},tar=false", dest.display())])
        .arg(ctx.path())
        .env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let top: Value = serde_json::from_slice(&std::fs::read(dest.join("index.json")).unwrap()).unwrap();
    assert_eq!(top["manifests"][0]["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{top}");
}

#[test]
fn a_multi_platform_push_has_one_attestation_manifest_per_platform() {
    let Some(env) = test_env() else { return };
    let reg = &env["RIG_REGISTRY"];
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {reg}/library/busybox:latest\nCOPY a /a\n")).unwrap();
    std::fs::write(ctx.path().join("a"), "a\n").unwrap();
    let root = tempfile::tempdir().unwrap();
    let tag = format!("{reg}/{}:1", unique_repo("attest-multi"));
    push_build(root.path(), &["--platform", "linux/amd64,linux/arm64"], &tag, ctx.path());
    let index = skopeo_raw(&env, &tag);
    let (images, atts) = index_entries(&index);
    assert_eq!((images.len(), atts.len()), (2, 2), "{index}");
    let found = attestations(root.path(), &tag);
    for (image, att) in images.iter().zip(&atts) {
        assert_eq!(att["annotations"]["vnd.docker.reference.digest"], image["digest"]);
        let arch = image["platform"]["architecture"].as_str().unwrap();
        let statement = found.iter().find(|f| f["subject"] == image["digest"]).unwrap();
        let subject = &statement["statement"]["subject"][0];
        assert_eq!(
            format!("sha256:{}", subject["digest"]["sha256"].as_str().unwrap()),
            image["digest"].as_str().unwrap()
        );
        assert!(subject["name"].as_str().unwrap().ends_with(&format!("platform=linux%2F{arch}")), "{subject}");
    }
}

#[test]
fn attestation_flags_are_checked_before_anything_is_built() {
    let Some(env) = test_env() else { return };
    let ctx = busybox_app(&env);
    let root = tempfile::tempdir().unwrap();
    let dir = ctx.path().to_str().unwrap();
    for (flags, says) in [
        (vec!["--provenance=sometimes", "--push", "-t", "x.invalid/a"], "expected true or false"),
        (vec!["--provenance=mode=all", "--push", "-t", "x.invalid/a"], "mode=all"),
        (vec!["--sbom=generator=docker/scout-sbom-indexer", "--push", "-t", "x.invalid/a"], "generator"),
        (vec!["--attest", "type=vex", "--push", "-t", "x.invalid/a"], "unknown attestation type"),
        (vec!["--sbom=true", "-t", "local/only"], "attached to a pushed image or an OCI layout"),
    ] {
        let mut args = vec!["build"];
        args.extend(flags.iter().copied());
        args.push(dir);
        let o = run(root.path(), &args);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{flags:?}: {}", text(&o));
    }
    // --provenance=false: the image is pushed as a manifest, no index.
    let tag = format!("{}/{}:1", env["RIG_REGISTRY"], unique_repo("attest-off"));
    let o = run(root.path(), &["build", "--progress=plain", "--provenance=false", "--push", "-t", &tag, dir]);
    assert!(o.status.success(), "{}", text(&o));
    let raw = skopeo_raw(&env, &tag);
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{raw}");
    let o = run(root.path(), &["inspect", "--attestations", &tag]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("carries no attestations"), "{}", text(&o));
}

#[test]
fn provenance_records_add_urls_and_secret_ids_never_secret_values() {
    let Some(env) = test_env() else { return };
    let served = tempfile::tempdir().unwrap();
    std::fs::write(served.path().join("tool.txt"), "a tool\n").unwrap();
    let server = HttpServer::start(served.path());
    let url = format!("http://127.0.0.1:{}/tool.txt", server.1);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}/library/busybox:latest\nADD {url} /tool.txt\nRUN --mount=type=secret,id=token wc -c /run/secrets/token > /n\n",
            env["RIG_REGISTRY"]
        ),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("layout");
    let secret_value = "s3cr3t-value-that-must-not-leak";
    let o = Command::new(strata_bin())
        .arg("--root")
        .arg(root.path())
        .args(["build", "--progress=plain", "--secret", "id=token,env=THE_TOKEN", "-o"])
        .arg(format!("type=oci,dest={},tar=false", dest.display()))
        .arg(ctx.path())
        .env("THE_TOKEN", secret_value)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env_remove("BUILDX_NO_DEFAULT_ATTESTATIONS")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // inspect reads an OCI layout too.
    let found = attestations(root.path(), &format!("oci-layout://{}", dest.display()));
    let prov = predicate(&found, "https://slsa.dev/provenance/v1");
    let text_of = prov.to_string();
    assert!(!text_of.contains(secret_value), "the secret's value is in the provenance");
    assert_eq!(
        prov["predicate"]["buildDefinition"]["externalParameters"]["secrets"],
        serde_json::json!([{ "id": "token" }])
    );
    let deps = prov["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    let add = deps.iter().find(|d| d["uri"] == url.as_str()).unwrap_or_else(|| panic!("no {url} in {deps:?}"));
    assert_eq!(add["digest"]["sha256"], sha256_bytes(b"a tool\n").trim_start_matches("sha256:"));
    let context = deps.iter().find(|d| d["name"] == "context").unwrap();
    assert_eq!(context["digest"]["blake3"].as_str().unwrap().len(), 64, "{context}");
    assert!(context["annotations"]["strata.files"].is_null(), "mode=min lists no files: {context}");
    let checked = schema_check(&env, &found);
    assert!(checked.status.success(), "{}", text(&checked));
}
