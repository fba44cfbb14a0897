//! `--load`: hand a docker archive to a running Docker daemon through its API
//! (`POST /images/load` on its unix socket), as buildx's docker driver does.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The daemon's socket: `DOCKER_HOST=unix://...` or `/var/run/docker.sock`.
pub fn daemon_socket() -> Result<PathBuf, String> {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => match h.strip_prefix("unix://") {
            Some(p) => Ok(PathBuf::from(p)),
            None => Err(format!("DOCKER_HOST={h}: only unix:// sockets are supported by --load")),
        },
        _ => Ok(PathBuf::from("/var/run/docker.sock")),
    }
}

/// Send the docker archive at `archive` to the daemon at `socket`; returns what the
/// daemon said it loaded (`Loaded image: app:1`).
pub fn load_archive(socket: &Path, archive: &Path) -> Result<Vec<String>, String> {
    let mut file = std::fs::File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let size = file.metadata().map_err(|e| format!("{}: {e}", archive.display()))?.len();
    let mut conn = UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach the Docker daemon at {}: {e}", socket.display()))?;
    let head = format!(
        "POST /images/load?quiet=0 HTTP/1.1\r\nHost: docker\r\nUser-Agent: strata\r\n\
         Content-Type: application/x-tar\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).map_err(|e| format!("sending to the Docker daemon: {e}"))?;
    std::io::copy(&mut file, &mut conn).map_err(|e| format!("sending the image to the Docker daemon: {e}"))?;
    conn.flush().map_err(|e| format!("sending to the Docker daemon: {e}"))?;

    // The answer: a status line, headers, then a (usually chunked) stream of JSON lines.
    let mut reader = BufReader::new(conn.take(64 << 20));
    let mut status = String::new();
    reader.read_line(&mut status).map_err(|e| format!("reading the Docker daemon's answer: {e}"))?;
    let code: u16 = status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(|e| format!("reading the Docker daemon's answer: {e}"))? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).map_err(|e| format!("reading the Docker daemon's answer: {e}"))?;
            let n = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            let mut chunk = vec![0u8; n + 2];
            reader.read_exact(&mut chunk).map_err(|e| format!("reading the Docker daemon's answer: {e}"))?;
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        reader.read_to_end(&mut body).map_err(|e| format!("reading the Docker daemon's answer: {e}"))?;
    }
    let text = String::from_utf8_lossy(&body).to_string();
    if code != 200 {
        return Err(format!("the Docker daemon refused the image (HTTP {code}): {}", text.trim()));
    }
    let mut loaded = Vec::new();
    let stream = serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>();
    for message in stream {
        let message = message.map_err(|e| format!("the Docker daemon's answer {text:?}: {e}"))?;
        if let Some(err) = message.get("error").and_then(|e| e.as_str()) {
            return Err(format!("the Docker daemon could not load the image: {err}"));
        }
        if let Some(s) = message.get("stream").and_then(|s| s.as_str()) {
            loaded.extend(s.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string));
        }
    }
    Ok(loaded)
}
