//! End-to-end builds through the strata binary: runc, overlayfs, the seed busybox
//! image, OCI layout output read back by umoci.

mod common;

use common::*;

#[test]
fn hello_example_builds_runs_and_caches() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("hello.tar");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello");
    let ctx = busybox_context(&env);
    let args = [
        "build",
        "--progress=plain",
        "--build-context",
        &ctx,
        "-t",
        "hello",
        "--output",
        &format!("type=oci,dest={}", out.display()),
        example,
    ];
    let o = strata(root.path(), &args);
    assert!(o.status.success(), "build failed: {}", text(&o));
    let rootfs = umoci_unpack(&out, work.path(), "latest");
    assert_eq!(std::fs::read_to_string(rootfs.join("app/greeting.txt")).unwrap(), "Hello from strata!\n");
    let built_by = std::fs::read_to_string(rootfs.join("app/built-by")).unwrap();
    assert!(built_by.starts_with("built by strata on "), "{built_by}");
    // No trace of the sandbox's network files or mount points.
    assert!(!rootfs.join("etc/resolv.conf").exists(), "resolv.conf leaked into the image");
    assert!(!rootfs.join("etc/hosts").exists(), "/etc/hosts leaked into the image");

    // A second identical build reruns nothing.
    let o2 = strata(root.path(), &args);
    assert!(o2.status.success(), "{}", text(&o2));
    let log = text(&o2);
    assert!(log.contains("CACHED"), "{log}");
    assert!(!log.lines().any(|l| l.contains(" DONE ") && l.contains("RUN")), "something reran: {log}");
    assert!(log.contains("0 steps run") || log.contains(" 0 step"), "{log}");
    // ...and gives the same image (its timestamps are the first build's), as BuildKit.
    let image = |t: &str| t.lines().find_map(|l| l.split(". Image ").nth(1)).map(str::to_string);
    assert!(image(&text(&o)).is_some(), "{}", text(&o));
    assert_eq!(image(&text(&o)), image(&log));
}

#[test]
fn changing_one_context_file_reruns_only_its_readers() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx_dir.path().join("Dockerfile"),
        "FROM busybox\nRUN echo base > /base\nCOPY a.txt /a.txt\nRUN cat /a.txt > /copy\nCOPY b.txt /b.txt\n",
    )
    .unwrap();
    std::fs::write(ctx_dir.path().join("a.txt"), "a1").unwrap();
    std::fs::write(ctx_dir.path().join("b.txt"), "b1").unwrap();
    let ctx = busybox_context(&env);
    let dir = ctx_dir.path().to_str().unwrap();
    let args = ["build", "--progress=plain", "--build-context", &ctx, "-t", "t", "--build-arg", "UNUSED=1", dir];
    let o = strata(root.path(), &args);
    assert!(o.status.success(), "{}", text(&o));
    // Changing b.txt reruns only COPY b.txt.
    std::fs::write(ctx_dir.path().join("b.txt"), "b2").unwrap();
    let o = strata(root.path(), &args);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("1 step run"), "expected exactly one step to run: {log}");
    // An unused ARG changes nothing.
    let args2 = ["build", "--progress=plain", "--build-context", &ctx, "-t", "t", "--build-arg", "UNUSED=2", dir];
    let o = strata(root.path(), &args2);
    let log = text(&o);
    assert!(o.status.success() && log.contains("0 steps run"), "{log}");
    // Same size and mtime, different content: still detected (ctime).
    let p = ctx_dir.path().join("a.txt");
    let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
    std::fs::write(&p, "a9").unwrap();
    std::fs::File::options().write(true).open(&p).unwrap().set_modified(mtime).unwrap();
    let o = strata(root.path(), &args2);
    let log = text(&o);
    assert!(o.status.success() && log.contains("3 steps run"), "COPY a.txt and everything after it rerun: {log}");
}

#[test]
fn failing_run_exits_1_and_names_the_step() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx_dir = tempfile::tempdir().unwrap();
    std::fs::write(ctx_dir.path().join("Dockerfile"), "FROM busybox\nRUN echo about-to-fail && false\n").unwrap();
    let ctx = busybox_context(&env);
    let o =
        strata(root.path(), &["build", "--progress=plain", "--build-context", &ctx, ctx_dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let log = text(&o);
    assert!(log.contains("RUN echo about-to-fail && false"), "{log}");
    assert!(log.contains("exit code: 1"), "{log}");
    assert!(log.contains("about-to-fail"), "last output lines shown: {log}");
    assert!(log.contains("Dockerfile:2\n"), "the error names the file and line: {log}");
    assert!(log.contains("   2 | >>> RUN echo about-to-fail && false"), "the instruction is shown: {log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn dockerfile_syntax_error_exits_1_with_line() {
    let root = tempfile::tempdir().unwrap();
    let ctx_dir = tempfile::tempdir().unwrap();
    std::fs::write(ctx_dir.path().join("Dockerfile"), "FROM busybox\nCOPY onlyone\n").unwrap();
    let o = strata(root.path(), &["build", ctx_dir.path().to_str().unwrap()]);
    // A Dockerfile error fails the build (1, as buildx); 2 is for a wrong command line.
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let log = text(&o);
    assert!(log.contains(":2:"), "names the line: {log}");
    assert!(log.contains("COPY requires at least two arguments"), "{log}");
}

#[test]
fn unknown_flag_and_unsupported_flags_exit_2() {
    let root = tempfile::tempdir().unwrap();
    let o = strata(root.path(), &["build", "--no-such-flag", "."]);
    assert_eq!(o.status.code(), Some(2));
    let o = strata(root.path(), &["build", "--cache-to", "type=gha", "."]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("type=gha is not supported by strata"), "{}", text(&o));
}

#[test]
fn an_unterminated_heredoc_names_its_terminator_and_points_at_it() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nRUN <<EOF\necho hi\n  EOF\n").unwrap();
    let o = strata(root.path(), &["build", "--call=outline", ctx.path().to_str().unwrap()]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    // Line 2, column 5: the `<<EOF`; the terminator named; the indented one explained.
    assert!(log.contains("Dockerfile:2:5: unterminated heredoc <<EOF"), "{log}");
    assert!(log.contains("\"EOF\"") && log.contains("<<-EOF"), "{log}");
    assert!(log.contains("\n   |     ^"), "the caret is under <<: {log}");
}

/// Lower a Dockerfile (no base image, nothing run) under a 4 GB address-space limit.
fn lower_under_a_memory_limit(dockerfile: &str) -> std::process::Output {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    std::process::Command::new("prlimit")
        .arg("--as=4000000000")
        .arg(strata_bin())
        .arg("--root")
        .arg(root.path())
        .args(["build", "--print-graph=json"])
        .arg(ctx.path())
        .output()
        .expect("prlimit (util-linux)")
}

#[test]
fn expansions_that_grow_without_bound_fail_clearly_instead_of_taking_the_memory() {
    // Each ARG doubles the one before: 2^30 times the first value by the last line.
    let mut df = String::from("FROM scratch\nARG A0=abcdefghijklmnopqrstuvwxyz012345\n");
    for i in 1..=30 {
        df.push_str(&format!("ARG A{i}=${{A{}}}${{A{}}}\n", i - 1, i - 1));
    }
    df.push_str("RUN echo $A30\n");
    let o = lower_under_a_memory_limit(&df);
    let log = text(&o);
    assert_no_panic(&log);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("Dockerfile:18:1") && log.contains("at most 1 MiB"), "names the ARG and its line: {log}");
    // The same before the first FROM (global ARGs).
    let global = df.replace("FROM scratch\n", "").replace("RUN echo $A30\n", "FROM scratch\nRUN true\n");
    let o = lower_under_a_memory_limit(&global);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("at most 1 MiB"), "{}", text(&o));
    // Values under the word limit, but a stage environment no process could be given.
    let mut wide = String::from("FROM scratch\nARG W0=0123456789abcdef\n");
    for i in 1..=16 {
        wide.push_str(&format!("ARG W{i}=${{W{}}}${{W{}}}\n", i - 1, i - 1));
    }
    for i in 0..8 {
        wide.push_str(&format!("ENV E{i}=${{W16}}\n"));
    }
    let o = lower_under_a_memory_limit(&wide);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("over strata's limit of 4 MiB"), "{}", text(&o));
    // A legitimately large value is fine.
    let o = lower_under_a_memory_limit(&wide.replace("ENV E", "#ENV E"));
    assert!(o.status.success(), "{}", text(&o));
}
