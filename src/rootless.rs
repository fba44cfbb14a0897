//! Rootless strata: run by an ordinary user, the process moves into a user namespace
//! of its own before it does anything else, where the user is 0 and the user's
//! `/etc/subuid` and `/etc/subgid` ranges are 1 and above (mapped by `newuidmap` and
//! `newgidmap`, run by a helper that stays outside); without ranges the user's own id
//! alone is mapped. Builds then run as they do as root: overlayfs with `userxattr`,
//! runc in its rootless mode, files of the image's owners stored under the
//! subordinate ids. Where user namespaces are not allowed, it says what the host must
//! allow and fails: it never runs steps without a sandbox.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

/// Set in the helper's environment: the pid to map, and the maps.
const HELPER_ENV: &str = "STRATA_USERNS_HELPER";

/// One line of `/etc/subuid` or `/etc/subgid` for this user: (start, count).
fn sub_range(file: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        (who == name || who == id.to_string()).then_some(())?;
        Some((start.parse().ok()?, count.parse().ok()?)).filter(|(_, c): &(u32, u32)| *c > 0)
    })
}

fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

/// What to tell a user whose host refuses the namespace.
fn refused(why: &str) -> String {
    format!(
        "error: strata runs as an ordinary user inside a user namespace, and {why}.\n\
         Allow unprivileged user namespaces on the host (sysctl kernel.unprivileged_userns_clone=1, \
         user.max_user_namespaces > 0; on Ubuntu also kernel.apparmor_restrict_unprivileged_userns=0), \
         or in Kubernetes run the pod with `hostUsers: false` or with seccomp and AppArmor profiles that allow \
         unshare(CLONE_NEWUSER) and mount (see the README, \"Rootless and CI without privileges\"). \
         Steps are never run without a sandbox."
    )
}

/// The helper: waits for the parent to have unshared, then maps its ids. Runs when
/// [`HELPER_ENV`] is set, before anything else of `main`.
pub fn helper_main() -> Option<std::process::ExitCode> {
    let spec = std::env::var(HELPER_ENV).ok()?;
    let mut byte = [0u8; 1];
    if std::io::stdin().read_exact(&mut byte).is_err() {
        // The parent went away before unsharing.
        return Some(std::process::ExitCode::from(1));
    }
    // "PID|UIDMAP|GIDMAP", each map's triples separated by spaces.
    let parts: Vec<&str> = spec.split('|').collect();
    if parts.len() != 3 {
        return Some(std::process::ExitCode::from(2));
    }
    for (tool, map) in [("newuidmap", parts[1]), ("newgidmap", parts[2])] {
        let out = Command::new(tool).arg(parts[0]).args(map.split_whitespace()).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                eprintln!("error: {tool} {} {map}: {}", parts[0], String::from_utf8_lossy(&o.stderr).trim());
                return Some(std::process::ExitCode::from(1));
            }
            Err(e) => {
                eprintln!("error: running {tool}: {e} (install the uidmap package)");
                return Some(std::process::ExitCode::from(1));
            }
        }
    }
    Some(std::process::ExitCode::SUCCESS)
}

/// Enter a user namespace when run by an ordinary user; nothing as root. Must be called
/// while the process has a single thread (before the async runtime starts).
pub fn enter_if_unprivileged() -> Result<(), String> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    if rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let name = user_name(uid);
    let subuid = sub_range("/etc/subuid", &name, uid);
    let subgid = sub_range("/etc/subgid", &name, uid);
    let pid = std::process::id();
    let mut helper = match (subuid, subgid) {
        (Some((us, uc)), Some((gs, gc))) => {
            let spec = format!("{pid}|0 {uid} 1 1 {us} {uc}|0 {gid} 1 1 {gs} {gc}");
            let exe = std::fs::read_link("/proc/self/exe").map_err(|e| format!("error: /proc/self/exe: {e}"))?;
            let child = Command::new(exe)
                .env(HELPER_ENV, spec)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("error: starting the id-mapping helper: {e}"))?;
            Some(child)
        }
        _ => None,
    };
    let flags = rustix::thread::UnshareFlags::NEWUSER | rustix::thread::UnshareFlags::NEWNS;
    // SAFETY: the process has one thread (this is called before the runtime starts),
    // so no other thread can be affected by the namespaces changing under it.
    if let Err(e) = unsafe { rustix::thread::unshare_unsafe(flags) } {
        if let Some(mut h) = helper {
            let _ = h.kill();
            let _ = h.wait();
        }
        return Err(refused(&format!("this host does not let it create one: unshare: {e}")));
    }
    match helper.as_mut() {
        Some(h) => {
            let go = h.stdin.take().map(|mut s| s.write_all(b"x"));
            let status = h.wait().map_err(|e| format!("error: the id-mapping helper: {e}"))?;
            if !matches!(go, Some(Ok(()))) || !status.success() {
                return Err(format!(
                    "error: mapping {name}'s subordinate ids ({}) into strata's user namespace failed (see above); \
                     check /etc/subuid and /etc/subgid, and that newuidmap/newgidmap (package uidmap) are setuid",
                    "/etc/subuid, /etc/subgid"
                ));
            }
        }
        None => {
            // Only the user's own ids: written by the process itself.
            let write = |file: &str, text: String| {
                std::fs::write(file, text).map_err(|e| refused(&format!("it could not write {file}: {e}")))
            };
            write("/proc/self/setgroups", "deny".into())?;
            write("/proc/self/uid_map", format!("0 {uid} 1"))?;
            write("/proc/self/gid_map", format!("0 {gid} 1"))?;
        }
    }
    // Mounts made here (snapshots, the steps' roots) stay here.
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(|e| refused(&format!("it could not make its mounts private: {e}")))?;
    ENTERED.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

static ENTERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// This process entered a user namespace of its own (it was started by an ordinary
/// user): its store and configuration are the user's.
pub fn entered() -> bool {
    ENTERED.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_ranges_are_found_by_name_or_id() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("subuid");
        std::fs::write(&f, "alice:100000:65536\n1001:200000:1000\nzero:300000:0\n").unwrap();
        let f = f.to_str().unwrap();
        assert_eq!(sub_range(f, "alice", 1000), Some((100000, 65536)));
        assert_eq!(sub_range(f, "bob", 1001), Some((200000, 1000)));
        assert_eq!(sub_range(f, "zero", 1002), None);
        assert_eq!(sub_range(f, "carol", 1003), None);
    }
}
