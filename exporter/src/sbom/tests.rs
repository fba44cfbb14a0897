//! Whole scans: small layers built in a temporary directory, read back as an image.

use std::io::Write;
use std::path::Path;

use strata_oci::digest::Digest;

use super::cargo_auditable::{build_elf, zlib};
use super::*;

pub(super) enum Item<'a> {
    File(&'a str, Vec<u8>),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}
use Item::*;

pub(super) fn file(path: &str, text: impl AsRef<[u8]>) -> Item<'_> {
    File(path, text.as_ref().to_vec())
}

#[derive(Clone, Copy)]
pub(super) enum Compression {
    Plain,
    Gzip,
    Zstd,
}

pub(super) fn tar_bytes(items: &[Item<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_mtime(0);
        match item {
            File(path, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, data.as_slice()).unwrap();
            }
            Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, path, std::io::empty()).unwrap();
            }
            Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
            HardLink(path, target) => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

pub(super) fn write_layer(dir: &Path, items: &[Item<'_>], compression: Compression) -> SbomLayer {
    let tar = tar_bytes(items);
    let diff_id = Digest::of_bytes(&tar);
    let blob = match compression {
        Compression::Plain => tar,
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&tar).unwrap();
            gz.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(tar.as_slice(), 1).unwrap(),
    };
    let path = dir.join(diff_id.hex());
    std::fs::write(&path, blob).unwrap();
    SbomLayer { diff_id, blob: path }
}

fn scan(layers: &[Vec<Item<'_>>]) -> (Vec<Package>, Vec<SbomLayer>) {
    let dir = tempfile::tempdir().unwrap();
    let compressions = [Compression::Plain, Compression::Gzip, Compression::Zstd];
    let layers: Vec<SbomLayer> = layers
        .iter()
        .enumerate()
        .map(|(i, items)| write_layer(dir.path(), items, compressions[i % compressions.len()]))
        .collect();
    let packages = scan_layers(&layers).unwrap();
    // The blobs are gone with `dir`; the layers are only returned for their diff_ids.
    (packages, layers)
}

/// (name, version, layer index) of each package of an ecosystem.
fn of(packages: &[Package], ecosystem: Ecosystem) -> Vec<(&str, &str, usize)> {
    packages
        .iter()
        .filter(|p| p.ecosystem == ecosystem)
        .map(|p| (p.name.as_str(), p.version.as_str(), p.layer_index))
        .collect()
}

fn stanza(name: &str, version: &str, status: &str) -> String {
    format!("Package: {name}\nStatus: {status}\nPriority: optional\nArchitecture: amd64\nVersion: {version}\nDescription: {name}\n more\n\n")
}

const INSTALLED: &str = "install ok installed";
const BOOKWORM: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n";

pub(super) fn dpkg_layers() -> Vec<Vec<Item<'static>>> {
    let base = [
        stanza("bash", "5.2.15-2+b2", INSTALLED),
        stanza("coreutils", "9.1-1", INSTALLED),
        stanza("oldconf", "1.0", "deinstall ok config-files"),
        stanza("tzdata", "2024a-0+deb12u1", INSTALLED),
    ]
    .concat();
    let after_install = [
        stanza("bash", "5.2.15-2+b2", INSTALLED),
        stanza("coreutils", "9.1-1", INSTALLED),
        stanza("curl", "7.88.1-10+deb12u5", INSTALLED),
        stanza("libfoo", "1:2.3+dfsg", INSTALLED),
        stanza("oldconf", "1.0", "deinstall ok config-files"),
        stanza("tzdata", "2024a-0+deb12u1", INSTALLED),
    ]
    .concat();
    let after_remove = [
        stanza("bash", "5.2.15-2+b2", INSTALLED),
        stanza("curl", "7.88.1-10+deb12u5", INSTALLED),
        stanza("libfoo", "1:2.3+dfsg", INSTALLED),
        stanza("tzdata", "2024b-0+deb12u1", INSTALLED),
    ]
    .concat();
    vec![
        vec![
            Dir("./etc/"),
            Symlink("./etc/os-release", "../usr/lib/os-release"),
            file("./usr/lib/os-release", BOOKWORM),
            Dir("./var/lib/dpkg/"),
            file("./var/lib/dpkg/status", base),
        ],
        vec![file("var/lib/dpkg/status", after_install), file("var/lib/dpkg/status-old", "Package: x\nVersion: 1\n")],
        vec![file("var/lib/dpkg/status", after_remove)],
    ]
}

#[test]
fn dpkg_status_rewrites_keep_the_layer_that_brought_each_package() {
    let (packages, layers) = scan(&dpkg_layers());
    assert_eq!(
        of(&packages, Ecosystem::Deb),
        [
            ("bash", "5.2.15-2+b2", 0),
            ("curl", "7.88.1-10+deb12u5", 1),
            ("libfoo", "1:2.3+dfsg", 1),
            ("tzdata", "2024b-0+deb12u1", 2)
        ]
    );
    let bash = &packages[0];
    assert_eq!(bash.purl, "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12");
    assert_eq!(bash.location, "/var/lib/dpkg/status");
    assert_eq!(bash.layer, layers[0].diff_id);
    let libfoo = packages.iter().find(|p| p.name == "libfoo").unwrap();
    assert_eq!(libfoo.purl, "pkg:deb/debian/libfoo@1%3A2.3%2Bdfsg?arch=amd64&distro=debian-12");
    assert_eq!(libfoo.layer, layers[1].diff_id);
}

#[test]
fn dpkg_package_that_left_and_came_back_belongs_to_its_return() {
    let with = stanza("curl", "8.0", INSTALLED);
    let without = stanza("bash", "5", INSTALLED);
    let (packages, _) = scan(&[
        vec![file("var/lib/dpkg/status", format!("{without}{with}"))],
        vec![file("var/lib/dpkg/status", without.clone())],
        vec![file("var/lib/dpkg/status", format!("{without}{with}"))],
        vec![file("etc/motd", "unrelated layer")],
    ]);
    assert_eq!(of(&packages, Ecosystem::Deb), [("bash", "5", 0), ("curl", "8.0", 2)]);
    // Without os-release: debian namespace, no distro qualifier.
    assert_eq!(packages[1].purl, "pkg:deb/debian/curl@8.0?arch=amd64");
}

#[test]
fn dpkg_status_deleted_then_recreated_restarts_attribution() {
    let status = stanza("bash", "5", INSTALLED);
    let (packages, _) = scan(&[
        vec![file("var/lib/dpkg/status", &status)],
        vec![file("var/lib/.wh.dpkg", "")],
        vec![file("var/lib/dpkg/status", &status)],
    ]);
    assert_eq!(of(&packages, Ecosystem::Deb), [("bash", "5", 2)]);
}

#[test]
fn distroless_status_d_files_are_one_package_each() {
    let (packages, _) = scan(&[
        vec![
            file("etc/os-release", "ID=debian\nVERSION_ID=12\n"),
            file(
                "var/lib/dpkg/status.d/base-files",
                "Package: base-files\nVersion: 12.4+deb12u5\nArchitecture: amd64\n",
            ),
            file("var/lib/dpkg/status.d/base-files.md5sums", "abc  etc/debian_version\n"),
            file("var/lib/dpkg/status.d/netbase", "Package: netbase\nVersion: 6.4\nArchitecture: all\n"),
        ],
        vec![file("var/lib/dpkg/status.d/netbase", "Package: netbase\nVersion: 6.4\nArchitecture: all\n")],
    ]);
    assert_eq!(of(&packages, Ecosystem::Deb), [("base-files", "12.4+deb12u5", 0), ("netbase", "6.4", 1)]);
    assert_eq!(packages[1].location, "/var/lib/dpkg/status.d/netbase");
    assert_eq!(packages[1].purl, "pkg:deb/debian/netbase@6.4?arch=all&distro=debian-12");
}

#[test]
fn apk_database() {
    let installed =
        "C:Q1x=\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\nL:GPL-2.0-only\n\n";
    let (packages, _) = scan(&[
        vec![file("etc/os-release", "ID=alpine\nVERSION_ID=3.19.1\n"), file("lib/apk/db/installed", installed)],
        vec![file("lib/apk/db/installed", format!("{installed}P:curl\nV:8.5.0-r0\nA:x86_64\nL:curl\n"))],
    ]);
    assert_eq!(
        of(&packages, Ecosystem::Apk),
        [("busybox", "1.36.1-r5", 0), ("curl", "8.5.0-r0", 1), ("musl", "1.2.4-r2", 0)]
    );
    assert_eq!(packages[2].purl, "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64");
    assert_eq!(packages[2].license.as_deref(), Some("MIT"));
}

fn metadata(name: &str, version: &str) -> String {
    format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nLicense: MIT\n\nlong description\nName: wrong\n")
}

#[test]
fn python_dist_info_and_egg_info_and_whiteouts() {
    let site = "usr/lib/python3.11/site-packages";
    let (packages, _) = scan(&[
        vec![
            file(&format!("{site}/requests-2.31.0.dist-info/METADATA"), metadata("requests", "2.31.0")),
            file(&format!("{site}/requests-2.31.0.dist-info/RECORD"), "requests/__init__.py,,\n"),
            file(&format!("{site}/Flask_SQLAlchemy-3.1.1.dist-info/METADATA"), metadata("Flask_SQLAlchemy", "3.1.1")),
            file(&format!("{site}/six.egg-info/PKG-INFO"), metadata("six", "1.16.0")),
            file("usr/lib/python3/dist-packages/chardet-5.1.0.egg-info", metadata("chardet", "5.1.0")),
        ],
        vec![
            file(&format!("{site}/.wh.requests-2.31.0.dist-info"), ""),
            file(&format!("{site}/requests-2.32.0.dist-info/METADATA"), metadata("requests", "2.32.0")),
        ],
        vec![file(&format!("{site}/six.egg-info/.wh.PKG-INFO"), "")],
    ]);
    assert_eq!(
        of(&packages, Ecosystem::Python),
        [("Flask_SQLAlchemy", "3.1.1", 0), ("chardet", "5.1.0", 0), ("requests", "2.32.0", 1)]
    );
    assert_eq!(packages[0].purl, "pkg:pypi/flask-sqlalchemy@3.1.1");
    assert_eq!(packages[0].license.as_deref(), Some("MIT"));
    assert_eq!(packages[1].location, "/usr/lib/python3/dist-packages/chardet-5.1.0.egg-info");
}

fn manifest(name: &str, version: &str) -> String {
    format!(r#"{{"name":"{name}","version":"{version}","license":"MIT","dependencies":{{}}}}"#)
}

#[test]
fn npm_scoped_unscoped_nested_and_opaque_directories() {
    let (packages, _) = scan(&[
        vec![
            file("app/package.json", manifest("my-app", "1.0.0")),
            file("app/node_modules/left-pad/package.json", manifest("left-pad", "1.3.0")),
            file("app/node_modules/left-pad/test/package.json", manifest("fixture", "0.0.1")),
            file("app/node_modules/@types/node/package.json", manifest("@types/node", "20.1.0")),
            file("app/node_modules/a/node_modules/b/package.json", manifest("b", "2.0.0")),
            file("srv/node_modules/old/package.json", manifest("old", "0.1.0")),
            file("srv/node_modules/old2/package.json", manifest("old2", "0.1.0")),
        ],
        vec![
            file("srv/node_modules/.wh..wh..opq", ""),
            file("srv/node_modules/new/package.json", manifest("new", "1.0.0")),
            file("app/node_modules/left-pad/package.json", manifest("left-pad", "1.3.0")),
        ],
    ]);
    assert_eq!(
        of(&packages, Ecosystem::Npm),
        [("@types/node", "20.1.0", 0), ("b", "2.0.0", 0), ("left-pad", "1.3.0", 1), ("new", "1.0.0", 1)]
    );
    assert_eq!(packages[0].purl, "pkg:npm/%40types/node@20.1.0");
    assert_eq!(packages[0].location, "/app/node_modules/@types/node/package.json");
    assert_eq!(packages[2].purl, "pkg:npm/left-pad@1.3.0");
}

#[test]
fn replacing_a_directory_with_a_file_or_symlink_hides_what_was_below() {
    let (packages, _) = scan(&[
        vec![
            file("a/node_modules/x/package.json", manifest("x", "1.0.0")),
            file("b/node_modules/y/package.json", manifest("y", "1.0.0")),
            file("c/node_modules/z/package.json", manifest("z", "1.0.0")),
        ],
        vec![file("a/node_modules", "now a file"), Symlink("b/node_modules", "/elsewhere"), Dir("c/node_modules")],
        vec![file(".wh..wh..opq", "")],
    ]);
    assert!(packages.is_empty(), "{packages:?}");
}

#[test]
fn rust_binaries_with_cargo_auditable_data() {
    let json = r#"{"packages":[{"name":"app","version":"0.1.0","source":"local","root":true},
        {"name":"serde","version":"1.0.200","source":"crates.io"},{"name":"cc","version":"1.0.0","source":"crates.io","kind":"build"}]}"#;
    let elf = build_elf(true, false, &[(".text", b"\xc3"), (".dep-v0", &zlib(json.as_bytes()))]);
    let plain_elf = build_elf(true, false, &[(".text", b"\xc3")]);
    let (packages, _) = scan(&[
        vec![File("usr/local/bin/app", elf.clone()), File("usr/bin/true", plain_elf)],
        vec![File("usr/local/bin/app2-copy", elf), HardLink("usr/local/bin/app2", "usr/local/bin/app2-copy")],
        vec![file("usr/local/bin/.wh.app2-copy", "")],
    ]);
    // Packages sort by diff_id before layer index: compare in a fixed order of our own.
    let mut cargo: Vec<_> = packages.iter().map(|p| (p.name.as_str(), p.layer_index, p.location.as_str())).collect();
    cargo.sort();
    assert_eq!(
        cargo,
        [
            ("app", 0, "/usr/local/bin/app"),
            ("app", 1, "/usr/local/bin/app2"),
            ("serde", 0, "/usr/local/bin/app"),
            ("serde", 1, "/usr/local/bin/app2")
        ]
    );
    assert_eq!(packages[0].purl, "pkg:cargo/app@0.1.0");
}

#[test]
fn hostile_files_are_skipped_without_panics() {
    let huge_manifest = format!(r#"{{"name":"big","version":"1.0.0","pad":"{}"}}"#, "x".repeat(1 << 20));
    let garbage: Vec<u8> = (0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut truncated_elf = build_elf(true, false, &[(".dep-v0", &zlib(b"{\"packages\":[]}"))]);
    truncated_elf.truncate(60);
    let mut huge_section = build_elf(true, true, &[(".dep-v0", &zlib(b"{\"packages\":[]}"))]);
    let table = u64::from_be_bytes(huge_section[0x28..0x30].try_into().unwrap()) as usize;
    huge_section[table + 64 + 32..table + 64 + 40].copy_from_slice(&(u64::MAX / 2).to_be_bytes());
    let (packages, _) = scan(&[
        vec![
            file("n/node_modules/big/package.json", manifest("big", "0.9.0")),
            file("n/node_modules/bad/package.json", "{\"name\": \"bad\", \"version\": "),
            File("var/lib/dpkg/status", garbage.clone()),
            File("lib/apk/db/installed", garbage.clone()),
            File("etc/os-release", garbage.clone()),
            File("p/x.dist-info/METADATA", garbage.clone()),
            File("bin/truncated", truncated_elf),
            File("bin/huge-section", huge_section),
            File("bin/bad-zlib", build_elf(false, false, &[(".dep-v0", b"\x78\x9cgarbage")])),
            File("bin/bad-json", build_elf(false, true, &[(".dep-v0", &zlib(b"{\"packages\":[{\"name\":1}]}"))])),
        ],
        // Over the cap: skipped, and the lower version it replaces is gone too.
        vec![file("n/node_modules/big/package.json", huge_manifest)],
    ]);
    assert!(packages.is_empty(), "{packages:?}");

    // A damaged tar is an error, not a panic.
    let dir = tempfile::tempdir().unwrap();
    let mut tar = tar_bytes(&[file("var/lib/dpkg/status", stanza("bash", "5", INSTALLED))]);
    tar.truncate(700);
    let broken = dir.path().join("broken");
    std::fs::write(&broken, &tar).unwrap();
    let layer = SbomLayer { diff_id: Digest::of_bytes(b"x"), blob: broken };
    assert!(scan_layers(&[layer]).is_err());
    let garbage_blob = dir.path().join("garbage");
    std::fs::write(&garbage_blob, [&[0x1f, 0x8b][..], &garbage].concat()).unwrap();
    let layer = SbomLayer { diff_id: Digest::of_bytes(b"x"), blob: garbage_blob };
    assert!(scan_layers(&[layer]).is_err());
}

fn subject() -> SbomSubject {
    SbomSubject {
        name: "registry.example/app:1".into(),
        platform: "linux/amd64".into(),
        created: Some(1_700_000_000),
        tool: "strata-0.1.0".into(),
    }
}

fn everything() -> Vec<Vec<Item<'static>>> {
    let json = r#"{"packages":[{"name":"app","version":"0.1.0","source":"local","root":true}]}"#;
    let mut layers = dpkg_layers();
    layers.push(vec![
        File("usr/local/bin/app", build_elf(true, false, &[(".dep-v0", &zlib(json.as_bytes()))])),
        File("app/node_modules/@types/node/package.json", manifest("@types/node", "20.1.0").into_bytes()),
        File("usr/lib/python3/site-packages/six-1.16.0.dist-info/METADATA", metadata("six", "1.16.0").into_bytes()),
        // The same package twice: two SPDX packages, two ids.
        File("venv/lib/python3/site-packages/six-1.16.0.dist-info/METADATA", metadata("six", "1.16.0").into_bytes()),
    ]);
    layers
}

#[test]
fn same_layers_same_document_bytes() {
    let (first, _) = scan(&everything());
    let (second, _) = scan(&everything());
    assert_eq!(first, second);
    let a = serde_json::to_vec_pretty(&spdx_document(&first, &subject())).unwrap();
    let mut reversed = second.clone();
    reversed.reverse();
    let b = serde_json::to_vec_pretty(&spdx_document(&reversed, &subject())).unwrap();
    assert_eq!(a, b);
    let mut other = subject();
    other.name = "registry.example/app:2".into();
    let c = spdx_document(&first, &other);
    let doc: serde_json::Value = serde_json::from_slice(&a).unwrap();
    assert_ne!(doc["documentNamespace"], c["documentNamespace"]);
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
}

#[test]
fn spdx_document_shape_and_ids() {
    let (packages, layers) = scan(&everything());
    let doc = spdx_document(&packages, &subject());
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["dataLicense"], "CC0-1.0");
    assert_eq!(doc["SPDXID"], "SPDXRef-DOCUMENT");
    assert_eq!(doc["name"], "registry.example/app:1");
    assert!(doc["documentNamespace"]
        .as_str()
        .unwrap()
        .starts_with("https://spdx.org/spdxdocs/strata/registry.example-app-1-"));
    assert_eq!(doc["creationInfo"]["creators"][0], "Tool: strata-0.1.0");

    let spdx_packages = doc["packages"].as_array().unwrap();
    assert_eq!(spdx_packages.len(), packages.len() + 1);
    assert_eq!(spdx_packages[0]["SPDXID"], "SPDXRef-Image");
    assert!(spdx_packages[0]["comment"].as_str().unwrap().contains("linux/amd64"));
    let mut ids = std::collections::BTreeSet::new();
    for p in spdx_packages {
        let id = p["SPDXID"].as_str().unwrap();
        let tail = id.strip_prefix("SPDXRef-").unwrap();
        assert!(!tail.is_empty() && tail.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'), "{id}");
        assert!(ids.insert(id.to_string()), "duplicate {id}");
        assert_eq!(p["downloadLocation"], "NOASSERTION");
        assert_eq!(p["licenseDeclared"], "NOASSERTION");
        assert_eq!(p["filesAnalyzed"], false);
    }
    let scoped = spdx_packages.iter().find(|p| p["name"] == "@types/node").unwrap();
    let id = scoped["SPDXID"].as_str().unwrap();
    assert!(
        id.starts_with("SPDXRef-Package-npm--types-node-") && id.len() == "SPDXRef-Package-npm--types-node-".len() + 8
    );
    assert_eq!(scoped["externalRefs"][0]["referenceLocator"], "pkg:npm/%40types/node@20.1.0");
    assert_eq!(scoped["licenseComments"].as_str().map(|c| c.contains("MIT")), Some(true));
    let six: Vec<&str> =
        spdx_packages.iter().filter(|p| p["name"] == "six").map(|p| p["SPDXID"].as_str().unwrap()).collect();
    assert_eq!(six.len(), 2);
    assert_eq!(six[1], format!("{}-2", six[0]));
    let bash = spdx_packages.iter().find(|p| p["name"] == "bash").unwrap();
    assert_eq!(bash["sourceInfo"], format!("layer 0 {} at /var/lib/dpkg/status", layers[0].diff_id));

    let relationships = doc["relationships"].as_array().unwrap();
    assert_eq!(relationships.len(), packages.len() + 1);
    assert_eq!(relationships[0]["relationshipType"], "DESCRIBES");
    for r in &relationships[1..] {
        assert_eq!(r["spdxElementId"], "SPDXRef-Image");
        assert_eq!(r["relationshipType"], "CONTAINS");
        assert!(ids.contains(r["relatedSpdxElement"].as_str().unwrap()));
    }
}

#[test]
fn creation_time_is_clamped_and_defaults_to_now() {
    let mut s = subject();
    s.created = Some(-5);
    assert_eq!(spdx_document(&[], &s)["creationInfo"]["created"], "1970-01-01T00:00:00Z");
    s.created = Some(i64::MAX);
    assert_eq!(spdx_document(&[], &s)["creationInfo"]["created"], "9999-12-31T23:59:59Z");
    s.created = None;
    let now = spdx_document(&[], &s)["creationInfo"]["created"].as_str().unwrap().to_string();
    assert!(now.len() == 20 && now.ends_with('Z') && now.as_str() > "2024-01-01", "{now}");
    s.name = " ".into();
    assert_eq!(spdx_document(&[], &s)["packages"][0]["name"], "image");
}
