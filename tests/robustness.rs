//! A shared store under stress: two builds at once on one root, and a build killed
//! with SIGKILL in the middle of a RUN, then run again.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn write_ctx(df: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("Dockerfile"), df).unwrap();
    std::fs::write(d.path().join("file.txt"), "content").unwrap();
    d
}

fn spawn_build(root: &std::path::Path, bb: &str, ctx: &std::path::Path, tag: &str) -> std::process::Child {
    Command::new(strata_bin())
        .arg("--root")
        .arg(root)
        .args(["build", "--progress=plain", "--build-context", bb, "-t", tag])
        .arg(ctx)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn two_concurrent_builds_share_one_root() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let bb = busybox_context(&env);
    let a = write_ctx("FROM busybox\nRUN echo shared > /shared && sleep 1\nCOPY file.txt /a.txt\nRUN echo a > /a\n");
    let b = write_ctx("FROM busybox\nRUN echo shared > /shared && sleep 1\nCOPY file.txt /b.txt\nRUN echo b > /b\n");
    let ca = spawn_build(root.path(), &bb, a.path(), "a");
    let cb = spawn_build(root.path(), &bb, b.path(), "b");
    let oa = ca.wait_with_output().unwrap();
    let ob = cb.wait_with_output().unwrap();
    assert!(oa.status.success(), "build a: {}", text(&oa));
    assert!(ob.status.success(), "build b: {}", text(&ob));
    // The store is consistent: both rebuild entirely from the cache.
    for (ctx, tag) in [(&a, "a"), (&b, "b")] {
        let o = strata(
            root.path(),
            &["build", "--progress=plain", "--build-context", &bb, "-t", tag, ctx.path().to_str().unwrap()],
        );
        assert!(o.status.success() && text(&o).contains("0 steps run"), "{}", text(&o));
    }
    let images = strata(root.path(), &["images"]);
    assert!(
        text(&images).contains("docker.io/library/a:latest") && text(&images).contains("docker.io/library/b:latest"),
        "{}",
        text(&images)
    );
}

#[test]
fn sigkill_mid_step_leaves_a_store_the_next_build_trusts() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let bb = busybox_context(&env);
    // The RUN waits (5 minutes at most) until `go` appears in the bind-mounted context:
    // the first build is killed while it waits, the next one finds it there.
    let ctx = write_ctx(
        "FROM busybox\nCOPY file.txt /f.txt\nRUN --mount=type=bind,source=.,target=/c i=0; \\\n    while [ ! -e /c/go ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done; echo finished > /x\n",
    );
    let mut child = spawn_build(root.path(), &bb, ctx.path(), "killed");
    // Wait until the RUN is running (its container exists), then SIGKILL strata.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list =
            Command::new("runc").arg("--root").arg(root.path().join("runc")).args(["list", "-q"]).output().unwrap();
        if !String::from_utf8_lossy(&list.stdout).trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the RUN never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    std::fs::write(ctx.path().join("go"), "").unwrap();
    // The next build cleans up what the killed one left and succeeds.
    let o = strata(
        root.path(),
        &["build", "--progress=plain", "--build-context", &bb, "-t", "killed", ctx.path().to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let list = Command::new("runc").arg("--root").arg(root.path().join("runc")).args(["list", "-q"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&list.stdout).trim().is_empty(),
        "leftover containers: {}",
        String::from_utf8_lossy(&list.stdout)
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(root.path().to_str().unwrap()), "leftover mounts under the store");
    let tmp: Vec<_> = std::fs::read_dir(root.path().join("snapshots"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("tmp-"))
        .collect();
    assert!(tmp.is_empty(), "leftover scratch dirs: {tmp:?}");
    // And the result is right: a third build is fully cached.
    let o = strata(
        root.path(),
        &["build", "--progress=plain", "--build-context", &bb, "-t", "killed", ctx.path().to_str().unwrap()],
    );
    assert!(o.status.success() && text(&o).contains("0 steps run"), "{}", text(&o));
}
