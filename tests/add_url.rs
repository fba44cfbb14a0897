//! `ADD URL` through the binary against a real HTTP server (Python's http.server on
//! loopback): the file arrives named after the URL, mode 0600, its mtime the server's
//! Last-Modified; `--checksum` is verified; an unchanged download reruns nothing.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;

#[test]
fn add_url_downloads_verifies_and_caches() {
    let served = tempfile::tempdir().unwrap();
    std::fs::write(served.path().join("hello.txt"), "hello over http\n").unwrap();
    let mtime = 1_700_000_000;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
    std::fs::File::options().write(true).open(served.path().join("hello.txt")).unwrap().set_modified(t).unwrap();
    let server = HttpServer::start(served.path());
    let url = format!("http://127.0.0.1:{}/hello.txt", server.1);
    let digest = sha256_bytes(b"hello over http\n");

    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM busybox\nADD {url} /dl/\nADD --checksum={digest} {url} /named.txt\nRUN cat /named.txt > /seen\n"),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("rootfs");
    let to_local = format!("type=local,dest={}", dest.display());
    let o = build_with(root.path(), ctx.path(), &["-o", &to_local]);
    assert!(o.status.success(), "{}", text(&o));
    let file = dest.join("dl/hello.txt");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello over http\n");
    let md = std::fs::metadata(&file).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o600, "downloads are 0600, as BuildKit's");
    assert_eq!(md.mtime(), mtime as i64, "the mtime is the server's Last-Modified");
    assert_eq!(std::fs::read_to_string(dest.join("seen")).unwrap(), "hello over http\n");

    // Unchanged: downloaded again (to know), nothing reruns.
    let o = build_with(root.path(), ctx.path(), &["-o", &to_local]);
    let log = text(&o);
    assert!(o.status.success() && log.contains("0 steps run"), "{log}");

    // A wrong checksum fails the build, naming the URL and both digests.
    let wrong = sha256_bytes(b"something else");
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM busybox\nADD --checksum={wrong} {url} /x\n")).unwrap();
    let o = build_with(root.path(), ctx.path(), &[]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains(&url) && log.contains(&wrong) && log.contains(&digest), "{log}");
    assert!(log.contains("Dockerfile:2"), "{log}");
}
