//! Reproducibility over real build inputs: the conformance cases
//! (`../shared/conformance/cases`) and the benchmark workloads (`../shared/bench`), each
//! built twice in fresh roots with SOURCE_DATE_EPOCH=1700000000 by `strata verify`,
//! must give the same manifest digest.
//!
//! The default test runs a representative subset; the ignored test
//! `full_reproducibility_list` runs every case and workload and prints one line each
//! (`cargo test --test reproducible_corpus -- --ignored --nocapture`). Base images come
//! from the rig registry (127.0.0.1:5000, `tests/setup`), as the conformance runner
//! takes them. Without `../shared` the tests say SKIPPED loudly.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const EPOCH: &str = "1700000000";

/// Conformance cases the default test verifies: files, archives, stages, special files,
/// whiteouts, owners.
const SUBSET_CASES: &[&str] =
    &["add-archive", "copy-semantics", "multistage", "special-files", "whiteouts", "workdir-user"];
/// The benchmark workload the default test verifies (40 RUN steps).
const SUBSET_WORKLOADS: &[&str] = &["steps-many"];

/// Workloads that write random bytes (`/dev/urandom`) on purpose, and the only paths
/// that may differ between two builds of them: `multistage` writes `/out<N>.bin` in
/// each stage, `layer-heavy` `/data/r<N>` (its `/data/t<N>` are text and must match).
const RANDOM_BY_DESIGN: &[(&str, PathFilter)] =
    &[("multistage", |p| numbered(p, "/out", ".bin")), ("layer-heavy", |p| numbered(p, "/data/r", ""))];

/// Which paths of an image a check is about.
type PathFilter = fn(&str) -> bool;

/// `PREFIX<digits>SUFFIX`.
fn numbered(path: &str, prefix: &str, suffix: &str) -> bool {
    path.strip_prefix(prefix)
        .and_then(|r| r.strip_suffix(suffix))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Where generated benchmark workloads are kept between runs (ctx-big is 490 MB).
const WORKLOAD_DIR: &str = "/var/tmp/strata-verify-workloads";

/// `../shared/SUB`, or None with a loud message.
fn shared(sub: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared").join(sub);
    if p.exists() {
        Some(p)
    } else {
        strata_testsupport::skip::shared_missing(&p, "the reproducibility corpus tests");
        None
    }
}

/// What one verify run said.
#[derive(Debug)]
enum Outcome {
    Match(String),
    Mismatch(String, serde_json::Value),
    BuildFailed(String),
    Skipped(String),
}

impl Outcome {
    fn line(&self, name: &str) -> String {
        match self {
            Outcome::Match(d) => format!("{name:28} match     {d}"),
            Outcome::Mismatch(why, _) => format!("{name:28} MISMATCH  {why}"),
            Outcome::BuildFailed(why) => format!("{name:28} FAILED    {why}"),
            Outcome::Skipped(why) => format!("{name:28} skipped   {why}"),
        }
    }
}

/// The rig registry's busybox manifest digest (for the digest-ref case), as the
/// conformance runner computes it.
fn busybox_digest(env: &std::collections::HashMap<String, String>) -> String {
    let script = format!(
        "skopeo inspect --raw --tls-verify=false docker://{}/library/busybox:latest | sha256sum",
        env["RIG_REGISTRY"]
    );
    let o = Command::new("sh").arg("-c").arg(&script).output().expect("run skopeo");
    let hex = String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap_or("").to_string();
    assert!(o.status.success() && hex.len() == 64, "{script}: {}", text(&o));
    format!("sha256:{hex}")
}

/// A conformance case copied to a work directory, placeholders filled in.
fn prepare_case(case: &Path, work: &Path, env: &std::collections::HashMap<String, String>) -> PathBuf {
    let dst = work.join("ctx");
    let st = Command::new("cp").arg("-a").arg(case).arg(&dst).status().unwrap();
    assert!(st.success(), "cp -a {}", case.display());
    let dockerfile = dst.join("Dockerfile");
    if let Ok(text) = std::fs::read_to_string(&dockerfile) {
        if text.contains("{{BUSYBOX_DIGEST}}") {
            std::fs::write(&dockerfile, text.replace("{{BUSYBOX_DIGEST}}", &busybox_digest(env))).unwrap();
        }
    }
    dst
}

/// `strata verify --output json [ARGS] .` in `dir` with SOURCE_DATE_EPOCH set; `args`
/// is one shell-quoted line (a case's `args` file).
fn verify_dir(dir: &Path, args: &str) -> Outcome {
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("exec \"$0\" verify --output json --progress=plain {args} ."))
        .arg(strata_bin())
        .current_dir(dir)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env_remove("STRATA_ROOT")
        .output()
        .expect("run strata verify");
    let json: Option<serde_json::Value> = serde_json::from_slice(&o.stdout).ok();
    match (o.status.code(), json) {
        (Some(0), Some(j)) => {
            let digests: Vec<String> = j["platforms"]
                .as_array()
                .map(|ps| {
                    ps.iter().map(|p| format!("{} {}", p["platform"].as_str().unwrap_or("?"), p["left"])).collect()
                })
                .unwrap_or_default();
            Outcome::Match(digests.join(", ").replace('"', ""))
        }
        (Some(1), Some(j)) => Outcome::Mismatch(mismatch_summary(&j), j),
        _ => {
            let all = text(&o);
            let tail: Vec<&str> = all.lines().rev().take(3).collect();
            Outcome::BuildFailed(tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
        }
    }
}

/// The first few differences of a JSON report, on one line.
fn mismatch_summary(report: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    for p in report["platforms"].as_array().into_iter().flatten().filter(|p| p["match"] == false) {
        for d in p["config"]["differences"].as_array().into_iter().flatten().take(3) {
            parts.push(format!("config {}", d["path"].as_str().unwrap_or("?")));
        }
        for layer in p["layers"].as_array().into_iter().flatten() {
            let entries = layer["entries"].as_array().map(|e| e.len()).unwrap_or(0);
            let first: Vec<String> = layer["entries"]
                .as_array()
                .into_iter()
                .flatten()
                .take(3)
                .map(|e| {
                    let what: Vec<&str> =
                        e["changes"].as_array().into_iter().flatten().filter_map(|c| c["what"].as_str()).collect();
                    format!("{} ({})", e["path"].as_str().unwrap_or("?"), what.join("+"))
                })
                .collect();
            let note = layer["note"].as_str().map(|n| format!(" {n}")).unwrap_or_default();
            parts.push(format!("layer {} [{entries} paths: {}]{note}", layer["index"], first.join(", ")));
        }
    }
    parts.join("; ")
}

/// Verify one conformance case.
fn verify_case(case: &Path, env: &std::collections::HashMap<String, String>) -> Outcome {
    let read = |f: &str| std::fs::read_to_string(case.join(f)).ok().map(|s| s.trim().to_string());
    if read("expect").as_deref() == Some("fail") {
        return Outcome::Skipped("the build must fail: nothing to compare".into());
    }
    if !case.join("Dockerfile").is_file() {
        return Outcome::Skipped("no Dockerfile".into());
    }
    let work = tempfile::tempdir().unwrap();
    let dir = prepare_case(case, work.path(), env);
    verify_dir(&dir, &read("args").unwrap_or_default())
}

/// The benchmark workloads, generated once into WORKLOAD_DIR by the bench's own script.
fn workloads(bench: &Path, env: &std::collections::HashMap<String, String>) -> PathBuf {
    let o = Command::new(bench.join("make-workloads"))
        .arg(WORKLOAD_DIR)
        .arg("--registry")
        .arg(&env["RIG_REGISTRY"])
        .output()
        .expect("run make-workloads");
    assert!(o.status.success(), "make-workloads: {}", text(&o));
    PathBuf::from(WORKLOAD_DIR)
}

fn case_names(cases: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cases)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn conformance_subset_and_a_bench_workload_are_reproducible() {
    let Some(env) = test_env() else { return };
    let (Some(cases), Some(bench)) = (shared("conformance/cases"), shared("bench")) else { return };
    let mut failures = Vec::new();
    for name in SUBSET_CASES {
        let outcome = verify_case(&cases.join(name), &env);
        eprintln!("{}", outcome.line(name));
        if !matches!(outcome, Outcome::Match(_)) {
            failures.push(outcome.line(name));
        }
    }
    let dir = workloads(&bench, &env);
    for name in SUBSET_WORKLOADS {
        let outcome = verify_dir(&dir.join(name), "");
        eprintln!("{}", outcome.line(&format!("bench/{name}")));
        if !matches!(outcome, Outcome::Match(_)) {
            failures.push(outcome.line(&format!("bench/{name}")));
        }
    }
    assert!(failures.is_empty(), "not reproducible:\n{}", failures.join("\n"));
}

/// Every conformance case and every benchmark workload, one line each. Fails on a
/// mismatch or failed build except for the workloads that are random by design.
#[test]
#[ignore = "builds every case and workload twice (several minutes; ctx-big is 490 MB): run with --ignored"]
fn full_reproducibility_list() {
    let Some(env) = test_env() else { return };
    let (Some(cases), Some(bench)) = (shared("conformance/cases"), shared("bench")) else { return };
    let mut lines = Vec::new();
    let mut unexpected = Vec::new();
    for name in case_names(&cases) {
        let outcome = verify_case(&cases.join(&name), &env);
        let line = outcome.line(&name);
        println!("{line}");
        if matches!(outcome, Outcome::Mismatch(..) | Outcome::BuildFailed(_)) {
            unexpected.push(line.clone());
        }
        lines.push(line);
    }
    let dir = workloads(&bench, &env);
    for name in case_names(&dir) {
        let outcome = verify_dir(&dir.join(&name), "");
        let label = format!("bench/{name}");
        let random = RANDOM_BY_DESIGN.iter().find(|(n, _)| *n == name).map(|(_, allowed)| *allowed);
        let (line, expected) = match (&outcome, random) {
            (Outcome::Mismatch(_, report), Some(allowed)) => {
                // Exactly the random files differ, in content only; the config only in
                // the diff_ids of their layers.
                let paths = differing_paths(report);
                let stray: Vec<&(String, Vec<String>)> =
                    paths.iter().filter(|(p, what)| !allowed(p) || what.iter().any(|w| w != "content")).collect();
                let config_ok = config_differences(report).iter().all(|c| c.starts_with("rootfs.diff_ids"));
                let ok = !paths.is_empty() && stray.is_empty() && config_ok;
                let note = format!(
                    "{} random files differ (expected), {} other differences{}",
                    paths.len() - stray.len(),
                    stray.len(),
                    if config_ok { "" } else { ", and the config beyond diff_ids" }
                );
                (format!("{} ({note})", outcome.line(&label)), ok)
            }
            (Outcome::Match(_), Some(_)) => (format!("{} (a random workload matched?)", outcome.line(&label)), false),
            (Outcome::Match(_), None) => (outcome.line(&label), true),
            _ => (outcome.line(&label), false),
        };
        println!("{line}");
        if !expected {
            unexpected.push(line.clone());
        }
        lines.push(line);
    }
    println!("\n{} cases and workloads; {} unexpected", lines.len(), unexpected.len());
    assert!(unexpected.is_empty(), "not reproducible:\n{}", unexpected.join("\n"));
}

/// Every differing path of a JSON report with what differs (`content`, `mode`, ...).
fn differing_paths(report: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for p in report["platforms"].as_array().into_iter().flatten() {
        for layer in p["layers"].as_array().into_iter().flatten() {
            for e in layer["entries"].as_array().into_iter().flatten() {
                let what = e["changes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["what"].as_str().map(str::to_string))
                    .collect();
                out.push((e["path"].as_str().unwrap_or("?").to_string(), what));
            }
        }
    }
    out
}

/// The JSON paths of every config difference of a report.
fn config_differences(report: &serde_json::Value) -> Vec<String> {
    report["platforms"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["config"]["differences"].as_array().into_iter().flatten())
        .filter_map(|d| d["path"].as_str().map(str::to_string))
        .collect()
}
