//! A build cache that travels (`--cache-to` / `--cache-from`), through the binary, as CI
//! runners use it: each runner a fresh `--root`, the cache in the test environment's
//! registries (plain, TLS + basic auth, token auth), in an OCI layout directory, or in
//! the image itself (inline). Images are read back with skopeo.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Output};

use common::*;

const EPOCH: &str = "1700000000";

/// One runner: a fresh store, global flags (TLS CA) and environment (credentials).
struct Runner {
    root: tempfile::TempDir,
    global: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Runner {
    fn new(global: &[String], envs: &[(String, String)]) -> Runner {
        Runner { root: tempfile::tempdir().unwrap(), global: global.to_vec(), envs: envs.to_vec() }
    }

    fn build(&self, ctx: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new(strata_bin());
        cmd.arg("--root").arg(self.root.path()).args(&self.global).args(["build", "--progress=plain"]);
        cmd.args(args).arg(ctx).env("SOURCE_DATE_EPOCH", EPOCH).env("RUST_BACKTRACE", "1");
        cmd.stdin(std::process::Stdio::null());
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd.output().expect("run strata")
    }

    fn build_ok(&self, ctx: &Path, args: &[&str]) -> String {
        let o = self.build(ctx, args);
        let log = text(&o);
        assert!(o.status.success(), "strata build {args:?} failed:\n{log}");
        assert_no_panic(&log);
        log
    }

    /// Every blob digest in this runner's store.
    fn blobs(&self) -> HashSet<String> {
        let dir = self.root.path().join("blobs/sha256");
        std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| format!("sha256:{}", e.file_name().to_string_lossy())).collect())
            .unwrap_or_default()
    }

    fn store_bytes(&self) -> u64 {
        let dir = self.root.path().join("blobs/sha256");
        std::fs::read_dir(dir).map(|rd| rd.flatten().map(|e| e.metadata().unwrap().len()).sum()).unwrap_or(0)
    }
}

/// The `(steps run, steps cached)` of a build's summary line.
fn counts(log: &str) -> (usize, usize) {
    let line = log.lines().find(|l| l.starts_with("Build complete")).unwrap_or_else(|| panic!("no summary:\n{log}"));
    let num = |after: &str| -> usize {
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let i = words.iter().position(|w| w.starts_with(after)).unwrap_or_else(|| panic!("{after} in {line}"));
        words[i - 1].parse().unwrap()
    };
    (num("step"), num("cached"))
}

/// Did the step whose label contains `what` run (`DONE`) or come from a cache?
fn step_state(log: &str, what: &str) -> &'static str {
    let vertex = log
        .lines()
        .find_map(|l| {
            let (v, rest) = l.split_once(' ')?;
            (v.starts_with('#') && rest.starts_with('[') && rest.contains(what)).then(|| v.to_string())
        })
        .unwrap_or_else(|| panic!("no step {what:?} in:\n{log}"));
    if log.lines().any(|l| l == format!("{vertex} CACHED")) {
        "cached"
    } else if log.lines().any(|l| l.starts_with(&format!("{vertex} DONE"))) {
        "ran"
    } else {
        "neither"
    }
}

fn metadata_digest(path: &Path) -> String {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["containerimage.digest"].as_str().unwrap().to_string()
}

/// skopeo's view of a pushed image or cache: (manifest, config). skopeo copies it to
/// an OCI layout (`inspect --config` refuses artifacts), where both are read.
fn skopeo_inspect(env: &HashMap<String, String>, image: &str) -> (serde_json::Value, serde_json::Value) {
    let registry = image.split('/').next().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let flags: Vec<String> = skopeo_flags(env, registry, certs.path())
        .into_iter()
        .map(|f| match f.as_str() {
            "--tls-verify=false" => "--src-tls-verify=false".to_string(),
            "--cert-dir" => "--src-cert-dir".to_string(),
            "--creds" => "--src-creds".to_string(),
            _ => f,
        })
        .collect();
    let layout = tempfile::tempdir().unwrap();
    let o = Command::new("skopeo")
        .arg("copy")
        .args(&flags)
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:x", layout.path().display()))
        .output()
        .expect("skopeo");
    assert!(o.status.success(), "skopeo copy {image}: {}", text(&o));
    let blob = |d: &str| -> serde_json::Value {
        let path = layout.path().join("blobs/sha256").join(d.trim_start_matches("sha256:"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let index = blob_index(layout.path());
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    (manifest, config)
}

fn blob_index(layout: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap()
}

/// How a runner reaches `registry`: global flags and environment.
fn access(env: &HashMap<String, String>, registry: &str) -> (Vec<String>, Vec<(String, String)>, tempfile::TempDir) {
    let cfg = docker_config_with(&[
        (&env["RIG_TLS_REGISTRY"], &env["RIG_USER"], &env["RIG_PASS"]),
        (&env["RIG_TOKEN_REGISTRY"], &env["RIG_USER"], &env["RIG_PASS"]),
    ]);
    let envs = vec![("DOCKER_CONFIG".to_string(), cfg.path().display().to_string())];
    let global = if registry == env["RIG_TLS_REGISTRY"] {
        vec!["--tls-ca".to_string(), env["RIG_CA"].clone()]
    } else {
        Vec::new()
    };
    (global, envs, cfg)
}

const APP: &str = "\
FROM {BASE}
RUN echo first > /first
COPY a.txt /a.txt
RUN --mount=type=cache,id=downloads,target=/dl sh -c 'ls /dl > /seen; echo left-by-$(cat /a.txt) > /dl/from-$(cat /a.txt); cat /a.txt > /out'
RUN echo last > /last
";

fn app_context(base: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), APP.replace("{BASE}", base)).unwrap();
    std::fs::write(ctx.path().join("a.txt"), "runner-a").unwrap();
    ctx
}

/// Runners A, B and C of issue #15 against one registry.
fn three_runners(env: &HashMap<String, String>, registry: &str) {
    let (global, envs, _cfg) = access(env, registry);
    let repo = format!("{registry}/{}", unique_repo("cache"));
    let cache = format!("{repo}:buildcache");
    let ctx = app_context(&format!("{registry}/library/busybox:latest"));
    let meta = tempfile::tempdir().unwrap();

    // A: builds everything, pushes, exports the cache with its cache mount.
    let a = Runner::new(&global, &envs);
    let a_meta = meta.path().join("a.json");
    let log = a.build_ok(
        ctx.path(),
        &[
            "--push",
            "-t",
            &format!("{repo}:a"),
            "--metadata-file",
            a_meta.to_str().unwrap(),
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max,mounts=true"),
        ],
    );
    assert_eq!(counts(&log), (4, 0), "{log}");
    assert!(log.contains(&format!("exporting cache to {cache}: 5 records")), "{log}");
    assert!(log.contains("1 cache mount(s)"), "{log}");
    let (manifest, _) = skopeo_inspect(env, &format!("{repo}:a"));
    let image_layers: Vec<String> =
        manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
    let (cache_manifest, cache_config) = skopeo_inspect(env, &cache);
    assert_eq!(cache_manifest["config"]["mediaType"], "application/vnd.strata.cache.config.v1+json");
    // The cache's layers are the image's own blobs (plus the cache mount's).
    let cache_layers: HashSet<String> = cache_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    for l in &image_layers {
        assert!(cache_layers.contains(l), "image layer {l} is not a layer of the cache: {cache_manifest}");
    }
    assert_eq!(cache_config["mounts"][0]["id"], "downloads", "{cache_config}");

    // B: a fresh runner, nothing changed: no step runs, no layer is downloaded, and
    // the pushed image is the same.
    let b = Runner::new(&global, &envs);
    let b_meta = meta.path().join("b.json");
    let log = b.build_ok(
        ctx.path(),
        &[
            "--push",
            "-t",
            &format!("{repo}:b"),
            "--metadata-file",
            b_meta.to_str().unwrap(),
            "--cache-from",
            &format!("type=registry,ref={cache}"),
        ],
    );
    assert_eq!(counts(&log), (0, 4), "{log}");
    assert!(log.contains("5 records"), "the import is reported: {log}");
    assert_eq!(metadata_digest(&b_meta), metadata_digest(&a_meta), "{log}");
    let held = b.blobs();
    let base_layer = &image_layers[0];
    for l in image_layers.iter().filter(|l| *l != base_layer) {
        assert!(!held.contains(l), "runner B downloaded layer {l}:\n{log}");
    }
    assert!(b.store_bytes() < 4 << 20, "runner B's store holds {} bytes", b.store_bytes());

    // C: one context file changed: the step before the COPY comes from the cache, the
    // rest run, and the cache mount holds what runner A left there.
    std::fs::write(ctx.path().join("a.txt"), "runner-c").unwrap();
    let c = Runner::new(&global, &envs);
    let out = tempfile::tempdir().unwrap();
    let log = c.build_ok(
        ctx.path(),
        &[
            "--push",
            "-t",
            &format!("{repo}:c"),
            "-o",
            &format!("type=local,dest={}", out.path().display()),
            "--cache-from",
            &cache,
        ],
    );
    assert_eq!(step_state(&log, "RUN echo first"), "cached", "{log}");
    assert_eq!(step_state(&log, "COPY a.txt"), "ran", "{log}");
    assert_eq!(step_state(&log, "RUN echo last"), "ran", "{log}");
    assert_eq!(counts(&log), (3, 1), "{log}");
    let seen = std::fs::read_to_string(out.path().join("seen")).unwrap();
    assert_eq!(seen.trim(), "from-runner-a", "the cache mount as runner A left it");
    assert_eq!(std::fs::read_to_string(out.path().join("out")).unwrap(), "runner-c");
}

#[test]
fn runners_share_a_cache_through_the_plain_registry() {
    let Some(env) = test_env() else { return };
    three_runners(&env, &env["RIG_REGISTRY"].clone());
}

#[test]
fn runners_share_a_cache_through_the_tls_registry_with_basic_auth() {
    let Some(env) = test_env() else { return };
    three_runners(&env, &env["RIG_TLS_REGISTRY"].clone());
}

#[test]
fn runners_share_a_cache_through_the_token_registry() {
    let Some(env) = test_env() else { return };
    three_runners(&env, &env["RIG_TOKEN_REGISTRY"].clone());
}

#[test]
fn min_holds_the_final_chain_max_every_stage() {
    let Some(env) = test_env() else { return };
    let registry = env["RIG_REGISTRY"].clone();
    let repo = format!("{registry}/{}", unique_repo("modes"));
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {registry}/library/busybox:latest AS builder\nRUN echo built > /artifact\n\
             FROM {registry}/library/busybox:latest\nCOPY --from=builder /artifact /artifact\nRUN cat /artifact > /copy\n"
        ),
    )
    .unwrap();
    let a = Runner::new(&[], &[]);
    a.build_ok(
        ctx.path(),
        &[
            "--cache-to",
            &format!("type=registry,ref={repo}:min"),
            "--cache-to",
            &format!("type=registry,ref={repo}:max,mode=max"),
        ],
    );
    // min: the final image's chain only; the builder stage runs again to key the COPY.
    let log = Runner::new(&[], &[]).build_ok(ctx.path(), &["--cache-from", &format!("{repo}:min")]);
    assert_eq!(step_state(&log, "RUN echo built"), "ran", "{log}");
    assert_eq!(step_state(&log, "COPY --from=builder"), "cached", "{log}");
    assert_eq!(step_state(&log, "RUN cat /artifact"), "cached", "{log}");
    // max: every step of every stage.
    let log = Runner::new(&[], &[]).build_ok(ctx.path(), &["--cache-from", &format!("{repo}:max")]);
    assert_eq!(step_state(&log, "RUN echo built"), "cached", "{log}");
    assert_eq!(counts(&log), (0, 3), "{log}");
}

/// The blobs of an OCI layout that its index.json reaches (read here, not by strata).
fn referenced_blobs(layout: &Path) -> HashSet<String> {
    let read = |d: &str| -> serde_json::Value {
        let hex = d.trim_start_matches("sha256:");
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut out = HashSet::new();
    for m in index["manifests"].as_array().unwrap() {
        let d = m["digest"].as_str().unwrap().to_string();
        let manifest = read(&d);
        out.insert(d);
        out.insert(manifest["config"]["digest"].as_str().unwrap().to_string());
        for l in manifest["layers"].as_array().unwrap() {
            out.insert(l["digest"].as_str().unwrap().to_string());
        }
    }
    out
}

fn layout_blobs(layout: &Path) -> HashSet<String> {
    std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
        .collect()
}

#[test]
fn a_local_cache_round_trips_and_reset_leaves_no_unreferenced_blob() {
    let Some(env) = test_env() else { return };
    let ctx = app_context(&format!("{}/library/busybox:latest", env["RIG_REGISTRY"]));
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("cache");
    let to = format!("type=local,dest={},mode=max", dir.display());
    let from = format!("type=local,src={}", dir.display());
    Runner::new(&[], &[]).build_ok(ctx.path(), &["--cache-to", &to]);
    let first = layout_blobs(&dir);
    assert_eq!(first, referenced_blobs(&dir));

    // A fresh runner writing an OCI layout: every step cached, the layers fetched from
    // the cache directory (verified) into the output.
    let out = tempfile::tempdir().unwrap();
    let oci = out.path().join("image.tar");
    let log = Runner::new(&[], &[])
        .build_ok(ctx.path(), &["--cache-from", &from, "-o", &format!("type=oci,dest={}", oci.display())]);
    assert_eq!(counts(&log), (0, 4), "{log}");
    let rootfs = umoci_unpack(&oci, out.path(), "latest");
    assert_eq!(std::fs::read_to_string(rootfs.join("out")).unwrap(), "runner-a");

    // A changed file, exported again without reset: the old layers stay (BuildKit's way).
    std::fs::write(ctx.path().join("a.txt"), "second").unwrap();
    Runner::new(&[], &[]).build_ok(ctx.path(), &["--cache-from", &from, "--cache-to", &to]);
    let grown = layout_blobs(&dir);
    assert!(grown.len() > referenced_blobs(&dir).len(), "without reset, old blobs stay");
    // With reset: only what the new cache references.
    std::fs::write(ctx.path().join("a.txt"), "third").unwrap();
    let log =
        Runner::new(&[], &[]).build_ok(ctx.path(), &["--cache-from", &from, "--cache-to", &format!("{to},reset=true")]);
    assert!(log.contains("unreferenced blob"), "the reset is reported: {log}");
    assert_eq!(layout_blobs(&dir), referenced_blobs(&dir), "{log}");
    // And the directory still serves a build, here one that pushes what it never built.
    let image = format!("{}/{}:from-local", env["RIG_REGISTRY"], unique_repo("local-cache"));
    let log = Runner::new(&[], &[]).build_ok(ctx.path(), &["--cache-from", &from, "--push", "-t", &image]);
    assert_eq!(counts(&log), (0, 4), "{log}");
    let (manifest, _) = skopeo_inspect(&env, &image);
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 5, "{manifest}");
}

#[test]
fn an_inline_cache_travels_in_the_image() {
    let Some(env) = test_env() else { return };
    let registry = env["RIG_REGISTRY"].clone();
    let image = format!("{registry}/{}:inline", unique_repo("inline"));
    let ctx = app_context(&format!("{registry}/library/busybox:latest"));
    let meta = tempfile::tempdir().unwrap();
    let (ma, mb) = (meta.path().join("a.json"), meta.path().join("b.json"));
    Runner::new(&[], &[]).build_ok(
        ctx.path(),
        &["--push", "-t", &image, "--cache-to", "type=inline", "--metadata-file", ma.to_str().unwrap()],
    );
    let (_, config) = skopeo_inspect(&env, &image);
    let records = config["io.strata.cache.v1"]["records"].as_array().unwrap_or_else(|| panic!("{config}"));
    assert_eq!(records.len(), 5, "{config}");
    let log = Runner::new(&[], &[]).build_ok(
        ctx.path(),
        &[
            "--push",
            "-t",
            &image,
            "--cache-to",
            "type=inline",
            "--cache-from",
            &image,
            "--metadata-file",
            mb.to_str().unwrap(),
        ],
    );
    assert_eq!(counts(&log), (0, 4), "{log}");
    assert_eq!(metadata_digest(&ma), metadata_digest(&mb), "the same image, cache included");
}

#[test]
fn one_cache_ref_serves_both_platforms() {
    let Some(env) = test_env() else { return };
    let registry = env["RIG_REGISTRY"].clone();
    let cache = format!("{registry}/{}:cache", unique_repo("platforms"));
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {registry}/library/busybox:latest\nRUN uname -m > /arch\nRUN echo two > /two\n"),
    )
    .unwrap();
    let log = Runner::new(&[], &[]).build_ok(
        ctx.path(),
        &["--platform", "linux/amd64,linux/arm64", "--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    assert_eq!(counts(&log), (4, 0), "{log}");
    for platform in ["linux/arm64", "linux/amd64"] {
        let out = tempfile::tempdir().unwrap();
        let log = Runner::new(&[], &[]).build_ok(
            ctx.path(),
            &[
                "--platform",
                platform,
                "--cache-from",
                &cache,
                "-o",
                &format!("type=local,dest={}", out.path().display()),
            ],
        );
        assert_eq!(counts(&log), (0, 2), "{platform}: {log}");
        let arch = std::fs::read_to_string(out.path().join("arch")).unwrap();
        let want = if platform.ends_with("arm64") { "aarch64" } else { "x86_64" };
        assert_eq!(arch.trim(), want, "{platform}: the platform's own layers");
    }
}

#[test]
fn a_tampered_blob_is_refused_and_its_step_runs() {
    let Some(env) = test_env() else { return };
    let ctx = tempfile::tempdir().unwrap();
    let df = |last: &str| {
        format!(
            "FROM {}/library/busybox:latest\nRUN echo trusted > /made\nRUN echo {last} > /last\n",
            env["RIG_REGISTRY"]
        )
    };
    std::fs::write(ctx.path().join("Dockerfile"), df("one")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("cache");
    Runner::new(&[], &[]).build_ok(ctx.path(), &["--cache-to", &format!("type=local,dest={},mode=max", dir.display())]);
    // The layer of `RUN echo trusted`: the one whose tar holds `made`.
    let cfg: serde_json::Value = {
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        let m = index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(m)).unwrap()).unwrap()
    };
    let mut target = None;
    for l in cfg["layers"].as_array().unwrap() {
        let d = l["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
        let listing = Command::new("tar").arg("-tzf").arg(dir.join("blobs/sha256").join(&d)).output().unwrap();
        if String::from_utf8_lossy(&listing.stdout).lines().any(|n| n == "made") {
            target = Some(d);
        }
    }
    let target = target.expect("the layer of RUN echo trusted");
    // Same name, other content: a gzip tar that plants a file.
    let evil = tempfile::tempdir().unwrap();
    std::fs::write(evil.path().join("made"), "planted\n").unwrap();
    let st = Command::new("tar")
        .arg("-czf")
        .arg(dir.join("blobs/sha256").join(&target))
        .arg("-C")
        .arg(evil.path())
        .arg("made")
        .status()
        .unwrap();
    assert!(st.success());

    // The last step changed: it runs on the tampered record's layers, which are refused.
    std::fs::write(ctx.path().join("Dockerfile"), df("two")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let log = Runner::new(&[], &[]).build_ok(
        ctx.path(),
        &[
            "--cache-from",
            &format!("type=local,src={}", dir.display()),
            "-o",
            &format!("type=local,dest={}", out.path().display()),
        ],
    );
    assert!(log.contains("was refused") && log.contains(&target[..12]), "the refusal names the blob: {log}");
    assert_eq!(counts(&log), (2, 0), "a refused record is not counted as cached: {log}");
    assert_eq!(step_state(&log, "RUN echo two"), "ran", "{log}");
    assert!(log.contains("running the step"), "{log}");
    assert_eq!(std::fs::read_to_string(out.path().join("made")).unwrap(), "trusted\n", "{log}");
}

#[test]
fn missing_caches_warn_failed_exports_fail_unless_ignored() {
    let Some(env) = test_env() else { return };
    let registry = env["RIG_REGISTRY"].clone();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {registry}/library/busybox:latest\nRUN echo x > /x\n"))
        .unwrap();
    let r = Runner::new(&[], &[]);
    let missing = format!("{registry}/{}:nothing-here", unique_repo("missing"));
    let log = r.build_ok(ctx.path(), &["--cache-from", &missing]);
    assert!(log.contains(&format!("warning: --cache-from {missing}")), "{log}");

    // An export that cannot reach its registry fails the build, naming it...
    let o = r.build(ctx.path(), &["--cache-to", "type=registry,ref=127.0.0.1:1/nowhere:cache"]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("--cache-to 127.0.0.1:1/nowhere:cache"), "{log}");
    assert_no_panic(&log);
    // ... unless told to go on.
    let log = r.build_ok(ctx.path(), &["--cache-to", "type=registry,ref=127.0.0.1:1/nowhere:cache,ignore-error=true"]);
    assert!(log.contains("ignored: ignore-error=true"), "{log}");

    // What strata does not have is a usage error, never ignored.
    for (flag, spec, says) in [
        ("--cache-to", "type=gha", "type=gha is not supported by strata (it has registry, local and inline)"),
        ("--cache-from", "type=s3,bucket=b", "type=s3 is not supported"),
        ("--cache-to", "type=registry,ref=r/a,oci-mediatypes=false", "oci-mediatypes=false"),
        ("--cache-to", "type=inline,mode=max", "mode=min only"),
    ] {
        let o = r.build(ctx.path(), &[flag, spec]);
        assert_eq!(o.status.code(), Some(2), "{spec}: {}", text(&o));
        assert!(text(&o).contains(says), "{spec}: {}", text(&o));
    }
}

#[test]
fn cache_mounts_over_the_size_cap_are_left_out_by_name() {
    let Some(env) = test_env() else { return };
    let registry = env["RIG_REGISTRY"].clone();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {registry}/library/busybox:latest\n\
             RUN --mount=type=cache,id=small,target=/s --mount=type=cache,id=big,target=/b \
             sh -c 'echo s > /s/f; head -c 300000 /dev/zero > /b/f'\n"
        ),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("c");
    let log = Runner::new(&[], &[]).build_ok(
        ctx.path(),
        &["--cache-to", &format!("type=local,dest={},mounts=true,mounts-max-size=100KB", layout.display())],
    );
    assert!(log.contains("left out: big (300"), "{log}");
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(m)).unwrap()).unwrap();
    let c = manifest["config"]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(c)).unwrap()).unwrap();
    let ids: Vec<&str> = doc["mounts"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["small"], "{doc}");
}

#[test]
fn strata_toml_gives_defaults_the_command_line_overrides() {
    let Some(env) = test_env() else { return };
    let ctx = app_context(&format!("{}/library/busybox:latest", env["RIG_REGISTRY"]));
    let dir = tempfile::tempdir().unwrap();
    let (from_toml, from_flag) = (dir.path().join("toml"), dir.path().join("flag"));
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, format!("[cache]\nto = [\"type=local,dest={},mode=max\"]\n", from_toml.display())).unwrap();
    let global = vec!["--config".to_string(), config.display().to_string()];
    Runner::new(&global, &[]).build_ok(ctx.path(), &[]);
    assert!(from_toml.join("index.json").is_file(), "strata.toml's cache.to was used");
    std::fs::remove_dir_all(&from_toml).unwrap();
    Runner::new(&global, &[])
        .build_ok(ctx.path(), &["--cache-to", &format!("type=local,dest={}", from_flag.display())]);
    assert!(from_flag.join("index.json").is_file(), "the flag's cache was written");
    assert!(!from_toml.exists(), "the flag replaces strata.toml's cache.to");
}
