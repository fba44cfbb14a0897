//! What a person reads from the strata binary, pinned with insta snapshots
//! (`tests/snapshots/cli_snapshots__*.snap`): the help texts, an outline, the plain
//! progress of a small build, and the error output of the common failures. Each error
//! case also checks its exit code (1: the build failed, 2: bad usage or a bad
//! Dockerfile), that the message names the problem and where it is, and that no panic
//! or backtrace shows (every run has RUST_BACKTRACE=1).
//!
//! Timings, digests and temp paths are replaced by placeholders before comparing.
//! After an intended change of the output: `INSTA_UPDATE=always cargo test --test
//! cli_snapshots` (or `cargo insta review`), then read the diff of the .snap files.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::*;

/// Placeholders for what changes from run to run.
const FILTERS: &[(&str, &str)] = &[
    (r"sha256:[0-9a-f]{64}", "sha256:[DIGEST]"),
    // `#3 0.046 hello`: the time of a log line since the build started.
    (r"(?m)^(#\d+) \d+\.\d{3} ", "$1 [T] "),
    // `DONE 0.7s`, `Build complete in 1.0s`
    (r"\b\d+\.\d+s\b", "[T]s"),
];

macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({ filters => FILTERS.to_vec(), prepend_module_to_snapshot => true }, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

/// The strata binary without `--root` (help and usage errors need none), with a fixed
/// help width and no inherited STRATA_ROOT (clap shows an env value in the help).
fn strata_plain(args: &[&str]) -> Output {
    Command::new(strata_bin())
        .args(args)
        .env("COLUMNS", "100")
        .env("RUST_BACKTRACE", "1")
        .env_remove("STRATA_ROOT")
        .stdin(Stdio::null())
        .output()
        .expect("run strata")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A temp dir by its canonical path (strata prints canonical context paths).
fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = std::fs::canonicalize(d.path()).unwrap();
    (d, p)
}

/// A build context holding `files` (name, content).
fn context(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let (d, p) = tempdir();
    for (name, content) in files {
        std::fs::write(p.join(name), content).unwrap();
    }
    (d, p)
}

fn replace_all(s: &str, subs: &[(&str, &str)]) -> String {
    let mut s = s.to_string();
    for (from, to) in subs {
        if !from.is_empty() {
            s = s.replace(from, to);
        }
    }
    s
}

/// Checks every failure shares: the exit code, nothing on stdout, the message names
/// each of `names`, no panic or backtrace. Returns stderr.
fn check_failure(o: &Output, code: i32, names: &[&str]) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; output:\n{}", text(o));
    assert_eq!(stdout(o), "", "nothing on stdout for a failure");
    assert_no_panic(&text(o));
    for n in names {
        assert!(err.contains(n), "stderr does not name {n:?}:\n{err}");
    }
    err
}

#[test]
fn help_texts() {
    for (name, args) in [("help", &["--help"][..]), ("build_help", &["build", "--help"][..])] {
        let o = strata_plain(args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_eq!(stderr(&o), "");
        let shown = stdout(&o);
        assert!(shown.contains("Usage: strata"), "{shown}");
        snapshot!(name, shown);
    }
}

const MULTI_STAGE: &str = r#"# syntax=docker/dockerfile:1

# BASE is the image both stages start from
ARG BASE=busybox

# builder writes the version file
FROM ${BASE} AS builder
# VERSION is the release written into /version
ARG VERSION=1.0
ARG DEBUG
RUN echo "v$VERSION $DEBUG" > /version

# final is the shipped image
FROM ${BASE} AS final
# GREETING is printed by the default command
ARG GREETING=hello
COPY --from=builder /version /version
RUN --mount=type=secret,id=token,required cat /run/secrets/token >/dev/null
CMD ["cat", "/version"]
"#;

#[test]
fn outline_and_targets_of_a_multi_stage_dockerfile() {
    let (_root, root) = tempdir();
    let (_ctx, ctx) = context(&[("Dockerfile", MULTI_STAGE)]);
    let dir = ctx.to_str().unwrap();
    let mut shown = String::new();
    for args in [
        &["build", "--call=outline", dir][..],
        &["build", "--call=outline", "--target", "builder", "--build-arg", "VERSION=2", dir][..],
        &["build", "--call=targets", dir][..],
    ] {
        let o = strata_env(&root, args, &[]);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        assert_eq!(stderr(&o), "", "no warnings for this Dockerfile");
        shown.push_str(&format!("$ strata {}\n{}\n", args.join(" ").replace(dir, "."), stdout(&o)));
    }
    // Nothing was built or pulled.
    assert!(!root.join("blobs").exists() || std::fs::read_dir(root.join("blobs")).unwrap().count() <= 1);
    for want in [
        "TARGET:      final",
        "VERSION     1.0       is the release written into /version",
        "VERSION     2         is the release written into /version",
        "GREETING    hello     is printed by the default command",
        "token    true",
        "final (default) is the shipped image",
    ] {
        assert!(shown.contains(want), "{want:?} missing:\n{shown}");
    }
    // The builder outline does not list the final stage's ARG.
    let builder = shown.split("--target builder").nth(1).unwrap().split("$ strata").next().unwrap();
    assert!(!builder.contains("GREETING"), "{builder}");
    snapshot!("outline", shown);
}

#[test]
fn plain_progress_of_a_small_build_then_cached() {
    let Some(env) = test_env() else { return };
    let (_root, root) = tempdir();
    let (_ctx, ctx) = context(&[
        (
            "Dockerfile",
            "FROM busybox\nARG MSG=hello\nRUN echo \"$MSG from run\"\nCOPY greeting.txt /greeting.txt\nRUN cat /greeting.txt\n",
        ),
        ("greeting.txt", "greetings from the context\n"),
    ]);
    let bb = busybox_context(&env);
    let name = unique_name("cli-snap");
    let args = ["build", "--progress=plain", "--build-context", &bb, "-t", &name, ctx.to_str().unwrap()];
    let layout = env["RIG_BUSYBOX_LAYOUT"].as_str();
    let subs = [(layout, "[BUSYBOX]"), (name.as_str(), "[NAME]")];

    let cold = strata_env(&root, &args, &[]);
    assert_eq!(cold.status.code(), Some(0), "{}", text(&cold));
    assert_eq!(stdout(&cold), "");
    let cold_log = stderr(&cold);
    assert_no_panic(&cold_log);
    for want in ["] RUN echo \"$MSG from run\"", " hello from run", "] COPY greeting.txt /greeting.txt"] {
        assert!(cold_log.contains(want), "{want:?} missing:\n{cold_log}");
    }
    assert!(cold_log.contains(" greetings from the context"), "the RUN's output is shown:\n{cold_log}");
    assert!(!cold_log.contains("CACHED"), "a fresh root caches nothing:\n{cold_log}");
    let last = cold_log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("Build complete in ") && last.contains(": 3 steps run, 0 cached. Image sha256:"),
        "{last}"
    );

    let warm = strata_env(&root, &args, &[]);
    assert_eq!(warm.status.code(), Some(0), "{}", text(&warm));
    let warm_log = stderr(&warm);
    let n = warm_log.lines().count();
    assert!(warm_log.lines().take(n - 1).all(|l| l.starts_with('#')), "plain progress lines:\n{warm_log}");
    assert_eq!(warm_log.lines().filter(|l| l.ends_with(" CACHED")).count(), 3, "{warm_log}");
    assert!(!warm_log.contains("hello from run"), "a cached RUN prints no output:\n{warm_log}");
    let last = warm_log.lines().last().unwrap_or_default();
    assert!(last.starts_with("Build complete in ") && last.contains(": 0 steps run, 3 cached."), "{last}");

    let shown = format!(
        "$ strata build --progress=plain -t [NAME] .    # fresh root\n{}\n$ strata build --progress=plain -t [NAME] .    # again\n{}",
        replace_all(&cold_log, &subs),
        replace_all(&warm_log, &subs)
    );
    snapshot!("plain_progress", shown);
}

#[test]
fn error_dockerfile_syntax() {
    let (_root, root) = tempdir();
    let (_ctx, ctx) = context(&[("Dockerfile", "FROM busybox\nRUN echo ok\nCOPY onlyone\n")]);
    let file = format!("{}:3:1", ctx.join("Dockerfile").display());
    let o = strata_env(&root, &["build", "--progress=plain", ctx.to_str().unwrap()], &[]);
    // A Dockerfile error fails the build: 1, as buildx (2 is for a wrong command line).
    let err = check_failure(&o, 1, &[&file, "COPY requires at least two arguments", " 3 | COPY onlyone"]);
    let shown = replace_all(&err, &[(ctx.to_str().unwrap(), "[CTX]")]);
    snapshot!("error_syntax", shown);
}

#[test]
fn error_missing_copy_source() {
    let Some(env) = test_env() else { return };
    let (_root, root) = tempdir();
    let (_ctx, ctx) = context(&[("Dockerfile", "FROM busybox\nRUN echo ok\nCOPY nothere.txt /x\n")]);
    let bb = busybox_context(&env);
    let o = strata_env(&root, &["build", "--progress=plain", "--build-context", &bb, ctx.to_str().unwrap()], &[]);
    // The step names the instruction, then where it is in the Dockerfile.
    let df = ctx.join("Dockerfile").display().to_string();
    let err = check_failure(
        &o,
        1,
        &[
            "[3/3] COPY nothere.txt /x",
            "\"/nothere.txt\": not found",
            &format!("{df}:3\n"),
            "   3 | >>> COPY nothere.txt /x",
        ],
    );
    assert!(err.contains("\nERROR: failed to solve: [3/3] COPY nothere.txt /x"), "{err}");
    assert!(err.contains(&format!("not found in the build context {}", ctx.display())), "{err}");
    // A file that is there but excluded by .dockerignore: said so.
    let (_ctx2, ctx2) = context(&[
        ("Dockerfile", "FROM busybox\nCOPY secret.env /x\n"),
        ("secret.env", "A=1\n"),
        (".dockerignore", "*.env\n"),
    ]);
    let o = strata_env(&root, &["build", "--progress=plain", "--build-context", &bb, ctx2.to_str().unwrap()], &[]);
    let err2 = check_failure(&o, 1, &["\"/secret.env\": not found", "excluded by .dockerignore"]);
    let shown = format!(
        "{}\n$ strata build .    # COPY secret.env, excluded by .dockerignore\n{}",
        replace_all(&err, &[(&env["RIG_BUSYBOX_LAYOUT"], "[BUSYBOX]"), (ctx.to_str().unwrap(), "[CTX]")]),
        replace_all(&err2, &[(&env["RIG_BUSYBOX_LAYOUT"], "[BUSYBOX]"), (ctx2.to_str().unwrap(), "[CTX]")])
    );
    snapshot!("error_missing_copy_source", shown);
}

#[test]
fn error_failing_run() {
    let Some(env) = test_env() else { return };
    let (_root, root) = tempdir();
    let (_ctx, ctx) = context(&[("Dockerfile", "FROM busybox\nRUN echo about-to-fail && exit 3\nRUN echo never\n")]);
    let bb = busybox_context(&env);
    let o = strata_env(&root, &["build", "--progress=plain", "--build-context", &bb, ctx.to_str().unwrap()], &[]);
    let err = check_failure(
        &o,
        1,
        &["[2/3] RUN echo about-to-fail && exit 3", "exit code: 3", " > about-to-fail", "ERROR: failed to solve"],
    );
    assert!(!err.contains("echo never"), "the next step never started:\n{err}");
    let shown = replace_all(&err, &[(&env["RIG_BUSYBOX_LAYOUT"], "[BUSYBOX]"), (ctx.to_str().unwrap(), "[CTX]")]);
    snapshot!("error_failing_run", shown);
}

#[test]
fn error_unknown_stage() {
    let (_root, root) = tempdir();
    let (_ctx, ctx) = context(&[("Dockerfile", "FROM scratch AS base\nCOPY --from=5 /x /y\n")]);
    let dir = ctx.to_str().unwrap();
    let df = ctx.join("Dockerfile").display().to_string();
    let o = strata_env(&root, &["build", "--progress=plain", "--target", "nope", dir], &[]);
    let target = check_failure(&o, 1, &[&df, "target stage \"nope\" could not be found"]);
    let o = strata_env(&root, &["build", "--progress=plain", dir], &[]);
    let index = check_failure(&o, 1, &[&format!("{df}:2:1"), "invalid stage index 5", " 2 | COPY --from=5 /x /y"]);
    let shown = format!(
        "$ strata build --target nope .\n{target}\n$ strata build .    # COPY --from=5\n{index}",
        target = replace_all(&target, &[(dir, "[CTX]")]),
        index = replace_all(&index, &[(dir, "[CTX]")])
    );
    snapshot!("error_unknown_stage", shown);
}

#[test]
fn error_unreachable_registry() {
    let (_root, root) = tempdir();
    let (_ctx, ctx) = context(&[("Dockerfile", "FROM 127.0.0.1:1/x:y\nRUN true\n")]);
    let df = ctx.join("Dockerfile").display().to_string();
    let started = std::time::Instant::now();
    let o = strata_env(&root, &["build", "--progress=plain", ctx.to_str().unwrap()], &[]);
    let took = started.elapsed();
    let err = check_failure(&o, 1, &["127.0.0.1:1/x:y", "connection refused", &format!("{df}:1:1")]);
    // A refused connection is answered at once; this only catches a hang.
    assert!(took.as_secs() < 120, "gave up after {took:?}");
    // A registry whose name does not resolve (an offline runner and Docker Hub): one
    // short reason, then how else to give the base image.
    let (_ctx2, ctx2) = context(&[("Dockerfile", "FROM registry.invalid/team/base:1\nRUN true\n")]);
    let o = strata_env(&root, &["build", "--progress=plain", ctx2.to_str().unwrap()], &[]);
    let err2 = check_failure(
        &o,
        1,
        &[
            "its name cannot be resolved",
            "--build-context registry.invalid/team/base:1=oci-layout://",
            "[registry.mirrors]",
        ],
    );
    assert!(!err2.contains("error sending request"), "{err2}");
    // The resolver's own words vary between machines.
    let cause = err2.split("resolved (").nth(1).and_then(|r| r.split(')').next()).unwrap_or("").to_string();
    let err2 = err2.replace(&cause, "[CAUSE]");
    let shown = format!(
        "{}\n$ strata build .    # FROM registry.invalid/team/base:1\n{}",
        replace_all(&err, &[(ctx.to_str().unwrap(), "[CTX]")]),
        replace_all(&err2, &[(ctx2.to_str().unwrap(), "[CTX]")])
    );
    snapshot!("error_unreachable_registry", shown);
}

#[test]
fn error_bad_credentials() {
    let Some(env) = test_env() else { return };
    let (_root, root) = tempdir();
    let tls = env["RIG_TLS_REGISTRY"].as_str();
    let (_ctx, ctx) = context(&[("Dockerfile", &format!("FROM {tls}/library/busybox:latest\nRUN true\n"))]);
    let cfg_dir = docker_config_with(&[(tls, &env["RIG_USER"], "wrong-password")]);
    let cfg = cfg_dir.path();
    let o = strata_env(
        &root,
        &["--tls-ca", &env["RIG_CA"], "build", "--progress=plain", ctx.to_str().unwrap()],
        &[("DOCKER_CONFIG", cfg.to_str().unwrap())],
    );
    let reference = format!("{tls}/library/busybox:latest");
    let err = check_failure(&o, 1, &[&reference, "authentication failed", "401", &format!("login {tls}")]);
    assert!(!err.contains("wrong-password"), "the password is never printed:\n{err}");
    let shown = replace_all(&err, &[(ctx.to_str().unwrap(), "[CTX]"), (tls, "[TLS_REGISTRY]")]);
    snapshot!("error_bad_credentials", shown);
}

#[test]
fn error_unknown_flag_and_command() {
    let o = strata_plain(&["build", "--frobnicate", "."]);
    let flag = check_failure(&o, 2, &["unexpected argument '--frobnicate'", "Usage: strata build [OPTIONS]"]);
    let o = strata_plain(&["frobnicate"]);
    let command = check_failure(&o, 2, &["unrecognized subcommand 'frobnicate'", "Usage: strata [OPTIONS]"]);
    let o = strata_plain(&["build", "--tag"]);
    let value = check_failure(&o, 2, &["a value is required for '--tag <NAME>'"]);
    let shown =
        format!("$ strata build --frobnicate .\n{flag}\n$ strata frobnicate\n{command}\n$ strata build --tag\n{value}");
    snapshot!("error_unknown_flag", shown);
}
