//! `--load` hands the image to a running Docker daemon through its API, as buildx does.
//! Skipped (loudly) where no daemon is reachable; without one, `--load` fails with exit 2
//! and points at `-o type=docker`.

mod common;

use std::process::Command;

use common::*;

fn daemon_running() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn load_into_a_running_docker_daemon() {
    let Some(env) = test_env() else { return };
    if !daemon_running() {
        skipped("no Docker daemon is running: --load NOT tested");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let tag = format!("strata-load-test:{}", std::process::id());
    let bb = busybox_context(&env);
    let dir = format!("{}/examples/hello", env!("CARGO_MANIFEST_DIR"));
    let o = strata(root.path(), &["build", "--progress=plain", "--load", "-t", &tag, "--build-context", &bb, &dir]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&format!("Loaded image: {tag}")), "{}", text(&o));
    let run = Command::new("docker").args(["run", "--rm", &tag]).output().unwrap();
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    assert!(run.status.success(), "{}", text(&run));
    assert!(String::from_utf8_lossy(&run.stdout).contains("built by strata on"), "{}", text(&run));
    // The temporary archive is gone.
    let leftovers: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("load-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn load_without_a_daemon_says_what_to_do_instead() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    let o = Command::new(strata_bin())
        .arg("--root")
        .arg(root.path())
        .args(["build", "--load", "-t", "x"])
        .arg(ctx.path())
        .env("DOCKER_HOST", format!("unix://{}/no.sock", root.path().display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no Docker daemon is reachable") && text(&o).contains("type=docker"), "{}", text(&o));
}
