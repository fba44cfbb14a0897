//! The store's lock is taken by opening the store (issue #13): `strata load`, `tag`
//! and `push` running while `strata prune --all` sweeps the same root lose nothing
//! they reported done. (Before, `load` of a 200 MB image beside a prune printed
//! `Loaded image` and exit 0, and its blobs were gone.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// An OCI tar of a busybox image with a 40 MB layer, and the root that built it.
fn big_image(work: &Path) -> PathBuf {
    let ctx = work.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    write_noise(&ctx.join("big.bin"), 40 << 20, 7);
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY big.bin /big.bin\n").unwrap();
    let tar = work.join("img.tar");
    let root = work.join("build-root");
    let to = format!("type=oci,dest={}", tar.display());
    let o = build_with(&root, &ctx, &["-t", "lockimg:1", "-o", &to]);
    assert!(o.status.success(), "{}", text(&o));
    tar
}

fn ok(o: &Output) -> bool {
    assert_no_panic(&text(o));
    o.status.success()
}

#[test]
fn load_tag_and_push_beside_prune_lose_nothing_reported_done() {
    let env = test_env().expect("the test environment (tests/setup) is required");
    let work = tempfile::tempdir().unwrap();
    let tar = big_image(work.path());
    let root = work.path().join("shared-root");
    let registry = env["RIG_REGISTRY"].clone();
    let repo = unique_repo("lock");

    // What each command reported done: names it created, references it pushed.
    // Prunes run back to back for as long as the other commands do (with the old,
    // lock-free commands this lost a loaded image in most runs).
    let busy = std::sync::atomic::AtomicUsize::new(2);
    let (names, pushed) = std::thread::scope(|s| {
        let pruner = s.spawn(|| {
            let mut prunes = 0;
            while busy.load(std::sync::atomic::Ordering::SeqCst) > 0 || prunes < 3 {
                let o = strata(&root, &["prune", "--all"]);
                assert!(ok(&o), "prune: {}", text(&o));
                prunes += 1;
            }
            prunes
        });
        let loader = s.spawn(|| {
            let mut names = Vec::new();
            for i in 0..6 {
                let name = format!("loaded-{i}:1");
                let o = strata(&root, &["load", tar.to_str().unwrap(), "--tag", &name]);
                assert!(ok(&o), "load: {}", text(&o));
                assert!(text(&o).contains("Loaded image"), "{}", text(&o));
                names.push(format!("docker.io/library/{name}"));
                // Tag and push what was just loaded, while the prunes go on.
                let tagged = format!("tagged-{i}:1");
                let o = strata(&root, &["tag", &name, &tagged]);
                assert!(ok(&o), "tag: {}", text(&o));
                names.push(format!("docker.io/library/{tagged}"));
            }
            busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            names
        });
        let pusher = s.spawn(|| {
            let mut pushed = Vec::new();
            for i in 0..3 {
                let name = format!("pushme-{i}:1");
                let o = strata(&root, &["load", tar.to_str().unwrap(), "--tag", &name]);
                assert!(ok(&o), "load: {}", text(&o));
                let target = format!("{registry}/{repo}:{i}");
                let o = strata(&root, &["tag", &name, &target]);
                assert!(ok(&o), "tag: {}", text(&o));
                let o = strata(&root, &["push", "--progress=plain", &target]);
                assert!(ok(&o), "push: {}", text(&o));
                pushed.push(target);
            }
            busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            pushed
        });
        let prunes = pruner.join().unwrap();
        eprintln!("{prunes} prunes ran beside the loads, tags and pushes");
        (loader.join().unwrap(), pusher.join().unwrap())
    });

    // Every name still has every blob: save reads them all, inspect its config.
    for name in &names {
        let out = work.path().join("saved.tar");
        let o = strata(&root, &["save", name, "-o", out.to_str().unwrap()]);
        assert!(ok(&o), "{name} lost blobs: {}", text(&o));
        let o = strata(&root, &["inspect", name]);
        assert!(ok(&o), "{name}: {}", text(&o));
    }
    // What was pushed is complete in the registry (skopeo, an independent reader).
    for target in &pushed {
        let dir = work.path().join("copied");
        let _ = std::fs::remove_dir_all(&dir);
        let o = std::process::Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{target}"))
            .arg(format!("oci:{}:x", dir.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{target}: {}", text(&o));
    }
}
