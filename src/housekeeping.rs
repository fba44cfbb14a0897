//! Store housekeeping: `images`, `tag`, `rm`, `inspect`, `load`, `login`/`logout`,
//! `du`, `prune`.

use std::path::Path;

use strata_oci::digest::Digest;
use strata_oci::image::{Index, Manifest};
use strata_oci::names::ImageNames;
use strata_oci::reference::Reference;
use strata_oci::store::BlobStore;

use crate::cli::Cli;
use crate::{Failure, Result};

fn full_name(name: &str) -> Result<String> {
    Reference::parse(name).map(|r| r.to_string()).map_err(|e| Failure::usage(format!("error: {name}: {e}")))
}

fn open(cli: &Cli) -> Result<(ImageNames, BlobStore, std::path::PathBuf)> {
    let store = crate::open_store(cli)?;
    let root = store.root().to_path_buf();
    let names =
        ImageNames::open(&store).map_err(|e| Failure::build(format!("error: store {}: {e}", root.display())))?;
    Ok((names, store, root))
}

fn image_size(_store: &BlobStore, manifest: &Manifest) -> u64 {
    manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>()
}

pub fn images(cli: &Cli) -> Result<()> {
    let (names, store, _) = open(cli)?;
    println!("{:<50} {:<19} {:<14} {:>10}  CREATED", "NAME", "DIGEST", "PLATFORMS", "SIZE");
    for n in names.list() {
        let blob = store.read_blob(&n.descriptor.digest).ok();
        let (platforms, size) = if let Some(m) = blob.as_ref().and_then(|b| serde_json::from_slice::<Manifest>(b).ok())
        {
            (
                n.descriptor.platform.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                image_size(&store, &m),
            )
        } else if let Some(i) = blob.as_ref().and_then(|b| serde_json::from_slice::<Index>(b).ok()) {
            // An index: its platforms, and the size of every platform's image.
            let mut platforms = Vec::new();
            let mut size = n.descriptor.size;
            for d in &i.manifests {
                platforms.extend(d.platform.as_ref().map(|p| p.to_string()));
                let m = store.read_blob(&d.digest).ok().and_then(|b| serde_json::from_slice::<Manifest>(&b).ok());
                size += m.map(|m| image_size(&store, &m)).unwrap_or(d.size);
            }
            (platforms.join(","), size)
        } else {
            ("-".into(), n.descriptor.size)
        };
        println!(
            "{:<50} {:<19} {:<14} {:>10}  {}",
            n.name,
            &n.descriptor.digest.to_string()[..19],
            platforms,
            crate::units::human_bytes(size),
            n.created
        );
    }
    Ok(())
}

pub fn tag(cli: &Cli, source: &str, target: &str) -> Result<()> {
    let (names, _, root) = open(cli)?;
    let src = full_name(source)?;
    let img =
        names.get(&src).ok_or_else(|| Failure::build(format!("error: no image named {src} in {}", root.display())))?;
    let dst = full_name(target)?;
    names.set(&dst, &img.descriptor).map_err(|e| Failure::build(format!("error: {e}")))
}

pub fn rm(cli: &Cli, list: &[String]) -> Result<()> {
    let (names, _, _) = open(cli)?;
    let mut missing = Vec::new();
    for n in list {
        let full = full_name(n)?;
        if names.remove(&full) {
            println!("Untagged: {full}");
        } else {
            missing.push(full);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Failure::build(format!("error: no such image: {}", missing.join(", "))))
    }
}

pub fn inspect(cli: &Cli, name: &str) -> Result<()> {
    let (names, store, root) = open(cli)?;
    let full = full_name(name)?;
    let img = names
        .get(&full)
        .ok_or_else(|| Failure::build(format!("error: no image named {full} in {}", root.display())))?;
    let read_json = |digest: &Digest| -> Result<serde_json::Value> {
        let bytes = store.read_blob(digest).map_err(|e| Failure::build(format!("error: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| Failure::build(format!("error: blob {digest}: {e}")))
    };
    // One manifest and its config; for an index, one such pair per platform.
    let manifest_and_config = |digest: &Digest| -> Result<(serde_json::Value, serde_json::Value)> {
        let manifest = read_json(digest)?;
        let config_digest: Digest = manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|e| Failure::build(format!("error: manifest {digest}: {e}")))?;
        Ok((manifest.clone(), read_json(&config_digest)?))
    };
    let top = read_json(&img.descriptor.digest)?;
    let out = if top.get("manifests").is_some() {
        let index: Index = serde_json::from_value(top.clone())
            .map_err(|e| Failure::build(format!("error: index {}: {e}", img.descriptor.digest)))?;
        let mut platforms = Vec::new();
        for d in &index.manifests {
            let (manifest, config) = manifest_and_config(&d.digest)?;
            platforms.push(serde_json::json!({"descriptor": d, "manifest": manifest, "config": config}));
        }
        serde_json::json!({"name": full, "descriptor": img.descriptor, "index": top, "manifests": platforms})
    } else {
        let (manifest, config) = manifest_and_config(&img.descriptor.digest)?;
        serde_json::json!({"name": full, "descriptor": img.descriptor, "manifest": manifest, "config": config})
    };
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

pub fn load(cli: &Cli, input: &Path, tag: Option<&str>) -> Result<()> {
    let (names, store, _) = open(cli)?;
    let layout = if input.is_dir() {
        strata_oci::layout::OciLayout::open(input)
    } else {
        let f = std::fs::File::open(input).map_err(|e| Failure::usage(format!("error: {}: {e}", input.display())))?;
        strata_oci::layout::OciLayout::open_tar(f, &store)
    }
    .map_err(|e| Failure::build(format!("error: {}: {e}", input.display())))?;
    let tags = layout.tags();
    let wanted = tags.first().cloned();
    let desc =
        layout.resolve(wanted.as_deref()).map_err(|e| Failure::build(format!("error: {}: {e}", input.display())))?;
    let img = layout
        .import_image(&desc, &strata_oci::image::Platform::host(), &store)
        .map_err(|e| Failure::build(format!("error: {}: {e}", input.display())))?;
    // The name the layout carries (containerd's annotation, which `docker load` reads
    // too), else `loaded:<ref.name>`.
    let carried = layout
        .index()
        .manifests
        .iter()
        .find(|m| m.digest == desc.digest)
        .and_then(|m| m.annotations.get(strata_oci::layout::CONTAINERD_IMAGE_NAME))
        .and_then(|n| full_name(n).ok());
    let name = match (tag, carried) {
        (Some(t), _) => full_name(t)?,
        (None, Some(n)) => n,
        (None, None) => full_name(&format!("loaded:{}", wanted.unwrap_or_else(|| "latest".into())))?,
    };
    let mut d = strata_oci::image::Descriptor::new(
        img.manifest_media_type.clone(),
        img.manifest_digest.clone(),
        store.size(&img.manifest_digest).unwrap_or(0),
    );
    d.platform = Some(img.config.platform());
    names.set(&name, &d).map_err(|e| Failure::build(format!("error: {e}")))?;
    println!("Loaded image: {name}");
    Ok(())
}

pub async fn login(
    cli: &Cli,
    registry: &str,
    user: Option<&str>,
    password: Option<&str>,
    password_stdin: bool,
) -> Result<()> {
    let user = user.ok_or_else(|| Failure::usage("error: strata login: --username is required"))?;
    let password = if password_stdin {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s).map_err(|e| Failure::usage(format!("error: reading the password: {e}")))?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else {
        password.ok_or_else(|| Failure::usage("error: strata login: give --password or --password-stdin"))?.to_string()
    };
    let client = strata_oci::registry::RegistryClient::new(crate::registry_options(cli))
        .map_err(|e| Failure::build(format!("error: {e}")))?;
    let cred = strata_oci::registry::Credential::basic(user, password.clone());
    client
        .verify_login(registry, &cred)
        .await
        .map_err(|e| Failure::build(format!("error: login to {registry}: {e}")))?;
    let path = strata_oci::registry::login(None, registry, user, &password)
        .map_err(|e| Failure::build(format!("error: {e}")))?;
    println!("Login Succeeded (credentials saved in {})", path.display());
    Ok(())
}

pub fn logout(registry: &str) -> Result<()> {
    match strata_oci::registry::logout(None, registry).map_err(|e| Failure::build(format!("error: {e}")))? {
        true => println!("Removed login credentials for {registry}"),
        false => println!("Not logged in to {registry}"),
    }
    Ok(())
}

fn dir_size(p: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut count = 0;
    for e in walkdir_entries(p) {
        if let Ok(m) = e.symlink_metadata() {
            if m.is_file() {
                bytes += m.len();
                count += 1;
            }
        }
    }
    (bytes, count)
}

fn walkdir_entries(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let path = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

pub fn du(cli: &Cli) -> Result<()> {
    let store = crate::open_store(cli)?;
    let root = store.root();
    println!("{:<14} {:>12} {:>10}", "KIND", "SIZE", "ENTRIES");
    for (kind, dir) in [
        ("blobs", "blobs"),
        ("snapshots", "snapshots"),
        ("cache mounts", "cache-mounts"),
        ("cache index", "cache"),
        ("images", "images"),
    ] {
        let (bytes, count) = dir_size(&root.join(dir));
        println!("{:<14} {:>12} {:>10}", kind, crate::units::human_bytes(bytes), count);
    }
    Ok(())
}

pub fn prune(cli: &Cli, all: bool, keep: Option<&str>, filter: &[String]) -> Result<()> {
    crate::prune::run(cli, all, keep, filter)
}
