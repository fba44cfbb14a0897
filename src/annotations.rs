//! `--annotation [TYPE[PLATFORMS]:]KEY=VALUE` and the `-o ...,annotation[-TYPE].KEY=VALUE`
//! output attributes, as buildx reads them: where each annotation goes (the image
//! manifest, the index, a manifest's descriptor in the index, the index's descriptor
//! in an OCI layout) and for which platforms.

use std::collections::BTreeMap;

use strata_oci::image::Platform;

use crate::{Failure, Result};

/// Where an annotation is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Manifest,
    Index,
    ManifestDescriptor,
    IndexDescriptor,
}

impl Target {
    fn from_name(name: &str) -> Option<Target> {
        Some(match name {
            "manifest" => Target::Manifest,
            "index" => Target::Index,
            "manifest-descriptor" => Target::ManifestDescriptor,
            "index-descriptor" => Target::IndexDescriptor,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Annotation {
    target: Target,
    /// Only for these platforms (manifest and manifest-descriptor annotations).
    platforms: Option<Vec<Platform>>,
    key: String,
    value: String,
}

/// Every annotation of a build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations(Vec<Annotation>);

impl Annotations {
    /// The `--annotation` flags and one output's attributes; a malformed one is a usage
    /// error.
    pub fn parse(flags: &[String], output_attrs: &BTreeMap<String, String>) -> Result<Annotations> {
        Self::parse_with_default(flags, output_attrs, Target::Manifest)
    }

    /// `strata imagetools create --annotation`: untyped ones go on the index (as buildx),
    /// and the manifests, which are not rewritten, take none.
    pub fn parse_for_index(flags: &[String]) -> Result<Annotations> {
        let a = Self::parse_with_default(flags, &BTreeMap::new(), Target::Index)?;
        if a.0.iter().any(|a| a.target == Target::Manifest) {
            return Err(Failure::usage(
                "error: --annotation manifest:...: imagetools create does not rewrite manifests; use index:, manifest-descriptor: or index-descriptor:",
            ));
        }
        Ok(a)
    }

    fn parse_with_default(
        flags: &[String],
        output_attrs: &BTreeMap<String, String>,
        default: Target,
    ) -> Result<Annotations> {
        let mut out = Vec::new();
        for flag in flags {
            let (head, value) = flag
                .split_once('=')
                .ok_or_else(|| Failure::usage(format!("error: --annotation {flag:?}: expected [TYPE:]KEY=VALUE")))?;
            let (target, platforms, key) = match head.split_once(':') {
                Some((prefix, key)) if typed(prefix).is_some() => {
                    let (target, platforms) = typed(prefix).unwrap_or((Target::Manifest, None));
                    (target, parse_platforms(platforms, flag)?, key)
                }
                _ => (default, None, head),
            };
            if key.is_empty() {
                return Err(Failure::usage(format!("error: --annotation {flag:?}: the key is empty")));
            }
            out.push(Annotation { target, platforms, key: key.to_string(), value: value.to_string() });
        }
        for (attr, value) in output_attrs {
            let Some(rest) = attr.strip_prefix("annotation") else { continue };
            let (prefix, key) = match rest.split_once('.') {
                Some(("", key)) => ("manifest", key),
                Some((p, key)) => match p.strip_prefix('-') {
                    Some(p) => (p, key),
                    None => continue,
                },
                None => continue,
            };
            let (target, platforms) = typed(prefix).ok_or_else(|| {
                Failure::usage(format!("error: -o ...,{attr}=...: unknown annotation type {prefix:?}"))
            })?;
            out.push(Annotation {
                target,
                platforms: parse_platforms(platforms, attr)?,
                key: key.to_string(),
                value: value.clone(),
            });
        }
        Ok(Annotations(out))
    }

    fn select(&self, target: Target, platform: Option<&Platform>) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter(|a| a.target == target)
            .filter(|a| match (&a.platforms, platform) {
                (None, _) => true,
                (Some(ps), Some(p)) => ps.iter().any(|q| q.matches(p)),
                (Some(_), None) => false,
            })
            .map(|a| (a.key.clone(), a.value.clone()))
            .collect()
    }

    /// Annotations of the image manifest of `platform`.
    pub fn manifest(&self, platform: &Platform) -> BTreeMap<String, String> {
        self.select(Target::Manifest, Some(platform))
    }

    /// Annotations of `platform`'s manifest descriptor in the index.
    pub fn manifest_descriptor(&self, platform: &Platform) -> BTreeMap<String, String> {
        self.select(Target::ManifestDescriptor, Some(platform))
    }

    /// Annotations of the image index.
    pub fn index(&self) -> BTreeMap<String, String> {
        self.select(Target::Index, None)
    }

    /// Annotations of the index's (or single manifest's) descriptor in an OCI layout.
    pub fn index_descriptor(&self) -> BTreeMap<String, String> {
        self.select(Target::IndexDescriptor, None)
    }

    /// Whether any annotation needs an image index.
    pub fn need_index(&self) -> bool {
        self.0.iter().any(|a| matches!(a.target, Target::Index | Target::ManifestDescriptor))
    }
}

/// `manifest`, `index[linux/amd64]`... → the target and the platform list, if any.
fn typed(prefix: &str) -> Option<(Target, Option<&str>)> {
    match prefix.split_once('[') {
        Some((name, rest)) => Some((Target::from_name(name)?, Some(rest.strip_suffix(']')?))),
        None => Some((Target::from_name(prefix)?, None)),
    }
}

fn parse_platforms(list: Option<&str>, shown: &str) -> Result<Option<Vec<Platform>>> {
    let Some(list) = list else { return Ok(None) };
    list.split(',')
        .map(|p| {
            p.trim()
                .parse::<Platform>()
                .map_err(|e| Failure::usage(format!("error: --annotation {shown:?}: platform {p:?}: {e}")))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildx_syntax() {
        let flags = vec![
            "org.a=1".to_string(),
            "index:org.b=2".into(),
            "manifest[linux/arm64]:org.c=3".into(),
            "manifest-descriptor:org.d=4".into(),
        ];
        let mut attrs = BTreeMap::new();
        attrs.insert("annotation.org.e".to_string(), "5".to_string());
        attrs.insert("annotation-index-descriptor.org.f".to_string(), "6".to_string());
        let a = Annotations::parse(&flags, &attrs).unwrap();
        let amd: Platform = "linux/amd64".parse().unwrap();
        let arm: Platform = "linux/arm64".parse().unwrap();
        assert_eq!(a.manifest(&amd).keys().collect::<Vec<_>>(), ["org.a", "org.e"]);
        assert_eq!(a.manifest(&arm).keys().collect::<Vec<_>>(), ["org.a", "org.c", "org.e"]);
        assert_eq!(a.index().get("org.b").map(String::as_str), Some("2"));
        assert_eq!(a.manifest_descriptor(&amd).get("org.d").map(String::as_str), Some("4"));
        assert_eq!(a.index_descriptor().get("org.f").map(String::as_str), Some("6"));
        assert!(a.need_index());
        assert!(Annotations::parse(&["nokey".into()], &BTreeMap::new()).is_err());
        assert!(Annotations::parse(&["manifest[bogus/]:k=v".into()], &BTreeMap::new()).is_err());
        let mut bad = BTreeMap::new();
        bad.insert("annotation-nope.k".to_string(), "v".to_string());
        assert!(Annotations::parse(&[], &bad).is_err());
        // A key with a colon that is not a type stays whole.
        let a = Annotations::parse(&["com.example:key=v".into()], &BTreeMap::new()).unwrap();
        assert_eq!(a.manifest(&amd).keys().collect::<Vec<_>>(), ["com.example:key"]);
    }
}
