//! `strata verify` through the binary: two builds in fresh roots compared (a build that
//! writes the time differs, and the report names the file and the layer; a build with
//! SOURCE_DATE_EPOCH does not), the JSON report, bad usage, and one build compared with
//! a published image (an OCI layout, a layout tar, the rig registry).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

const EPOCH: &str = "1700000000";
/// Writes the time. busybox's `date` has no `%N` (it prints `%N` as is), so the sleep
/// makes sure the second build (which starts after the first ends) sees another second.
const STAMPED: &str = "FROM busybox\nRUN sleep 1 && date +%s%N > /stamp\n";
const REPRODUCIBLE: &str = "FROM busybox\nRUN echo hi > /hello\nCOPY f /f\n";

/// A build context with `dockerfile` and a file `f`.
fn context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(ctx.path().join("f"), "some content\n").unwrap();
    ctx
}

/// `strata verify ARGS` with SOURCE_DATE_EPOCH unset (unless given in `args`).
fn verify(args: &[&str]) -> Output {
    let root = tempfile::tempdir().unwrap();
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    strata(root.path(), &all)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_build_that_writes_the_time_differs_and_the_report_names_the_file() {
    let Some(env) = test_env() else { return };
    let ctx = context(STAMPED);
    let bb = busybox_context(&env);
    let args = ["--progress=plain", "--source-date-epoch", EPOCH, "--build-context", &bb];
    let dir = ctx.path().to_str().unwrap();

    let o = verify(&[&args[..], &[dir]].concat());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report = stdout(&o);
    assert!(report.contains("platform linux/amd64: MISMATCH"), "{report}");
    // The RUN layer is layers[1] (busybox is layers[0]); only /stamp differs in it.
    let stamp_line = report.lines().find(|l| l.contains("/stamp:")).unwrap_or_else(|| panic!("no /stamp: {report}"));
    assert!(stamp_line.trim_start().starts_with("layer 1 (sha256:"), "{stamp_line}");
    assert!(stamp_line.contains("content differs"), "{stamp_line}");
    assert!(!stamp_line.contains("mtime"), "SOURCE_DATE_EPOCH clamps mtimes: {stamp_line}");
    assert!(!report.contains("config: created"), "the config is the same with SOURCE_DATE_EPOCH: {report}");
    assert!(report.ends_with("result: MISMATCH\n"), "{report}");

    // The same in JSON.
    let o = verify(&[&["--output", "json"], &args[..], &[dir]].concat());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(json["match"], false);
    assert_eq!(json["mode"], "rebuild");
    assert_eq!(json["source_date_epoch"]["value"], EPOCH);
    assert_eq!(json["builds"].as_array().map(|b| b.len()), Some(2));
    let platform = &json["platforms"][0];
    assert_eq!(platform["platform"], "linux/amd64");
    assert_eq!(platform["match"], false);
    assert_ne!(platform["left"], platform["right"]);
    let layer = &platform["layers"][0];
    assert_eq!(layer["index"], 1);
    let entries = layer["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{layer}");
    assert_eq!(entries[0]["path"], "/stamp");
    assert_eq!(entries[0]["changes"][0]["what"], "content");
}

#[test]
fn without_source_date_epoch_the_report_says_timestamps_may_differ() {
    let Some(env) = test_env() else { return };
    let ctx = context(STAMPED);
    let o = verify(&["--progress=quiet", "--build-context", &busybox_context(&env), ctx.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report = stdout(&o);
    // Timestamps differ when the builds fall in different seconds; /stamp always does.
    assert!(report.contains("/stamp: content differs"), "{report}");
    assert!(report.contains("note: SOURCE_DATE_EPOCH was not set"), "{report}");
    assert!(text(&o).contains("SOURCE_DATE_EPOCH is not set"), "{}", text(&o));
}

#[test]
fn a_reproducible_build_matches_with_source_date_epoch_from_the_environment() {
    let Some(env) = test_env() else { return };
    let ctx = context(REPRODUCIBLE);
    let root = tempfile::tempdir().unwrap();
    let o = Command::new(strata_bin())
        .arg("--root")
        .arg(root.path())
        .args(["verify", "--progress=plain", "--build-context", &busybox_context(&env)])
        .arg(ctx.path())
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report = stdout(&o);
    assert!(report.starts_with("platform linux/amd64: MATCH sha256:"), "{report}");
    assert!(report.ends_with("result: MATCH (every platform's manifest digest is the same)\n"), "{report}");
    assert!(text(&o).contains("SOURCE_DATE_EPOCH=1700000000 (from the environment)"), "{}", text(&o));
    assert!(text(&o).contains("--jobs 1") && text(&o).contains("--jobs 2"), "{}", text(&o));
}

#[test]
fn verify_decides_the_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for args in [
        vec!["-t", "app", d],
        vec!["--push", d],
        vec!["--load", d],
        vec!["--build-arg", "A=1", "-o", "type=oci,dest=x.tar", d],
        vec!["--build-arg", "A=1", "--output=type=local,dest=x", d],
        vec!["--iidfile", "x", d],
        vec!["--no-such-flag", d],
        vec!["--build-arg", "A=1", "--jobs=3", d],
        vec!["--build-arg", "A=1", "--root", "/tmp", d],
        vec!["--against", "not a reference", d],
    ] {
        let o = verify(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(!text(&o).contains("build 1: fresh root"), "{args:?} built before refusing: {}", text(&o));
    }
    let o = verify(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// Build `dir` once into the OCI layout directory `out`.
fn build_layout(env: &std::collections::HashMap<String, String>, dir: &Path, out: &Path, extra: &[&str]) {
    let root = tempfile::tempdir().unwrap();
    let dest = format!("type=oci,dest={},tar=false", out.display());
    let bb = busybox_context(env);
    let mut args = vec!["build", "--progress=plain", "--build-context", &bb];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", &dest, dir.to_str().unwrap()]);
    let o = strata(root.path(), &args);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn against_a_published_layout() {
    let Some(env) = test_env() else { return };
    let ctx = context(REPRODUCIBLE);
    let published = tempfile::tempdir().unwrap();
    let layout = published.path().join("layout");
    build_layout(&env, ctx.path(), &layout, &["--source-date-epoch", EPOCH]);
    let bb = busybox_context(&env);
    let dir = ctx.path().to_str().unwrap();

    let same = format!("oci-layout://{}:latest", layout.display());
    let o =
        verify(&["--against", &same, "--progress=plain", "--source-date-epoch", EPOCH, "--build-context", &bb, dir]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(stdout(&o).contains("platform linux/amd64: MATCH"), "{}", text(&o));
    assert!(!text(&o).contains("build 2"), "--against builds once: {}", text(&o));

    // Another image: a different SOURCE_DATE_EPOCH changes the config and the mtimes.
    let o = verify(&["--against", &same, "--progress=plain", "--source-date-epoch", "1", "--build-context", &bb, dir]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report = stdout(&o);
    assert!(report.contains("config: created: \"1970-01-01T00:00:01Z\" vs \"2023-11-14T22:13:20Z\""), "{report}");
    assert!(report.contains("/hello: mtime 1 vs 1700000000"), "{report}");

    // The busybox seed is an index of amd64 and arm64: arm64 is only in the published image.
    let seed = format!("oci-layout://{}:latest", env["RIG_BUSYBOX_LAYOUT"]);
    let o = verify(&[
        "--against",
        &seed,
        "--output=json",
        "--progress=plain",
        "--source-date-epoch",
        EPOCH,
        "--build-context",
        &bb,
        dir,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(json["mode"], "against");
    let platforms: Vec<&str> =
        json["platforms"].as_array().unwrap().iter().filter_map(|p| p["platform"].as_str()).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{json}");
    assert_eq!(json["platforms"][0]["layer_count"]["left"], 3);
    assert_eq!(json["platforms"][0]["layer_count"]["right"], 1);
    assert!(json["platforms"][1]["left"].is_null());
}

#[test]
fn against_a_layout_tar_and_a_registry_image() {
    let Some(env) = test_env() else { return };
    let ctx = context(REPRODUCIBLE);
    let bb = busybox_context(&env);
    let dir = ctx.path().to_str().unwrap();
    let root = tempfile::tempdir().unwrap();
    let tar = root.path().join("published.tar");
    let unique =
        format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let pushed = format!("{}/strata-verify/app-{unique}:1", env["RIG_REGISTRY"]);
    let o = strata(
        root.path(),
        &[
            "build",
            "--progress=plain",
            "--source-date-epoch",
            EPOCH,
            "--build-context",
            &bb,
            "-t",
            &pushed,
            "--push",
            "-o",
            &format!("type=oci,dest={}", tar.display()),
            dir,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));

    let layout_tar = format!("oci-layout://{}", tar.display());
    for against in [layout_tar.as_str(), pushed.as_str()] {
        let o = verify(&[
            "--against",
            against,
            "--progress=plain",
            "--source-date-epoch",
            EPOCH,
            "--build-context",
            &bb,
            dir,
        ]);
        assert_eq!(o.status.code(), Some(0), "--against {against}: {}", text(&o));
        assert!(stdout(&o).contains("platform linux/amd64: MATCH"), "{}", text(&o));
    }
    let o =
        verify(&["--against", &pushed, "--progress=plain", "--source-date-epoch", "5", "--build-context", &bb, dir]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stdout(&o).contains("/f: mtime 5 vs 1700000000"), "{}", text(&o));
}

#[test]
fn a_failed_build_fails_verify_with_its_error() {
    let Some(env) = test_env() else { return };
    let ctx = context("FROM busybox\nRUN echo broken && exit 7\n");
    let o = verify(&["--progress=plain", "--build-context", &busybox_context(&env), ctx.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("exit code: 7") || text(&o).contains("exit 7") || text(&o).contains("code 7"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("strata verify: the build 1 failed"), "{}", text(&o));
    assert!(!text(&o).contains("build 2"), "{}", text(&o));
}

#[test]
fn a_multi_platform_build_is_compared_per_platform() {
    let Some(env) = test_env() else { return };
    let bb = busybox_context(&env);
    let platforms = "--platform=linux/amd64,linux/arm64";
    let ctx = context("FROM busybox\nRUN echo hi > /hello && uname -m > /arch\n");
    let o = verify(&[
        platforms,
        "--progress=plain",
        "--source-date-epoch",
        EPOCH,
        "--build-context",
        &bb,
        ctx.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report = stdout(&o);
    assert!(report.starts_with("index: MATCH sha256:"), "{report}");
    assert!(report.contains("platform linux/amd64: MATCH sha256:"), "{report}");
    assert!(report.contains("platform linux/arm64: MATCH sha256:"), "{report}");

    let ctx = context(STAMPED);
    let o = verify(&[
        platforms,
        "--output=json",
        "--progress=plain",
        "--source-date-epoch",
        EPOCH,
        "--build-context",
        &bb,
        ctx.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert!(json["index"].is_object(), "{json}");
    for (i, platform) in ["linux/amd64", "linux/arm64"].iter().enumerate() {
        let p = &json["platforms"][i];
        assert_eq!(p["platform"], *platform, "{json}");
        assert_eq!(p["match"], false);
        assert_eq!(p["layers"][0]["entries"][0]["path"], "/stamp", "{p}");
    }
}
