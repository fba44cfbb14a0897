//! A Dockerfile never reaches the host's files (issue #12): every path strata resolves
//! in an image, a stage or a build context is resolved inside it, the way BuildKit
//! does, whatever symlinks, `..` components or archive entries the Dockerfile plants.
//!
//! Each test makes a scratch "victim" directory on the host that stands in for the
//! host's secrets (`/var/tmp/strata-victim-*`, holding `secret`, `passwd` and a
//! `Dockerfile`), names it in the Dockerfile the way an attacker would, and checks
//! after the build that the victim's listing, contents, modes and times are exactly
//! what they were, and that the marker of its secret appears nowhere in the output or
//! the image. Where BuildKit builds the case, the image content asserted is what
//! BuildKit (docker 20.10 and current) gives.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;

/// A host directory an attacker would like to read or write.
struct Victim {
    dir: PathBuf,
    marker: String,
    before: BTreeMap<String, String>,
}

impl Victim {
    fn new() -> Victim {
        let dir = PathBuf::from(format!("/var/tmp/{}", unique_name("strata-victim")));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = format!("HOST-SECRET-{}", unique_name("m"));
        std::fs::write(dir.join("secret"), format!("{marker}\n")).unwrap();
        std::fs::write(dir.join("passwd"), "root:x:0:0:root:/root:/bin/sh\nalice:x:4242:4242::/:/bin/sh\n").unwrap();
        std::fs::write(dir.join("Dockerfile"), format!("FROM scratch\nLABEL leaked={marker}\n")).unwrap();
        std::fs::write(dir.join(".dockerignore"), "*\n").unwrap();
        let before = state(&dir);
        Victim { dir, marker, before }
    }

    fn path(&self) -> String {
        self.dir.display().to_string()
    }

    /// Nothing was written, removed or changed in the victim, and its secret is not in
    /// `log` nor anywhere under `out` (an exported image, when there is one).
    fn assert_untouched(&self, log: &str, out: Option<&Path>) {
        assert_eq!(state(&self.dir), self.before, "the victim directory changed:\n{log}");
        assert!(!log.contains(&self.marker), "the host secret reached the build output:\n{log}");
        if let Some(out) = out {
            let grep = std::process::Command::new("grep").arg("-rqF").arg(&self.marker).arg(out).status().unwrap();
            assert!(!grep.success(), "the host secret reached the image under {}", out.display());
        }
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every entry with its mode, owner, size, mtime and content digest, and the
/// directory's own mtime (a created-then-removed entry moves it).
fn state(dir: &Path) -> BTreeMap<String, String> {
    let mut m = describe(dir, true);
    let md = std::fs::metadata(dir).unwrap();
    m.insert(".".into(), format!("{:o} {}.{}", md.mode(), md.mtime(), md.mtime_nsec()));
    m
}

/// A context directory with `Dockerfile` and the given extra files.
fn context(dockerfile: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        std::fs::write(ctx.path().join(name), content).unwrap();
    }
    ctx
}

/// Build `ctx` on busybox into a local directory; returns (output, log, the directory).
fn build(ctx: &Path, extra: &[&str]) -> (std::process::Output, String, tempfile::TempDir) {
    build_with_env(ctx, extra, &[])
}

fn build_with_env(
    ctx: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> (std::process::Output, String, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = format!("type=local,dest={}", out.path().display());
    let mut args = vec!["-o", &dest];
    args.extend_from_slice(extra);
    let o = common::build_with_env(root.path(), ctx, &args, envs);
    let log = text(&o);
    assert_no_panic(&log);
    (o, log, out)
}

fn read(out: &Path, path: &str) -> String {
    std::fs::read_to_string(out.join(path.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{path} in the image: {e}"))
}

#[test]
fn workdir_and_copy_destinations_through_symlinks_stay_in_the_image() {
    let v = Victim::new();
    let vp = v.path();
    // An absolute link, a relative one climbing far above the root, a chain of links,
    // and `..` components in WORKDIR itself; then COPY and a heredoc through them.
    let df = format!(
        "FROM busybox\n\
         RUN mkdir -p {vp} && ln -s {vp} /wd && ln -s ../../../../../../../..{vp} /rel && ln -s /wd /chain\n\
         WORKDIR /wd/made-by-workdir\n\
         RUN pwd > /pwd && touch made-by-run\n\
         WORKDIR /rel/rel-workdir\n\
         RUN touch made-by-run\n\
         WORKDIR /chain/chain-workdir\n\
         WORKDIR /../../..{vp}/../../../..{vp}/dotdot\n\
         COPY f /wd/copied/f\n\
         COPY <<EOF /chain/heredoc.txt\n\
         written by a heredoc\n\
         EOF\n\
         RUN --mount=type=secret,id=s,target=/wd/secret-target true\n"
    );
    let ctx = context(&df, &[("f", "from the context\n")]);
    let secret = format!("id=s,src={}", ctx.path().join("f").display());
    let (o, log, out) = build(ctx.path(), &["--secret", &secret]);
    v.assert_untouched(&log, Some(out.path()));
    assert!(o.status.success(), "{log}");
    let inside = out.path().join(vp.trim_start_matches('/'));
    for p in
        ["made-by-workdir/made-by-run", "rel-workdir/made-by-run", "chain-workdir", "dotdot", "copied/f", "heredoc.txt"]
    {
        assert!(inside.join(p).symlink_metadata().is_ok(), "{p} is not under {vp} in the image:\n{log}");
    }
    // The kernel's working directory is the real path (BuildKit prints the same).
    assert_eq!(read(out.path(), "/pwd"), format!("{vp}/made-by-workdir\n"));
    assert_eq!(read(&inside, "copied/f"), "from the context\n");
    // The secret's mount point was not left behind in the image either.
    assert!(inside.join("secret-target").symlink_metadata().is_err(), "{log}");
}

#[test]
fn a_bind_mount_from_a_stage_resolves_its_source_in_that_stage() {
    let v = Victim::new();
    let vp = v.path();
    // The link leads nowhere inside the stage: not found (BuildKit's mount fails too).
    for link in [vp.clone(), format!("../../../../../..{vp}"), "/hop".into()] {
        let df = format!(
            "FROM busybox AS s\nRUN ln -s {vp} /hop && ln -s {link} /x\n\
             FROM busybox\nRUN --mount=type=bind,from=s,source=x,target=/m cat /m/secret\n"
        );
        let ctx = context(&df, &[]);
        let (o, log, out) = build(ctx.path(), &[]);
        v.assert_untouched(&log, Some(out.path()));
        assert_eq!(o.status.code(), Some(1), "link {link}: {log}");
        assert!(log.contains("not found"), "link {link}: {log}");
        // A path through the link (source=x/secret) is resolved the same way.
        let df = df.replace("source=x,target=/m cat /m/secret", "source=x/secret,target=/m cat /m");
        let ctx = context(&df, &[]);
        let (o, log, _out) = build(ctx.path(), &[]);
        v.assert_untouched(&log, None);
        assert_eq!(o.status.code(), Some(1), "link {link}: {log}");
    }
    // Where the stage has that path, its own file is what the step reads.
    let df = format!(
        "FROM busybox AS s\nRUN mkdir -p {vp} && echo stage-file > {vp}/secret && ln -s {vp} /x\n\
         FROM busybox\nRUN --mount=type=bind,from=s,source=x,target=/m cat /m/secret > /read\n"
    );
    let ctx = context(&df, &[]);
    let (o, log, out) = build(ctx.path(), &[]);
    v.assert_untouched(&log, Some(out.path()));
    assert!(o.status.success(), "{log}");
    assert_eq!(read(out.path(), "/read"), "stage-file\n");
}

#[test]
fn a_bind_mount_from_the_context_never_follows_a_link_out_of_it() {
    let v = Victim::new();
    let vp = v.path();
    for (link, rw) in [(vp.clone(), false), (format!("../../../../../../../..{vp}"), false), (vp.clone(), true)] {
        let opts = if rw { ",rw" } else { "" };
        let df =
            format!("FROM busybox\nRUN --mount=type=bind,source=v,target=/m{opts} cat /m/secret; echo done > /m/new\n");
        let ctx = context(&df, &[]);
        std::os::unix::fs::symlink(&link, ctx.path().join("v")).unwrap();
        let (o, log, out) = build(ctx.path(), &[]);
        v.assert_untouched(&log, Some(out.path()));
        assert_eq!(o.status.code(), Some(1), "link {link}: {log}");
        assert!(log.contains("not found"), "link {link}: {log}");
    }
    // A link that stays in the context works as a bind source.
    let df = "FROM busybox\nRUN --mount=type=bind,source=v,target=/m cat /m/f > /read\n";
    let ctx = context(df, &[]);
    std::fs::create_dir(ctx.path().join("d")).unwrap();
    std::fs::write(ctx.path().join("d/f"), "in the context\n").unwrap();
    std::os::unix::fs::symlink("d", ctx.path().join("v")).unwrap();
    let (o, log, out) = build(ctx.path(), &[]);
    assert!(o.status.success(), "{log}");
    assert_eq!(read(out.path(), "/read"), "in the context\n");
}

#[test]
fn copy_sources_through_context_links_are_not_read_from_the_host() {
    let v = Victim::new();
    let vp = v.path();
    for src in ["v/secret", "v/*", "v"] {
        let df = format!("FROM busybox\nCOPY {src} /got/\n");
        let ctx = context(&df, &[]);
        std::os::unix::fs::symlink(&vp, ctx.path().join("v")).unwrap();
        let (o, log, out) = build(ctx.path(), &[]);
        v.assert_untouched(&log, Some(out.path()));
        // A literal source is not found; a wildcard under it matches nothing.
        assert!(!o.status.success() || src == "v/*", "COPY {src}: {log}");
        if o.status.success() {
            assert!(std::fs::read_dir(out.path().join("got")).map(|d| d.count() == 0).unwrap_or(true), "{log}");
        }
    }
}

#[test]
fn user_and_chown_take_the_image_passwd_through_its_symlink() {
    let v = Victim::new();
    let vp = v.path();
    // The image links /etc/passwd to a path that exists on the host with alice as
    // 4242; inside the image that path says 1111. BuildKit gives 1111.
    let df = format!(
        "FROM busybox\n\
         RUN mkdir -p {vp} && printf 'root:x:0:0:root:/root:/bin/sh\\nalice:x:1111:1111::/:/bin/sh\\n' > {vp}/passwd \
         && ln -sf {vp}/passwd /etc/passwd\n\
         COPY --chown=alice f /f\n\
         USER alice\n\
         RUN id -u > /tmp/uid\n"
    );
    let ctx = context(&df, &[("f", "x")]);
    let (o, log, out) = build(ctx.path(), &[]);
    v.assert_untouched(&log, Some(out.path()));
    assert!(o.status.success(), "{log}");
    assert_eq!(read(out.path(), "/tmp/uid"), "1111\n");
    // -o type=local does not keep owners; the layer does: read it from an OCI tar.
    let root = tempfile::tempdir().unwrap();
    let env = test_env().unwrap();
    let tar = ctx.path().join("img.tar");
    let o = strata(
        root.path(),
        &[
            "build",
            "--build-context",
            &busybox_context(&env),
            "-t",
            "owners:1",
            "-o",
            &format!("type=oci,dest={}", tar.display()),
            ctx.path().to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let work = tempfile::tempdir().unwrap();
    let rootfs = umoci_unpack(&tar, work.path(), "1");
    assert_eq!(std::fs::metadata(rootfs.join("f")).unwrap().uid(), 1111);
}

#[test]
fn a_cache_mount_from_a_stage_is_seeded_from_inside_that_stage() {
    let v = Victim::new();
    let vp = v.path();
    let df = format!(
        "FROM busybox AS s\nRUN mkdir -p /c && echo from-stage > /c/f && ln -s {vp} /link && ln -s /c /good\n\
         FROM busybox\nRUN --mount=type=cache,id=x,from=s,source=link,target=/m cat /m/secret\n"
    );
    let ctx = context(&df, &[]);
    let (o, log, out) = build(ctx.path(), &[]);
    v.assert_untouched(&log, Some(out.path()));
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("not found"), "{log}");
    // Through a link that stays in the stage, the cache starts with the stage's files.
    let df = df.replace("source=link,target=/m cat /m/secret", "source=good,target=/m cat /m/f > /read");
    let ctx = context(&df, &[]);
    let (o, log, out) = build(ctx.path(), &[]);
    assert!(o.status.success(), "{log}");
    assert_eq!(read(out.path(), "/read"), "from-stage\n");
}

/// Write a tar at `path` with python's tarfile (an independent writer): `entries` are
/// (name, kind, link target or content).
fn write_tar(path: &Path, entries: &[(&str, &str, &str)]) {
    let mut script = format!("import io, tarfile\nt = tarfile.open({:?}, 'w')\n", path.display().to_string());
    for (name, kind, arg) in entries {
        script.push_str(&format!("i = tarfile.TarInfo({name:?})\n"));
        match *kind {
            "symlink" => script.push_str(&format!("i.type = tarfile.SYMTYPE; i.linkname = {arg:?}; t.addfile(i)\n")),
            "hardlink" => script.push_str(&format!("i.type = tarfile.LNKTYPE; i.linkname = {arg:?}; t.addfile(i)\n")),
            _ => script.push_str(&format!("d = {arg:?}.encode(); i.size = len(d); t.addfile(i, io.BytesIO(d))\n")),
        }
    }
    script.push_str("t.close()\n");
    let st = std::process::Command::new("python3").arg("-c").arg(&script).status().unwrap();
    assert!(st.success());
}

#[test]
fn add_of_a_local_tar_keeps_every_entry_in_the_destination() {
    let v = Victim::new();
    let vp = v.path();
    // A `..` path, an absolute one, then a symlink to the victim and a file through it:
    // the destination directory is the archive's `/`, so all land under /x/<victim>
    // (BuildKit: the same three files there).
    let ctx = context("FROM busybox\nADD evil.tar /x/\n", &[]);
    let dotdot = format!("../../../../../../../..{vp}/pwned-dotdot");
    let absolute = format!("{vp}/pwned-absolute");
    write_tar(
        &ctx.path().join("evil.tar"),
        &[
            (&dotdot, "file", "pwned"),
            (&absolute, "file", "pwned"),
            ("link", "symlink", &vp),
            ("link/pwned-through-link", "file", "pwned"),
        ],
    );
    let (o, log, out) = build(ctx.path(), &[]);
    v.assert_untouched(&log, Some(out.path()));
    assert!(o.status.success(), "{log}");
    let inside = out.path().join("x").join(vp.trim_start_matches('/'));
    for f in ["pwned-through-link", "pwned-dotdot", "pwned-absolute"] {
        assert_eq!(read(&inside, f), "pwned", "{f}");
    }
    // The link first, when its target does not exist inside /x: BuildKit fails
    // ("open /link/pwned-through-link: no such file or directory"); so does strata.
    let ctx = context("FROM busybox\nADD evil.tar /x/\n", &[]);
    write_tar(&ctx.path().join("evil.tar"), &[("link", "symlink", &vp), ("link/pwned-through-link", "file", "pwned")]);
    let (o, log, out) = build(ctx.path(), &[]);
    v.assert_untouched(&log, Some(out.path()));
    assert_eq!(o.status.code(), Some(1), "{log}");
    // A hard link to a host file names a path the archive never wrote: refused.
    let ctx = context("FROM busybox\nADD evil.tar /x/\n", &[]);
    write_tar(&ctx.path().join("evil.tar"), &[("hard", "hardlink", &format!("{vp}/secret"))]);
    let (o, log, out) = build(ctx.path(), &[]);
    v.assert_untouched(&log, Some(out.path()));
    assert_eq!(o.status.code(), Some(1), "{log}");
}

#[test]
fn a_dockerfile_or_dockerignore_linked_out_of_the_context_is_not_read() {
    let v = Victim::new();
    let vp = v.path();
    let ctx = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(format!("{vp}/Dockerfile"), ctx.path().join("Dockerfile")).unwrap();
    let (o, log, _out) = build(ctx.path(), &[]);
    v.assert_untouched(&log, None);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("Dockerfile"), "{log}");
    // A .dockerignore linked to the victim's (`*`) is not applied: f is copied.
    let ctx = context("FROM busybox\nCOPY f /f\n", &[("f", "kept\n")]);
    std::os::unix::fs::symlink(format!("{vp}/.dockerignore"), ctx.path().join(".dockerignore")).unwrap();
    let (o, log, out) = build(ctx.path(), &[]);
    v.assert_untouched(&log, Some(out.path()));
    assert!(o.status.success(), "{log}");
    assert_eq!(read(out.path(), "/f"), "kept\n");
}

#[test]
fn the_copying_snapshotter_resolves_mount_sources_and_workdirs_the_same_way() {
    let v = Victim::new();
    let vp = v.path();
    let copying = [("STRATA_SNAPSHOTTER", "copying")];
    let df = format!(
        "FROM busybox AS s\nRUN ln -s {vp} /x\n\
         FROM busybox\nRUN mkdir -p {vp} && ln -s {vp} /wd\nWORKDIR /wd/made-by-workdir\nRUN touch made-by-run\n\
         RUN --mount=type=bind,from=s,source=x,target=/m cat /m/secret\n"
    );
    let ctx = context(&df, &[]);
    let (o, log, out) = build_with_env(ctx.path(), &[], &copying);
    v.assert_untouched(&log, Some(out.path()));
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("not found"), "{log}");
    let df = df.replace("RUN --mount=type=bind,from=s,source=x,target=/m cat /m/secret\n", "");
    let ctx = context(&df, &[]);
    let (o, log, out) = build_with_env(ctx.path(), &[], &copying);
    v.assert_untouched(&log, Some(out.path()));
    assert!(o.status.success(), "{log}");
    assert!(out.path().join(vp.trim_start_matches('/')).join("made-by-workdir/made-by-run").exists(), "{log}");
}
