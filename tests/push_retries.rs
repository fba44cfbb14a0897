//! Pushes and pulls that survive a flaky network (issue #19): a 60 MB layer through a
//! TCP proxy (strata-testsupport) that cuts connections in the middle of the transfer.
//! The push keeps what the registry accepted, resends from there on fresh
//! connections, in smaller chunks when a whole chunk cannot get through; an image
//! pushed through cuts is the image pushed without them (skopeo reads it back and
//! verifies every blob). A network that cuts every connection fails in bounded time
//! with a message that says how many attempts, how many bytes the registry has, and
//! the last error, and leaves nothing half-written in the store. A build cache goes up
//! and comes down through the same cuts (`--cache-to` / `--cache-from`).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use strata_testsupport::fault_proxy::{Cuts, Direction, Fault, Proxy};

const LAYER: u64 = 60_000_000;

/// A root holding `big:1`: scratch plus a 60 MB incompressible file.
fn big_image() -> (tempfile::TempDir, tempfile::TempDir) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY big /big\n").unwrap();
    write_noise(&ctx.path().join("big"), LAYER, 19);
    let root = tempfile::tempdir().unwrap();
    let o = strata(root.path(), &["build", "--progress=plain", "-t", "big:1", ctx.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    (root, ctx)
}

/// `strata push` of `big:1` as `target`; the output, how long it took, and the digest it
/// printed.
fn push(root: &Path, target: &str) -> (Output, Duration, Option<String>) {
    let o = strata(root, &["tag", "big:1", target]);
    assert!(o.status.success(), "{}", text(&o));
    let started = Instant::now();
    let o = strata(root, &["push", "--progress=plain", target]);
    let took = started.elapsed();
    assert_no_panic(&text(&o));
    let digest =
        String::from_utf8_lossy(&o.stdout).split_whitespace().find(|w| w.starts_with("sha256:")).map(String::from);
    (o, took, digest)
}

/// skopeo (an independent client) copies `reference` out of the plain registry,
/// verifying every blob against its digest.
fn skopeo_copies(reference: &str) {
    let dest = tempfile::tempdir().unwrap();
    let o = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:x", dest.path().display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo copy {reference}: {}", text(&o));
}

fn cuts_up(after: &[u64]) -> Cuts {
    Cuts { direction: Direction::Up, after: after.to_vec(), always: None }
}

#[test]
fn a_push_through_cut_connections_completes_with_the_clean_push_digest() {
    let env = test_env().expect("the test environment (tests/setup) is required");
    let (root, _ctx) = big_image();
    let registry = env["RIG_REGISTRY"].clone();
    // A clean push first: the reference digest and time.
    let clean = format!("{registry}/{}:1", unique_repo("clean"));
    let (o, clean_took, clean_digest) = push(root.path(), &clean);
    assert!(o.status.success(), "{}", text(&o));
    let clean_digest = clean_digest.expect("push prints the digest");

    for (label, cuts) in [
        ("3 cuts", vec![300_000, 1_500_000, 3_000_000]),
        (
            "10 cuts",
            vec![200_000, 2_500_000, 700_000, 4_000_000, 350_000, 1_200_000, 250_000, 3_300_000, 900_000, 500_000],
        ),
    ] {
        let proxy = Proxy::cutting(&registry, cuts_up(&cuts));
        let repo = unique_repo("cut");
        let (o, took, digest) = push(root.path(), &format!("{}/{repo}:1", proxy.addr));
        let log = text(&o);
        assert!(o.status.success(), "{label}: {log}");
        let made = proxy.stats.cuts.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(made, cuts.len(), "{label}: the proxy cut {made} connections");
        assert_eq!(digest.as_deref(), Some(clean_digest.as_str()), "{label}: another image was pushed: {log}");
        assert!(log.contains("retrying in"), "{label}: the retries are shown: {log}");
        eprintln!("push of 60 MB through {label}: {took:?} (clean: {clean_took:?})");
        skopeo_copies(&format!("{registry}/{repo}:1"));
    }
}

#[test]
fn a_network_that_cuts_every_connection_fails_clearly_and_leaves_no_half_blob() {
    let env = test_env().expect("the test environment (tests/setup) is required");
    let (root, _ctx) = big_image();
    let proxy =
        Proxy::cutting(&env["RIG_REGISTRY"], Cuts { direction: Direction::Up, after: vec![], always: Some(150_000) });
    let target = format!("{}/{}:1", proxy.addr, unique_repo("doomed"));
    let (o, took, _) = push(root.path(), &target);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    let err = log.lines().filter(|l| l.contains("error")).collect::<Vec<_>>().join("\n");
    assert!(err.contains("attempts") && err.contains("bytes accepted"), "attempts and bytes: {err}");
    assert!(err.contains(&proxy.addr) && err.contains("sha256:"), "names the registry and the blob: {err}");
    eprintln!("gave up after {took:?}:\n{err}");
    // Bounded: the budget is failures in a row without progress at the smallest chunk.
    assert!(took < Duration::from_secs(180), "it took {took:?} to give up");
    // The local store is intact: no temporary files, every blob still verifies.
    let tmp = std::fs::read_dir(root.path().join("tmp")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(tmp, 0, "temporary files left in the store");
    for e in std::fs::read_dir(root.path().join("blobs/sha256")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert_eq!(sha256_file(&e.path()), format!("sha256:{name}"), "a blob changed in the store");
    }
}

#[test]
fn a_pull_through_cut_connections_resumes_and_gives_up_clearly() {
    let env = test_env().expect("the test environment (tests/setup) is required");
    let (root, _ctx) = big_image();
    let registry = env["RIG_REGISTRY"].clone();
    let repo = unique_repo("pullme");
    let (o, _, _) = push(root.path(), &format!("{registry}/{repo}:1"));
    assert!(o.status.success(), "{}", text(&o));

    let build_from = |from: &str| {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {from}\nCOPY Dockerfile /copied\n")).unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let o = strata(fresh.path(), &["build", "--progress=plain", ctx.path().to_str().unwrap()]);
        assert_no_panic(&text(&o));
        (o, fresh)
    };
    let proxy = Proxy::cutting(
        &registry,
        Cuts { direction: Direction::Down, after: vec![400_000, 2_000_000, 5_000_000], always: None },
    );
    let (o, fresh) = build_from(&format!("{}/{repo}:1", proxy.addr));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(proxy.stats.cuts.load(std::sync::atomic::Ordering::SeqCst), 3);
    // What was pulled is whole: every blob in the fresh store verifies.
    for e in std::fs::read_dir(fresh.path().join("blobs/sha256")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert_eq!(sha256_file(&e.path()), format!("sha256:{name}"));
    }
    let doomed = Proxy::cutting(&registry, Cuts { direction: Direction::Down, after: vec![], always: Some(100_000) });
    let (o, fresh) = build_from(&format!("{}/{repo}:1", doomed.addr));
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("interrupted") || log.contains("attempts"), "{log}");
    let tmp = std::fs::read_dir(fresh.path().join("tmp")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(tmp, 0, "a half-downloaded blob was left in the store");
}

#[test]
fn retry_after_is_honoured_and_shown() {
    let env = test_env().expect("the test environment (tests/setup) is required");
    let (root, _ctx) = big_image();
    // The first chunk of the upload gets a 503 asking for 2 s.
    let proxy = Proxy::http(&env["RIG_REGISTRY"], |req, n| match (req.method.as_str(), n) {
        ("PATCH", 0) => Fault::RespondRetryAfter(503, 2),
        _ => Fault::Pass,
    });
    let target = format!("{}/{}:1", proxy.addr, unique_repo("later"));
    let (o, took, _) = push(root.path(), &target);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("retrying in 2.0s: PATCH answered 503"), "{log}");
    assert!(took >= Duration::from_secs(2), "the push did not wait as asked ({took:?})");
}

#[test]
fn a_cache_export_and_import_through_cut_connections() {
    let env = test_env().expect("the test environment (tests/setup) is required");
    let (root, ctx) = big_image();
    let registry = env["RIG_REGISTRY"].clone();
    let repo = unique_repo("cache-cuts");
    // Export: the 60 MB layer goes up through three cuts.
    let up = Proxy::cutting(&registry, cuts_up(&[300_000, 1_500_000, 3_000_000]));
    let cache = format!("{}/{repo}:cache", up.addr);
    let o = strata(
        root.path(),
        &[
            "build",
            "--progress=plain",
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
            ctx.path().to_str().unwrap(),
        ],
    );
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert_eq!(up.stats.cuts.load(std::sync::atomic::Ordering::SeqCst), 3, "{log}");
    assert!(log.contains("retrying in"), "{log}");
    // Import on a fresh runner: the layer comes down through three cuts, verified.
    let down = Proxy::cutting(
        &registry,
        Cuts { direction: Direction::Down, after: vec![400_000, 2_000_000, 5_000_000], always: None },
    );
    let fresh = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = strata(
        fresh.path(),
        &[
            "build",
            "--progress=plain",
            "--cache-from",
            &format!("{}/{repo}:cache", down.addr),
            "-o",
            &format!("type=local,dest={}", out.path().display()),
            ctx.path().to_str().unwrap(),
        ],
    );
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("0 steps run, 1 cached"), "{log}");
    assert_eq!(down.stats.cuts.load(std::sync::atomic::Ordering::SeqCst), 3, "{log}");
    assert_eq!(sha256_file(&out.path().join("big")), sha256_file(&ctx.path().join("big")));
}
