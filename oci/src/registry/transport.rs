//! HTTP transport to registries: one TLS-configured client per host, the HTTPS/HTTP
//! decision, authentication and bounded retries around every request.
//!
//! This module owns:
//! - TLS: system roots plus the configured CA files plus
//!   `/etc/docker/certs.d/HOST/*.crt` (and a `client.cert`/`client.key` pair there);
//! - the scheme: HTTPS always; plain HTTP only for loopback hosts and registries named
//!   insecure (HTTPS is still tried first, as docker does). Named-insecure registries also
//!   skip certificate verification;
//! - the `/v2/` ping that learns the scheme and the auth challenge once per host;
//! - [`Transport::send`]: authorize (via [`AuthSession`]), send, re-authorize once on a
//!   401, retry with exponential backoff on connection errors, 429 and 5xx.
//!
//! Push reuses it: it asks for [`Scope::pull_push`], gives a body factory, and turns off
//! the automatic resend of upload data ([`RegistryRequest::retry_on_connection_error`]).
//!
//! This module and [`super::auth`] use each other on purpose: a request needs the
//! session's `Authorization`, and the session fetches its tokens with a request to the
//! realm through this same transport (its TLS settings, its limits). Splitting them
//! further would only hide that loop behind a callback.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderMap, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use tokio::sync::OnceCell;

use super::auth::{AuthSession, Scope};
use super::challenge::{parse_challenges, preferred, Challenge};
use super::credentials::{normalize_registry, Credential, DockerConfig};
use super::error::{NetFailure, Operation, RegistryError};
use super::RegistryOptions;
use crate::reference::{api_host, is_loopback_host, strip_port};

/// Builds a request body afresh for each attempt (a retry cannot reuse a sent body).
pub type BodyFactory = Arc<dyn Fn() -> reqwest::Body + Send + Sync>;

/// Where a request goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A path under the registry's base URL, e.g. `/v2/library/busybox/manifests/latest`.
    Path(String),
    /// An absolute URL (an upload `Location`).
    Url(String),
}

/// One request to a registry, re-buildable for retries.
#[derive(Clone)]
pub struct RegistryRequest {
    pub method: Method,
    pub target: Target,
    pub headers: HeaderMap,
    pub body: Option<BodyFactory>,
    /// Retry on 429/5xx.
    pub retry_on_status: bool,
    /// Resend after a connection error. Off for requests carrying upload data: the
    /// registry may have kept part of it, so the caller asks before resending.
    pub retry_on_connection_error: bool,
}

impl RegistryRequest {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        RegistryRequest {
            method,
            target: Target::Path(path.into()),
            headers: HeaderMap::new(),
            body: None,
            retry_on_status: true,
            retry_on_connection_error: true,
        }
    }
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }
    pub fn head(path: impl Into<String>) -> Self {
        Self::new(Method::HEAD, path)
    }
    pub fn header(mut self, name: reqwest::header::HeaderName, value: &str) -> Self {
        if let Ok(v) = reqwest::header::HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }
    fn describe(&self) -> String {
        match &self.target {
            Target::Path(p) => p.clone(),
            Target::Url(u) => u.clone(),
        }
    }
}

/// State kept per registry host.
pub(crate) struct Host {
    /// The registry name as in references (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Where its API is served (`registry-1.docker.io`).
    pub api_host: String,
    /// The host's HTTP client (its connection pool). Replaced after a transfer fails,
    /// so that no later request reuses a connection that was open when it broke.
    client: Mutex<reqwest::Client>,
    /// Whether certificate checks are skipped (how to make a fresh client).
    skip_verify: bool,
    plain_http_allowed: bool,
    base: OnceCell<String>,
    challenge: Mutex<Option<Challenge>>,
    credential: OnceCell<Option<Credential>>,
}

impl Host {
    fn client(&self) -> reqwest::Client {
        self.client.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn challenge(&self) -> Option<Challenge> {
        self.challenge.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn set_challenge(&self, c: Option<Challenge>) {
        *self.challenge.lock().unwrap_or_else(|p| p.into_inner()) = c;
    }
}

struct Inner {
    user_agent: String,
    connect_timeout: Duration,
    read_timeout: Duration,
    max_attempts: u32,
    retry_base_delay: Duration,
    insecure: Vec<String>,
    ca_certs: Vec<reqwest::Certificate>,
    certs_dir: PathBuf,
    docker_config: Option<DockerConfig>,
    credentials: HashMap<String, Credential>,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    clients: Mutex<HashMap<String, reqwest::Client>>,
    auth: AuthSession,
}

/// Authenticated, retrying HTTP to registries. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

/// Why a small body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// Over the limit (stated by Content-Length or counted).
    TooLarge,
    /// The connection broke while reading.
    Broken(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooLarge => f.write_str("the answer is too large"),
            ReadError::Broken(r) => f.write_str(r),
        }
    }
}

/// Read a (small) response body into memory, failing past `limit` bytes.
pub(crate) async fn read_limited(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(ReadError::TooLarge);
    }
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if out.len() as u64 + c.len() as u64 > limit {
                    return Err(ReadError::TooLarge);
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(ReadError::Broken(super::error::error_chain(&e))),
        }
    }
}

/// `401 Unauthorized`.
pub(crate) fn status_text(s: StatusCode) -> String {
    match s.canonical_reason() {
        Some(r) => format!("{} {r}", s.as_u16()),
        None => s.as_u16().to_string(),
    }
}

impl Transport {
    /// Load CA files and set up; no connection is made until the first request.
    pub fn new(opts: &RegistryOptions) -> Result<Self, RegistryError> {
        let mut ca_certs = Vec::new();
        for f in &opts.ca_files {
            ca_certs.extend(load_certs(f)?);
        }
        let docker_config = match &opts.docker_config_dir {
            Some(d) => Some(DockerConfig::new(d)),
            None => super::credentials::default_config_dir().map(DockerConfig::new),
        }
        .map(|c| c.with_helper_dirs(opts.credential_helper_dirs.clone()));
        let credentials =
            opts.credentials.iter().map(|(k, v)| (normalize_registry(k), v.clone())).collect::<HashMap<_, _>>();
        Ok(Transport {
            inner: Arc::new(Inner {
                user_agent: opts.user_agent.clone(),
                connect_timeout: opts.connect_timeout,
                read_timeout: opts.read_timeout,
                max_attempts: opts.max_attempts.max(1),
                retry_base_delay: opts.retry_base_delay,
                insecure: opts.insecure_registries.iter().map(|r| normalize_registry(r)).collect(),
                ca_certs,
                certs_dir: opts.certs_dir.clone().unwrap_or_else(|| PathBuf::from("/etc/docker/certs.d")),
                docker_config,
                credentials,
                hosts: Mutex::new(HashMap::new()),
                clients: Mutex::new(HashMap::new()),
                auth: AuthSession::default(),
            }),
        })
    }

    pub(crate) fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }

    /// Is `registry` named insecure (by host or host:port)?
    fn is_insecure(&self, registry: &str) -> bool {
        let reg = normalize_registry(registry);
        self.inner.insecure.iter().any(|i| *i == reg || i == strip_port(&reg))
    }

    /// The HTTP client for `host` (with its certs.d CAs and client certificate).
    fn client_for_host(&self, host: &str, skip_verify: bool) -> Result<reqwest::Client, RegistryError> {
        let key = format!("{host}|{skip_verify}");
        if let Some(c) = self.inner.clients.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(c.clone());
        }
        self.new_client_for_host(host, skip_verify)
    }

    /// A new client for `host` (an empty connection pool), remembered for later use.
    fn new_client_for_host(&self, host: &str, skip_verify: bool) -> Result<reqwest::Client, RegistryError> {
        install_tls_provider();
        let key = format!("{host}|{skip_verify}");
        let mut certs = self.inner.ca_certs.clone();
        let mut identity = None;
        for dir in [self.inner.certs_dir.join(host), self.inner.certs_dir.join(host.replace(':', "_"))] {
            let (c, id) = load_certs_dir(&dir)?;
            certs.extend(c);
            identity = identity.or(id);
        }
        let mut b = reqwest::Client::builder()
            .user_agent(self.inner.user_agent.clone())
            .connect_timeout(self.inner.connect_timeout)
            .read_timeout(self.inner.read_timeout)
            .tls_certs_merge(certs);
        if skip_verify {
            b = b.tls_danger_accept_invalid_certs(true);
        }
        if let Some(id) = identity {
            b = b.identity(id);
        }
        let client = b.build().map_err(|e| RegistryError::Setup {
            reason: format!("HTTP client for {host}: {}", super::error::error_chain(&e)),
        })?;
        self.inner.clients.lock().unwrap_or_else(|p| p.into_inner()).insert(key, client.clone());
        Ok(client)
    }

    /// The client for an arbitrary URL (a token realm).
    pub(crate) fn client_for_url(&self, url: &url::Url) -> Result<reqwest::Client, RegistryError> {
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => String::new(),
        };
        let skip = self.is_insecure(&host);
        self.client_for_host(&host, skip)
    }

    pub(crate) fn host(&self, registry: &str) -> Result<Arc<Host>, RegistryError> {
        if let Some(h) = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner()).get(registry) {
            return Ok(h.clone());
        }
        let api = api_host(registry).to_string();
        let insecure = self.is_insecure(registry) || self.is_insecure(&api);
        let client = self.client_for_host(&api, insecure)?;
        let host = Arc::new(Host {
            registry: registry.to_string(),
            api_host: api.clone(),
            client: Mutex::new(client),
            skip_verify: insecure,
            plain_http_allowed: insecure || is_loopback_host(&api),
            base: OnceCell::new(),
            challenge: Mutex::new(None),
            credential: OnceCell::new(),
        });
        let mut hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
        Ok(hosts.entry(registry.to_string()).or_insert(host).clone())
    }

    /// The credentials for a host, resolved once (helpers run off the async threads).
    pub(crate) async fn credential(&self, op: &Operation, host: &Host) -> Result<Option<Credential>, RegistryError> {
        let c = host
            .credential
            .get_or_try_init(|| async {
                let reg = normalize_registry(&host.registry);
                if let Some(c) = self.inner.credentials.get(&reg) {
                    return Ok(Some(c.clone()));
                }
                let Some(cfg) = self.inner.docker_config.clone() else { return Ok(None) };
                let reg2 = reg.clone();
                let found = tokio::task::spawn_blocking(move || cfg.lookup(&reg2))
                    .await
                    .map_err(|e| RegistryError::Internal { op: op.clone(), reason: e.to_string() })?;
                found.map_err(|source| RegistryError::Credentials { op: op.clone(), registry: reg, source })
            })
            .await?;
        Ok(c.clone())
    }

    /// `https://HOST` or `http://HOST`, decided by a `/v2/` ping on first use.
    pub async fn base_url(&self, op: &Operation, registry: &str) -> Result<String, RegistryError> {
        let host = self.host(registry)?;
        self.base(op, &host).await
    }

    async fn base(&self, op: &Operation, host: &Host) -> Result<String, RegistryError> {
        host.base.get_or_try_init(|| self.probe(op, host)).await.cloned()
    }

    async fn probe(&self, op: &Operation, host: &Host) -> Result<String, RegistryError> {
        let schemes: &[&str] = if host.plain_http_allowed { &["https", "http"] } else { &["https"] };
        let mut attempt = 0;
        loop {
            let mut failures: Vec<NetFailure> = Vec::new();
            for scheme in schemes {
                let base = format!("{scheme}://{}", host.api_host);
                match host.client().get(format!("{base}/v2/")).send().await {
                    Ok(resp) => {
                        // A TLS port answering plain HTTP with 400: report the TLS failure.
                        if *scheme == "http" && resp.status() == StatusCode::BAD_REQUEST {
                            if let Some(f @ NetFailure::Tls(_)) = failures.first() {
                                return Err(f.clone().into_error(op, &host.api_host));
                            }
                        }
                        if resp.status() == StatusCode::UNAUTHORIZED {
                            host.set_challenge(challenge_of(resp.headers()));
                        }
                        tracing::debug!(registry = %host.registry, %base, status = %resp.status(), "registry ping");
                        return Ok(base);
                    }
                    Err(e) => {
                        let f = NetFailure::classify(&e);
                        tracing::debug!(registry = %host.registry, %base, failure = ?f, "registry ping failed");
                        if matches!(f, NetFailure::Certificate(_)) {
                            return Err(f.into_error(op, &host.api_host));
                        }
                        failures.push(f);
                    }
                }
            }
            // Report a connection failure over a TLS one (plain HTTP servers fail TLS).
            let failure = failures
                .iter()
                .find(|f| matches!(f, NetFailure::Connect(_)))
                .or(failures.first())
                .cloned()
                .unwrap_or_else(|| NetFailure::Other("no scheme to try".into()));
            if failure.retryable() && attempt + 1 < self.inner.max_attempts {
                self.backoff(attempt, None).await;
                attempt += 1;
                continue;
            }
            return Err(failure.into_error(op, &host.api_host));
        }
    }

    pub(crate) fn retryable_status(&self, s: StatusCode) -> bool {
        s == StatusCode::TOO_MANY_REQUESTS
            || s == StatusCode::REQUEST_TIMEOUT
            || s == StatusCode::INTERNAL_SERVER_ERROR
            || s == StatusCode::BAD_GATEWAY
            || s == StatusCode::SERVICE_UNAVAILABLE
            || s == StatusCode::GATEWAY_TIMEOUT
    }

    /// Forget every pooled connection to `host`: requests from now on connect anew.
    /// (Requests in flight on the old pool finish on it.)
    pub(crate) fn fresh_connections(&self, host: &Host) {
        match self.new_client_for_host(&host.api_host, host.skip_verify) {
            Ok(c) => *host.client.lock().unwrap_or_else(|p| p.into_inner()) = c,
            Err(e) => tracing::debug!(registry = %host.registry, "no fresh client: {e}"),
        }
    }

    /// [`Transport::fresh_connections`] for a registry by name.
    pub(crate) fn fresh_connections_to(&self, registry: &str) {
        if let Ok(host) = self.host(registry) {
            self.fresh_connections(&host);
        }
    }

    /// How long to wait before retry number `attempt + 1`: what the server's
    /// `Retry-After` asked (capped at 30 s), else exponential with jitter.
    pub(crate) fn backoff_delay(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        let base = self.inner.retry_base_delay.saturating_mul(1 << attempt.min(6));
        let jitter_ms = {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let half = (self.inner.retry_base_delay.as_millis() as u32 / 2).max(1);
            u64::from(nanos % half)
        };
        asked.unwrap_or(base + Duration::from_millis(jitter_ms)).min(Duration::from_secs(30))
    }

    /// Sleep [`Transport::backoff_delay`].
    pub(crate) async fn backoff(&self, attempt: u32, asked: Option<Duration>) {
        let delay = self.backoff_delay(attempt, asked);
        tracing::debug!(?delay, attempt, "retrying registry request");
        tokio::time::sleep(delay).await;
    }

    /// Send a request to `registry`, authorized for `scope`, with retries. Returns any
    /// response other than 401 (and other than 429/5xx while attempts remain); a 401
    /// that survives re-authentication becomes [`RegistryError::AuthRequired`],
    /// [`RegistryError::AuthFailed`] or [`RegistryError::Denied`].
    pub async fn send(
        &self,
        op: &Operation,
        registry: &str,
        scope: &Scope,
        req: &RegistryRequest,
    ) -> Result<reqwest::Response, RegistryError> {
        let host = self.host(registry)?;
        let base = self.base(op, &host).await?;
        let url = match &req.target {
            Target::Path(p) => format!("{base}{p}"),
            Target::Url(u) => u.clone(),
        };
        let mut attempt = 0u32;
        let mut reauthenticated = false;
        let mut extra_scopes: Vec<String> = Vec::new();
        loop {
            let auth = self.inner.auth.authorize(self, op, &host, scope, &extra_scopes).await?;
            let mut rb = host.client().request(req.method.clone(), &url).headers(req.headers.clone());
            if let Some(h) = &auth.header {
                rb = rb.header(AUTHORIZATION, h.clone());
            }
            if let Some(body) = &req.body {
                rb = rb.body(body());
            }
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(e) => {
                    let f = NetFailure::classify(&e);
                    // The next request goes out on a connection made after this failure.
                    self.fresh_connections(&host);
                    if f.retryable() && req.retry_on_connection_error && attempt + 1 < self.inner.max_attempts {
                        self.backoff(attempt, None).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(f.into_error(op, &host.api_host));
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED {
                let challenge = challenge_of(resp.headers());
                let fail = |used: bool| {
                    let status = status_text(status);
                    if used {
                        RegistryError::AuthFailed { op: op.clone(), registry: host.registry.clone(), status }
                    } else {
                        RegistryError::AuthRequired { op: op.clone(), registry: host.registry.clone(), status }
                    }
                };
                let Some(ch) = challenge else { return Err(fail(auth.used_credentials)) };
                if ch.is_bearer()
                    && ch.error() == Some("insufficient_scope")
                    && auth.used_credentials
                    && reauthenticated
                {
                    return Err(RegistryError::Denied {
                        op: op.clone(),
                        registry: host.registry.clone(),
                        status: status_text(status),
                        detail: format!(" (insufficient scope for {})", scope.to_token_scope()),
                    });
                }
                if reauthenticated {
                    return Err(fail(auth.used_credentials));
                }
                if ch.is_basic() {
                    // Sending the same credentials again will not help.
                    let cred = self.credential(op, &host).await?;
                    if auth.used_credentials || !matches!(cred, Some(Credential::Basic { .. })) {
                        return Err(fail(auth.used_credentials));
                    }
                }
                let own = scope.to_token_scope();
                extra_scopes = ch.scopes().into_iter().filter(|s| *s != own).collect();
                host.set_challenge(Some(ch));
                self.inner.auth.forget(&host, scope);
                reauthenticated = true;
                continue;
            }
            if status == StatusCode::FORBIDDEN {
                let detail = registry_error_detail(resp).await;
                return Err(RegistryError::Denied {
                    op: op.clone(),
                    registry: host.registry.clone(),
                    status: status_text(status),
                    detail: if detail.is_empty() { detail } else { format!(": {detail}") },
                });
            }
            if req.retry_on_status && self.retryable_status(status) && attempt + 1 < self.inner.max_attempts {
                tracing::debug!(registry = %host.registry, target = %req.describe(), %status, "retrying");
                self.backoff(attempt, retry_after(resp.headers())).await;
                attempt += 1;
                continue;
            }
            return Ok(resp);
        }
    }

    /// A transport with the same settings and clients but no cached state, using only
    /// `credential` for `registry` (docker config.json is not consulted).
    fn with_only_credentials(&self, registry: &str, credential: &Credential) -> Transport {
        let i = &self.inner;
        Transport {
            inner: Arc::new(Inner {
                user_agent: i.user_agent.clone(),
                connect_timeout: i.connect_timeout,
                read_timeout: i.read_timeout,
                max_attempts: i.max_attempts,
                retry_base_delay: i.retry_base_delay,
                insecure: i.insecure.clone(),
                ca_certs: i.ca_certs.clone(),
                certs_dir: i.certs_dir.clone(),
                docker_config: None,
                credentials: HashMap::from([(normalize_registry(registry), credential.clone())]),
                hosts: Mutex::new(HashMap::new()),
                clients: Mutex::new(i.clients.lock().unwrap_or_else(|p| p.into_inner()).clone()),
                auth: AuthSession::default(),
            }),
        }
    }

    /// Check credentials against a registry without touching any repository, as
    /// `docker login` does: Basic → `GET /v2/` with them; Bearer → a token request.
    pub async fn verify_credentials(
        &self,
        op: &Operation,
        registry: &str,
        credential: &Credential,
    ) -> Result<(), RegistryError> {
        // A fresh session with the same settings, holding only these credentials.
        let probe = self.with_only_credentials(registry, credential);
        let resp = probe.send(op, registry, &Scope::none(), &RegistryRequest::get("/v2/")).await?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        Err(RegistryError::UnexpectedStatus {
            op: op.clone(),
            registry: registry.to_string(),
            method: "GET".into(),
            path: "/v2/".into(),
            status: status_text(status),
            detail: String::new(),
        })
    }
}

/// A `Retry-After` in seconds (the HTTP-date form is not used by registries).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(30)))
}

fn challenge_of(headers: &HeaderMap) -> Option<Challenge> {
    let all = parse_challenges(headers.get_all(WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()));
    preferred(&all).cloned()
}

/// The `errors` of a registry error body, as `CODE: message; …` (empty if none).
pub(crate) async fn registry_error_detail(resp: reqwest::Response) -> String {
    registry_error_codes(resp).await.iter().map(|(c, m)| format!("{c}: {m}")).collect::<Vec<_>>().join("; ")
}

/// `(code, message)` pairs of a registry error body.
pub(crate) async fn registry_error_codes(resp: reqwest::Response) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let Ok(bytes) = read_limited(resp, 64 << 10).await else { return Vec::new() };
    match serde_json::from_slice::<Body>(&bytes) {
        Ok(b) => b.errors.into_iter().map(|i| (i.code, i.message)).collect(),
        Err(_) => Vec::new(),
    }
}

fn load_certs(path: &Path) -> Result<Vec<reqwest::Certificate>, RegistryError> {
    let pem = std::fs::read(path)
        .map_err(|e| RegistryError::Setup { reason: format!("reading CA file {}: {e}", path.display()) })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| RegistryError::Setup {
        reason: format!("CA file {}: {}", path.display(), super::error::error_chain(&e)),
    })?;
    if certs.is_empty() {
        return Err(RegistryError::Setup { reason: format!("CA file {} holds no PEM certificate", path.display()) });
    }
    Ok(certs)
}

/// `*.crt` CAs and a `NAME.cert` + `NAME.key` client identity from a certs.d directory.
fn load_certs_dir(dir: &Path) -> Result<(Vec<reqwest::Certificate>, Option<reqwest::Identity>), RegistryError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(_) => return Ok((Vec::new(), None)),
    };
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    let mut certs = Vec::new();
    let mut identity = None;
    for p in &names {
        match p.extension().and_then(|e| e.to_str()) {
            Some("crt") => certs.extend(load_certs(p)?),
            Some("cert") if identity.is_none() => {
                let key = p.with_extension("key");
                let read = |f: &Path| {
                    std::fs::read(f)
                        .map_err(|e| RegistryError::Setup { reason: format!("reading {}: {e}", f.display()) })
                };
                let mut pem = read(p)?;
                pem.push(b'\n');
                pem.extend(read(&key)?);
                identity = Some(reqwest::Identity::from_pem(&pem).map_err(|e| RegistryError::Setup {
                    reason: format!("client certificate {}: {}", p.display(), super::error::error_chain(&e)),
                })?);
            }
            _ => {}
        }
    }
    Ok((certs, identity))
}

/// TLS uses rustls with *ring*'s primitives, whose random numbers come straight from
/// the kernel (`getrandom`). aws-lc's generator first measures CPU jitter for entropy,
/// about 50 ms of CPU at every process start — a fully cached build takes less than
/// twice that. (Digests still use aws-lc: they need no randomness.)
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
