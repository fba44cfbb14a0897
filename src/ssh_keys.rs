//! `--ssh ID=KEYFILE[,KEYFILE...]`: key files served to `RUN --mount=type=ssh` by an
//! ssh agent of the build's own — OpenSSH's `ssh-agent` on a private socket, holding
//! only those keys, stopped (and its socket removed) when the build ends — as buildx
//! serves key files from an agent it runs itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct KeyAgent {
    child: Child,
    dir: PathBuf,
    pub socket: PathBuf,
}

impl KeyAgent {
    /// Start an agent holding `keys`; the error names the key that could not be added.
    pub fn start(id: &str, keys: &[PathBuf]) -> Result<KeyAgent, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "strata-ssh-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("--ssh {id}: creating {}: {e}", dir.display()))?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| format!("--ssh {id}: {}: {e}", dir.display()))?;
        let socket = dir.join("agent.sock");
        let child = match Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(if e.kind() == std::io::ErrorKind::NotFound {
                    format!("--ssh {id}: serving key files needs ssh-agent (apt-get install openssh-client)")
                } else {
                    format!("--ssh {id}: starting ssh-agent: {e}")
                });
            }
        };
        let agent = KeyAgent { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent.socket.exists() {
            if Instant::now() > deadline {
                return Err(format!("--ssh {id}: ssh-agent did not start"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for key in keys {
            agent.add(id, key)?;
        }
        Ok(agent)
    }

    fn add(&self, id: &str, key: &Path) -> Result<(), String> {
        let out = Command::new("ssh-add")
            .arg("-q")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            // A key with a passphrase is refused rather than prompted for.
            .env("SSH_ASKPASS_REQUIRE", "never")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("--ssh {id}: running ssh-add: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "--ssh {id}: {} could not be loaded: {}",
                key.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for KeyAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
