//! Layer unpacking against real tars (built with the `tar` crate, or byte by byte
//! where the crate refuses hostile names), real file systems and a real overlay mount.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use strata_executor::unpack::{
    open_decompressed, unpack_layer, ArchiveCompression, UnpackError, UnpackOptions, UnpackStats,
};
use strata_oci::digest::Digest;
use strata_oci::media;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            strata_testsupport::skip::skipped(
                "needs root (chown, mknod, trusted.* xattrs, mount): this unpack test NOT run",
            );
            return;
        }
    };
}

/// A tar built entry by entry with full control of every header field.
struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl TarBuilder {
    fn new() -> Self {
        TarBuilder { b: tar::Builder::new(Vec::new()) }
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, mtime: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        h.set_size(0);
        h
    }

    fn dir(&mut self, path: &str, mode: u32, mtime: u64) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0, 0, mtime);
        self.b.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    fn file_owned(&mut self, path: &str, mode: u32, uid: u64, gid: u64, mtime: u64, data: &[u8]) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, uid, gid, mtime);
        h.set_size(data.len() as u64);
        self.b.append_data(&mut h, path, data).unwrap();
        self
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.file_owned(path, mode, 0, 0, 1_600_000_000, data)
    }

    fn xattrs(&mut self, xattrs: &[(&str, &[u8])]) -> &mut Self {
        let records: Vec<(String, &[u8])> = xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v)).collect();
        self.b.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v))).unwrap();
        self
    }

    fn link(&mut self, kind: tar::EntryType, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(kind, 0o777, 0, 0, 1_600_000_000);
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    fn node(&mut self, kind: tar::EntryType, path: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        let mut h = Self::header(kind, mode, 0, 0, 1_600_000_000);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.b.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    /// An entry whose name and link name are written verbatim (`..`, absolute paths).
    fn raw(&mut self, kind: tar::EntryType, name: &str, link: &str, data: &[u8]) -> &mut Self {
        let mut h = Self::header(kind, 0o644, 0, 0, 1_600_000_000);
        h.set_size(data.len() as u64);
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn unpack(
    blob: &[u8],
    media_type: Option<&str>,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    unpack_layer(&mut &blob[..], media_type, dest, opts)
}

fn root_opts() -> UnpackOptions {
    UnpackOptions { allow_devices: is_root(), verify_diff_id: None }
}

/// A busybox-like base layer.
fn busybox_layer() -> Vec<u8> {
    let cap: &[u8] = &[1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let long = format!("usr/share/{}/{}", "d".repeat(90), "f".repeat(60));
    TarBuilder::new()
        .dir("bin", 0o755, 1_500_000_001)
        .file("bin/busybox", 0o755, b"\x7fELF busybox")
        .link(tar::EntryType::Link, "bin/sh", "bin/busybox")
        .link(tar::EntryType::Link, "bin/ls", "./bin/busybox")
        .xattrs(&[("security.capability", cap), ("user.note", b"hello")])
        .file_owned("bin/su", 0o4755, 0, 0, 1_600_000_000, b"su")
        .file("bin/ping", 0o755, b"ping")
        .dir("dev", 0o755, 1_500_000_002)
        .node(tar::EntryType::Char, "dev/null", 0o666, 1, 3)
        .node(tar::EntryType::Fifo, "dev/initctl", 0o600, 0, 0)
        .dir("etc", 0o755, 1_500_000_003)
        .file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        .link(tar::EntryType::Symlink, "etc/mtab", "/proc/mounts")
        .dir("home/user", 0o750, 1_500_000_004)
        .file_owned("home/user/.profile", 0o640, 1000, 1000, 1_400_000_000, b"export PS1='$ '\n")
        .dir("tmp", 0o1777, 1_500_000_005)
        .link(tar::EntryType::Symlink, "usr/bin/env", "/bin/busybox")
        .file(&long, 0o644, b"long name")
        .finish()
}

#[test]
fn busybox_like_layer_round_trip() {
    let tar_bytes = busybox_layer();
    let diff_id = Digest::of_bytes(&tar_bytes);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("fs");
    fs::create_dir(&dest).unwrap();
    let opts = UnpackOptions { verify_diff_id: Some(diff_id.clone()), ..root_opts() };
    let stats = unpack(&gzip(&tar_bytes), None, &dest, &opts).unwrap();
    assert_eq!(stats.diff_id, diff_id);
    assert_eq!(stats.tar_size, tar_bytes.len() as u64);
    assert_eq!(stats.compression, ArchiveCompression::Gzip);
    assert_eq!(stats.hardlinks, 2);
    assert_eq!(stats.symlinks, 2);

    let meta = |p: &str| fs::symlink_metadata(dest.join(p)).unwrap();
    assert_eq!(fs::read(dest.join("bin/busybox")).unwrap(), b"\x7fELF busybox");
    assert_eq!(meta("bin/busybox").ino(), meta("bin/sh").ino());
    assert_eq!(meta("bin/busybox").ino(), meta("bin/ls").ino());
    assert_eq!(meta("bin/su").mode() & 0o7777, 0o4755);
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(meta("home/user").mode() & 0o7777, 0o750);
    assert_eq!(meta("home").mode() & 0o7777, 0o755, "implied parent");
    assert_eq!(fs::read_link(dest.join("etc/mtab")).unwrap(), Path::new("/proc/mounts"));
    assert_eq!(fs::read_link(dest.join("usr/bin/env")).unwrap(), Path::new("/bin/busybox"));
    assert!(meta("dev/initctl").file_type().is_fifo());
    assert_eq!(meta("dev/initctl").mode() & 0o7777, 0o600);
    let long = format!("usr/share/{}/{}", "d".repeat(90), "f".repeat(60));
    assert_eq!(fs::read(dest.join(&long)).unwrap(), b"long name");

    // mtimes, directories included (set after their contents).
    assert_eq!(meta("bin").mtime(), 1_500_000_001);
    assert_eq!(meta("dev").mtime(), 1_500_000_002);
    assert_eq!(meta("etc").mtime(), 1_500_000_003);
    assert_eq!(meta("home/user").mtime(), 1_500_000_004);
    assert_eq!(meta("tmp").mtime(), 1_500_000_005);
    assert_eq!(meta("home/user/.profile").mtime(), 1_400_000_000);
    assert_eq!(meta("etc/mtab").mtime(), 1_600_000_000, "symlink times, not followed");

    if is_root() {
        assert_eq!((meta("home/user/.profile").uid(), meta("home/user/.profile").gid()), (1000, 1000));
        let null = meta("dev/null");
        assert!(null.file_type().is_char_device());
        assert_eq!((rustix::fs::major(null.rdev()), rustix::fs::minor(null.rdev())), (1, 3));
        assert_eq!(null.mode() & 0o7777, 0o666);
        let cap = xattr::get(dest.join("bin/su"), "security.capability").unwrap().unwrap();
        assert_eq!(cap[0..4], [1, 0, 0, 2]);
        assert_eq!(meta("bin/su").mode() & 0o7777, 0o4755, "setuid survives chown and xattrs");
    }
    if let Ok(Some(note)) = xattr::get(dest.join("bin/su"), "user.note") {
        assert_eq!(note, b"hello");
    }
}

#[test]
fn every_compression_gives_the_same_tree_and_diff_id() {
    let tar_bytes = TarBuilder::new().dir("a", 0o755, 1).file("a/b", 0o644, &vec![9u8; 100_000]).finish();
    let diff_id = Digest::of_bytes(&tar_bytes);
    let zst = zstd::encode_all(&tar_bytes[..], 3).unwrap();
    let bz = {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(6));
        e.write_all(&tar_bytes).unwrap();
        e.finish().unwrap()
    };
    let xz = {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(&tar_bytes).unwrap();
        e.finish().unwrap()
    };
    let cases: Vec<(Vec<u8>, Option<&str>, ArchiveCompression)> = vec![
        (tar_bytes.clone(), None, ArchiveCompression::None),
        (tar_bytes.clone(), Some(media::OCI_LAYER_TAR), ArchiveCompression::None),
        (gzip(&tar_bytes), Some(media::DOCKER_LAYER_GZIP), ArchiveCompression::Gzip),
        (zst.clone(), None, ArchiveCompression::Zstd),
        (zst, Some(media::OCI_LAYER_ZSTD), ArchiveCompression::Zstd),
        (bz.clone(), None, ArchiveCompression::Bzip2),
        (xz.clone(), None, ArchiveCompression::Xz),
    ];
    for (i, (blob, mt, c)) in cases.into_iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = UnpackOptions { allow_devices: false, verify_diff_id: Some(diff_id.clone()) };
        let stats = unpack(&blob, mt, tmp.path(), &opts).unwrap_or_else(|e| panic!("case {i}: {e}"));
        assert_eq!(stats.compression, c, "case {i}");
        assert_eq!(fs::read(tmp.path().join("a/b")).unwrap(), vec![9u8; 100_000]);
    }
    for blob in [bz, xz] {
        let mut out = Vec::new();
        open_decompressed(&blob[..]).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, tar_bytes);
    }
}

#[test]
fn diff_id_mismatch_and_unknown_media_type_are_errors() {
    let tar_bytes = TarBuilder::new().file("f", 0o644, b"x").finish();
    let tmp = tempfile::tempdir().unwrap();
    let wrong = Digest::of_bytes(b"something else");
    let err =
        unpack(&tar_bytes, None, tmp.path(), &UnpackOptions { allow_devices: false, verify_diff_id: Some(wrong) })
            .unwrap_err();
    assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err}");
    let err =
        unpack(&tar_bytes, Some("application/vnd.example.thing"), tmp.path(), &UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, UnpackError::UnsupportedMediaType { .. }), "{err}");
    let err = unpack(&gzip(&tar_bytes)[..20], None, tmp.path(), &UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, UnpackError::Read { .. }), "truncated gzip: {err}");
    let err = unpack(&tar_bytes, None, &tmp.path().join("missing"), &UnpackOptions::default()).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn devices_are_skipped_unless_allowed() {
    let tar_bytes = TarBuilder::new()
        .node(tar::EntryType::Char, "dev/null", 0o666, 1, 3)
        .node(tar::EntryType::Block, "dev/sda", 0o660, 8, 0)
        .node(tar::EntryType::Fifo, "dev/fifo", 0o644, 0, 0)
        .finish();
    let tmp = tempfile::tempdir().unwrap();
    let stats = unpack(&tar_bytes, None, tmp.path(), &UnpackOptions::default()).unwrap();
    assert_eq!(stats.skipped, 2);
    assert_eq!(stats.fifos, 1);
    assert!(!tmp.path().join("dev/null").exists());
    assert!(fs::symlink_metadata(tmp.path().join("dev/fifo")).unwrap().file_type().is_fifo());
}

/// Everything on the host that the hostile layer aims at.
fn host_untouched(outer: &Path, passwd_before: &[u8]) {
    assert!(!Path::new("/etc/strata-pwned").exists(), "wrote through an absolute symlink");
    assert!(!Path::new("/tmp/strata-pwned2").exists(), "wrote through a climbing symlink");
    assert!(!Path::new("/escape").exists() && !Path::new("/abs-file").exists());
    assert_eq!(fs::read("/etc/passwd").unwrap(), passwd_before, "/etc/passwd changed");
    let names: Vec<String> =
        fs::read_dir(outer).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["dest"], "something was created next to dest");
    assert!(!outer.parent().unwrap().join("escape").exists());
}

fn hostile_without_hardlink() -> TarBuilder {
    let mut t = TarBuilder::new();
    t.raw(tar::EntryType::Regular, "../escape", "", b"escaped?")
        .raw(tar::EntryType::Regular, "/abs-file", "", b"absolute?")
        .raw(tar::EntryType::Regular, "../../../../../../../tmp/strata-deep", "", b"deep?")
        .raw(tar::EntryType::Symlink, "evil", "/etc", b"")
        .raw(tar::EntryType::Regular, "evil/strata-pwned", "", b"pwned")
        .raw(tar::EntryType::Symlink, "up", "../../..", b"")
        .raw(tar::EntryType::Regular, "up/tmp/strata-pwned2", "", b"pwned2")
        // A symlink to a host file, then a regular file of the same name: the file
        // replaces the link, it does not write through it.
        .raw(tar::EntryType::Symlink, "passwd-link", "/etc/passwd", b"")
        .raw(tar::EntryType::Regular, "passwd-link", "", b"replaced")
        // A directory entry through a symlinked parent.
        .raw(tar::EntryType::Symlink, "tmplink", "/tmp", b"")
        .raw(tar::EntryType::Directory, "tmplink/strata-dir/", "", b"");
    t
}

#[test]
fn hostile_layer_is_confined() {
    let passwd_before = fs::read("/etc/passwd").unwrap();
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let blob = hostile_without_hardlink().finish();
    unpack(&blob, None, &dest, &root_opts()).unwrap();
    host_untouched(outer.path(), &passwd_before);
    assert!(!Path::new("/tmp/strata-deep").exists());
    assert!(!Path::new("/tmp/strata-dir").exists());
    // Confined: each landed inside dest, where the image's own root says.
    assert_eq!(fs::read(dest.join("escape")).unwrap(), b"escaped?");
    assert_eq!(fs::read(dest.join("abs-file")).unwrap(), b"absolute?");
    assert_eq!(fs::read(dest.join("tmp/strata-deep")).unwrap(), b"deep?");
    assert_eq!(fs::read(dest.join("etc/strata-pwned")).unwrap(), b"pwned");
    assert_eq!(fs::read(dest.join("tmp/strata-pwned2")).unwrap(), b"pwned2");
    assert!(dest.join("tmp/strata-dir").is_dir());
    assert_eq!(fs::read_link(dest.join("evil")).unwrap(), Path::new("/etc"));
    let pl = fs::symlink_metadata(dest.join("passwd-link")).unwrap();
    assert!(pl.is_file());
    assert_eq!(fs::read(dest.join("passwd-link")).unwrap(), b"replaced");
}

#[test]
fn hostile_hardlinks_are_refused() {
    let passwd_before = fs::read("/etc/passwd").unwrap();
    for target in ["/etc/passwd", "../../../../etc/passwd", "a/../../etc/passwd"] {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let blob = hostile_without_hardlink().raw(tar::EntryType::Link, "pwned-link", target, b"").finish();
        let err = unpack(&blob, None, &dest, &root_opts()).unwrap_err();
        assert!(matches!(err, UnpackError::HardlinkOutsideRoot { .. }), "{target}: {err}");
        assert!(err.to_string().contains("pwned-link"), "{err}");
        host_untouched(outer.path(), &passwd_before);
        assert!(!dest.join("pwned-link").exists());
    }
    // A link whose target goes through an in-image symlink resolves in the image.
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let blob = TarBuilder::new()
        .raw(tar::EntryType::Symlink, "hostetc", "/etc", b"")
        .raw(tar::EntryType::Link, "stolen", "hostetc/passwd", b"")
        .finish();
    let err = unpack(&blob, None, &dest, &root_opts()).unwrap_err();
    assert!(matches!(err, UnpackError::HardlinkTargetMissing { .. }), "{err}");
    host_untouched(outer.path(), &passwd_before);
}

#[test]
fn hostile_symlink_loops_and_files_in_the_way_are_errors() {
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let blob = TarBuilder::new()
        .raw(tar::EntryType::Symlink, "loop", "loop2", b"")
        .raw(tar::EntryType::Symlink, "loop2", "loop", b"")
        .raw(tar::EntryType::Regular, "loop/x", "", b"x")
        .finish();
    let err = unpack(&blob, None, &dest, &UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, UnpackError::TooManySymlinks { .. }), "{err}");

    let dest2 = outer.path().join("dest2");
    fs::create_dir(&dest2).unwrap();
    let blob = TarBuilder::new().file("f", 0o644, b"").file("f/x", 0o644, b"").finish();
    let err = unpack(&blob, None, &dest2, &UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, UnpackError::NotADirectory { .. }), "{err}");
}

#[test]
fn whiteouts_become_overlay_form() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let blob = TarBuilder::new()
        .file("x", 0o644, b"replaced by the whiteout below")
        .file(".wh.gone", 0, b"")
        .dir("dir", 0o755, 1_500_000_000)
        .file("dir/.wh..wh..opq", 0, b"")
        .file("dir/keep", 0o644, b"k")
        .file(".wh.x", 0, b"")
        .file("deep/er/.wh.file", 0, b"")
        .file(".wh..wh.plnk", 0, b"")
        .xattrs(&[("trusted.overlay.opaque", b"y"), ("trusted.overlay.redirect", b"/etc"), ("user.ok", b"1")])
        .dir("fake", 0o755, 1)
        .finish();
    let stats = unpack(&blob, None, tmp.path(), &root_opts()).unwrap();
    assert_eq!((stats.whiteouts, stats.opaque_dirs, stats.skipped), (3, 1, 1));
    for p in ["gone", "x", "deep/er/file"] {
        let m = fs::symlink_metadata(tmp.path().join(p)).unwrap();
        assert!(m.file_type().is_char_device(), "{p}");
        assert_eq!(m.rdev(), 0, "{p}");
    }
    assert!(!tmp.path().join(".wh.gone").exists());
    assert_eq!(xattr::get(tmp.path().join("dir"), "trusted.overlay.opaque").unwrap().as_deref(), Some(&b"y"[..]));
    assert_eq!(fs::read(tmp.path().join("dir/keep")).unwrap(), b"k");
    assert!(!tmp.path().join("dir/.wh..wh..opq").exists());
    assert_eq!(fs::symlink_metadata(tmp.path().join("dir")).unwrap().mtime(), 1_500_000_000);
    // Overlay xattrs smuggled in PAX records are dropped.
    assert_eq!(xattr::get(tmp.path().join("fake"), "trusted.overlay.opaque").unwrap(), None);
    assert_eq!(xattr::get(tmp.path().join("fake"), "trusted.overlay.redirect").unwrap(), None);
    if let Ok(v) = xattr::get(tmp.path().join("fake"), "user.ok") {
        assert_eq!(v.as_deref(), Some(&b"1"[..]), "other xattrs of the same entry are kept");
    }
}

/// Two unpacked layers mounted as overlay lowers: the whiteouts hide what they should.
#[test]
fn unpacked_layers_serve_as_overlay_lowers() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let (l1, l2, mnt) = (tmp.path().join("l1"), tmp.path().join("l2"), tmp.path().join("mnt"));
    for d in [&l1, &l2, &mnt] {
        fs::create_dir(d).unwrap();
    }
    let base = TarBuilder::new()
        .file("a", 0o644, b"a")
        .file("b", 0o644, b"b")
        .dir("dir", 0o755, 1)
        .file("dir/old", 0o644, b"old")
        .finish();
    let top = TarBuilder::new()
        .file(".wh.a", 0, b"")
        .dir("dir", 0o755, 1)
        .file("dir/.wh..wh..opq", 0, b"")
        .file("dir/new", 0o644, b"new")
        .finish();
    unpack(&gzip(&base), Some(media::OCI_LAYER_GZIP), &l1, &root_opts()).unwrap();
    unpack(&gzip(&top), Some(media::OCI_LAYER_GZIP), &l2, &root_opts()).unwrap();
    let data = std::ffi::CString::new(format!("lowerdir={}:{}", l2.display(), l1.display())).unwrap();
    if let Err(e) = rustix::mount::mount("overlay", &mnt, "overlay", rustix::mount::MountFlags::RDONLY, data.as_c_str())
    {
        strata_testsupport::skip::skipped(&format!(
            "the overlay mount failed ({e}): overlay's reading of the layers NOT checked"
        ));
        return;
    }
    let result = std::panic::catch_unwind(|| {
        assert!(!mnt.join("a").exists(), "whiteout hides a");
        assert_eq!(fs::read(mnt.join("b")).unwrap(), b"b");
        let mut names: Vec<String> = fs::read_dir(mnt.join("dir"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["new"], "opaque dir hides the lower contents");
    });
    rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH).unwrap();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn later_entries_replace_earlier_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let blob = TarBuilder::new()
        .dir("d", 0o755, 1)
        .file("d/inner", 0o644, b"inner")
        .file("d", 0o600, b"now a file")
        .dir("f", 0o700, 1_234_567)
        .raw(tar::EntryType::Symlink, "s", "target", b"")
        .raw(tar::EntryType::Symlink, "s", "other", b"")
        .finish();
    unpack(&blob, None, tmp.path(), &UnpackOptions::default()).unwrap();
    assert_eq!(fs::read(tmp.path().join("d")).unwrap(), b"now a file");
    assert_eq!(fs::metadata(tmp.path().join("d")).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(tmp.path().join("f").is_dir());
    assert_eq!(fs::metadata(tmp.path().join("f")).unwrap().mtime(), 1_234_567);
    assert_eq!(fs::read_link(tmp.path().join("s")).unwrap(), Path::new("other"));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let mut junk = vec![0xAAu8; 4096];
    junk[0] = b'x';
    assert!(unpack(&junk, None, tmp.path(), &UnpackOptions::default()).is_err());
    // A valid header claiming far more data than there is.
    let mut h = tar::Header::new_ustar();
    h.set_path("big").unwrap();
    h.set_size(1 << 40);
    h.set_cksum();
    let mut blob = h.as_bytes().to_vec();
    blob.extend_from_slice(&[1u8; 1000]);
    assert!(unpack(&blob, None, tmp.path(), &UnpackOptions::default()).is_err());
    // Empty input is an empty layer.
    let stats = unpack(&[], None, tmp.path(), &UnpackOptions::default()).unwrap();
    assert_eq!(stats.entries, 0);
}
