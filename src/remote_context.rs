//! Build contexts named by URL, as `docker buildx build URL` takes them:
//!
//! - a Git repository — `https://host/repo.git`, `git@host:repo.git`, `git://…`,
//!   `ssh://…`, `github.com/owner/repo` — with an optional `#REF` and `#REF:SUBDIR`
//!   (a branch, a tag or a commit); cloned with the `git` command (its credentials and
//!   configuration apply), shallow where the server allows, without its `.git`;
//! - an `http(s)://` URL of a tarball (plain, gzip, bzip2, xz or zstd), unpacked as
//!   the context, or of anything else, taken as the Dockerfile of an empty context.
//!
//! Downloads stream to a temporary file (bounded memory); tar entries cannot leave
//! the context directory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a remote context gave: the context directory (inside `dir`), and a Dockerfile
/// when the URL named one alone.
pub struct Fetched {
    pub context: PathBuf,
    pub dockerfile: Option<Vec<u8>>,
    /// A Git context's commit (provenance records it).
    pub commit: Option<String>,
}

/// Is `s` a URL or Git address rather than a local path?
pub fn is_remote(s: &str) -> bool {
    s.contains("://") || s.starts_with("git@") || s.starts_with("github.com/")
}

/// A Git address (as BuildKit's `IsGitURL`), else None. Returns (url, ref, subdir).
fn git_parts(s: &str) -> Option<(String, Option<String>, Option<String>)> {
    let (url, fragment) = match s.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (s, None),
    };
    let is_git = url.starts_with("git@")
        || url.starts_with("git://")
        || url.starts_with("ssh://")
        || url.starts_with("github.com/")
        || ((url.starts_with("https://") || url.starts_with("http://"))
            && (url.ends_with(".git") || fragment.is_some()));
    if !is_git {
        return None;
    }
    let url = if url.starts_with("github.com/") { format!("https://{url}") } else { url.to_string() };
    let (reference, subdir) = match fragment {
        Some(f) => match f.split_once(':') {
            Some((r, d)) => {
                (Some(r.to_string()).filter(|r| !r.is_empty()), Some(d.to_string()).filter(|d| !d.is_empty()))
            }
            None => (Some(f.to_string()).filter(|r| !r.is_empty()), None),
        },
        None => (None, None),
    };
    Some((url, reference, subdir))
}

fn git(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| format!("cannot run git: {e} (install git: apt-get install git)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Clone `url` at `reference` into `dir`; a shallow fetch first, a full one when the
/// server cannot do shallow (dumb HTTP) or the ref is not advertised.
fn clone_git(url: &str, reference: Option<&str>, dir: &Path) -> Result<(), String> {
    git(dir, &["init", "-q"])?;
    git(dir, &["remote", "add", "origin", url])?;
    let wanted = reference.unwrap_or("HEAD");
    let shallow = git(dir, &["fetch", "-q", "--depth", "1", "origin", wanted]);
    if shallow.is_err() {
        if let Err(e) = git(dir, &["fetch", "-q", "origin", wanted]) {
            // A commit that no ref advertises: fetch everything, then look it up.
            git(dir, &["fetch", "-q", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*"])
                .map_err(|_| format!("git fetch {url} {wanted}: {e}"))?;
            git(dir, &["checkout", "-q", "--detach", wanted]).map_err(|_| format!("git fetch {url} {wanted}: {e}"))?;
            return git(dir, &["submodule", "update", "-q", "--init", "--recursive", "--depth", "1"])
                .or_else(|_| git(dir, &["submodule", "update", "-q", "--init", "--recursive"]));
        }
    }
    git(dir, &["checkout", "-q", "--detach", "FETCH_HEAD"])?;
    git(dir, &["submodule", "update", "-q", "--init", "--recursive", "--depth", "1"])
        .or_else(|_| git(dir, &["submodule", "update", "-q", "--init", "--recursive"]))
}

/// GET `url` (https with the system's roots, or plain http) and check that it answered
/// with success; the error starts with the URL.
pub async fn http_get(url: &str) -> Result<reqwest::Response, String> {
    strata_oci::registry::transport::install_tls_provider();
    let client = reqwest::Client::builder()
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("{url}: {e}"))?;
    let response = client.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    Ok(response)
}

/// Bring the context named by `spec` into `dir` (an empty temporary directory).
pub async fn fetch(spec: &str, dir: &Path) -> Result<Fetched, String> {
    if let Some((url, reference, subdir)) = git_parts(spec) {
        let checkout = dir.join("git");
        std::fs::create_dir(&checkout).map_err(|e| format!("{}: {e}", checkout.display()))?;
        let (url2, reference2, checkout2) = (url.clone(), reference.clone(), checkout.clone());
        tokio::task::spawn_blocking(move || clone_git(&url2, reference2.as_deref(), &checkout2))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cloning {url}: {e}"))?;
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&checkout)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        // BuildKit's git source leaves .git out of the context.
        let _ = std::fs::remove_dir_all(checkout.join(".git"));
        let context = match &subdir {
            // Resolved inside the checkout: a repository's symlink never leads to the host.
            Some(d) => match strata_executor::root::dir_in(&checkout, d) {
                Ok(Some(p)) => p,
                Ok(None) => return Err(format!("{spec}: {d} is not a directory of the repository")),
                Err(e) => return Err(format!("{spec}: {d}: {e}")),
            },
            None => checkout,
        };
        return Ok(Fetched { context, dockerfile: None, commit });
    }
    if !(spec.starts_with("https://") || spec.starts_with("http://")) {
        return Err(format!("{spec}: unsupported URL scheme (https://, http://, git@, git://, ssh://)"));
    }
    let download = dir.join("download");
    let mut response = http_get(spec).await.map_err(|e| format!("downloading {e}"))?;
    let mut file = std::fs::File::create(&download).map_err(|e| format!("{}: {e}", download.display()))?;
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("downloading {spec}: {e}"))? {
        file.write_all(&chunk).map_err(|e| format!("{}: {e}", download.display()))?;
    }
    drop(file);
    let context = dir.join("context");
    std::fs::create_dir(&context).map_err(|e| format!("{}: {e}", context.display()))?;
    let (download2, context2) = (download.clone(), context.clone());
    let unpacked = tokio::task::spawn_blocking(move || unpack_if_archive(&download2, &context2))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{spec}: {e}"))?;
    if unpacked {
        let _ = std::fs::remove_file(&download);
        return Ok(Fetched { context, dockerfile: None, commit: None });
    }
    // Not an archive: the Dockerfile itself, with an empty context.
    let dockerfile = std::fs::read(&download).map_err(|e| format!("{}: {e}", download.display()))?;
    let _ = std::fs::remove_file(&download);
    Ok(Fetched { context, dockerfile: Some(dockerfile), commit: None })
}

/// Unpack `file` into `dest` when it is a (possibly compressed) tar; false when not.
pub fn unpack_if_archive(file: &Path, dest: &Path) -> Result<bool, String> {
    let mut head = [0u8; 512];
    let n = {
        let mut f = std::fs::File::open(file).map_err(|e| e.to_string())?;
        let mut n = 0;
        while n < head.len() {
            let k = f.read(&mut head[n..]).map_err(|e| e.to_string())?;
            if k == 0 {
                break;
            }
            n += k;
        }
        n
    };
    let head = &head[..n];
    let compressed = head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(b"BZh")
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]);
    let plain_tar = head.len() > 262 && &head[257..262] == b"ustar";
    if !compressed && !plain_tar {
        return Ok(false);
    }
    let f = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let reader = strata_executor::unpack::open_decompressed(std::io::BufReader::new(f)).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(|e| format!("reading the archive: {e}"))? {
        let mut entry = entry.map_err(|e| format!("reading the archive: {e}"))?;
        // unpack_in refuses paths that leave the directory.
        entry.unpack_in(dest).map_err(|e| format!("unpacking the archive: {e}"))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_addresses_are_told_from_urls() {
        assert_eq!(
            git_parts("https://example.com/r.git#v1:sub/dir"),
            Some(("https://example.com/r.git".into(), Some("v1".into()), Some("sub/dir".into())))
        );
        assert_eq!(git_parts("github.com/o/r"), Some(("https://github.com/o/r".into(), None, None)));
        assert_eq!(git_parts("git@host:o/r.git#main"), Some(("git@host:o/r.git".into(), Some("main".into()), None)));
        assert_eq!(git_parts("https://example.com/r#:docs").map(|p| p.2), Some(Some("docs".into())));
        assert_eq!(git_parts("https://example.com/ctx.tar.gz"), None);
        assert!(is_remote("https://example.com/ctx.tar.gz") && is_remote("git@h:r") && !is_remote("./dir"));
    }
}
