//! COPY of a large directory tree through the binary: the copy runs on several threads
//! and writes directories it creates straight into the overlay's upper directory, so
//! what arrives must still be exactly the source — every entry's type, mode, owner,
//! times, content, symlink target, extended attributes and hard links — whether the
//! destination directory is new, already there in a lower layer, or partly there.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

fn set_time(p: &Path, secs: i64) {
    let ts = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec { tv_sec: secs, tv_nsec: 0 },
        last_modification: rustix::fs::Timespec { tv_sec: secs, tv_nsec: 123_456_789 },
    };
    rustix::fs::utimensat(rustix::fs::CWD, p, &ts, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

/// A tree with enough files for every copying thread to get work, nested directories
/// with their own modes and times, hard links within and across directories,
/// symlinks, a setuid file and a user extended attribute.
fn make_tree(dir: &Path) {
    for a in 0..6 {
        for b in 0..5 {
            let d = dir.join(format!("d{a}/e{b}"));
            std::fs::create_dir_all(&d).unwrap();
            for f in 0..20 {
                let p = d.join(format!("f{f}.txt"));
                std::fs::write(&p, format!("{a}/{b}/{f}\n").repeat(f * 37 + 1)).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(if f % 3 == 0 { 0o755 } else { 0o640 }))
                    .unwrap();
                set_time(&p, 1_600_000_000 + (a * 100 + b * 10 + f) as i64);
            }
        }
    }
    std::fs::hard_link(dir.join("d0/e0/f1.txt"), dir.join("d0/e0/same-dir-link")).unwrap();
    std::fs::hard_link(dir.join("d0/e0/f2.txt"), dir.join("d5/e4/other-dir-link")).unwrap();
    std::os::unix::fs::symlink("../e0/f3.txt", dir.join("d1/e1/rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("d1/abs-link")).unwrap();
    std::fs::set_permissions(dir.join("d2/e2/f4.txt"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    xattr_set(&dir.join("d3/e3/f5.txt"), "user.strata", "kept").expect("user xattrs on the test file system");
    std::fs::set_permissions(dir.join("d4"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::set_permissions(dir.join("d4/e1"), std::fs::Permissions::from_mode(0o700)).unwrap();
    // Directory times last: creating entries changed them.
    for a in 0..6 {
        for b in 0..5 {
            set_time(&dir.join(format!("d{a}/e{b}")), 1_500_000_000 + (a * 10 + b) as i64);
        }
        set_time(&dir.join(format!("d{a}")), 1_400_000_000 + a as i64);
    }
    set_time(dir, 1_300_000_000);
}

fn xattr_set(p: &Path, name: &str, value: &str) -> rustix::io::Result<()> {
    rustix::fs::setxattr(p, name, value.as_bytes(), rustix::fs::XattrFlags::empty())
}

#[test]
fn copied_trees_arrive_exactly() {
    let root = tempfile::tempdir().unwrap();
    let ctx_dir = tempfile::tempdir().unwrap();
    let tree = ctx_dir.path().join("tree");
    make_tree(&tree);
    // New destination; an existing (lower-layer) one; one whose subdirectory and a file
    // exist below, so part of the copy merges into and replaces what is there.
    std::fs::write(
        ctx_dir.path().join("Dockerfile"),
        "FROM busybox\n\
         COPY tree /new/tree\n\
         WORKDIR /existing\n\
         COPY tree /existing/\n\
         RUN mkdir -p /partly/d0/e0 && echo old > /partly/d0/e0/f1.txt && echo keep > /partly/d0/e0/lower-only\n\
         COPY tree /partly/\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("rootfs");
    let o = build_with(root.path(), ctx_dir.path(), &["-o", &format!("type=local,dest={}", dest.display())]);
    assert!(o.status.success(), "{}", text(&o));

    // The source as COPY gives it: owned by root (no --chown).
    let want: BTreeMap<String, String> = describe(&tree, true)
        .into_iter()
        .map(|(k, v)| {
            let mut parts: Vec<String> = v.splitn(3, ' ').map(str::to_string).collect();
            parts[1] = "0:0".into();
            (k, parts.join(" "))
        })
        .collect();
    assert!(want.len() > 600, "the tree is big enough to spread over threads");
    assert!(want.values().any(|v| v.contains("user.strata=kept")), "{want:?}");

    for top in ["new/tree", "existing"] {
        let got = describe(&dest.join(top), true);
        for (k, v) in &want {
            assert_eq!(got.get(k), Some(v), "{top}/{k}");
        }
        assert_eq!(
            got.len(),
            want.len(),
            "{top}: {:?}",
            got.keys().filter(|k| !want.contains_key(*k)).collect::<Vec<_>>()
        );
    }
    // The merged destination: the copy replaced f1.txt, kept the lower-only file, and
    // every copied entry is as in the source (times of the pre-existing directories
    // are the source's too: COPY sets them).
    let got = describe(&dest.join("partly"), true);
    assert_eq!(std::fs::read_to_string(dest.join("partly/d0/e0/lower-only")).unwrap(), "keep\n");
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "partly/{k}");
    }
    assert_eq!(got.len(), want.len() + 1);
}
