//! The seccomp filter of a RUN step: strata's default profile (`seccomp_default.json`,
//! the syscalls Docker's and BuildKit's default profile allows), made concrete for the
//! step's capabilities and this host's architecture. Anything else fails with EPERM
//! (the step sees an error, the build goes on). `--security=insecure` runs without it,
//! as in BuildKit.

use std::collections::HashSet;

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
use serde::Deserialize;

const PROFILE: &str = include_str!("seccomp_default.json");

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Profile {
    #[allow(dead_code)]
    about: String,
    default_errno: u32,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Rule {
    names: Vec<String>,
    #[serde(default)]
    args: Vec<Arg>,
    /// Return this errno instead of allowing.
    errno: Option<u32>,
    /// Only when the step has all of these capabilities.
    #[serde(default)]
    caps: Vec<String>,
    /// Only when the step lacks one of these.
    #[serde(default)]
    unless_caps: Vec<String>,
    /// Only on these host architectures (Rust's names).
    #[serde(default)]
    arches: Vec<String>,
    #[allow(dead_code)]
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Arg {
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: String,
}

/// The name runc and Docker give a capability (`CAP_SYS_ADMIN`).
fn cap_name(c: &Capability) -> String {
    serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The seccomp architectures of a host architecture (the native one and the 32-bit
/// one its kernel also runs).
fn architectures(host: &str) -> Vec<Arch> {
    match host {
        // Docker also lists x32, an ABI distribution kernels leave off; each architecture
        // costs runc ~15 ms per step to compile (measured: 30 ms for three, 17 for two),
        // and an x32 syscall meets the filter's wrong-architecture action instead.
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86],
        "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        "x86" => vec![Arch::ScmpArchX86],
        "arm" => vec![Arch::ScmpArchArm],
        _ => vec![Arch::ScmpArchNative],
    }
}

/// The profile for a step holding `caps`, on a host of architecture `host` (as
/// `std::env::consts::ARCH` names it).
pub fn default_profile(caps: &HashSet<Capability>, host: &str) -> Result<LinuxSeccomp, String> {
    let profile: Profile = serde_json::from_str(PROFILE).map_err(|e| format!("the seccomp profile: {e}"))?;
    let held: HashSet<String> = caps.iter().map(cap_name).collect();
    let mut syscalls: Vec<LinuxSyscall> = Vec::new();
    for rule in &profile.rules {
        if !rule.caps.iter().all(|c| held.contains(c)) {
            continue;
        }
        if !rule.unless_caps.is_empty() && rule.unless_caps.iter().all(|c| held.contains(c)) {
            continue;
        }
        if !rule.arches.is_empty() && !rule.arches.iter().any(|a| a == host) {
            continue;
        }
        let mut args = Vec::with_capacity(rule.args.len());
        for a in &rule.args {
            let op = match a.op.as_str() {
                "eq" => LinuxSeccompOperator::ScmpCmpEq,
                "ne" => LinuxSeccompOperator::ScmpCmpNe,
                "lt" => LinuxSeccompOperator::ScmpCmpLt,
                "le" => LinuxSeccompOperator::ScmpCmpLe,
                "gt" => LinuxSeccompOperator::ScmpCmpGt,
                "ge" => LinuxSeccompOperator::ScmpCmpGe,
                "masked_eq" => LinuxSeccompOperator::ScmpCmpMaskedEq,
                other => return Err(format!("the seccomp profile: unknown operator {other:?}")),
            };
            let mut b = LinuxSeccompArgBuilder::default().index(a.index).value(a.value).op(op);
            if let Some(two) = a.value_two {
                b = b.value_two(two);
            }
            args.push(b.build().map_err(|e| e.to_string())?);
        }
        let mut b = LinuxSyscallBuilder::default().names(rule.names.clone());
        b = match rule.errno {
            Some(errno) => b.action(LinuxSeccompAction::ScmpActErrno).errno_ret(errno),
            None => b.action(LinuxSeccompAction::ScmpActAllow),
        };
        if !args.is_empty() {
            b = b.args(args);
        }
        syscalls.push(b.build().map_err(|e| e.to_string())?);
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(profile.default_errno)
        .architectures(architectures(host))
        .syscalls(syscalls)
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(p: &LinuxSeccomp, name: &str) -> Vec<LinuxSyscall> {
        p.syscalls().clone().unwrap_or_default().into_iter().filter(|s| s.names().iter().any(|n| n == name)).collect()
    }

    fn default_caps() -> HashSet<Capability> {
        crate::sandbox::DEFAULT_CAPABILITIES.iter().copied().collect()
    }

    #[test]
    fn a_default_step_may_not_unshare_mount_or_clone_namespaces() {
        let p = default_profile(&default_caps(), "x86_64").unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1));
        for denied in ["unshare", "mount", "setns", "bpf", "reboot", "ptrace_never"] {
            assert!(allowed(&p, denied).is_empty(), "{denied} is allowed");
        }
        let clone = allowed(&p, "clone");
        assert_eq!(clone.len(), 1);
        let arg = clone[0].args().clone().unwrap()[0];
        assert_eq!((arg.op(), arg.value()), (LinuxSeccompOperator::ScmpCmpMaskedEq, 0x7E02_0000));
        let clone3 = allowed(&p, "clone3");
        assert_eq!(clone3[0].errno_ret(), Some(38));
        // SYS_CHROOT is a default capability: chroot is allowed.
        assert_eq!(allowed(&p, "chroot").len(), 1);
        assert_eq!(allowed(&p, "arch_prctl").len(), 1);
        assert!(allowed(&p, "set_tls").is_empty(), "an arm syscall on x86_64");
        assert_eq!(p.architectures().clone().unwrap()[0], Arch::ScmpArchX86_64);
    }

    #[test]
    fn sys_admin_opens_the_namespace_syscalls() {
        let mut caps = default_caps();
        caps.insert(Capability::SysAdmin);
        let p = default_profile(&caps, "aarch64").unwrap();
        for name in ["unshare", "mount", "setns"] {
            assert_eq!(allowed(&p, name).len(), 1, "{name}");
        }
        let clone = allowed(&p, "clone");
        assert_eq!(clone.len(), 1);
        assert!(clone[0].args().is_none(), "clone is restricted although the step holds CAP_SYS_ADMIN");
        assert!(allowed(&p, "clone3").iter().all(|s| s.action() == LinuxSeccompAction::ScmpActAllow));
        assert_eq!(allowed(&p, "set_tls").len(), 1);
        assert!(allowed(&p, "arch_prctl").is_empty());
    }
}
