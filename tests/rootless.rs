//! Rootless strata (issue #14), run by the unprivileged users `tests/setup` creates:
//! `strata-rootless` (subordinate id ranges) and `strata-nosubid` (its own ids only).
//! As the first, the shared conformance cases and a base image with many owners build
//! to the same manifest digests as strata run as root; a push to the TLS+basic
//! registry uses that user's `~/.docker/config.json`; what strata leaves outside its
//! store belongs to the user. The second builds a single-owner image and gets a clear
//! error for a multi-owner one.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const EPOCH: &str = "1700000000";

/// The tests of this file one at a time: one of them turns user namespaces off.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn uid_of(user: &str) -> u32 {
    let o = Command::new("id").args(["-u", user]).output().unwrap();
    assert!(o.status.success(), "no user {user}: run tests/setup");
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

fn home_of(user: &str) -> PathBuf {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == user).then(|| PathBuf::from(f[5]))
        })
        .unwrap_or_else(|| panic!("no home for {user}"))
}

/// A directory the user owns (for its store, its contexts, its outputs).
fn user_dir(user: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix("strata-rootless-").tempdir_in("/var/tmp").unwrap();
    chown_r(d.path(), user);
    d
}

fn chown_r(p: &Path, user: &str) {
    let st = Command::new("chown").args(["-R", user]).arg(p).status().unwrap();
    assert!(st.success());
}

/// strata as `user`, in `cwd`, with its store at `root`.
fn as_user(user: &str, root: &Path, cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let home = home_of(user);
    let mut c = Command::new("runuser");
    c.args(["-u", user, "--", "env", "-i"]);
    c.arg(format!("HOME={}", home.display()));
    c.arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    // As every test but tests/attestations.rs (see common::strata_bin).
    c.arg("BUILDX_NO_DEFAULT_ATTESTATIONS=1");
    for (k, v) in envs {
        c.arg(format!("{k}={v}"));
    }
    c.arg(strata_bin()).arg("--root").arg(root).args(args).current_dir(cwd);
    c.output().expect("runuser")
}

/// strata as root, in `cwd`.
fn as_root(root: &Path, cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(strata_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .current_dir(cwd)
        .env_remove("SOURCE_DATE_EPOCH")
        .envs(envs.iter().copied())
        .output()
        .expect("strata")
}

fn digest_in(metadata: &Path) -> String {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(metadata).unwrap()).unwrap();
    v["containerimage.digest"].as_str().unwrap().to_string()
}

/// Every path under `dir` (itself included) whose owner is not `uid`.
fn not_owned_by(dir: &Path, uid: u32) -> Vec<String> {
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.uid() != uid {
            bad.push(format!("{} ({}:{})", p.display(), m.uid(), m.gid()));
        }
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    bad
}

fn registry_digest(registry: &str, repo: &str, tag: &str) -> String {
    let o = Command::new("curl")
        .args(["-sfI", "-H", "Accept: application/vnd.oci.image.index.v1+json"])
        .arg(format!("http://{registry}/v2/{repo}/manifests/{tag}"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&o.stdout).to_string();
    head.lines()
        .find_map(|l| l.to_ascii_lowercase().starts_with("docker-content-digest:").then(|| l[22..].trim().to_string()))
        .unwrap_or_else(|| panic!("no digest for {repo}:{tag}: {head}"))
}

/// Build `case` (a directory) as root and as the user, with SOURCE_DATE_EPOCH; the two
/// manifest digests, or the two failures.
struct Pair {
    user: String,
    root_store: tempfile::TempDir,
    user_store: tempfile::TempDir,
    /// Where the outputs go (not in the context, which they would change).
    outputs: tempfile::TempDir,
}

impl Pair {
    fn new(user: &str) -> Pair {
        Pair {
            user: user.to_string(),
            root_store: tempfile::tempdir().unwrap(),
            user_store: user_dir(user),
            outputs: user_dir(user),
        }
    }

    /// The OCI tar a build of `case` by `who` wrote.
    fn output(&self, case: &Path, who: &str) -> PathBuf {
        self.outputs.path().join(format!("{}-{who}.tar", case.file_name().unwrap().to_string_lossy()))
    }

    fn build(&self, case: &Path, extra: &[&str]) -> (Result<String, String>, Result<String, String>) {
        let mut args = vec!["build".to_string(), "--progress=plain".to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let run = |who: &str| -> Result<String, String> {
            let meta = self.outputs.path().join(format!("{}-{who}.json", case.file_name().unwrap().to_string_lossy()));
            let out = self.output(case, who);
            let mut a = args.clone();
            a.extend([
                "--metadata-file".to_string(),
                meta.display().to_string(),
                "-o".to_string(),
                format!("type=oci,dest={}", out.display()),
                case.display().to_string(),
            ]);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            let o = if who == "root" {
                as_root(self.root_store.path(), case, &a, &[("SOURCE_DATE_EPOCH", EPOCH)])
            } else {
                as_user(&self.user, self.user_store.path(), case, &a, &[("SOURCE_DATE_EPOCH", EPOCH)])
            };
            assert_no_panic(&text(&o));
            if o.status.success() {
                Ok(digest_in(&meta))
            } else {
                Err(text(&o))
            }
        };
        (run("root"), run(&self.user.clone()))
    }
}

#[test]
fn conformance_cases_build_as_a_user_to_root_s_digests() {
    let _serial = serial();
    let Some(env) = test_env() else { return };
    let Some(shared) = strata_testsupport::skip::shared_dir("the rootless conformance comparison") else { return };
    let user = env["RIG_ROOTLESS_USER"].clone();
    let pair = Pair::new(&user);
    let busybox = registry_digest(&env["RIG_REGISTRY"], "library/busybox", "latest");
    let work = user_dir(&user);
    let mut compared = Vec::new();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(shared.join("conformance/cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let dir = work.path().join(&name);
        let st = Command::new("cp").arg("-a").arg(&case).arg(&dir).status().unwrap();
        assert!(st.success());
        let df = std::fs::read_to_string(dir.join("Dockerfile")).unwrap().replace("{{BUSYBOX_DIGEST}}", &busybox);
        std::fs::write(dir.join("Dockerfile"), df).unwrap();
        let st = Command::new("chmod").args(["-R", "u+w"]).arg(&dir).status().unwrap();
        assert!(st.success());
        chown_r(&dir, &user);
        let args = std::fs::read_to_string(dir.join("args")).unwrap_or_default();
        let extra: Vec<&str> = args.split_whitespace().collect();
        let must_fail = std::fs::read_to_string(dir.join("expect")).is_ok_and(|e| e.trim() == "fail");
        match pair.build(&dir, &extra) {
            (Ok(a), Ok(b)) => {
                assert!(!must_fail, "{name}: built although it must fail");
                assert_eq!(a, b, "{name}: the rootless build's manifest differs from root's");
            }
            (Err(_), Err(e)) => assert!(must_fail, "{name}: failed as root and as {user}:\n{e}"),
            (a, b) => panic!("{name}: root {a:?}\n{user} {b:?}"),
        }
        compared.push(name);
    }
    eprintln!("rootless: {} cases compared: {compared:?}", compared.len());
    assert!(compared.len() >= 20, "only {} conformance cases", compared.len());
}

/// Push an image whose files have several owners (0, 33, 1000, 65534) as root.
fn push_many_owners(env: &HashMap<String, String>) -> String {
    let reference = format!("{}/{}:1", env["RIG_REGISTRY"], unique_repo("owners"));
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN mkdir /owners && cd /owners && touch a b c && chown 33:33 a && chown 1000:1000 b && \\\n    \
         chown 65534:65534 c && mkdir d && chown 1000:100 d && ln -s a l && chown -h 33:33 l\n",
    )
    .unwrap();
    let out = build_with_env(root.path(), ctx.path(), &["--push", "-t", &reference], &[("SOURCE_DATE_EPOCH", EPOCH)]);
    assert!(out.status.success(), "{}", text(&out));
    reference
}

#[test]
fn a_base_with_many_owners_and_a_user_without_subordinate_ids() {
    let _serial = serial();
    let Some(env) = test_env() else { return };
    let user = env["RIG_ROOTLESS_USER"].clone();
    let base = push_many_owners(&env);
    let pair = Pair::new(&user);
    let ctx = user_dir(&user);
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {base}\nRUN ls -ln /owners > /listing && echo changed >> /owners/b && rm /owners/c\n\
             COPY --chown=1000:1000 a /owners/copied\n"
        ),
    )
    .unwrap();
    std::fs::write(ctx.path().join("a"), "a\n").unwrap();
    chown_r(ctx.path(), &user);
    let (root, rootless) = pair.build(ctx.path(), &[]);
    assert_eq!(root.clone().unwrap(), rootless.unwrap(), "many owners: rootless differs from root");
    // The owners in the image are the image's, not the host's subordinate ids.
    let read = tempfile::tempdir().unwrap();
    let rootfs = umoci_unpack(&pair.output(ctx.path(), &user), read.path(), "latest");
    let listing = std::fs::read_to_string(rootfs.join("listing")).unwrap();
    for owner in ["33       33", "1000     1000", "65534    65534", "1000     100"] {
        assert!(listing.contains(owner), "{owner:?} missing from:\n{listing}");
    }

    // Without subordinate ids: a single-owner image builds ...
    let nosubid = env["RIG_NOSUBID_USER"].clone();
    let store = user_dir(&nosubid);
    let single = user_dir(&nosubid);
    std::fs::write(
        single.path().join("Dockerfile"),
        format!("FROM {}/library/busybox:latest\nRUN echo alone > /alone\nCOPY a /a\n", env["RIG_REGISTRY"]),
    )
    .unwrap();
    std::fs::write(single.path().join("a"), "a\n").unwrap();
    chown_r(single.path(), &nosubid);
    let dest = format!("type=oci,dest={}/out.tar", single.path().display());
    let dir = single.path().to_str().unwrap();
    let o = as_user(&nosubid, store.path(), single.path(), &["build", "--progress=plain", "-o", &dest, dir], &[]);
    assert!(o.status.success(), "a single-owner build without subordinate ids: {}", text(&o));
    // ... and a multi-owner one fails, naming the file and the fix.
    let o =
        as_user(&nosubid, store.path(), ctx.path(), &["build", "--progress=plain", ctx.path().to_str().unwrap()], &[]);
    let log = text(&o);
    assert_no_panic(&log);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("an id this user namespace does not map"), "{log}");
    assert!(log.contains("owners/"), "the file is not named: {log}");
    assert!(log.contains("--add-subuids"), "the fix is not named: {log}");
}

#[test]
fn a_user_pushes_with_its_own_credentials_and_owns_every_output() {
    let _serial = serial();
    let Some(env) = test_env() else { return };
    let user = env["RIG_ROOTLESS_USER"].clone();
    let uid = uid_of(&user);
    // The user's own Docker credentials for the TLS+basic registry.
    let docker = home_of(&user).join(".docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = base64_std(format!("{}:{}", env["RIG_USER"], env["RIG_PASS"]).as_bytes());
    std::fs::write(
        docker.join("config.json"),
        serde_json::json!({"auths": {env["RIG_TLS_REGISTRY"].clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    chown_r(&docker, &user);
    let store = user_dir(&user);
    let ctx = user_dir(&user);
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}/library/busybox:latest\nRUN grep '^Seccomp:' /proc/self/status > /seccomp && mkdir -p /home/app && \\\n    \
             echo x > /home/app/x && chown -R 1000:1000 /home/app && chmod 0700 /home/app\n",
            env["RIG_REGISTRY"]
        ),
    )
    .unwrap();
    chown_r(ctx.path(), &user);
    let image = format!("{}/{}:rootless", env["RIG_TLS_REGISTRY"], unique_repo("rootless-push"));
    let dir = ctx.path().to_str().unwrap();
    let o = as_user(
        &user,
        store.path(),
        ctx.path(),
        &["--tls-ca", &env["RIG_CA"], "build", "--progress=plain", "--push", "-t", &image, dir],
        &[],
    );
    assert!(o.status.success(), "rootless push: {}", text(&o));
    let certs = tempfile::tempdir().unwrap();
    let mut skopeo = Command::new("skopeo");
    skopeo.args(["inspect", "--raw"]).args(skopeo_flags(&env, &env["RIG_TLS_REGISTRY"], certs.path()));
    let raw = skopeo.arg(format!("docker://{image}")).output().unwrap();
    assert!(raw.status.success(), "skopeo cannot read the pushed image: {}", text(&raw));

    // Outputs: a directory, an OCI tar, a docker tar, a metadata file — all the user's.
    let local = ctx.path().join("local");
    let oci = format!("type=oci,dest={}/img.tar", dir);
    let docker_out = format!("type=docker,dest={}/docker.tar", dir);
    let local_out = format!("type=local,dest={}", local.display());
    let meta = format!("{dir}/meta.json");
    let out_dir = ctx.path().join("outputs");
    std::fs::create_dir(&out_dir).unwrap();
    chown_r(&out_dir, &user);
    for spec in [&oci, &docker_out, &local_out] {
        let o = as_user(
            &user,
            store.path(),
            ctx.path(),
            &[
                "build",
                "--progress=plain",
                "-o",
                spec,
                "--metadata-file",
                &meta,
                "--iidfile",
                &format!("{dir}/iid"),
                dir,
            ],
            &[],
        );
        assert!(o.status.success(), "{spec}: {}", text(&o));
    }
    assert_eq!(
        std::fs::read_to_string(local.join("seccomp")).unwrap(),
        "Seccomp:\t2\n",
        "a rootless RUN without seccomp"
    );
    let bad = not_owned_by(ctx.path(), uid);
    assert!(bad.is_empty(), "outputs not owned by {user} ({uid}): {bad:#?}");
    // The store is the user's too, and holds the image's owners under subordinate ids.
    let store_root = std::fs::metadata(store.path()).unwrap();
    assert_eq!(store_root.uid(), uid);
}

/// Runs a program with unshare(2) refused by a seccomp filter (EPERM), as a container
/// runtime's default profile does for unprivileged processes.
const NO_UNSHARE: &str = r#"
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
nr = {"x86_64": 272, "aarch64": 97}[os.uname().machine]
ins = lambda code, k, jt=0, jf=0: struct.pack("HBBI", code, jt, jf, k)
prog = ins(0x20, 0) + ins(0x15, nr, 0, 1) + ins(0x06, 0x00050000 | 1) + ins(0x06, 0x7fff0000)
buf = ctypes.create_string_buffer(prog)
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fp = Fprog(4, ctypes.cast(buf, ctypes.c_void_p))
assert libc.prctl(38, 1, 0, 0, 0) == 0
assert libc.prctl(22, 2, ctypes.byref(fp), 0, 0) == 0
os.execv(sys.argv[1], sys.argv[1:])
"#;

#[test]
fn where_user_namespaces_are_refused_it_says_what_to_allow_and_runs_nothing() {
    let _serial = serial();
    let Some(env) = test_env() else { return };
    let user = env["RIG_ROOTLESS_USER"].clone();
    let store = user_dir(&user);
    let ctx = user_dir(&user);
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /\n").unwrap();
    chown_r(ctx.path(), &user);
    let o = Command::new("runuser")
        .args(["-u", &user, "--", "python3", "-c", NO_UNSHARE])
        .arg(strata_bin())
        .arg("--root")
        .arg(store.path())
        .args(["build", "--progress=plain", ctx.path().to_str().unwrap()])
        .current_dir(ctx.path())
        .output()
        .unwrap();
    let log = text(&o);
    assert_no_panic(&log);
    assert_eq!(o.status.code(), Some(1), "{log}");
    for needle in ["user namespace", "unprivileged user namespaces", "hostUsers: false", "never run without a sandbox"]
    {
        assert!(log.contains(needle), "{needle:?} missing: {log}");
    }
    assert!(!log.contains("#1"), "something ran: {log}");
}
