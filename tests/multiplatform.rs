//! Multi-platform builds through the binary: `--platform linux/amd64,linux/arm64` gives
//! one image index, pushed as one tag and read back by skopeo and umoci; arm64 RUN steps
//! run under QEMU; `FROM --platform=$BUILDPLATFORM` stages run natively.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn host_machine() -> String {
    let o = Command::new("uname").arg("-m").output().expect("uname");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn run_ok(cmd: &mut Command) -> String {
    let o = cmd.output().expect("spawn");
    assert!(o.status.success(), "{cmd:?} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// One platform's image of a pushed index, unpacked by umoci: its rootfs.
fn unpack_platform(image: &str, arch: &str, work: &Path) -> std::path::PathBuf {
    let layout = work.join(format!("layout-{arch}"));
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--override-arch", arch, "--src-tls-verify=false"])
            .arg(format!("docker://{image}"))
            .arg(format!("oci:{}:img", layout.display())),
    );
    let bundle = work.join(format!("bundle-{arch}"));
    run_ok(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:img", layout.display())).arg(&bundle));
    bundle.join("rootfs")
}

#[test]
fn two_platforms_pushed_as_one_index() {
    let Some(env) = test_env() else { return };
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nRUN uname -m > /arch\n").unwrap();
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/strata-test/multi:{}", env["RIG_REGISTRY"], std::process::id());
    let bb = busybox_context(&env);
    let o = strata(
        root.path(),
        &[
            "build",
            "--progress=plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "--build-context",
            &bb,
            "--push",
            "-t",
            &image,
            ctx.path().to_str().unwrap(),
        ],
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    // The progress says which platform each step is for.
    assert!(out.contains("[linux/amd64 2/2] RUN uname -m > /arch"), "{out}");
    assert!(out.contains("[linux/arm64 2/2] RUN uname -m > /arch"), "{out}");

    let raw = run_ok(
        Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{image}")),
    );
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json", "{raw}");
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!("{}/{}", m["platform"]["os"].as_str().unwrap(), m["platform"]["architecture"].as_str().unwrap())
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{raw}");

    let work = tempfile::tempdir().unwrap();
    for (arch, machine) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let rootfs = unpack_platform(&image, arch, work.path());
        assert_eq!(std::fs::read_to_string(rootfs.join("arch")).unwrap().trim(), machine, "{arch}");
    }
}

#[test]
fn multiarch_example_builds_natively_for_every_target_and_reproducibly() {
    let Some(env) = test_env() else { return };
    let example = format!("{}/examples/multiarch", env!("CARGO_MANIFEST_DIR"));
    let bb = busybox_context(&env);
    let host = host_machine();
    let mut digests = Vec::new();
    for jobs in ["1", "2"] {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        let layout = root.path().join("layout");
        let meta = root.path().join("meta.json");
        let local = format!("type=local,dest={}", out.display());
        let oci = format!("type=oci,dest={},tar=false", layout.display());
        let o = Command::new(strata_bin())
            .arg("--root")
            .arg(root.path())
            .args(["--jobs", jobs, "build", "--progress=plain", "--platform", "linux/amd64,linux/arm64"])
            .args(["--build-context", &bb, "-o", &local, "-o", &oci, "--metadata-file"])
            .arg(&meta)
            .arg(&example)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        // buildx's layout for several platforms: one directory per platform.
        for (platform, machine) in [("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")] {
            let dir = out.join(platform.replace('/', "_"));
            assert_eq!(std::fs::read_to_string(dir.join("arch")).unwrap().trim(), machine);
            let greet = std::fs::read_to_string(dir.join("usr/local/bin/greet")).unwrap();
            // Built for the target, on the build machine's own platform.
            assert!(greet.contains(&format!("hello from {platform}")), "{greet}");
            assert!(greet.contains(&format!("cross-built on linux/amd64 ({host})")), "{greet}");
        }
        // The OCI layout holds one index whose manifests are the two platforms.
        let top: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(layout.join("index.json")).unwrap()).unwrap();
        let index_digest = top["manifests"][0]["digest"].as_str().unwrap().to_string();
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(layout.join("blobs/sha256").join(index_digest.trim_start_matches("sha256:"))).unwrap(),
        )
        .unwrap();
        assert_eq!(index["manifests"].as_array().map(|m| m.len()), Some(2), "{index}");
        let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
        digests.push((meta["containerimage.digest"].as_str().unwrap().to_string(), index_digest));
    }
    // Two fresh roots, --jobs 1 and 2, SOURCE_DATE_EPOCH set: the same index.
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn several_platforms_into_a_single_image_output_or_without_an_emulator_fail_clearly() {
    let Some(_env) = test_env() else { return };
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nRUN [\"/x\"]\n").unwrap();
    let root = tempfile::tempdir().unwrap();
    let dest = format!("type=docker,dest={}", root.path().join("x.tar").display());
    let dir = ctx.path().to_str().unwrap();
    let o = strata(root.path(), &["build", "--platform", "linux/amd64,linux/arm64", "-o", &dest, dir]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("type=docker cannot hold several platforms"), "{}", text(&o));

    // No emulator is registered for this architecture: the build says which one and how
    // to install it, before running anything.
    let o = strata(root.path(), &["build", "--platform", "linux/sparc99", dir]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("qemu-sparc99") && t.contains("apt-get install qemu-user-static"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
}
