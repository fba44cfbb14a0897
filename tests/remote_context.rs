//! Build contexts named by URL: a Git repository (`URL.git#REF:SUBDIR`), a tarball and
//! a Dockerfile alone, served over HTTP by a local server.

mod common;

use std::path::Path;
use std::process::{Child, Command};

use common::*;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `python3 -m http.server` on a free loopback port, serving `dir`.
fn serve(dir: &Path) -> (Server, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("python3")
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    let server = Server(child);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (server, port);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the http server did not start");
}

fn sh(dir: &Path, script: &str) {
    let o = Command::new("sh").arg("-ec").arg(script).current_dir(dir).output().unwrap();
    assert!(o.status.success(), "{script}: {}", text(&o));
}

#[test]
fn git_tarball_and_dockerfile_urls_are_contexts() {
    let Some(env) = test_env() else { return };
    let served = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // A repository whose sub/ holds the Dockerfile; v1 and main differ.
    sh(
        work.path(),
        "git init -q -b main src && cd src && git config user.email t@e && git config user.name t \
         && mkdir sub && printf 'FROM busybox\\nCOPY msg.txt /msg.txt\\n' > sub/Dockerfile \
         && echo v1 > sub/msg.txt && git add -A && git commit -qm one && git tag v1 \
         && echo main > sub/msg.txt && git commit -qam two",
    );
    let bare = served.path().join("repo.git");
    sh(
        work.path(),
        &format!("git clone -q --bare src {} && git -C {} update-server-info", bare.display(), bare.display()),
    );
    // A tarball context and a Dockerfile alone.
    sh(
        work.path(),
        &format!(
            "mkdir tctx && printf 'FROM busybox\\nCOPY data /data\\n' > tctx/Dockerfile && echo tarball > tctx/data \
             && tar -czf {}/ctx.tar.gz -C tctx . && printf 'FROM busybox\\nRUN echo alone > /alone\\n' > {}/Dockerfile.txt",
            served.path().display(),
            served.path().display()
        ),
    );
    let (_server, port) = serve(served.path());
    let bb = busybox_context(&env);
    let root = tempfile::tempdir().unwrap();
    let build = |url: &str, out: &Path| {
        let dest = format!("type=local,dest={}", out.display());
        strata(root.path(), &["build", "--progress=plain", "--build-context", &bb, "-o", &dest, url])
    };
    let cases = [
        (format!("http://127.0.0.1:{port}/repo.git#v1:sub"), "msg.txt", "v1\n"),
        (format!("http://127.0.0.1:{port}/repo.git#main:sub"), "msg.txt", "main\n"),
        (format!("http://127.0.0.1:{port}/ctx.tar.gz"), "data", "tarball\n"),
        (format!("http://127.0.0.1:{port}/Dockerfile.txt"), "alone", "alone\n"),
    ];
    for (i, (url, file, want)) in cases.iter().enumerate() {
        let out = work.path().join(format!("out{i}"));
        let o = build(url, &out);
        assert!(o.status.success(), "{url}: {}", text(&o));
        assert_eq!(std::fs::read_to_string(out.join(file)).unwrap(), *want, "{url}");
    }
    // Errors name the URL: a missing file, a missing ref.
    let o = build(&format!("http://127.0.0.1:{port}/nope.tar"), &work.path().join("x"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("nope.tar") && text(&o).contains("404"), "{}", text(&o));
    let o = build(&format!("http://127.0.0.1:{port}/repo.git#no-such-branch"), &work.path().join("y"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no-such-branch"), "{}", text(&o));
}
