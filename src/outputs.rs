//! What a build writes: the image (layers, config, manifest) into the store, then each
//! `-o/--output` (buildx syntax): `type=image` (store names), `type=oci` (OCI layout,
//! tar or directory), `type=registry` / `--push` (pushed under every `-t` name), plus
//! `--iidfile` and `--metadata-file`; and `strata push` of a named image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use strata_executor::worker::{LayerSource, LocalWorker};
use strata_exporter::image::{build_image, ExportOptions, LayerInput};
use strata_exporter::layer::{Compression, LayerBlob};
use strata_oci::digest::Digest;
use strata_oci::image::{Descriptor, ImageConfig};
use strata_oci::layout::LayoutWriter;
use strata_oci::names::ImageNames;
use strata_oci::reference::Reference;
use strata_oci::registry::{PushEvent, PushOptions, PushReport, RegistryClient};
use strata_oci::store::BlobStore;
use strata_solver::progress::{ProgressEvent, ProgressSink};
use strata_solver::worker::LayerId;

use crate::cli::{BuildArgs, Cli, PushArgs};
use crate::{Failure, Result};

/// One parsed `-o` entry.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub kind: String,
    pub attrs: BTreeMap<String, String>,
}

pub fn parse_output(spec: &str) -> Result<OutputSpec> {
    let mut attrs = BTreeMap::new();
    let mut kind = None;
    for field in spec.split(',') {
        let (k, v) = field.split_once('=').unwrap_or(("dest", field));
        if k == "type" {
            kind = Some(v.to_string());
        } else {
            attrs.insert(k.to_string(), v.to_string());
        }
    }
    // `-o DIR` means type=local,dest=DIR; `-o -` a tar on stdout.
    let kind = kind.unwrap_or_else(|| {
        if attrs.get("dest").map(|d| d == "-").unwrap_or(false) {
            "tar".into()
        } else {
            "local".into()
        }
    });
    Ok(OutputSpec { kind, attrs })
}

/// One platform's result: its file system's layers and its image configuration.
pub struct PlatformImage {
    pub layers: Vec<LayerId>,
    pub config: ImageConfig,
}

pub struct ExportRequest<'a> {
    pub args: &'a BuildArgs,
    pub store: &'a BlobStore,
    pub worker: &'a LocalWorker,
    /// One image per platform, in `--platform` order; several make an image index.
    pub images: Vec<PlatformImage>,
    pub epoch: Option<i64>,
    pub progress: ProgressSink,
    /// `--cache-to type=inline`: the solved build, whose records go into each image's
    /// config.
    pub inline_cache: Option<&'a crate::cache::export::SolvedGraph>,
    /// Layers pushed while the build ran.
    pub pushed_ahead: Option<&'a crate::build::solving::PushAhead>,
    /// The build's registry client (it knows what was pushed already).
    pub client: &'a RegistryClient,
    /// The attestations to attach to pushed images and OCI layouts, and what they record.
    pub attest: Option<(&'a crate::attest::AttestRequest, &'a crate::attest::BuildFacts)>,
}

pub struct Exported {
    /// The manifest's digest, or the index's when several platforms were built.
    pub digest: Digest,
    /// What `--iidfile` and `-q` print: the config digest of a single-platform image
    /// (docker's image ID), the index digest of a multi-platform one.
    pub image_id: Digest,
}

/// `linux_arm64_v8`-style directory names for per-platform local outputs (as buildx).
fn platform_dir_name(p: &strata_oci::image::Platform) -> String {
    let mut s = format!("{}_{}", p.os, p.architecture);
    if let Some(v) = &p.variant {
        s.push('_');
        s.push_str(v);
    }
    s
}

fn export_options(
    spec: Option<&OutputSpec>,
    epoch: Option<i64>,
    annotations: BTreeMap<String, String>,
) -> Result<ExportOptions> {
    let mut o = ExportOptions { source_date_epoch: epoch, annotations, ..Default::default() };
    let Some(spec) = spec else { return Ok(o) };
    if spec.kind == "docker" {
        o.oci_media_types = false;
    }
    // The local store and docker archives keep layers uncompressed (as Docker's image
    // store does): compression is paid when a layer leaves the machine (push, OCI
    // layout), not on every build.
    // OCI layouts and registries get compressed layers afterwards (recompress), on
    // every core.
    let default_uncompressed = true;
    let level = spec
        .attrs
        .get("compression-level")
        .map(|l| l.parse::<i32>())
        .transpose()
        .map_err(|_| Failure::usage("error: compression-level must be a number"))?;
    match spec.attrs.get("compression").map(String::as_str) {
        None if default_uncompressed => o.compression = Compression::Uncompressed,
        None | Some("gzip") => o.compression = Compression::Gzip { level: level.unwrap_or(6).clamp(0, 9) as u32 },
        Some("zstd") => o.compression = Compression::Zstd { level: level.unwrap_or(3) },
        Some("uncompressed") => o.compression = Compression::Uncompressed,
        Some(other) => {
            return Err(Failure::usage(format!("error: compression={other}: expected gzip, zstd or uncompressed")))
        }
    }
    if let Some(v) = spec.attrs.get("oci-mediatypes") {
        o.oci_media_types = v == "true";
    }
    if let Some(v) = spec.attrs.get("force-compression") {
        o.force_compression = v == "true";
    }
    for k in spec.attrs.keys() {
        let known = [
            "dest",
            "tar",
            "name",
            "compression",
            "compression-level",
            "force-compression",
            "oci-mediatypes",
            "push",
            "push-by-digest",
            "name-canonical",
            "annotation",
        ];
        if matches!(
            k.as_str(),
            "push" | "push-by-digest" | "name-canonical" | "tar" | "force-compression" | "oci-mediatypes"
        ) && !matches!(spec.attrs[k].as_str(), "true" | "false")
        {
            return Err(Failure::usage(format!(
                "error: output type={}: {k}={}: expected true or false",
                spec.kind, spec.attrs[k]
            )));
        }
        if !known.contains(&k.as_str()) && !k.starts_with("annotation.") && !k.starts_with("annotation-") {
            return Err(Failure::usage(format!("error: output type={}: unknown attribute {k:?}", spec.kind)));
        }
    }
    Ok(o)
}

/// The layers of an image: a base or imported layer by its blob (which may be only in
/// a registry until pushed), a layer a step made by its snapshot.
fn layer_inputs(worker: &LocalWorker, layers: &[LayerId]) -> Vec<LayerInput> {
    let snaps = worker.snapshots();
    layers
        .iter()
        .map(|l| {
            let source = worker.layer_source(l).map(|s| LayerBlob {
                digest: s.digest,
                diff_id: s.diff_id,
                size: s.size,
                media_type: s.media_type,
            });
            LayerInput { dir: snaps.layer_dir(l), meta_dir: snaps.root().join(&l.0), source }
        })
        .collect()
}

/// The tag part used in an OCI layout's ref.name annotation.
fn layout_tag(tags: &[String]) -> Option<String> {
    let t = tags.first()?;
    Some(Reference::parse(t).ok().and_then(|r| r.tag).unwrap_or_else(|| "latest".into()))
}

/// The `-o`/`--push` outputs of a build, checked.
pub fn output_specs(args: &BuildArgs) -> Result<Vec<OutputSpec>> {
    let mut specs: Vec<OutputSpec> = args.outputs.iter().map(|s| parse_output(s)).collect::<Result<_>>()?;
    if args.push {
        specs.push(OutputSpec { kind: "registry".into(), attrs: BTreeMap::new() });
    }
    for s in &specs {
        match s.kind.as_str() {
            "image" | "oci" | "docker" | "local" | "tar" | "registry" => {}
            other => {
                return Err(Failure::usage(format!(
                    "error: unknown output type {other:?} (image, oci, docker, local, tar, registry)"
                )))
            }
        }
        if s.kind == "oci" && !s.attrs.contains_key("dest") {
            return Err(Failure::usage("error: type=oci needs dest=FILE or dest=DIR"));
        }
        if matches!(s.kind.as_str(), "docker" | "local" | "tar") && !s.attrs.contains_key("dest") {
            let what = match s.kind.as_str() {
                "local" => "DIR",
                "tar" => "FILE (or - for standard output)",
                _ => "FILE (or - for standard output); loading into a Docker daemon is not supported yet",
            };
            return Err(Failure::usage(format!("error: type={} needs dest={what}", s.kind)));
        }
    }
    Ok(specs)
}

/// How the image's layers are written: the options of the first output, gzip when the
/// image is pushed and no compression was asked for.
pub fn image_options(args: &BuildArgs, specs: &[OutputSpec], epoch: Option<i64>) -> Result<ExportOptions> {
    let default_spec = OutputSpec { kind: "image".into(), attrs: BTreeMap::new() };
    // Annotations are checked here and given per platform at the export.
    annotations_of(args, specs)?;
    let opts = export_options(Some(specs.first().unwrap_or(&default_spec)), epoch, BTreeMap::new())?;
    let push_to = push_targets(specs, args)?;
    compress_for_push(opts, specs.first(), !push_to.is_empty())
}

/// The build's annotations: `--annotation` and the first output's `annotation*` keys.
pub fn annotations_of(args: &BuildArgs, specs: &[OutputSpec]) -> Result<crate::annotations::Annotations> {
    let empty = BTreeMap::new();
    crate::annotations::Annotations::parse(&args.annotations, specs.first().map(|s| &s.attrs).unwrap_or(&empty))
}

/// The options the build's image layers will be written with, known before the build
/// so layers can be written while it runs; `None` when no output has layers (only
/// `type=local` / `type=tar`). Bad outputs are reported here, before anything is built.
pub fn layer_options(args: &BuildArgs, epoch: Option<i64>) -> Result<Option<ExportOptions>> {
    let specs = output_specs(args)?;
    let opts = image_options(args, &specs, epoch)?;
    let layered =
        specs.is_empty() || specs.iter().any(|s| matches!(s.kind.as_str(), "image" | "oci" | "docker" | "registry"));
    Ok(layered.then_some(opts))
}

pub async fn export(req: ExportRequest<'_>) -> Result<Exported> {
    let args = req.args;
    let specs = output_specs(args)?;
    let opts = image_options(args, &specs, req.epoch)?;
    let push_to = push_targets(&specs, args)?;
    let vertex = "export".to_string();
    let name = "exporting to image".to_string();
    req.progress.send(ProgressEvent::Started { vertex: vertex.clone(), name: name.clone() });
    let started = std::time::Instant::now();
    let annotations = annotations_of(args, &specs)?;
    let mut built = Vec::with_capacity(req.images.len());
    for (i, image) in req.images.iter().enumerate() {
        let inputs = layer_inputs(req.worker, &image.layers);
        let mut opts = opts.clone();
        opts.annotations = annotations.manifest(&image.config.platform());
        let (store, mut config) = (req.store.clone(), image.config.clone());
        if let Some(solved) = req.inline_cache {
            // The records index the image's own layers: which are empty is known once
            // they are written (build_image then finds them written).
            let (store, inputs, opts) = (store.clone(), inputs.clone(), opts.clone());
            let blobs = tokio::task::spawn_blocking(move || {
                inputs
                    .iter()
                    .map(|l| strata_exporter::image::ensure_layer(&store, l, &opts))
                    .collect::<std::result::Result<Vec<_>, _>>()
            })
            .await
            .map_err(|e| Failure::build(format!("error: exporting: {e}")))?
            .map_err(|e| Failure::build(format!("error: exporting the image: {e}")))?;
            let doc = crate::cache::export::inline_document(solved, i, &image.layers, &blobs);
            config.inline_cache = Some(serde_json::from_slice(&doc.to_bytes()).unwrap_or_default());
        }
        let one = tokio::task::spawn_blocking(move || build_image(&store, config, &inputs, &opts))
            .await
            .map_err(|e| Failure::build(format!("error: exporting: {e}")))?
            .map_err(|e| Failure::build(format!("error: exporting the image: {e}")))?;
        built.push(one);
    }
    let (image, image_id, config_digest) = match built.as_slice() {
        [one] => (one.manifest.clone(), one.config_digest.clone(), Some(one.config_digest.clone())),
        many => {
            let manifests: Vec<Descriptor> = many
                .iter()
                .map(|b| {
                    let mut d = b.manifest.clone();
                    d.annotations.extend(annotations.manifest_descriptor(&b.config.platform()));
                    d
                })
                .collect();
            let index = strata_exporter::image::build_index(req.store, &manifests, annotations.index())
                .map_err(|e| Failure::build(format!("error: writing the image index: {e}")))?;
            (index.clone(), index.digest, None)
        }
    };
    // What `--metadata-file` and the summary report: the image as it was exported — the
    // OCI layout's or the pushed manifest when there is one (their layers are
    // compressed), else the store's.
    let mut reported = image.clone();
    let names = ImageNames::open(req.store).map_err(|e| Failure::build(format!("error: {e}")))?;
    let wants_image = specs.is_empty() || specs.iter().any(|s| s.kind == "image");
    if wants_image {
        for t in &args.tags {
            let full = Reference::parse(t).map_err(|e| Failure::usage(format!("error: -t {t}: {e}")))?.to_string();
            names.set(&full, &image).map_err(|e| Failure::build(format!("error: naming {full}: {e}")))?;
        }
        if args.tags.is_empty() && specs.is_empty() {
            req.progress.send(ProgressEvent::Warning {
                message: "warning: no output specified and no -t given: the result is only in the build cache".into(),
            });
        }
    }
    for s in specs.iter().filter(|s| s.kind == "oci") {
        let dest = s.attrs.get("dest").cloned().unwrap_or_default();
        let compression = match (s.attrs.get("compression").map(String::as_str), s.attrs.get("compression-level")) {
            (None | Some("gzip"), level) => {
                Compression::Gzip { level: level.and_then(|l| l.parse().ok()).unwrap_or(6).min(9) }
            }
            _ => Compression::Uncompressed, // zstd / uncompressed were applied when the layers were written
        };
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let desc = strata_exporter::recompress::compress_image(req.store, &image, compression, cores)
            .map_err(|e| Failure::build(format!("error: compressing layers for {dest}: {e}")))?;
        let mut desc = attach_attestations(req.store, &desc, req.attest)?;
        desc.annotations.extend(annotations.index_descriptor());
        if let Some(first) = args.tags.first() {
            desc.annotations.insert(
                "io.containerd.image.name".into(),
                Reference::parse(first).map(|r| r.to_string()).unwrap_or_else(|_| first.clone()),
            );
        }
        reported = Descriptor { annotations: Default::default(), ..desc.clone() };
        let entries = vec![(desc, layout_tag(&args.tags).or_else(|| Some("latest".into())))];
        let as_tar = s.attrs.get("tar").map(|v| v != "false").unwrap_or(true);
        write_layout(req.store, &dest, as_tar, &entries)?;
    }
    for s in specs.iter().filter(|s| matches!(s.kind.as_str(), "docker" | "local" | "tar")) {
        let dest = s.attrs.get("dest").cloned().unwrap_or_default();
        if built.len() > 1 && s.kind != "local" {
            return Err(Failure::usage(format!(
                "error: output type={} cannot hold several platforms: use type=oci, type=local or type=image",
                s.kind
            )));
        }
        let res = match s.kind.as_str() {
            "docker" => {
                let names = s.attrs.get("name").map(|n| vec![n.clone()]).unwrap_or_else(|| args.tags.clone());
                let oci = s.attrs.get("oci-mediatypes").is_some_and(|v| v == "true");
                strata_exporter::docker_archive::write_docker_image_to(&dest, req.store, &image, &names, oci)
                    .map_err(|e| e.to_string())
            }
            kind => {
                let mut res = Ok(());
                for (one, platform_image) in built.iter().zip(&req.images) {
                    let dirs: Vec<PathBuf> =
                        platform_image.layers.iter().map(|l| req.worker.snapshots().layer_dir(l)).collect();
                    // Several platforms: one directory each, named as buildx names them.
                    let to = if built.len() > 1 {
                        Path::new(&dest).join(platform_dir_name(&one.config.platform())).to_string_lossy().to_string()
                    } else {
                        dest.clone()
                    };
                    res = strata_exporter::rootfs::export_rootfs_to(&to, &dirs, kind == "tar", req.epoch)
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    if res.is_err() {
                        break;
                    }
                }
                res
            }
        };
        res.map_err(|e| Failure::build(format!("error: output type={} dest={dest}: {e}", s.kind)))?;
    }
    if args.load {
        load_into_docker(req.store, &image, &args.tags, &req.progress).await?;
    }
    req.progress.send(ProgressEvent::Done { vertex, name, elapsed: started.elapsed() });
    if !push_to.is_empty() {
        for image in &req.images {
            let sources: Vec<LayerSource> = image.layers.iter().filter_map(|l| req.worker.layer_source(l)).collect();
            crate::cache::export::fetch_unplaced(req.worker, req.store, &sources).await.map_err(Failure::build)?;
        }
        let client = req.client;
        // Layers pushed while the build ran (by `client`'s clones) need no request now.
        if let Some(ahead) = req.pushed_ahead {
            ahead.finish().await;
        }
        // Attestations are about the manifests as pushed (compressed layers).
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let to_push = match req.attest.filter(|(a, _)| a.any()) {
            Some(attest) => {
                let compressed = tokio::task::block_in_place(|| {
                    strata_exporter::recompress::compress_image(req.store, &image, opts.compression, cores)
                })
                .map_err(|e| Failure::build(format!("error: compressing layers: {e}")))?;
                attach_attestations(req.store, &compressed, Some(attest))?
            }
            None => image.clone(),
        };
        for target in &push_to {
            let pushed = push_image_to(
                client,
                req.store,
                &to_push,
                target,
                opts.compression,
                PushOptions::default(),
                &req.progress,
            )
            .await?;
            reported = pushed.descriptor;
        }
    }
    // A multi-platform image's ID is its index, as exported.
    let image_id = if config_digest.is_some() { image_id } else { reported.digest.clone() };
    if let Some(f) = &args.iidfile {
        std::fs::write(f, image_id.to_string())
            .map_err(|e| Failure::build(format!("error: --iidfile {}: {e}", f.display())))?;
    }
    if let Some(f) = &args.metadata_file {
        let mut meta = serde_json::json!({
            "containerimage.digest": reported.digest.to_string(),
            "containerimage.descriptor": reported,
            "image.name": image_names(&specs, args, &reported.digest).join(","),
        });
        if let Some(c) = &config_digest {
            meta["containerimage.config.digest"] = serde_json::Value::String(c.to_string());
        }
        std::fs::write(f, serde_json::to_vec_pretty(&meta).unwrap_or_default())
            .map_err(|e| Failure::build(format!("error: --metadata-file {}: {e}", f.display())))?;
    }
    Ok(Exported { digest: reported.digest, image_id })
}

/// `image` with the build's attestations attached (an index with one attestation
/// manifest per platform); `image` itself when none are asked for.
fn attach_attestations(
    store: &BlobStore,
    image: &Descriptor,
    attest: Option<(&crate::attest::AttestRequest, &crate::attest::BuildFacts)>,
) -> Result<Descriptor> {
    let Some((request, facts)) = attest.filter(|(a, _)| a.any()) else { return Ok(image.clone()) };
    tokio::task::block_in_place(|| crate::attest::attach(store, image, request, facts))
        .map_err(|e| Failure::build(format!("error: writing the attestations: {e}")))
}

/// What `--metadata-file` calls `image.name`, as buildx: the outputs' `name=` (else
/// the `-t` names), and with `name-canonical=true` also `NAME@DIGEST` for each.
fn image_names(specs: &[OutputSpec], args: &BuildArgs, digest: &Digest) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut canonical = false;
    for s in specs {
        canonical |= s.attrs.get("name-canonical").is_some_and(|v| v == "true");
        names.extend(s.attrs.get("name").cloned());
    }
    if names.is_empty() {
        names = args.tags.clone();
    }
    if canonical {
        let extra: Vec<String> =
            names.iter().filter_map(|n| Reference::parse(n).ok()).map(|r| format!("{}@{digest}", r.name())).collect();
        names.extend(extra);
    }
    names.dedup();
    names
}

/// `--load`: the image as a docker archive, handed to the Docker daemon.
async fn load_into_docker(
    store: &BlobStore,
    image: &Descriptor,
    tags: &[String],
    progress: &ProgressSink,
) -> Result<()> {
    let socket = crate::docker_load::daemon_socket().map_err(|e| Failure::usage(format!("error: --load: {e}")))?;
    let tmp = tempfile::Builder::new()
        .prefix("load-")
        .suffix(".tar")
        .tempfile_in(store.root())
        .map_err(|e| Failure::build(format!("error: --load: {e}")))?;
    let path = tmp.path().to_path_buf();
    let (store, image, tags) = (store.clone(), image.clone(), tags.to_vec());
    let loaded = tokio::task::spawn_blocking(move || {
        strata_exporter::docker_archive::write_docker_image_to(&path.to_string_lossy(), &store, &image, &tags, false)
            .map_err(|e| format!("writing the docker archive: {e}"))?;
        crate::docker_load::load_archive(&socket, &path)
    })
    .await
    .map_err(|e| Failure::build(format!("error: --load: {e}")))?
    .map_err(|e| Failure::build(format!("error: --load: {e}")))?;
    drop(tmp);
    for line in loaded {
        progress.send(ProgressEvent::Status {
            vertex: "export".into(),
            name: "loading into the Docker daemon".into(),
            message: line,
        });
    }
    Ok(())
}

fn write_layout(store: &BlobStore, dest: &str, as_tar: bool, entries: &[(Descriptor, Option<String>)]) -> Result<()> {
    if !as_tar {
        return LayoutWriter::write_dir(Path::new(dest), store, entries)
            .map_err(|e| Failure::build(format!("error: writing the OCI layout {dest}: {e}")));
    }
    if dest == "-" {
        let out = std::io::stdout().lock();
        LayoutWriter::write_tar(std::io::BufWriter::new(out), store, entries)
            .map_err(|e| Failure::build(format!("error: writing the OCI layout to stdout: {e}")))?;
        return Ok(());
    }
    let path = PathBuf::from(dest);
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let file = std::fs::File::create(&tmp).map_err(|e| Failure::build(format!("error: {}: {e}", tmp.display())))?;
    let res = LayoutWriter::write_tar(std::io::BufWriter::new(file), store, entries)
        .map_err(|e| Failure::build(format!("error: writing the OCI layout {dest}: {e}")))
        .and_then(|w| w.into_inner().map_err(|e| Failure::build(format!("error: {dest}: {e}"))))
        .and_then(|f| f.sync_all().map_err(|e| Failure::build(format!("error: {dest}: {e}"))));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &path).map_err(|e| Failure::build(format!("error: {dest}: {e}")))
}

/// Does this output push (`type=registry`, or `type=image,push=true`)?
fn pushes(spec: &OutputSpec) -> bool {
    spec.kind == "registry" || (spec.kind == "image" && spec.attrs.get("push").is_some_and(|v| v == "true"))
}

/// Where the built image is pushed: each pushing output's `name=`, else every `-t` name;
/// with `push-by-digest=true`, the repository alone (the manifest is pushed untagged).
pub fn push_targets(specs: &[OutputSpec], args: &BuildArgs) -> Result<Vec<Reference>> {
    let mut targets: Vec<Reference> = Vec::new();
    for s in specs.iter().filter(|s| pushes(s)) {
        let names = match s.attrs.get("name") {
            Some(n) => vec![n.clone()],
            None => args.tags.clone(),
        };
        if names.is_empty() {
            return Err(Failure::usage(
                "error: pushing (--push, type=registry) needs a name: give -t REGISTRY/REPOSITORY:TAG or -o type=registry,name=...",
            ));
        }
        let by_digest = s.attrs.get("push-by-digest").is_some_and(|v| v == "true");
        for n in names {
            let mut r =
                Reference::parse(&n).map_err(|e| Failure::usage(format!("error: cannot push to {n:?}: {e}")))?;
            if by_digest {
                r.tag = None;
                r.digest = None;
            }
            if !targets.contains(&r) {
                targets.push(r);
            }
        }
    }
    Ok(targets)
}

/// A pushed image leaves the machine: its layers are compressed (gzip) unless the output
/// says otherwise, even when the local store keeps them uncompressed.
fn compress_for_push(mut opts: ExportOptions, first: Option<&OutputSpec>, pushing: bool) -> Result<ExportOptions> {
    let explicit = first.is_some_and(|s| s.attrs.contains_key("compression"));
    if pushing && !explicit && opts.compression == Compression::Uncompressed {
        let level = first
            .and_then(|s| s.attrs.get("compression-level"))
            .map(|l| l.parse::<u32>())
            .transpose()
            .map_err(|_| Failure::usage("error: compression-level must be a number"))?;
        opts.compression = Compression::Gzip { level: level.unwrap_or(6).min(9) };
    }
    Ok(opts)
}

/// `sha256:0123456789ab`.
fn short_digest(d: &Digest) -> String {
    format!("{}:{}", d.algorithm(), &d.hex()[..12.min(d.hex().len())])
}

/// Push `image` from `store` to `target`, reporting progress as a step of its own:
/// per-blob transfer lines (`#N pushing sha256:… 1.2MB / 3.4MB`), skips, mounts and
/// manifests.
pub(crate) async fn push_image_to(
    client: &RegistryClient,
    store: &BlobStore,
    image: &Descriptor,
    target: &Reference,
    compression: Compression,
    opts: PushOptions,
    progress: &ProgressSink,
) -> Result<PushReport> {
    let vertex = format!("push {target}");
    let name = format!("pushing {target}");
    progress.send(ProgressEvent::Started { vertex: vertex.clone(), name: name.clone() });
    let started = std::time::Instant::now();
    // At most one transfer line per blob and second (plus the last one).
    let last_line: std::sync::Mutex<std::collections::HashMap<Digest, std::time::Instant>> = Default::default();
    let on_event = |e: PushEvent| {
        let status = |digest: &Digest, message: String| {
            progress.send(ProgressEvent::Status {
                vertex: vertex.clone(),
                name: format!("pushing {}", short_digest(digest)),
                message,
            })
        };
        let transfer = |digest: &Digest, current: u64, total: u64| {
            progress.send(ProgressEvent::Transfer {
                vertex: vertex.clone(),
                name: format!("pushing {}", short_digest(digest)),
                current,
                total: Some(total),
            })
        };
        match e {
            PushEvent::Skipped { digest, .. } => status(&digest, "already exists".into()),
            PushEvent::Mounted { digest, from, .. } => status(&digest, format!("mounted from {from}")),
            PushEvent::Progress { digest, sent, total } => {
                let now = std::time::Instant::now();
                let mut last = last_line.lock().unwrap_or_else(|p| p.into_inner());
                if last.get(&digest).is_none_or(|t| now.duration_since(*t).as_secs() >= 1) {
                    last.insert(digest.clone(), now);
                    transfer(&digest, sent, total);
                }
            }
            PushEvent::Uploaded { digest, size } => transfer(&digest, size, size),
            PushEvent::Interrupted { digest, resume_at, restarted, reason, retry_in, chunk } => {
                let from = if restarted {
                    "the registry dropped the upload: starting over".to_string()
                } else {
                    format!("the registry has {}, resuming there", crate::units::human_bytes(resume_at))
                };
                status(
                    &digest,
                    format!(
                        "retrying in {:.1}s: {reason} ({from}, in {} chunks)",
                        retry_in.as_secs_f64(),
                        crate::units::human_bytes(chunk)
                    ),
                )
            }
            PushEvent::ManifestPushed { digest, reference } => progress.send(ProgressEvent::Status {
                vertex: vertex.clone(),
                name: format!("pushing manifest {}", short_digest(&digest)),
                message: format!("stored as {reference}"),
            }),
        }
    };
    // Layers leave the machine compressed as asked (gzip unless the output said
    // otherwise): plain store layers are compressed here, on every core, and remembered
    // so a re-push compresses nothing. `compression=uncompressed` sends them as they are.
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let (store2, plain) = (store.clone(), image.clone());
    let compressed = tokio::task::spawn_blocking(move || {
        strata_exporter::recompress::compress_image(&store2, &plain, compression, cores)
    })
    .await
    .map_err(|e| Failure::build(format!("error: compressing layers: {e}")))?
    .map_err(|e| Failure::build(format!("error: compressing layers for {target}: {e}")))?;
    let image = &compressed;
    let opts = PushOptions { jobs: opts.jobs.max(1), ..opts };
    match client.push_image(target, image, store, &opts, on_event).await {
        Ok(report) => {
            progress.send(ProgressEvent::Done { vertex, name, elapsed: started.elapsed() });
            Ok(report)
        }
        Err(e) => {
            progress.send(ProgressEvent::Failed { vertex, name, error: e.to_string() });
            Err(Failure::build(format!("error: {e}")))
        }
    }
}

/// `strata push NAME`: push a named image of the local store to the registry in NAME.
pub async fn push_command(cli: &Cli, p: &PushArgs) -> Result<()> {
    let target =
        Reference::parse(&p.name).map_err(|e| Failure::usage(format!("error: strata push {}: {e}", p.name)))?;
    let store = crate::open_store(cli)?;
    let names = ImageNames::open(&store).map_err(|e| Failure::build(format!("error: {e}")))?;
    let full = target.to_string();
    let image = names.get(&full).ok_or_else(|| {
        Failure::build(format!(
            "error: strata push: no image named {full} in {}; build one with `strata build -t {full} ...` or name one with `strata tag SOURCE {full}`",
            store.root().display()
        ))
    })?;
    let client =
        RegistryClient::new(crate::registry_options(cli)).map_err(|e| Failure::build(format!("error: {e}")))?;
    let mode = crate::progress::effective_mode(p.progress, false);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let sink = ProgressSink::new(tx);
    let printer = tokio::spawn(crate::progress::print(mode, rx));
    let gzip = Compression::Gzip { level: 6 };
    let opts = PushOptions { jobs: p.push_jobs, ..PushOptions::default() };
    let pushed = push_image_to(&client, &store, &image.descriptor, &target, gzip, opts, &sink).await;
    drop(sink);
    let _ = printer.await;
    let report = pushed?;
    // docker push's last line.
    let shown = target.tag.clone().unwrap_or_else(|| report.descriptor.digest.to_string());
    println!("{shown}: digest: {} size: {}", report.descriptor.digest, report.descriptor.size);
    Ok(())
}

pub fn save_command(cli: &Cli, name: &str, output: &Path, format: &str) -> Result<()> {
    if format != "oci" && format != "docker" {
        return Err(Failure::usage(format!("error: --format {format}: expected oci or docker")));
    }
    let store = crate::open_store(cli)?;
    let names = ImageNames::open(&store).map_err(|e| Failure::build(format!("error: {e}")))?;
    let full = Reference::parse(name).map(|r| r.to_string()).unwrap_or_else(|_| name.to_string());
    let img = names
        .get(&full)
        .ok_or_else(|| Failure::build(format!("error: no image named {full} in {}", store.root().display())))?;
    if format == "docker" {
        let dest = output.to_string_lossy();
        return strata_exporter::docker_archive::write_docker_image_to(&dest, &store, &img.descriptor, &[full], false)
            .map_err(|e| Failure::build(format!("error: writing the docker archive {dest}: {e}")));
    }
    let tag = Reference::parse(name).ok().and_then(|r| r.tag).unwrap_or_else(|| "latest".into());
    // The full name travels too, as containerd writes it (`strata load`, `docker load`).
    let mut desc = img.descriptor;
    desc.annotations.insert(strata_oci::layout::CONTAINERD_IMAGE_NAME.into(), full);
    write_layout(&store, &output.to_string_lossy(), true, &[(desc, Some(tag))])
}
