//! Running RUN steps of a foreign platform: the kernel hands their binaries to a QEMU
//! user-mode emulator registered in binfmt_misc. The registration must carry the `F`
//! (fix binary) flag, because the emulator is not inside the step's root file system.

use std::path::Path;

use strata_oci::image::Platform;

const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// QEMU's name for a platform's CPU (`qemu-<name>`), or None when the host runs it
/// natively.
pub fn qemu_arch(platform: &Platform, host: &Platform) -> Option<String> {
    let p = platform.clone().normalized();
    let h = host.clone().normalized();
    if p.os != "linux" {
        return None;
    }
    let native = p.architecture == h.architecture
        || (h.architecture == "amd64" && p.architecture == "386")
        || (h.architecture == "arm64" && p.architecture == "arm" && p.variant.as_deref() != Some("v5"));
    if native {
        return None;
    }
    Some(
        match p.architecture.as_str() {
            "amd64" => "x86_64",
            "386" => "i386",
            "arm64" => "aarch64",
            "arm" => "arm",
            "ppc64le" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "mips64le" => "mips64el",
            "mips64" => "mips64",
            "loong64" => "loongarch64",
            other => other,
        }
        .to_string(),
    )
}

/// Is an emulator for `qemu_arch` registered, enabled, and usable inside a container?
/// Err explains what is missing and how to fix it.
pub fn check_emulator(platform: &Platform, qemu_arch: &str) -> Result<(), String> {
    check_emulator_in(Path::new(BINFMT_DIR), platform, qemu_arch)
}

fn check_emulator_in(dir: &Path, platform: &Platform, qemu_arch: &str) -> Result<(), String> {
    let fix = format!(
        "install QEMU user emulation (Debian/Ubuntu: `apt-get install qemu-user-static binfmt-support`, \
         or `docker run --privileged --rm tonistiigi/binfmt --install {}`)",
        platform.architecture
    );
    if !dir.join("status").exists() {
        return Err(format!(
            "RUN steps for {platform} need QEMU user emulation, but binfmt_misc is not mounted at {}: \
             mount it (`mount -t binfmt_misc binfmt_misc {}`) and {fix}",
            dir.display(),
            dir.display()
        ));
    }
    let entry = dir.join(format!("qemu-{qemu_arch}"));
    let Ok(text) = std::fs::read_to_string(&entry) else {
        return Err(format!(
            "RUN steps for {platform} need the qemu-{qemu_arch} emulator, which is not registered in {}: {fix}",
            dir.display()
        ));
    };
    if !text.lines().any(|l| l.trim() == "enabled") {
        return Err(format!(
            "RUN steps for {platform} need the qemu-{qemu_arch} emulator: {} is disabled \
             (`update-binfmts --enable qemu-{qemu_arch}`)",
            entry.display()
        ));
    }
    let flags = text.lines().find_map(|l| l.strip_prefix("flags:")).unwrap_or("").trim();
    if !flags.contains('F') {
        return Err(format!(
            "RUN steps for {platform} need the qemu-{qemu_arch} emulator registered with the F (fix binary) flag, \
             so it works inside a container; {} has flags {flags:?}: {fix}",
            entry.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn native_platforms_need_no_emulator() {
        assert_eq!(qemu_arch(&p("linux/amd64"), &p("linux/amd64")), None);
        assert_eq!(qemu_arch(&p("linux/386"), &p("linux/amd64")), None);
        assert_eq!(qemu_arch(&p("linux/arm64"), &p("linux/amd64")), Some("aarch64".into()));
        assert_eq!(qemu_arch(&p("linux/arm/v7"), &p("linux/amd64")), Some("arm".into()));
        assert_eq!(qemu_arch(&p("linux/amd64"), &p("linux/arm64")), Some("x86_64".into()));
    }

    #[test]
    fn missing_disabled_and_unfixed_emulators_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let arm = p("linux/arm64");
        let e = check_emulator_in(dir.path(), &arm, "aarch64").unwrap_err();
        assert!(e.contains("binfmt_misc is not mounted"), "{e}");
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        let e = check_emulator_in(dir.path(), &arm, "aarch64").unwrap_err();
        assert!(e.contains("qemu-aarch64") && e.contains("not registered") && e.contains("qemu-user-static"), "{e}");
        let entry = dir.path().join("qemu-aarch64");
        std::fs::write(&entry, "disabled\ninterpreter /usr/bin/qemu-aarch64\nflags: F\n").unwrap();
        assert!(check_emulator_in(dir.path(), &arm, "aarch64").unwrap_err().contains("disabled"));
        std::fs::write(&entry, "enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: P\n").unwrap();
        assert!(check_emulator_in(dir.path(), &arm, "aarch64").unwrap_err().contains("F (fix binary)"));
        std::fs::write(&entry, "enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: PF\n").unwrap();
        assert_eq!(check_emulator_in(dir.path(), &arm, "aarch64"), Ok(()));
    }
}
