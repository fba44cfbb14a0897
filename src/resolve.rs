//! Bringing base images into the store for the lowering: registry references (pulled
//! with strata-oci's distribution client), `docker-image://REF` and
//! `oci-layout://PATH[:TAG|@DIGEST]` named contexts.

use std::collections::HashMap;
use std::path::PathBuf;

use strata_frontend::lower::{FetchedUrl, ImageResolver, ResolvedImage};
use strata_oci::image::Platform;
use strata_oci::layout::OciLayout;
use strata_oci::reference::Reference;
use strata_oci::registry::RegistryClient;
use strata_oci::store::BlobStore;
use strata_solver::progress::{ProgressEvent, ProgressSink};

/// Pull policy (`--pull`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Re-resolve tags each build (the default; one request per image).
    Missing,
    Always,
    Never,
}

pub struct Resolver {
    pub client: RegistryClient,
    pub store: BlobStore,
    pub root: PathBuf,
    pub policy: PullPolicy,
    pub progress: ProgressSink,
    pub handle: tokio::runtime::Handle,
    /// Registry host → mirrors tried first (the configuration's `registry.mirrors`).
    pub mirrors: std::collections::BTreeMap<String, Vec<String>>,
    cache: HashMap<(String, String), ResolvedImage>,
    /// The local contexts of files `ADD URL` downloaded: (name, directory).
    pub url_contexts: Vec<(String, PathBuf)>,
    /// Every base image resolved, in the order first resolved (provenance names them).
    pub bases: Vec<ResolvedBase>,
    /// The index digest of the latest registry resolution (for [`ResolvedBase`]).
    last_index: std::cell::Cell<Option<String>>,
    /// Every `ADD URL` downloaded: (URL, the digest of what came).
    pub downloads: Vec<(String, strata_oci::digest::Digest)>,
}

/// A base image as the build resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBase {
    /// The reference as the lowering asked for it (FROM's text, or a named context's).
    pub written: String,
    /// The full reference (`registry/repository:tag`, or `oci-layout://…`).
    pub reference: String,
    pub platform: Platform,
    pub manifest_digest: String,
    /// The index the tag resolved to, when the image is multi-platform.
    pub index_digest: Option<String>,
}

impl Resolver {
    pub fn new(
        client: RegistryClient,
        store: BlobStore,
        root: PathBuf,
        policy: PullPolicy,
        progress: ProgressSink,
    ) -> Self {
        Resolver {
            client,
            store,
            root,
            policy,
            progress,
            handle: tokio::runtime::Handle::current(),
            mirrors: Default::default(),
            cache: HashMap::new(),
            url_contexts: Vec::new(),
            bases: Vec::new(),
            last_index: Default::default(),
            downloads: Vec::new(),
        }
    }

    fn remembered_path(&self, reference: &str, platform: &Platform) -> PathBuf {
        let key = blake3::hash(format!("{reference}\0{platform}").as_bytes()).to_hex();
        self.root.join("resolved").join(&key[..32])
    }

    fn remember(&self, reference: &str, platform: &Platform, manifest_digest: &str) {
        let path = self.remembered_path(reference, platform);
        if std::fs::read_to_string(&path).is_ok_and(|d| d.trim() == manifest_digest) {
            return;
        }
        let _ = strata_oci::store::write_atomic(&path, manifest_digest.as_bytes());
    }

    /// A previous resolution whose blobs are all still in the store.
    fn remembered(&self, reference: &str, platform: &Platform) -> Option<ResolvedImage> {
        let digest = std::fs::read_to_string(self.remembered_path(reference, platform)).ok()?;
        self.stored_image(reference, digest.trim()).ok()
    }

    fn stored_image(&self, reference: &str, manifest_digest: &str) -> Result<ResolvedImage, String> {
        let d: strata_oci::digest::Digest = manifest_digest.parse().map_err(|e| format!("{e}"))?;
        let manifest: strata_oci::image::Manifest =
            serde_json::from_slice(&self.store.read_blob(&d).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        for l in &manifest.layers {
            if !self.store.contains(&l.digest) {
                return Err(format!("layer {} missing", l.digest));
            }
        }
        let config = serde_json::from_slice(&self.store.read_blob(&manifest.config.digest).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        Ok(ResolvedImage { reference: reference.to_string(), manifest_digest: manifest_digest.to_string(), config })
    }

    fn resolve_layout(&self, spec: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        // oci-layout://PATH[:TAG|@DIGEST]
        let (path, sel) = if let Some((p, d)) = spec.rsplit_once('@') {
            (p.to_string(), Some(d.to_string()))
        } else {
            match spec.rsplit_once(':') {
                Some((p, t)) if !t.contains('/') => (p.to_string(), Some(t.to_string())),
                _ => (spec.to_string(), None),
            }
        };
        let layout = OciLayout::open(&path).map_err(|e| format!("oci-layout://{spec}: {e}"))?;
        let desc = layout.resolve(sel.as_deref()).map_err(|e| format!("oci-layout://{spec}: {e}"))?;
        let img = layout.import_image(&desc, platform, &self.store).map_err(|e| format!("oci-layout://{spec}: {e}"))?;
        Ok(ResolvedImage {
            reference: format!("oci-layout://{spec}"),
            manifest_digest: img.manifest_digest.to_string(),
            config: img.config,
        })
    }

    fn resolve_registry(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        let r = Reference::parse(reference).map_err(|e| e.to_string())?;
        if self.policy == PullPolicy::Never {
            return self
                .remembered(reference, platform)
                .ok_or_else(|| format!("{r}: not in the local store and --pull=never was given"));
        }
        let vertex = format!("pull-{reference}-{platform}");
        let name = format!("[internal] load metadata for {}", r);
        self.progress.send(ProgressEvent::Started { vertex: vertex.clone(), name: name.clone() });
        let started = std::time::Instant::now();
        let unreachable = std::cell::Cell::new(false);
        let pull = |from: &Reference| {
            tokio::task::block_in_place(|| {
                self.handle.block_on(self.client.pull_image(from, platform, &self.store)).map_err(|e| {
                    unreachable.set(matches!(e, strata_oci::registry::RegistryError::Connect { .. }));
                    e.to_string()
                })
            })
        };
        // Mirrors first, in order; the registry itself when none of them has it.
        let mut pulled = None;
        for mirror in self.mirrors.get(&r.registry).into_iter().flatten() {
            let via = Reference { registry: mirror.clone(), ..r.clone() };
            match pull(&via) {
                Ok(p) => {
                    self.progress.send(ProgressEvent::Status {
                        vertex: vertex.clone(),
                        name: name.clone(),
                        message: format!("pulled from mirror {mirror}"),
                    });
                    pulled = Some(Ok(p));
                    break;
                }
                Err(e) => self.progress.send(ProgressEvent::Status {
                    vertex: vertex.clone(),
                    name: name.clone(),
                    message: format!("mirror {mirror} failed ({e}); trying the next source"),
                }),
            }
        }
        let pulled = match pulled {
            Some(p) => p,
            None => pull(&r),
        };
        match pulled {
            Ok(p) => {
                self.progress.send(ProgressEvent::Done { vertex, name, elapsed: started.elapsed() });
                self.remember(reference, platform, &p.manifest_digest.to_string());
                self.last_index.set(p.index_digest.as_ref().map(|d| d.to_string()));
                Ok(ResolvedImage {
                    reference: r.to_string(),
                    manifest_digest: p.manifest_digest.to_string(),
                    config: p.config,
                })
            }
            Err(e) => {
                self.progress.send(ProgressEvent::Failed { vertex, name, error: e.to_string() });
                if unreachable.get() {
                    return Err(format!("{e}\n{}", base_image_hint(reference, &r)));
                }
                Err(e.to_string())
            }
        }
    }
}

/// What to do when a base image's registry cannot be reached (an offline CI runner,
/// no access to Docker Hub): the other ways to give strata that image.
fn base_image_hint(written: &str, r: &Reference) -> String {
    let mut hint = format!(
        "hint: the base image {r} could not be pulled from {registry}. Give it another way:\n\
         \x20 --build-context {written}=oci-layout://DIR[:TAG]       an OCI image layout on disk\n\
         \x20 --build-context {written}=docker-image://HOST/REPO:TAG  the same image in a registry you can reach\n\
         \x20 a mirror in strata.toml: [registry.mirrors] \"{registry}\" = [\"mirror.example:5000\"]",
        registry = r.registry
    );
    // A short name (`busybox`) means Docker Hub; a full one in FROM chooses another.
    if !written.contains('/') || !written.split('/').next().is_some_and(|h| h.contains(['.', ':']) || h == "localhost")
    {
        hint.push_str("\n  or a full reference in FROM (HOST/REPO:TAG)");
    }
    hint
}

/// `Last-Modified` (an HTTP date, `Sun, 06 Nov 1994 08:49:37 GMT`) as Unix seconds.
fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let m = months.iter().position(|x| x == month)? as i64 + 1;
    let (d, y): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, mi, sec] = hms.as_slice() else { return None };
    // Days from 1970-01-01 to y-m-d (proleptic Gregorian; Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec)
}

impl Resolver {
    /// Download `url` into the blob store (verified against `expected`), returning its
    /// digest and `Last-Modified` time.
    async fn download(
        &self,
        url: &str,
        expected: Option<&strata_oci::digest::Digest>,
    ) -> Result<(strata_oci::digest::Digest, Option<i64>), String> {
        use std::io::Write;
        let mut response = crate::remote_context::http_get(url).await.map_err(|e| format!("ADD {e}"))?;
        let modified = response
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let mut temp = self.store.temp_file().map_err(|e| format!("ADD {url}: {e}"))?;
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("ADD {url}: {e}"))? {
            temp.write_all(&chunk).map_err(|e| format!("ADD {url}: {e}"))?;
        }
        let (digest, _) = temp.commit(&self.store, expected, None).map_err(|e| match e {
            strata_oci::store::StoreError::DigestMismatch { expected, actual, .. } => {
                format!("ADD {url}: the download's digest is {actual}, not {expected} as --checksum says")
            }
            other => format!("ADD {url}: {other}"),
        })?;
        Ok((digest, modified))
    }
}

impl ImageResolver for Resolver {
    /// As BuildKit's HTTP source: the file is named after the URL's last path segment,
    /// mode 0600, owned by root, its mtime the `Last-Modified` header (else 1970).
    fn fetch_url(&mut self, url: &str, checksum: Option<&str>) -> Result<FetchedUrl, String> {
        let expected = checksum
            .map(|c| c.parse::<strata_oci::digest::Digest>().map_err(|e| format!("ADD --checksum={c}: {e}")))
            .transpose()?;
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("ADD {url}: {e}"))?;
        // As dockerfile2llb names it: the base of the URL's path.
        let file_name = parsed
            .path()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty() && *s != "." && *s != "..")
            .unwrap_or("__unnamed__")
            .to_string();
        let vertex = format!("url-{url}");
        let name = format!("[internal] load remote file {url}");
        self.progress.send(ProgressEvent::Started { vertex: vertex.clone(), name: name.clone() });
        let started = std::time::Instant::now();
        let fetched = tokio::task::block_in_place(|| self.handle.block_on(self.download(url, expected.as_ref())));
        let (digest, modified) = match fetched {
            Ok(f) => f,
            Err(e) => {
                self.progress.send(ProgressEvent::Failed { vertex, name, error: e.clone() });
                return Err(e);
            }
        };
        let mtime = modified.unwrap_or(0);
        let key = blake3::hash(format!("{digest}\0{mtime}\0{file_name}").as_bytes()).to_hex();
        let dir = self.root.join("downloads").join(&key[..32]);
        if !dir.join(&file_name).is_file() {
            let tmp = self.root.join("downloads").join(format!("tmp-{}-{}", std::process::id(), &key[..12]));
            let _ = std::fs::remove_dir_all(&tmp);
            let file = tmp.join(&file_name);
            let made = (|| -> std::io::Result<()> {
                std::fs::create_dir_all(&tmp)?;
                std::fs::copy(self.store.path(&digest), &file)?;
                std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
                let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.max(0) as u64);
                std::fs::File::options().write(true).open(&file)?.set_modified(t)?;
                match std::fs::rename(&tmp, &dir) {
                    Ok(()) => Ok(()),
                    // Another build made it first: the same file.
                    Err(_) if dir.join(&file_name).is_file() => std::fs::remove_dir_all(&tmp),
                    Err(e) => Err(e),
                }
            })();
            made.map_err(|e| format!("ADD {url}: {}: {e}", dir.display()))?;
        }
        self.progress.send(ProgressEvent::Done { vertex, name, elapsed: started.elapsed() });
        let context = format!("url-{}", &key[..32]);
        self.url_contexts.push((context.clone(), dir));
        if !self.downloads.iter().any(|(u, _)| u == url) {
            self.downloads.push((url.to_string(), digest.clone()));
        }
        Ok(FetchedUrl { context, file_name })
    }

    fn resolve(&mut self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        let key = (reference.to_string(), platform.to_string());
        if let Some(r) = self.cache.get(&key) {
            return Ok(r.clone());
        }
        self.last_index.set(None);
        let r = if let Some(spec) = reference.strip_prefix("oci-layout://") {
            self.resolve_layout(spec, platform)?
        } else {
            let reference = reference.strip_prefix("docker-image://").unwrap_or(reference);
            self.resolve_registry(reference, platform)?
        };
        self.bases.push(ResolvedBase {
            written: reference.to_string(),
            reference: if reference.starts_with("oci-layout://") { reference.to_string() } else { r.reference.clone() },
            platform: platform.clone(),
            manifest_digest: r.manifest_digest.clone(),
            index_digest: self.last_index.take(),
        });
        self.cache.insert(key, r.clone());
        Ok(r)
    }
}
