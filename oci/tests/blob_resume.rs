//! Interrupted downloads, against the real plain-HTTP rig registry behind a small
//! fault-injecting TCP relay on loopback: the relay cuts connections mid-blob, and can
//! strip `Range` headers to play a server that does not support them.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{assert_blob_ok, isolated_options, Rig};
use strata_oci::reference::Reference;
use strata_oci::registry::RegistryClient;
use strata_oci::store::BlobStore;

#[derive(Default)]
struct Counters {
    cuts_left: AtomicUsize,
    ranges_seen: AtomicUsize,
    downstream_bytes: AtomicU64,
    stop: AtomicBool,
}

struct Relay {
    addr: String,
    counters: Arc<Counters>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.counters.stop.store(true, Ordering::SeqCst);
    }
}

/// Remove `Range:` header lines from a request head (case-insensitive).
fn strip_range(buf: &[u8]) -> (Vec<u8>, bool) {
    let text = String::from_utf8_lossy(buf);
    let lower = text.to_ascii_lowercase();
    match lower.find("\r\nrange:") {
        Some(i) => {
            let end = lower[i + 2..].find("\r\n").map(|j| i + 2 + j).unwrap_or(lower.len());
            let mut out = buf[..i].to_vec();
            out.extend_from_slice(&buf[end..]);
            (out, true)
        }
        None => (buf.to_vec(), false),
    }
}

/// Relay 127.0.0.1:RANDOM → `upstream`. A connection that has carried more than
/// `cut_after` bytes downstream is cut (both ways) while `cuts` remain.
fn start_relay(upstream: &str, cut_after: u64, cuts: usize, remove_range: bool) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let counters = Arc::new(Counters { cuts_left: AtomicUsize::new(cuts), ..Default::default() });
    let c = counters.clone();
    let upstream = upstream.to_string();
    thread::spawn(move || {
        // Bounded: stops when the relay is dropped, or after 2 minutes at most.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !c.stop.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            let (client, _) = match listener.accept() {
                Ok(x) => x,
                Err(_) => {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            client.set_nonblocking(false).unwrap();
            let server = TcpStream::connect(&upstream).unwrap();
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let up = c.clone();
            thread::spawn(move || {
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    let n = match c_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let (data, had_range) =
                        if remove_range { strip_range(&buf[..n]) } else { (buf[..n].to_vec(), false) };
                    let seen = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase().contains("\r\nrange: bytes=");
                    if seen || had_range {
                        up.ranges_seen.fetch_add(1, Ordering::SeqCst);
                    }
                    if s_out.write_all(&data).is_err() {
                        break;
                    }
                }
                let _ = s_out.shutdown(Shutdown::Write);
            });
            let down = c.clone();
            let (mut s_in, mut c_out) = (server, client);
            thread::spawn(move || {
                let mut buf = vec![0u8; 16 << 10];
                let mut carried = 0u64;
                loop {
                    let n = match s_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if carried + n as u64 > cut_after
                        && down.cuts_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| k.checked_sub(1)).is_ok()
                    {
                        let _ = c_out.shutdown(Shutdown::Both);
                        let _ = s_in.shutdown(Shutdown::Both);
                        return;
                    }
                    carried += n as u64;
                    down.downstream_bytes.fetch_add(n as u64, Ordering::SeqCst);
                    if c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = c_out.shutdown(Shutdown::Write);
            });
        }
    });
    Relay { addr, counters }
}

#[tokio::test]
async fn interrupted_download_resumes_with_range() {
    let Some(rig) = Rig::load("interrupted_download_resumes_with_range") else { return };
    let relay = start_relay(rig.plain(), 300_000, 2, false);
    let cfg = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let client = RegistryClient::new(isolated_options(cfg.path())).unwrap();
    let r: Reference = format!("{}/library/busybox:latest", relay.addr).parse().unwrap();
    let img = client.pull_image(&r, &"linux/amd64".parse().unwrap(), &store).await.unwrap();
    let layer = &img.manifest.layers[0];
    assert_blob_ok(&store, &layer.digest);
    assert_eq!(relay.counters.cuts_left.load(Ordering::SeqCst), 0, "both cuts happened");
    assert!(relay.counters.ranges_seen.load(Ordering::SeqCst) >= 2, "resumed with Range requests");
    let carried = relay.counters.downstream_bytes.load(Ordering::SeqCst);
    assert!(carried < layer.size + 100_000, "resumed, not restarted: {carried} bytes for a {}-byte layer", layer.size);
    assert_eq!(std::fs::read_dir(s.path().join("tmp")).unwrap().count(), 0);
}

#[tokio::test]
async fn server_ignoring_range_makes_download_restart() {
    let Some(rig) = Rig::load("server_ignoring_range_makes_download_restart") else { return };
    let relay = start_relay(rig.plain(), 300_000, 1, true);
    let cfg = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let client = RegistryClient::new(isolated_options(cfg.path())).unwrap();
    let r: Reference = format!("{}/library/busybox:latest", relay.addr).parse().unwrap();
    let img = client.pull_image(&r, &"linux/arm64".parse().unwrap(), &store).await.unwrap();
    let layer = &img.manifest.layers[0];
    assert_blob_ok(&store, &layer.digest);
    assert_eq!(img.config.architecture, "arm64");
    assert!(relay.counters.ranges_seen.load(Ordering::SeqCst) >= 1, "a Range was asked for (and stripped)");
    let carried = relay.counters.downstream_bytes.load(Ordering::SeqCst);
    assert!(carried > layer.size + 200_000, "restarted from zero: {carried} bytes for a {}-byte layer", layer.size);
    assert_eq!(std::fs::read_dir(s.path().join("tmp")).unwrap().count(), 0);
}

#[tokio::test]
async fn endless_interruptions_give_a_clear_error() {
    let Some(rig) = Rig::load("endless_interruptions_give_a_clear_error") else { return };
    // Every connection is cut after 300 kB and Range is stripped: no progress is possible.
    let relay = start_relay(rig.plain(), 300_000, usize::MAX, true);
    let cfg = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let opts = strata_oci::registry::RegistryOptions { max_attempts: 2, ..isolated_options(cfg.path()) };
    let client = RegistryClient::new(opts).unwrap();
    let r: Reference = format!("{}/library/busybox:latest", relay.addr).parse().unwrap();
    let err = client.pull_image(&r, &"linux/amd64".parse().unwrap(), &store).await.unwrap_err();
    eprintln!("{err}");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("pull {r}: ")), "{msg}");
    assert!(msg.contains("kept breaking off") || msg.contains("cannot connect"), "{msg}");
    assert_eq!(std::fs::read_dir(s.path().join("tmp")).unwrap().count(), 0, "no temp file left");
}
