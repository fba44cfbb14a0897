//! Multi-arch across runners (issue #18), through the binary: each platform built in its
//! own fresh root and pushed by digest (`-o type=image,push-by-digest=true,...`), then
//! merged by `strata imagetools create` into one index; read back with skopeo and umoci.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use common::*;

const EPOCH: &str = "1700000000";

/// Global flags and environment to reach `registry` (CA and credentials for TLS).
fn access(env: &HashMap<String, String>, registry: &str) -> (Vec<String>, tempfile::TempDir) {
    let cfg = docker_config_with(&[(&env["RIG_TLS_REGISTRY"], &env["RIG_USER"], &env["RIG_PASS"])]);
    let global =
        if registry == env["RIG_TLS_REGISTRY"] { vec!["--tls-ca".to_string(), env["RIG_CA"].clone()] } else { vec![] };
    (global, cfg)
}

fn run(root: &Path, global: &[String], cfg: &Path, args: &[&str]) -> Output {
    Command::new(strata_bin())
        .arg("--root")
        .arg(root)
        .args(global)
        .args(args)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("DOCKER_CONFIG", cfg)
        .env("RUST_BACKTRACE", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run strata")
}

/// `strata imagetools create --progress=plain -t TAG SOURCE...` with its store at `root`.
fn merge(root: &Path, global: &[String], cfg: &Path, tag: &str, sources: &[String]) -> Output {
    let mut args = vec!["imagetools", "create", "--progress=plain", "-t", tag];
    args.extend(sources.iter().map(String::as_str));
    run(root, global, cfg, &args)
}

fn context(registry: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {registry}/library/busybox:latest\nRUN uname -m > /arch\n"),
    )
    .unwrap();
    ctx
}

/// One runner: a fresh root builds `platform` and pushes it by digest to `repo`;
/// returns the digest from --metadata-file (and checks image.name).
fn build_by_digest(global: &[String], cfg: &Path, ctx: &Path, platform: &str, repo: &str) -> String {
    let root = tempfile::tempdir().unwrap();
    let meta = root.path().join("meta.json");
    let out = format!("type=image,name={repo},push-by-digest=true,name-canonical=true,push=true");
    let o = run(
        root.path(),
        global,
        cfg,
        &[
            "build",
            "--progress=plain",
            "--platform",
            platform,
            "-o",
            &out,
            "--metadata-file",
            meta.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{platform}: {}", text(&o));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let digest = m["containerimage.digest"].as_str().unwrap().to_string();
    assert_eq!(m["image.name"], format!("{repo},{repo}@{digest}"), "{m}");
    assert!(text(&o).contains(&format!("stored as {repo}@{digest}")), "pushed untagged: {}", text(&o));
    digest
}

fn skopeo_raw(env: &HashMap<String, String>, image: &str) -> serde_json::Value {
    let registry = image.split('/').next().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let o = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .args(skopeo_flags(env, registry, certs.path()))
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo inspect {image}: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// skopeo copies one architecture of `image` to a layout; umoci unpacks it: /arch.
fn arch_of(env: &HashMap<String, String>, image: &str, arch: &str) -> String {
    let registry = image.split('/').next().unwrap();
    let work = tempfile::tempdir().unwrap();
    let flags: Vec<String> = skopeo_flags(env, registry, &work.path().join("certs"))
        .into_iter()
        .map(|f| match f.as_str() {
            "--tls-verify=false" => "--src-tls-verify=false".into(),
            "--cert-dir" => "--src-cert-dir".into(),
            "--creds" => "--src-creds".into(),
            _ => f,
        })
        .collect();
    let layout = work.path().join("layout");
    let o = Command::new("skopeo")
        .args(["copy", "--override-arch", arch])
        .args(&flags)
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:img", layout.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo copy {arch}: {}", text(&o));
    let bundle = work.path().join("bundle");
    let o = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:img", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "umoci: {}", text(&o));
    std::fs::read_to_string(bundle.join("rootfs/arch")).unwrap().trim().to_string()
}

fn two_runners_then_merge(env: &HashMap<String, String>, registry: &str) {
    let (global, cfg) = access(env, registry);
    let ctx = context(registry);
    let repo = format!("{registry}/{}", unique_repo("matrix"));
    let amd = build_by_digest(&global, cfg.path(), ctx.path(), "linux/amd64", &repo);
    let arm = build_by_digest(&global, cfg.path(), ctx.path(), "linux/arm64", &repo);

    let merger = tempfile::tempdir().unwrap();
    let o = merge(
        merger.path(),
        &global,
        cfg.path(),
        &format!("{repo}:1"),
        &[format!("{repo}@{amd}"), format!("{repo}@{arm}")],
    );
    assert!(o.status.success(), "{}", text(&o));
    let index = skopeo_raw(env, &format!("{repo}:1"));
    let listed: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (m["digest"].as_str().unwrap().to_string(), m["platform"]["architecture"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(listed, vec![(amd.clone(), "amd64".to_string()), (arm.clone(), "arm64".to_string())], "{index}");
    assert_eq!(arch_of(env, &format!("{repo}:1"), "amd64"), "x86_64");
    assert_eq!(arch_of(env, &format!("{repo}:1"), "arm64"), "aarch64", "the arm64 image ran uname under QEMU");

    // The one-process build of both platforms is the same image.
    let one = tempfile::tempdir().unwrap();
    let meta = one.path().join("meta.json");
    let o = run(
        one.path(),
        &global,
        cfg.path(),
        &[
            "build",
            "--progress=plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "--push",
            "-t",
            &format!("{repo}:one"),
            "--metadata-file",
            meta.to_str().unwrap(),
            ctx.path().to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let one_digest = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&meta).unwrap()).unwrap()
        ["containerimage.digest"]
        .as_str()
        .unwrap()
        .to_string();
    let merged_digest = sha256_bytes(&{
        let registry = repo.split('/').next().unwrap();
        let certs = tempfile::tempdir().unwrap();
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .args(skopeo_flags(env, registry, certs.path()))
            .arg(format!("docker://{repo}:1"))
            .output()
            .unwrap()
            .stdout
    });
    assert_eq!(merged_digest, one_digest, "two runners and one process give the same index");
}

#[test]
fn two_runners_push_by_digest_and_merge_on_the_plain_registry() {
    let Some(env) = test_env() else { return };
    two_runners_then_merge(&env, &env["RIG_REGISTRY"].clone());
}

#[test]
fn two_runners_push_by_digest_and_merge_on_the_tls_registry() {
    let Some(env) = test_env() else { return };
    two_runners_then_merge(&env, &env["RIG_TLS_REGISTRY"].clone());
}

#[test]
fn sources_in_two_repositories_are_merged_into_a_third_by_mounts() {
    let Some(env) = test_env() else { return };
    let registry = env["RIG_REGISTRY"].clone();
    let (global, cfg) = access(&env, &registry);
    let ctx = context(&registry);
    let (r1, r2, r3) = (
        format!("{registry}/{}", unique_repo("src-a")),
        format!("{registry}/{}", unique_repo("src-b")),
        format!("{registry}/{}", unique_repo("merged")),
    );
    let amd = build_by_digest(&global, cfg.path(), ctx.path(), "linux/amd64", &r1);
    let arm = build_by_digest(&global, cfg.path(), ctx.path(), "linux/arm64", &r2);
    let merger = tempfile::tempdir().unwrap();
    let o =
        merge(merger.path(), &global, cfg.path(), &format!("{r3}:1"), &[format!("{r1}@{amd}"), format!("{r2}@{arm}")]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    // Every blob (2 configs, 2 base layers, 2 RUN layers) mounted, none sent.
    assert_eq!(log.matches("mounted from").count(), 6, "{log}");
    assert!(!log.lines().any(|l| l.contains(" / ") && l.contains("pushing sha256:")), "a blob was uploaded: {log}");
    // The merger's store holds manifests and configs only: no layer was downloaded.
    let held: u64 = std::fs::read_dir(merger.path().join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(held < 64 << 10, "the merger holds {held} bytes");
    assert_eq!(arch_of(&env, &format!("{r3}:1"), "arm64"), "aarch64");
}

#[test]
fn dry_run_inspect_and_annotations() {
    let Some(env) = test_env() else { return };
    let registry = env["RIG_REGISTRY"].clone();
    let (global, cfg) = access(&env, &registry);
    let ctx = context(&registry);
    let repo = format!("{registry}/{}", unique_repo("dry"));
    let amd = build_by_digest(&global, cfg.path(), ctx.path(), "linux/amd64", &repo);
    let arm = build_by_digest(&global, cfg.path(), ctx.path(), "linux/arm64", &repo);
    let root = tempfile::tempdir().unwrap();
    let sources = [format!("{repo}@{amd}"), format!("{repo}@{arm}")];
    let o = run(
        root.path(),
        &global,
        cfg.path(),
        &[
            "imagetools",
            "create",
            "--dry-run",
            "-t",
            &format!("{repo}:dry"),
            "--annotation",
            "org.opencontainers.image.title=merged",
            "--annotation",
            "manifest-descriptor[linux/arm64]:note=arm",
            &sources[0],
            &sources[1],
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let printed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(printed["annotations"]["org.opencontainers.image.title"], "merged", "{printed}");
    assert_eq!(printed["manifests"][1]["annotations"]["note"], "arm", "{printed}");
    assert!(printed["manifests"][0]["annotations"].get("note").is_none(), "{printed}");
    let certs = tempfile::tempdir().unwrap();
    let o = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .args(skopeo_flags(&env, &registry, certs.path()))
        .arg(format!("docker://{repo}:dry"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "--dry-run pushed nothing");

    // Pushed for real, then inspected: text, json, raw.
    let o = run(
        root.path(),
        &global,
        cfg.path(),
        &["imagetools", "create", "-t", &format!("{repo}:2"), &sources[0], &sources[1]],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(root.path(), &global, cfg.path(), &["imagetools", "inspect", &format!("{repo}:2")]);
    let shown = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        shown.starts_with(&format!("Name:      {repo}:2\nMediaType: application/vnd.oci.image.index.v1+json\n")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("  Name:        {repo}@{arm}\n")) && shown.contains("  Platform:    linux/arm64\n"),
        "{shown}"
    );
    let o = run(root.path(), &global, cfg.path(), &["imagetools", "inspect", "--format", "json", &format!("{repo}:2")]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["manifests"][0]["digest"], amd.as_str(), "{json}");
    assert_eq!(json["manifests"][0]["platform"], "linux/amd64", "{json}");
    let o = run(root.path(), &global, cfg.path(), &["imagetools", "inspect", "--raw", &format!("{repo}:2")]);
    assert_eq!(sha256_bytes(&o.stdout), json["digest"].as_str().unwrap(), "--raw is the bytes the digest names");
    // A single manifest: its platform, from its config.
    let o = run(root.path(), &global, cfg.path(), &["imagetools", "inspect", &format!("{repo}@{arm}")]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("Platform:  linux/arm64\n"), "{}", text(&o));
}

#[test]
fn bad_sources_are_clear_errors() {
    let Some(env) = test_env() else { return };
    let registry = env["RIG_REGISTRY"].clone();
    let (global, cfg) = access(&env, &registry);
    let ctx = context(&registry);
    let repo = format!("{registry}/{}", unique_repo("bad"));
    let amd = build_by_digest(&global, cfg.path(), ctx.path(), "linux/amd64", &repo);
    // Another amd64 image: a platform given twice.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {registry}/library/busybox:latest\nRUN echo other > /other\n"),
    )
    .unwrap();
    let other = build_by_digest(&global, cfg.path(), ctx.path(), "linux/amd64", &repo);
    let root = tempfile::tempdir().unwrap();
    let target = format!("{repo}:x");
    let create = |sources: &[&str]| {
        let mut args = vec!["imagetools", "create", "-t", &target];
        args.extend_from_slice(sources);
        let o = run(root.path(), &global, cfg.path(), &args);
        assert_no_panic(&text(&o));
        o
    };
    let (a, b) = (format!("{repo}@{amd}"), format!("{repo}@{other}"));
    let o = create(&[&a, &b]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("platform linux/amd64 is given twice"), "{}", text(&o));

    // A digest the repository does not have.
    let missing = format!("{repo}@sha256:{}", "0".repeat(64));
    let o = create(&[&a, &missing]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(&missing) || text(&o).contains(&"0".repeat(64)), "names it: {}", text(&o));

    // A blob, not a manifest: the image's config.
    let manifest = skopeo_raw(&env, &a);
    let config = format!("{repo}@{}", manifest["config"]["digest"].as_str().unwrap());
    let o = create(&[&config]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(&config[config.len() - 20..]), "names it: {}", text(&o));

    // No -t: usage.
    let o = run(root.path(), &global, cfg.path(), &["imagetools", "create", &a]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
