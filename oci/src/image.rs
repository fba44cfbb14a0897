//! OCI image types: descriptors, manifests, indexes, platforms, and strata's own image
//! configuration. Everything strata writes is serialised by [`canonical_json`]
//! (object keys sorted, no insignificant whitespace), so equal values give equal digests.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "artifactType")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
            artifact_type: None,
        }
    }
}

/// An OS/architecture pair as in an image index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "os.version")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "os.features")]
    pub os_features: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8")]
pub struct PlatformParseError(pub String);

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            architecture: architecture.to_string(),
            os: os.to_string(),
            variant: variant.map(str::to_string),
            os_version: None,
            os_features: Vec::new(),
        }
        .normalized()
    }

    /// The platform of the machine strata runs on.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "arm" => "arm",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform::new("linux", arch, None)
    }

    /// containerd's normalisation: aliases folded, arm64's default variant dropped,
    /// 32-bit arm defaulting to v7.
    pub fn normalized(mut self) -> Self {
        self.os = self.os.to_ascii_lowercase();
        let arch = self.architecture.to_ascii_lowercase();
        let (arch, variant) = match (arch.as_str(), self.variant.as_deref()) {
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64", v.filter(|v| *v != "v1").map(str::to_string)),
            ("aarch64" | "arm64", Some("v8") | None) => ("arm64", None),
            ("aarch64" | "arm64", Some(v)) => ("arm64", Some(v.to_string())),
            ("armhf", _) => ("arm", Some("v7".to_string())),
            ("armel", _) => ("arm", Some("v6".to_string())),
            ("arm", None) => ("arm", Some("v7".to_string())),
            ("arm", Some(v)) => ("arm", Some(v.to_string())),
            ("i386" | "i686" | "386", v) => ("386", v.map(str::to_string)),
            (a, v) => (a, v.map(str::to_string)),
        };
        self.architecture = arch.to_string();
        self.variant = variant;
        self
    }

    /// Does an index entry for `other` serve this (normalised) platform?
    pub fn matches(&self, other: &Platform) -> bool {
        let a = self.clone().normalized();
        let b = other.clone().normalized();
        a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
    }
}

impl FromStr for Platform {
    type Err = PlatformParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(PlatformParseError(s.to_string()));
        }
        match parts.as_slice() {
            [os, arch] => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] => Ok(Platform::new(os, arch, Some(variant))),
            [arch] if *arch != "linux" && *arch != "windows" => Ok(Platform::new("linux", arch, None)),
            _ => Err(PlatformParseError(s.to_string())),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image manifest (OCI or Docker schema2; the fields are the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(default, rename = "mediaType", skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index / manifest list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(default, rename = "mediaType", skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// No entry of an index serves the wanted platform.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no image for {wanted} in the index (available: {})", list_platforms(.available))]
pub struct NoMatchingPlatform {
    pub wanted: Platform,
    /// The platforms the index does offer (attestations and unknown/unknown left out).
    pub available: Vec<Platform>,
}

/// `linux/amd64, linux/arm64`, or `none` for an empty list.
pub fn list_platforms(platforms: &[Platform]) -> String {
    if platforms.is_empty() {
        return "none".to_string();
    }
    platforms.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
}

impl Index {
    /// The entry (manifest or nested index) that serves `wanted`: the first entry whose
    /// platform [`Platform::matches`] it. Attestation manifests (`unknown/unknown`) are
    /// never chosen; an index with one entry and no platform on it gives that entry.
    pub fn select_platform(&self, wanted: &Platform) -> Result<&Descriptor, NoMatchingPlatform> {
        let candidates: Vec<&Descriptor> = self
            .manifests
            .iter()
            .filter(|d| crate::media::is_manifest(&d.media_type) || crate::media::is_index(&d.media_type))
            .filter(|d| !is_attestation(d))
            .collect();
        if let Some(d) = candidates.iter().find(|d| d.platform.as_ref().is_some_and(|p| wanted.matches(p))) {
            return Ok(d);
        }
        if let [only] = candidates.as_slice() {
            if only.platform.is_none() {
                return Ok(only);
            }
        }
        let mut available: Vec<Platform> =
            candidates.iter().filter_map(|d| d.platform.clone()).map(Platform::normalized).collect();
        available.dedup();
        Err(NoMatchingPlatform { wanted: wanted.clone(), available })
    }
}

fn is_attestation(d: &Descriptor) -> bool {
    d.annotations.get("vnd.docker.reference.type").is_some_and(|t| t == "attestation-manifest")
        || d.platform.as_ref().is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
}

/// A healthcheck as Docker stores it (durations in nanoseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Healthcheck {
    #[serde(rename = "Test", default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(rename = "Interval", default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(rename = "Timeout", default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(rename = "StartPeriod", default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(rename = "StartInterval", default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    #[serde(rename = "Retries", default, skip_serializing_if = "is_zero_i32")]
    pub retries: i32,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}
fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

/// The run-time part of an image configuration (`config` in the JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RunConfig {
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(rename = "ExposedPorts", default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Volumes", default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "WorkingDir", default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "StopSignal", default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(rename = "Healthcheck", default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(rename = "Shell", default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    #[serde(rename = "OnBuild", default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    #[serde(rename = "ArgsEscaped", default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
}

impl RunConfig {
    /// The value of an environment variable in `Env`.
    pub fn env_get(&self, name: &str) -> Option<&str> {
        self.env.as_ref()?.iter().rev().find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            (k == name).then_some(v)
        })
    }

    /// Set (or replace in place) an environment variable in `Env`.
    pub fn env_set(&mut self, name: &str, value: &str) {
        let env = self.env.get_or_insert_with(Vec::new);
        let entry = format!("{name}={value}");
        if let Some(slot) = env.iter_mut().find(|kv| kv.split_once('=').map(|(k, _)| k).unwrap_or(kv) == name) {
            *slot = entry;
        } else {
            env.push(entry);
        }
    }
}

/// One entry of the image history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs { kind: "layers".into(), diff_ids: Vec::new() }
    }
}

/// An image configuration, strata's own type: unlike oci-spec's it keeps Healthcheck,
/// OnBuild and Shell, and uses ordered maps so serialisation is stable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "os.version")]
    pub os_version: Option<String>,
    #[serde(default)]
    pub config: RunConfig,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// A strata cache document carried in the image (`--cache-to type=inline`); never
    /// inherited by an image built on this one.
    #[serde(default, rename = "io.strata.cache.v1", skip_serializing_if = "Option::is_none")]
    pub inline_cache: Option<serde_json::Value>,
}

impl ImageConfig {
    pub fn platform(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, self.variant.as_deref())
    }
}

/// Serialise with object keys sorted and no whitespace: the bytes strata hashes.
pub fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    let v = serde_json::to_value(value).expect("image types always serialise");
    let mut out = Vec::new();
    write_sorted(&v, &mut out);
    out
}

fn write_sorted(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(serde_json::to_string(k).unwrap().as_bytes());
                out.push(b':');
                write_sorted(&map[k.as_str()], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_sorted(item, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(serde_json::to_string(other).unwrap().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parsing_and_normalisation() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64");
        let p: Platform = "linux/x86_64".parse().unwrap();
        assert_eq!(p.to_string(), "linux/amd64");
        assert_eq!("linux/arm".parse::<Platform>().unwrap().to_string(), "linux/arm/v7");
        assert!("linux/".parse::<Platform>().is_err());
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let mut labels = BTreeMap::new();
        labels.insert("b".to_string(), "2".to_string());
        labels.insert("a".to_string(), "1".to_string());
        let cfg = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            config: RunConfig { labels: Some(labels), ..Default::default() },
            ..Default::default()
        };
        let s = String::from_utf8(canonical_json(&cfg)).unwrap();
        assert_eq!(
            s,
            r#"{"architecture":"amd64","config":{"Labels":{"a":"1","b":"2"}},"os":"linux","rootfs":{"diff_ids":[],"type":"layers"}}"#
        );
    }

    #[test]
    fn select_platform_from_index() {
        let d = |arch: &str, variant: Option<&str>| {
            let mut d = Descriptor::new(crate::media::OCI_MANIFEST, Digest::of_bytes(arch.as_bytes()), 1);
            d.platform = Some(Platform::new("linux", arch, variant));
            d
        };
        let mut att = Descriptor::new(crate::media::OCI_MANIFEST, Digest::of_bytes(b"att"), 1);
        att.platform = Some(Platform::new("unknown", "unknown", None));
        att.annotations.insert("vnd.docker.reference.type".into(), "attestation-manifest".into());
        let index = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![att, d("amd64", None), d("arm64", Some("v8")), d("arm", Some("v7"))],
            annotations: BTreeMap::new(),
        };
        let pick =
            |p: &str| index.select_platform(&p.parse().unwrap()).map(|d| d.platform.clone().unwrap().to_string());
        assert_eq!(pick("linux/amd64").unwrap(), "linux/amd64");
        assert_eq!(pick("linux/arm64").unwrap(), "linux/arm64");
        assert_eq!(pick("linux/aarch64").unwrap(), "linux/arm64");
        assert_eq!(pick("linux/arm").unwrap(), "linux/arm/v7");
        let err = pick("linux/s390x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no image for linux/s390x in the index (available: linux/amd64, linux/arm64, linux/arm/v7)"
        );

        let single = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![Descriptor::new(crate::media::OCI_MANIFEST, Digest::of_bytes(b"x"), 1)],
            annotations: BTreeMap::new(),
        };
        assert!(single.select_platform(&"linux/riscv64".parse().unwrap()).is_ok());
    }

    #[test]
    fn env_set_replaces_in_place() {
        let mut rc = RunConfig { env: Some(vec!["PATH=/bin".into(), "A=1".into()]), ..Default::default() };
        rc.env_set("PATH", "/usr/bin");
        rc.env_set("B", "2");
        assert_eq!(rc.env.as_deref().unwrap(), ["PATH=/usr/bin", "A=1", "B=2"]);
        assert_eq!(rc.env_get("A"), Some("1"));
    }
}
