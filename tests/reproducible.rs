//! Reproducible output: the same build in two fresh roots with SOURCE_DATE_EPOCH set
//! gives the same digests, whatever `--jobs`, for gzip and zstd OCI layouts.

mod common;

use std::process::Command;

use common::*;

fn oci_index_digest(tar: &std::path::Path) -> String {
    let work = tempfile::tempdir().unwrap();
    assert!(Command::new("tar").arg("-xf").arg(tar).arg("-C").arg(work.path()).status().unwrap().success());
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.path().join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_string()
}

#[test]
fn same_inputs_same_digests_in_fresh_roots() {
    let Some(env) = test_env() else { return };
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox AS a\nRUN echo one > /one && mkdir -p /d/e && echo x > /d/e/f\nFROM busybox\nCOPY data.txt /data.txt\nCOPY --from=a /one /d /from-a/\nRUN ln -s /data.txt /link && ln /data.txt /hard\n",
    )
    .unwrap();
    std::fs::write(ctx.path().join("data.txt"), "data").unwrap();
    let bb = busybox_context(&env);
    let mut results = Vec::new();
    for (jobs, compression) in [("1", "gzip"), ("2", "gzip"), ("1", "zstd"), ("2", "zstd")] {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("img.tar");
        let meta = root.path().join("meta.json");
        let o = strata(
            root.path(),
            &[
                "--jobs",
                jobs,
                "build",
                "--progress=plain",
                "--source-date-epoch",
                "0",
                "--build-context",
                &bb,
                "--metadata-file",
                meta.to_str().unwrap(),
                "-o",
                &format!("type=oci,dest={},compression={compression}", out.display()),
                ctx.path().to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
        results.push((
            jobs,
            compression,
            m["containerimage.config.digest"].as_str().unwrap().to_string(),
            oci_index_digest(&out),
        ));
    }
    for c in ["gzip", "zstd"] {
        let same: Vec<_> = results.iter().filter(|r| r.1 == c).collect();
        assert_eq!(same[0].2, same[1].2, "config digests differ across --jobs for {c}: {results:?}");
        assert_eq!(same[0].3, same[1].3, "manifest digests differ across --jobs for {c}: {results:?}");
    }
    // The config (diff_ids, history, created) does not depend on the compression.
    assert_eq!(results[0].2, results[2].2, "{results:?}");
}
