//! `--cache-to` and `--cache-from`, in buildx's syntax, parsed and checked with no I/O:
//! a key strata does not know, a value it cannot honour or a cache type it does not
//! have is a usage error (exit code 2), never ignored.
//!
//! | type | `--cache-to` keys | `--cache-from` keys |
//! |---|---|---|
//! | `registry` (or a bare `REF`) | `ref`, `mode`, `compression`, `compression-level`, `oci-mediatypes`, `image-manifest`, `ignore-error`, `mounts`, `mounts-max-size` | `ref` |
//! | `local` | `dest`, `tag`, `reset`, and the registry's but `ref` | `src`, `tag` |
//! | `inline` | `mode=min` | — (`--cache-from` the image's ref) |
//!
//! `mounts` and `mounts-max-size` are strata's (buildx has no way to export cache
//! mounts); `reset` too (BuildKit's local caches only grow).

use std::collections::BTreeMap;
use std::path::PathBuf;

use strata_exporter::layer::Compression;
use strata_oci::reference::Reference;

/// How much of the build a cache export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// The final images' layer chains.
    Min,
    /// Every step of every stage built, intermediate stages included.
    Max,
}

/// Where a cache is written.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportTarget {
    Registry(Reference),
    /// An OCI image layout directory; the cache manifest is tagged `tag`.
    Local {
        dir: PathBuf,
        tag: String,
        reset: bool,
    },
    /// In the exported image's config.
    Inline,
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheExport {
    pub target: ExportTarget,
    pub mode: CacheMode,
    /// How the layers a step made are compressed (gzip 6, as a push, unless asked).
    pub compression: Compression,
    /// A failed export is a warning, not a failed build.
    pub ignore_error: bool,
    /// Export the contents of the cache mounts the build used.
    pub mounts: bool,
    /// Cache mounts larger than this are left out (with a warning).
    pub mounts_max_size: u64,
    /// The spec as given, for messages.
    pub shown: String,
}

/// Where a cache is read from.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportSource {
    /// A cache manifest, or an image whose config holds an inline cache.
    Registry(Reference),
    Local {
        dir: PathBuf,
        tag: String,
    },
}

/// One `--cache-from`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheImport {
    pub source: ImportSource,
    pub shown: String,
}

/// What `mounts-max-size` is unless given: enough for a package manager's downloads,
/// not a whole `target/` directory of a large project by accident.
pub const DEFAULT_MOUNTS_MAX_SIZE: u64 = 1 << 30;

/// The cache types strata has, for messages.
const SUPPORTED: &str = "registry, local and inline";

type SpecResult<T> = std::result::Result<T, String>;

/// `type=...,key=value,...`, or a bare reference (`type=registry,ref=...`).
fn fields(spec: &str) -> SpecResult<(String, BTreeMap<String, String>)> {
    if !spec.contains('=') {
        if spec.trim().is_empty() {
            return Err("an empty cache spec".into());
        }
        return Ok(("registry".into(), BTreeMap::from([("ref".to_string(), spec.trim().to_string())])));
    }
    let mut attrs = BTreeMap::new();
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = field.split_once('=').ok_or_else(|| format!("{field:?} is not KEY=VALUE"))?;
        if attrs.insert(k.trim().to_string(), v.trim().to_string()).is_some() {
            return Err(format!("{k} is given twice"));
        }
    }
    let kind = attrs.remove("type").unwrap_or_else(|| "registry".into());
    Ok((kind, attrs))
}

fn unsupported_type(kind: &str) -> String {
    match kind {
        "gha" | "s3" | "azblob" => format!("type={kind} is not supported by strata (it has {SUPPORTED})"),
        other => format!("unknown cache type {other:?} (strata has {SUPPORTED})"),
    }
}

fn only_keys(kind: &str, attrs: &BTreeMap<String, String>, allowed: &[&str]) -> SpecResult<()> {
    match attrs.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("type={kind}: unknown key {k:?} (it takes {})", allowed.join(", "))),
        None => Ok(()),
    }
}

fn boolean(attrs: &BTreeMap<String, String>, key: &str) -> SpecResult<Option<bool>> {
    match attrs.get(key).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(format!("{key}={other}: expected true or false")),
    }
}

fn reference(kind: &str, attrs: &BTreeMap<String, String>) -> SpecResult<Reference> {
    let r = attrs.get("ref").ok_or_else(|| format!("type={kind} needs ref=REGISTRY/REPOSITORY[:TAG]"))?;
    Reference::parse(r).map_err(|e| format!("ref={r}: {e}"))
}

/// Parse one `--cache-to`.
pub fn parse_export(spec: &str) -> SpecResult<CacheExport> {
    let (kind, attrs) = fields(spec)?;
    const SHARED: &[&str] = &[
        "mode",
        "compression",
        "compression-level",
        "oci-mediatypes",
        "image-manifest",
        "ignore-error",
        "mounts",
        "mounts-max-size",
    ];
    let target = match kind.as_str() {
        "registry" => {
            only_keys(&kind, &attrs, &[SHARED, &["ref"]].concat())?;
            ExportTarget::Registry(reference(&kind, &attrs)?)
        }
        "local" => {
            only_keys(&kind, &attrs, &[SHARED, &["dest", "tag", "reset"]].concat())?;
            let dir = attrs.get("dest").ok_or("type=local needs dest=DIR (an OCI layout directory)")?;
            ExportTarget::Local {
                dir: PathBuf::from(dir),
                tag: attrs.get("tag").cloned().unwrap_or_else(|| "latest".into()),
                reset: boolean(&attrs, "reset")?.unwrap_or(false),
            }
        }
        "inline" => {
            only_keys(&kind, &attrs, &["mode"])?;
            if attrs.get("mode").is_some_and(|m| m != "min") {
                return Err(
                    "type=inline holds mode=min only (its records travel in the image's config); use type=registry for mode=max".into(),
                );
            }
            ExportTarget::Inline
        }
        other => return Err(unsupported_type(other)),
    };
    let mode = match attrs.get("mode").map(String::as_str) {
        None | Some("min") => CacheMode::Min,
        Some("max") => CacheMode::Max,
        Some(other) => return Err(format!("mode={other}: expected min or max")),
    };
    let level = attrs
        .get("compression-level")
        .map(|l| l.parse::<i32>().map_err(|_| format!("compression-level={l}: expected a number")))
        .transpose()?;
    let compression = match attrs.get("compression").map(String::as_str) {
        None | Some("gzip") => Compression::Gzip { level: level.unwrap_or(6).clamp(0, 9) as u32 },
        Some("zstd") => Compression::Zstd { level: level.unwrap_or(3) },
        Some("uncompressed") => Compression::Uncompressed,
        Some(other) => return Err(format!("compression={other}: expected gzip, zstd or uncompressed")),
    };
    // strata's cache is always an OCI image manifest (the form every registry takes).
    if boolean(&attrs, "oci-mediatypes")? == Some(false) {
        return Err(
            "oci-mediatypes=false: strata's cache is an OCI image manifest; Docker media types are not offered".into(),
        );
    }
    if boolean(&attrs, "image-manifest")? == Some(false) {
        return Err(
            "image-manifest=false: strata's cache is always an OCI image manifest (the form every registry accepts)"
                .into(),
        );
    }
    let mounts_max_size = match attrs.get("mounts-max-size") {
        Some(s) => crate::units::parse_size(s).map_err(|e| format!("mounts-max-size: {e}"))?,
        None => DEFAULT_MOUNTS_MAX_SIZE,
    };
    Ok(CacheExport {
        target,
        mode,
        compression,
        ignore_error: boolean(&attrs, "ignore-error")?.unwrap_or(false),
        mounts: boolean(&attrs, "mounts")?.unwrap_or(false),
        mounts_max_size,
        shown: spec.to_string(),
    })
}

/// Parse one `--cache-from`.
pub fn parse_import(spec: &str) -> SpecResult<CacheImport> {
    let (kind, attrs) = fields(spec)?;
    let source = match kind.as_str() {
        "registry" => {
            only_keys(&kind, &attrs, &["ref"])?;
            ImportSource::Registry(reference(&kind, &attrs)?)
        }
        "local" => {
            only_keys(&kind, &attrs, &["src", "tag"])?;
            let dir = attrs.get("src").ok_or("type=local needs src=DIR (an OCI layout directory)")?;
            ImportSource::Local {
                dir: PathBuf::from(dir),
                tag: attrs.get("tag").cloned().unwrap_or_else(|| "latest".into()),
            }
        }
        "inline" => {
            return Err("type=inline is for --cache-to; read an inline cache with --cache-from REF (the image)".into())
        }
        other => return Err(unsupported_type(other)),
    };
    Ok(CacheImport { source, shown: spec.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildx_registry_specs() {
        let e = parse_export("type=registry,ref=127.0.0.1:5000/app:cache,mode=max,mounts=true").unwrap();
        assert_eq!(e.mode, CacheMode::Max);
        assert!(e.mounts && !e.ignore_error);
        assert_eq!(e.mounts_max_size, DEFAULT_MOUNTS_MAX_SIZE);
        assert_eq!(e.compression, Compression::Gzip { level: 6 });
        match e.target {
            ExportTarget::Registry(r) => assert_eq!(r.to_string(), "127.0.0.1:5000/app:cache"),
            other => panic!("{other:?}"),
        }
        // A bare reference is a registry cache, both ways.
        let bare = parse_export("127.0.0.1:5000/app:cache").unwrap();
        assert_eq!(bare.mode, CacheMode::Min);
        assert!(matches!(parse_import("127.0.0.1:5000/app:cache").unwrap().source, ImportSource::Registry(_)));
        let z = parse_export("type=registry,ref=r/a,compression=zstd,compression-level=9,ignore-error=true").unwrap();
        assert_eq!(z.compression, Compression::Zstd { level: 9 });
        assert!(z.ignore_error);
        let s = parse_export("type=registry,ref=r/a,mounts=true,mounts-max-size=200MB").unwrap();
        assert_eq!(s.mounts_max_size, 200_000_000);
    }

    #[test]
    fn local_and_inline() {
        let e = parse_export("type=local,dest=/tmp/c,mode=max,reset=true").unwrap();
        assert_eq!(e.target, ExportTarget::Local { dir: "/tmp/c".into(), tag: "latest".into(), reset: true });
        let i = parse_import("type=local,src=/tmp/c,tag=v2").unwrap();
        assert_eq!(i.source, ImportSource::Local { dir: "/tmp/c".into(), tag: "v2".into() });
        assert_eq!(parse_export("type=inline").unwrap().target, ExportTarget::Inline);
        assert!(parse_export("type=inline,mode=max").unwrap_err().contains("mode=min only"));
        assert!(parse_import("type=inline").unwrap_err().contains("--cache-to"));
    }

    #[test]
    fn what_strata_cannot_honour_is_refused() {
        for (spec, says) in [
            ("type=gha", "not supported by strata (it has registry, local and inline)"),
            ("type=s3,bucket=b", "type=s3 is not supported"),
            ("type=azblob", "type=azblob is not supported"),
            ("type=nope", "unknown cache type \"nope\""),
            ("type=registry", "needs ref="),
            ("type=registry,ref=r/a,mode=all", "mode=all"),
            ("type=registry,ref=r/a,oci-mediatypes=false", "oci-mediatypes=false"),
            ("type=registry,ref=r/a,image-manifest=false", "image-manifest=false"),
            ("type=registry,ref=r/a,compression=lz4", "compression=lz4"),
            ("type=registry,ref=r/a,mounts=yes", "mounts=yes"),
            ("type=registry,ref=r/a,dest=/x", "unknown key \"dest\""),
            ("type=local", "needs dest="),
            ("type=registry,ref=r/a,ref=r/b", "given twice"),
        ] {
            let e = parse_export(spec).unwrap_err();
            assert!(e.contains(says), "{spec}: {e}");
        }
        assert!(parse_import("type=local,dest=/x").unwrap_err().contains("unknown key \"dest\""));
        assert!(parse_import("type=registry,ref=r/a,mode=max").unwrap_err().contains("unknown key \"mode\""));
        assert!(parse_import("type=gha").unwrap_err().contains("registry, local and inline"));
    }
}
