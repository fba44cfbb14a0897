//! The configuration file (`strata.toml`): registry mirrors, the runtime path and the
//! storage limit take effect through the binary; a bad file fails with exit 2 naming
//! the file, line and column.

mod common;

use std::process::Command;

use common::*;

fn strata_with_config_home(
    config_home: &std::path::Path,
    root: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    Command::new(strata_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .env("XDG_CONFIG_HOME", config_home)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

#[test]
fn mirrors_from_the_user_config_let_docker_hub_names_resolve_offline() {
    let Some(env) = test_env() else { return };
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("strata")).unwrap();
    // A dead mirror first: strata moves on to the next one.
    std::fs::write(
        home.path().join("strata/strata.toml"),
        format!(
            "[registry.mirrors]\n\"docker.io\" = [\"127.0.0.1:1\", \"{}\"]\n[storage]\nkeep = \"1MB\"\n",
            env["RIG_REGISTRY"]
        ),
    )
    .unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nRUN echo mirrored > /m\n").unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = ctx.path().to_str().unwrap();
    let o = strata_with_config_home(home.path(), root.path(), &["build", "--progress=plain", "-t", "m:1", dir]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains(&format!("pulled from mirror {}", env["RIG_REGISTRY"])), "{t}");
    assert!(t.contains("mirror 127.0.0.1:1 failed"), "{t}");
    // storage.keep ran after the build: the unnamed base-image data went, and what is
    // left besides the named image's blobs fits in 1 MB.
    assert!(t.contains("storage.keep=1MB: pruned"), "{t}");
    let snapshots = walk_sizes(&root.path().join("snapshots"));
    assert!(snapshots <= 1_000_000, "snapshots still hold {snapshots} bytes after storage.keep = 1MB");
}

/// Bytes of the regular files below `d`.
fn walk_sizes(d: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![d.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&p) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                total += m.len();
            }
        }
    }
    total
}

#[test]
fn jobs_from_the_config_is_how_many_steps_run_at_once() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "jobs = 1\n").unwrap();
    let ctx = tempfile::tempdir().unwrap();
    // Two independent stages whose RUNs would overlap with two jobs.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox AS a\nRUN sleep 1 && echo a > /a\nFROM busybox AS b\nRUN sleep 1 && echo b > /b\n\
         FROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let bb = busybox_context(&test_env().expect("the test environment"));
    let dir = ctx.path().to_str().unwrap();
    let o = strata(
        root.path(),
        &["--config", cfg.path().to_str().unwrap(), "build", "--progress=plain", "--build-context", &bb, dir],
    );
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    // The plain progress: each RUN's start line, and its DONE line (same #N).
    let lines: Vec<&str> = log.lines().collect();
    let start = |stage: &str| {
        lines.iter().position(|l| l.contains(&format!("[{stage} 2/2] RUN sleep 1"))).unwrap_or_else(|| panic!("{log}"))
    };
    let (a, b) = (start("a"), start("b"));
    let (first, second) = (a.min(b), a.max(b));
    let number = lines[first].split_whitespace().next().unwrap().to_string();
    let done = lines.iter().position(|l| l.starts_with(&format!("{number} DONE"))).unwrap_or_else(|| panic!("{log}"));
    assert!(done < second, "with jobs = 1 the second RUN started before the first was done:\n{log}");
}

#[test]
fn runtime_and_jobs_come_from_the_config_and_flags_win() {
    let Some(env) = test_env() else { return };
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "jobs = 1\nruntime = \"/nonexistent/strata-test-runc\"\n").unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nRUN true\n").unwrap();
    let root = tempfile::tempdir().unwrap();
    let bb = busybox_context(&env);
    let (cfg_path, dir) = (cfg.path().to_str().unwrap(), ctx.path().to_str().unwrap());
    let o = strata(root.path(), &["--config", cfg_path, "build", "--build-context", &bb, dir]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("/nonexistent/strata-test-runc"), "{}", text(&o));
    let runc = Command::new("sh").args(["-c", "command -v runc"]).output().unwrap();
    let runc = String::from_utf8_lossy(&runc.stdout).trim().to_string();
    let o = strata(root.path(), &["--config", cfg_path, "--runtime", &runc, "build", "--build-context", &bb, dir]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_bad_config_file_names_file_line_and_column() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "jobs = 2\n[registry]\nmirors = 1\n").unwrap();
    let root = tempfile::tempdir().unwrap();
    let o = strata(root.path(), &["--config", cfg.path().to_str().unwrap(), "images"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains(&format!("{}:3:1", cfg.path().display())) && t.contains("unknown field `mirors`"), "{t}");
    let o = strata(root.path(), &["--config", "/nonexistent/strata.toml", "images"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("/nonexistent/strata.toml"), "{}", text(&o));
}
