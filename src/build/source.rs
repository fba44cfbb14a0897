//! The second phase: the build context (a local directory, a URL, or standard input)
//! and the Dockerfile's bytes, read as BuildKit reads them — symlinks followed only
//! inside the context or the Dockerfile's directory.

use std::path::{Path, PathBuf};

use super::plan::{BuildPlan, DockerfileSpec, EpochSpec};
use crate::{Failure, Result};

/// The largest Dockerfile or .dockerignore read.
pub const MAX_DOCKERFILE: u64 = 32 << 20;

/// The context and the Dockerfile of a build.
pub struct BuildSource {
    pub context_dir: PathBuf,
    /// Where the Dockerfile was read from (`Dockerfile` when it came from stdin), for
    /// messages and for finding its `.dockerignore`.
    pub dockerfile_path: PathBuf,
    pub dockerfile: Vec<u8>,
    /// `SOURCE_DATE_EPOCH`, resolved (`git` read from the context).
    pub epoch: Option<i64>,
    /// A Git context's commit.
    pub git_commit: Option<String>,
    /// A context fetched or unpacked into a temporary directory lives as long as this.
    _tmp: Option<tempfile::TempDir>,
}

impl BuildSource {
    pub async fn read(plan: &BuildPlan) -> Result<BuildSource> {
        let mut git_commit = None;
        let (context_dir, tmp, stdin_dockerfile) = if plan.remote {
            let tmp = tempfile::tempdir().map_err(|e| Failure::build(format!("error: {e}")))?;
            let fetched = crate::remote_context::fetch(&plan.context, tmp.path())
                .await
                .map_err(|e| Failure::build(format!("error: build context: {e}")))?;
            git_commit = fetched.commit;
            (fetched.context, Some(tmp), fetched.dockerfile)
        } else {
            local_context(&plan.context)?
        };
        let (dockerfile_path, dockerfile) = match (&plan.dockerfile, stdin_dockerfile) {
            (DockerfileSpec::Stdin, _) => {
                use std::io::Read;
                let mut s = Vec::new();
                std::io::stdin()
                    .take(MAX_DOCKERFILE + 1)
                    .read_to_end(&mut s)
                    .map_err(|e| Failure::build(format!("error: reading the Dockerfile from stdin: {e}")))?;
                if s.len() as u64 > MAX_DOCKERFILE {
                    return Err(Failure::build(format!(
                        "error: the Dockerfile on stdin is larger than {MAX_DOCKERFILE} bytes"
                    )));
                }
                (PathBuf::from("Dockerfile"), s)
            }
            (_, Some(d)) => (PathBuf::from("Dockerfile"), d),
            (DockerfileSpec::Path(file), None) => {
                let p = match file {
                    // With a remote context, -f names a file in it (as buildx).
                    Some(f) if plan.remote && !f.starts_with('/') => context_dir.join(f),
                    Some(f) => PathBuf::from(f),
                    None => context_dir.join("Dockerfile"),
                };
                let bytes = match read_confined(&p, &context_dir, MAX_DOCKERFILE) {
                    Ok(Some(b)) => b,
                    Ok(None) => {
                        return Err(Failure::build(format!(
                            "error: cannot read the Dockerfile {}: no such file (symlinks are followed only inside its directory or the context)",
                            p.display()
                        )))
                    }
                    Err(e) => {
                        return Err(Failure::build(format!("error: cannot read the Dockerfile {}: {e}", p.display())))
                    }
                };
                (p, bytes)
            }
        };
        let epoch = match plan.epoch {
            None => None,
            Some(EpochSpec::Seconds(s)) => Some(s),
            Some(EpochSpec::Git) => Some(git_commit_time(&context_dir)?),
        };
        Ok(BuildSource { context_dir, dockerfile_path, dockerfile, epoch, git_commit, _tmp: tmp })
    }
}

/// A context directory, or `-`: a tarball (or a lone Dockerfile) on standard input.
fn local_context(spec: &str) -> Result<(PathBuf, Option<tempfile::TempDir>, Option<Vec<u8>>)> {
    if spec != "-" {
        let p = PathBuf::from(spec);
        if !p.is_dir() {
            return Err(Failure::build(format!("error: build context {spec:?} is not a directory")));
        }
        let p = std::fs::canonicalize(&p).map_err(|e| Failure::build(format!("error: build context {spec}: {e}")))?;
        return Ok((p, None, None));
    }
    use std::io::Read;
    let mut data = Vec::new();
    std::io::stdin()
        .read_to_end(&mut data)
        .map_err(|e| Failure::build(format!("error: reading the context from stdin: {e}")))?;
    let tmp = tempfile::tempdir().map_err(|e| Failure::build(format!("error: {e}")))?;
    let is_tar = data.len() > 262 && &data[257..262] == b"ustar"
        || data.starts_with(&[0x1f, 0x8b])
        || data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    if !is_tar {
        // A Dockerfile alone, with an empty context.
        return Ok((tmp.path().to_path_buf(), Some(tmp), Some(data)));
    }
    let bad = |e: &dyn std::fmt::Display| Failure::build(format!("error: context from stdin: {e}"));
    let reader = strata_executor::unpack::open_decompressed(&data[..]).map_err(|e| bad(&e))?;
    let mut ar = tar::Archive::new(reader);
    for entry in ar.entries().map_err(|e| bad(&e))? {
        let mut entry = entry.map_err(|e| bad(&e))?;
        // unpack_in refuses paths that leave the directory.
        entry.unpack_in(tmp.path()).map_err(|e| bad(&e))?;
    }
    Ok((tmp.path().to_path_buf(), Some(tmp), None))
}

/// `--source-date-epoch=git`: the time of the context's last commit.
fn git_commit_time(context: &Path) -> Result<i64> {
    let out = std::process::Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(context)
        .output()
        .map_err(|e| Failure::build(format!("error: --source-date-epoch=git: cannot run git: {e}")))?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    s.parse::<i64>()
        .map_err(|_| Failure::build(format!("error: --source-date-epoch=git: {} has no git commit", context.display())))
}

/// Read the file at `path`, with symlinks resolved inside the context (when `path` is
/// in it) or else inside the file's own directory, as BuildKit reads a Dockerfile from
/// its directory: a context's `Dockerfile -> /root/.docker/config.json` is not found.
pub fn read_confined(path: &Path, context_dir: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let (dir, rel) = match path.strip_prefix(context_dir) {
        Ok(rel) => (context_dir.to_path_buf(), rel.to_path_buf()),
        Err(_) => match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => {
                let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
                (parent.to_path_buf(), PathBuf::from(name))
            }
            _ => return Ok(None),
        },
    };
    strata_executor::root::read_file_in(&dir, &rel.to_string_lossy(), max)
}
