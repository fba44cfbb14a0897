//! Build outputs besides the store and OCI layouts — `-o type=local`, `type=tar`,
//! `type=docker` — and store housekeeping (`strata prune`), through the strata binary.
//! Independent readers check the results: GNU tar, skopeo, and (when a daemon is
//! reachable) `docker load` + `docker run`.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use common::*;

const DOCKERFILE: &str = "FROM busybox
RUN mkdir -p /gone/sub /opq && echo x > /gone/sub/f && echo old > /opq/old
RUN rm /bin/vi && rm -rf /gone /opq && mkdir /opq && echo new > /opq/new \\
 && echo hello-from-strata > /file && ln -s file /link && ln /file /hard \\
 && mkdir -p /data/dir && echo deep > /data/dir/deep && chmod 750 /data/dir
";

/// The real docker CLI (not a wrapper) with a daemon behind it, or None (loudly).
fn docker() -> Option<&'static str> {
    let bin = "/usr/bin/docker";
    let ok =
        Path::new(bin).exists() && Command::new(bin).arg("info").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        skipped(&format!("no Docker daemon ({bin} or its daemon is unavailable): docker load/run NOT checked"));
        return None;
    }
    Some(bin)
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// docker load the archive, run `cat PATH` in IMAGE, remove the image.
fn docker_cat(docker: &str, archive: &Path, image: &str, path: &str) -> String {
    let loaded = run(Command::new(docker).arg("load").arg("-i").arg(archive));
    assert!(loaded.contains(image), "docker load did not name {image}: {loaded}");
    let out = Command::new(docker).args(["run", "--rm", "--network=none", image, "cat", path]).output().unwrap();
    let _ = Command::new(docker).args(["rmi", "-f", image]).output();
    assert!(out.status.success(), "docker run failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn build(root: &Path, ctx: &str, dir: &Path, extra: &[&str]) {
    let mut args = vec!["build", "--progress=plain", "--build-context", ctx];
    args.extend_from_slice(extra);
    args.push(dir.to_str().unwrap());
    let o = strata(root, &args);
    assert!(o.status.success(), "build failed: {}", text(&o));
}

#[test]
fn local_tar_and_docker_outputs() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let ctx_dir = work.path().join("ctx");
    std::fs::create_dir_all(&ctx_dir).unwrap();
    std::fs::write(ctx_dir.join("Dockerfile"), DOCKERFILE).unwrap();
    let ctx = busybox_context(&env);

    // type=local: the merged file system.
    let out = work.path().join("rootfs");
    build(root.path(), &ctx, &ctx_dir, &["-o", &format!("type=local,dest={}", out.display())]);
    assert!(std::fs::symlink_metadata(out.join("bin/vi")).is_err(), "vi was deleted in the image");
    assert!(out.join("bin/busybox").is_file());
    assert_eq!(std::fs::read_link(out.join("bin/ls")).unwrap(), Path::new("busybox"));
    assert_eq!(std::fs::read_to_string(out.join("file")).unwrap(), "hello-from-strata\n");
    assert_eq!(std::fs::read_link(out.join("link")).unwrap(), Path::new("file"));
    let (f, h) = (std::fs::metadata(out.join("file")).unwrap(), std::fs::metadata(out.join("hard")).unwrap());
    assert_eq!((f.dev(), f.ino()), (h.dev(), h.ino()), "hard link kept");
    assert!(!out.join("gone").exists(), "a directory removed in a later layer is absent");
    assert_eq!(std::fs::read_to_string(out.join("opq/new")).unwrap(), "new\n");
    assert!(!out.join("opq/old").exists(), "an opaque directory hides the lower one");
    assert_eq!(std::fs::metadata(out.join("data/dir")).unwrap().mode() & 0o7777, 0o750);
    assert_eq!(std::fs::read_to_string(out.join("data/dir/deep")).unwrap(), "deep\n");
    let mut stack = vec![out.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            assert!(!m.file_type().is_char_device(), "whiteout leaked: {}", e.path().display());
            assert_eq!(m.uid(), 0, "{} owned by root", e.path().display());
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    // `-o DIR` alone is type=local.
    let out2 = work.path().join("rootfs2");
    build(root.path(), &ctx, &ctx_dir, &["-o", out2.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(out2.join("file")).unwrap(), "hello-from-strata\n");

    // type=tar: the same tree, one deterministic tar; read back by GNU tar.
    let tar_file = work.path().join("rootfs.tar");
    build(root.path(), &ctx, &ctx_dir, &["-o", &format!("type=tar,dest={}", tar_file.display())]);
    let listing = run(Command::new("tar").arg("-tf").arg(&tar_file));
    let names: HashSet<&str> = listing.lines().collect();
    for want in ["bin/", "bin/busybox", "bin/ls", "file", "hard", "link", "opq/", "opq/new", "data/dir/deep"] {
        assert!(names.contains(want), "{want} missing from the tar: {listing}");
    }
    for gone in ["bin/vi", "gone/", "gone/sub/f", "opq/old"] {
        assert!(!names.contains(gone), "{gone} should not be in the tar");
    }
    let verbose = run(Command::new("tar").args(["--numeric-owner", "-tvf"]).arg(&tar_file));
    assert!(verbose.lines().any(|l| l.contains("hard link to file")), "{verbose}");
    assert!(verbose.lines().all(|l| l.split_whitespace().nth(1) == Some("0/0")), "owners are root: {verbose}");
    let x = work.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    run(Command::new("tar").arg("-xf").arg(&tar_file).arg("-C").arg(&x));
    assert_eq!(std::fs::read_to_string(x.join("hard")).unwrap(), "hello-from-strata\n");
    // `-o -` streams the same bytes to standard output.
    let o = strata(
        root.path(),
        &["build", "--progress=plain", "--build-context", &ctx, "-o", "-", ctx_dir.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(o.stdout == std::fs::read(&tar_file).unwrap(), "tar on stdout differs from the tar file");

    // type=docker: manifest.json + an OCI layout, Docker media types.
    let image = format!("strata-outputs-test:{}", std::process::id());
    let archive = work.path().join("image.tar");
    build(root.path(), &ctx, &ctx_dir, &["-t", &image, "-o", &format!("type=docker,dest={}", archive.display())]);
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    let unpacked = work.path().join("archive");
    std::fs::create_dir_all(&unpacked).unwrap();
    run(Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&unpacked));
    let mj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("manifest.json")).unwrap()).unwrap();
    let entries = mj.as_array().expect("manifest.json is a list");
    assert_eq!(entries.len(), 1);
    let config = entries[0]["Config"].as_str().unwrap();
    assert!(config.starts_with("blobs/sha256/") && unpacked.join(config).is_file(), "{mj}");
    assert_eq!(entries[0]["RepoTags"], serde_json::json!([image]));
    let layers = entries[0]["Layers"].as_array().unwrap();
    assert!(layers.len() >= 2, "{mj}");
    for l in layers {
        assert!(unpacked.join(l.as_str().unwrap()).is_file(), "{l} missing");
    }
    assert!(unpacked.join("oci-layout").is_file());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("index.json")).unwrap()).unwrap();
    let desc = &index["manifests"][0];
    assert_eq!(desc["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(desc["annotations"]["io.containerd.image.name"], format!("docker.io/library/{image}"));
    let manifest_path =
        unpacked.join("blobs/sha256").join(desc["digest"].as_str().unwrap().trim_start_matches("sha256:"));
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.docker.container.image.v1+json");
    for l in manifest["layers"].as_array().unwrap() {
        // Built layers stay plain tars (as Docker's own image store keeps them); base
        // layers keep the compression they were pulled with.
        let mt = l["mediaType"].as_str().unwrap();
        assert!(
            mt == "application/vnd.docker.image.rootfs.diff.tar.gzip"
                || mt == "application/vnd.docker.image.rootfs.diff.tar",
            "{mt}"
        );
    }
    let listing = run(Command::new("tar").args(["--numeric-owner", "-tvf"]).arg(&archive));
    assert!(listing.lines().all(|l| l.split_whitespace().nth(1) == Some("0/0")), "{listing}");
    let names: Vec<&str> = listing.lines().map(|l| l.split_whitespace().last().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries sorted");
    // skopeo reads it as a docker archive.
    let inspect = run(Command::new("skopeo").arg("inspect").arg(format!("docker-archive:{}", archive.display())));
    assert!(inspect.contains("\"Layers\""), "{inspect}");
    if let Some(docker) = docker() {
        assert_eq!(docker_cat(docker, &archive, &image, "/file"), "hello-from-strata\n");
    }
}

/// Apparent size of blobs + snapshots, each inode once (as `du -b`).
fn store_size(root: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![root.join("blobs"), root.join("snapshots")];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        if !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        total += m.len();
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    total
}

#[test]
fn prune_keeps_named_images_and_fits_the_limit() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let ctx = busybox_context(&env);
    let name = "prune-test:latest";
    let dirs: Vec<_> = (1..=3)
        .map(|n| {
            let d = work.path().join(format!("ctx{n}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("Dockerfile"),
                format!("FROM busybox\nRUN head -c 4000000 /dev/urandom > /big && echo build-{n} > /n\n"),
            )
            .unwrap();
            d
        })
        .collect();
    for d in &dirs {
        build(root.path(), &ctx, d, &["-t", name]);
    }
    let before = store_size(root.path());
    assert!(before > 20_000_000, "three 4MB layers and their snapshots: {before}");

    // A plain prune keeps the build cache: the last build is still fully cached.
    let o = strata(root.path(), &["prune"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Total reclaimed space"), "{}", text(&o));
    let o = strata(
        root.path(),
        &["build", "--progress=plain", "--build-context", &ctx, "-t", name, dirs[2].to_str().unwrap()],
    );
    assert!(o.status.success() && text(&o).contains("0 steps run"), "{}", text(&o));

    let o = strata(root.path(), &["prune", "--keep-storage", "10MB"]);
    assert!(o.status.success(), "{}", text(&o));
    let after = store_size(root.path());
    assert!(after <= 10_000_000, "store still {after} bytes after prune --keep-storage 10MB: {}", text(&o));
    assert!(after < before);

    // The named image is intact: saved, read by umoci, loaded by docker.
    let saved = work.path().join("saved.tar");
    let o = strata(root.path(), &["save", name, "-o", saved.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let rootfs = umoci_unpack(&saved, work.path(), "latest");
    assert_eq!(std::fs::read_to_string(rootfs.join("n")).unwrap(), "build-3\n");
    assert_eq!(std::fs::metadata(rootfs.join("big")).unwrap().len(), 4_000_000);
    let fresh = tempfile::tempdir().unwrap();
    let o = strata(fresh.path(), &["load", saved.to_str().unwrap(), "-t", "reloaded:1"]);
    assert!(o.status.success(), "{}", text(&o));
    // Without -t, the name the layout carries (io.containerd.image.name), as docker load.
    let o = strata(fresh.path(), &["load", saved.to_str().unwrap()]);
    assert!(text(&o).contains("Loaded image: docker.io/library/prune-test:latest"), "{}", text(&o));
    let docker_tar = work.path().join("saved-docker.tar");
    let o = strata(root.path(), &["save", name, "-o", docker_tar.to_str().unwrap(), "--format", "docker"]);
    assert!(o.status.success(), "{}", text(&o));
    if let Some(docker) = docker() {
        let tag = format!("prune-test-{}:latest", std::process::id());
        let o = strata(root.path(), &["tag", name, &tag]);
        assert!(o.status.success(), "{}", text(&o));
        let o = strata(root.path(), &["save", &tag, "-o", docker_tar.to_str().unwrap(), "--format", "docker"]);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(docker_cat(docker, &docker_tar, &tag, "/n"), "build-3\n");
    }

    // ... and still pushable after prune --keep-storage: every blob the image needs is
    // in the store. skopeo (an independent client) reads it back from the registry,
    // blobs included, and umoci unpacks what it pulled.
    let remote = format!("{}/{}:v1", env["RIG_REGISTRY"], unique_name("strata-prune"));
    let o = strata(root.path(), &["tag", name, &remote]);
    assert!(o.status.success(), "{}", text(&o));
    let o = strata(root.path(), &["push", "--progress=plain", &remote]);
    assert!(o.status.success(), "push after prune --keep-storage 10MB: {}", text(&o));
    let pushed = String::from_utf8_lossy(&o.stdout).into_owned();
    let digest = pushed.split_whitespace().find(|w| w.starts_with("sha256:")).expect("push prints the digest");
    let inspect = run(Command::new("skopeo").args(["inspect", "--tls-verify=false"]).arg(format!("docker://{remote}")));
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Digest"], digest, "{inspect}");
    assert_eq!(inspect["Layers"].as_array().map(Vec::len), Some(2), "busybox + the RUN layer: {inspect}");
    let pulled = work.path().join("pulled");
    run(Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{remote}"))
        .arg(format!("oci:{}:v1", pulled.display())));
    let bundle = work.path().join("pulled-bundle");
    run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:v1", pulled.display())).arg(&bundle));
    assert_eq!(std::fs::read_to_string(bundle.join("rootfs/n")).unwrap(), "build-3\n");
    assert_eq!(std::fs::metadata(bundle.join("rootfs/big")).unwrap().len(), 4_000_000);
    let _ = Command::new("skopeo").args(["delete", "--tls-verify=false"]).arg(format!("docker://{remote}")).output();

    // Builds still work after a prune (what was dropped is rebuilt).
    build(root.path(), &ctx, &dirs[0], &["-t", "again"]);

    // --all drops the whole build cache but never a named image's blobs.
    let o = strata(root.path(), &["prune", "--all"]);
    assert!(o.status.success(), "{}", text(&o));
    let snaps: Vec<_> = std::fs::read_dir(root.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(snaps, ["empty"], "no snapshot left after prune --all");
    assert_eq!(std::fs::read_dir(root.path().join("cache")).unwrap().count(), 0);
    for n in [name, "again"] {
        let o = strata(root.path(), &["save", n, "-o", work.path().join("s.tar").to_str().unwrap()]);
        assert!(o.status.success(), "{n}: {}", text(&o));
    }
    // An unknown filter is a usage error.
    let o = strata(root.path(), &["prune", "--filter", "label=x"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
