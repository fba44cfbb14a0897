//! OCI layouts: importing the rig's busybox layout, writing layouts (directory and tar)
//! and reading them back, with skopeo as an independent reader when it is installed.

mod common;

use std::path::Path;
use std::process::Command;

use common::{assert_blob_ok, isolated_options, Rig};
use strata_oci::image::{Descriptor, Platform};
use strata_oci::layout::{LayoutError, LayoutWriter, OciLayout};
use strata_oci::media;
use strata_oci::reference::Reference;
use strata_oci::registry::RegistryClient;
use strata_oci::store::BlobStore;

fn skopeo_available() -> bool {
    Command::new("skopeo").arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

/// `skopeo inspect TRANSPORT:PATH:TAG` must succeed and report `arch`.
fn skopeo_inspect(target: &str, arch: &str) {
    if !skopeo_available() {
        strata_testsupport::skip::skipped(&format!("skopeo is not on PATH: the independent check of {target} NOT run"));
        return;
    }
    let out = Command::new("skopeo")
        .args(["--override-os", "linux", "--override-arch", arch, "inspect", target])
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo inspect {target} failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Architecture"], arch, "{v}");
    assert_eq!(v["Os"], "linux");
}

fn open_rig_layout(rig: &Rig) -> OciLayout {
    OciLayout::open(rig.busybox_layout()).unwrap()
}

#[test]
fn import_busybox_layout() {
    let Some(rig) = Rig::load("import_busybox_layout") else { return };
    let layout = open_rig_layout(&rig);
    let desc = layout.resolve(Some("latest")).unwrap();
    assert!(media::is_index(&desc.media_type));
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    for arch in ["amd64", "arm64"] {
        let img = layout.import_image(&desc, &Platform::new("linux", arch, None), &store).unwrap();
        assert_eq!(img.config.architecture, arch);
        assert_eq!(img.index_digest.as_ref(), Some(&desc.digest));
        for d in [&desc.digest, &img.manifest_digest, &img.config_digest] {
            assert_blob_ok(&store, d);
        }
        for l in &img.manifest.layers {
            assert_blob_ok(&store, &l.digest);
        }
    }
    // The per-platform tags of the seed resolve to single manifests.
    let amd = layout.resolve(Some("amd64")).unwrap();
    let img = layout.import_image(&amd, &Platform::new("linux", "amd64", None), &store).unwrap();
    assert_eq!(img.index_digest, None);

    let err = layout.resolve(Some("nope")).unwrap_err();
    assert!(matches!(err, LayoutError::TagNotFound { .. }));
    assert!(err.to_string().contains("no image tagged \"nope\" (tags: amd64, arm64, latest)"), "{err}");
    let err = layout.import_image(&desc, &"linux/riscv64".parse().unwrap(), &store).unwrap_err();
    assert!(err.to_string().contains("available: linux/amd64, linux/arm64"), "{err}");
}

#[test]
fn write_layout_dir_and_read_it_back() {
    let Some(rig) = Rig::load("write_layout_dir_and_read_it_back") else { return };
    let layout = open_rig_layout(&rig);
    let index = layout.resolve(Some("latest")).unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let amd = layout.import_image(&index, &Platform::new("linux", "amd64", None), &store).unwrap();
    layout.import_image(&index, &Platform::new("linux", "arm64", None), &store).unwrap();
    let manifest_desc = Descriptor::new(
        amd.manifest_media_type.clone(),
        amd.manifest_digest.clone(),
        store.size(&amd.manifest_digest).unwrap(),
    );

    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("busybox");
    LayoutWriter::write_dir(
        &dir,
        &store,
        &[(index.clone(), Some("latest".into())), (manifest_desc.clone(), Some("amd".into()))],
    )
    .unwrap();

    let back = OciLayout::open(&dir).unwrap();
    assert_eq!(back.tags(), ["latest", "amd"]);
    let d = back.resolve(Some("latest")).unwrap();
    assert_eq!(d.digest, index.digest);
    let s2 = tempfile::tempdir().unwrap();
    let store2 = BlobStore::open(s2.path()).unwrap();
    let img = back.import_image(&d, &"linux/arm64".parse().unwrap(), &store2).unwrap();
    assert_eq!(img.config.architecture, "arm64");
    let img = back.import_image(&back.resolve(Some("amd")).unwrap(), &"linux/amd64".parse().unwrap(), &store2).unwrap();
    assert_eq!(img.manifest_digest, amd.manifest_digest);

    skopeo_inspect(&format!("oci:{}:latest", dir.display()), "amd64");
    skopeo_inspect(&format!("oci:{}:latest", dir.display()), "arm64");
    skopeo_inspect(&format!("oci:{}:amd", dir.display()), "amd64");
}

#[test]
fn write_layout_tar_and_read_it_back() {
    let Some(rig) = Rig::load("write_layout_tar_and_read_it_back") else { return };
    let layout = open_rig_layout(&rig);
    let index = layout.resolve(Some("latest")).unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    for arch in ["amd64", "arm64"] {
        layout.import_image(&index, &Platform::new("linux", arch, None), &store).unwrap();
    }
    let entries = [(index.clone(), Some("latest".to_string()))];
    let out = tempfile::tempdir().unwrap();
    let tar_path = out.path().join("busybox.tar");
    let f = std::fs::File::create(&tar_path).unwrap();
    LayoutWriter::write_tar(std::io::BufWriter::new(f), &store, &entries).unwrap();
    let again = LayoutWriter::write_tar(Vec::new(), &store, &entries).unwrap();
    assert_eq!(std::fs::read(&tar_path).unwrap(), again, "deterministic");

    let back = OciLayout::open_tar(std::fs::File::open(&tar_path).unwrap(), &store).unwrap();
    let d = back.resolve(None).unwrap();
    assert_eq!(d.digest, index.digest);
    let s2 = tempfile::tempdir().unwrap();
    let store2 = BlobStore::open(s2.path()).unwrap();
    let img = back.import_image(&d, &"linux/amd64".parse().unwrap(), &store2).unwrap();
    assert_eq!(img.config.architecture, "amd64");

    skopeo_inspect(&format!("oci-archive:{}:latest", tar_path.display()), "arm64");
    check_tar_listing(&tar_path);
}

/// GNU tar (if present) agrees on names, owners, modes and times.
/// GNU tar (an independent reader) lists the layout tar: owners, times, modes, order.
fn check_tar_listing(path: &Path) {
    let out = Command::new("tar").args(["--numeric-owner", "--full-time", "-tvf"]).arg(path).output().expect("GNU tar");
    assert!(out.status.success(), "GNU tar rejected {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8_lossy(&out.stdout);
    for line in listing.lines() {
        assert!(line.contains(" 0/0 "), "{line}");
        assert!(line.contains("1970-01-01 00:00:00"), "{line}");
        assert!(line.starts_with("-rw-r--r--") || line.starts_with("drwxr-xr-x"), "{line}");
    }
    let names: Vec<&str> = listing.lines().filter_map(|l| l.split_whitespace().last()).collect();
    assert_eq!(names.first(), Some(&"blobs/"));
    assert_eq!(&names[names.len() - 2..], ["index.json", "oci-layout"]);
}

#[tokio::test]
async fn pulled_image_written_as_layout() {
    let Some(rig) = Rig::load("pulled_image_written_as_layout") else { return };
    let cfg = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let client = RegistryClient::new(isolated_options(cfg.path())).unwrap();
    let r: Reference = format!("{}/library/busybox:latest", rig.plain()).parse().unwrap();
    let img = client.pull_image(&r, &"linux/arm64".parse().unwrap(), &store).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("pulled");
    // Only arm64 was pulled: the manifest can be written, the whole index cannot.
    LayoutWriter::write_dir(&dir, &store, &[(img.manifest_descriptor(&store).unwrap(), Some("arm".into()))]).unwrap();
    skopeo_inspect(&format!("oci:{}:arm", dir.display()), "arm64");
    let index = img.index_digest.clone().unwrap();
    let index_desc = Descriptor::new(media::OCI_INDEX, index.clone(), store.size(&index).unwrap());
    let err = LayoutWriter::write_dir(&dir, &store, &[(index_desc, Some("all".into()))]).unwrap_err();
    eprintln!("{err}");
    assert!(err.to_string().contains("manifest for linux/amd64"), "{err}");
    assert_eq!(OciLayout::open(&dir).unwrap().tags(), ["arm"], "index.json untouched by a failed write");
}
