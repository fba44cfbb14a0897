//! COPY/ADD against real directory trees (run as root: owners, devices and
//! `security.capability` are checked).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use strata_executor::copy::{
    copy, copy_with_source_excludes, parse_chmod, resolve_chown, CopyError, CopyRequest, CopyStats,
};
use strata_solver::graph::{Chown, CopyOp};

struct Env {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    Env { _tmp: tmp, src, dst }
}

fn op(sources: &[&str], dest: &str) -> CopyOp {
    CopyOp {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.to_string(),
        dest_is_dir: dest.ends_with('/'),
        chown: None,
        chmod: None,
        exclude: vec![],
        unpack_archives: false,
        parents: false,
        follow_symlinks: true,
        create_dest_path: true,
        allow_empty_wildcard: true,
    }
}

fn no_exclude(_: &str, _: bool) -> bool {
    false
}

fn run(e: &Env, op: &CopyOp) -> Result<CopyStats, CopyError> {
    run_with(e, op, None, &no_exclude, true)
}

fn run_with(
    e: &Env,
    op: &CopyOp,
    owner: Option<(u32, u32)>,
    exclude: &dyn Fn(&str, bool) -> bool,
    ctx: bool,
) -> Result<CopyStats, CopyError> {
    copy(&CopyRequest {
        src_root: &e.src,
        dest_root: &e.dst,
        op,
        owner,
        exclude,
        source_is_context: ctx,
        dest_upper: None,
        earlier: None,
        record: None,
    })
}

fn write(p: &Path, data: &str) {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(p, data).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn owner(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap()
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

/// The tree of the conformance case `copy-semantics`.
fn semantics_tree(src: &Path) {
    write(&src.join("top.txt"), "top\n");
    write(&src.join("dir/a.txt"), "a\n");
    write(&src.join("dir/sub/b.txt"), "b\n");
    symlink("a.txt", src.join("dir/link-to-a")).unwrap();
    write(&src.join("other/c.md"), "c\n");
    for f in ["top.txt", "dir/a.txt", "dir/sub/b.txt", "other/c.md"] {
        chmod(&src.join(f), 0o444);
    }
    for d in ["dir/sub", "dir", "other"] {
        chmod(&src.join(d), 0o555);
    }
}

// ---- directories, files, destinations

#[test]
fn directory_source_copies_its_contents() {
    let e = env();
    semantics_tree(&e.src);
    run(&e, &op(&["dir"], "/copied-dir")).unwrap();
    run(&e, &op(&["dir/"], "/copied-dir-slash/")).unwrap();
    for d in ["copied-dir", "copied-dir-slash"] {
        let d = e.dst.join(d);
        assert_eq!(read(&d.join("a.txt")), "a\n");
        assert_eq!(read(&d.join("sub/b.txt")), "b\n");
        assert!(!d.join("dir").exists());
        // The destination is created 0755 by root; what is inside keeps its modes.
        assert_eq!(mode(&d), 0o755);
        assert_eq!(owner(&d), (0, 0));
        assert_eq!(mode(&d.join("sub")), 0o555);
        assert_eq!(mode(&d.join("a.txt")), 0o444);
        assert_eq!(fs::read_link(d.join("link-to-a")).unwrap(), Path::new("a.txt"));
    }
}

#[test]
fn existing_destination_directory_keeps_its_mode_and_owner() {
    let e = env();
    semantics_tree(&e.src);
    fs::create_dir(e.dst.join("keep")).unwrap();
    chmod(&e.dst.join("keep"), 0o710);
    chown(&e.dst.join("keep"), 5, 6);
    run(&e, &op(&["dir"], "/keep")).unwrap();
    assert_eq!(mode(&e.dst.join("keep")), 0o710);
    assert_eq!(owner(&e.dst.join("keep")), (5, 6));
    assert_eq!(read(&e.dst.join("keep/a.txt")), "a\n");
}

#[test]
fn merged_subdirectories_take_source_metadata() {
    let e = env();
    semantics_tree(&e.src);
    fs::create_dir_all(e.dst.join("m/sub")).unwrap();
    write(&e.dst.join("m/sub/old.txt"), "old");
    chmod(&e.dst.join("m/sub"), 0o700);
    chown(&e.dst.join("m/sub"), 7, 7);
    run(&e, &op(&["dir"], "/m")).unwrap();
    assert_eq!(mode(&e.dst.join("m/sub")), 0o555);
    assert_eq!(owner(&e.dst.join("m/sub")), (0, 0));
    assert_eq!(read(&e.dst.join("m/sub/old.txt")), "old");
    assert_eq!(read(&e.dst.join("m/sub/b.txt")), "b\n");
}

#[test]
fn file_destinations() {
    let e = env();
    semantics_tree(&e.src);
    // Renamed: no trailing slash, nothing there.
    run(&e, &op(&["top.txt"], "/renamed.txt")).unwrap();
    assert_eq!(read(&e.dst.join("renamed.txt")), "top\n");
    // Trailing slash: a directory is created and the file goes in.
    run(&e, &op(&["top.txt"], "/wd/")).unwrap();
    assert_eq!(read(&e.dst.join("wd/top.txt")), "top\n");
    assert_eq!(mode(&e.dst.join("wd")), 0o755);
    // An existing directory without slash: inside it.
    run(&e, &op(&["top.txt"], "/wd")).unwrap();
    assert!(e.dst.join("wd").is_dir());
    // A relative destination was joined with WORKDIR by the frontend.
    run(&e, &op(&["top.txt"], "/wd/relative.txt")).unwrap();
    assert_eq!(read(&e.dst.join("wd/relative.txt")), "top\n");
    // Overwriting a file replaces it.
    write(&e.dst.join("over.txt"), "old content that is longer");
    run(&e, &op(&["top.txt"], "/over.txt")).unwrap();
    assert_eq!(read(&e.dst.join("over.txt")), "top\n");
}

#[test]
fn root_destination() {
    let e = env();
    semantics_tree(&e.src);
    run(&e, &op(&["dir/"], "/")).unwrap();
    assert_eq!(read(&e.dst.join("a.txt")), "a\n");
    run(&e, &op(&["top.txt"], "/")).unwrap();
    assert_eq!(read(&e.dst.join("top.txt")), "top\n");
    run(&e, &op(&["."], "/ctx/")).unwrap();
    assert_eq!(read(&e.dst.join("ctx/other/c.md")), "c\n");
}

#[test]
fn several_sources_need_a_directory_destination() {
    let e = env();
    semantics_tree(&e.src);
    let err = run(&e, &op(&["top.txt", "other/c.md"], "/multi")).unwrap_err();
    assert!(matches!(err, CopyError::MultipleSourcesNeedDirectory { .. }), "{err}");
    assert!(err.to_string().contains("the destination must be a directory and end with a /"), "{err}");
    assert!(!e.dst.join("multi").exists());

    run(&e, &op(&["top.txt", "other/c.md"], "/multi/")).unwrap();
    assert_eq!(read(&e.dst.join("multi/top.txt")), "top\n");
    assert_eq!(read(&e.dst.join("multi/c.md")), "c\n");

    // A glob matching several entries counts as several sources; an existing
    // directory is fine (BuildKit copies into it).
    write(&e.src.join("second.txt"), "2");
    let err = run(&e, &op(&["*.txt"], "/g")).unwrap_err();
    assert!(matches!(err, CopyError::MultipleSourcesNeedDirectory { count: 2, .. }), "{err}");
    run(&e, &op(&["*.txt"], "/multi")).unwrap();
    assert_eq!(read(&e.dst.join("multi/second.txt")), "2");
}

#[test]
fn file_over_directory_and_directory_over_file_fail() {
    let e = env();
    write(&e.src.join("d/x"), "file");
    write(&e.src.join("f/x/inner"), "in a dir");
    fs::create_dir_all(e.dst.join("out/x")).unwrap();
    let err = run(&e, &op(&["d"], "/out")).unwrap_err();
    assert!(matches!(err, CopyError::DirectoryInTheWay { ref path } if path == "/out/x"), "{err}");

    write(&e.dst.join("out2/x"), "a file");
    let err = run(&e, &op(&["f"], "/out2")).unwrap_err();
    assert!(matches!(err, CopyError::NotADirectoryTarget { ref path } if path == "/out2/x"), "{err}");

    write(&e.dst.join("plain"), "a file");
    let err = run(&e, &op(&["f"], "/plain")).unwrap_err();
    assert!(matches!(err, CopyError::NotADirectoryTarget { .. }), "{err}");
}

// ---- sources: globs, missing, escapes

#[test]
fn globs_match_per_segment() {
    let e = env();
    semantics_tree(&e.src);
    write(&e.src.join("nested/x.txt"), "x");
    run(&e, &op(&["*.txt"], "/glob/")).unwrap();
    assert_eq!(read(&e.dst.join("glob/top.txt")), "top\n");
    assert!(!e.dst.join("glob/x.txt").exists(), "* does not cross /");
    run(&e, &op(&["*/*.md"], "/md/")).unwrap();
    assert_eq!(read(&e.dst.join("md/c.md")), "c\n");
    // A directory match copies its contents.
    run(&e, &op(&["oth?r"], "/dirglob/")).unwrap();
    assert_eq!(read(&e.dst.join("dirglob/c.md")), "c\n");
    run(&e, &op(&["[a-o]ther/c.[m]d"], "/cls/")).unwrap();
    assert!(e.dst.join("cls/c.md").exists());
}

#[test]
fn empty_wildcards() {
    let e = env();
    semantics_tree(&e.src);
    let stats = run(&e, &op(&["*.nothing"], "/none/")).unwrap();
    assert_eq!(stats.sources, 0);
    let mut strict = op(&["*.nothing"], "/none/");
    strict.allow_empty_wildcard = false;
    let err = run(&e, &strict).unwrap_err();
    assert!(matches!(err, CopyError::NoMatch { .. }), "{err}");
    assert!(err.to_string().contains("*.nothing"), "{err}");
    // A missing directory before the wildcard is an error, as in BuildKit.
    let err = run(&e, &op(&["nodir/*.txt"], "/none/")).unwrap_err();
    assert!(matches!(err, CopyError::NotFound { ref path } if path == "/nodir"), "{err}");
}

#[test]
fn missing_source_is_named() {
    let e = env();
    semantics_tree(&e.src);
    let err = run(&e, &op(&["top.txt", "missing.txt"], "/x/")).unwrap_err();
    assert_eq!(err.to_string(), "\"/missing.txt\": not found");
    // Nothing was written before the error.
    assert!(!e.dst.join("x").exists());
    let err = run(&e, &op(&["../../dir/nope"], "/x/")).unwrap_err();
    assert_eq!(err.to_string(), "\"/dir/nope\": not found");
}

#[test]
fn sources_resolve_inside_the_source_root() {
    let e = env();
    write(&e.src.join("inside/etc/passwd"), "inside\n");
    symlink("/etc/passwd", e.src.join("abs-link")).unwrap();
    symlink("../../../../../etc/passwd", e.src.join("rel-link")).unwrap();
    symlink("/etc", e.src.join("etc-dir")).unwrap();
    // Links resolve against the source root, where there is no /etc.
    for s in ["abs-link", "rel-link", "etc-dir/passwd", "../../etc/passwd"] {
        let err = run(&e, &op(&[s], "/out/")).unwrap_err();
        assert!(matches!(err, CopyError::NotFound { .. }), "{s}: {err}");
    }
    // With an /etc inside the root, the links find it.
    symlink("inside/etc", e.src.join("etc")).unwrap();
    run(&e, &op(&["abs-link"], "/followed")).unwrap();
    assert_eq!(read(&e.dst.join("followed")), "inside\n");
    assert!(fs::symlink_metadata(e.dst.join("followed")).unwrap().is_file());
}

#[test]
fn top_level_symlink_followed_or_kept() {
    let e = env();
    semantics_tree(&e.src);
    symlink("dir", e.src.join("dirlink")).unwrap();
    run(&e, &op(&["dir/link-to-a"], "/via/")).unwrap();
    assert!(fs::symlink_metadata(e.dst.join("via/link-to-a")).unwrap().is_file(), "followed, named after the link");
    run(&e, &op(&["dirlink"], "/dl/")).unwrap();
    assert_eq!(read(&e.dst.join("dl/a.txt")), "a\n");
    let mut keep = op(&["dir/link-to-a"], "/kept/");
    keep.follow_symlinks = false;
    run(&e, &keep).unwrap();
    assert_eq!(fs::read_link(e.dst.join("kept/link-to-a")).unwrap(), Path::new("a.txt"));
}

// ---- destination safety

#[test]
fn destination_symlinks_never_escape_the_root() {
    let e = env();
    write(&e.src.join("f"), "payload\n");
    write(&e.src.join("d/hosts"), "payload\n");
    fs::create_dir(e.dst.join("etc")).unwrap();
    symlink("/etc", e.dst.join("evil")).unwrap();
    symlink("../../../../../../../../etc", e.dst.join("up")).unwrap();
    let host_before = fs::read("/etc/hostname").ok();

    // Through a directory symlink: resolved inside the destination root.
    run(&e, &op(&["f"], "/evil/strata-copy-test")).unwrap();
    assert_eq!(read(&e.dst.join("etc/strata-copy-test")), "payload\n");
    run(&e, &op(&["d"], "/up/")).unwrap();
    assert_eq!(read(&e.dst.join("etc/hosts")), "payload\n");
    // The destination itself a symlink to a file outside: written inside the root.
    symlink("/etc/hostname", e.dst.join("hn")).unwrap();
    run(&e, &op(&["f"], "/hn")).unwrap();
    assert_eq!(read(&e.dst.join("etc/hostname")), "payload\n");

    assert!(!Path::new("/etc/strata-copy-test").exists());
    assert_eq!(fs::read("/etc/hostname").ok(), host_before);
    assert!(fs::read_to_string("/etc/hosts").map(|s| s != "payload\n").unwrap_or(true));
}

#[test]
fn symlink_in_a_merged_directory_is_replaced_not_followed() {
    let e = env();
    write(&e.src.join("d/passwd"), "mine\n");
    fs::create_dir(e.dst.join("t")).unwrap();
    symlink("/etc/passwd", e.dst.join("t/passwd")).unwrap();
    let before = fs::read("/etc/passwd").unwrap();
    run(&e, &op(&["d"], "/t")).unwrap();
    assert!(fs::symlink_metadata(e.dst.join("t/passwd")).unwrap().is_file());
    assert_eq!(read(&e.dst.join("t/passwd")), "mine\n");
    assert_eq!(fs::read("/etc/passwd").unwrap(), before);

    // A directory in the source against a symlink in the destination: refused.
    write(&e.src.join("d2/etc/x"), "x");
    fs::create_dir(e.dst.join("t2")).unwrap();
    symlink("/etc", e.dst.join("t2/etc")).unwrap();
    let err = run(&e, &op(&["d2"], "/t2")).unwrap_err();
    assert!(matches!(err, CopyError::NotADirectoryTarget { .. }), "{err}");
    assert!(!Path::new("/etc/x").exists());
}

// ---- owners and modes

#[test]
fn created_parents() {
    let e = env();
    semantics_tree(&e.src);
    run(&e, &op(&["dir/sub"], "/nested/new/path")).unwrap();
    for d in ["nested", "nested/new", "nested/new/path"] {
        assert_eq!(mode(&e.dst.join(d)), 0o755, "{d}");
        assert_eq!(owner(&e.dst.join(d)), (0, 0), "{d}");
    }
    assert_eq!(read(&e.dst.join("nested/new/path/b.txt")), "b\n");

    // With --chown, created directories get the owner.
    run_with(&e, &op(&["top.txt"], "/own/a/b/"), Some((1000, 1001)), &no_exclude, true).unwrap();
    for d in ["own", "own/a", "own/a/b"] {
        assert_eq!(owner(&e.dst.join(d)), (1000, 1001), "{d}");
    }
    // With an octal --chmod, BuildKit creates them with that mode.
    let mut o = op(&["top.txt"], "/cm/x/");
    o.chmod = Some("0750".into());
    run(&e, &o).unwrap();
    assert_eq!(mode(&e.dst.join("cm")), 0o750);
    assert_eq!(mode(&e.dst.join("cm/x")), 0o750);
    assert_eq!(mode(&e.dst.join("cm/x/top.txt")), 0o750);
    // A symbolic one leaves them 0755.
    let mut o = op(&["top.txt"], "/cs/x/");
    o.chmod = Some("u+w".into());
    run(&e, &o).unwrap();
    assert_eq!(mode(&e.dst.join("cs/x")), 0o755);
    assert_eq!(mode(&e.dst.join("cs/x/top.txt")), 0o644);
}

#[test]
fn owners_from_context_stage_and_chown() {
    let e = env();
    semantics_tree(&e.src);
    for p in ["dir", "dir/a.txt", "dir/link-to-a", "dir/sub", "dir/sub/b.txt"] {
        chown(&e.src.join(p), 1234, 4321);
    }
    run_with(&e, &op(&["dir"], "/ctx"), None, &no_exclude, true).unwrap();
    assert_eq!(owner(&e.dst.join("ctx/a.txt")), (0, 0));
    assert_eq!(owner(&e.dst.join("ctx/link-to-a")), (0, 0));
    run_with(&e, &op(&["dir"], "/stage"), None, &no_exclude, false).unwrap();
    assert_eq!(owner(&e.dst.join("stage/a.txt")), (1234, 4321));
    assert_eq!(owner(&e.dst.join("stage/link-to-a")), (1234, 4321));
    assert_eq!(owner(&e.dst.join("stage/sub")), (1234, 4321));
    assert_eq!(owner(&e.dst.join("stage")), (0, 0), "created destination");
    run_with(&e, &op(&["dir"], "/owned"), Some((1000, 1000)), &no_exclude, false).unwrap();
    for p in ["owned", "owned/a.txt", "owned/link-to-a", "owned/sub", "owned/sub/b.txt"] {
        assert_eq!(owner(&e.dst.join(p)), (1000, 1000), "{p}");
    }
}

fn user_db(dst: &Path) {
    write(
        &dst.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n# comment\nnobody:x:65534:65534:nobody:/home:/bin/false\napp:x:1000:1500::/home/app:/bin/sh\n",
    );
    write(&dst.join("etc/group"), "root:x:0:\nnogroup:x:65533:\nstaff:x:50:app\n");
}

#[test]
fn chown_resolution() {
    let e = env();
    user_db(&e.dst);
    let c = |u: &str, g: Option<&str>| resolve_chown(&e.dst, &Chown { user: u.into(), group: g.map(Into::into) });
    assert_eq!(c("1000", None).unwrap(), (1000, 1000));
    assert_eq!(c("1000", Some("1000")).unwrap(), (1000, 1000));
    assert_eq!(c("42", Some("7")).unwrap(), (42, 7));
    assert_eq!(c("app", None).unwrap(), (1000, 1500), "primary group");
    assert_eq!(c("nobody", Some("nogroup")).unwrap(), (65534, 65533));
    assert_eq!(c("1000", Some("staff")).unwrap(), (1000, 50));
    assert_eq!(c("root", None).unwrap(), (0, 0));
    assert_eq!(c("", Some("staff")).unwrap(), (0, 50));
    let err = c("ghost", None).unwrap_err();
    assert!(err.to_string().contains("\"ghost\""), "{err}");
    let err = c("app", Some("ghosts")).unwrap_err();
    assert!(err.to_string().contains("\"ghosts\""), "{err}");

    // /etc/passwd behind an absolute symlink is looked up inside the root.
    let e2 = env();
    write(&e2.dst.join("real/passwd"), "app:x:77:88::/:/bin/sh\n");
    fs::create_dir(e2.dst.join("etc")).unwrap();
    symlink("/real/passwd", e2.dst.join("etc/passwd")).unwrap();
    assert_eq!(resolve_chown(&e2.dst, &Chown { user: "app".into(), group: None }).unwrap(), (77, 88));
    let err = resolve_chown(&e2.dst, &Chown { user: "1".into(), group: Some("g".into()) }).unwrap_err();
    assert!(err.to_string().contains("no /etc/group"), "{err}");
}

#[test]
fn chown_by_name_through_the_op() {
    let e = env();
    semantics_tree(&e.src);
    user_db(&e.dst);
    let mut o = op(&["top.txt"], "/named-owner.txt");
    o.chown = Some(Chown { user: "nobody".into(), group: Some("nogroup".into()) });
    run(&e, &o).unwrap();
    assert_eq!(owner(&e.dst.join("named-owner.txt")), (65534, 65533));
}

#[test]
fn chmod_octal_and_symbolic() {
    let e = env();
    semantics_tree(&e.src);
    let mut o = op(&["top.txt"], "/exec.txt");
    o.chmod = Some("0755".into());
    run(&e, &o).unwrap();
    assert_eq!(mode(&e.dst.join("exec.txt")), 0o755);

    // Applies to directories too (and their contents).
    let mut o = op(&["dir"], "/sym");
    // `X` counts only with `+` (BSD setmode, as BuildKit): `g=rX` would be `g=r`.
    o.chmod = Some("u+w,g=r,g+X,o-rwx".into());
    run(&e, &o).unwrap();
    assert_eq!(mode(&e.dst.join("sym/a.txt")), 0o640);
    assert_eq!(mode(&e.dst.join("sym/sub")), 0o750);
    assert_eq!(mode(&e.dst.join("sym/sub/b.txt")), 0o640);
    // The symlink keeps its own (ignored) mode.
    assert!(fs::symlink_metadata(e.dst.join("sym/link-to-a")).unwrap().file_type().is_symlink());

    let mut o = op(&["dir"], "/oct");
    o.chmod = Some("4711".into());
    run(&e, &o).unwrap();
    assert_eq!(mode(&e.dst.join("oct/a.txt")), 0o4711);
    assert_eq!(mode(&e.dst.join("oct/sub")), 0o4711);

    let mut o = op(&["top.txt"], "/bad");
    o.chmod = Some("0999".into());
    let err = run(&e, &o).unwrap_err();
    assert!(err.to_string().contains("it should be octal string and between 0 and 07777"), "{err}");
    assert!(parse_chmod("u+x").is_ok());
    assert!(parse_chmod("u+q").is_err());
}

// ---- what cp -a keeps

#[test]
fn modes_times_special_bits_and_devices_are_kept() {
    let e = env();
    write(&e.src.join("s/orig"), "data\n");
    chmod(&e.src.join("s/orig"), 0o4755);
    fs::create_dir(e.src.join("s/sticky")).unwrap();
    chmod(&e.src.join("s/sticky"), 0o1777);
    write(&e.src.join("s/empty"), "");
    chmod(&e.src.join("s/empty"), 0o000);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        e.src.join("s/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        e.src.join("s/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec { tv_sec: 1_500_000_000, tv_nsec: 5 },
        last_modification: rustix::fs::Timespec { tv_sec: 1_600_000_000, tv_nsec: 123_456_789 },
    };
    for p in ["s/orig", "s/sticky"] {
        rustix::fs::utimensat(rustix::fs::CWD, e.src.join(p), &t, rustix::fs::AtFlags::empty()).unwrap();
    }
    symlink("orig", e.src.join("s/ln")).unwrap();
    rustix::fs::utimensat(rustix::fs::CWD, e.src.join("s/ln"), &t, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
    run_with(&e, &op(&["s"], "/s"), None, &no_exclude, false).unwrap();

    assert_eq!(mode(&e.dst.join("s/orig")), 0o4755);
    assert_eq!(mode(&e.dst.join("s/sticky")), 0o1777);
    assert_eq!(mode(&e.dst.join("s/empty")), 0o000);
    assert!(fs::symlink_metadata(e.dst.join("s/fifo")).unwrap().file_type().is_fifo_like());
    assert_eq!(mode(&e.dst.join("s/fifo")), 0o640);
    let null = fs::symlink_metadata(e.dst.join("s/null")).unwrap();
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    for p in ["s/orig", "s/sticky", "s/ln"] {
        let m = fs::symlink_metadata(e.dst.join(p)).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 123_456_789), "{p}");
        assert_eq!((m.atime(), m.atime_nsec()), (1_500_000_000, 5), "{p}");
    }
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

#[test]
fn hard_links_stay_linked() {
    let e = env();
    write(&e.src.join("h/one"), "shared\n");
    fs::hard_link(e.src.join("h/one"), e.src.join("h/two")).unwrap();
    fs::create_dir(e.src.join("h/sub")).unwrap();
    fs::hard_link(e.src.join("h/one"), e.src.join("h/sub/three")).unwrap();
    let stats = run(&e, &op(&["h"], "/h")).unwrap();
    let ino = |p: &str| fs::metadata(e.dst.join(p)).unwrap().ino();
    assert_eq!(ino("h/one"), ino("h/two"));
    assert_eq!(ino("h/one"), ino("h/sub/three"));
    assert_ne!(ino("h/one"), fs::metadata(e.src.join("h/one")).unwrap().ino());
    assert_eq!(stats.files, 1);
    assert_eq!(stats.hardlinks, 2);
}

#[test]
fn extended_attributes_and_capabilities_are_kept() {
    let e = env();
    write(&e.src.join("x/ping"), "bin");
    chmod(&e.src.join("x/ping"), 0o755);
    xattr::set(e.src.join("x/ping"), "user.note", b"hello").unwrap();
    // security.capability v2 for cap_net_raw (bit 13), permitted+effective.
    let mut cap = vec![0u8; 20];
    cap[0..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
    xattr::set(e.src.join("x/ping"), "security.capability", &cap).unwrap();
    run_with(&e, &op(&["x"], "/x"), Some((1000, 1000)), &no_exclude, true).unwrap();
    assert_eq!(xattr::get(e.dst.join("x/ping"), "user.note").unwrap().as_deref(), Some(&b"hello"[..]));
    // Set after chown, which would otherwise have dropped it.
    assert_eq!(xattr::get(e.dst.join("x/ping"), "security.capability").unwrap(), Some(cap));
}

// ---- exclusion

#[test]
fn exclude_predicate_sees_paths_relative_to_the_source_root() {
    let e = env();
    semantics_tree(&e.src);
    write(&e.src.join("dir/notes.md"), "n");
    let seen = std::sync::Mutex::new(Vec::new());
    let ex = |p: &str, is_dir: bool| {
        seen.lock().unwrap().push((p.to_string(), is_dir));
        p == "dir/sub" || p.ends_with(".md")
    };
    run_with(&e, &op(&["dir"], "/ex"), None, &ex, true).unwrap();
    assert!(e.dst.join("ex/a.txt").exists());
    assert!(!e.dst.join("ex/sub").exists());
    assert!(!e.dst.join("ex/notes.md").exists());
    let seen = seen.into_inner().unwrap();
    assert!(seen.contains(&("dir/sub".to_string(), true)));
    assert!(!seen.iter().any(|(p, _)| p == "dir/sub/b.txt"), "an excluded directory is not descended");

    // Excluded entries do not exist: as literal sources or glob matches.
    let ex2 = |p: &str, _: bool| p == "top.txt" || p == "other/c.md";
    let err = run_with(&e, &op(&["top.txt"], "/x/"), None, &ex2, true).unwrap_err();
    assert!(matches!(err, CopyError::NotFound { .. }), "{err}");
    run_with(&e, &op(&["*.txt", "other/*"], "/g/"), None, &ex2, true).unwrap();
    assert!(!e.dst.join("g/top.txt").exists());
    assert!(!e.dst.join("g/c.md").exists());
}

#[test]
fn source_relative_excludes_like_buildkit() {
    let e = env();
    write(&e.src.join("dir3/a.mp3"), "m");
    write(&e.src.join("dir3/keep.txt"), "k");
    write(&e.src.join("dir3/sub/b.mp3"), "m");
    let req = CopyRequest {
        src_root: &e.src,
        dest_root: &e.dst,
        op: &op(&["dir3/"], "/3/"),
        owner: None,
        exclude: &no_exclude,
        source_is_context: true,
        dest_upper: None,
        earlier: None,
        record: None,
    };
    // `--exclude=*.mp3` matches `a.mp3` (relative to dir3), not `sub/b.mp3`.
    copy_with_source_excludes(&req, &|p, _| !p.contains('/') && p.ends_with(".mp3")).unwrap();
    assert!(!e.dst.join("3/a.mp3").exists());
    assert!(e.dst.join("3/keep.txt").exists());
    assert!(e.dst.join("3/sub/b.mp3").exists());
}

// ---- ADD

fn tar_bytes(entries: &[(&str, &[u8], u32, u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(1_600_000_000);
    b.append_data(&mut dir, "./", &[][..]).unwrap();
    for (name, data, mode, uid) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_uid(*uid as u64);
        h.set_gid(*uid as u64);
        h.set_mtime(1_600_000_000);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn add_extracts_archives_by_content() {
    let e = env();
    let t = tar_bytes(&[("inner/f", b"hi\n", 0o640, 77), ("top", b"t", 0o4755, 0)]);
    fs::write(e.src.join("plain.tar"), &t).unwrap();
    fs::write(e.src.join("bundle.tar.gz"), gzip(&t)).unwrap();
    fs::write(e.src.join("disguised.txt"), zstd::encode_all(&t[..], 3).unwrap()).unwrap();
    {
        let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        enc.write_all(&t).unwrap();
        fs::write(e.src.join("a.tbz"), enc.finish().unwrap()).unwrap();
        let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
        enc.write_all(&t).unwrap();
        fs::write(e.src.join("a.txz"), enc.finish().unwrap()).unwrap();
    }
    write(&e.src.join("note.txt"), "note\n");
    fs::write(e.src.join("fake.tar.gz"), gzip(b"not a tar at all")).unwrap();

    let add = |sources: &[&str], dest: &str| {
        let mut o = op(sources, dest);
        o.unpack_archives = true;
        o
    };
    let stats = run(&e, &add(&["bundle.tar.gz"], "/extracted-gz/")).unwrap();
    assert_eq!(stats.archives, 1);
    run(&e, &add(&["plain.tar"], "/extracted")).unwrap();
    for d in ["extracted-gz", "extracted"] {
        let d = e.dst.join(d);
        assert_eq!(read(&d.join("inner/f")), "hi\n");
        assert_eq!(mode(&d.join("inner/f")), 0o640);
        assert_eq!(owner(&d.join("inner/f")), (77, 77), "archive owners kept");
        assert_eq!(mode(&d.join("top")), 0o4755);
        assert_eq!(fs::metadata(d.join("inner/f")).unwrap().mtime(), 1_600_000_000);
        assert_eq!(mode(&d), 0o755);
    }
    for (src, dest) in [("disguised.txt", "/z/"), ("a.tbz", "/bz/"), ("a.txz", "/xz/")] {
        run(&e, &add(&[src], dest)).unwrap();
        assert_eq!(read(&e.dst.join(&dest[1..]).join("inner/f")), "hi\n", "{src}");
    }
    // Not archives: copied as files.
    run(&e, &add(&["note.txt"], "/notes/")).unwrap();
    assert_eq!(read(&e.dst.join("notes/note.txt")), "note\n");
    run(&e, &add(&["fake.tar.gz"], "/fake/")).unwrap();
    assert!(e.dst.join("fake/fake.tar.gz").is_file());
    // COPY never extracts.
    run(&e, &op(&["bundle.tar.gz"], "/not-extracted/")).unwrap();
    assert!(e.dst.join("not-extracted/bundle.tar.gz").is_file());
    // --chown overrides the archive's owners.
    run_with(&e, &add(&["plain.tar"], "/owned/"), Some((5, 6)), &no_exclude, true).unwrap();
    assert_eq!(owner(&e.dst.join("owned/inner/f")), (5, 6));
    assert_eq!(owner(&e.dst.join("owned")), (5, 6));
}

#[test]
fn add_extraction_stays_in_the_destination() {
    let e = env();
    // ../ in a name: cleaned as if the destination were / (moby chroots into it).
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    {
        let name = b"../../escape";
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
    }
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    fs::write(e.src.join("evil.tar"), b.into_inner().unwrap()).unwrap();
    let mut o = op(&["evil.tar"], "/out/");
    o.unpack_archives = true;
    run(&e, &o).unwrap();
    assert_eq!(read(&e.dst.join("out/escape")), "x");
    assert!(!e.dst.join("escape").exists());

    // A symlink to /etc, a directory etc, then an entry through the link: lands inside
    // the destination directory, which plays / for the archive.
    let link_tar = |with_etc: bool, hard: Option<&str>| {
        let mut b = tar::Builder::new(Vec::new());
        if with_etc {
            let mut d = tar::Header::new_gnu();
            d.set_entry_type(tar::EntryType::Directory);
            d.set_size(0);
            d.set_mode(0o755);
            b.append_data(&mut d, "etc/", &b""[..]).unwrap();
        }
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        b.append_link(&mut l, "l", "/etc").unwrap();
        let mut f = tar::Header::new_gnu();
        f.set_size(3);
        f.set_mode(0o644);
        b.append_data(&mut f, "l/strata-add-test", &b"bad"[..]).unwrap();
        if let Some(target) = hard {
            let mut hl = tar::Header::new_gnu();
            hl.set_entry_type(tar::EntryType::Link);
            hl.set_size(0);
            b.append_link(&mut hl, "pw", target).unwrap();
        }
        b.into_inner().unwrap()
    };
    fs::write(e.src.join("link.tar"), link_tar(true, None)).unwrap();
    let mut o = op(&["link.tar"], "/x/");
    o.unpack_archives = true;
    run(&e, &o).unwrap();
    assert_eq!(read(&e.dst.join("x/etc/strata-add-test")), "bad");
    assert_eq!(fs::read_link(e.dst.join("x/l")).unwrap(), Path::new("/etc"));
    assert!(!Path::new("/etc/strata-add-test").exists());
    // Without etc in the destination, the link leads nowhere: an error, as in moby.
    fs::write(e.src.join("link2.tar"), link_tar(false, None)).unwrap();
    let mut o = op(&["link2.tar"], "/y/");
    o.unpack_archives = true;
    let err = run(&e, &o).unwrap_err();
    assert!(err.to_string().contains("symbolic link to a missing directory"), "{err}");
    assert!(!e.dst.join("y/etc").exists());
    // A hard link to a file the archive did not write (../ is cleaned away): refused.
    fs::write(e.src.join("link3.tar"), link_tar(true, Some("../../../etc/passwd"))).unwrap();
    let mut o = op(&["link3.tar"], "/z/");
    o.unpack_archives = true;
    let err = run(&e, &o).unwrap_err();
    assert!(err.to_string().contains("hard link target"), "{err}");
    assert!(!Path::new("/etc/strata-add-test").exists());
}

// ---- --parents

#[test]
fn parents_keep_source_directories() {
    let e = env();
    write(&e.src.join("a/b/c.txt"), "c");
    write(&e.src.join("x/y/a.txt"), "xa");
    write(&e.src.join("x/y/b.txt"), "xb");
    write(&e.src.join("x/y/skip.md"), "no");
    write(&e.src.join("src/a.txt"), "1");
    write(&e.src.join("src/x/b.txt"), "2");
    write(&e.src.join("src/x/y/c.txt"), "3");
    write(&e.src.join("src/x/y/d.rs"), "4");
    chmod(&e.src.join("a/b"), 0o750);

    let par = |sources: &[&str], dest: &str| {
        let mut o = op(sources, dest);
        o.parents = true;
        o
    };
    run(&e, &par(&["a/b/c.txt"], "/dst/")).unwrap();
    assert_eq!(read(&e.dst.join("dst/a/b/c.txt")), "c");
    assert_eq!(mode(&e.dst.join("dst/a/b")), 0o750, "parents take their source directory's mode");

    run(&e, &par(&["./x/./y/*.txt"], "/p/")).unwrap();
    assert_eq!(read(&e.dst.join("p/y/a.txt")), "xa");
    assert_eq!(read(&e.dst.join("p/y/b.txt")), "xb");
    assert!(!e.dst.join("p/y/skip.md").exists());
    assert!(!e.dst.join("p/x").exists());

    run(&e, &par(&["./src/**/*.txt"], "/r/")).unwrap();
    for f in ["r/src/a.txt", "r/src/x/b.txt", "r/src/x/y/c.txt"] {
        assert!(e.dst.join(f).is_file(), "{f}");
    }
    assert!(!e.dst.join("r/src/x/y/d.rs").exists());

    // Two sources keep their own directories.
    run(&e, &par(&["./x/y/a.txt", "./src/a.txt"], "/two/")).unwrap();
    assert!(e.dst.join("two/x/y/a.txt").is_file());
    assert!(e.dst.join("two/src/a.txt").is_file());

    // A directory brings its contents.
    run(&e, &par(&["src/x"], "/dir/")).unwrap();
    assert!(e.dst.join("dir/src/x/y/c.txt").is_file());

    let err = run(&e, &par(&["a/b/missing.txt"], "/m/")).unwrap_err();
    assert_eq!(err.to_string(), "\"/a/b/missing.txt\": not found");
}

// ---- the conformance case, end to end

#[test]
fn conformance_copy_semantics() {
    let e = env();
    // The shared case's own files when ../shared is there; the same tree built here
    // otherwise (so this test always runs).
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/cases/copy-semantics");
    let src: PathBuf = if case.join("Dockerfile").exists() {
        case.to_path_buf()
    } else {
        semantics_tree(&e.src);
        e.src.clone()
    };
    user_db(&e.dst);
    let r = |o: CopyOp, owner: Option<(u32, u32)>| {
        copy(&CopyRequest {
            src_root: &src,
            dest_root: &e.dst,
            op: &o,
            owner,
            exclude: &no_exclude,
            source_is_context: true,
            dest_upper: None,
            earlier: None,
            record: None,
        })
        .unwrap()
    };
    r(op(&["dir"], "/copied-dir"), None);
    r(op(&["dir/"], "/copied-dir-slash/"), None);
    r(op(&["top.txt", "other/c.md"], "/multi/"), None);
    r(op(&["*.txt"], "/glob/"), None);
    r(op(&["dir/sub"], "/nested/new/path"), None);
    r(op(&["top.txt"], "/renamed.txt"), None);
    r(op(&["dir"], "/owned"), Some((1000, 1000)));
    let mut named = op(&["top.txt"], "/named-owner.txt");
    named.chown = Some(Chown { user: "nobody".into(), group: Some("nogroup".into()) });
    r(named, None);
    let mut exec = op(&["top.txt"], "/exec.txt");
    exec.chmod = Some("0755".into());
    r(exec, None);
    fs::create_dir(e.dst.join("wd")).unwrap();
    r(op(&["top.txt"], "/wd/relative.txt"), None);
    r(op(&["top.txt"], "/wd/"), None);

    let d = &e.dst;
    assert_eq!(read(&d.join("copied-dir/a.txt")), "a\n");
    if fs::symlink_metadata(src.join("dir/link-to-a")).unwrap().file_type().is_symlink() {
        assert_eq!(fs::read_link(d.join("copied-dir/link-to-a")).unwrap(), Path::new("a.txt"));
    } else {
        assert_eq!(fs::read(d.join("copied-dir/link-to-a")).unwrap(), fs::read(src.join("dir/link-to-a")).unwrap());
    }
    assert_eq!(read(&d.join("copied-dir-slash/sub/b.txt")), "b\n");
    assert!(d.join("multi/top.txt").is_file() && d.join("multi/c.md").is_file());
    assert!(d.join("glob/top.txt").is_file());
    assert!(d.join("nested/new/path/b.txt").is_file());
    assert!(d.join("renamed.txt").is_file());
    assert_eq!(owner(&d.join("owned")), (1000, 1000));
    assert_eq!(owner(&d.join("owned/sub/b.txt")), (1000, 1000));
    assert_eq!(owner(&d.join("named-owner.txt")), (65534, 65533));
    assert_eq!(mode(&d.join("exec.txt")), 0o755);
    assert!(d.join("wd/relative.txt").is_file() && d.join("wd/top.txt").is_file());
    assert_eq!(owner(&d.join("copied-dir/a.txt")), (0, 0));
    assert_eq!(mode(&d.join("copied-dir")), 0o755);
}

#[test]
fn conformance_add_archive() {
    let Some(shared) = strata_testsupport::skip::shared_dir("the add-archive conformance case") else { return };
    let case = shared.join("conformance/cases/add-archive");
    let case = case.as_path();
    assert!(case.join("Dockerfile").exists(), "{} has no Dockerfile", case.display());
    let e = env();
    let r = |sources: &[&str], dest: &str, unpack: bool| {
        let mut o = op(sources, dest);
        o.unpack_archives = unpack;
        copy(&CopyRequest {
            src_root: case,
            dest_root: &e.dst,
            op: &o,
            owner: None,
            exclude: &no_exclude,
            source_is_context: true,
            dest_upper: None,
            earlier: None,
            record: None,
        })
        .unwrap()
    };
    r(&["bundle.tar.gz"], "/extracted-gz/", true);
    r(&["plain.tar"], "/extracted/", true);
    r(&["note.txt"], "/notes/", true);
    r(&["bundle.tar.gz"], "/not-extracted/", false);
    assert!(e.dst.join("extracted-gz/inner/f").is_file());
    assert!(e.dst.join("extracted/inner/f").is_file());
    assert!(e.dst.join("notes/note.txt").is_file());
    assert!(e.dst.join("not-extracted/bundle.tar.gz").is_file());
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n", where <len> counts itself.
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

#[test]
fn add_keeps_pax_xattrs_devices_and_hard_links() {
    let e = env();
    let mut b = tar::Builder::new(Vec::new());
    let mut recs = pax_record("SCHILY.xattr.user.origin", b"archive");
    recs.extend(pax_record("mtime", b"1600000000.25"));
    let mut x = tar::Header::new_ustar();
    x.set_entry_type(tar::EntryType::XHeader);
    x.set_size(recs.len() as u64);
    x.set_mode(0o644);
    b.append_data(&mut x, "PaxHeaders/f", &recs[..]).unwrap();
    let mut f = tar::Header::new_ustar();
    f.set_size(4);
    f.set_mode(0o755);
    b.append_data(&mut f, "bin/f", &b"data"[..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_mtime(7);
    b.append_data(&mut h, "bin/h", &b"h"[..]).unwrap();
    let mut hl = tar::Header::new_ustar();
    hl.set_entry_type(tar::EntryType::Link);
    hl.set_size(0);
    hl.set_mode(0o644);
    hl.set_mtime(7);
    b.append_link(&mut hl, "bin/g", "bin/h").unwrap();
    let mut dev = tar::Header::new_ustar();
    dev.set_entry_type(tar::EntryType::Char);
    dev.set_size(0);
    dev.set_mode(0o666);
    dev.set_device_major(1).unwrap();
    dev.set_device_minor(3).unwrap();
    b.append_data(&mut dev, "dev/null", &[][..]).unwrap();
    fs::write(e.src.join("x.tar"), b.into_inner().unwrap()).unwrap();

    let mut o = op(&["x.tar"], "/r");
    o.unpack_archives = true;
    // --chmod does not apply to extracted entries.
    o.chmod = Some("0600".into());
    let stats = run(&e, &o).unwrap();
    assert_eq!(stats.archive_entries, 4);
    let f = e.dst.join("r/bin/f");
    assert_eq!(xattr::get(&f, "user.origin").unwrap().as_deref(), Some(&b"archive"[..]));
    let m = fs::metadata(&f).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 250_000_000));
    assert_eq!(mode(&f), 0o755);
    let h = fs::metadata(e.dst.join("r/bin/h")).unwrap();
    assert_eq!(h.ino(), fs::metadata(e.dst.join("r/bin/g")).unwrap().ino());
    assert_eq!(h.mtime(), 7);
    assert_eq!(fs::symlink_metadata(e.dst.join("r/dev/null")).unwrap().rdev(), rustix::fs::makedev(1, 3));
    // Implied parents: 0755, root.
    assert_eq!(mode(&e.dst.join("r/bin")), 0o755);
    assert_eq!(mode(&e.dst.join("r")), 0o755);
}
