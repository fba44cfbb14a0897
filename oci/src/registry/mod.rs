//! The OCI distribution client, pull and push: a thin client of strata's own over reqwest.
//!
//! - [`client`]: [`RegistryClient`]: `resolve`, `pull_image`, `fetch_blob`.
//! - [`push`]: [`RegistryClient::push_image`]: blobs (skipped, mounted, uploaded whole or
//!   in resumable chunks), then manifests, then the index, then the tags.
//! - [`transport`]: per-host TLS clients, HTTPS vs plain HTTP, retries; [`Transport::send`]
//!   is what push builds on.
//! - [`auth`]: [`AuthSession`] and [`Scope`]: Basic and Bearer (token) authentication,
//!   tokens cached per host and scope.
//! - [`challenge`]: `WWW-Authenticate` parsing.
//! - [`credentials`]: docker `config.json` (auths, credHelpers, credsStore), [`login`] and
//!   [`logout`].
//! - [`manifest`]: index/manifest detection and parsing (shared with [`crate::layout`]).
//! - `blob`: the resumable, streamed, verified blob download.
//! - [`error`]: [`RegistryError`], whose every message names the operation, the reference
//!   and the registry.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_oci::registry::{RegistryClient, RegistryOptions};
//! use strata_oci::{image::Platform, reference::Reference, store::BlobStore};
//! let client = RegistryClient::new(RegistryOptions::default())?;
//! let store = BlobStore::open("/var/lib/strata")?;
//! let r: Reference = "busybox".parse()?;
//! let image = client.pull_image(&r, &"linux/amd64".parse()?, &store).await?;
//! println!("{} {}", image.manifest_digest, image.config.architecture);
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::time::Duration;

pub mod auth;
mod blob;
pub mod challenge;
pub mod client;
pub mod credentials;
pub mod error;
pub mod manifest;
pub mod push;
pub mod transport;

pub use auth::{AuthSession, Scope};
pub use client::{PulledImage, RegistryClient, ResolvedManifest};
pub use credentials::{login, logout, Credential, CredentialError, DockerConfig};
pub use error::{Operation, RegistryError};
pub use push::{PushEvent, PushOptions, PushReport};
pub use transport::{RegistryRequest, Target, Transport};

/// How a [`RegistryClient`] connects and authenticates.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Registries (`host` or `host:port`) allowed plain HTTP and unverified TLS.
    /// Loopback registries may use plain HTTP without being listed (TLS is still verified).
    pub insecure_registries: Vec<String>,
    /// Extra CA certificates (PEM) trusted for every registry, besides the system roots.
    pub ca_files: Vec<PathBuf>,
    /// Per-host certificates (`HOST/*.crt`, `HOST/client.cert` + `client.key`);
    /// default `/etc/docker/certs.d`.
    pub certs_dir: Option<PathBuf>,
    /// Where docker's `config.json` is; default `$DOCKER_CONFIG` or `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
    /// Where to look for `docker-credential-*` helpers; empty means `$PATH`.
    pub credential_helper_dirs: Vec<PathBuf>,
    /// Credentials given directly (registry → credential); they win over config.json.
    pub credentials: Vec<(String, Credential)>,
    pub user_agent: String,
    /// Layers downloaded at once per pull.
    pub max_concurrent_downloads: usize,
    /// Tries per request (and resumptions without progress per blob).
    pub max_attempts: u32,
    /// First retry delay; doubled each time (with jitter).
    pub retry_base_delay: Duration,
    pub connect_timeout: Duration,
    /// Longest wait for any single read; a stalled download is then resumed.
    pub read_timeout: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure_registries: Vec::new(),
            ca_files: Vec::new(),
            certs_dir: None,
            docker_config_dir: None,
            credential_helper_dirs: Vec::new(),
            credentials: Vec::new(),
            user_agent: concat!("strata/", env!("CARGO_PKG_VERSION")).to_string(),
            max_concurrent_downloads: 4,
            max_attempts: 4,
            retry_base_delay: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}
