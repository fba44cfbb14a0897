//! The copying snapshotter (where overlayfs cannot be mounted; forced here with
//! `STRATA_SNAPSHOTTER=copying`) builds the same file system as the overlay one: new,
//! changed, re-owned and removed files and directories, a directory replaced by a
//! file, hard links, FIFOs, COPY from the context and from a stage, a writable bind
//! mount whose writes are thrown away, and a second step that sees the first's work.

mod common;

use std::path::Path;

use common::*;

const DOCKERFILE: &str = r#"FROM busybox AS other
RUN mkdir -p /made && echo from-other > /made/file
FROM busybox
RUN mkdir -p /usr/sbin/sub /etc/network/if && echo f > /usr/sbin/sub/f && echo n > /etc/network/if/n && \
    echo old > /etc/old && echo keep > /etc/keep
COPY ctx/ /ctx/
RUN echo 'extra:x:1000:1000::/:/bin/sh' >> /etc/passwd && rm -f /bin/vi && rm -rf /etc/network && rm /etc/old && \
    mkdir -p /new/deep && echo new > /new/deep/file && ln /new/deep/file /new/link && \
    mkfifo /new/fifo && chmod 4711 /new/deep/file && chown 1:2 /new/deep && \
    rm -rf /usr/sbin && echo was-a-dir > /usr/sbin && chmod 700 /ctx && ln -s ../etc /new/etc
RUN --mount=type=bind,from=other,source=/made,target=/mnt,rw echo scribble > /mnt/file && \
    test "$(cat /new/deep/file)" = new && ! test -e /etc/old && cat /mnt/file > /seen-in-bind
COPY --from=other /made /from-other
"#;

fn build(root: &Path, ctx: &Path, snapshotter: &str, dest: &Path) -> String {
    let to = format!("type=local,dest={}", dest.display());
    let o = build_with_env(root, ctx, &["-o", &to], &[("STRATA_SNAPSHOTTER", snapshotter)]);
    let log = text(&o);
    assert!(o.status.success(), "{snapshotter}: {log}");
    log
}

#[test]
fn copying_snapshotter_builds_what_overlay_builds() {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::create_dir_all(ctx.path().join("ctx/sub")).unwrap();
    std::fs::write(ctx.path().join("ctx/sub/a.txt"), "a\n").unwrap();
    std::fs::write(ctx.path().join("ctx/b.txt"), "b\n").unwrap();
    let out = tempfile::tempdir().unwrap();
    let (overlay, copying) = (out.path().join("overlay"), out.path().join("copying"));
    let (root1, root2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    build(root1.path(), ctx.path(), "overlay", &overlay);
    build(root2.path(), ctx.path(), "copying", &copying);

    // Times differ between the two builds (the steps ran at different moments).
    let (want, got) = (describe(&overlay, false), describe(&copying, false));
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "{k}");
    }
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(extra.is_empty(), "only in the copying snapshotter's result: {extra:?}");
    // What the Dockerfile did is there (the comparison is not of two empty trees).
    assert_eq!(std::fs::read_to_string(copying.join("usr/sbin")).unwrap(), "was-a-dir\n");
    assert!(!copying.join("etc/old").exists() && !copying.join("etc/network").exists());
    assert!(copying.join("etc/keep").exists() && copying.join("bin").is_dir());
    assert!(std::fs::read_to_string(copying.join("etc/passwd")).unwrap().contains("extra:x:1000"));
    assert_eq!(std::fs::read_to_string(copying.join("seen-in-bind")).unwrap(), "scribble\n");
    assert_eq!(std::fs::read_to_string(copying.join("from-other/file")).unwrap(), "from-other\n");
    assert_eq!(std::fs::read_to_string(copying.join("ctx/sub/a.txt")).unwrap(), "a\n");

    // Nothing of the copies is left behind in the store.
    let leftovers: Vec<_> = std::fs::read_dir(root2.path().join("snapshots"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_unknown_snapshotter_is_refused() {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nRUN true\n").unwrap();
    let root = tempfile::tempdir().unwrap();
    let o = build_with_env(root.path(), ctx.path(), &[], &[("STRATA_SNAPSHOTTER", "zfs")]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("STRATA_SNAPSHOTTER=zfs"), "{log}");
}
