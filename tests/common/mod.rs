//! Shared helpers of the strata binary's integration tests: the test environment
//! (registries and seed images made by `tests/setup`), running the binary, reading
//! OCI layouts it writes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The variables `tests/setup` wrote, or None (with a loud message) when it has not run.
pub fn test_env() -> Option<HashMap<String, String>> {
    let path = std::env::var("STRATA_TEST_ENV").unwrap_or_else(|_| "/var/tmp/strata-test/env".into());
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("\n*** SKIPPED: {path} is missing: run tests/setup first (the README's test command does) ***\n");
        return None;
    };
    let mut m = HashMap::new();
    for line in text.lines() {
        let line = line.trim().trim_start_matches("export ").trim();
        let line = line.split("  #").next().unwrap_or(line).trim();
        if let Some((k, v)) = line.split_once('=') {
            let v = v.split_whitespace().next().unwrap_or("");
            m.insert(k.to_string(), v.to_string());
        }
    }
    Some(m)
}

pub fn strata_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strata"))
}

/// Run strata with a root; returns the output.
pub fn strata(root: &Path, args: &[&str]) -> Output {
    Command::new(strata_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("run strata")
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Unpack an OCI layout tar with umoci (an independent reader) and return the rootfs.
pub fn umoci_unpack(layout_tar: &Path, work: &Path, tag: &str) -> PathBuf {
    let layout = work.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let st = Command::new("tar").arg("-xf").arg(layout_tar).arg("-C").arg(&layout).status().unwrap();
    assert!(st.success());
    let bundle = work.join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "umoci unpack failed: {}", text(&out));
    bundle.join("rootfs")
}

pub fn busybox_context(env: &HashMap<String, String>) -> String {
    format!("busybox=oci-layout://{}:latest", env["RIG_BUSYBOX_LAYOUT"])
}

pub fn corpus() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("\n*** SKIPPED: ../shared/corpus absent ({}): corpus tests NOT run ***\n", p.display());
        None
    }
}

/// Run strata with a root and extra environment variables, with `RUST_BACKTRACE=1`
/// (so that a panic would show its backtrace) and standard input closed.
pub fn strata_env(root: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(strata_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("RUST_BACKTRACE", "1")
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run strata")
}

/// An error output must be a message, not a crash.
pub fn assert_no_panic(log: &str) {
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!log.contains(bad), "{bad:?} in the output:\n{log}");
    }
}

/// A name no other test run uses (registry repositories, image names).
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}
