//! Errors of the distribution client. Every variant says what strata was doing
//! ([`Operation`]: `pull 127.0.0.1:5000/library/busybox:latest`), which registry answered,
//! and, where there is one, what to do next.

use std::fmt;

use crate::digest::Digest;
use crate::image::{list_platforms, Platform};
use crate::reference::Reference;
use crate::store::StoreError;

use super::credentials::CredentialError;

/// What the client was doing when something failed: `pull docker.io/library/busybox:latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// `pull`, `resolve`, `fetch blob`, `push`, `login`…
    pub action: String,
    /// The image reference (or registry name) it was about.
    pub subject: String,
}

impl Operation {
    pub fn new(action: impl Into<String>, subject: impl fmt::Display) -> Self {
        Operation { action: action.into(), subject: subject.to_string() }
    }
    pub fn on(action: &str, reference: &Reference) -> Self {
        Operation::new(action, reference)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action, self.subject)
    }
}

/// Failures talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{op}: cannot connect to {host}: {reason}")]
    Connect { op: Operation, host: String, reason: String },

    #[error(
        "{op}: TLS connection to {host} failed: {reason}; if the registry uses a private CA, \
         pass it with --ca-file or put it in /etc/docker/certs.d/{host}/ca.crt"
    )]
    Tls { op: Operation, host: String, reason: String },

    #[error(
        "{op}: authentication required ({status}): log in to {registry} first (strata login {registry}); \
         the repository may also not exist"
    )]
    AuthRequired { op: Operation, registry: String, status: String },

    #[error("{op}: authentication failed ({status}): check the credentials for {registry} (strata login {registry})")]
    AuthFailed { op: Operation, registry: String, status: String },

    #[error("{op}: access denied by {registry} ({status}){detail}: the credentials in use lack permission for this repository")]
    Denied { op: Operation, registry: String, status: String, detail: String },

    #[error("{op}: manifest unknown: {what} not found in {repository}")]
    ManifestUnknown { op: Operation, what: String, repository: String },

    #[error("{op}: repository {repository} not found")]
    RepositoryUnknown { op: Operation, repository: String },

    #[error("{op}: blob {digest} not found in {repository}")]
    BlobUnknown { op: Operation, digest: Digest, repository: String },

    #[error("{op}: {what} from {registry} has digest {actual}, expected {expected}")]
    DigestMismatch { op: Operation, registry: String, what: String, expected: Digest, actual: Digest },

    #[error("{op}: {what} from {registry} has {actual} bytes, expected {expected}")]
    SizeMismatch { op: Operation, registry: String, what: String, expected: u64, actual: u64 },

    #[error("{op}: {what} from {registry} is larger than the {limit}-byte limit")]
    TooLarge { op: Operation, registry: String, what: String, limit: u64 },

    #[error(
        "{op}: no image for {wanted} in index {index}; available platforms: {}",
        list_platforms(.available)
    )]
    NoMatchingPlatform { op: Operation, index: Digest, wanted: Platform, available: Vec<Platform> },

    #[error("{op}: unsupported manifest media type {media_type:?} from {registry}{hint}")]
    UnsupportedMediaType { op: Operation, registry: String, media_type: String, hint: &'static str },

    #[error("{op}: invalid {what} from {registry}: {reason}")]
    InvalidContent { op: Operation, registry: String, what: String, reason: String },

    #[error("{op}: {registry} answered {status} to {method} {path}{detail}")]
    UnexpectedStatus { op: Operation, registry: String, method: String, path: String, status: String, detail: String },

    #[error("{op}: token server {realm} (for {registry}) failed: {reason}")]
    Token { op: Operation, registry: String, realm: String, reason: String },

    #[error("{op}: credentials for {registry}: {source}")]
    Credentials {
        op: Operation,
        registry: String,
        #[source]
        source: CredentialError,
    },

    #[error(
        "{op}: download of {digest} from {registry} kept breaking off ({attempts} attempts, \
         {received} of {size} bytes): {reason}"
    )]
    Interrupted {
        op: Operation,
        registry: String,
        digest: Digest,
        attempts: u32,
        received: u64,
        size: u64,
        reason: String,
    },

    #[error(
        "{op}: upload of {digest} to {registry} kept failing ({attempts} attempts, {accepted} of {size} bytes \
         accepted): {reason}"
    )]
    UploadInterrupted {
        op: Operation,
        registry: String,
        digest: Digest,
        attempts: u32,
        accepted: u64,
        size: u64,
        reason: String,
    },

    /// The local image cannot be pushed as it is (a manifest it lists is missing, the
    /// reference pins another digest…).
    #[error("{op}: cannot push: {reason}")]
    Unpushable { op: Operation, reason: String },

    #[error("{op}: {source}")]
    Store {
        op: Operation,
        #[source]
        source: StoreError,
    },

    #[error("{op}: internal task failed: {reason}")]
    Internal { op: Operation, reason: String },

    #[error("registry client setup: {reason}")]
    Setup { reason: String },
}

impl RegistryError {
    /// The operation that failed (absent only for [`RegistryError::Setup`]).
    pub fn operation(&self) -> Option<&Operation> {
        use RegistryError::*;
        match self {
            Connect { op, .. }
            | Tls { op, .. }
            | AuthRequired { op, .. }
            | AuthFailed { op, .. }
            | Denied { op, .. }
            | ManifestUnknown { op, .. }
            | RepositoryUnknown { op, .. }
            | BlobUnknown { op, .. }
            | DigestMismatch { op, .. }
            | SizeMismatch { op, .. }
            | TooLarge { op, .. }
            | NoMatchingPlatform { op, .. }
            | UnsupportedMediaType { op, .. }
            | InvalidContent { op, .. }
            | UnexpectedStatus { op, .. }
            | Token { op, .. }
            | Credentials { op, .. }
            | Interrupted { op, .. }
            | UploadInterrupted { op, .. }
            | Unpushable { op, .. }
            | Store { op, .. }
            | Internal { op, .. } => Some(op),
            Setup { .. } => None,
        }
    }

    /// The tag, digest, blob or repository does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            RegistryError::ManifestUnknown { .. }
                | RegistryError::RepositoryUnknown { .. }
                | RegistryError::BlobUnknown { .. }
        )
    }

    /// Credentials are missing, wrong, or not allowed.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            RegistryError::AuthRequired { .. } | RegistryError::AuthFailed { .. } | RegistryError::Denied { .. }
        )
    }
}

/// How a request failed below HTTP, judged from the error chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NetFailure {
    /// TCP failed (refused, unreachable, DNS, timeout). Worth retrying.
    Connect(String),
    /// The server's certificate was not accepted: retrying or plain HTTP will not help.
    Certificate(String),
    /// TLS failed otherwise (often: the server speaks plain HTTP).
    Tls(String),
    /// The connection broke during the exchange. Worth retrying.
    Broken(String),
    /// Anything else (a bad URL, a builder error).
    Other(String),
}

impl NetFailure {
    pub(crate) fn retryable(&self) -> bool {
        matches!(self, NetFailure::Connect(_) | NetFailure::Broken(_))
    }

    pub(crate) fn into_error(self, op: &Operation, host: &str) -> RegistryError {
        let host = host.to_string();
        let op = op.clone();
        match self {
            NetFailure::Connect(reason) | NetFailure::Broken(reason) | NetFailure::Other(reason) => {
                RegistryError::Connect { op, host, reason }
            }
            NetFailure::Certificate(reason) | NetFailure::Tls(reason) => RegistryError::Tls { op, host, reason },
        }
    }

    /// Classify a reqwest error by walking its source chain.
    pub(crate) fn classify(err: &reqwest::Error) -> NetFailure {
        let mut io_kind = None;
        let mut tls: Option<NetFailure> = None;
        // io::Error hides a wrapped error from `source()` (it returns the inner error's
        // source), so look inside each io::Error with `get_ref` as well.
        fn inspect(
            e: &(dyn std::error::Error + 'static),
            io_kind: &mut Option<std::io::ErrorKind>,
            tls: &mut Option<NetFailure>,
            depth: usize,
        ) {
            if depth > 8 {
                return;
            }
            if let Some(r) = e.downcast_ref::<rustls::Error>() {
                tls.get_or_insert_with(|| classify_rustls(r));
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() != std::io::ErrorKind::Other {
                    io_kind.get_or_insert(io.kind());
                }
                if let Some(inner) = io.get_ref() {
                    inspect(inner, io_kind, tls, depth + 1);
                }
            }
        }
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            inspect(e, &mut io_kind, &mut tls, 0);
            cur = e.source();
        }
        if let Some(t) = tls {
            return t;
        }
        use std::io::ErrorKind as K;
        let reason = match io_kind {
            Some(K::ConnectionRefused) => Some("connection refused".to_string()),
            Some(K::ConnectionReset) => Some("connection reset by peer".to_string()),
            Some(K::ConnectionAborted) => Some("connection aborted".to_string()),
            Some(K::TimedOut) => Some("timed out".to_string()),
            Some(K::HostUnreachable) => Some("host unreachable".to_string()),
            Some(K::NetworkUnreachable) => Some("network unreachable".to_string()),
            Some(K::UnexpectedEof) => Some("connection closed unexpectedly".to_string()),
            _ => None,
        };
        let chain = tidy_chain(&error_chain(err));
        if err.is_timeout() {
            return NetFailure::Connect(reason.unwrap_or_else(|| "timed out".to_string()));
        }
        if err.is_connect() {
            // hyper's resolver error says the same thing four times over; keep the cause.
            if reason.is_none() && chain.contains("dns error") {
                let cause = chain.rsplit(": ").next().unwrap_or("no such host");
                return NetFailure::Connect(format!("its name cannot be resolved ({cause})"));
            }
            return NetFailure::Connect(reason.unwrap_or(chain));
        }
        if err.is_body() || err.is_decode() || err.is_request() || io_kind.is_some() {
            return NetFailure::Broken(reason.unwrap_or(chain));
        }
        NetFailure::Other(chain)
    }
}

fn classify_rustls(e: &rustls::Error) -> NetFailure {
    match e {
        rustls::Error::InvalidCertificate(_) | rustls::Error::InvalidCertRevocationList(_) => {
            NetFailure::Certificate(format!("the server's certificate was rejected: {e}"))
        }
        _ => NetFailure::Tls(e.to_string()),
    }
}

/// A reqwest/hyper chain without what repeats the request or the layer it failed in:
/// `error sending request for url (http://…?_state=…): client error (SendRequest):
/// connection closed before message completed` → `connection closed before message
/// completed`. (The operation and registry are in the error around it.)
fn tidy_chain(chain: &str) -> String {
    let mut parts: Vec<&str> = chain.split(": ").collect();
    parts.retain(|p| {
        !(p.starts_with("error sending request for url")
            || p.starts_with("error sending request")
            || p.starts_with("client error (")
            || p.starts_with("request or response body error"))
    });
    if parts.is_empty() {
        return chain.to_string();
    }
    parts.join(": ")
}

/// `a: b: c` from an error and its sources, without repeats.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}
