//! Peak memory of a build and push of a big context (20 000 small files and one 150 MB
//! file of random data), measured by GNU time (`/usr/bin/time -v`) around the strata
//! binary: the maximum resident set size stays under 300 MB.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::*;

const LIMIT_KB: u64 = 300 * 1024;

/// /dev/shm when it is a tmpfs with 2 GB free, else the default temporary directory.
fn scratch_dir() -> std::path::PathBuf {
    let shm = Path::new("/dev/shm");
    let out = Command::new("df").args(["--output=fstype,avail", "-B1"]).arg(shm).output();
    let ok = out.ok().is_some_and(|o| {
        let t = String::from_utf8_lossy(&o.stdout).to_string();
        let mut last = t.lines().last().unwrap_or("").split_whitespace();
        last.next() == Some("tmpfs") && last.next().and_then(|a| a.parse::<u64>().ok()).is_some_and(|a| a > 2 << 30)
    });
    if ok {
        shm.to_path_buf()
    } else {
        eprintln!("note: no tmpfs with 2 GB free at /dev/shm: the test runs on disk (slower)");
        std::env::temp_dir()
    }
}

/// "Maximum resident set size (kbytes): N" of GNU time's verbose report.
fn max_rss_kb(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .unwrap_or_else(|| panic!("no max RSS in the output of time -v: {out}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn build_and_push_of_a_big_context_stays_under_300mb_max_rss() {
    let Some(env) = test_env() else { return };
    let time_bin = Path::new("/usr/bin/time");
    if !time_bin.exists() {
        panic!("/usr/bin/time is missing: tests/setup installs the `time` package");
    }
    // The context and the store live on tmpfs when there is one: creating and deleting
    // 2 × 20 000 files on this machine's disk takes minutes. (File pages on tmpfs are
    // not part of a process's RSS unless it maps them, as on a disk.)
    let scratch = scratch_dir();
    // The measurement itself: a process that fills 400 MB is over the limit.
    let hog = Command::new(time_bin).args(["-v", "python3", "-c", "x = b'x' * (400 << 20)"]).output().unwrap();
    assert!(hog.status.success(), "{}", text(&hog));
    let hog_kb = max_rss_kb(&text(&hog));
    assert!(hog_kb > LIMIT_KB, "time -v saw only {hog_kb} kB for 400 MB");

    let root = tempfile::tempdir_in(&scratch).unwrap();
    let ctx = tempfile::tempdir_in(&scratch).unwrap();
    let started = Instant::now();
    for d in 0..200 {
        let dir = ctx.path().join(format!("small/d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            std::fs::write(dir.join(format!("f{f:03}.txt")), format!("file {d}/{f}\n").repeat(1 + f % 7)).unwrap();
        }
    }
    write_noise(&ctx.path().join("big.bin"), 150 << 20, 0x0bad_cafe);
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY . /data/\n").unwrap();
    eprintln!("context written in {:?}", started.elapsed());

    let registry = &env["RIG_REGISTRY"];
    let reference = format!("{registry}/{}:v1", unique_repo("memory"));
    let work = tempfile::tempdir().unwrap();
    let meta = work.path().join("meta.json");
    let started = Instant::now();
    let o = Command::new(time_bin)
        .arg("-v")
        .arg(strata_bin())
        .arg("--root")
        .arg(root.path())
        .args(["build", "--progress=plain", "--push", "-t", &reference, "--metadata-file"])
        .arg(&meta)
        .arg(ctx.path())
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let out = text(&o);
    assert!(o.status.success(), "build + push failed: {out}");
    let max_rss_kb = max_rss_kb(&out);
    eprintln!("build + push of 20 000 files + 150 MB: {elapsed:?}, max RSS {} MB", max_rss_kb / 1024);
    assert!(max_rss_kb > 1024, "implausible max RSS {max_rss_kb} kB");
    assert!(max_rss_kb < LIMIT_KB, "max RSS {max_rss_kb} kB exceeds {LIMIT_KB} kB");

    // It was pushed: the registry holds the reported manifest, one layer with all of it.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(raw.status.success(), "{}", text(&raw));
    let meta_json: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(sha256_bytes(&raw.stdout), meta_json["containerimage.digest"].as_str().unwrap());
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    assert!(layers[0]["size"].as_u64().unwrap() > 150 << 20, "random data does not compress: {manifest}");
    let started = Instant::now();
    drop((root, ctx));
    eprintln!("cleanup: {:?}", started.elapsed());
}
