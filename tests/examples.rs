//! The examples build as their READMEs say, with the seed busybox as `busybox`.

mod common;

use common::*;

fn build_example(
    root: &std::path::Path,
    name: &str,
    extra: &[&str],
) -> (std::process::Output, std::path::PathBuf, tempfile::TempDir) {
    let env = test_env().expect("test env");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("img.tar");
    let dir = format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let bb = busybox_context(&env);
    let dest = format!("type=oci,dest={}", out.display());
    let mut args = vec!["build", "--progress=plain", "--build-context", &bb, "-t", name, "-o", &dest];
    args.extend_from_slice(extra);
    args.push(&dir);
    (strata(root, &args), out, work)
}

#[test]
fn cache_mount_persists_across_builds_but_not_in_the_image() {
    if test_env().is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (o, _, _w) = build_example(root.path(), "cache-mount", &["--build-arg", "RUN_ID=first"]);
    assert!(o.status.success(), "{}", text(&o));
    let (o, out, w) = build_example(root.path(), "cache-mount", &["--build-arg", "RUN_ID=second"]);
    assert!(o.status.success(), "{}", text(&o));
    let rootfs = umoci_unpack(&out, w.path(), "latest");
    assert_eq!(std::fs::read_to_string(rootfs.join("runs-seen")).unwrap(), "first\nsecond\n");
    let cache_dir = rootfs.join("var/cache/demo");
    assert!(!cache_dir.join("runs").exists(), "cache contents leaked into the image");
}

#[test]
fn secrets_example() {
    if test_env().is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "abc123").unwrap();
    let spec = format!("id=token,src={}", secret.path().display());
    let (o, out, w) = build_example(root.path(), "secrets", &["--secret", &spec]);
    assert!(o.status.success(), "{}", text(&o));
    let rootfs = umoci_unpack(&out, w.path(), "latest");
    assert_eq!(std::fs::read_to_string(rootfs.join("token-length")).unwrap().trim(), "6");
    assert!(!rootfs.join("run/secrets/token").exists(), "secret file stub left in the image");
    // Without the secret a fresh build fails, naming it. (A cached step needs no
    // secret: secret values never enter cache keys, as in BuildKit.)
    let fresh = tempfile::tempdir().unwrap();
    let (o, _, _w2) = build_example(fresh.path(), "secrets", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // The first RUN fails: without the secret (not required, as BuildKit's default) its
    // `test -s /run/secrets/token` finds no file.
    let failed = text(&o).lines().find(|l| l.starts_with("ERROR: failed to solve:")).unwrap_or_default().to_string();
    assert!(failed.contains("RUN --mount=type=secret,id=token") && failed.contains("exit code: 1"), "{}", text(&o));
}

#[test]
fn multistage_c_compiles_with_apt_installed_gcc_and_ships_only_the_binary() {
    let Some(env) = test_env() else { return };
    let Some(debian) = env.get("RIG_DEBIAN_LAYOUT") else {
        skipped("no Debian seed (run tests/setup --debian): examples/multistage-c NOT tested");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let deb = format!("debian:bookworm=oci-layout://{debian}:bookworm");
    let (o, out, w) = build_example(root.path(), "multistage-c", &["--build-context", &deb]);
    assert!(o.status.success(), "{}", text(&o));
    let rootfs = umoci_unpack(&out, w.path(), "latest");
    // The final stage ran the binary; it names its compiler and the machine.
    let greeting = std::fs::read_to_string(rootfs.join("greeting")).unwrap();
    assert!(greeting.starts_with("hello from C, compiled by gcc 12."), "{greeting}");
    // Only the binary came over: no compiler, no apt lists, no sources.
    assert!(rootfs.join("usr/local/bin/hello").is_file());
    assert!(!rootfs.join("usr/bin/gcc").exists() && !rootfs.join("src").exists());
    assert!(!rootfs.join("var/lib/apt").exists());
}
