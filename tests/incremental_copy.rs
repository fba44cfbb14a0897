//! Incremental COPY (issue #20), through the binary: when one file of the context
//! changes, the new COPY snapshot links the unchanged files from the earlier one
//! instead of copying them — and the result is the full COPY's, file by file (type,
//! mode, owner, mtime, xattrs, hard links, content) and by image digest; the earlier
//! snapshot is never changed (a later RUN that appends to a linked file gets a copy).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

const EPOCH: &str = "1700000000";

fn context() -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM busybox AS copied\nCOPY . /app/\nFROM copied\nRUN echo appended >> /app/src/keep.txt\n",
    )
    .unwrap();
    for d in ["src/a/b", "src/empty", "bin"] {
        std::fs::create_dir_all(c.join(d)).unwrap();
    }
    for i in 0..200 {
        std::fs::write(c.join(format!("src/a/b/f{i}.txt")), format!("file {i}\n").repeat(i + 1)).unwrap();
    }
    std::fs::write(c.join("src/keep.txt"), "keep\n").unwrap();
    std::fs::write(c.join("src/change.txt"), "before\n").unwrap();
    std::fs::write(c.join("src/remove.txt"), "gone later\n").unwrap();
    std::fs::write(c.join("bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    std::fs::set_permissions(c.join("bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(c.join("src/private"), "p\n").unwrap();
    std::fs::set_permissions(c.join("src/private"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(c.join("src/hard1"), "linked\n").unwrap();
    std::fs::hard_link(c.join("src/hard1"), c.join("src/hard2")).unwrap();
    std::os::unix::fs::symlink("a/b/f1.txt", c.join("src/link")).unwrap();
    let st = std::process::Command::new("python3")
        .args(["-c", "import os, sys; os.setxattr(sys.argv[1], 'user.origin', b'ctx')"])
        .arg(c.join("src/keep.txt"))
        .status();
    assert!(st.is_ok_and(|s| s.success()), "setting an extended attribute on the context file failed");
    ctx
}

/// The COPY's stage alone (the RUN after it writes the time into /etc and /dev).
fn build(root: &Path, ctx: &Path, dest: &Path) -> String {
    build_target(root, ctx, dest, &["--target", "copied"])
}

/// The entries of two trees that differ, both ways.
fn differences(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            Some(w) if w == v => {}
            other => out.push(format!("{k}: {v} vs {other:?}")),
        }
    }
    out.extend(b.keys().filter(|k| !a.contains_key(*k)).map(|k| format!("{k}: only in the second")));
    out
}

fn build_target(root: &Path, ctx: &Path, dest: &Path, extra: &[&str]) -> String {
    let out = format!("type=local,dest={}", dest.display());
    let mut args = vec!["--log-level", "info", "-o", &out, "-o", "type=image", "-t", "inc:1"];
    args.extend_from_slice(extra);
    let o = build_with_env(root, ctx, &args, &[("SOURCE_DATE_EPOCH", EPOCH)]);
    assert!(o.status.success(), "{}", text(&o));
    let log = text(&o);
    let o = strata(root, &["inspect", "inc:1"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    format!("{}\n{}", v["descriptor"]["digest"].as_str().unwrap(), log)
}

fn reused(log: &str) -> u64 {
    // Without the log's colours.
    let mut plain = String::new();
    let mut in_escape = false;
    for ch in log.chars() {
        match (in_escape, ch) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, c) => plain.push(c),
        }
    }
    plain
        .lines()
        .find(|l| l.contains("unchanged files linked from its earlier result"))
        .and_then(|l| l.split("reused").nth(1))
        .and_then(|rest| {
            rest.trim_start_matches(|c: char| !c.is_ascii_digit())
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .map(str::to_string)
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_copy_after_one_changed_file_links_the_rest_and_equals_a_full_copy() {
    let Some(_env) = test_env() else { return };
    let ctx = context();
    let out = tempfile::tempdir().unwrap();
    let incremental = tempfile::tempdir().unwrap();

    let first = build(incremental.path(), ctx.path(), &out.path().join("first"));
    let first_digest = first.lines().next().unwrap().to_string();
    assert_eq!(reused(&first), 0, "nothing to reuse in a first build");

    // One file changed, one mode changed, one added, one removed.
    std::fs::write(ctx.path().join("src/change.txt"), "after\n").unwrap();
    std::fs::set_permissions(ctx.path().join("src/a/b/f3.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(ctx.path().join("src/added.txt"), "new\n").unwrap();
    std::fs::remove_file(ctx.path().join("src/remove.txt")).unwrap();
    let second = build(incremental.path(), ctx.path(), &out.path().join("second"));
    let n = reused(&second);
    // 200 f*.txt (one of them chmod'ed), keep.txt, private, bin/tool are unchanged; the
    // hard-linked pair is always copied.
    assert!((200..=203).contains(&n), "expected the unchanged files to be linked, got {n}: {second}");

    // The same context in a fresh root: a full COPY.
    let fresh = tempfile::tempdir().unwrap();
    let full = build(fresh.path(), ctx.path(), &out.path().join("full"));
    assert_eq!(reused(&full), 0);
    assert_eq!(second.lines().next(), full.lines().next(), "the image digests differ");
    let a = describe(&out.path().join("second"), true);
    let b = describe(&out.path().join("full"), true);
    assert_eq!(differences(&a, &b), Vec::<String>::new(), "incremental and full COPY differ");
    assert!(a["app/src/keep.txt"].contains("user.origin"), "{}", a["app/src/keep.txt"]);
    assert!(a["app/src/hard2"].contains("links:2=app/src/hard1"), "{}", a["app/src/hard2"]);

    // The snapshots linked from are never written: the RUN (the whole Dockerfile now)
    // appends to its own copy of keep.txt; the COPY result it ran on (the second's, whose
    // keep.txt is the first's, linked) still holds it as copied.
    let whole = build_target(incremental.path(), ctx.path(), &out.path().join("whole"), &[]);
    assert!(whole.contains("1 step run"), "{whole}");
    assert_eq!(std::fs::read_to_string(out.path().join("whole/app/src/keep.txt")).unwrap(), "keep\nappended\n");
    let copied = build(incremental.path(), ctx.path(), &out.path().join("copied"));
    assert!(copied.contains("0 steps run"), "{copied}");
    assert_eq!(std::fs::read_to_string(out.path().join("copied/app/src/keep.txt")).unwrap(), "keep\n");
    assert_eq!(differences(&describe(&out.path().join("copied"), true), &a), Vec::<String>::new());
    let _ = first_digest;

    // prune drops the pointers to earlier results whose snapshots it removed.
    let lineage = incremental.path().join("copy-lineage");
    assert!(std::fs::read_dir(&lineage).unwrap().count() > 0);
    let o = strata(incremental.path(), &["prune", "--all"]);
    assert!(o.status.success(), "{}", text(&o));
    for e in std::fs::read_dir(&lineage).unwrap() {
        let id = std::fs::read_to_string(e.unwrap().path()).unwrap();
        assert!(incremental.path().join("snapshots").join(id.trim()).join("fs").is_dir(), "dangling lineage {id}");
    }
}
