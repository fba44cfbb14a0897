//! Why a step ran (issue #16), through the binary: each kind of cache-miss reason in a
//! real rebuild and in `--dry-run`; a dry run writes no snapshot, cache record or image
//! and its verdicts are what the next build does; `strata history ls/show/diff`
//! (snapshots); the record of a 30 000-file COPY stays small and prune removes it.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

/// Each step's verdict in a plain progress log: step label → `CACHED`, `RAN`, or the
/// miss line (`CACHE MISS: …` / `WOULD RUN: …`). Only Dockerfile steps.
fn verdicts(log: &str) -> BTreeMap<String, String> {
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for line in log.lines() {
        let Some((n, rest)) = line.split_once(' ') else { continue };
        if !n.starts_with('#') {
            continue;
        }
        if rest.starts_with('[') && !rest.starts_with("[internal]") {
            names.entry(n.to_string()).or_insert_with(|| rest.to_string());
            continue;
        }
        let Some(name) = names.get(n) else { continue };
        if rest == "CACHED" {
            out.insert(name.clone(), "CACHED".to_string());
        } else if rest.starts_with("CACHE MISS: ") || rest.starts_with("WOULD RUN: ") {
            out.insert(name.clone(), rest.to_string());
        }
    }
    out
}

/// The verdict of a real build compared with a dry run's: CACHED stays CACHED, and a
/// miss is the same miss with the same reason.
fn same_verdicts(dry: &BTreeMap<String, String>, real: &BTreeMap<String, String>) {
    let real: BTreeMap<&String, String> =
        real.iter().map(|(k, v)| (k, v.replacen("CACHE MISS: ", "WOULD RUN: ", 1))).collect();
    let dry: BTreeMap<&String, String> = dry.iter().map(|(k, v)| (k, v.clone())).collect();
    assert_eq!(dry, real, "the dry run's verdicts are not the build's");
}

fn reason_of<'a>(v: &'a BTreeMap<String, String>, step: &str) -> &'a str {
    v.iter()
        .find(|(k, _)| k.contains(step))
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no step {step:?} among {v:#?}"))
}

struct Project {
    root: tempfile::TempDir,
    ctx: tempfile::TempDir,
    base: String,
}

impl Project {
    fn dockerfile(&self, mode: &str, last: &str) {
        let text = format!(
            "FROM {base} AS base\nARG FLAVOUR=plain\nENV MODE={mode}\nCOPY src/ /src/\n\
             RUN cat /src/f1.txt > /all && echo $FLAVOUR $MODE > /flavour\n\
             FROM base AS unused\nRUN echo never\n\
             FROM base\n{last}\n",
            base = self.base
        );
        std::fs::write(self.ctx.path().join("Dockerfile"), text).unwrap();
    }

    /// A dry run then the real build with `extra`; both logs, checked alike.
    fn dry_then_build(&self, extra: &[&str]) -> (BTreeMap<String, String>, String) {
        let root = self.root.path();
        let ctx = self.ctx.path().to_str().unwrap();
        let before = store_state(root);
        let mut args = vec!["build", "--progress=plain", "--dry-run"];
        args.extend_from_slice(extra);
        args.push(ctx);
        let dry = strata(root, &args);
        let dry_log = text(&dry);
        assert!(dry.status.success(), "dry run failed:\n{dry_log}");
        assert_no_panic(&dry_log);
        assert_eq!(store_state(root), before, "the dry run wrote to the store:\n{dry_log}");
        assert!(!dry_log.contains("echo never"), "a step of a stage not built shows:\n{dry_log}");
        let mut args = vec!["build", "--progress=plain", "-t", "hist:latest"];
        args.extend_from_slice(extra);
        args.push(ctx);
        let real = strata(root, &args);
        let log = text(&real);
        assert!(real.status.success(), "build failed:\n{log}");
        assert!(!log.contains("echo never"), "a step of a stage not built ran:\n{log}");
        let (d, r) = (verdicts(&dry_log), verdicts(&log));
        same_verdicts(&d, &r);
        (r, log)
    }
}

/// What a dry run must not write: snapshots, cache records, images, build records
/// (the store's shared empty directory aside).
fn store_state(root: &Path) -> BTreeMap<String, usize> {
    ["snapshots", "cache", "images", "history/builds"]
        .iter()
        .map(|d| {
            let n = std::fs::read_dir(root.join(d))
                .map(|r| r.flatten().filter(|e| e.file_name() != "empty").count())
                .unwrap_or(0);
            (d.to_string(), n)
        })
        .collect()
}

/// Push a one-layer image made from busybox, saying `what`, to `reference`.
fn push_base(reference: &str, what: &str) {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM busybox\nRUN echo {what} > /base\n")).unwrap();
    let out = build_with(root.path(), ctx.path(), &["--push", "-t", reference]);
    assert!(out.status.success(), "pushing the base image failed:\n{}", text(&out));
}

#[test]
fn every_kind_of_miss_is_explained_in_a_build_and_in_a_dry_run() {
    let Some(env) = test_env() else { return };
    let base = format!("{}/{}:1", env["RIG_REGISTRY"], unique_repo("history-base"));
    push_base(&base, "one");
    let p = Project { root: tempfile::tempdir().unwrap(), ctx: tempfile::tempdir().unwrap(), base: base.clone() };
    let src = p.ctx.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 1..=4 {
        std::fs::write(src.join(format!("f{i}.txt")), format!("file {i}\n")).unwrap();
    }
    std::fs::write(src.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o664)).unwrap();
    p.dockerfile("fast", "RUN echo final > /final");

    // The first build: nothing earlier.
    let (v, _) = p.dry_then_build(&[]);
    assert_eq!(reason_of(&v, "COPY src/"), "CACHE MISS: COPY src/ /src/: no earlier build of this step");

    // Nothing changed: all cached, in the dry run too.
    let (v, _) = p.dry_then_build(&[]);
    assert!(v.values().all(|x| x == "CACHED"), "{v:#?}");

    // A file's content.
    std::fs::write(src.join("f3.txt"), "file 3, edited\n").unwrap();
    let (v, _) = p.dry_then_build(&[]);
    assert_eq!(reason_of(&v, "COPY src/"), "CACHE MISS: COPY src/ /src/: 1 file changed: src/f3.txt (content)");
    assert_eq!(
        reason_of(&v, "RUN cat"),
        "CACHE MISS: RUN cat /src/f1.txt > /all && echo $FLAVOUR $MODE > /flavour: the step before it changed (Dockerfile:4)"
    );

    // A mode only (the umask of another checkout).
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (v, _) = p.dry_then_build(&[]);
    assert_eq!(reason_of(&v, "COPY src/"), "CACHE MISS: COPY src/ /src/: mode only: src/run.sh 0664 → 0644");

    // Files added and removed.
    std::fs::remove_file(src.join("f4.txt")).unwrap();
    std::fs::write(src.join("f5.txt"), "five\n").unwrap();
    std::fs::write(src.join("f6.txt"), "six\n").unwrap();
    let (v, _) = p.dry_then_build(&[]);
    assert_eq!(
        reason_of(&v, "COPY src/"),
        "CACHE MISS: COPY src/ /src/: 2 added, 1 removed: src/f5.txt (added), src/f6.txt (added), src/f4.txt (removed)"
    );

    // A build arg: the COPY stays cached, the RUN says which arg.
    let (v, _) = p.dry_then_build(&["--build-arg", "FLAVOUR=spicy"]);
    assert_eq!(reason_of(&v, "COPY src/"), "CACHED");
    assert!(reason_of(&v, "RUN cat").ends_with(": build arg FLAVOUR changed: \"plain\" → \"spicy\""), "{v:#?}");

    // The environment from an earlier ENV.
    p.dockerfile("slow", "RUN echo final > /final");
    let (v, _) = p.dry_then_build(&["--build-arg", "FLAVOUR=spicy"]);
    assert!(reason_of(&v, "RUN cat").ends_with(": environment MODE changed: \"fast\" → \"slow\""), "{v:#?}");

    // An edited instruction.
    p.dockerfile("slow", "RUN echo final2 > /final");
    let (v, _) = p.dry_then_build(&["--build-arg", "FLAVOUR=spicy"]);
    assert_eq!(
        reason_of(&v, "RUN echo final2"),
        "CACHE MISS: RUN echo final2 > /final: instruction changed: RUN echo final > /final → RUN echo final2 > /final"
    );

    // The base image moves under its tag.
    push_base(&base, "two");
    let (v, log) = p.dry_then_build(&["--build-arg", "FLAVOUR=spicy", "--pull=always"]);
    let copy = reason_of(&v, "COPY src/");
    assert!(
        copy.starts_with(&format!("CACHE MISS: FROM {base}: base image {base} changed: sha256:"))
            && copy.contains(" → sha256:"),
        "{copy}\n{log}"
    );

    // --no-cache and --no-cache-filter.
    let (v, _) = p.dry_then_build(&["--build-arg", "FLAVOUR=spicy", "--no-cache"]);
    assert_eq!(reason_of(&v, "COPY src/"), "CACHE MISS: COPY src/ /src/: --no-cache");
    let (v, _) = p.dry_then_build(&["--build-arg", "FLAVOUR=spicy", "--no-cache-filter", "base"]);
    assert_eq!(reason_of(&v, "COPY src/"), "CACHE MISS: COPY src/ /src/: --no-cache-filter base");
    // Keys do not depend on results: the rerun COPY has the same key, the next stage is cached.
    assert_eq!(reason_of(&v, "RUN echo final2"), "CACHED");

    // rawjson carries the reason as fields.
    let root = p.root.path();
    std::fs::write(src.join("f1.txt"), "file 1, edited\n").unwrap();
    let out = strata(
        root,
        &["build", "--progress=rawjson", "--dry-run", "--build-arg", "FLAVOUR=spicy", p.ctx.path().to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let miss = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "cache_miss" && e["name"].as_str().unwrap_or("").contains("COPY src/"))
        .expect("a cache_miss event for the COPY");
    assert_eq!(miss["kind"], "files");
    assert_eq!(miss["dry_run"], true);
    assert_eq!(miss["reason"], "COPY src/ /src/: 1 file changed: src/f1.txt (content)");
}

/// `strata history` output, with what changes from run to run replaced.
fn normalized(out: &std::process::Output, ctx: &Path) -> String {
    assert!(out.status.success(), "{}", text(out));
    let s = String::from_utf8_lossy(&out.stdout).replace(ctx.to_str().unwrap(), "[CTX]");
    regex_lite(&s)
}

/// Replace ids, times, durations and keys (no regex crate in the tests: by hand).
fn regex_lite(s: &str) -> String {
    let mut out = Vec::new();
    for line in s.lines() {
        let words: Vec<String> = line
            .split(' ')
            .map(|w| {
                if let Some(id) = w.strip_suffix(':') {
                    if id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return "[HEX]:".to_string();
                    }
                }
                let hex = w.len() == 12 && w.bytes().all(|b| b.is_ascii_hexdigit());
                let time = w.len() == 20 && w.ends_with('Z') && w.as_bytes().get(10) == Some(&b'T');
                let dur = w.ends_with('s') && w[..w.len() - 1].parse::<f64>().is_ok() && w.contains('.');
                if hex {
                    "[HEX]".to_string()
                } else if time {
                    "[TIME]".to_string()
                } else if dur {
                    "[DUR]".to_string()
                } else {
                    w.to_string()
                }
            })
            .collect();
        // Column widths depend on the replaced values: squeeze runs of spaces.
        let joined = words.join(" ");
        let mut squeezed = String::new();
        let mut prev_space = false;
        for c in joined.chars() {
            if c == ' ' && prev_space {
                continue;
            }
            prev_space = c == ' ';
            squeezed.push(c);
        }
        out.push(squeezed);
    }
    out.join("\n") + "\n"
}

#[test]
fn history_lists_shows_and_diffs_builds() {
    let Some(_env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nCOPY app/ /app/\nRUN cat /app/a > /out\n").unwrap();
    std::fs::create_dir(ctx.path().join("app")).unwrap();
    std::fs::write(ctx.path().join("app/a"), "a\n").unwrap();
    let out = build_with(root.path(), ctx.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(ctx.path().join("app/a"), "a, edited\n").unwrap();
    let out = build_with(root.path(), ctx.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));

    let ls = normalized(&strata(root.path(), &["history", "ls"]), ctx.path());
    insta::assert_snapshot!("history_ls", ls);
    let show = normalized(&strata(root.path(), &["history", "show", "latest"]), ctx.path());
    insta::assert_snapshot!("history_show", show);
    let diff = normalized(&strata(root.path(), &["history", "diff", "latest~1", "latest"]), ctx.path());
    insta::assert_snapshot!("history_diff", diff);

    let json = strata(root.path(), &["history", "diff", "latest~1", "latest", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(v["changes"][0]["kind"], "files", "{v:#}");
    let ls: serde_json::Value =
        serde_json::from_slice(&strata(root.path(), &["history", "ls", "--format", "json"]).stdout).unwrap();
    assert_eq!(ls.as_array().map(|a| a.len()), Some(2));
    assert_eq!((ls[0]["ran"].as_u64(), ls[0]["cached"].as_u64()), (Some(2), Some(0)));

    // A cache that travels: a miss in a fresh store says its key was not imported either.
    let cache = tempfile::tempdir().unwrap();
    let dest = format!("type=local,dest={}", cache.path().display());
    let out = build_with(root.path(), ctx.path(), &["--cache-to", &dest]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(ctx.path().join("app/a"), "a, edited again\n").unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let src = format!("type=local,src={}", cache.path().display());
    let out = build_with(fresh.path(), ctx.path(), &["--cache-from", &src]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("CACHE MISS: COPY app/ /app/: no earlier build of this step (not among the 3 imported cache records either)"),
        "{log}"
    );

    let bad = strata(root.path(), &["history", "show", "ffffffffffff"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("no build \"ffffffffffff\" in the history"), "{}", text(&bad));
}

#[test]
fn the_record_of_a_30000_file_copy_is_small_and_prune_removes_records() {
    let Some(_env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nCOPY data/ /data/\n").unwrap();
    for d in 0..100 {
        let dir = ctx.path().join(format!("data/d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..300 {
            std::fs::write(dir.join(format!("file-{f:04}.txt")), format!("{d} {f}\n")).unwrap();
        }
    }
    let out = build_with(root.path(), ctx.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(ctx.path().join("data/d050/file-0100.txt"), "changed\n").unwrap();
    let out = build_with(root.path(), ctx.path(), &[]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("COPY data/ /data/: 1 file changed: data/d050/file-0100.txt (content)"), "{log}");
    let size = dir_size(&root.path().join("history"));
    // Two builds, two file lists of 30 100 entries each.
    assert!(size < 4 << 20, "the history of two 30 000-file builds takes {size} bytes");
    assert!(size > 100 << 10, "the file lists are missing ({size} bytes)");

    let out = strata(root.path(), &["prune", "--all"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 build records"), "{}", text(&out));
    assert_eq!(dir_size(&root.path().join("history")), 0);
    let ls = strata(root.path(), &["history", "ls", "--format", "json"]);
    assert_eq!(String::from_utf8_lossy(&ls.stdout).trim(), "[]");
}

fn dir_size(p: &Path) -> u64 {
    walk(p).iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum()
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(p) else { return out };
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}
