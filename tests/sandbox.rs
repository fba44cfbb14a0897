//! The RUN sandbox through the binary: no view of the host's files, Docker's default
//! capabilities only (no mounts, no kernel modules), `--network=none`, and secrets that
//! never reach a layer, the image config or the cache index.

mod common;

use std::process::Command;

use common::*;

fn build(root: &std::path::Path, dockerfile: &str, extra: &[&str]) -> (std::process::Output, tempfile::TempDir) {
    let Some(env) = test_env() else { panic!("test env missing") };
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let bb = busybox_context(&env);
    let out = ctx.path().join("out.tar");
    let dest = format!("type=oci,dest={}", out.display());
    let mut args = vec!["build", "--progress=plain", "--build-context", &bb, "-t", "sandbox-test", "-o", &dest];
    args.extend_from_slice(extra);
    let dir = ctx.path().to_str().unwrap().to_string();
    args.push(&dir);
    (strata(root, &args), ctx)
}

#[test]
fn run_cannot_see_host_files() {
    if test_env().is_none() {
        return;
    }
    let marker = format!("/root/strata-host-marker-{}", std::process::id());
    std::fs::write(&marker, "host").unwrap();
    let root = tempfile::tempdir().unwrap();
    let (o, _ctx) =
        build(root.path(), &format!("FROM busybox\nRUN test ! -e {marker} && echo isolated > /isolated\n"), &[]);
    let _ = std::fs::remove_file(&marker);
    assert!(o.status.success(), "the host file was visible or the build failed: {}", text(&o));
}

#[test]
fn run_has_no_mount_or_module_capabilities() {
    if test_env().is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    // CapEff must lack CAP_SYS_ADMIN (21) and CAP_SYS_MODULE (16); mount(2) must fail.
    let df = "FROM busybox\nRUN mkdir -p /m && ! mount -t tmpfs none /m && \\\n    caps=$(grep CapEff /proc/self/status | cut -f2) && echo $caps > /caps && \\\n    [ $(( 0x$caps >> 21 & 1 )) -eq 0 ] && [ $(( 0x$caps >> 16 & 1 )) -eq 0 ]\n";
    let (o, _ctx) = build(root.path(), df, &[]);
    assert!(o.status.success(), "privileged operation allowed: {}", text(&o));
}

/// BuildKit's RUN runs under Docker's default seccomp profile (issue #14): `Seccomp: 2`,
/// `unshare -U` refused with EPERM (the step sees an error, the build goes on), chroot
/// allowed (CAP_SYS_CHROOT is a default capability); `--security=insecure` lifts it.
#[test]
fn run_is_confined_by_the_default_seccomp_profile_unless_insecure() {
    if test_env().is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let probe = "grep '^Seccomp:' /proc/self/status | tr -d '\\t' > /seccomp && \\\n    \
        (unshare -U true 2> /unshare.err; echo $? > /unshare) && \\\n    \
        (unshare -m true 2>> /unshare.err; echo $? >> /unshare) && chroot / true && cat /seccomp /unshare /unshare.err";
    let df = format!("FROM busybox\nRUN {probe}\n");
    let (o, ctx) = build(root.path(), &df, &[]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    let rootfs = umoci_unpack(&ctx.path().join("out.tar"), &ctx.path().join("read"), "latest");
    assert_eq!(std::fs::read_to_string(rootfs.join("seccomp")).unwrap(), "Seccomp:2\n", "{log}");
    assert_eq!(std::fs::read_to_string(rootfs.join("unshare")).unwrap(), "1\n1\n", "unshare was allowed: {log}");
    let err = std::fs::read_to_string(rootfs.join("unshare.err")).unwrap();
    assert_eq!(err.matches("Operation not permitted").count(), 2, "not EPERM: {err}");

    let df = format!("FROM busybox\nRUN --security=insecure {probe}\n");
    let (o, ctx) = build(root.path(), &df, &["--allow", "security.insecure"]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    let rootfs = umoci_unpack(&ctx.path().join("out.tar"), &ctx.path().join("read"), "latest");
    assert_eq!(std::fs::read_to_string(rootfs.join("seccomp")).unwrap(), "Seccomp:0\n", "{log}");
    assert_eq!(std::fs::read_to_string(rootfs.join("unshare")).unwrap(), "0\n0\n", "{log}");
}

#[test]
fn security_insecure_needs_the_entitlement_and_then_has_every_capability() {
    if test_env().is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    // With the entitlement: CAP_SYS_ADMIN is there and mount(2) works.
    let df = "FROM busybox\nRUN --security=insecure mkdir -p /m && mount -t tmpfs none /m && umount /m && \\\n    caps=$(grep CapEff /proc/self/status | cut -f2) && [ $(( 0x$caps >> 21 & 1 )) -eq 1 ]\n";
    let (o, _ctx) = build(root.path(), df, &["--allow", "security.insecure"]);
    assert!(o.status.success(), "insecure RUN was still confined: {}", text(&o));
    // Without it the build is refused, naming the entitlement, before anything runs.
    let (o, _ctx) = build(root.path(), df, &[]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("security.insecure"), "{log}");
    // Refused while lowering: no progress line (`#N ...`) shows the step starting.
    assert!(!log.lines().any(|l| l.starts_with('#') && l.contains("RUN --security=insecure")), "{log}");
}

#[test]
fn network_none_has_no_network() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let url = format!("http://{}/v2/", env["RIG_REGISTRY"]);
    // With the host network (the default) the registry is reachable...
    let (o, _c) = build(root.path(), &format!("FROM busybox\nRUN wget -q -O /dev/null {url}\n"), &[]);
    assert!(o.status.success(), "host network: {}", text(&o));
    // ...and with --network=none it is not, and only the loopback interface exists.
    let df = format!(
        "FROM busybox\nRUN --network=none ! wget -q -T 3 -O /dev/null {url} && test \"$(ls /sys/class/net)\" = lo\n"
    );
    let (o, _c) = build(root.path(), &df, &[]);
    assert!(o.status.success(), "network=none: {}", text(&o));
}

#[test]
fn secret_never_reaches_the_store() {
    if test_env().is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let value = format!(
        "s3cr3t-value-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    );
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), &value).unwrap();
    let src = format!("id=tok,src={}", secret_file.path().display());
    let df = "FROM busybox\nRUN --mount=type=secret,id=tok test \"$(cat /run/secrets/tok)\" != \"\" && wc -c < /run/secrets/tok > /len\nRUN --mount=type=secret,id=tok,env=TOK test -n \"$TOK\" && echo ok > /env-ok\n";
    let (o, ctx) = build(root.path(), df, &["--secret", &src]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains(&value), "the secret appeared in the build output");
    // Neither the store (blobs, snapshots, cache index) nor the exported image holds it.
    let grep = Command::new("grep").args(["-r", "-a", "-l", &value]).arg(root.path()).output().unwrap();
    assert!(grep.stdout.is_empty(), "secret found in the store: {}", String::from_utf8_lossy(&grep.stdout));
    let out = ctx.path().join("out.tar");
    let work = tempfile::tempdir().unwrap();
    let st = Command::new("tar").arg("-xf").arg(&out).arg("-C").arg(work.path()).status().unwrap();
    assert!(st.success(), "the OCI tar did not extract: the scan below would see nothing");
    let blobs = std::fs::read_dir(work.path().join("blobs/sha256")).unwrap().count();
    assert!(blobs >= 4, "only {blobs} blobs in the layout: nothing to scan");
    // Layers are gzipped in the layout: search the uncompressed streams too.
    let zgrep = Command::new("sh").arg("-c").arg(format!("for f in {}/blobs/sha256/*; do (zcat -f \"$f\" 2>/dev/null || cat \"$f\") | grep -a -c '{value}' ; done | grep -v '^0$' || true", work.path().display())).output().unwrap();
    assert!(String::from_utf8_lossy(&zgrep.stdout).trim().is_empty(), "secret found in the exported image");
}

/// `--ssh default=KEYFILE`: the key is served by an agent of the build's own while the
/// build runs (a RUN sees its socket), and the agent is gone afterwards.
#[test]
fn ssh_key_file_is_served_by_an_agent_during_the_build() {
    let Some(env) = test_env() else { return };
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id");
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "strata-test", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen (openssh-client, installed by tests/setup)");
    assert!(o.status.success(), "{}", text(&o));
    let public = std::fs::read_to_string(keys.path().join("id.pub")).unwrap();
    let public_blob = public.split_whitespace().nth(1).unwrap().to_string();

    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        // The RUN holds the agent until the test has looked at it (`go` appears in the
        // context, seen live through the bind mount), 5 minutes at most.
        "FROM busybox\nRUN --mount=type=ssh --mount=type=bind,source=.,target=/c test -S \"$SSH_AUTH_SOCK\" && \\\n    i=0; while [ ! -e /c/go ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done\n",
    )
    .unwrap();
    let bb = busybox_context(&env);
    let ssh_arg = format!("default={}", key.display());
    let child = Command::new(strata_bin())
        .arg("--root")
        .arg(root.path())
        .args(["build", "--progress=plain", "--build-context", &bb, "--ssh", &ssh_arg])
        .arg(ctx.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("strata-ssh-{}-0", child.id()));
    let socket = dir.join("agent.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !socket.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The socket appears when the agent starts; the key is added just after, before
    // the build goes on (the RUN then holds the agent until `go` appears).
    let mut listed = String::new();
    while std::time::Instant::now() < deadline {
        let o = Command::new("ssh-add").arg("-L").env("SSH_AUTH_SOCK", &socket).output().unwrap();
        listed = String::from_utf8_lossy(&o.stdout).into_owned();
        if listed.contains(&public_blob) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::fs::write(ctx.path().join("go"), "").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(listed.contains(&public_blob), "the agent does not hold the key: {listed:?}");
    assert!(!dir.exists(), "the agent's socket directory outlived the build");

    // Neither a socket nor a file: a missing file fails the build (1), named.
    let o = strata(root.path(), &["build", "--ssh", "default=/nonexistent/key", ctx.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("/nonexistent/key"), "{}", text(&o));
}

#[test]
fn shm_size_and_ulimit_reach_the_run_step() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN df -k /dev/shm | tail -1 | awk '{print $2}' > /shm && ulimit -n > /nofile && ulimit -Hn > /nofile-hard\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let out = tempfile::tempdir().unwrap();
        let dest = format!("type=local,dest={}", out.path().display());
        let mut args = vec!["-o", &dest];
        args.extend_from_slice(extra);
        let o = build_with(root.path(), ctx.path(), &args);
        assert!(o.status.success(), "{}", text(&o));
        let read = |f: &str| std::fs::read_to_string(out.path().join(f)).unwrap().trim().to_string();
        (read("shm"), read("nofile"), read("nofile-hard"))
    };
    // BuildKit's defaults: a 64 MB /dev/shm, 1048576 open files (capped by the host).
    let (shm, nofile, _) = run(&[]);
    assert_eq!(shm, "65536");
    assert!(nofile.parse::<u64>().unwrap() >= 1024, "{nofile}");
    // The flags, docker's syntax; a change of either is a different step (not cached).
    let (shm, nofile, hard) = run(&["--shm-size", "128MB", "--ulimit", "nofile=1024:2048"]);
    assert_eq!((shm.as_str(), nofile.as_str(), hard.as_str()), ("125000", "1024", "2048"));
    // Bad values are usage errors.
    let o = strata(root.path(), &["build", "--ulimit", "nofile=2048:1024", "."]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = strata(root.path(), &["build", "--shm-size", "lots", "."]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
