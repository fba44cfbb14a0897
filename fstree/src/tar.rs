//! The deterministic tar encoder: the same entries give the same bytes, on any
//! machine, as Go's `archive/tar` would write them.
//!
//! Headers are built here, field by field, rather than by `tar::Builder` (whose
//! deterministic mode rewrites owners and modes):
//!
//! - ustar headers: numeric uid/gid, empty uname/gname, mode = permission bits with
//!   setuid/setgid/sticky, mtime in whole seconds; numbers too large for their octal
//!   field are also written base-256;
//! - a PAX extended header (`x`, named `<dir>/PaxHeaders.0/<base>`) only when needed:
//!   names or link targets over 100 bytes (`path`, `linkpath`), sizes ≥ 8 GiB and
//!   ids ≥ 2²¹ (`size`, `uid`, `gid`), and xattrs (`SCHILY.xattr.<name>`); records
//!   sorted by key;
//! - regular file contents padded to 512 bytes; two zero blocks at the end and no
//!   padding to a record size.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

/// The tar block size.
pub const BLOCK: usize = 512;

const MAX_OCTAL_8: u64 = 0o7777777; // 7 digits + NUL
const MAX_OCTAL_12: u64 = 0o77777777777; // 11 digits + NUL

/// Entry types (the ustar typeflag).
pub mod kind {
    pub const REGULAR: u8 = b'0';
    pub const HARD_LINK: u8 = b'1';
    pub const SYMLINK: u8 = b'2';
    pub const CHAR_DEVICE: u8 = b'3';
    pub const BLOCK_DEVICE: u8 = b'4';
    pub const DIRECTORY: u8 = b'5';
    pub const FIFO: u8 = b'6';
}

/// One entry, before encoding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarEntry {
    /// Relative, directories ending in `/`.
    pub name: Vec<u8>,
    /// One of [`kind`].
    pub kind: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Content bytes that follow (regular files only).
    pub size: u64,
    pub mtime: u64,
    pub linkname: Vec<u8>,
    pub devmajor: u32,
    pub devminor: u32,
    /// Extended attributes (name, value).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Why the content of a file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("reading: {0}")]
    Read(io::Error),
    /// The file had fewer bytes than its header said (it changed while it was read).
    #[error("the file shrank to {0} bytes while it was read")]
    Short(u64),
    #[error("writing: {0}")]
    Write(io::Error),
}

/// Writes entries into `out`.
pub struct TarWriter<W: Write> {
    out: W,
    copy_buf: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out, copy_buf: vec![0; 64 * 1024] }
    }

    /// The PAX header (when needed) and the ustar header of `e`. A regular file's
    /// content must follow with [`TarWriter::content`].
    pub fn header(&mut self, e: &TarEntry) -> io::Result<()> {
        let mut pax: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        if e.name.len() > 100 {
            pax.insert(b"path".to_vec(), e.name.clone());
        }
        if e.linkname.len() > 100 {
            pax.insert(b"linkpath".to_vec(), e.linkname.clone());
        }
        if e.size > MAX_OCTAL_12 {
            pax.insert(b"size".to_vec(), e.size.to_string().into_bytes());
        }
        if e.uid > MAX_OCTAL_8 {
            pax.insert(b"uid".to_vec(), e.uid.to_string().into_bytes());
        }
        if e.gid > MAX_OCTAL_8 {
            pax.insert(b"gid".to_vec(), e.gid.to_string().into_bytes());
        }
        for (name, value) in &e.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(name);
            pax.insert(key, value.clone());
        }
        if !pax.is_empty() {
            let mut data = Vec::new();
            for (k, v) in &pax {
                pax_record(&mut data, k, v);
            }
            let hdr = ustar_header(&TarEntry {
                name: pax_header_name(&e.name),
                kind: b'x',
                mode: 0o644,
                size: data.len() as u64,
                ..TarEntry::default()
            });
            self.out.write_all(&hdr)?;
            self.out.write_all(&data)?;
            self.pad(data.len() as u64)?;
        }
        self.out.write_all(&ustar_header(e))
    }

    /// Exactly `size` bytes of `content` (the size its header gave), then padding.
    pub fn content(&mut self, content: &mut dyn Read, size: u64) -> Result<(), ContentError> {
        let mut buf = std::mem::take(&mut self.copy_buf);
        let mut done = 0u64;
        let result = (|| {
            while done < size {
                let want = (size - done).min(buf.len() as u64) as usize;
                let n = match content.read(&mut buf[..want]) {
                    Ok(0) => return Err(ContentError::Short(done)),
                    Ok(n) => n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(ContentError::Read(err)),
                };
                self.out.write_all(&buf[..n]).map_err(ContentError::Write)?;
                done += n as u64;
            }
            Ok(())
        })();
        self.copy_buf = buf;
        result?;
        self.pad(size).map_err(ContentError::Write)
    }

    fn pad(&mut self, written: u64) -> io::Result<()> {
        let pad = (BLOCK - (written % BLOCK as u64) as usize) % BLOCK;
        self.out.write_all(&[0u8; BLOCK][..pad])
    }

    /// The two zero blocks that end the archive; the writer back.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.out)
    }
}

/// One 512-byte ustar header. Names longer than their fields are truncated (the PAX
/// header carries the full value); numbers too large for octal are written base-256.
fn ustar_header(f: &TarEntry) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    copy_truncated(&mut h[0..100], &f.name);
    numeric(&mut h[100..108], f.mode as u64);
    numeric(&mut h[108..116], f.uid);
    numeric(&mut h[116..124], f.gid);
    numeric(&mut h[124..136], f.size);
    numeric(&mut h[136..148], f.mtime);
    h[156] = f.kind;
    copy_truncated(&mut h[157..257], &f.linkname);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // uname [265..297] and gname [297..329] stay empty.
    numeric(&mut h[329..337], f.devmajor as u64);
    numeric(&mut h[337..345], f.devminor as u64);
    // prefix [345..500] stays empty: long names go to PAX.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let digits = format!("{sum:06o}");
    h[148..154].copy_from_slice(&digits.as_bytes()[digits.len() - 6..]);
    h[154] = 0;
    h[155] = b' ';
    h
}

fn copy_truncated(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Zero-padded octal and a NUL, or base-256 (high bit set) when it does not fit.
fn numeric(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    if digits >= 22 || value < (1u64 << (3 * digits)) {
        let s = format!("{value:0digits$o}");
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        let bytes = value.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&bytes);
        field[0] |= 0x80;
    }
}

/// `"<len> <key>=<value>\n"`, where `<len>` counts the whole record including itself.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// The name of a PAX header entry, as Go's archive/tar writes it:
/// `<dir>/PaxHeaders.0/<base>`, truncated to 100 bytes.
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let (dir, base) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..i + 1], &trimmed[i + 1..]),
        None => (&b""[..], trimmed),
    };
    let mut out = dir.to_vec();
    out.extend_from_slice(b"PaxHeaders.0/");
    out.extend_from_slice(base);
    out.truncate(100);
    out
}

/// A PAX time (`mtime`, `atime`: seconds with an optional fraction, possibly
/// negative) as (seconds, nanoseconds), nanoseconds in 0..1e9.
pub fn parse_pax_time(v: &[u8]) -> Option<(i64, i64)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nanos: i64 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.as_bytes().get(i).map(|b| (b - b'0') as i64).unwrap_or(0);
    }
    Some(match (neg, nanos) {
        (false, _) => (secs, nanos),
        (true, 0) => (-secs, 0),
        (true, _) => (-secs - 1, 1_000_000_000 - nanos),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000.5"), Some((1700000000, 500_000_000)));
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"12"), Some((12, 0)));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn an_entry_reads_back_with_the_tar_crate() {
        let mut w = TarWriter::new(Vec::new());
        let long = format!("{}/file", "d".repeat(120));
        let e = TarEntry {
            name: long.clone().into_bytes(),
            kind: kind::REGULAR,
            mode: 0o4755,
            uid: 3_000_000,
            gid: 7,
            size: 3,
            mtime: 1_700_000_000,
            xattrs: vec![(b"user.k".to_vec(), b"v".to_vec())],
            ..TarEntry::default()
        };
        w.header(&e).unwrap();
        w.content(&mut &b"abc"[..], 3).unwrap();
        let bytes = w.finish().unwrap();
        let mut ar = ::tar::Archive::new(bytes.as_slice());
        let mut entries = ar.entries().unwrap();
        let mut first = entries.next().unwrap().unwrap();
        assert_eq!(first.path_bytes().as_ref(), long.as_bytes());
        assert_eq!(first.header().uid().unwrap(), 3_000_000);
        assert_eq!(first.header().mode().unwrap(), 0o4755);
        let mut s = String::new();
        first.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");
        assert!(entries.next().is_none());
        // A file that shrank is an error, not a short entry.
        let mut w = TarWriter::new(Vec::new());
        w.header(&TarEntry { name: b"f".to_vec(), kind: kind::REGULAR, size: 10, ..TarEntry::default() }).unwrap();
        assert!(matches!(w.content(&mut &b"abc"[..], 10), Err(ContentError::Short(3))));
    }

    #[test]
    fn pax_record_length_counts_itself() {
        for (k, v) in [(&b"path"[..], &b"x"[..]), (b"path", &[b'a'; 93][..]), (b"path", &[b'a'; 994][..])] {
            let mut out = Vec::new();
            pax_record(&mut out, k, v);
            let space = out.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&out[..space]).unwrap().parse().unwrap();
            assert_eq!(len, out.len());
        }
    }

    #[test]
    fn numeric_fields() {
        let mut f = [0u8; 8];
        numeric(&mut f, 0o755);
        assert_eq!(&f, b"0000755\0");
        numeric(&mut f, 1 << 21);
        assert_eq!(f[0], 0x80);
        assert_eq!(&f[1..], &[0, 0, 0, 0, 0x20, 0, 0]);
        let mut f = [0u8; 12];
        numeric(&mut f, 1);
        assert_eq!(&f, b"00000000001\0");
    }

    #[test]
    fn large_sizes_and_ids_get_pax_records_and_base256_fields() {
        let mut w = TarWriter::new(Vec::new());
        let size = 10u64 << 30;
        w.header(&TarEntry {
            name: b"huge".to_vec(),
            kind: kind::REGULAR,
            mode: 0o644,
            uid: 3_000_000,
            gid: 7,
            size,
            mtime: 1,
            ..TarEntry::default()
        })
        .unwrap();
        let out = w.out;
        let pax = ::tar::Header::from_byte_slice(&out[..BLOCK]);
        assert_eq!(pax.entry_type(), ::tar::EntryType::XHeader);
        let len = pax.size().unwrap() as usize;
        let records = &out[BLOCK..BLOCK + len];
        let keys: Vec<&str> = ::tar::PaxExtensions::new(records).map(|e| e.unwrap().key().unwrap()).collect();
        assert_eq!(keys, ["size", "uid"], "sorted, only what is needed");
        let main_at = BLOCK + len.div_ceil(BLOCK) * BLOCK;
        let main = ::tar::Header::from_byte_slice(&out[main_at..main_at + BLOCK]);
        assert_eq!(main.size().unwrap(), size);
        assert_eq!(main.uid().unwrap(), 3_000_000);
        assert_eq!(main.gid().unwrap(), 7);
    }

    #[test]
    fn pax_header_names() {
        assert_eq!(pax_header_name(b"a/b/c"), b"a/b/PaxHeaders.0/c");
        assert_eq!(pax_header_name(b"dir/"), b"PaxHeaders.0/dir");
        assert!(pax_header_name(&[b'x'; 300]).len() == 100);
    }

    #[test]
    fn header_checksum_is_valid_for_tar_crate() {
        let h = ustar_header(&TarEntry {
            name: b"etc/passwd".to_vec(),
            kind: kind::REGULAR,
            mode: 0o4755,
            uid: 1000,
            gid: 1000,
            size: 12,
            mtime: 1_700_000_000,
            ..TarEntry::default()
        });
        let parsed = ::tar::Header::from_byte_slice(&h);
        assert_eq!(parsed.cksum().unwrap(), {
            let mut copy = h;
            copy[148..156].copy_from_slice(b"        ");
            copy.iter().map(|&b| b as u32).sum::<u32>()
        });
        assert_eq!(parsed.mode().unwrap(), 0o4755);
        assert_eq!(parsed.path().unwrap().to_str(), Some("etc/passwd"));
        assert_eq!(parsed.uid().unwrap(), 1000);
        assert_eq!(parsed.mtime().unwrap(), 1_700_000_000);
    }
}
