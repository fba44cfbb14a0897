//! `strata imagetools create` and `inspect`, as buildx's: multi-platform images made of
//! manifests that were built (and pushed by digest) on different machines.
//!
//! `create` reads each source — a manifest by digest or tag, or an index (all its
//! manifests, attestation manifests included) — keeping the manifests and configs in
//! the store and only *noting* where their layers are (never downloading them). It
//! merges them into one index, written to the store, and pushes it with the ordinary
//! push: each layer is found in the target repository, mounted from its source
//! repository (same registry), or else downloaded and uploaded (another registry).

use std::collections::BTreeMap;

use strata_oci::digest::Digest;
use strata_oci::image::{Descriptor, ImageConfig, Index, Manifest, Platform};
use strata_oci::media;
use strata_oci::reference::Reference;
use strata_oci::registry::manifest::{parse_document, ManifestDocument, MAX_CONFIG_BYTES};
use strata_oci::registry::{PushOptions, RegistryClient};
use strata_oci::store::BlobStore;
use strata_solver::progress::ProgressSink;

use crate::cli::{Cli, ImagetoolsCreateArgs};
use crate::{Failure, Result};

/// The annotation that marks an attestation manifest in an index (BuildKit's layout).
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// One manifest of the index being made, and the source it came from (for messages).
struct Entry {
    descriptor: Descriptor,
    source: String,
}

impl Entry {
    fn is_attestation(&self) -> bool {
        self.descriptor.annotations.get(REFERENCE_TYPE).is_some_and(|t| t == "attestation-manifest")
    }
}

fn parse_reference(what: &str, s: &str) -> Result<Reference> {
    Reference::parse(s).map_err(|e| Failure::usage(format!("error: {what} {s:?}: {e}")))
}

/// `strata imagetools create`.
pub async fn create(cli: &Cli, args: &ImagetoolsCreateArgs) -> Result<()> {
    if args.tags.is_empty() && !args.dry_run {
        return Err(Failure::usage("error: imagetools create: give the new index's name with -t (or --dry-run)"));
    }
    let tags = args.tags.iter().map(|t| parse_reference("-t", t)).collect::<Result<Vec<_>>>()?;
    if let Some(t) = tags.iter().find(|t| t.digest.is_some()) {
        return Err(Failure::usage(format!("error: -t {t}: a new index is named by a tag, not a digest")));
    }
    let sources = args.sources.iter().map(|s| parse_reference("source", s)).collect::<Result<Vec<_>>>()?;
    let annotations = crate::annotations::Annotations::parse_for_index(&args.annotations)?;
    let store = crate::open_store(cli)?;
    let client =
        RegistryClient::new(crate::registry_options(cli)).map_err(|e| Failure::build(format!("error: {e}")))?;

    let mut entries: Vec<Entry> = Vec::new();
    for source in &sources {
        for e in read_source(&client, &store, source).await? {
            add_entry(&mut entries, e)?;
        }
    }
    let mut manifests: Vec<Descriptor> = entries.into_iter().map(|e| e.descriptor).collect();
    for m in &mut manifests {
        if let Some(p) = &m.platform {
            m.annotations.extend(annotations.manifest_descriptor(p));
        }
    }
    let index = strata_exporter::image::build_index(&store, &manifests, annotations.index())
        .map_err(|e| Failure::build(format!("error: writing the index: {e}")))?;
    if args.dry_run {
        let bytes = store.read_blob(&index.digest).map_err(|e| Failure::build(format!("error: {e}")))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Failure::build(e.to_string()))?;
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        return Ok(());
    }
    let mode = crate::progress::effective_mode(args.progress, false);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let sink = ProgressSink::new(tx);
    let printer = tokio::spawn(crate::progress::print(mode, rx));
    let mut pushed = Ok(Vec::new());
    for tag in &tags {
        let compression = strata_exporter::layer::Compression::Uncompressed;
        match crate::outputs::push_image_to(&client, &store, &index, tag, compression, PushOptions::default(), &sink)
            .await
        {
            Ok(report) => {
                if let Ok(lines) = pushed.as_mut() {
                    lines.push(format!("{tag}: digest: {} size: {}", report.descriptor.digest, report.descriptor.size));
                }
            }
            Err(e) => {
                pushed = Err(e);
                break;
            }
        }
    }
    drop(sink);
    let _ = printer.await;
    for line in pushed? {
        println!("{line}");
    }
    Ok(())
}

/// Add `e`, refusing a second, different manifest for a platform; the same manifest
/// twice is kept once.
fn add_entry(entries: &mut Vec<Entry>, e: Entry) -> Result<()> {
    if entries.iter().any(|x| x.descriptor.digest == e.descriptor.digest) {
        return Ok(());
    }
    if !e.is_attestation() {
        if let Some(p) = &e.descriptor.platform {
            if let Some(other) =
                entries.iter().find(|x| !x.is_attestation() && x.descriptor.platform.as_ref() == Some(p))
            {
                return Err(Failure::build(format!(
                    "error: imagetools create: platform {p} is given twice: {} ({}) and {} ({}); give one source per platform",
                    other.source, other.descriptor.digest, e.source, e.descriptor.digest
                )));
            }
        }
    }
    entries.push(e);
    Ok(())
}

/// The manifests a source contributes: a manifest (its platform read from its config),
/// or every manifest of an index. Their blobs are noted as living in the source's
/// repository.
async fn read_source(client: &RegistryClient, store: &BlobStore, source: &Reference) -> Result<Vec<Entry>> {
    let fail = |e: String| Failure::build(format!("error: imagetools create: {source}: {e}"));
    let top = client.resolve(source).await.map_err(|e| fail(e.to_string()))?;
    let (media_type, doc) = parse_document(Some(&top.media_type), &top.bytes)
        .map_err(|e| fail(format!("not an image manifest or index: {e}")))?;
    store.put_bytes(&top.bytes).map_err(|e| fail(e.to_string()))?;
    let shown = source.to_string();
    match doc {
        ManifestDocument::Manifest(m) => {
            let platform = manifest_platform(client, store, source, &m).await.map_err(fail)?;
            let mut descriptor = Descriptor::new(media_type, top.digest.clone(), top.bytes.len() as u64);
            descriptor.platform = Some(platform);
            Ok(vec![Entry { descriptor, source: shown }])
        }
        ManifestDocument::Index(index) => {
            let mut out = Vec::new();
            for d in &index.manifests {
                let child =
                    client.resolve(&source.with_digest(d.digest.clone())).await.map_err(|e| fail(e.to_string()))?;
                match parse_document(Some(&child.media_type), &child.bytes) {
                    Ok((_, ManifestDocument::Manifest(m))) => note_blobs(store, source, &m),
                    Ok(_) => {
                        return Err(fail(format!("its entry {} is an index (nested indexes are not merged)", d.digest)))
                    }
                    Err(e) => return Err(fail(format!("its entry {}: {e}", d.digest))),
                }
                store.put_bytes(&child.bytes).map_err(|e| fail(e.to_string()))?;
                out.push(Entry { descriptor: d.clone(), source: shown.clone() });
            }
            Ok(out)
        }
    }
}

/// Note that `m`'s config and layers live in `source`'s repository (a push finds,
/// mounts or fetches them there).
fn note_blobs(store: &BlobStore, source: &Reference, m: &Manifest) {
    for b in std::iter::once(&m.config).chain(&m.layers) {
        let _ = store.add_source(&b.digest, &source.name());
    }
}

/// The platform of an image manifest, from its config (downloaded, verified).
async fn manifest_platform(
    client: &RegistryClient,
    store: &BlobStore,
    source: &Reference,
    m: &Manifest,
) -> std::result::Result<Platform, String> {
    if !matches!(m.config.media_type.as_str(), media::OCI_CONFIG | media::DOCKER_CONFIG) {
        return Err(format!("not an image manifest (its config is {:?})", m.config.media_type));
    }
    if m.config.size > MAX_CONFIG_BYTES {
        return Err(format!("its config {} is larger than {MAX_CONFIG_BYTES} bytes", m.config.digest));
    }
    note_blobs(store, source, m);
    client.fetch_blob(source, &m.config, store).await.map_err(|e| e.to_string())?;
    let bytes = store.read_blob(&m.config.digest).map_err(|e| e.to_string())?;
    let config: ImageConfig =
        serde_json::from_slice(&bytes).map_err(|e| format!("its config {}: {e}", m.config.digest))?;
    Ok(config.platform())
}

/// `strata imagetools inspect`.
pub async fn inspect(cli: &Cli, name: &str, raw: bool, format: &str) -> Result<()> {
    if !matches!(format, "text" | "json") {
        return Err(Failure::usage(format!("error: --format {format}: expected text or json")));
    }
    let r = parse_reference("imagetools inspect", name)?;
    let client =
        RegistryClient::new(crate::registry_options(cli)).map_err(|e| Failure::build(format!("error: {e}")))?;
    let top = client.resolve(&r).await.map_err(|e| Failure::build(format!("error: {e}")))?;
    if raw {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        return out.write_all(&top.bytes).map_err(|e| Failure::build(format!("error: {e}")));
    }
    let (media_type, doc) = parse_document(Some(&top.media_type), &top.bytes)
        .map_err(|e| Failure::build(format!("error: {r}: not an image manifest or index: {e}")))?;
    let summary = match doc {
        ManifestDocument::Index(index) => index_summary(&r, &media_type, &top.digest, &index),
        ManifestDocument::Manifest(m) => {
            // The platform is in the config: read it (small, verified), into memory only.
            let platform = config_platform(&client, &r, &m).await;
            serde_json::json!({
                "name": r.to_string(),
                "mediaType": media_type,
                "digest": top.digest.to_string(),
                "platform": platform.map(|p| p.to_string()),
                "config": m.config.digest.to_string(),
                "layers": m.layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
                "annotations": m.annotations,
            })
        }
    };
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    } else {
        print!("{}", render_text(&summary));
    }
    Ok(())
}

/// An index as `inspect` reports it.
fn index_summary(r: &Reference, media_type: &str, digest: &Digest, index: &Index) -> serde_json::Value {
    let manifests: Vec<serde_json::Value> = index
        .manifests
        .iter()
        .map(|d| {
            serde_json::json!({
                "name": format!("{}@{}", r.name(), d.digest),
                "mediaType": d.media_type,
                "digest": d.digest.to_string(),
                "platform": d.platform.as_ref().map(|p| p.to_string()),
                "annotations": d.annotations,
            })
        })
        .collect();
    serde_json::json!({
        "name": r.to_string(),
        "mediaType": media_type,
        "digest": digest.to_string(),
        "manifests": manifests,
        "annotations": index.annotations,
    })
}

async fn config_platform(client: &RegistryClient, r: &Reference, m: &Manifest) -> Option<Platform> {
    if m.config.size > MAX_CONFIG_BYTES {
        return None;
    }
    let dir = tempfile::tempdir().ok()?;
    let scratch = BlobStore::open(dir.path()).ok()?;
    client.fetch_blob(r, &m.config, &scratch).await.ok()?;
    let config: ImageConfig = serde_json::from_slice(&scratch.read_blob(&m.config.digest).ok()?).ok()?;
    Some(config.platform())
}

/// buildx's text form: `Name:`, `MediaType:`, `Digest:`, then each manifest.
fn render_text(s: &serde_json::Value) -> String {
    let field = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let mut out = format!(
        "Name:      {}\nMediaType: {}\nDigest:    {}\n",
        field(s, "name"),
        field(s, "mediaType"),
        field(s, "digest")
    );
    if let Some(p) = s["platform"].as_str() {
        out.push_str(&format!("Platform:  {p}\n"));
    }
    annotations_text(&mut out, &s["annotations"], "");
    if let Some(ms) = s["manifests"].as_array() {
        out.push_str("\nManifests:\n");
        for (i, m) in ms.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&format!("  Name:        {}\n", field(m, "name")));
            out.push_str(&format!("  MediaType:   {}\n", field(m, "mediaType")));
            if let Some(p) = m["platform"].as_str() {
                out.push_str(&format!("  Platform:    {p}\n"));
            }
            annotations_text(&mut out, &m["annotations"], "  ");
        }
    }
    out
}

fn annotations_text(out: &mut String, annotations: &serde_json::Value, indent: &str) {
    let Some(map) = annotations.as_object().filter(|m| !m.is_empty()) else { return };
    let sorted: BTreeMap<&String, &serde_json::Value> = map.iter().collect();
    let width = sorted.keys().map(|k| k.len()).max().unwrap_or(0) + 1;
    out.push_str(&format!("{indent}Annotations:\n"));
    for (k, v) in sorted {
        out.push_str(&format!("{indent}  {:width$} {}\n", format!("{k}:"), v.as_str().unwrap_or("")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest: &[u8], platform: Option<&str>, attestation: bool) -> Entry {
        let mut descriptor = Descriptor::new(media::OCI_MANIFEST, Digest::of_bytes(digest), 10);
        descriptor.platform = platform.map(|p| p.parse().unwrap());
        if attestation {
            descriptor.annotations.insert(REFERENCE_TYPE.into(), "attestation-manifest".into());
        }
        Entry { descriptor, source: format!("src-{}", String::from_utf8_lossy(digest)) }
    }

    #[test]
    fn a_platform_twice_is_refused_the_same_manifest_twice_kept_once() {
        let mut entries = Vec::new();
        add_entry(&mut entries, entry(b"a", Some("linux/amd64"), false)).unwrap();
        add_entry(&mut entries, entry(b"a", Some("linux/amd64"), false)).unwrap();
        add_entry(&mut entries, entry(b"b", Some("linux/arm64"), false)).unwrap();
        // Attestation manifests all say unknown/unknown.
        add_entry(&mut entries, entry(b"c", Some("unknown/unknown"), true)).unwrap();
        add_entry(&mut entries, entry(b"d", Some("unknown/unknown"), true)).unwrap();
        assert_eq!(entries.len(), 4);
        let e = add_entry(&mut entries, entry(b"e", Some("linux/amd64"), false)).unwrap_err();
        assert!(e.message.contains("platform linux/amd64 is given twice: src-a"), "{}", e.message);
    }

    #[test]
    fn text_form_lists_each_manifest() {
        let r = Reference::parse("127.0.0.1:5000/app:1").unwrap();
        let mut att = Descriptor::new(media::OCI_MANIFEST, Digest::of_bytes(b"x"), 3);
        att.annotations.insert(REFERENCE_TYPE.into(), "attestation-manifest".into());
        att.platform = Some("unknown/unknown".parse().unwrap());
        let mut img = Descriptor::new(media::OCI_MANIFEST, Digest::of_bytes(b"y"), 3);
        img.platform = Some("linux/arm64".parse().unwrap());
        let index = Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.into()),
            manifests: vec![img, att],
            annotations: Default::default(),
        };
        let text = render_text(&index_summary(&r, media::OCI_INDEX, &Digest::of_bytes(b"i"), &index));
        assert!(
            text.starts_with("Name:      127.0.0.1:5000/app:1\nMediaType: application/vnd.oci.image.index.v1+json\n")
        );
        assert!(text.contains("  Platform:    linux/arm64\n"), "{text}");
        assert!(text.contains("  Annotations:\n    vnd.docker.reference.type: attestation-manifest\n"), "{text}");
    }
}
