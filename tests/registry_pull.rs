//! Base images pulled through the binary from the three registries of the test
//! environment (plain, TLS + basic auth, token auth), by tag, digest and platform, and
//! the errors for bad credentials and missing tags.

mod common;

use std::process::Command;

use common::*;

/// Build `FROM from` + `RUN uname -m > /arch` in a fresh root, with the image's file
/// system written to a local directory; returns the output and what /arch says (what
/// was pulled ran: the right platform's image, whole).
fn build_from(from: &str, global: &[&str], envs: &[(&str, &str)]) -> (std::process::Output, String) {
    build_for(from, global, &[], envs)
}

/// [`build_from`] with `build` flags too (`--platform`).
fn build_for(from: &str, global: &[&str], build: &[&str], envs: &[(&str, &str)]) -> (std::process::Output, String) {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {from}\nRUN uname -m > /arch\n")).unwrap();
    let mut cmd = Command::new(strata_bin());
    cmd.arg("--root").arg(root.path()).args(global).args(["build", "--progress=plain"]).args(build).arg("-o");
    cmd.arg(format!("type=local,dest={}", out.path().display())).arg(ctx.path());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    let arch = std::fs::read_to_string(out.path().join("arch")).unwrap_or_default().trim().to_string();
    (o, arch)
}

/// A DOCKER_CONFIG directory with one registry's credentials.
fn docker_config(user: &str, pass: &str, registry: &str) -> tempfile::TempDir {
    docker_config_with(&[(registry, user, pass)])
}

#[test]
fn pulls_from_plain_tls_and_token_registries() {
    let Some(env) = test_env() else { return };
    let plain = format!("{}/library/busybox:latest", env["RIG_REGISTRY"]);
    let (o, arch) = build_from(&plain, &[], &[]);
    assert!(o.status.success(), "plain: {}", text(&o));
    assert_eq!(arch, "x86_64", "plain: the amd64 image of the index ran");

    let tls = &env["RIG_TLS_REGISTRY"];
    let cfg = docker_config(&env["RIG_USER"], &env["RIG_PASS"], tls);
    let (o, arch) = build_from(
        &format!("{tls}/library/busybox:latest"),
        &["--tls-ca", &env["RIG_CA"]],
        &[("DOCKER_CONFIG", cfg.path().to_str().unwrap())],
    );
    assert!(o.status.success(), "tls + basic auth: {}", text(&o));
    assert_eq!(arch, "x86_64", "tls + basic auth");

    let token = format!("{}/library/busybox:latest", env["RIG_TOKEN_REGISTRY"]);
    let (o, arch) = build_from(&token, &[], &[]);
    assert!(o.status.success(), "token auth: {}", text(&o));
    assert_eq!(arch, "x86_64", "token auth");
    // The arm64 image of the same index, run under QEMU.
    let (o, arch) = build_for(&token, &[], &["--platform", "linux/arm64"], &[]);
    assert!(o.status.success(), "token auth, arm64: {}", text(&o));
    assert_eq!(arch, "aarch64", "token auth, arm64");
}

#[test]
fn arm64_variant_and_digest_reference() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let reg = &env["RIG_REGISTRY"];
    // The arm64 manifest is selected from the index (the RUN is emulated when QEMU is registered).
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {reg}/library/busybox:latest\nCOPY Dockerfile /\n"))
        .unwrap();
    let out = ctx.path().join("img.tar");
    let o = strata(
        root.path(),
        &[
            "build",
            "--platform",
            "linux/arm64",
            "-o",
            &format!("type=oci,dest={}", out.display()),
            ctx.path().to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let work = tempfile::tempdir().unwrap();
    Command::new("tar").arg("-xf").arg(&out).arg("-C").arg(work.path()).status().unwrap();
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.path().join("index.json")).unwrap()).unwrap();
    let m = &index["manifests"][0];
    assert_eq!(m["platform"]["architecture"], "arm64", "{index}");

    // A digest reference: resolve the index digest with skopeo, then build FROM name@digest.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reg}/library/busybox:latest"))
        .output()
        .unwrap();
    assert!(raw.status.success());
    let digest = format!("sha256:{}", sha256_hex(&raw.stdout));
    let (o, _) = build_from(&format!("{reg}/library/busybox@{digest}"), &[], &[]);
    assert!(o.status.success(), "digest reference: {}", text(&o));
}

fn sha256_hex(b: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b)?;
            c.wait_with_output()
        });
    String::from_utf8_lossy(&out.unwrap().stdout).split_whitespace().next().unwrap().to_string()
}

#[test]
fn wrong_password_and_missing_tag_fail_with_exit_1_naming_registry_and_reference() {
    let Some(env) = test_env() else { return };
    let tls = &env["RIG_TLS_REGISTRY"];
    let cfg = docker_config(&env["RIG_USER"], "wrong-password", tls);
    let (o, _) = build_from(
        &format!("{tls}/library/busybox:latest"),
        &["--tls-ca", &env["RIG_CA"]],
        &[("DOCKER_CONFIG", cfg.path().to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains(tls.as_str()) && t.contains("library/busybox"), "{t}");
    assert!(t.contains("authentication failed"), "{t}");
    assert!(!t.contains("panicked"), "{t}");

    let reg = &env["RIG_REGISTRY"];
    let (o, _) = build_from(&format!("{reg}/library/busybox:no-such-tag"), &[], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("no-such-tag") && t.contains(reg.as_str()), "{t}");
}

/// `--pull=always` downloads the base image's blobs again (verified) instead of trusting
/// the store; the default (`missing`) only re-resolves the tag and reuses them.
#[test]
fn pull_always_downloads_the_blobs_again() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let from = format!("{}/library/busybox:latest", env["RIG_REGISTRY"]);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {from}\nRUN uname -m > /arch\n")).unwrap();
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "--progress=plain"];
        args.extend_from_slice(extra);
        args.push(ctx.path().to_str().unwrap());
        strata(root.path(), &args)
    };
    let o = build(&[]);
    assert!(o.status.success(), "{}", text(&o));
    // Damage every stored blob larger than a config (the layers): a build that trusts
    // the store leaves them so; one that downloads again puts the right bytes back.
    let blobs = root.path().join("blobs/sha256");
    let damaged: Vec<std::path::PathBuf> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::metadata(p).unwrap().len() > 100_000)
        .collect();
    assert!(!damaged.is_empty(), "no layer blob in {}", blobs.display());
    for p in &damaged {
        std::fs::write(p, b"damaged").unwrap();
    }
    let o = build(&[]);
    assert!(o.status.success(), "{}", text(&o));
    for p in &damaged {
        assert_eq!(std::fs::read(p).unwrap(), b"damaged", "--pull=missing downloaded {} again", p.display());
    }
    let o = build(&["--pull=always"]);
    assert!(o.status.success(), "{}", text(&o));
    for p in &damaged {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(sha256_file(p), format!("sha256:{name}"), "--pull=always did not download {} again", p.display());
    }
}
