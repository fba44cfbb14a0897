//! Alpine packages: apk's database (`/lib/apk/db/installed`), stanzas of one-letter,
//! case-sensitive `X:value` lines (`P` name, `V` version, `A` arch, `L` license; `p` is
//! something else).

use super::records::Found;
use super::rfc822;
use super::Ecosystem;

pub const INSTALLED_PATH: &str = "/lib/apk/db/installed";

pub fn parse_installed(text: &str) -> Vec<Found> {
    let mut found = Vec::new();
    for stanza in rfc822::stanzas(text) {
        let (mut name, mut version, mut arch, mut license) = (None, None, None, None);
        for line in stanza.lines() {
            let Some((key, value)) = line.split_once(':') else { continue };
            let slot = match key {
                "P" => &mut name,
                "V" => &mut version,
                "A" => &mut arch,
                "L" => &mut license,
                _ => continue,
            };
            if slot.is_none() && !value.trim().is_empty() {
                *slot = Some(value.trim().to_string());
            }
        }
        if let (Some(name), Some(version)) = (name, version) {
            found.push(Found { ecosystem: Ecosystem::Apk, name, version, arch, license });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanzas_become_packages() {
        let text = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\np:so:libc.musl-x86_64.so.1=1\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\n\nP:broken\n";
        let found = parse_installed(text);
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].name.as_str(), found[0].version.as_str()), ("musl", "1.2.4-r2"));
        assert_eq!(found[0].license.as_deref(), Some("MIT"));
        assert_eq!(found[1].arch.as_deref(), Some("x86_64"));
        assert_eq!(found[1].license, None);
    }
}
