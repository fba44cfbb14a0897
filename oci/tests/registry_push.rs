//! Pushes to the real registries of the rig (plain HTTP, HTTPS with basic auth, Bearer
//! tokens), checked with skopeo as an independent reader: digests kept, blobs skipped on
//! a re-push and mounted across repositories, wrong credentials refused before any
//! upload, and a chunked upload that survives a fault-injecting relay (dropped
//! connections mid-blob, lost answers, 500 and 429).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{isolated_options, Rig};
use strata_oci::digest::Digest;
use strata_oci::image::{Descriptor, Manifest, Platform};
use strata_oci::media;
use strata_oci::reference::Reference;
use strata_oci::registry::{
    Credential, PushEvent, PushOptions, PushReport, RegistryClient, RegistryError, RegistryOptions,
};
use strata_oci::store::BlobStore;
use strata_testsupport::fault_proxy::{Fault, Proxy};

// ---------------------------------------------------------------------------------------
// Helpers

/// A repository name no earlier run used.
fn unique_repo(label: &str) -> String {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("strata-push/{label}-{:x}{:x}{}", std::process::id(), nanos, N.fetch_add(1, Ordering::SeqCst))
}

fn reference(registry: &str, repo: &str, tag: &str) -> Reference {
    format!("{registry}/{repo}:{tag}").parse().unwrap()
}

fn amd64() -> Platform {
    "linux/amd64".parse().unwrap()
}

/// Collects push events.
#[derive(Default, Clone)]
struct Events(Arc<Mutex<Vec<PushEvent>>>);

impl Events {
    fn sink(&self) -> impl Fn(PushEvent) + Send + Sync {
        let v = self.0.clone();
        move |e| v.lock().unwrap().push(e)
    }
    fn all(&self) -> Vec<PushEvent> {
        self.0.lock().unwrap().clone()
    }
}

/// `skopeo inspect --raw` of `r`: the sha256 of the manifest bytes it reads.
fn skopeo_digest(r: &Reference, args: &[&str]) -> Digest {
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg("--raw")
        .args(args)
        .arg(format!("docker://{r}"))
        .output()
        .expect("skopeo is installed (the rig needs it)");
    assert!(out.status.success(), "skopeo inspect --raw {r} failed: {}", String::from_utf8_lossy(&out.stderr));
    Digest::of_bytes(&out.stdout)
}

/// skopeo flags to read from `registry` of the rig (TLS and credentials as needed).
fn skopeo_args(rig: &Rig, registry: &str, cert_dir: &std::path::Path) -> Vec<String> {
    if registry == rig.tls() {
        std::fs::create_dir_all(cert_dir).unwrap();
        std::fs::copy(rig.ca(), cert_dir.join("ca.crt")).unwrap();
        vec![
            "--cert-dir".into(),
            cert_dir.display().to_string(),
            "--creds".into(),
            format!("{}:{}", rig.user(), rig.pass()),
        ]
    } else if registry == rig.token() {
        vec!["--tls-verify=false".into(), "--creds".into(), format!("{}:{}", rig.user(), rig.pass())]
    } else {
        vec!["--tls-verify=false".into()]
    }
}

/// A client that may push to every registry of the rig.
fn push_client(rig: &Rig, cfg: &std::path::Path) -> RegistryClient {
    let opts = RegistryOptions {
        ca_files: vec![rig.ca()],
        credentials: vec![
            (rig.tls().to_string(), Credential::basic(rig.user(), rig.pass())),
            (rig.token().to_string(), Credential::basic(rig.user(), rig.pass())),
        ],
        ..isolated_options(cfg)
    };
    RegistryClient::new(opts).unwrap()
}

fn blob_count(report: &PushReport) -> usize {
    report.blobs_skipped + report.blobs_mounted + report.blobs_uploaded
}

/// Random bytes (xorshift), `left` of them.
struct Noise {
    state: u64,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.copy_from_slice(&self.state.to_le_bytes()[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// An image of one uncompressed layer holding `size` random bytes, written into the
/// store (streamed); returns the manifest descriptor and the layer's descriptor.
fn random_image(store: &BlobStore, size: u64) -> (Descriptor, Descriptor) {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let temp = store.temp_file().unwrap();
    let mut tar = tar::Builder::new(temp);
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, "noise.bin", Noise { state: seed, left: size }).unwrap();
    let mut temp = tar.into_inner().unwrap();
    temp.flush().unwrap();
    let (layer_digest, layer_size) = temp.commit(store, None, None).unwrap();
    let layer = Descriptor::new(media::OCI_LAYER_TAR, layer_digest.clone(), layer_size);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = store.put_bytes(&config_bytes).unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        config: Descriptor::new(media::OCI_CONFIG, config_digest, config_bytes.len() as u64),
        layers: vec![layer.clone()],
        annotations: Default::default(),
    };
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = store.put_bytes(&bytes).unwrap();
    (Descriptor::new(media::OCI_MANIFEST, digest, bytes.len() as u64), layer)
}

// ---------------------------------------------------------------------------------------
// Tests

/// Pull busybox (one platform) from the plain registry into a fresh store.
async fn pulled_busybox(rig: &Rig, store: &BlobStore, cfg: &std::path::Path) -> (Reference, Descriptor, Vec<Digest>) {
    let client = RegistryClient::new(isolated_options(cfg)).unwrap();
    let src: Reference = format!("{}/library/busybox:latest", rig.plain()).parse().unwrap();
    let img = client.pull_image(&src, &amd64(), store).await.unwrap();
    let desc = img.manifest_descriptor(store).unwrap();
    let blobs = std::iter::once(img.config_digest.clone())
        .chain(img.manifest.layers.iter().map(|l| l.digest.clone()))
        .collect();
    (src, desc, blobs)
}

#[tokio::test]
async fn push_busybox_to_every_registry_then_skip_then_mount() {
    let Some(rig) = Rig::load("push_busybox_to_every_registry_then_skip_then_mount") else { return };
    let cfg = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let (src, manifest, blobs) = pulled_busybox(&rig, &store, cfg.path()).await;
    for d in &blobs {
        assert!(store.sources(d).contains(&src.name()), "the pull recorded where {d} came from");
    }
    let blob_bytes: u64 = blobs.iter().map(|d| store.size(d).unwrap()).sum();
    let client = push_client(&rig, cfg.path());
    let opts = PushOptions::default();

    for registry in [rig.plain(), rig.tls(), rig.token()] {
        let skopeo = skopeo_args(&rig, registry, &cfg.path().join("skopeo-certs"));
        let skopeo: Vec<&str> = skopeo.iter().map(String::as_str).collect();

        // First push to a new repository.
        let r1 = reference(registry, &unique_repo("busybox-a"), "v1");
        let events = Events::default();
        let report = client.push_image(&r1, &manifest, &store, &opts, events.sink()).await.unwrap();
        eprintln!("{registry} first push: {report:?}");
        assert_eq!(blob_count(&report), blobs.len(), "{report:?}");
        assert_eq!(report.blobs_skipped, 0);
        if registry == rig.plain() {
            // Same registry as the pull: mounted from library/busybox, nothing uploaded.
            assert_eq!(report.blobs_mounted, blobs.len(), "{report:?}");
            assert_eq!(report.bytes_uploaded, 0);
        } else {
            assert_eq!(report.blobs_uploaded, blobs.len(), "{report:?}");
            assert_eq!(report.bytes_uploaded, blob_bytes);
            let uploaded = events.all().iter().filter(|e| matches!(e, PushEvent::Uploaded { .. })).count();
            assert_eq!(uploaded, blobs.len());
        }
        assert_eq!(report.manifests_pushed, 1);
        assert_eq!(report.tags, ["v1"]);
        assert!(events
            .all()
            .iter()
            .any(|e| matches!(e, PushEvent::ManifestPushed { digest, .. } if *digest == manifest.digest)));
        assert_eq!(skopeo_digest(&r1, &skopeo), manifest.digest, "{r1} holds the same manifest bytes");

        // Again: every blob is skipped after a HEAD.
        let again = client.push_image(&r1, &manifest, &store, &opts, |_| {}).await.unwrap();
        assert_eq!((again.blobs_skipped, again.blobs_mounted, again.blobs_uploaded), (blobs.len(), 0, 0), "{again:?}");
        assert_eq!(again.bytes_uploaded, 0);

        // A second repository of the same registry: mounted from the first.
        let r2 = reference(registry, &unique_repo("busybox-b"), "v2");
        let opts2 = PushOptions { extra_tags: vec!["latest".into(), "v2".into()], ..PushOptions::default() };
        let events = Events::default();
        let mounted = client.push_image(&r2, &manifest, &store, &opts2, events.sink()).await.unwrap();
        eprintln!("{registry} second repository: {mounted:?}");
        assert_eq!(mounted.blobs_mounted, blobs.len(), "{mounted:?}");
        assert_eq!(mounted.bytes_uploaded, 0);
        assert_eq!(mounted.tags, ["v2", "latest"]);
        assert_eq!(mounted.manifests_pushed, 2);
        assert!(events.all().iter().all(|e| !matches!(e, PushEvent::Progress { .. } | PushEvent::Uploaded { .. })));
        assert_eq!(skopeo_digest(&r2, &skopeo), manifest.digest);
        assert_eq!(skopeo_digest(&r2.with_tag("latest").unwrap(), &skopeo), manifest.digest);
    }
}

#[tokio::test]
async fn push_a_whole_index_and_refuse_a_partial_one() {
    let Some(rig) = Rig::load("push_a_whole_index_and_refuse_a_partial_one") else { return };
    let cfg = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let puller = RegistryClient::new(isolated_options(cfg.path())).unwrap();
    let src: Reference = format!("{}/library/busybox:latest", rig.plain()).parse().unwrap();
    let index = puller.resolve(&src).await.unwrap();
    assert!(index.is_index());
    let client = push_client(&rig, cfg.path());
    let target = reference(rig.plain(), &unique_repo("index"), "multi");

    // Only amd64 in the store: the index cannot be pushed whole; nothing is sent.
    puller.pull_image(&src, &amd64(), &store).await.unwrap();
    let err =
        client.push_image(&target, &index.descriptor(), &store, &PushOptions::default(), |_| {}).await.unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, RegistryError::Unpushable { .. }), "{err}");
    assert!(err.to_string().starts_with(&format!("push {target}: cannot push: index {}", index.digest)), "{err}");
    assert!(err.to_string().contains("(linux/arm64)"), "{err}");
    assert!(puller.resolve(&target).await.unwrap_err().is_not_found(), "nothing was pushed");

    // Both platforms: index and manifests go, the index last.
    puller.pull_image(&src, &"linux/arm64".parse().unwrap(), &store).await.unwrap();
    let events = Events::default();
    let report =
        client.push_image(&target, &index.descriptor(), &store, &PushOptions::default(), events.sink()).await.unwrap();
    eprintln!("{report:?}");
    assert_eq!(report.manifests_pushed, 3);
    assert_eq!(blob_count(&report), 4, "two configs, two layers");
    let pushed: Vec<Digest> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            PushEvent::ManifestPushed { digest, .. } => Some(digest),
            _ => None,
        })
        .collect();
    assert_eq!(pushed.last(), Some(&index.digest), "the index goes last");
    assert_eq!(skopeo_digest(&target, &["--tls-verify=false"]), index.digest);
}

#[tokio::test]
async fn wrong_or_missing_credentials_fail_before_any_upload() {
    let Some(rig) = Rig::load("wrong_or_missing_credentials_fail_before_any_upload") else { return };
    let cfg = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let (_, manifest, _) = pulled_busybox(&rig, &store, cfg.path()).await;
    let good = push_client(&rig, cfg.path());
    let no_transfer = |events: &Events| {
        let all = events.all();
        assert!(
            all.iter().all(|e| matches!(e, PushEvent::Skipped { .. })),
            "no blob was mounted, uploaded or sent: {all:?}"
        );
    };

    // HTTPS + basic auth, wrong password: the first HEAD fails.
    let r: Reference = reference(rig.tls(), &unique_repo("wrongpw"), "v1");
    let opts = RegistryOptions {
        ca_files: vec![rig.ca()],
        credentials: vec![(rig.tls().to_string(), Credential::basic(rig.user(), "not-the-password"))],
        ..isolated_options(cfg.path())
    };
    let events = Events::default();
    let err = RegistryClient::new(opts)
        .unwrap()
        .push_image(&r, &manifest, &store, &PushOptions::default(), events.sink())
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, RegistryError::AuthFailed { .. }), "{err}");
    let registry = rig.tls();
    assert_eq!(
        err.to_string(),
        format!("push {r}: authentication failed (401 Unauthorized): check the credentials for {registry} (strata login {registry})")
    );
    no_transfer(&events);
    assert!(good.resolve(&r).await.unwrap_err().is_not_found(), "nothing was pushed to {r}");

    // Bearer tokens, wrong password, through a relay that counts requests: the token
    // request fails; the registry sees no upload request at all.
    let relay = Proxy::http(rig.token(), |_, _| Fault::Pass);
    let r: Reference = reference(&relay.addr, &unique_repo("wrongpw"), "v1");
    let opts = RegistryOptions {
        credentials: vec![(relay.addr.clone(), Credential::basic(rig.user(), "not-the-password"))],
        ..isolated_options(cfg.path())
    };
    let events = Events::default();
    let err = RegistryClient::new(opts)
        .unwrap()
        .push_image(&r, &manifest, &store, &PushOptions::default(), events.sink())
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, RegistryError::AuthFailed { .. }), "{err}");
    assert!(err.to_string().starts_with(&format!("push {r}: authentication failed")), "{err}");
    assert!(err.to_string().contains(&format!("strata login {}", relay.addr)), "{err}");
    no_transfer(&events);
    for m in ["POST", "PATCH", "PUT"] {
        assert_eq!(relay.stats.count(m), 0, "{m} requests reached the registry");
    }

    // No credentials at all for the token registry: pull access only; the upload
    // session is refused, with the advice to log in.
    let relay = Proxy::http(rig.token(), |_, _| Fault::Pass);
    let r: Reference = reference(&relay.addr, &unique_repo("anonymous"), "v1");
    let events = Events::default();
    let err = RegistryClient::new(isolated_options(cfg.path()))
        .unwrap()
        .push_image(&r, &manifest, &store, &PushOptions::default(), events.sink())
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, RegistryError::AuthRequired { .. }), "{err}");
    assert!(err.to_string().contains(&format!("strata login {}", relay.addr)), "{err}");
    no_transfer(&events);
    assert_eq!(relay.stats.count("PATCH") + relay.stats.count("PUT"), 0, "no data was sent");
}

#[tokio::test]
async fn chunked_upload_survives_dropped_connections_and_errors() {
    let Some(rig) = Rig::load("chunked_upload_survives_dropped_connections_and_errors") else { return };
    let cfg = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let (manifest, layer) = random_image(&store, 20 << 20);
    let chunk = 4u64 << 20;
    assert!(layer.size > 5 * chunk, "six chunks");

    let final_puts = Arc::new(AtomicUsize::new(0));
    let status_checks = Arc::new(AtomicUsize::new(0));
    let (fp, sc) = (final_puts.clone(), status_checks.clone());
    let relay = Proxy::http(rig.plain(), move |req, n| {
        let final_put = req.method == "PUT" && req.target.contains("digest=") && req.content_length == Some(0);
        let status_check = req.method == "GET" && req.target.contains("/blobs/uploads/");
        match (req.method.as_str(), n) {
            // 429 on a blob check, 500 on an upload session start.
            ("HEAD", 1) => Fault::Respond(429),
            ("POST", 0) => Fault::Respond(500),
            // Nothing reaches the registry: the session continues where it was.
            ("PATCH", 0) => Fault::DropRequest,
            // Part of a chunk reaches the registry, which then refuses the session.
            ("PATCH", 1) => Fault::CutBody(1 << 20),
            // A 500 without the registry seeing the chunk: continue at the same offset.
            ("PATCH", 3) => Fault::Respond(500),
            // The registry stores the chunk but the answer is lost.
            ("PATCH", 5) => Fault::DropResponse,
            // The first upload status check fails once.
            ("GET", _) if status_check && sc.fetch_add(1, Ordering::SeqCst) == 0 => Fault::Respond(503),
            // The final PUT completes, but its answer is lost.
            ("PUT", _) if final_put && fp.fetch_add(1, Ordering::SeqCst) == 0 => Fault::DropResponse,
            _ => Fault::Pass,
        }
    });
    let opts = RegistryOptions { max_attempts: 4, ..isolated_options(cfg.path()) };
    let client = RegistryClient::new(opts).unwrap();
    let r = reference(&relay.addr, &unique_repo("chunked"), "v1");
    let push_opts = PushOptions { monolithic_limit: 1 << 20, chunk_size: chunk, ..PushOptions::default() };
    let events = Events::default();
    let report = client.push_image(&r, &manifest, &store, &push_opts, events.sink()).await.unwrap();
    eprintln!("{report:?}");
    let faults = relay.stats.faults();
    eprintln!("faults injected: {faults:?}");
    let seen = relay.stats.seen();
    for s in seen.iter().filter(|s| s.method == "PATCH") {
        assert!(!s.chunked && s.content_length.is_some(), "PATCH bodies have a Content-Length: {s:?}");
    }
    let wanted = [
        Fault::Respond(429),
        Fault::Respond(500),
        Fault::DropRequest,
        Fault::CutBody(1 << 20),
        Fault::Respond(503),
        Fault::DropResponse,
    ];
    for f in wanted {
        assert!(faults.iter().any(|(_, g)| *g == f), "{f:?} was injected: {faults:?}");
    }
    assert_eq!(faults.iter().filter(|(m, f)| m == "PATCH" && *f == Fault::DropResponse).count(), 1);
    assert_eq!(
        final_puts.load(Ordering::SeqCst),
        1,
        "the lost final answer was followed by a check, not a new session"
    );
    assert!(status_checks.load(Ordering::SeqCst) >= 4, "upload sessions were asked for their state");
    assert_eq!(report.blobs_uploaded, 2);
    assert!(report.resumed >= 2, "sessions continued from the registry's offset: {report:?}");
    assert!(report.restarted >= 2, "refused sessions started over: {report:?}");
    assert!(report.bytes_uploaded > layer.size, "some bytes went twice: {report:?}");
    let all = events.all();
    assert!(all.iter().any(|e| matches!(e, PushEvent::Interrupted { resume_at, .. } if *resume_at > 0)), "{all:?}");
    assert!(all.iter().any(
        |e| matches!(e, PushEvent::Progress { digest, total, .. } if *digest == layer.digest && *total == layer.size)
    ));
    assert!(all.iter().any(|e| matches!(e, PushEvent::Uploaded { digest, .. } if *digest == layer.digest)));

    // Independent readers, straight to the registry: skopeo for the manifest, a plain GET
    // for the blob, hashed.
    let direct = reference(rig.plain(), &r.repository, "v1");
    assert_eq!(skopeo_digest(&direct, &["--tls-verify=false"]), manifest.digest);
    let url = format!("http://{}/v2/{}/blobs/{}", rig.plain(), r.repository, layer.digest);
    let body = reqwest::get(&url).await.unwrap().error_for_status().unwrap().bytes().await.unwrap();
    assert_eq!(body.len() as u64, layer.size);
    assert_eq!(Digest::of_bytes(&body), layer.digest, "the registry holds the blob intact");
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{direct}")])
        .output()
        .unwrap();
    let pushed: Manifest = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(pushed.layers.iter().filter(|l| l.digest == layer.digest).count(), 1);

    // The same client pushing again knows what the repository has: the manifest PUT only.
    relay.stats.clear();
    let again = client.push_image(&r, &manifest, &store, &push_opts, |_| {}).await.unwrap();
    assert_eq!((again.blobs_skipped, again.bytes_uploaded), (2, 0), "{again:?}");
    let methods: Vec<String> = relay.stats.seen().iter().map(|s| s.method.clone()).collect();
    assert_eq!(methods, vec!["PUT".to_string()], "the client remembered the pushed blobs");

    // Another client (another process) pushing again: HEAD requests and the manifest PUT only.
    relay.stats.clear();
    let client = RegistryClient::new(RegistryOptions { max_attempts: 4, ..isolated_options(cfg.path()) }).unwrap();
    let again = client.push_image(&r, &manifest, &store, &push_opts, |_| {}).await.unwrap();
    assert_eq!((again.blobs_skipped, again.bytes_uploaded), (2, 0), "{again:?}");
    let methods: HashMap<String, usize> = relay.stats.seen().iter().fold(HashMap::new(), |mut m, s| {
        *m.entry(s.method.clone()).or_default() += 1;
        m
    });
    assert_eq!(methods.get("POST"), None, "{methods:?}");
    assert_eq!(methods.get("PATCH"), None, "{methods:?}");
    assert_eq!(methods.get("PUT"), Some(&1), "{methods:?}");
    assert!(methods.get("HEAD").copied().unwrap_or(0) >= 2, "{methods:?}");
    assert_eq!(std::fs::read_dir(s.path().join("tmp")).unwrap().count(), 0);
}
