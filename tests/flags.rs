//! Every `strata build` flag the README lists, through the binary, its effect checked
//! with an independent reader where there is one (skopeo reads OCI archives and
//! registries, busybox inside a RUN reads /etc/hosts, git makes a commit time).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;

fn context(dockerfile: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        let p = ctx.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    ctx
}

fn ok(o: &Output) -> String {
    let t = text(o);
    assert_no_panic(&t);
    assert!(o.status.success(), "{t}");
    t
}

/// `skopeo inspect ARGS oci-archive:TAR` as JSON.
fn skopeo_json(tar: &Path, args: &[&str]) -> Value {
    let o = Command::new("skopeo")
        .arg("inspect")
        .args(args)
        .arg(format!("oci-archive:{}", tar.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// How many steps a build ran, from its summary line.
fn steps_run(log: &str) -> usize {
    let line = log.lines().find(|l| l.starts_with("Build complete")).unwrap_or_else(|| panic!("{log}"));
    line.split(": ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn no_cache_and_no_cache_filter_rerun_what_they_name() {
    let ctx = context(
        "FROM busybox AS deps\nRUN echo deps > /deps\nFROM busybox AS app\nCOPY --from=deps /deps /deps\nRUN echo app > /app\n",
        &[],
    );
    let root = tempfile::tempdir().unwrap();
    assert_eq!(steps_run(&ok(&build_with(root.path(), ctx.path(), &[]))), 3);
    assert_eq!(steps_run(&ok(&build_with(root.path(), ctx.path(), &[]))), 0, "all cached");
    assert_eq!(
        steps_run(&ok(&build_with(root.path(), ctx.path(), &["--no-cache"]))),
        3,
        "--no-cache reruns every step"
    );
    // Only the app stage's steps (its COPY and RUN); deps stays cached.
    let log = ok(&build_with(root.path(), ctx.path(), &["--no-cache-filter", "app"]));
    assert_eq!(steps_run(&log), 2, "{log}");
    // The deps step is `#N [deps 2/2] RUN ...` followed by `#N CACHED`.
    let deps = log.lines().find(|l| l.contains("[deps 2/2] RUN echo deps")).unwrap_or_else(|| panic!("{log}"));
    let number = deps.split_whitespace().next().unwrap();
    assert!(log.lines().any(|l| l == format!("{number} CACHED")), "{log}");
}

#[test]
fn labels_annotations_iidfile_and_quiet() {
    let ctx = context("FROM busybox\nLABEL from.file=1\nRUN true\n", &[]);
    let root = tempfile::tempdir().unwrap();
    let tar = ctx.path().join("img.tar");
    let iid = ctx.path().join("iid");
    let dest = format!("type=oci,dest={}", tar.display());
    let o = build_with(
        root.path(),
        ctx.path(),
        &[
            "-q",
            "-t",
            "flags:1",
            "-o",
            &dest,
            "--label",
            "org.example.team=build",
            "--annotation",
            "org.example.note=annotated",
            "--iidfile",
            iid.to_str().unwrap(),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(o.status.success(), "{}", text(&o));
    // -q: nothing on stdout but the image ID, the same as --iidfile's.
    assert!(out.starts_with("sha256:") && out.len() == 71 && !out.contains('\n'), "{out:?}");
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), out);
    let config = skopeo_json(&tar, &["--config"]);
    assert_eq!(config["config"]["Labels"]["org.example.team"], "build", "{config}");
    assert_eq!(config["config"]["Labels"]["from.file"], "1", "{config}");
    let raw = skopeo_json(&tar, &["--raw"]);
    assert_eq!(raw["annotations"]["org.example.note"], "annotated", "manifest annotation: {raw}");
    // The image ID is the config's digest (docker's image ID).
    assert_eq!(raw["config"]["digest"], out.as_str());
}

#[test]
fn index_annotations_on_a_multi_platform_image() {
    let ctx = context("FROM busybox\nCOPY Dockerfile /\n", &[]);
    let root = tempfile::tempdir().unwrap();
    let tar = ctx.path().join("img.tar");
    let dest = format!("type=oci,dest={}", tar.display());
    ok(&build_with(
        root.path(),
        ctx.path(),
        &["--platform", "linux/amd64,linux/arm64", "-o", &dest, "--annotation", "index:org.example.index=yes"],
    ));
    let raw = skopeo_json(&tar, &["--raw"]);
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json", "{raw}");
    assert_eq!(raw["annotations"]["org.example.index"], "yes", "index annotation: {raw}");
}

#[test]
fn add_host_reaches_etc_hosts() {
    let ctx = context("FROM busybox\nRUN grep -w 'db.internal' /etc/hosts > /hosts\n", &[]);
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = format!("type=local,dest={}", out.path().display());
    ok(&build_with(root.path(), ctx.path(), &["--add-host", "db.internal:10.1.2.3", "-o", &dest]));
    let hosts = std::fs::read_to_string(out.path().join("hosts")).unwrap();
    assert!(hosts.starts_with("10.1.2.3") && hosts.contains("db.internal"), "{hosts:?}");
}

#[test]
fn rawjson_progress_is_one_json_event_per_line() {
    let ctx = context("FROM busybox\nRUN echo hello-rawjson\n", &[]);
    let root = tempfile::tempdir().unwrap();
    let env = test_env().expect("the test environment (tests/setup) is required");
    let bb = busybox_context(&env);
    let o = strata(root.path(), &["build", "--progress=rawjson", "--build-context", &bb, ctx.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let events: Vec<Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(events.len() >= 3, "{err}");
    let text_of = |v: &Value| v.to_string();
    assert!(events.iter().any(|e| text_of(e).contains("hello-rawjson")), "the RUN's output is an event: {err}");
    assert!(events.iter().any(|e| e["event"] == "log" && text_of(e).contains("hello-rawjson")), "{err}");
    assert!(events.iter().filter(|e| e["event"] == "done").count() >= 2, "{err}");
    assert!(
        events.iter().all(|e| e["event"].is_string() && e["vertex"].is_string() || e["event"] == "warning"),
        "{err}"
    );
    assert!(!err.contains("Build complete"), "rawjson prints no summary line");
}

#[test]
fn call_check_and_print_graph_json() {
    let clean = context("FROM busybox\nRUN true\n", &[]);
    let root = tempfile::tempdir().unwrap();
    let o = strata(root.path(), &["build", "--call=check", clean.path().to_str().unwrap()]);
    assert!(o.status.success() && text(&o).contains("no warnings found"), "{}", text(&o));
    // `as` in lowercase next to an uppercase FROM: BuildKit's FromAsCasing lint.
    let linted = context("FROM busybox as base\nRUN true\n", &[]);
    let o = strata(root.path(), &["build", "--call=check", linted.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("FromAsCasing") && text(&o).contains("1 warning found"), "{}", text(&o));

    let o = build_with(root.path(), clean.path(), &["--print-graph=json"]);
    assert!(o.status.success(), "{}", text(&o));
    let graph: Value = serde_json::from_slice(&o.stdout).expect("--print-graph=json prints JSON");
    let nodes = graph["nodes"].as_object().expect("nodes");
    assert!(nodes.values().any(|n| n["op"]["Exec"]["args"].to_string().contains("true")), "{graph}");
    // Nothing ran, nothing was stored.
    assert!(
        !root.path().join("snapshots").exists()
            || std::fs::read_dir(root.path().join("cache")).map(|d| d.count() == 0).unwrap_or(true)
    );
}

#[test]
fn compression_level_and_oci_mediatypes() {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY data /data\n").unwrap();
    // Compressible but not trivially: repeated text with varying numbers.
    let data: String = (0..200_000).map(|i| format!("line {} of the data {}\n", i, i * 7 % 1000)).collect();
    std::fs::write(ctx.path().join("data"), data).unwrap();
    let root = tempfile::tempdir().unwrap();
    let layer_size = |extra: &str| -> (u64, Value) {
        let tar = ctx.path().join("out.tar");
        let dest = format!("type=oci,dest={},{extra}", tar.display());
        ok(&strata(root.path(), &["build", "-o", &dest, ctx.path().to_str().unwrap()]));
        let raw = skopeo_json(&tar, &["--raw"]);
        (raw["layers"][0]["size"].as_u64().unwrap(), raw)
    };
    let (fast, raw) = layer_size("compression=gzip,compression-level=1");
    let (small, _) = layer_size("compression=gzip,compression-level=9");
    assert!(small < fast, "level 9 ({small}) is not smaller than level 1 ({fast})");
    assert_eq!(raw["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    let (_, docker) = layer_size("oci-mediatypes=false");
    assert_eq!(docker["mediaType"], "application/vnd.docker.distribution.manifest.v2+json", "{docker}");
    assert_eq!(docker["layers"][0]["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip", "{docker}");
}

#[test]
fn dockerfile_from_stdin() {
    let ctx = context("this is not the Dockerfile used\n", &[("f", "from the context\n")]);
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let env = test_env().expect("the test environment (tests/setup) is required");
    let mut child = Command::new(strata_bin())
        .arg("--root")
        .arg(root.path())
        .args(["build", "--progress=plain", "--build-context", &busybox_context(&env), "-f", "-", "-o"])
        .arg(format!("type=local,dest={}", out.path().display()))
        .arg(ctx.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"FROM busybox\nCOPY f /f\nRUN echo stdin > /how\n").unwrap();
    let o = child.wait_with_output().unwrap();
    ok(&o);
    assert_eq!(std::fs::read_to_string(out.path().join("f")).unwrap(), "from the context\n");
    assert_eq!(std::fs::read_to_string(out.path().join("how")).unwrap(), "stdin\n");
}

#[test]
fn source_date_epoch_from_git_is_the_last_commit_time() {
    let ctx = context("FROM busybox\nCOPY f /f\n", &[("f", "x\n")]);
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args(args)
            .current_dir(ctx.path())
            .env("GIT_AUTHOR_DATE", "1700000123 +0000")
            .env("GIT_COMMITTER_DATE", "1700000123 +0000")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", text(&o));
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "c"]);
    let root = tempfile::tempdir().unwrap();
    let tar = ctx.path().join("img.tar");
    let dest = format!("type=oci,dest={}", tar.display());
    ok(&build_with(root.path(), ctx.path(), &["--source-date-epoch", "git", "-o", &dest]));
    let config = skopeo_json(&tar, &["--config"]);
    assert_eq!(config["created"], "2023-11-14T22:15:23Z", "{config}");
}

#[test]
fn dockerignore_keeps_excluded_files_out_of_the_image() {
    let ctx = context(
        "FROM busybox\nCOPY . /app/\n",
        &[
            (".dockerignore", "*.log\nsecrets/\n!secrets/public.txt\n"),
            ("a.txt", "a"),
            ("b.log", "b"),
            ("secrets/key", "k"),
            ("secrets/public.txt", "p"),
        ],
    );
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = format!("type=local,dest={}", out.path().display());
    ok(&build_with(root.path(), ctx.path(), &["-o", &dest]));
    let app = out.path().join("app");
    assert!(app.join("a.txt").exists());
    assert!(!app.join("b.log").exists(), "*.log is excluded");
    assert!(!app.join("secrets/key").exists(), "secrets/ is excluded");
    assert!(app.join("secrets/public.txt").exists(), "re-included by !secrets/public.txt");
}

#[test]
fn images_rm_inspect_du_and_completion() {
    let ctx = context("FROM busybox\nRUN echo x > /x\n", &[]);
    let root = tempfile::tempdir().unwrap();
    ok(&build_with(root.path(), ctx.path(), &["-t", "house:1"]));
    let listed = ok(&strata(root.path(), &["images"]));
    assert!(listed.contains("house") && listed.contains("1"), "{listed}");
    let o = strata(root.path(), &["inspect", "house:1"]);
    let inspected: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(inspected["name"], "docker.io/library/house:1");
    assert!(inspected["config"]["rootfs"]["diff_ids"].as_array().is_some_and(|d| d.len() == 2), "{inspected}");
    let du = ok(&strata(root.path(), &["du"]));
    assert!(du.contains("blobs") && du.contains("snapshots"), "{du}");
    ok(&strata(root.path(), &["rm", "house:1"]));
    assert!(!ok(&strata(root.path(), &["images"])).contains("house"));
    let o = strata(root.path(), &["inspect", "house:1"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = strata(root.path(), &["rm", "nothing-here:1"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    for shell in ["bash", "zsh", "fish"] {
        let o = strata(root.path(), &["completion", shell]);
        let script = ok(&o);
        assert!(script.contains("strata") && script.contains("build"), "{shell}: {script}");
    }
}

#[test]
fn login_and_logout_against_the_tls_registry() {
    let env = test_env().expect("the test environment (tests/setup) is required");
    let tls = env["RIG_TLS_REGISTRY"].clone();
    let home = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let login = |pass: &str| {
        let mut child = Command::new(strata_bin())
            .arg("--root")
            .arg(root.path())
            .args(["--tls-ca", &env["RIG_CA"], "login", &tls, "-u", &env["RIG_USER"], "--password-stdin"])
            .env("DOCKER_CONFIG", home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(format!("{pass}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let o = login("wrong-password");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        !home.path().join("config.json").exists()
            || !std::fs::read_to_string(home.path().join("config.json")).unwrap().contains(&tls)
    );
    ok(&login(&env["RIG_PASS"]));
    let cfg = std::fs::read_to_string(home.path().join("config.json")).unwrap();
    assert!(cfg.contains(&tls), "{cfg}");
    // The stored credentials work: a pull from the TLS registry needs them.
    let ctx = context(&format!("FROM {tls}/library/busybox:latest\nRUN true\n"), &[]);
    let o = Command::new(strata_bin())
        .arg("--root")
        .arg(root.path())
        .args(["--tls-ca", &env["RIG_CA"], "build", "--progress=plain"])
        .arg(ctx.path())
        .env("DOCKER_CONFIG", home.path())
        .output()
        .unwrap();
    ok(&o);
    let o = Command::new(strata_bin()).args(["logout", &tls]).env("DOCKER_CONFIG", home.path()).output().unwrap();
    ok(&o);
    assert!(!std::fs::read_to_string(home.path().join("config.json")).unwrap().contains(&tls), "logout removed them");
}

#[test]
fn a_repush_uploads_nothing_and_another_repository_mounts() {
    let env = test_env().expect("the test environment (tests/setup) is required");
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nCOPY big /big\n").unwrap();
    write_noise(&ctx.path().join("big"), 4 << 20, 3);
    let root = tempfile::tempdir().unwrap();
    ok(&build_with(root.path(), ctx.path(), &["-t", "pushme:1"]));
    // Through a counting relay in front of the plain registry.
    let proxy = strata_testsupport::fault_proxy::Proxy::raw(&env["RIG_REGISTRY"]);
    let first = format!("{}/{}:1", proxy.addr, unique_repo("repush"));
    ok(&strata(root.path(), &["tag", "pushme:1", &first]));
    ok(&strata(root.path(), &["push", "--progress=plain", &first]));
    let sent_first = proxy.stats.bytes_up.swap(0, std::sync::atomic::Ordering::SeqCst);
    assert!(sent_first > 4 << 20, "the first push sent {sent_first} bytes");
    let log = ok(&strata(root.path(), &["push", "--progress=plain", &first]));
    let sent_again = proxy.stats.bytes_up.swap(0, std::sync::atomic::Ordering::SeqCst);
    assert!(sent_again < 64 << 10, "a re-push sent {sent_again} bytes: {log}");
    assert!(log.contains("already exists"), "{log}");
    // Another repository of the same registry: the blobs are mounted, not uploaded.
    let second = format!("{}/{}:1", proxy.addr, unique_repo("mounted"));
    ok(&strata(root.path(), &["tag", "pushme:1", &second]));
    let log = ok(&strata(root.path(), &["push", "--progress=plain", &second]));
    let sent_mount = proxy.stats.bytes_up.load(std::sync::atomic::Ordering::SeqCst);
    assert!(log.contains("mounted from"), "{log}");
    assert!(sent_mount < 64 << 10, "a push to another repository sent {sent_mount} bytes: {log}");
}

#[test]
fn the_copying_snapshotter_is_chosen_where_overlayfs_cannot_be_mounted() {
    // overlayfs cannot be the upper file system of another overlay: a store on one
    // makes the probe fail, and strata falls back on its own.
    let base = tempfile::tempdir().unwrap();
    for d in ["l", "u", "w", "m"] {
        std::fs::create_dir(base.path().join(d)).unwrap();
    }
    let p = |d: &str| base.path().join(d).display().to_string();
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={},upperdir={},workdir={}", p("l"), p("u"), p("w")))
        .arg(p("m"))
        .status()
        .unwrap();
    assert!(st.success(), "mounting the test overlay (needs root)");
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(p("m"));
    let root = base.path().join("m/root");
    let ctx = context("FROM busybox\nRUN echo copied > /made\n", &[]);
    let out = tempfile::tempdir().unwrap();
    let dest = format!("type=local,dest={}", out.path().display());
    let o = build_with_env(&root, ctx.path(), &["-o", &dest], &[("STRATA_SNAPSHOTTER", "")]);
    let log = ok(&o);
    assert!(log.contains("using the copying snapshotter"), "{log}");
    assert_eq!(std::fs::read_to_string(out.path().join("made")).unwrap(), "copied\n");
}
