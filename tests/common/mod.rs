//! Shared helpers of the strata binary's integration tests: the test environment
//! (registries and seed images made by `tests/setup`), running the binary, reading
//! OCI layouts it writes.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The variables `tests/setup` wrote, or None (with a loud message) when it has not run.
pub fn test_env() -> Option<HashMap<String, String>> {
    no_default_attestations();
    let path = std::env::var("STRATA_TEST_ENV").unwrap_or_else(|_| "/var/tmp/strata-test/env".into());
    let Ok(text) = std::fs::read_to_string(&path) else {
        strata_testsupport::skip::skipped(&format!(
            "the test environment {path} is missing (run tests/setup; the README's test command does): this test NOT run"
        ));
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

/// The binary under test. Every strata it starts runs with buildx's
/// `BUILDX_NO_DEFAULT_ATTESTATIONS=1`: these tests read pushed images and OCI layouts as
/// plain manifests (umoci, for one, cannot pick from an index that also holds an
/// attestation manifest); tests/attestations.rs removes it and tests the defaults.
pub fn strata_bin() -> PathBuf {
    no_default_attestations();
    PathBuf::from(env!("CARGO_BIN_EXE_strata"))
}

/// Set `BUILDX_NO_DEFAULT_ATTESTATIONS=1` for the processes this test process starts
/// (once, before the first of them).
fn no_default_attestations() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var("BUILDX_NO_DEFAULT_ATTESTATIONS", "1"));
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

/// `strata --root ROOT build --progress=plain --build-context busybox=<the seed layout>
/// EXTRA... CONTEXT`: the build most tests make, `FROM busybox` without a registry.
pub fn build_with(root: &Path, context: &Path, extra: &[&str]) -> Output {
    build_with_env(root, context, extra, &[])
}

/// [`build_with`] with extra environment variables.
pub fn build_with_env(root: &Path, context: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Output {
    let env = test_env().expect("the test environment (tests/setup) is required");
    let bb = busybox_context(&env);
    let mut args = vec!["build", "--progress=plain", "--build-context", &bb];
    args.extend_from_slice(extra);
    let dir = context.to_string_lossy().into_owned();
    args.push(&dir);
    strata_env(root, &args, envs)
}

pub fn corpus() -> Option<PathBuf> {
    strata_testsupport::skip::shared_corpus("the corpus tests")
}

#[allow(unused_imports)]
pub use strata_testsupport::skip::skipped;

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

// ---- Registry read-back and push tests (export_readback, push_faults, push_memory)

/// A DOCKER_CONFIG directory whose config.json holds basic credentials for each
/// `(registry, user, password)`.
pub fn docker_config_with(auths: &[(&str, &str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let entries: serde_json::Map<String, serde_json::Value> = auths
        .iter()
        .map(|(reg, user, pass)| {
            (reg.to_string(), serde_json::json!({ "auth": base64_std(format!("{user}:{pass}").as_bytes()) }))
        })
        .collect();
    let cfg = serde_json::json!({ "auths": entries });
    std::fs::write(d.path().join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    d
}

/// Standard base64 with padding.
pub fn base64_std(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// `sha256:HEX` of a file, computed by coreutils `sha256sum` (independent of strata's code).
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    assert!(out.status.success(), "sha256sum {}: {}", path.display(), text(&out));
    format!("sha256:{}", String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap())
}

/// `sha256:HEX` of bytes, computed by coreutils `sha256sum`.
pub fn sha256_bytes(b: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(b).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    format!("sha256:{}", String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap())
}

/// A repository name no earlier run used (`strata-test/LABEL-PID-NANOS-N`).
pub fn unique_repo(label: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("strata-test/{label}-{}-{nanos:x}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// skopeo flags to read from `registry` of the test environment: the CA (as a cert dir
/// under `cert_dir`) and credentials for the TLS registry, credentials for the token
/// registry, plain HTTP for the others.
pub fn skopeo_flags(env: &HashMap<String, String>, registry: &str, cert_dir: &Path) -> Vec<String> {
    let creds = format!("{}:{}", env["RIG_USER"], env["RIG_PASS"]);
    if registry == env["RIG_TLS_REGISTRY"] {
        std::fs::create_dir_all(cert_dir).unwrap();
        std::fs::copy(&env["RIG_CA"], cert_dir.join("ca.crt")).unwrap();
        vec!["--cert-dir".into(), cert_dir.display().to_string(), "--creds".into(), creds]
    } else if registry == env["RIG_TOKEN_REGISTRY"] {
        vec!["--tls-verify=false".into(), "--creds".into(), creds]
    } else {
        vec!["--tls-verify=false".into()]
    }
}

/// A file of `size` pseudo-random (incompressible) bytes from `seed` (xorshift64), streamed.
pub fn write_noise(path: &Path, size: u64, seed: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut state = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// The repositories directory of the registry `name` (`plain-5000`, `tls-5001`, ...) when
/// `tests/setup` started it and it still runs (its recorded pid runs with its generated
/// config), or None (a reused registry: its storage is not ours to inspect).
pub fn registry_storage(env: &HashMap<String, String>, name: &str) -> Option<PathBuf> {
    let rig = Path::new(&env["RIG_DIR"]);
    let conf_path = rig.join("conf").join(format!("{name}.yml"));
    let pid = std::fs::read_to_string(rig.join("pids").join(format!("{name}.pid"))).ok()?;
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).ok()?;
    if !String::from_utf8_lossy(&cmdline).contains(conf_path.to_str()?) {
        return None;
    }
    let conf = std::fs::read_to_string(&conf_path).ok()?;
    let dir = conf.lines().find_map(|l| l.trim().strip_prefix("rootdirectory:"))?.trim();
    let p = PathBuf::from(dir).join("docker/registry/v2/repositories");
    p.is_dir().then_some(p)
}

/// Every entry below `root` as one line: type+mode, uid, gid, size, mtime (s, ns; when
/// `with_times`), content digest or link target, `user.` xattrs, and for hard-linked
/// files the first path of their inode.
pub fn describe(root: &Path, with_times: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if m.is_file() {
                let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
                let xattr = xattr_of(&p);
                format!("{} links:{}={} {}", sha256_file(&p), m.nlink(), first, xattr)
            } else {
                // A FIFO, socket or device: its type (in the mode) and device number.
                format!("special rdev:{}", m.rdev())
            };
            let mtime = if m.file_type().is_symlink() || !with_times {
                String::new()
            } else {
                format!("{}.{}", m.mtime(), m.mtime_nsec())
            };
            let size = if m.is_dir() { 0 } else { m.len() };
            out.insert(rel, format!("{:o} {}:{} {size} {mtime} {what}", m.mode(), m.uid(), m.gid()));
        }
    }
    out
}

/// The `user.` extended attributes of a file, `name=value,...`.
pub fn xattr_of(p: &Path) -> String {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(p, &mut names) else { return String::new() };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| n.starts_with(b"user.")) {
        let name = String::from_utf8_lossy(name).into_owned();
        let mut value = vec![0u8; 4096];
        let len = rustix::fs::lgetxattr(p, name.as_str(), &mut value).unwrap_or(0);
        out.push(format!("{name}={}", String::from_utf8_lossy(&value[..len])));
    }
    out.join(",")
}

/// `python3 -m http.server` serving `dir` on a free loopback port; killed on drop.
pub struct HttpServer(std::process::Child, pub u16);

impl HttpServer {
    pub fn start(dir: &std::path::Path) -> HttpServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "http.server did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        HttpServer(child, port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
