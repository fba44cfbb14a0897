//! Image references (`[registry/]repository[:tag][@digest]`), parsed and normalised the
//! way docker does it (`busybox` → `docker.io/library/busybox:latest`).
//!
//! This module owns the grammar of references and their normal form; it knows nothing of
//! HTTP. [`Reference::api_host`] tells the distribution client where to connect and
//! [`Reference::is_loopback`] whether plain HTTP may be tried.
//!
//! ```
//! use strata_oci::reference::Reference;
//! let r: Reference = "busybox".parse().unwrap();
//! assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
//! assert_eq!(r.familiar(), "busybox:latest");
//! assert_eq!(r.api_host(), "registry-1.docker.io");
//! let r: Reference = "127.0.0.1:5000/library/busybox:1.36".parse().unwrap();
//! assert!(r.is_loopback());
//! ```

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::digest::Digest;

/// The registry used when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The host that serves the API of [`DEFAULT_REGISTRY`].
pub const DEFAULT_REGISTRY_API_HOST: &str = "registry-1.docker.io";
/// The tag used when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with port if any (`docker.io`, `127.0.0.1:5000`, `[::1]:5000`).
    pub registry: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// The tag; `latest` when the input named neither tag nor digest.
    pub tag: Option<String>,
    /// The digest, when the input pinned one.
    pub digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference: empty string")]
    Empty,
    #[error("invalid image reference {input:?}: repository name must be lowercase")]
    Uppercase { input: String },
    #[error("invalid image reference {input:?}: repository name is longer than {MAX_NAME_LEN} characters")]
    NameTooLong { input: String },
    #[error("invalid image reference {input:?}: invalid registry host {registry:?}")]
    InvalidRegistry { input: String, registry: String },
    #[error(
        "invalid image reference {input:?}: invalid repository path component {component:?} \
         (lowercase letters, digits and single separators . _ __ - only)"
    )]
    InvalidRepository { input: String, component: String },
    #[error("invalid image reference {input:?}: invalid tag {tag:?} (letters, digits, _ . - only, at most 128, not starting with . or -)")]
    InvalidTag { input: String, tag: String },
    #[error(
        "invalid image reference {input:?}: invalid digest {digest:?} (expected sha256: and 64 lowercase hex digits)"
    )]
    InvalidDigest { input: String, digest: String },
    #[error(
        "invalid image reference {input:?}: a 64-character hexadecimal string is an image ID, not a repository name"
    )]
    HexName { input: String },
}

impl Reference {
    /// Parse and normalise (same as `str::parse`).
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        input.parse()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What goes after `/manifests/` in the API: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The short form docker prints: `busybox:latest`, `user/app:1`, but
    /// `127.0.0.1:5000/library/busybox:latest` in full for other registries.
    pub fn familiar(&self) -> String {
        let name = if self.registry == DEFAULT_REGISTRY {
            match self.repository.strip_prefix("library/") {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        };
        let mut s = name;
        push_tag_digest(&mut s, self.tag.as_deref(), self.digest.as_ref());
        s
    }

    /// The host (and port) that serves the registry API.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// Is the registry on this machine (`localhost`, `127.0.0.0/8`, `::1`)?
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.registry)
    }

    /// The same repository, pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference { digest: Some(digest), ..self.clone() }
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !valid_tag(tag) {
            return Err(ReferenceError::InvalidTag { input: format!("{}:{tag}", self.name()), tag: tag.to_string() });
        }
        Ok(Reference { tag: Some(tag.to_string()), digest: None, ..self.clone() })
    }
}

/// The API host of a registry name: `docker.io` is served by `registry-1.docker.io`.
pub fn api_host(registry: &str) -> &str {
    if registry == DEFAULT_REGISTRY || registry == "index.docker.io" {
        DEFAULT_REGISTRY_API_HOST
    } else {
        registry
    }
}

/// Is `host[:port]` a loopback address or `localhost`?
pub fn is_loopback_host(host_port: &str) -> bool {
    let host = strip_port(host_port);
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// `host` of `host:port`, `[v6]:port` or `host`; brackets removed.
pub fn strip_port(host_port: &str) -> &str {
    if let Some(rest) = host_port.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host_port.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host_port,
    }
}

fn push_tag_digest(s: &mut String, tag: Option<&str>, digest: Option<&Digest>) {
    if let Some(t) = tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = digest {
        s.push('@');
        s.push_str(&d.to_string());
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        push_tag_digest(&mut s, self.tag.as_deref(), self.digest.as_ref());
        f.write_str(&s)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let err_input = || input.to_string();

        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => {
                let digest = d
                    .parse::<Digest>()
                    .map_err(|_| ReferenceError::InvalidDigest { input: err_input(), digest: d.to_string() })?;
                (n, Some(digest))
            }
            None => (input, None),
        };

        // A tag is what follows the last ':' when no '/' comes after it.
        let (name, tag) = match name_tag.rfind(':') {
            Some(i) if !name_tag[i + 1..].contains('/') => (&name_tag[..i], Some(&name_tag[i + 1..])),
            _ => (name_tag, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(ReferenceError::InvalidTag { input: err_input(), tag: t.to_string() });
            }
        }
        if name.is_empty() {
            return Err(ReferenceError::InvalidRepository { input: err_input(), component: String::new() });
        }

        // The first component is a registry when it looks like a host: it has a '.' or a
        // ':', is `localhost`, or has uppercase letters (repositories cannot).
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if !valid_registry(&registry) {
            return Err(ReferenceError::InvalidRegistry { input: err_input(), registry });
        }
        let registry = if registry == "index.docker.io" { DEFAULT_REGISTRY.to_string() } else { registry };

        if registry == DEFAULT_REGISTRY
            && !name.starts_with("docker.io/")
            && path.len() == 64
            && path.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(ReferenceError::HexName { input: err_input() });
        }
        let repository =
            if registry == DEFAULT_REGISTRY && !path.contains('/') { format!("library/{path}") } else { path };

        for component in repository.split('/') {
            if !valid_path_component(component) {
                if component.bytes().any(|b| b.is_ascii_uppercase())
                    && valid_path_component(&component.to_ascii_lowercase())
                {
                    return Err(ReferenceError::Uppercase { input: err_input() });
                }
                return Err(ReferenceError::InvalidRepository { input: err_input(), component: component.to_string() });
            }
        }
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::NameTooLong { input: err_input() });
        }

        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference { registry, repository, tag, digest })
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__", or one or more "-".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `host[:port]` where host is a DNS name, an IPv4 address or `[IPv6]`.
fn valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return false };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return false,
            },
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    match host {
        None => true,
        Some(h) => {
            !h.is_empty()
                && h.split('.').all(|label| {
                    let b = label.as_bytes();
                    !b.is_empty()
                        && b[0].is_ascii_alphanumeric()
                        && b[b.len() - 1].is_ascii_alphanumeric()
                        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn p(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_normalisation() {
        let r = p("busybox");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "library/busybox", Some("latest"))
        );
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar(), "busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert!(!r.is_loopback());

        let r = p("user/app");
        assert_eq!(r.to_string(), "docker.io/user/app:latest");
        assert_eq!(r.familiar(), "user/app:latest");

        assert_eq!(p("docker.io/busybox:1.36").to_string(), "docker.io/library/busybox:1.36");
        assert_eq!(p("index.docker.io/library/busybox").to_string(), "docker.io/library/busybox:latest");
        assert_eq!(p("docker.io/library/busybox").familiar(), "busybox:latest");
        assert_eq!(p("library/busybox:1").familiar(), "busybox:1");
        assert_eq!(p("a/b/c").familiar(), "a/b/c:latest");
    }

    #[test]
    fn other_registries() {
        let r = p("127.0.0.1:5000/library/busybox:latest");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.api_host(), "127.0.0.1:5000");
        assert!(r.is_loopback());
        assert_eq!(r.familiar(), "127.0.0.1:5000/library/busybox:latest");

        let r = p("localhost:5000/x");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("localhost:5000", "x", Some("latest"))
        );
        assert!(r.is_loopback());
        let r = p("localhost/x");
        assert_eq!(r.registry, "localhost");
        assert!(p("[::1]:5000/a/b").is_loopback());
        assert_eq!(p("[::1]:5000/a/b").registry, "[::1]:5000");
        assert!(!p("ghcr.io/o/r").is_loopback());
        assert!(!p("127.example.com/o/r").is_loopback());
        assert!(p("127.3.2.1:80/o/r").is_loopback());
        assert_eq!(p("Example.COM/o/r").registry, "Example.COM");
        assert_eq!(p("quay.io/a/b/c/d:v1.0-rc_1").repository, "a/b/c/d");
    }

    #[test]
    fn digests_and_tags() {
        let r = p(&format!("busybox@{D}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_ref().map(|d| d.to_string()).as_deref(), Some(D));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.manifest_reference(), D);

        let r = p(&format!("localhost:5000/busybox:1.36@{D}"));
        assert_eq!(r.tag.as_deref(), Some("1.36"));
        assert_eq!(r.to_string(), format!("localhost:5000/busybox:1.36@{D}"));
        assert_eq!(r.familiar(), format!("localhost:5000/busybox:1.36@{D}"));
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(p("a:b").manifest_reference(), "b");
        // A port is not a tag, but a bare "host:5000" is a name with a tag (as in docker).
        assert_eq!(p("localhost:5000/x").tag.as_deref(), Some("latest"));
        assert_eq!(p("localhost:5000").tag.as_deref(), Some("5000"));
    }

    #[test]
    fn round_trip_display() {
        for s in ["docker.io/library/busybox:latest", "127.0.0.1:5000/a/b:c", "ghcr.io/o/r:1"] {
            assert_eq!(p(s).to_string(), s);
            assert_eq!(p(&p(s).to_string()), p(s));
        }
        let j = serde_json::to_string(&p("busybox")).unwrap();
        assert_eq!(j, "\"docker.io/library/busybox:latest\"");
        assert_eq!(serde_json::from_str::<Reference>(&j).unwrap(), p("busybox"));
    }

    #[test]
    fn errors_are_clear() {
        let e = |s: &str| s.parse::<Reference>().unwrap_err();
        assert_eq!(e(""), ReferenceError::Empty);
        assert!(matches!(e("BusyBox"), ReferenceError::Uppercase { .. }));
        assert!(e("BusyBox").to_string().contains("must be lowercase"), "{}", e("BusyBox"));
        assert!(matches!(e("busybox:"), ReferenceError::InvalidTag { .. }));
        assert!(matches!(e("busybox:-x"), ReferenceError::InvalidTag { .. }));
        assert!(matches!(e("busybox:a+b"), ReferenceError::InvalidTag { .. }));
        assert!(matches!(e("busybox@sha256:abc"), ReferenceError::InvalidDigest { .. }));
        assert!(matches!(e("a//b"), ReferenceError::InvalidRepository { .. }));
        assert!(matches!(e("a/b_-c"), ReferenceError::InvalidRepository { .. }));
        assert!(matches!(e("a/-b"), ReferenceError::InvalidRepository { .. }));
        assert!(matches!(e("host:port/x"), ReferenceError::InvalidRegistry { .. }));
        assert!(matches!(e("-bad.com/x"), ReferenceError::InvalidRegistry { .. }));
        assert!(matches!(e(&"a".repeat(300)), ReferenceError::NameTooLong { .. }));
        assert!(matches!(e(&"a".repeat(64)), ReferenceError::HexName { .. }));
        assert!(matches!(e(":tag"), ReferenceError::InvalidRepository { .. }));
        assert!(e("busybox:a+b").to_string().contains("\"busybox:a+b\""));
        // Separators that are allowed.
        for ok in ["a__b", "a.b", "a_b", "a---b", "a-b/c.d_e"] {
            p(ok);
        }
    }

    #[test]
    fn host_helpers() {
        assert_eq!(strip_port("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(strip_port("[::1]:5000"), "::1");
        assert_eq!(strip_port("example.com"), "example.com");
        assert!(is_loopback_host("localhost:1"));
        assert!(is_loopback_host("[::1]"));
        assert!(!is_loopback_host("10.0.0.1:5000"));
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("ghcr.io"), "ghcr.io");
    }
}
