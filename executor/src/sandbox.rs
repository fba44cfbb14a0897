//! Running one process in a runc sandbox: the OCI runtime bundle (config.json made with
//! oci-spec's runtime types), runc as a child process, output streamed line by line,
//! and cleanup — the container is deleted whether the step succeeds, fails or is
//! cancelled, and mount points the sandbox had to create are removed afterwards.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Everything a sandboxed process needs.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// A new, empty network namespace (`--network=none`) instead of the host's.
    pub no_network: bool,
    /// `--security=insecure`: all capabilities.
    pub insecure: bool,
    pub hostname: String,
    /// Extra bind/tmpfs mounts: (destination, source, type, options).
    pub mounts: Vec<ExtraMount>,
    pub extra_hosts: Vec<String>,
    /// Size of /dev/shm in bytes (`--shm-size`); 64 MB when unset.
    pub shm_size: Option<u64>,
    /// `--ulimit`s; a `nofile` one replaces the default.
    pub ulimits: Vec<strata_solver::graph::Ulimit>,
}

#[derive(Debug, Clone)]
pub struct ExtraMount {
    pub destination: String,
    pub source: PathBuf,
    pub kind: String,
    pub options: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("runc not found: install it (apt-get install runc) or pass --runtime PATH")]
    NoRuntime,
    #[error("the OCI runtime {0} does not exist (given with --runtime or the configuration's `runtime`)")]
    RuntimeMissing(PathBuf),
    #[error("preparing the sandbox: {0}")]
    Prepare(String),
    #[error("running runc: {0}")]
    Runtime(String),
    #[error("cancelled")]
    Cancelled,
}

/// The outcome of a sandboxed process.
#[derive(Debug)]
pub struct RunOutcome {
    pub exit_code: i32,
    pub last_lines: Vec<String>,
}

/// The runc runtime.
#[derive(Debug, Clone)]
pub struct Runc {
    pub binary: PathBuf,
    /// runc's state directory (`--root`).
    pub state_dir: PathBuf,
}

impl Runc {
    /// Find runc: an explicit path, or `runc` on PATH.
    pub fn locate(explicit: Option<&Path>, state_dir: PathBuf) -> Result<Runc, SandboxError> {
        let binary = match explicit {
            Some(p) => p.to_path_buf(),
            None => which("runc").ok_or(SandboxError::NoRuntime)?,
        };
        if !binary.exists() {
            return Err(SandboxError::RuntimeMissing(binary));
        }
        Ok(Runc { binary, state_dir })
    }

    /// Delete containers left by strata processes that are gone.
    pub async fn clean_stale(&self) {
        // runc keeps one directory per container under its root: none, nothing to ask.
        let any = std::fs::read_dir(&self.state_dir).map(|mut d| d.next().is_some()).unwrap_or(false);
        if !any {
            return;
        }
        let Ok(out) = tokio::process::Command::new(&self.binary)
            .arg("--root")
            .arg(&self.state_dir)
            .args(["list", "-q"])
            .stderr(Stdio::null())
            .output()
            .await
        else {
            return;
        };
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let pid: Option<u32> =
                id.strip_prefix("strata-").and_then(|r| r.split('-').next()).and_then(|p| p.parse().ok());
            if let Some(pid) = pid {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    self.delete(id).await;
                }
            }
        }
    }

    async fn delete(&self, id: &str) {
        let _ = tokio::process::Command::new(&self.binary)
            .arg("--root")
            .arg(&self.state_dir)
            .args(["delete", "--force", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }

    /// Run `spec` on `rootfs` (already mounted), with the bundle in `bundle_dir`.
    /// `on_line(stream, line)` receives the output as it comes.
    pub async fn run(
        &self,
        id: &str,
        rootfs: &Path,
        bundle_dir: &Path,
        spec: &SandboxSpec,
        mut on_line: impl FnMut(u8, String) + Send,
        mut cancel: tokio::sync::watch::Receiver<bool>,
    ) -> Result<RunOutcome, SandboxError> {
        std::fs::create_dir_all(bundle_dir).map_err(|e| SandboxError::Prepare(e.to_string()))?;
        let etc = bundle_dir.join("etc");
        std::fs::create_dir_all(&etc).map_err(|e| SandboxError::Prepare(e.to_string()))?;
        write_network_files(&etc, spec).map_err(|e| SandboxError::Prepare(e.to_string()))?;
        let config = build_config(rootfs, &etc, spec)?;
        config.save(bundle_dir.join("config.json")).map_err(|e| SandboxError::Prepare(e.to_string()))?;

        let mut child = tokio::process::Command::new(&self.binary)
            .arg("--root")
            .arg(&self.state_dir)
            .args(["run", "--bundle"])
            .arg(bundle_dir)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| SandboxError::Runtime(format!("{}: {e}", self.binary.display())))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(u8, String)>(256);
        let tx2 = tx.clone();
        let out_task = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if tx.send((1, l)).await.is_err() {
                    break;
                }
            }
        });
        let err_task = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if tx2.send((2, l)).await.is_err() {
                    break;
                }
            }
        });
        let mut last: VecDeque<String> = VecDeque::with_capacity(20);
        let mut cancelled = false;
        let status = loop {
            tokio::select! {
                Some((stream, line)) = rx.recv() => {
                    if last.len() == 20 { last.pop_front(); }
                    last.push_back(line.clone());
                    on_line(stream, line);
                }
                status = child.wait() => break status,
                changed = cancel.changed(), if !cancelled => {
                    if changed.is_ok() && *cancel.borrow() {
                        cancelled = true;
                        let _ = tokio::process::Command::new(&self.binary)
                            .arg("--root").arg(&self.state_dir)
                            .args(["kill", id, "KILL"])
                            .stdout(Stdio::null()).stderr(Stdio::null())
                            .status().await;
                    }
                }
            }
        };
        let _ = out_task.await;
        let _ = err_task.await;
        while let Ok((stream, line)) = rx.try_recv() {
            if last.len() == 20 {
                last.pop_front();
            }
            last.push_back(line.clone());
            on_line(stream, line);
        }
        // A foreground `runc run` removes its container when it ends; only one it could
        // not remove (killed) leaves its state directory, and costs another runc call.
        if self.state_dir.join(id).exists() {
            self.delete(id).await;
        }
        if cancelled {
            return Err(SandboxError::Cancelled);
        }
        let status = status.map_err(|e| SandboxError::Runtime(e.to_string()))?;
        use std::os::unix::process::ExitStatusExt;
        let exit_code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        Ok(RunOutcome { exit_code, last_lines: last.into_iter().collect() })
    }
}

/// BuildKit's 1048576 open files, capped at what this process may grant.
fn nofile_limit() -> u64 {
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum.unwrap_or(1_048_576);
    hard.min(1_048_576)
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

fn write_network_files(etc: &Path, spec: &SandboxSpec) -> std::io::Result<()> {
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = if resolv.contains("nameserver") && !spec.no_network { resolv } else { String::new() };
    std::fs::write(etc.join("resolv.conf"), resolv)?;
    let mut hosts = format!("127.0.0.1\tlocalhost {h}\n::1\tlocalhost ip6-localhost ip6-loopback\n", h = spec.hostname);
    for h in &spec.extra_hosts {
        if let Some((name, ip)) = h.split_once(['=', ':']) {
            hosts.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    std::fs::write(etc.join("hosts"), hosts)?;
    std::fs::write(etc.join("hostname"), format!("{}\n", spec.hostname))?;
    Ok(())
}

fn err(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Prepare(e.to_string())
}

fn build_config(rootfs: &Path, etc: &Path, spec: &SandboxSpec) -> Result<Spec, SandboxError> {
    let caps: std::collections::HashSet<Capability> =
        if spec.insecure { all_capabilities() } else { DEFAULT_CAPABILITIES.iter().copied().collect() };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .build()
        .map_err(err)?;
    let user = UserBuilder::default()
        .uid(spec.uid)
        .gid(spec.gid)
        .additional_gids(spec.additional_gids.clone())
        .build()
        .map_err(err)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(spec.args.clone())
        .env(spec.env.clone())
        .cwd(if spec.cwd.is_empty() { "/".to_string() } else { spec.cwd.clone() })
        .capabilities(capabilities)
        .no_new_privileges(false)
        .rlimits(rlimits(&spec.ulimits)?)
        .build()
        .map_err(err)?;
    let m = |dest: &str, typ: &str, src: &str, opts: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(src)
            .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
            .map_err(err)
    };
    // In KiB, as docker writes it (a size the kernel does not round).
    let shm_size = format!("size={}k", spec.shm_size.map(|b| b.div_ceil(1024)).unwrap_or(65536));
    // In a user namespace (rootless) sysfs cannot be mounted without a network namespace
    // of its own, and devpts takes no gid= that may be unmapped: as runc's rootless spec.
    let rootless = crate::userns::in_user_namespace();
    let devpts_opts: &[&str] = if rootless {
        &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    } else {
        &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
    };
    let sys = if rootless {
        m("/sys", "none", "/sys", &["rbind", "nosuid", "noexec", "nodev", "ro"])?
    } else {
        m("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?
    };
    let mut mounts = vec![
        m("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        m("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        m("/dev/pts", "devpts", "devpts", devpts_opts)?,
        m("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", &shm_size])?,
        m("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        sys,
    ];
    for f in ["resolv.conf", "hosts", "hostname"] {
        let src = etc.join(f);
        mounts.push(m(&format!("/etc/{f}"), "bind", &src.to_string_lossy(), &["rbind", "ro"])?);
    }
    for x in &spec.mounts {
        let opts: Vec<&str> = x.options.iter().map(String::as_str).collect();
        mounts.push(m(&x.destination, &x.kind, &x.source.to_string_lossy(), &opts)?);
    }
    let mut namespaces = vec![
        LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Pid).build().map_err(err)?,
        LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Ipc).build().map_err(err)?,
        LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Uts).build().map_err(err)?,
        LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Mount).build().map_err(err)?,
    ];
    if spec.no_network {
        namespaces.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network).build().map_err(err)?);
    }
    let default_linux = oci_spec::runtime::Linux::default();
    let mut linux = LinuxBuilder::default().namespaces(namespaces);
    if !spec.insecure {
        // BuildKit's RUN runs under Docker's default seccomp profile; insecure lifts it.
        linux = linux.seccomp(crate::seccomp::default_profile(&caps, std::env::consts::ARCH).map_err(err)?);
        if let Some(masked) = default_linux.masked_paths() {
            linux = linux.masked_paths(masked.clone());
        }
        if let Some(ro) = default_linux.readonly_paths() {
            linux = linux.readonly_paths(ro.clone());
        }
    }
    let linux = linux.build().map_err(err)?;
    let mut config = Spec::default();
    config.set_process(Some(process));
    config.set_root(Some(RootBuilder::default().path(rootfs).readonly(false).build().map_err(err)?));
    config.set_hostname(Some(spec.hostname.clone()));
    config.set_mounts(Some(mounts));
    config.set_linux(Some(linux));
    config.set_annotations(None);
    Ok(config)
}

/// The process's resource limits: BuildKit's nofile default, then each `--ulimit`
/// (which replaces a default of the same kind).
fn rlimits(ulimits: &[strata_solver::graph::Ulimit]) -> Result<Vec<oci_spec::runtime::PosixRlimit>, SandboxError> {
    use strata_solver::graph::UlimitKind as K;
    let typ = |k: K| match k {
        K::Core => PosixRlimitType::RlimitCore,
        K::Cpu => PosixRlimitType::RlimitCpu,
        K::Data => PosixRlimitType::RlimitData,
        K::Fsize => PosixRlimitType::RlimitFsize,
        K::Locks => PosixRlimitType::RlimitLocks,
        K::Memlock => PosixRlimitType::RlimitMemlock,
        K::Msgqueue => PosixRlimitType::RlimitMsgqueue,
        K::Nice => PosixRlimitType::RlimitNice,
        K::Nofile => PosixRlimitType::RlimitNofile,
        K::Nproc => PosixRlimitType::RlimitNproc,
        K::Rss => PosixRlimitType::RlimitRss,
        K::Rtprio => PosixRlimitType::RlimitRtprio,
        K::Rttime => PosixRlimitType::RlimitRttime,
        K::Sigpending => PosixRlimitType::RlimitSigpending,
        K::Stack => PosixRlimitType::RlimitStack,
    };
    let mut out = Vec::new();
    if !ulimits.iter().any(|u| u.kind == K::Nofile) {
        out.push(
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(nofile_limit())
                .soft(nofile_limit())
                .build()
                .map_err(err)?,
        );
    }
    for u in ulimits {
        out.push(PosixRlimitBuilder::default().typ(typ(u.kind)).hard(u.hard).soft(u.soft).build().map_err(err)?);
    }
    Ok(out)
}

/// Every capability this process can hand on (its bounding set), as BuildKit's
/// `--security=insecure` gives (containerd's `WithAllCurrentCapabilities`): asking runc
/// for one outside it fails the step ("unable to apply caps").
fn all_capabilities() -> std::collections::HashSet<Capability> {
    use Capability::*;
    // Numbered as in linux/capability.h.
    let numbered = [
        (Chown, 0),
        (DacOverride, 1),
        (DacReadSearch, 2),
        (Fowner, 3),
        (Fsetid, 4),
        (Kill, 5),
        (Setgid, 6),
        (Setuid, 7),
        (Setpcap, 8),
        (LinuxImmutable, 9),
        (NetBindService, 10),
        (NetBroadcast, 11),
        (NetAdmin, 12),
        (NetRaw, 13),
        (IpcLock, 14),
        (IpcOwner, 15),
        (SysModule, 16),
        (SysRawio, 17),
        (SysChroot, 18),
        (SysPtrace, 19),
        (SysPacct, 20),
        (SysAdmin, 21),
        (SysBoot, 22),
        (SysNice, 23),
        (SysResource, 24),
        (SysTime, 25),
        (SysTtyConfig, 26),
        (Mknod, 27),
        (Lease, 28),
        (AuditWrite, 29),
        (AuditControl, 30),
        (Setfcap, 31),
        (MacOverride, 32),
        (MacAdmin, 33),
        (Syslog, 34),
        (WakeAlarm, 35),
        (BlockSuspend, 36),
        (AuditRead, 37),
        (Perfmon, 38),
        (Bpf, 39),
        (CheckpointRestore, 40),
    ];
    let bounding = bounding_set().unwrap_or(u64::MAX);
    numbered.into_iter().filter(|(_, bit)| bounding & (1u64 << bit) != 0).map(|(c, _)| c).collect()
}

/// This process's capability bounding set (`CapBnd` of /proc/self/status).
fn bounding_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Paths under the root the sandbox mounts over; a missing one is created by runc as
/// a stub and must not end up in the layer.
pub fn mount_points(spec: &SandboxSpec) -> Vec<String> {
    let mut v: Vec<String> = ["/proc", "/dev", "/sys", "/etc/resolv.conf", "/etc/hosts", "/etc/hostname"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(spec.mounts.iter().map(|m| m.destination.clone()));
    v
}
