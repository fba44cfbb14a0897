//! The layer writer against real directories, read back with the `tar` crate as an
//! independent reader.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_exporter::layer::{write_layer, write_layer_tar, Compression, LayerError, LayerOptions};
use strata_oci::digest::Digest;
use strata_oci::media;
use strata_oci::store::BlobStore;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            strata_testsupport::skip::skipped("needs root (chown, mknod, trusted.* xattrs): this layer test NOT run");
            return;
        }
    };
}

fn set_mtime(path: &Path, secs: i64) {
    let ts = rustix::fs::Timespec { tv_sec: secs, tv_nsec: 0 };
    let times = rustix::fs::Timestamps { last_access: ts, last_modification: ts };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn write_file(path: &Path, content: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(content).unwrap();
}

/// A small tree with every kind of entry a RUN step's upper dir can hold.
/// `reverse` creates things in another order (different inode numbers and readdir order).
fn build_tree(root: &Path, reverse: bool, mtime: i64) {
    let mut steps: Vec<Box<dyn Fn()>> = vec![
        Box::new(|| {
            fs::create_dir_all(root.join("usr/bin")).unwrap();
            write_file(&root.join("usr/bin/tool"), b"#!/bin/sh\necho hi\n");
            fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        }),
        Box::new(|| {
            fs::create_dir_all(root.join("etc")).unwrap();
            write_file(&root.join("etc/hosts"), b"127.0.0.1 localhost\n");
            symlink("/usr/bin/tool", root.join("etc/tool-link")).unwrap();
        }),
        Box::new(|| {
            fs::create_dir_all(root.join("tmp")).unwrap();
            fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
            write_file(&root.join("big"), &vec![7u8; 70_000]);
        }),
    ];
    if reverse {
        steps.reverse();
    }
    for s in steps {
        s();
    }
    for p in ["usr/bin/tool", "usr/bin", "usr", "etc/hosts", "etc/tool-link", "etc", "tmp", "big"] {
        set_mtime(&root.join(p), mtime);
    }
}

struct Entry {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
    link: Option<String>,
    xattrs: Vec<(String, Vec<u8>)>,
    data: Vec<u8>,
}

fn read_tar(bytes: &[u8]) -> Vec<Entry> {
    let mut a = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let mut xattrs = Vec::new();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                if let Some(name) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        let h = e.header().clone();
        assert_eq!(h.username_bytes(), Some(&b""[..]), "uname must be empty");
        assert_eq!(h.groupname_bytes(), Some(&b""[..]), "gname must be empty");
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(Entry {
            path: String::from_utf8(e.path_bytes().into_owned()).unwrap(),
            kind: h.entry_type(),
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            size: e.size(),
            link: e.link_name_bytes().map(|l| String::from_utf8(l.into_owned()).unwrap()),
            xattrs,
            data,
        });
    }
    out
}

fn tar_of(dir: &Path, opts: &LayerOptions) -> (Vec<u8>, Digest) {
    let mut out = Vec::new();
    let d = write_layer_tar(dir, &mut out, opts).unwrap();
    assert_eq!(d, Digest::of_bytes(&out), "diff_id is the digest of the stream");
    (out, d)
}

fn opts(compression: Compression, epoch: Option<i64>) -> LayerOptions {
    LayerOptions { compression, source_date_epoch: epoch, oci_media_types: true }
}

#[test]
fn same_directory_twice_gives_the_same_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("diff");
    fs::create_dir(&dir).unwrap();
    build_tree(&dir, false, 1_600_000_000);
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    for c in [Compression::Gzip { level: 6 }, Compression::Zstd { level: 3 }, Compression::Uncompressed] {
        let a = write_layer(&dir, &store, &opts(c, None)).unwrap();
        let b = write_layer(&dir, &store, &opts(c, None)).unwrap();
        assert_eq!(a, b, "{c:?}");
        assert!(store.contains(&a.digest));
        assert_eq!(store.size(&a.digest).unwrap(), a.size);
    }
    assert_eq!(fs::read_dir(tmp.path().join("store/tmp")).unwrap().count(), 0, "no temp files left");
}

#[test]
fn different_mtimes_and_creation_order_with_epoch_give_the_same_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    build_tree(&a, false, 1_600_000_000);
    build_tree(&b, true, 1_700_000_000);
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    for c in [Compression::Gzip { level: 9 }, Compression::Zstd { level: 19 }, Compression::Uncompressed] {
        let la = write_layer(&a, &store, &opts(c, Some(1_500_000_000))).unwrap();
        let lb = write_layer(&b, &store, &opts(c, Some(1_500_000_000))).unwrap();
        assert_eq!(la, lb, "{c:?}");
        // Without the epoch the mtimes show.
        let la = write_layer(&a, &store, &opts(c, None)).unwrap();
        let lb = write_layer(&b, &store, &opts(c, None)).unwrap();
        assert_ne!(la.diff_id, lb.diff_id);
    }
}

#[test]
fn entries_are_sorted_with_file_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build_tree(dir, false, 1_600_000_000);
    set_mtime(&dir.join("etc/hosts"), 1_400_000_000);
    if is_root() {
        rustix::fs::chown(
            dir.join("etc/hosts"),
            Some(rustix::fs::Uid::from_raw(1234)),
            Some(rustix::fs::Gid::from_raw(5678)),
        )
        .unwrap();
        fs::set_permissions(dir.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    }
    rustix::fs::mkfifoat(rustix::fs::CWD, dir.join("fifo"), rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
    set_mtime(&dir.join("fifo"), 1_600_000_000);
    let (bytes, _) = tar_of(dir, &opts(Compression::Uncompressed, Some(1_500_000_000)));
    assert_eq!(bytes.len() % 512, 0);
    assert!(bytes.ends_with(&[0u8; 1024]));
    let entries = read_tar(&bytes);
    let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        names,
        ["big", "etc/", "etc/hosts", "etc/tool-link", "fifo", "tmp/", "usr/", "usr/bin/", "usr/bin/tool"]
    );
    let by = |p: &str| entries.iter().find(|e| e.path == p).unwrap();
    assert_eq!(by("big").data, vec![7u8; 70_000]);
    assert_eq!(by("big").kind, tar::EntryType::Regular);
    assert_eq!(by("etc/").kind, tar::EntryType::Directory);
    assert_eq!(by("tmp/").mode, 0o1777);
    assert_eq!(by("usr/bin/tool").mode, 0o4755);
    assert_eq!(by("etc/tool-link").kind, tar::EntryType::Symlink);
    assert_eq!(by("etc/tool-link").link.as_deref(), Some("/usr/bin/tool"));
    assert_eq!(by("fifo").kind, tar::EntryType::Fifo);
    assert_eq!(by("fifo").mode, 0o600);
    // Clamped to the epoch, or kept when older.
    assert_eq!(by("big").mtime, 1_500_000_000);
    assert_eq!(by("etc/hosts").mtime, 1_400_000_000);
    if is_root() {
        assert_eq!((by("etc/hosts").uid, by("etc/hosts").gid), (1234, 5678));
    } else {
        let m = fs::metadata(dir.join("etc/hosts")).unwrap();
        assert_eq!((by("etc/hosts").uid, by("etc/hosts").gid), (m.uid() as u64, m.gid() as u64));
    }
    // No PAX header is needed for any of these.
    assert!(!bytes.windows(12).any(|w| w == b"PaxHeaders.0"));
}

#[test]
fn whiteouts_and_opaque_dirs_become_wh_entries() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::create_dir_all(dir.join("opq/sub")).unwrap();
    write_file(&dir.join("opq/keep"), b"k");
    write_file(&dir.join("opq/-dash"), b"d");
    xattr::set(dir.join("opq"), "trusted.overlay.opaque", b"y").unwrap();
    xattr::set(dir.join("opq"), "trusted.overlay.impure", b"y").unwrap();
    let whiteout = |p: &Path| {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .unwrap()
    };
    whiteout(&dir.join("gone"));
    whiteout(&dir.join("opq/sub/deleted"));
    // A real device is stored as a device.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let (bytes, _) = tar_of(dir, &opts(Compression::Uncompressed, None));
    let entries = read_tar(&bytes);
    let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        names,
        [".wh.gone", "null", "opq/", "opq/.wh..wh..opq", "opq/-dash", "opq/keep", "opq/sub/", "opq/sub/.wh.deleted"]
    );
    for wh in [".wh.gone", "opq/.wh..wh..opq", "opq/sub/.wh.deleted"] {
        let e = entries.iter().find(|e| e.path == wh).unwrap();
        assert_eq!(e.kind, tar::EntryType::Regular, "{wh}");
        assert_eq!((e.size, e.mode, e.uid, e.gid), (0, 0, 0, 0), "{wh}");
    }
    let null = entries.iter().find(|e| e.path == "null").unwrap();
    assert_eq!(null.kind, tar::EntryType::Char);
    let opq = entries.iter().find(|e| e.path == "opq/").unwrap();
    assert!(opq.xattrs.is_empty(), "trusted.overlay.* is never stored: {:?}", opq.xattrs);
    let mut a = tar::Archive::new(&bytes[..]);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        if e.path_bytes().as_ref() == b"null" {
            assert_eq!(e.header().device_major().unwrap(), Some(1));
            assert_eq!(e.header().device_minor().unwrap(), Some(3));
        }
    }
}

#[test]
fn overlay_redirects_are_refused() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("moved")).unwrap();
    xattr::set(tmp.path().join("moved"), "trusted.overlay.redirect", b"/orig").unwrap();
    let err = write_layer_tar(tmp.path(), &mut Vec::new(), &LayerOptions::default()).unwrap_err();
    assert!(matches!(err, LayerError::Overlay(strata_fstree::overlay::OverlayError::Unsupported { .. })), "{err}");
    assert!(err.to_string().contains("moved"), "{err}");
}

#[test]
fn hardlinks_point_at_the_first_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::create_dir(dir.join("d")).unwrap();
    write_file(&dir.join("d/z-original"), b"shared content");
    fs::hard_link(dir.join("d/z-original"), dir.join("a-link")).unwrap();
    fs::hard_link(dir.join("d/z-original"), dir.join("d/b-link")).unwrap();
    let (bytes, _) = tar_of(dir, &opts(Compression::Uncompressed, None));
    let entries = read_tar(&bytes);
    let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, ["a-link", "d/", "d/b-link", "d/z-original"]);
    assert_eq!(entries[0].kind, tar::EntryType::Regular);
    assert_eq!(entries[0].data, b"shared content");
    for e in [&entries[2], &entries[3]] {
        assert_eq!(e.kind, tar::EntryType::Link, "{}", e.path);
        assert_eq!(e.link.as_deref(), Some("a-link"));
        assert_eq!(e.size, 0);
    }
}

#[test]
fn long_names_and_link_targets_use_pax() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let long_dir = "d".repeat(80);
    let long_file = format!("{long_dir}/{}", "f".repeat(150));
    fs::create_dir(dir.join(&long_dir)).unwrap();
    write_file(&dir.join(&long_file), b"long");
    let target = format!("/{}", "t".repeat(200));
    symlink(&target, dir.join("ln")).unwrap();
    fs::hard_link(dir.join(&long_file), dir.join("zz-hard")).unwrap();
    let (bytes, _) = tar_of(dir, &opts(Compression::Uncompressed, None));
    let entries = read_tar(&bytes);
    let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, [format!("{long_dir}/"), long_file.clone(), "ln".into(), "zz-hard".into()]);
    assert_eq!(entries[1].data, b"long");
    assert_eq!(entries[2].link.as_deref(), Some(target.as_str()));
    assert_eq!(entries[3].link.as_deref(), Some(long_file.as_str()));
    // PAX, not GNU long names.
    let mut raw = tar::Archive::new(&bytes[..]);
    let kinds: Vec<tar::EntryType> =
        raw.entries().unwrap().raw(true).map(|e| e.unwrap().header().entry_type()).collect();
    assert!(kinds.contains(&tar::EntryType::XHeader));
    assert!(!kinds.contains(&tar::EntryType::GNULongName));
    assert!(!kinds.contains(&tar::EntryType::GNULongLink));
}

#[test]
fn xattrs_are_sorted_pax_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_file(&dir.join("f"), b"x");
    xattr::set(dir.join("f"), "user.zeta", b"last").expect("user xattrs on the temp file system (ext4, xfs, tmpfs)");
    xattr::set(dir.join("f"), "user.alpha", b"first").unwrap();
    let cap: &[u8] = &[1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    if is_root() {
        xattr::set(dir.join("f"), "security.capability", cap).unwrap();
    }
    let (bytes, _) = tar_of(dir, &opts(Compression::Uncompressed, None));
    let entries = read_tar(&bytes);
    let f = entries.iter().find(|e| e.path == "f").unwrap();
    let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
    if is_root() {
        expected.push(("security.capability".into(), cap.to_vec()));
    }
    expected.push(("user.alpha".into(), b"first".to_vec()));
    expected.push(("user.zeta".into(), b"last".to_vec()));
    assert_eq!(f.xattrs, expected);
}

#[test]
fn compression_headers_and_media_types() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("diff");
    fs::create_dir(&dir).unwrap();
    build_tree(&dir, false, 1_600_000_000);
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    let (tar_bytes, diff_id) = tar_of(&dir, &opts(Compression::Uncompressed, None));

    let gz = write_layer(&dir, &store, &opts(Compression::Gzip { level: 6 }, None)).unwrap();
    assert_eq!(gz.media_type, media::OCI_LAYER_GZIP);
    assert_eq!(gz.diff_id, diff_id);
    let blob = store.read_blob(&gz.digest).unwrap();
    assert_eq!(&blob[..3], &[0x1f, 0x8b, 8]);
    assert_eq!(blob[3], 0, "no FNAME or other flags");
    assert_eq!(&blob[4..8], &[0, 0, 0, 0], "mtime 0");
    assert_eq!(blob[9], 255, "OS unknown");
    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(&blob[..]).read_to_end(&mut plain).unwrap();
    assert_eq!(plain, tar_bytes);

    let zs = write_layer(
        &dir,
        &store,
        &LayerOptions { oci_media_types: false, ..opts(Compression::Zstd { level: 3 }, None) },
    )
    .unwrap();
    assert_eq!(zs.media_type, media::OCI_LAYER_ZSTD);
    assert_eq!(zs.diff_id, diff_id);
    assert_eq!(zstd::decode_all(&store.read_blob(&zs.digest).unwrap()[..]).unwrap(), tar_bytes);

    let docker_gz = LayerOptions { oci_media_types: false, ..opts(Compression::Gzip { level: 6 }, None) };
    assert_eq!(write_layer(&dir, &store, &docker_gz).unwrap().media_type, media::DOCKER_LAYER_GZIP);
    let raw =
        write_layer(&dir, &store, &LayerOptions { oci_media_types: false, ..opts(Compression::Uncompressed, None) })
            .unwrap();
    assert_eq!(raw.media_type, media::DOCKER_LAYER_TAR);
    assert_eq!(raw.digest, diff_id);

    let err = write_layer(&dir, &store, &opts(Compression::Gzip { level: 12 }, None)).unwrap_err();
    assert!(matches!(err, LayerError::InvalidLevel { .. }), "{err}");
}

#[test]
fn missing_directory_is_an_error_with_its_path() {
    let err =
        write_layer_tar(Path::new("/nonexistent/strata-diff"), &mut Vec::new(), &LayerOptions::default()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/strata-diff"), "{err}");
}

#[test]
fn future_and_old_mtimes() {
    let tmp = tempfile::tempdir().unwrap();
    write_file(&tmp.path().join("f"), b"");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs() as i64;
    set_mtime(&tmp.path().join("f"), now + 1_000_000);
    let (bytes, _) = tar_of(tmp.path(), &opts(Compression::Uncompressed, Some(now)));
    assert_eq!(read_tar(&bytes)[0].mtime, now as u64);
    set_mtime(&tmp.path().join("f"), -5);
    let (bytes, _) = tar_of(tmp.path(), &opts(Compression::Uncompressed, None));
    assert_eq!(read_tar(&bytes)[0].mtime, 0);
}

/// GNU tar and Python's tarfile, as independent readers, see the same entries.
#[test]
fn independent_readers_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("diff");
    fs::create_dir(&dir).unwrap();
    build_tree(&dir, false, 1_600_000_000);
    let long = format!("{}/{}", "d".repeat(80), "f".repeat(150));
    fs::create_dir(dir.join("d".repeat(80))).unwrap();
    write_file(&dir.join(&long), b"long");
    fs::hard_link(dir.join("big"), dir.join("zz-hard")).unwrap();
    let tar_path = tmp.path().join("layer.tar");
    let mut out = File::create(&tar_path).unwrap();
    write_layer_tar(&dir, &mut out, &opts(Compression::Uncompressed, None)).unwrap();
    drop(out);

    let ours: Vec<String> = read_tar(&fs::read(&tar_path).unwrap()).into_iter().map(|e| e.path).collect();
    let gnu = std::process::Command::new("tar").arg("-tf").arg(&tar_path).output();
    match gnu {
        Ok(o) if o.status.success() => {
            let names: Vec<String> = String::from_utf8(o.stdout).unwrap().lines().map(String::from).collect();
            assert_eq!(names, ours, "GNU tar listing");
            let x = tmp.path().join("x");
            fs::create_dir(&x).unwrap();
            let st = std::process::Command::new("tar").arg("-xpf").arg(&tar_path).arg("-C").arg(&x).status().unwrap();
            assert!(st.success());
            assert_eq!(fs::read(x.join(&long)).unwrap(), b"long");
            assert_eq!(fs::metadata(x.join("zz-hard")).unwrap().ino(), fs::metadata(x.join("big")).unwrap().ino());
            assert_eq!(fs::metadata(x.join("usr/bin/tool")).unwrap().mode() & 0o7777, 0o4755);
        }
        Ok(o) => panic!("GNU tar rejected the layer: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("GNU tar (an independent reader, installed with Debian): {e}"),
    }
    let py = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sys,tarfile\nfor m in tarfile.open(sys.argv[1]): print(m.name + ('/' if m.isdir() else ''))")
        .arg(&tar_path)
        .output();
    match py {
        Ok(o) if o.status.success() => {
            let names: Vec<String> = String::from_utf8(o.stdout).unwrap().lines().map(String::from).collect();
            assert_eq!(names, ours, "Python tarfile listing");
        }
        Ok(o) => panic!("Python's tarfile rejected the layer: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("python3 (an independent reader): {e}"),
    }
}
