//! Pushes through the strata binary with a fault-injecting proxy (strata-testsupport)
//! between strata and the registries of the test environment: a push that meets dropped
//! connections in the middle of blob bodies, 500s and 429s still completes, with the same
//! manifest as a push without faults and every blob intact in the registry; a push with a
//! wrong password fails with exit code 1, naming the registry and the reference, before
//! any blob is sent.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use common::*;
use strata_testsupport::fault_proxy::{Fault, Proxy, Seen};

// ---------------------------------------------------------------------------------------
// Helpers

fn strata_with(root: &Path, global: &[&str], args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(strata_bin());
    // One timestamp for every build: two builds of one context are one image.
    cmd.arg("--root").arg(root).args(global).args(args).env("SOURCE_DATE_EPOCH", "0");
    // No credentials from the user's own docker config.
    cmd.env("DOCKER_CONFIG", "/nonexistent-strata-test-docker-config");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run strata")
}

/// A context: a Dockerfile that copies a file of `noise` random bytes and runs one step.
fn noise_context(noise: u64, seed: u64) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write_noise(&d.path().join("noise.bin"), noise, seed);
    std::fs::write(d.path().join("Dockerfile"), "FROM busybox\nCOPY noise.bin /noise.bin\nRUN echo pushed > /pushed\n")
        .unwrap();
    d
}

fn push_build(
    root: &Path,
    env: &HashMap<String, String>,
    ctx: &Path,
    reference: &str,
    meta: &Path,
    extra_env: &[(&str, &str)],
) -> Output {
    strata_with(
        root,
        &["--tls-ca", &env["RIG_CA"]],
        &[
            "build",
            "--progress=plain",
            "--build-context",
            &busybox_context(env),
            "--push",
            "-t",
            reference,
            "--metadata-file",
            meta.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
        extra_env,
    )
}

fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// The raw manifest of `reference` as skopeo reads it.
fn skopeo_raw(reference: &str, flags: &[String]) -> Output {
    Command::new("skopeo").args(["inspect", "--raw"]).args(flags).arg(format!("docker://{reference}")).output().unwrap()
}

/// GET a blob straight from a plain registry (curl) into `dest`.
fn get_blob(registry: &str, repo: &str, digest: &str, dest: &Path) {
    let o = Command::new("curl")
        .args(["-sSf", "--max-time", "120", "-o"])
        .arg(dest)
        .arg(format!("http://{registry}/v2/{repo}/blobs/{digest}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "GET blob {digest} of {repo}: {}", text(&o));
}

// ---------------------------------------------------------------------------------------

#[test]
fn push_through_a_faulty_proxy_completes_with_the_same_manifest_and_intact_blobs() {
    let Some(env) = test_env() else { return };
    let plain = env["RIG_REGISTRY"].clone();
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // 20 MB of incompressible data: a chunked upload (PATCHes); busybox and the RUN
    // layer and the config: monolithic uploads (a PUT with a body).
    let ctx = noise_context(20_000_000, 0x5eed_f00d);

    let manifest_puts = Arc::new(AtomicUsize::new(0));
    let status_checks = Arc::new(AtomicUsize::new(0));
    let monolithic = Arc::new(AtomicUsize::new(0));
    let (mp, sc, mono) = (manifest_puts.clone(), status_checks.clone(), monolithic.clone());
    let plan = Arc::new(move |req: &Seen, n: usize| {
        let blob_upload = req.target.contains("/blobs/uploads/");
        match req.method.as_str() {
            // A 429 on a blob check.
            "HEAD" if n == 1 => Fault::Respond(429),
            // 500 and 429 on upload session starts.
            "POST" if n == 0 => Fault::Respond(500),
            "POST" if n == 3 => Fault::Respond(429),
            // The connection drops 1 MiB into the first chunk of the big layer.
            "PATCH" if n == 0 => Fault::CutBody(1 << 20),
            // A 500 for a later chunk (the registry never sees it).
            "PATCH" if n == 2 => Fault::Respond(500),
            // The first status check of an interrupted session fails.
            "GET" if blob_upload && sc.fetch_add(1, Ordering::SeqCst) == 0 => Fault::Respond(503),
            // The first monolithic upload drops halfway through its body.
            "PUT"
                if blob_upload
                    && req.content_length.unwrap_or(0) > 1000
                    && mono.fetch_add(1, Ordering::SeqCst) == 0 =>
            {
                Fault::CutBody(req.content_length.unwrap() / 2)
            }
            // The first manifest PUT gets a 500.
            "PUT" if req.target.contains("/manifests/") && mp.fetch_add(1, Ordering::SeqCst) == 0 => {
                Fault::Respond(500)
            }
            _ => Fault::Pass,
        }
    });
    let proxy = Proxy::http(&plain, move |req, n| plan(req, n));
    let repo = unique_repo("faulty");
    let through_proxy = format!("{}/{repo}:1", proxy.addr);
    let meta1 = work.path().join("meta1.json");
    let started = Instant::now();
    let o = push_build(root.path(), &env, ctx.path(), &through_proxy, &meta1, &[]);
    let out = text(&o);
    let seen = proxy.stats.seen();
    let faults: Vec<(String, String, Fault)> =
        seen.iter().filter(|s| s.fault != Fault::Pass).map(|s| (s.method.clone(), s.target.clone(), s.fault)).collect();
    eprintln!("push through the proxy: {:?}, {} requests, faults: {faults:#?}", started.elapsed(), seen.len());
    assert!(o.status.success(), "the push through the faulty proxy failed: {out}");
    drop(proxy);

    // The faults did happen, and strata noticed them.
    let has = |method: &str, pred: &dyn Fn(Fault) -> bool| faults.iter().any(|(m, _, f)| m == method && pred(*f));
    assert!(has("PATCH", &|f| matches!(f, Fault::CutBody(_))), "a chunk was cut: {faults:?}");
    assert!(has("PUT", &|f| matches!(f, Fault::CutBody(_))), "a monolithic upload was cut: {faults:?}");
    assert!(has("POST", &|f| f == Fault::Respond(500)) && has("HEAD", &|f| f == Fault::Respond(429)), "{faults:?}");
    assert!(has("PUT", &|f| f == Fault::Respond(500)), "the manifest PUT got a 500: {faults:?}");
    assert!(out.contains("retrying in"), "the progress reports the interrupted uploads: {out}");
    assert!(manifest_puts.load(Ordering::SeqCst) >= 2, "the manifest was sent again after the 500");

    // The same image pushed straight to the registry, without faults.
    let direct_repo = unique_repo("direct");
    let direct = format!("{plain}/{direct_repo}:1");
    let meta2 = work.path().join("meta2.json");
    let o = push_build(root.path(), &env, ctx.path(), &direct, &meta2, &[]);
    assert!(o.status.success(), "direct push: {}", text(&o));
    let (d1, d2) =
        (json_file(&meta1)["containerimage.digest"].clone(), json_file(&meta2)["containerimage.digest"].clone());
    assert_eq!(d1, d2, "the same image either way");
    let flags = vec!["--tls-verify=false".to_string()];
    // Read straight from the registry (not through the proxy).
    let raw_faulty = skopeo_raw(&format!("{plain}/{repo}:1"), &flags);
    assert!(raw_faulty.status.success(), "{}", text(&raw_faulty));
    let raw_direct = skopeo_raw(&direct, &flags);
    assert!(raw_direct.status.success(), "{}", text(&raw_direct));
    assert_eq!(sha256_bytes(&raw_faulty.stdout), d1.as_str().unwrap(), "the faulty push stored the reported manifest");
    assert_eq!(raw_faulty.stdout, raw_direct.stdout, "both pushes stored the same manifest bytes");

    // Every blob of the manifest, fetched from the registry, hashes to its digest.
    let manifest: Value = serde_json::from_slice(&raw_faulty.stdout).unwrap();
    let mut blobs: Vec<&Value> = vec![&manifest["config"]];
    blobs.extend(manifest["layers"].as_array().unwrap());
    assert_eq!(blobs.len(), 4, "config + busybox + COPY + RUN: {manifest}");
    let mut total = 0;
    for b in &blobs {
        let digest = b["digest"].as_str().unwrap();
        let dest = work.path().join(digest.replace(':', "-"));
        get_blob(&plain, &repo, digest, &dest);
        let len = std::fs::metadata(&dest).unwrap().len();
        assert_eq!(Some(len), b["size"].as_u64(), "size of {digest} in the registry");
        assert_eq!(sha256_file(&dest), digest, "content of {digest} in the registry");
        total += len;
        std::fs::remove_file(&dest).unwrap();
    }
    assert!(total > 20_000_000, "{total}");
    // The registry links exactly these blobs to the repository: no partial upload became a blob.
    match registry_storage(&env, &format!("plain-{}", plain.rsplit(':').next().unwrap())) {
        Some(repos) => {
            let layers_dir = repos.join(&repo).join("_layers/sha256");
            let linked: BTreeSet<String> = std::fs::read_dir(&layers_dir)
                .unwrap_or_else(|e| panic!("{}: {e}", layers_dir.display()))
                .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
                .collect();
            let expected: BTreeSet<String> = blobs.iter().map(|b| b["digest"].as_str().unwrap().to_string()).collect();
            assert_eq!(linked, expected, "blobs linked to {repo}");
        }
        None => skipped("the plain registry is not ours (a reused one): its storage NOT inspected"),
    }
}

#[test]
fn wrong_password_push_fails_with_exit_1_before_any_blob_is_sent() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // A 2 MB layer: any blob upload would carry at least that much.
    let ctx = noise_context(2_000_000, 0xbad_5eed);
    let user = env["RIG_USER"].as_str();
    let tls = env["RIG_TLS_REGISTRY"].clone();
    let token = env["RIG_TOKEN_REGISTRY"].clone();
    let good_flags = |registry: &str| skopeo_flags(&env, registry, &work.path().join("certs"));
    let port = |r: &str| r.rsplit(':').next().unwrap().to_string();

    let check_failure = |o: &Output, registry: &str, reference: &str| {
        let t = text(o);
        eprintln!("{}", t.lines().filter(|l| l.contains("error")).collect::<Vec<_>>().join("\n"));
        assert_eq!(o.status.code(), Some(1), "exit code: {t}");
        assert!(t.contains("authentication failed"), "{t}");
        assert!(t.contains(reference), "the message names the reference {reference}: {t}");
        assert!(t.contains(&format!("strata login {registry}")), "the message names the registry {registry}: {t}");
        assert!(!t.contains("panicked"), "{t}");
    };

    // 1. TLS + basic auth, straight to the registry.
    let repo = unique_repo("wrongpw-tls");
    let reference = format!("{tls}/{repo}:v1");
    let cfg = docker_config_with(&[(&tls, user, "not-the-password")]);
    let o = push_build(
        root.path(),
        &env,
        ctx.path(),
        &reference,
        &work.path().join("m1.json"),
        &[("DOCKER_CONFIG", cfg.path().to_str().unwrap())],
    );
    check_failure(&o, &tls, &reference);
    let r = skopeo_raw(&reference, &good_flags(&tls));
    assert!(!r.status.success(), "nothing was pushed to {reference}");
    let storage = registry_storage(&env, &format!("tls-{}", port(&tls)));
    match &storage {
        Some(repos) => assert!(!repos.join(&repo).exists(), "the registry has no upload or blob for {repo}"),
        None => skipped("the TLS registry is not ours (a reused one): its storage NOT inspected"),
    }

    // 2. TLS + basic auth through a byte-counting TCP relay (the certificate is for
    //    127.0.0.1, whatever the port): what strata sent is far less than one blob.
    let relay = Proxy::raw(&tls);
    let repo = unique_repo("wrongpw-tls-relay");
    let reference = format!("{}/{repo}:v1", relay.addr);
    let cfg = docker_config_with(&[(&relay.addr, user, "not-the-password")]);
    let o = push_build(
        root.path(),
        &env,
        ctx.path(),
        &reference,
        &work.path().join("m2.json"),
        &[("DOCKER_CONFIG", cfg.path().to_str().unwrap())],
    );
    check_failure(&o, &relay.addr, &reference);
    let sent = relay.stats.bytes_up.load(Ordering::SeqCst);
    eprintln!(
        "TLS relay: {sent} bytes from strata in {} connections",
        relay.stats.raw_connections.load(Ordering::SeqCst)
    );
    assert!(relay.stats.raw_connections.load(Ordering::SeqCst) >= 1, "strata went through the relay");
    assert!(sent < 100_000, "{sent} bytes sent: a blob body went out");
    if let Some(repos) = &storage {
        assert!(!repos.join(&repo).exists(), "the registry has no upload or blob for {repo}");
    }
    drop(relay);

    // 3. Token auth through a logging HTTP proxy: no upload request at all.
    let proxy = Proxy::http(&token, |_: &Seen, _| Fault::Pass);
    let repo = unique_repo("wrongpw-token");
    let reference = format!("{}/{repo}:v1", proxy.addr);
    let cfg = docker_config_with(&[(&proxy.addr, user, "not-the-password")]);
    let o = push_build(
        root.path(),
        &env,
        ctx.path(),
        &reference,
        &work.path().join("m3.json"),
        &[("DOCKER_CONFIG", cfg.path().to_str().unwrap())],
    );
    let seen = proxy.stats.seen();
    eprintln!("token proxy saw: {:#?}", seen.iter().map(|s| format!("{} {}", s.method, s.target)).collect::<Vec<_>>());
    check_failure(&o, &proxy.addr, &reference);
    assert!(!seen.is_empty(), "strata went through the proxy");
    let uploads: Vec<&Seen> = seen
        .iter()
        .filter(|s| matches!(s.method.as_str(), "POST" | "PUT" | "PATCH") && s.target.contains("/blobs/"))
        .collect();
    assert!(uploads.is_empty(), "blob upload requests reached the registry: {uploads:?}");
    assert!(seen.iter().all(|s| matches!(s.method.as_str(), "GET" | "HEAD")), "{seen:?}");
    let r = skopeo_raw(&format!("{token}/{repo}:v1"), &good_flags(&token));
    assert!(!r.status.success(), "nothing was pushed to {repo}");
    match registry_storage(&env, &format!("token-{}", port(&token))) {
        Some(repos) => assert!(!repos.join(&repo).exists(), "the registry has no upload or blob for {repo}"),
        None => skipped("the token registry is not ours (a reused one): its storage NOT inspected"),
    }

    // The right password through the same proxy works (the failures were the password's).
    let cfg_ok = docker_config_with(&[(&proxy.addr, user, &env["RIG_PASS"])]);
    let o = push_build(
        root.path(),
        &env,
        ctx.path(),
        &reference,
        &work.path().join("m5.json"),
        &[("DOCKER_CONFIG", cfg_ok.path().to_str().unwrap())],
    );
    assert!(o.status.success(), "push with the right password: {}", text(&o));
    let r = skopeo_raw(&format!("{token}/{repo}:v1"), &good_flags(&token));
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(
        sha256_bytes(&r.stdout),
        json_file(&work.path().join("m5.json"))["containerimage.digest"].as_str().unwrap()
    );
}
