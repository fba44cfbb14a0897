//! Rust binaries built with cargo-auditable: an ELF file (32 or 64 bits, either byte
//! order) with a section `.dep-v0` holding zlib-compressed JSON,
//! `{"packages":[{"name","version","source","kind","dependencies","root"}]}`.
//!
//! The section headers are read by hand, every offset and size bounds-checked against the
//! buffer; the decompressed JSON is capped at [`AUDIT_DATA_CAP`] bytes.

use std::io::Read;

use serde::Deserialize;

use super::records::Found;
use super::Ecosystem;

/// The largest decompressed `.dep-v0` JSON that is parsed.
pub const AUDIT_DATA_CAP: u64 = 16 << 20;
/// The fewest bytes an ELF file can have (an ELF32 header).
pub const ELF_MIN_LEN: u64 = 52;

const SECTION_NAME: &[u8] = b".dep-v0";
const SHT_NOBITS: u32 = 8;
const SHN_XINDEX: u16 = 0xffff;

/// Do these bytes start like an ELF file?
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// The packages cargo-auditable recorded in an ELF file (none when it has no such data or
/// the data is damaged; `path` is for logs). Build dependencies are left out.
pub fn packages_in_elf(bytes: &[u8], path: &str) -> Vec<Found> {
    let Some(section) = Elf::parse(bytes).and_then(|elf| elf.section_data(SECTION_NAME)) else {
        return Vec::new();
    };
    let mut json = Vec::new();
    if let Err(e) = flate2::read::ZlibDecoder::new(section).take(AUDIT_DATA_CAP + 1).read_to_end(&mut json) {
        tracing::warn!(path, "cargo-auditable data skipped: not zlib: {e}");
        return Vec::new();
    }
    if json.len() as u64 > AUDIT_DATA_CAP {
        tracing::warn!(path, "cargo-auditable data skipped: more than {AUDIT_DATA_CAP} bytes decompressed");
        return Vec::new();
    }
    let data: AuditData = match serde_json::from_slice(&json) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(path, "cargo-auditable data skipped: not the expected JSON: {e}");
            return Vec::new();
        }
    };
    data.packages
        .into_iter()
        .filter(|p| p.kind.as_deref() != Some("build") && !p.name.is_empty() && !p.version.is_empty())
        .map(|p| Found { ecosystem: Ecosystem::Cargo, name: p.name, version: p.version, arch: None, license: None })
        .collect()
}

#[derive(Deserialize)]
struct AuditData {
    packages: Vec<AuditPackage>,
}

#[derive(Deserialize)]
struct AuditPackage {
    name: String,
    version: String,
    #[serde(default)]
    kind: Option<String>,
}

/// An ELF file's section header table, read in place.
struct Elf<'a> {
    bytes: &'a [u8],
    is_64: bool,
    big_endian: bool,
    table_offset: u64,
    entry_size: u64,
    count: u64,
    names_index: u64,
}

struct Section {
    name: u32,
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

impl<'a> Elf<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Elf<'a>> {
        if !is_elf(bytes) {
            return None;
        }
        let is_64 = match *bytes.get(4)? {
            1 => false,
            2 => true,
            _ => return None,
        };
        let big_endian = match *bytes.get(5)? {
            1 => false,
            2 => true,
            _ => return None,
        };
        let mut elf = Elf { bytes, is_64, big_endian, table_offset: 0, entry_size: 0, count: 0, names_index: 0 };
        let (shoff, fields) = if is_64 { (elf.u64_at(0x28)?, 0x3a) } else { (u64::from(elf.u32_at(0x20)?), 0x2e) };
        let entry_size = u64::from(elf.u16_at(fields)?);
        let count = elf.u16_at(fields + 2)?;
        let names_index = elf.u16_at(fields + 4)?;
        if shoff == 0 || entry_size < if is_64 { 64 } else { 40 } {
            return None;
        }
        elf.table_offset = shoff;
        elf.entry_size = entry_size;
        // Extended numbering: the real count and string table index live in section 0.
        let first = elf.section(0)?;
        elf.count = if count == 0 { first.size } else { u64::from(count) };
        elf.names_index = if names_index == SHN_XINDEX { u64::from(first.link) } else { u64::from(names_index) };
        Some(elf)
    }

    /// The contents of the first section with this name.
    fn section_data(&self, wanted: &[u8]) -> Option<&'a [u8]> {
        let names = self.data(&self.section(self.names_index)?)?;
        // `section` fails past the end of the buffer, which bounds the loop.
        for index in 0..self.count {
            let section = self.section(index)?;
            let name = names.get(section.name as usize..)?.split(|&b| b == 0).next()?;
            if name == wanted {
                return self.data(&section);
            }
        }
        None
    }

    fn section(&self, index: u64) -> Option<Section> {
        let at = usize::try_from(self.table_offset.checked_add(index.checked_mul(self.entry_size)?)?).ok()?;
        let end = at.checked_add(usize::try_from(self.entry_size).ok()?)?;
        if end > self.bytes.len() {
            return None;
        }
        Some(if self.is_64 {
            Section {
                name: self.u32_at(at)?,
                kind: self.u32_at(at + 4)?,
                offset: self.u64_at(at + 24)?,
                size: self.u64_at(at + 32)?,
                link: self.u32_at(at + 40)?,
            }
        } else {
            Section {
                name: self.u32_at(at)?,
                kind: self.u32_at(at + 4)?,
                offset: u64::from(self.u32_at(at + 16)?),
                size: u64::from(self.u32_at(at + 20)?),
                link: self.u32_at(at + 24)?,
            }
        })
    }

    fn data(&self, section: &Section) -> Option<&'a [u8]> {
        if section.kind == SHT_NOBITS {
            return None;
        }
        let start = usize::try_from(section.offset).ok()?;
        let end = start.checked_add(usize::try_from(section.size).ok()?)?;
        self.bytes.get(start..end)
    }

    fn array<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        self.bytes.get(at..at.checked_add(N)?)?.try_into().ok()
    }

    fn u16_at(&self, at: usize) -> Option<u16> {
        let b = self.array(at)?;
        Some(if self.big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b = self.array(at)?;
        Some(if self.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }

    fn u64_at(&self, at: usize) -> Option<u64> {
        let b = self.array(at)?;
        Some(if self.big_endian { u64::from_be_bytes(b) } else { u64::from_le_bytes(b) })
    }
}

/// Test helper: a minimal ELF file with the given sections (name, contents), laid out as
/// header, section contents, section name table, section header table.
#[cfg(test)]
pub(crate) fn build_elf(is_64: bool, big_endian: bool, sections: &[(&str, &[u8])]) -> Vec<u8> {
    let put16 = |v: u16| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let put32 = |v: u32| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let put64 = |v: u64| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let (header_len, entry_len) = if is_64 { (64usize, 64usize) } else { (52, 40) };
    let mut out = vec![0u8; header_len];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = if is_64 { 2 } else { 1 };
    out[5] = if big_endian { 2 } else { 1 };
    out[6] = 1;
    // (name offset, type, file offset, size) per section; index 0 is the null section.
    let mut headers: Vec<(u32, u32, u64, u64)> = vec![(0, 0, 0, 0)];
    let mut names = vec![0u8];
    for (name, contents) in sections {
        headers.push((names.len() as u32, 1, out.len() as u64, contents.len() as u64));
        names.extend_from_slice(name.as_bytes());
        names.push(0);
        out.extend_from_slice(contents);
    }
    headers.push((names.len() as u32, 3, out.len() as u64, 0));
    names.extend_from_slice(b".shstrtab\0");
    let last = headers.len() - 1;
    headers[last].3 = names.len() as u64;
    out.extend_from_slice(&names);
    let table = out.len() as u64;
    for (name, kind, offset, size) in &headers {
        let mut entry = vec![0u8; entry_len];
        entry[0..4].copy_from_slice(&put32(*name));
        entry[4..8].copy_from_slice(&put32(*kind));
        if is_64 {
            entry[24..32].copy_from_slice(&put64(*offset));
            entry[32..40].copy_from_slice(&put64(*size));
        } else {
            entry[16..20].copy_from_slice(&put32(*offset as u32));
            entry[20..24].copy_from_slice(&put32(*size as u32));
        }
        out.extend_from_slice(&entry);
    }
    let count = headers.len() as u16;
    if is_64 {
        out[0x28..0x30].copy_from_slice(&put64(table));
        out[0x3a..0x3c].copy_from_slice(&put16(entry_len as u16));
        out[0x3c..0x3e].copy_from_slice(&put16(count));
        out[0x3e..0x40].copy_from_slice(&put16(count - 1));
    } else {
        out[0x20..0x24].copy_from_slice(&put32(table as u32));
        out[0x2e..0x30].copy_from_slice(&put16(entry_len as u16));
        out[0x30..0x32].copy_from_slice(&put16(count));
        out[0x32..0x34].copy_from_slice(&put16(count - 1));
    }
    out
}

/// Test helper: zlib-compress bytes as cargo-auditable does.
#[cfg(test)]
pub(crate) fn zlib(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIT_JSON: &str = r#"{"packages":[
        {"name":"app","version":"0.1.0","source":"local","root":true,"dependencies":[1]},
        {"name":"serde","version":"1.0.200","source":"crates.io","kind":"runtime"},
        {"name":"cc","version":"1.0.90","source":"crates.io","kind":"build"}]}"#;

    fn names(found: &[Found]) -> Vec<(&str, &str)> {
        found.iter().map(|f| (f.name.as_str(), f.version.as_str())).collect()
    }

    #[test]
    fn dep_v0_section_read_in_every_class_and_byte_order() {
        let section = zlib(AUDIT_JSON.as_bytes());
        for is_64 in [true, false] {
            for big_endian in [false, true] {
                let elf = build_elf(is_64, big_endian, &[(".text", b"\x90\x90"), (".dep-v0", &section)]);
                let found = packages_in_elf(&elf, "bin");
                assert_eq!(names(&found), [("app", "0.1.0"), ("serde", "1.0.200")], "64={is_64} be={big_endian}");
            }
        }
    }

    #[test]
    fn damaged_binaries_give_nothing_and_do_not_panic() {
        let good = build_elf(true, false, &[(".dep-v0", &zlib(AUDIT_JSON.as_bytes()))]);
        for len in 0..good.len() {
            // Every truncation: no panic (the data may survive a cut in the table's tail).
            let _ = packages_in_elf(&good[..len], "bin");
        }
        assert!(packages_in_elf(&good[..good.len() - 1], "bin").is_empty());
        assert!(packages_in_elf(&build_elf(true, false, &[(".dep-v0", b"not zlib at all")]), "bin").is_empty());
        assert!(packages_in_elf(&build_elf(true, false, &[(".dep-v0", &zlib(b"{\"packages\":"))]), "bin").is_empty());
        assert!(packages_in_elf(&build_elf(true, false, &[(".dep-v0", &zlib(b"[1,2]"))]), "bin").is_empty());
        assert!(packages_in_elf(&build_elf(false, true, &[(".text", b"x")]), "bin").is_empty());

        // A section claiming to be huge, a table offset past the end, absurd counts.
        let mut huge = good.clone();
        let table = u64::from_le_bytes(huge[0x28..0x30].try_into().unwrap()) as usize;
        huge[table + 64 + 32..table + 64 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(packages_in_elf(&huge, "bin").is_empty());
        let mut far = good.clone();
        far[0x28..0x30].copy_from_slice(&(u64::MAX - 10).to_le_bytes());
        assert!(packages_in_elf(&far, "bin").is_empty());
        let mut many = good.clone();
        many[0x3c..0x3e].copy_from_slice(&0u16.to_le_bytes()); // extended count from section 0: 0
        assert!(packages_in_elf(&many, "bin").is_empty());
        let mut bad_names = good.clone();
        bad_names[0x3e..0x40].copy_from_slice(&0xfffeu16.to_le_bytes());
        assert!(packages_in_elf(&bad_names, "bin").is_empty());
        let mut small_entries = good;
        small_entries[0x3a..0x3c].copy_from_slice(&1u16.to_le_bytes());
        assert!(packages_in_elf(&small_entries, "bin").is_empty());
    }

    #[test]
    fn decompression_bomb_is_capped() {
        let zeros = vec![b' '; (AUDIT_DATA_CAP + 10) as usize];
        let elf = build_elf(true, false, &[(".dep-v0", &zlib(&zeros))]);
        assert!(packages_in_elf(&elf, "bin").is_empty());
    }
}
