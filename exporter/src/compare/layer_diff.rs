//! What a layer holds, entry by entry, and how two layers' entries differ.
//!
//! [`read_layer_file`] streams a layer blob (gzip, zstd or a plain tar, recognised by its
//! first bytes) into a [`LayerIndex`]: per path the entry's type, mode, owner, size,
//! sha256 of its content, link target, device numbers, mtime and its other PAX records
//! (xattrs are `SCHILY.xattr.NAME`). Content is hashed entry by entry; nothing larger
//! than one read buffer is held in memory. The blob's digest and the tar's digest
//! (the diff_id) are computed on the way, so a corrupt blob is noticed.
//! [`diff_layers`] then lists each path that differs and how.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use serde::Serialize;
use strata_oci::digest::{Digest, HashingReader, HashingWriter};
use strata_oci::media::LayerCompression;

/// PAX records already shown as an entry fact of their own (or as the path itself).
const PAX_AS_FACTS: &[&str] = &["path", "linkpath", "size", "uid", "gid", "uname", "gname", "mtime"];

/// Everything about one tar entry that ends up in the layer's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryFacts {
    /// `file`, `dir`, `symlink`, `hardlink`, `char`, `block`, `fifo`, or `type 'X'`.
    pub kind: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// `user:group` from the header (`:` when both are empty).
    pub owner_names: String,
    pub size: u64,
    /// sha256 (hex) of the entry's data, for entries that carry data.
    pub content: Option<String>,
    pub link_target: Option<String>,
    /// `major:minor` for character and block devices.
    pub device: Option<String>,
    /// Seconds since the epoch as written (PAX `mtime` may carry a fraction).
    pub mtime: String,
    /// PAX records other than those above: xattrs, atime, ctime, vendor records.
    pub attributes: BTreeMap<String, String>,
    /// `ustar`, `gnu` or `v7`.
    pub header_format: String,
}

/// A layer's entries by path (`/etc/passwd`), and the order they came in.
#[derive(Debug, Clone, Default)]
pub struct LayerIndex {
    pub entries: BTreeMap<String, EntryFacts>,
    pub order: Vec<String>,
}

/// A layer blob read whole: its entries and the digests of both forms.
#[derive(Debug, Clone)]
pub struct LayerRead {
    pub index: LayerIndex,
    /// sha256 of the blob as stored (compressed).
    pub blob_digest: Digest,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
}

/// Which side of a comparison something belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Left,
    Right,
}

/// One way an entry differs between two layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum EntryChange {
    /// The path is in one layer only.
    OnlyIn {
        side: Side,
        kind: String,
    },
    Type {
        left: String,
        right: String,
    },
    Content {
        left: Option<String>,
        right: Option<String>,
        left_size: u64,
        right_size: u64,
    },
    /// Permission bits (with setuid/setgid/sticky), in octal.
    Mode {
        left: String,
        right: String,
    },
    /// Numeric `uid:gid`.
    Owner {
        left: String,
        right: String,
    },
    OwnerNames {
        left: String,
        right: String,
    },
    Mtime {
        left: String,
        right: String,
    },
    LinkTarget {
        left: Option<String>,
        right: Option<String>,
    },
    Device {
        left: Option<String>,
        right: Option<String>,
    },
    /// A PAX record (an xattr is `SCHILY.xattr.NAME`); `None`: absent on that side.
    Attribute {
        name: String,
        left: Option<String>,
        right: Option<String>,
    },
    HeaderFormat {
        left: String,
        right: String,
    },
}

/// A path that differs, with every way it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryDifference {
    pub path: String,
    pub changes: Vec<EntryChange>,
}

/// How two layers' entries differ.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerDiff {
    pub entries: Vec<EntryDifference>,
    /// The same paths in a different order (only looked at when no entry differs).
    pub order_differs: bool,
}

/// Read a layer blob from a file: sniff the compression, index the tar, hash both forms.
pub fn read_layer_file(path: &Path) -> io::Result<LayerRead> {
    let mut file = File::open(path)?;
    let compression = LayerCompression::sniff_file(&mut file)?;
    let blob = HashingReader::new(BufReader::with_capacity(1 << 20, file));
    let (index, diff_id, mut blob) = match compression {
        LayerCompression::Gzip => {
            let (index, diff_id, decoder) = index_tar(flate2::read::MultiGzDecoder::new(blob))?;
            (index, diff_id, decoder.into_inner())
        }
        LayerCompression::Zstd => {
            let (index, diff_id, decoder) = index_tar(zstd::stream::read::Decoder::new(blob)?)?;
            (index, diff_id, decoder.finish().into_inner())
        }
        LayerCompression::None => index_tar(blob)?,
    };
    io::copy(&mut blob, &mut io::sink())?;
    let (_, blob_digest, _) = blob.finish();
    Ok(LayerRead { index, blob_digest, diff_id })
}

/// Index an uncompressed tar stream read to its end; returns the index, the stream's
/// sha256 and the reader.
pub fn index_tar<R: Read>(reader: R) -> io::Result<(LayerIndex, Digest, R)> {
    let mut plain = HashingReader::new(reader);
    let mut index = LayerIndex::default();
    {
        let mut archive = tar::Archive::new(&mut plain);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry_path(&entry.path_bytes());
            let facts = entry_facts(&mut entry)?;
            if index.entries.insert(path.clone(), facts).is_none() {
                index.order.push(path);
            }
        }
    }
    io::copy(&mut plain, &mut io::sink())?;
    let (reader, diff_id, _) = plain.finish();
    Ok((index, diff_id, reader))
}

/// `./a/b/` → `/a/b`; `.` → `/`.
fn entry_path(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut p = text.as_ref();
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    let p = p.trim_start_matches('/').trim_end_matches('/');
    if p.is_empty() || p == "." {
        "/".to_string()
    } else {
        format!("/{p}")
    }
}

fn entry_facts<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<EntryFacts> {
    let mut pax: BTreeMap<String, String> = BTreeMap::new();
    if let Some(records) = entry.pax_extensions()? {
        for record in records {
            let record = record?;
            let key = String::from_utf8_lossy(record.key_bytes()).into_owned();
            pax.insert(key, show_bytes(record.value_bytes()));
        }
    }
    let header = entry.header();
    let kind = kind_name(header.entry_type());
    let pax_number = |key: &str| pax.get(key).and_then(|v| v.parse::<u64>().ok());
    let uid = pax_number("uid").map(Ok).unwrap_or_else(|| header.uid())?;
    let gid = pax_number("gid").map(Ok).unwrap_or_else(|| header.gid())?;
    let name = |key: &str, bytes: Option<&[u8]>| {
        pax.get(key)
            .cloned()
            .unwrap_or_else(|| bytes.map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default())
    };
    let owner_names = format!("{}:{}", name("uname", header.username_bytes()), name("gname", header.groupname_bytes()));
    let mtime = match pax.get("mtime") {
        Some(m) => m.clone(),
        None => header.mtime()?.to_string(),
    };
    let device = match header.entry_type() {
        tar::EntryType::Char | tar::EntryType::Block => {
            Some(format!("{}:{}", header.device_major()?.unwrap_or(0), header.device_minor()?.unwrap_or(0)))
        }
        _ => None,
    };
    let header_format = if header.as_ustar().is_some() {
        "ustar"
    } else if header.as_gnu().is_some() {
        "gnu"
    } else {
        "v7"
    };
    let mode = header.mode()?;
    let link_target = entry.link_name_bytes().map(|b| String::from_utf8_lossy(&b).into_owned());
    let size = entry.size();
    let carries_data = !matches!(
        entry.header().entry_type(),
        tar::EntryType::Directory | tar::EntryType::Symlink | tar::EntryType::Link
    );
    let content = if carries_data {
        let mut sink = HashingWriter::new(io::sink());
        io::copy(entry, &mut sink)?;
        let (_, digest, _) = sink.finish();
        Some(digest.hex().to_string())
    } else {
        None
    };
    let attributes = pax.into_iter().filter(|(k, _)| !PAX_AS_FACTS.contains(&k.as_str())).collect();
    Ok(EntryFacts {
        kind,
        mode,
        uid,
        gid,
        owner_names,
        size,
        content,
        link_target,
        device,
        mtime,
        attributes,
        header_format: header_format.to_string(),
    })
}

fn kind_name(t: tar::EntryType) -> String {
    match t {
        tar::EntryType::Regular | tar::EntryType::Continuous => "file".into(),
        tar::EntryType::Directory => "dir".into(),
        tar::EntryType::Symlink => "symlink".into(),
        tar::EntryType::Link => "hardlink".into(),
        tar::EntryType::Char => "char".into(),
        tar::EntryType::Block => "block".into(),
        tar::EntryType::Fifo => "fifo".into(),
        other => format!("type '{}'", other.as_byte() as char),
    }
}

/// Text as is when it is printable UTF-8, else `0x` and hex.
fn show_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(|c| c.is_control()) => s.to_string(),
        _ => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

/// Every path whose entry differs between two layers, in path order.
pub fn diff_layers(left: &LayerIndex, right: &LayerIndex) -> LayerDiff {
    let mut entries = Vec::new();
    let mut paths: Vec<&String> = left.entries.keys().chain(right.entries.keys()).collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        let changes = match (left.entries.get(path), right.entries.get(path)) {
            (Some(l), Some(r)) => diff_entry(l, r),
            (Some(l), None) => vec![EntryChange::OnlyIn { side: Side::Left, kind: l.kind.clone() }],
            (None, Some(r)) => vec![EntryChange::OnlyIn { side: Side::Right, kind: r.kind.clone() }],
            (None, None) => Vec::new(),
        };
        if !changes.is_empty() {
            entries.push(EntryDifference { path: path.clone(), changes });
        }
    }
    let order_differs = entries.is_empty() && left.order != right.order;
    LayerDiff { entries, order_differs }
}

fn diff_entry(l: &EntryFacts, r: &EntryFacts) -> Vec<EntryChange> {
    let mut out = Vec::new();
    if l.kind != r.kind {
        out.push(EntryChange::Type { left: l.kind.clone(), right: r.kind.clone() });
    }
    if l.content != r.content || l.size != r.size {
        out.push(EntryChange::Content {
            left: l.content.clone(),
            right: r.content.clone(),
            left_size: l.size,
            right_size: r.size,
        });
    }
    if l.mode != r.mode {
        out.push(EntryChange::Mode { left: format!("{:04o}", l.mode), right: format!("{:04o}", r.mode) });
    }
    if (l.uid, l.gid) != (r.uid, r.gid) {
        out.push(EntryChange::Owner { left: format!("{}:{}", l.uid, l.gid), right: format!("{}:{}", r.uid, r.gid) });
    }
    if l.owner_names != r.owner_names {
        out.push(EntryChange::OwnerNames { left: l.owner_names.clone(), right: r.owner_names.clone() });
    }
    if l.mtime != r.mtime {
        out.push(EntryChange::Mtime { left: l.mtime.clone(), right: r.mtime.clone() });
    }
    if l.link_target != r.link_target {
        out.push(EntryChange::LinkTarget { left: l.link_target.clone(), right: r.link_target.clone() });
    }
    if l.device != r.device {
        out.push(EntryChange::Device { left: l.device.clone(), right: r.device.clone() });
    }
    let mut names: Vec<&String> = l.attributes.keys().chain(r.attributes.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let (a, b) = (l.attributes.get(name), r.attributes.get(name));
        if a != b {
            out.push(EntryChange::Attribute { name: name.clone(), left: a.cloned(), right: b.cloned() });
        }
    }
    if l.header_format != r.header_format {
        out.push(EntryChange::HeaderFormat { left: l.header_format.clone(), right: r.header_format.clone() });
    }
    out
}

/// `abcdef012345…` (or `(none)`).
fn short_hash(h: &Option<String>) -> String {
    match h {
        Some(h) => format!("{}…", &h[..12.min(h.len())]),
        None => "(none)".to_string(),
    }
}

fn or_none(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(none)")
}

impl EntryChange {
    /// The change in words, naming the sides `left` and `right` by their labels.
    pub fn describe(&self, left: &str, right: &str) -> String {
        match self {
            EntryChange::OnlyIn { side, kind } => {
                format!("only in {} ({kind})", if *side == Side::Left { left } else { right })
            }
            EntryChange::Type { left, right } => format!("type {left} vs {right}"),
            EntryChange::Content { left, right, left_size, right_size } => {
                let mut s = format!("content differs (sha256 {} vs {})", short_hash(left), short_hash(right));
                if left_size != right_size {
                    s.push_str(&format!(", size {left_size} vs {right_size}"));
                }
                s
            }
            EntryChange::Mode { left, right } => format!("mode {left} vs {right}"),
            EntryChange::Owner { left, right } => format!("owner {left} vs {right}"),
            EntryChange::OwnerNames { left, right } => format!("owner names {left:?} vs {right:?}"),
            EntryChange::Mtime { left, right } => format!("mtime {left} vs {right}"),
            EntryChange::LinkTarget { left, right } => format!("link target {} vs {}", or_none(left), or_none(right)),
            EntryChange::Device { left, right } => format!("device {} vs {}", or_none(left), or_none(right)),
            EntryChange::Attribute { name, left, right } => {
                let show = |v: &Option<String>| v.as_ref().map(|v| format!("{v:?}")).unwrap_or("(absent)".into());
                format!("{name} {} vs {}", show(left), show(right))
            }
            EntryChange::HeaderFormat { left, right } => format!("tar header format {left} vs {right}"),
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Left => "left",
            Side::Right => "right",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A tar of (path, mode, content) regular files, plus PAX records for the first.
    fn layer(files: &[(&str, u32, &str)], first_pax: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (i, (path, mode, content)) in files.iter().enumerate() {
            if i == 0 && !first_pax.is_empty() {
                b.append_pax_extensions(first_pax.iter().copied()).unwrap();
            }
            let mut h = tar::Header::new_ustar();
            h.set_path(path).unwrap();
            h.set_mode(*mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(content.len() as u64);
            h.set_mtime(1_700_000_000);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, content.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn index(bytes: &[u8]) -> LayerIndex {
        index_tar(bytes).unwrap().0
    }

    #[test]
    fn one_mode_and_one_content_difference() {
        let left =
            index(&layer(&[("etc/app.conf", 0o644, "a=1\n"), ("bin/tool", 0o755, "v1"), ("same", 0o644, "x")], &[]));
        let right =
            index(&layer(&[("etc/app.conf", 0o600, "a=1\n"), ("bin/tool", 0o755, "v2"), ("same", 0o644, "x")], &[]));
        let d = diff_layers(&left, &right);
        assert!(!d.order_differs);
        let paths: Vec<&str> = d.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/bin/tool", "/etc/app.conf"]);
        assert!(matches!(&d.entries[0].changes[..], [EntryChange::Content { left_size: 2, right_size: 2, .. }]));
        assert_eq!(d.entries[1].changes, [EntryChange::Mode { left: "0644".into(), right: "0600".into() }]);
        assert_eq!(d.entries[1].changes[0].describe("a", "b"), "mode 0644 vs 0600");
        let text = d.entries[0].changes[0].describe("a", "b");
        assert!(text.starts_with("content differs (sha256 "), "{text}");
    }

    #[test]
    fn presence_mtime_xattrs_and_order() {
        let left = index(&layer(&[("a", 0o644, "1"), ("b", 0o644, "2")], &[("SCHILY.xattr.user.k", b"v")]));
        let right = index(&layer(&[("a", 0o644, "1"), ("c", 0o644, "3")], &[("mtime", b"1700000001.5")]));
        let d = diff_layers(&left, &right);
        assert_eq!(d.entries.len(), 3);
        assert_eq!(
            d.entries[0].changes,
            [
                EntryChange::Mtime { left: "1700000000".into(), right: "1700000001.5".into() },
                EntryChange::Attribute { name: "SCHILY.xattr.user.k".into(), left: Some("v".into()), right: None },
            ]
        );
        assert_eq!(d.entries[1].changes, [EntryChange::OnlyIn { side: Side::Left, kind: "file".into() }]);
        assert_eq!(d.entries[2].changes[0].describe("build 1", "build 2"), "only in build 2 (file)");

        let ab = index(&layer(&[("a", 0o644, "1"), ("b", 0o644, "2")], &[]));
        let ba = index(&layer(&[("b", 0o644, "2"), ("a", 0o644, "1")], &[]));
        let d = diff_layers(&ab, &ba);
        assert!(d.entries.is_empty());
        assert!(d.order_differs);
    }

    #[test]
    fn json_form_names_what_changed() {
        let c = EntryChange::Mode { left: "0644".into(), right: "0755".into() };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::json!({"what": "mode", "left": "0644", "right": "0755"})
        );
    }

    #[test]
    fn reads_gzip_and_plain_blobs_and_hashes_both_forms() {
        let tar = layer(&[("f", 0o644, "content")], &[]);
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, &tar).unwrap();
        let gz = dir.path().join("gz");
        // Two gzip members, as strata's parallel gzip writes them.
        let mut bytes = Vec::new();
        for part in [&tar[..700], &tar[700..]] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(part).unwrap();
            bytes.extend(e.finish().unwrap());
        }
        std::fs::write(&gz, &bytes).unwrap();
        let zst = dir.path().join("zst");
        std::fs::write(&zst, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();

        let a = read_layer_file(&plain).unwrap();
        let b = read_layer_file(&gz).unwrap();
        let c = read_layer_file(&zst).unwrap();
        assert_eq!(a.diff_id, Digest::of_bytes(&tar));
        assert_eq!(a.blob_digest, a.diff_id);
        assert_eq!(b.diff_id, a.diff_id);
        assert_eq!(b.blob_digest, Digest::of_bytes(&bytes));
        assert_eq!(c.diff_id, a.diff_id);
        assert_eq!(diff_layers(&a.index, &b.index), LayerDiff::default());
        assert_eq!(a.index.entries["/f"].content.as_deref(), Some(Digest::of_bytes(b"content").hex()));
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(entry_path(b"./usr/bin/"), "/usr/bin");
        assert_eq!(entry_path(b"./"), "/");
        assert_eq!(entry_path(b"etc"), "/etc");
    }
}
