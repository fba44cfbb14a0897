//! Pushes through the strata binary with a proxy written here (std threads and sockets)
//! between strata and the registries of the test environment: a push that meets dropped
//! connections in the middle of blob bodies, 500s and 429s still completes, with the same
//! manifest as a push without faults and every blob intact in the registry; a push with a
//! wrong password fails with exit code 1, naming the registry and the reference, before
//! any blob is sent.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

// ---------------------------------------------------------------------------------------
// A proxy on loopback

/// What the proxy does to one HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Pass,
    /// Forward the head and this many body bytes, then close both connections.
    CutBody(u64),
    /// Read the whole request, answer this status (`Retry-After: 0`) without asking the
    /// registry.
    Respond(u16),
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    content_length: Option<u64>,
    fault: Fault,
}

type Plan = Arc<dyn Fn(&Seen, usize) -> Fault + Send + Sync>;

#[derive(Default)]
struct Stats {
    seen: Mutex<Vec<Seen>>,
    /// Bytes the client sent (raw mode: everything; HTTP mode: heads and bodies).
    bytes_up: AtomicU64,
    /// Connections that did not start with an HTTP request line (TLS).
    raw_connections: AtomicUsize,
    stop: AtomicBool,
}

impl Stats {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

struct Proxy {
    addr: String,
    stats: Arc<Stats>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stats.stop.store(true, Ordering::SeqCst);
    }
}

/// A proxy 127.0.0.1:RANDOM → `upstream`. With a plan it reads HTTP/1.1 requests (one per
/// connection: it forwards `Connection: close`) and applies `plan(request, number of
/// earlier requests with that method)`; bytes that are not HTTP (a TLS handshake: strata
/// tries HTTPS first on loopback) are relayed unchanged. Without a plan every connection
/// is relayed as raw bytes, counted.
fn start_proxy(upstream: &str, plan: Option<Plan>) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stats = Arc::new(Stats::default());
    let (st, upstream) = (stats.clone(), upstream.to_string());
    thread::spawn(move || {
        // Ends when the proxy is dropped, or after 5 minutes.
        let deadline = Instant::now() + Duration::from_secs(300);
        while !st.stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            match listener.accept() {
                Ok((client, _)) => {
                    let (st, plan, upstream) = (st.clone(), plan.clone(), upstream.clone());
                    thread::spawn(move || {
                        client.set_nonblocking(false).unwrap();
                        match plan {
                            Some(plan) => http_one(client, &upstream, &plan, st),
                            None => raw_relay(client, &upstream, Vec::new(), st),
                        }
                    });
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Proxy { addr, stats }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Relay bytes both ways until either side closes, `first` (from the client) first.
fn raw_relay(mut client: TcpStream, upstream: &str, first: Vec<u8>, stats: Arc<Stats>) {
    stats.raw_connections.fetch_add(1, Ordering::SeqCst);
    let Ok(mut server) = TcpStream::connect(upstream) else { return };
    stats.bytes_up.fetch_add(first.len() as u64, Ordering::SeqCst);
    if server.write_all(&first).is_err() {
        return;
    }
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = c_in.read(&mut buf) {
            // Counted before the registry can see (and answer) them.
            stats.bytes_up.fetch_add(n as u64, Ordering::SeqCst);
            if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s_out.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.join();
}

fn http_one(mut client: TcpStream, upstream: &str, plan: &Plan, stats: Arc<Stats>) {
    client.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = Vec::new();
    let mut piece = vec![0u8; 16 << 10];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        match client.read(&mut piece) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&piece[..n]),
        }
        if !buf[0].is_ascii_uppercase() {
            return raw_relay(client, upstream, buf, stats);
        }
    };
    let rest = buf.split_off(head_end);
    stats.bytes_up.fetch_add(buf.len() as u64, Ordering::SeqCst);
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut content_length = None;
    let mut chunked = false;
    let mut kept = vec![request_line];
    for l in lines.filter(|l| !l.is_empty()) {
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse::<u64>().ok();
        }
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
        if !lower.starts_with("connection:") {
            kept.push(l);
        }
    }
    let mut seen = Seen { method, target, content_length, fault: Fault::Pass };
    let fault = {
        let mut all = stats.seen.lock().unwrap();
        let n = all.iter().filter(|s| s.method == seen.method).count();
        seen.fault = plan(&seen, n);
        all.push(seen.clone());
        seen.fault
    };
    // Body bytes after the head (None: until the client stops sending).
    let body_len = content_length.or(if chunked { None } else { Some(0) });

    if let Fault::Respond(code) = fault {
        if let Some(total) = body_len {
            let mut left = total.saturating_sub(rest.len() as u64);
            while left > 0 {
                match client.read(&mut piece[..(left.min(16 << 10)) as usize]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => left -= n as u64,
                }
            }
        }
        let reason = if code == 429 { "Too Many Requests" } else { "Injected Fault" };
        let _ = client.write_all(
            format!("HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nRetry-After: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let mut head = kept.join("\r\n");
    head.push_str("\r\nConnection: close\r\n\r\n");
    if server.write_all(head.as_bytes()).is_err() {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    // Client → registry: the body, cut short if the plan says so.
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (c_cut, s_cut) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let counting = stats.clone();
    let up = thread::spawn(move || {
        let mut sent = 0u64;
        let mut send = |data: &[u8]| -> bool {
            let mut data = data;
            if let Some(total) = body_len {
                data = &data[..data.len().min((total - sent) as usize)];
            }
            if let Fault::CutBody(limit) = fault {
                if sent + data.len() as u64 > limit {
                    counting.bytes_up.fetch_add(limit - sent, Ordering::SeqCst);
                    let _ = s_out.write_all(&data[..(limit - sent) as usize]);
                    // Let the registry read what it got before the connection goes.
                    thread::sleep(Duration::from_millis(50));
                    let _ = s_cut.shutdown(Shutdown::Both);
                    let _ = c_cut.shutdown(Shutdown::Both);
                    return false;
                }
            }
            counting.bytes_up.fetch_add(data.len() as u64, Ordering::SeqCst);
            if s_out.write_all(data).is_err() {
                return false;
            }
            sent += data.len() as u64;
            body_len != Some(sent)
        };
        if body_len == Some(0) || (!rest.is_empty() && !send(&rest)) {
            return;
        }
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match c_in.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !send(&buf[..n]) {
                        break;
                    }
                }
            }
        }
    });
    // Registry → client: the answer.
    server.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let _ = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    let _ = up.join();
}

// ---------------------------------------------------------------------------------------
// Helpers

fn strata_with(root: &Path, global: &[&str], args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(strata_bin());
    // One timestamp for every build: two builds of one context are one image.
    cmd.arg("--root").arg(root).args(global).args(args).env("SOURCE_DATE_EPOCH", "0");
    // No credentials from the user's own docker config.
    cmd.env("DOCKER_CONFIG", "/nonexistent-strata-test-docker-config");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run strata")
}

/// A context: a Dockerfile that copies a file of `noise` random bytes and runs one step.
fn noise_context(noise: u64, seed: u64) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write_noise(&d.path().join("noise.bin"), noise, seed);
    std::fs::write(d.path().join("Dockerfile"), "FROM busybox\nCOPY noise.bin /noise.bin\nRUN echo pushed > /pushed\n")
        .unwrap();
    d
}

fn push_build(
    root: &Path,
    env: &HashMap<String, String>,
    ctx: &Path,
    reference: &str,
    meta: &Path,
    extra_env: &[(&str, &str)],
) -> Output {
    strata_with(
        root,
        &["--tls-ca", &env["RIG_CA"]],
        &[
            "build",
            "--progress=plain",
            "--build-context",
            &busybox_context(env),
            "--push",
            "-t",
            reference,
            "--metadata-file",
            meta.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
        extra_env,
    )
}

fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// The raw manifest of `reference` as skopeo reads it.
fn skopeo_raw(reference: &str, flags: &[String]) -> Output {
    Command::new("skopeo").args(["inspect", "--raw"]).args(flags).arg(format!("docker://{reference}")).output().unwrap()
}

/// GET a blob straight from a plain registry (curl) into `dest`.
fn get_blob(registry: &str, repo: &str, digest: &str, dest: &Path) {
    let o = Command::new("curl")
        .args(["-sSf", "--max-time", "120", "-o"])
        .arg(dest)
        .arg(format!("http://{registry}/v2/{repo}/blobs/{digest}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "GET blob {digest} of {repo}: {}", text(&o));
}

// ---------------------------------------------------------------------------------------

#[test]
fn push_through_a_faulty_proxy_completes_with_the_same_manifest_and_intact_blobs() {
    let Some(env) = test_env() else { return };
    let plain = env["RIG_REGISTRY"].clone();
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // 20 MB of incompressible data: a chunked upload (PATCHes); busybox and the RUN
    // layer and the config: monolithic uploads (a PUT with a body).
    let ctx = noise_context(20_000_000, 0x5eed_f00d);

    let manifest_puts = Arc::new(AtomicUsize::new(0));
    let status_checks = Arc::new(AtomicUsize::new(0));
    let monolithic = Arc::new(AtomicUsize::new(0));
    let (mp, sc, mono) = (manifest_puts.clone(), status_checks.clone(), monolithic.clone());
    let plan: Plan = Arc::new(move |req: &Seen, n: usize| {
        let blob_upload = req.target.contains("/blobs/uploads/");
        match req.method.as_str() {
            // A 429 on a blob check.
            "HEAD" if n == 1 => Fault::Respond(429),
            // 500 and 429 on upload session starts.
            "POST" if n == 0 => Fault::Respond(500),
            "POST" if n == 3 => Fault::Respond(429),
            // The connection drops 1 MiB into the first chunk of the big layer.
            "PATCH" if n == 0 => Fault::CutBody(1 << 20),
            // A 500 for a later chunk (the registry never sees it).
            "PATCH" if n == 2 => Fault::Respond(500),
            // The first status check of an interrupted session fails.
            "GET" if blob_upload && sc.fetch_add(1, Ordering::SeqCst) == 0 => Fault::Respond(503),
            // The first monolithic upload drops halfway through its body.
            "PUT"
                if blob_upload
                    && req.content_length.unwrap_or(0) > 1000
                    && mono.fetch_add(1, Ordering::SeqCst) == 0 =>
            {
                Fault::CutBody(req.content_length.unwrap() / 2)
            }
            // The first manifest PUT gets a 500.
            "PUT" if req.target.contains("/manifests/") && mp.fetch_add(1, Ordering::SeqCst) == 0 => {
                Fault::Respond(500)
            }
            _ => Fault::Pass,
        }
    });
    let proxy = start_proxy(&plain, Some(plan));
    let repo = unique_repo("faulty");
    let through_proxy = format!("{}/{repo}:1", proxy.addr);
    let meta1 = work.path().join("meta1.json");
    let started = Instant::now();
    let o = push_build(root.path(), &env, ctx.path(), &through_proxy, &meta1, &[]);
    let out = text(&o);
    let seen = proxy.stats.seen();
    let faults: Vec<(String, String, Fault)> =
        seen.iter().filter(|s| s.fault != Fault::Pass).map(|s| (s.method.clone(), s.target.clone(), s.fault)).collect();
    eprintln!("push through the proxy: {:?}, {} requests, faults: {faults:#?}", started.elapsed(), seen.len());
    assert!(o.status.success(), "the push through the faulty proxy failed: {out}");
    drop(proxy);

    // The faults did happen, and strata noticed them.
    let has = |method: &str, pred: &dyn Fn(Fault) -> bool| faults.iter().any(|(m, _, f)| m == method && pred(*f));
    assert!(has("PATCH", &|f| matches!(f, Fault::CutBody(_))), "a chunk was cut: {faults:?}");
    assert!(has("PUT", &|f| matches!(f, Fault::CutBody(_))), "a monolithic upload was cut: {faults:?}");
    assert!(has("POST", &|f| f == Fault::Respond(500)) && has("HEAD", &|f| f == Fault::Respond(429)), "{faults:?}");
    assert!(has("PUT", &|f| f == Fault::Respond(500)), "the manifest PUT got a 500: {faults:?}");
    assert!(out.contains("interrupted"), "the progress reports the interrupted uploads: {out}");
    assert!(manifest_puts.load(Ordering::SeqCst) >= 2, "the manifest was sent again after the 500");

    // The same image pushed straight to the registry, without faults.
    let direct_repo = unique_repo("direct");
    let direct = format!("{plain}/{direct_repo}:1");
    let meta2 = work.path().join("meta2.json");
    let o = push_build(root.path(), &env, ctx.path(), &direct, &meta2, &[]);
    assert!(o.status.success(), "direct push: {}", text(&o));
    let (d1, d2) =
        (json_file(&meta1)["containerimage.digest"].clone(), json_file(&meta2)["containerimage.digest"].clone());
    assert_eq!(d1, d2, "the same image either way");
    let flags = vec!["--tls-verify=false".to_string()];
    // Read straight from the registry (not through the proxy).
    let raw_faulty = skopeo_raw(&format!("{plain}/{repo}:1"), &flags);
    assert!(raw_faulty.status.success(), "{}", text(&raw_faulty));
    let raw_direct = skopeo_raw(&direct, &flags);
    assert!(raw_direct.status.success(), "{}", text(&raw_direct));
    assert_eq!(sha256_bytes(&raw_faulty.stdout), d1.as_str().unwrap(), "the faulty push stored the reported manifest");
    assert_eq!(raw_faulty.stdout, raw_direct.stdout, "both pushes stored the same manifest bytes");

    // Every blob of the manifest, fetched from the registry, hashes to its digest.
    let manifest: Value = serde_json::from_slice(&raw_faulty.stdout).unwrap();
    let mut blobs: Vec<&Value> = vec![&manifest["config"]];
    blobs.extend(manifest["layers"].as_array().unwrap());
    assert_eq!(blobs.len(), 4, "config + busybox + COPY + RUN: {manifest}");
    let mut total = 0;
    for b in &blobs {
        let digest = b["digest"].as_str().unwrap();
        let dest = work.path().join(digest.replace(':', "-"));
        get_blob(&plain, &repo, digest, &dest);
        let len = std::fs::metadata(&dest).unwrap().len();
        assert_eq!(Some(len), b["size"].as_u64(), "size of {digest} in the registry");
        assert_eq!(sha256_file(&dest), digest, "content of {digest} in the registry");
        total += len;
        std::fs::remove_file(&dest).unwrap();
    }
    assert!(total > 20_000_000, "{total}");
    // The registry links exactly these blobs to the repository: no partial upload became a blob.
    match registry_storage(&env, &format!("plain-{}", plain.rsplit(':').next().unwrap())) {
        Some(repos) => {
            let layers_dir = repos.join(&repo).join("_layers/sha256");
            let linked: BTreeSet<String> = std::fs::read_dir(&layers_dir)
                .unwrap_or_else(|e| panic!("{}: {e}", layers_dir.display()))
                .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
                .collect();
            let expected: BTreeSet<String> = blobs.iter().map(|b| b["digest"].as_str().unwrap().to_string()).collect();
            assert_eq!(linked, expected, "blobs linked to {repo}");
        }
        None => eprintln!("\n*** SKIPPED PART: the plain registry is not ours: its storage NOT inspected ***\n"),
    }
}

#[test]
fn wrong_password_push_fails_with_exit_1_before_any_blob_is_sent() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // A 2 MB layer: any blob upload would carry at least that much.
    let ctx = noise_context(2_000_000, 0xbad_5eed);
    let user = env["RIG_USER"].as_str();
    let tls = env["RIG_TLS_REGISTRY"].clone();
    let token = env["RIG_TOKEN_REGISTRY"].clone();
    let good_flags = |registry: &str| skopeo_flags(&env, registry, &work.path().join("certs"));
    let port = |r: &str| r.rsplit(':').next().unwrap().to_string();

    let check_failure = |o: &Output, registry: &str, reference: &str| {
        let t = text(o);
        eprintln!("{}", t.lines().filter(|l| l.contains("error")).collect::<Vec<_>>().join("\n"));
        assert_eq!(o.status.code(), Some(1), "exit code: {t}");
        assert!(t.contains("authentication failed"), "{t}");
        assert!(t.contains(reference), "the message names the reference {reference}: {t}");
        assert!(t.contains(&format!("strata login {registry}")), "the message names the registry {registry}: {t}");
        assert!(!t.contains("panicked"), "{t}");
    };

    // 1. TLS + basic auth, straight to the registry.
    let repo = unique_repo("wrongpw-tls");
    let reference = format!("{tls}/{repo}:v1");
    let cfg = docker_config_with(&[(&tls, user, "not-the-password")]);
    let o = push_build(
        root.path(),
        &env,
        ctx.path(),
        &reference,
        &work.path().join("m1.json"),
        &[("DOCKER_CONFIG", cfg.path().to_str().unwrap())],
    );
    check_failure(&o, &tls, &reference);
    let r = skopeo_raw(&reference, &good_flags(&tls));
    assert!(!r.status.success(), "nothing was pushed to {reference}");
    let storage = registry_storage(&env, &format!("tls-{}", port(&tls)));
    match &storage {
        Some(repos) => assert!(!repos.join(&repo).exists(), "the registry has no upload or blob for {repo}"),
        None => eprintln!("\n*** SKIPPED PART: the TLS registry is not ours: its storage NOT inspected ***\n"),
    }

    // 2. TLS + basic auth through a byte-counting TCP relay (the certificate is for
    //    127.0.0.1, whatever the port): what strata sent is far less than one blob.
    let relay = start_proxy(&tls, None);
    let repo = unique_repo("wrongpw-tls-relay");
    let reference = format!("{}/{repo}:v1", relay.addr);
    let cfg = docker_config_with(&[(&relay.addr, user, "not-the-password")]);
    let o = push_build(
        root.path(),
        &env,
        ctx.path(),
        &reference,
        &work.path().join("m2.json"),
        &[("DOCKER_CONFIG", cfg.path().to_str().unwrap())],
    );
    check_failure(&o, &relay.addr, &reference);
    let sent = relay.stats.bytes_up.load(Ordering::SeqCst);
    eprintln!(
        "TLS relay: {sent} bytes from strata in {} connections",
        relay.stats.raw_connections.load(Ordering::SeqCst)
    );
    assert!(relay.stats.raw_connections.load(Ordering::SeqCst) >= 1, "strata went through the relay");
    assert!(sent < 100_000, "{sent} bytes sent: a blob body went out");
    if let Some(repos) = &storage {
        assert!(!repos.join(&repo).exists(), "the registry has no upload or blob for {repo}");
    }
    drop(relay);

    // 3. Token auth through a logging HTTP proxy: no upload request at all.
    let proxy = start_proxy(&token, Some(Arc::new(|_: &Seen, _| Fault::Pass)));
    let repo = unique_repo("wrongpw-token");
    let reference = format!("{}/{repo}:v1", proxy.addr);
    let cfg = docker_config_with(&[(&proxy.addr, user, "not-the-password")]);
    let o = push_build(
        root.path(),
        &env,
        ctx.path(),
        &reference,
        &work.path().join("m3.json"),
        &[("DOCKER_CONFIG", cfg.path().to_str().unwrap())],
    );
    let seen = proxy.stats.seen();
    eprintln!("token proxy saw: {:#?}", seen.iter().map(|s| format!("{} {}", s.method, s.target)).collect::<Vec<_>>());
    check_failure(&o, &proxy.addr, &reference);
    assert!(!seen.is_empty(), "strata went through the proxy");
    let uploads: Vec<&Seen> = seen
        .iter()
        .filter(|s| matches!(s.method.as_str(), "POST" | "PUT" | "PATCH") && s.target.contains("/blobs/"))
        .collect();
    assert!(uploads.is_empty(), "blob upload requests reached the registry: {uploads:?}");
    assert!(seen.iter().all(|s| matches!(s.method.as_str(), "GET" | "HEAD")), "{seen:?}");
    let r = skopeo_raw(&format!("{token}/{repo}:v1"), &good_flags(&token));
    assert!(!r.status.success(), "nothing was pushed to {repo}");
    match registry_storage(&env, &format!("token-{}", port(&token))) {
        Some(repos) => assert!(!repos.join(&repo).exists(), "the registry has no upload or blob for {repo}"),
        None => eprintln!("\n*** SKIPPED PART: the token registry is not ours: its storage NOT inspected ***\n"),
    }

    // The right password through the same proxy works (the failures were the password's).
    let cfg_ok = docker_config_with(&[(&proxy.addr, user, &env["RIG_PASS"])]);
    let o = push_build(
        root.path(),
        &env,
        ctx.path(),
        &reference,
        &work.path().join("m5.json"),
        &[("DOCKER_CONFIG", cfg_ok.path().to_str().unwrap())],
    );
    assert!(o.status.success(), "push with the right password: {}", text(&o));
    let r = skopeo_raw(&format!("{token}/{repo}:v1"), &good_flags(&token));
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(
        sha256_bytes(&r.stdout),
        json_file(&work.path().join("m5.json"))["containerimage.digest"].as_str().unwrap()
    );
}
