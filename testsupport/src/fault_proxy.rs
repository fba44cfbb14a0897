//! A fault-injecting proxy on loopback (std threads and sockets), between strata and
//! a real registry.
//!
//! [`Proxy::http`] reads HTTP/1.1 requests, one per connection (it forwards them with
//! `Connection: close`), and asks a plan what to do with each: pass it, drop it, cut its
//! body after some bytes, answer a status itself, or lose the registry's answer. Bytes
//! that are not HTTP (a TLS handshake: strata tries HTTPS first on loopback) are relayed
//! unchanged. [`Proxy::raw`] relays every connection as bytes, counted.
//! [`Proxy::cutting`] relays bytes too, but cuts connections mid-transfer the way bad
//! networks do (NAT timeouts, proxies): the first connections that carry more than a
//! number of bytes in one direction are closed there, the rest pass.
//!
//! The proxy stops when dropped (or after five minutes).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What the proxy does to one HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Close the connection after reading the request head; nothing reaches the registry.
    DropRequest,
    /// Forward the head and this many body bytes, then cut both connections.
    CutBody(u64),
    /// Read the whole request and answer this status (`Retry-After: 0`) without asking
    /// the registry.
    Respond(u16),
    /// The same, asking for a wait of this many seconds (`Retry-After: N`).
    RespondRetryAfter(u16, u32),
    /// Forward the request; throw the registry's answer away and close.
    DropResponse,
}

/// A request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub fault: Fault,
}

/// What to do with a request, given how many earlier requests had its method.
pub type Plan = Arc<dyn Fn(&Seen, usize) -> Fault + Send + Sync>;

/// What went through the proxy.
#[derive(Default)]
pub struct Stats {
    seen: Mutex<Vec<Seen>>,
    /// Bytes the client sent (raw connections: everything; HTTP: heads and bodies).
    pub bytes_up: AtomicU64,
    /// Connections that did not start with an HTTP request line (TLS), or every
    /// connection of a raw proxy.
    pub raw_connections: AtomicUsize,
    /// Connections a cutting proxy closed mid-transfer.
    pub cuts: AtomicUsize,
    stop: AtomicBool,
}

impl Stats {
    /// Every request seen, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// Requests with this method.
    pub fn count(&self, method: &str) -> usize {
        self.seen().iter().filter(|s| s.method == method).count()
    }
    /// The requests a fault was injected into: (method, fault).
    pub fn faults(&self) -> Vec<(String, Fault)> {
        self.seen().into_iter().filter(|s| s.fault != Fault::Pass).map(|s| (s.method, s.fault)).collect()
    }
    /// Forget what was seen.
    pub fn clear(&self) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// A running proxy: `addr` (`127.0.0.1:PORT`) leads to the upstream.
pub struct Proxy {
    pub addr: String,
    pub stats: Arc<Stats>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stats.stop.store(true, Ordering::SeqCst);
    }
}

/// Which way [`Proxy::cutting`] counts the bytes of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → server (uploads).
    Up,
    /// Server → client (downloads).
    Down,
}

/// Where [`Proxy::cutting`] cuts.
#[derive(Debug, Clone)]
pub struct Cuts {
    pub direction: Direction,
    /// The connections to cut, in order: the k-th connection that carries more than
    /// `after[k]` bytes is closed at that byte. Connections after the last cut pass.
    pub after: Vec<u64>,
    /// Instead: cut every connection after this many bytes, for ever.
    pub always: Option<u64>,
}

impl Proxy {
    /// A byte relay to `upstream` that cuts connections as `cuts` says; how many were
    /// cut is in `stats.cuts`.
    pub fn cutting(upstream: &str, cuts: Cuts) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the listener's address").to_string();
        let stats = Arc::new(Stats::default());
        let (st, upstream) = (stats.clone(), upstream.to_string());
        let cuts = Arc::new(cuts);
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            while !st.stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (st, cuts, upstream) = (st.clone(), cuts.clone(), upstream.clone());
                        thread::spawn(move || {
                            if client.set_nonblocking(false).is_ok() {
                                cutting_relay(client, &upstream, &cuts, &st);
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { addr, stats }
    }

    /// An HTTP proxy to `upstream` that applies `plan` to every request.
    pub fn http(upstream: &str, plan: impl Fn(&Seen, usize) -> Fault + Send + Sync + 'static) -> Proxy {
        start(upstream, Some(Arc::new(plan)))
    }

    /// A byte relay to `upstream` (counted, no faults).
    pub fn raw(upstream: &str) -> Proxy {
        start(upstream, None)
    }
}

fn start(upstream: &str, plan: Option<Plan>) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.set_nonblocking(true).expect("a non-blocking listener");
    let addr = listener.local_addr().expect("the listener's address").to_string();
    let stats = Arc::new(Stats::default());
    let (st, upstream) = (stats.clone(), upstream.to_string());
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !st.stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            match listener.accept() {
                Ok((client, _)) => {
                    let (st, plan, upstream) = (st.clone(), plan.clone(), upstream.clone());
                    thread::spawn(move || {
                        if client.set_nonblocking(false).is_err() {
                            return;
                        }
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
    let (Ok(mut c_in), Ok(mut s_out)) = (client.try_clone(), server.try_clone()) else { return };
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
    let _ = client.set_read_timeout(Some(Duration::from_secs(60)));
    // The request head.
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
    let head_text = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head_text.split("\r\n");
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
    let mut seen = Seen { method, target, content_length, chunked, fault: Fault::Pass };
    let fault = {
        let mut all = stats.seen.lock().unwrap_or_else(|p| p.into_inner());
        let n = all.iter().filter(|s| s.method == seen.method).count();
        seen.fault = plan(&seen, n);
        all.push(seen.clone());
        seen.fault
    };
    // Body bytes after the head (None: until the client stops sending).
    let body_len = content_length.or(if chunked { None } else { Some(0) });

    match fault {
        Fault::DropRequest => {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        Fault::Respond(_) | Fault::RespondRetryAfter(..) => {
            let (code, wait) = match fault {
                Fault::RespondRetryAfter(code, wait) => (code, wait),
                Fault::Respond(code) => (code, 0),
                _ => (500, 0),
            };
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
                format!(
                    "HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nRetry-After: {wait}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            );
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        Fault::Pass | Fault::CutBody(_) | Fault::DropResponse => {}
    }
    let Ok(mut server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = server.set_read_timeout(Some(Duration::from_secs(120)));
    let mut head = kept.join("\r\n");
    head.push_str("\r\nConnection: close\r\n\r\n");
    if server.write_all(head.as_bytes()).is_err() {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    // Client → registry: the body, cut short if the plan says so.
    let clones = (client.try_clone(), server.try_clone(), client.try_clone(), server.try_clone());
    let (Ok(mut c_in), Ok(mut s_out), Ok(c_cut), Ok(s_cut)) = clones else { return };
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
    // Registry → client: the answer, unless it is to be lost.
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if fault == Fault::DropResponse {
                    continue;
                }
                if client.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    let _ = up.join();
}

/// Relay one connection, cutting it where the next cut of `cuts` says.
fn cutting_relay(client: TcpStream, upstream: &str, cuts: &Cuts, stats: &Arc<Stats>) {
    stats.raw_connections.fetch_add(1, Ordering::SeqCst);
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    // The threshold of this connection: read when its bytes cross it (so connections
    // that stay small do not use up a cut).
    let threshold = move |stats: &Stats| -> Option<u64> {
        cuts.always.or_else(|| cuts.after.get(stats.cuts.load(Ordering::SeqCst)).copied())
    };
    let (Ok(c_in), Ok(s_out), Ok(c_cut), Ok(s_cut)) =
        (client.try_clone(), server.try_clone(), client.try_clone(), server.try_clone())
    else {
        return;
    };
    let cut_both = move || {
        let _ = c_cut.shutdown(Shutdown::Both);
        let _ = s_cut.shutdown(Shutdown::Both);
    };
    // One pump per direction; the counted one may cut.
    let pump = |mut from: TcpStream, mut to: TcpStream, counted: bool, stats: Arc<Stats>, cut: &dyn Fn()| {
        let mut buf = vec![0u8; 16 << 10];
        let mut moved = 0u64;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if counted {
                if let Some(limit) = threshold(&stats) {
                    if moved + n as u64 > limit {
                        let keep = (limit - moved.min(limit)) as usize;
                        let _ = to.write_all(&buf[..keep]);
                        stats.cuts.fetch_add(1, Ordering::SeqCst);
                        // Let the other side read what it got before the connection goes.
                        thread::sleep(Duration::from_millis(20));
                        cut();
                        return;
                    }
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            moved += n as u64;
            if cuts.direction == Direction::Up && counted {
                stats.bytes_up.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    };
    let up_stats = stats.clone();
    let down_stats = stats.clone();
    thread::scope(|scope| {
        scope.spawn(|| pump(c_in, s_out, cuts.direction == Direction::Up, up_stats, &cut_both));
        let (Ok(s_in), Ok(c_out)) = (server.try_clone(), client.try_clone()) else { return };
        pump(s_in, c_out, cuts.direction == Direction::Down, down_stats, &cut_both);
    });
    let _ = server.shutdown(Shutdown::Both);
    let _ = client.shutdown(Shutdown::Both);
}
