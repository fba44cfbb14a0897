//! Layers → the packages of the final file system, each with the layer that brought it.
//!
//! Layers are streamed bottom first, once each. Only record files are kept
//! ([`records::classify`], plus ELF files with cargo-auditable data), parsed as they
//! stream past, in a tree keyed by path. Each layer's entries replace what lower layers
//! had at their path (a non-directory also everything below it), `.wh.NAME` deletes NAME
//! and everything below it, and `DIR/.wh..wh..opq` deletes everything below DIR — all
//! from lower layers only, as OCI layers mean it.
//!
//! Attribution: a package from a one-package file (Python metadata, npm manifest,
//! `status.d` file, binary) belongs to the last layer that wrote the file. A package in a
//! database of many ([`RecordKind::lists_many`]: the dpkg status file, apk's installed)
//! belongs to the layer where the same (name, version, arch) entered the database and
//! stayed in every later version of it, so an `apt-get install` layer that rewrites the
//! status file claims only what it added.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use super::cargo_auditable::{self, ELF_MIN_LEN};
use super::os_release::{self, OsRelease};
use super::purl;
use super::records::{self, Contents, Found, RecordKind};
use super::{Package, SbomLayer};
use strata_oci::media::LayerCompression;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// Scan an image's layers (bottom first) for the packages of its final file system:
/// sorted, without duplicates.
pub fn scan_layers(layers: &[SbomLayer]) -> io::Result<Vec<Package>> {
    let mut tree = RecordTree::default();
    for (index, layer) in layers.iter().enumerate() {
        tree.add_layer(&layer.blob, index).map_err(|e| {
            io::Error::new(e.kind(), format!("SBOM scan of layer {index} ({}): {e}", layer.blob.display()))
        })?;
    }
    Ok(tree.into_packages(layers))
}

/// What a record file of the file system so far says.
#[derive(Debug, Clone)]
enum Record {
    /// Each package with the index of the layer it is attributed to.
    Packages(Vec<(Found, usize)>),
    OsRelease(OsRelease),
}

/// The record files of the file system built from the layers added so far, by path.
#[derive(Debug, Default)]
struct RecordTree {
    records: BTreeMap<String, Record>,
}

/// One layer's pass: lower records it hides are moved out of the tree at once (so each is
/// looked at once however many entries hide it), its own records wait until the layer's
/// end (a whiteout never hides what its own layer writes).
struct LayerPass<'a> {
    tree: &'a mut RecordTree,
    index: usize,
    /// Lower records this layer replaced or deleted (the previous version of a database).
    hidden: BTreeMap<String, Record>,
    written: BTreeMap<String, (RecordKind, Contents)>,
}

impl RecordTree {
    fn add_layer(&mut self, blob: &Path, index: usize) -> io::Result<()> {
        let mut file = File::open(blob)?;
        let compression = LayerCompression::sniff_file(&mut file)?;
        let file = BufReader::with_capacity(1 << 20, file);
        let tar: Box<dyn Read> = match compression {
            LayerCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
            LayerCompression::Zstd => Box::new(zstd::stream::read::Decoder::new(file)?),
            LayerCompression::None => Box::new(file),
        };
        let mut pass = LayerPass { tree: self, index, hidden: BTreeMap::new(), written: BTreeMap::new() };
        let mut archive = tar::Archive::new(tar);
        for entry in archive.entries()? {
            pass.entry(&mut entry?)?;
        }
        pass.finish();
        Ok(())
    }

    /// Move out the record at `path`, and with `subtree` every record below it.
    fn take(&mut self, path: &str, subtree: bool, into: &mut BTreeMap<String, Record>) {
        if let Some(record) = self.records.remove(path) {
            into.insert(path.to_string(), record);
        }
        if subtree {
            let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
            let below: Vec<String> = self
                .records
                .range(prefix.clone()..)
                .map(|(k, _)| k)
                .take_while(|k| k.starts_with(&prefix))
                .cloned()
                .collect();
            for key in below {
                if let Some(record) = self.records.remove(&key) {
                    into.insert(key, record);
                }
            }
        }
    }

    fn into_packages(self, layers: &[SbomLayer]) -> Vec<Package> {
        let distro = os_release::PATHS
            .iter()
            .find_map(|p| match self.records.get(*p) {
                Some(Record::OsRelease(release)) => Some(release.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let mut packages = Vec::new();
        for (path, record) in &self.records {
            let Record::Packages(found) = record else { continue };
            for (found, layer_index) in found {
                packages.push(Package {
                    ecosystem: found.ecosystem,
                    name: found.name.clone(),
                    version: found.version.clone(),
                    purl: purl::for_package(found, &distro),
                    layer: layers[*layer_index].diff_id.clone(),
                    layer_index: *layer_index,
                    location: path.clone(),
                    license: found.license.clone(),
                });
            }
        }
        packages.sort();
        packages.dedup();
        packages
    }
}

impl LayerPass<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> io::Result<()> {
        let path = clean_path(&entry.path_bytes());
        let (dir, name) = split_path(&path);
        if name == OPAQUE_WHITEOUT {
            self.tree.take(dir, true, &mut self.hidden);
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            // `.wh..wh.*` other than the opaque marker: aufs bookkeeping, not a deletion.
            if !hidden.is_empty() && !hidden.starts_with(WHITEOUT_PREFIX) {
                self.tree.take(&join(dir, hidden), true, &mut self.hidden);
            }
            return Ok(());
        }
        let entry_type = entry.header().entry_type();
        self.tree.take(&path, !entry_type.is_dir(), &mut self.hidden);
        // A later entry for the same path in this layer replaces an earlier one.
        let earlier = self.written.remove(&path);
        if entry_type.is_file() || entry_type == tar::EntryType::Continuous {
            if let Some(record) = self.read_file(entry, &path)? {
                self.written.insert(path, record);
            }
        } else if entry_type.is_hard_link() {
            self.link(entry, path, earlier)?;
        }
        Ok(())
    }

    /// Read and parse a regular file if it is a record file (by path) or an ELF file.
    fn read_file<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        path: &str,
    ) -> io::Result<Option<(RecordKind, Contents)>> {
        let size = entry.size();
        if let Some(kind) = records::classify(path) {
            return Ok(self
                .read_capped(entry, kind, path, size, Vec::new())?
                .map(|bytes| (kind, records::parse(kind, &bytes, path))));
        }
        if size < ELF_MIN_LEN {
            return Ok(None);
        }
        let mut magic = [0u8; 4];
        entry.read_exact(&mut magic)?;
        if !cargo_auditable::is_elf(&magic) {
            return Ok(None);
        }
        let kind = RecordKind::AuditableBinary;
        let Some(bytes) = self.read_capped(entry, kind, path, size, magic.to_vec())? else { return Ok(None) };
        let found = cargo_auditable::packages_in_elf(&bytes, path);
        Ok((!found.is_empty()).then_some((kind, Contents::Packages(found))))
    }

    /// The file's bytes (after `start`, already read), or `None` when it is over the cap.
    fn read_capped<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        kind: RecordKind,
        path: &str,
        size: u64,
        start: Vec<u8>,
    ) -> io::Result<Option<Vec<u8>>> {
        let cap = kind.size_cap();
        if size > cap {
            tracing::warn!(path, layer = self.index, size, cap, "SBOM: {kind:?} file skipped: larger than its cap");
            return Ok(None);
        }
        let mut bytes = start;
        bytes.reserve_exact(size as usize - bytes.len().min(size as usize));
        entry.take(cap + 1 - bytes.len() as u64).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > cap {
            tracing::warn!(path, layer = self.index, cap, "SBOM: {kind:?} file skipped: larger than its cap");
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// A hard link to a record file written earlier in this layer is that record again,
    /// when the link's path makes it the same kind of record (any path, for binaries).
    fn link<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        path: String,
        earlier: Option<(RecordKind, Contents)>,
    ) -> io::Result<()> {
        let Some(target) = entry.link_name_bytes() else { return Ok(()) };
        let target = clean_path(&target);
        let source = if target == path { earlier } else { self.written.get(&target).cloned() };
        if let Some((kind, contents)) = source {
            if kind == RecordKind::AuditableBinary || records::classify(&path) == Some(kind) {
                self.written.insert(path, (kind, contents));
            }
        }
        Ok(())
    }

    /// Put this layer's records into the tree, attributing each package.
    fn finish(self) {
        let LayerPass { tree, index, hidden, written } = self;
        for (path, (kind, contents)) in written {
            let record = match contents {
                Contents::OsRelease(release) => Record::OsRelease(release),
                Contents::Packages(found) if kind.lists_many() => {
                    let previous = hidden.get(&path);
                    Record::Packages(attribute_many(found, previous, index))
                }
                Contents::Packages(found) => Record::Packages(found.into_iter().map(|f| (f, index)).collect()),
            };
            tree.records.insert(path, record);
        }
    }
}

/// Each package of a new version of a database keeps the layer of the same package in the
/// previous version; a package new to it belongs to `index`.
fn attribute_many(found: Vec<Found>, previous: Option<&Record>, index: usize) -> Vec<(Found, usize)> {
    let earlier: BTreeMap<(&str, &str, Option<&str>), usize> = match previous {
        Some(Record::Packages(previous)) => previous.iter().map(|(f, layer)| (f.identity(), *layer)).collect(),
        _ => BTreeMap::new(),
    };
    found
        .into_iter()
        .map(|f| {
            let layer = earlier.get(&f.identity()).copied().unwrap_or(index);
            (f, layer)
        })
        .collect()
}

/// A tar path as an absolute, lexically clean path (`./usr//lib/../bin/` → `/usr/bin`).
fn clean_path(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `/a/b` → (`/a`, `b`); `/a` → (`/`, `a`); `/` → (`/`, ``).
fn split_path(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => ("/", path),
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_and_split() {
        assert_eq!(clean_path(b"./usr//lib/../bin/"), "/usr/bin");
        assert_eq!(clean_path(b"../../etc/os-release"), "/etc/os-release");
        assert_eq!(clean_path(b"./"), "/");
        assert_eq!(split_path("/a/b"), ("/a", "b"));
        assert_eq!(split_path("/a"), ("/", "a"));
        assert_eq!(split_path("/"), ("/", ""));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}
