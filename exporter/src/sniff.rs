//! The compression of a layer blob, told from its first bytes (readers of layers whose
//! media type is not at hand: the SBOM scan, the image comparison).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobCompression {
    Gzip,
    Zstd,
    /// Anything else is read as a plain tar.
    None,
}

/// Read the first bytes of `file`, then rewind it.
pub fn sniff(file: &mut File) -> io::Result<BlobCompression> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..])? {
            0 => break,
            n => got += n,
        }
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(match &magic[..got] {
        [0x1f, 0x8b, ..] => BlobCompression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => BlobCompression::Zstd,
        _ => BlobCompression::None,
    })
}
