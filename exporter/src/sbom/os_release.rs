//! The distribution of an image: `ID` and `VERSION_ID` of `/etc/os-release`, or of
//! `/usr/lib/os-release` when the former is not a file (it often is a symlink to it).

/// Where os-release is looked for, in order of preference.
pub const PATHS: [&str; 2] = ["/etc/os-release", "/usr/lib/os-release"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `debian`, `ubuntu`, `alpine` (lowercased).
    pub id: Option<String>,
    /// `12`, `22.04`.
    pub version_id: Option<String>,
}

/// Parse `KEY=value` lines; values may be quoted with `"` (backslash escapes) or `'`.
pub fn parse(text: &str) -> OsRelease {
    let mut release = OsRelease::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else { continue };
        let slot = match key.trim() {
            "ID" => &mut release.id,
            "VERSION_ID" => &mut release.version_id,
            _ => continue,
        };
        let value = unquote(value.trim());
        if !value.is_empty() {
            *slot = Some(value);
        }
    }
    release.id = release.id.map(|id| id.to_ascii_lowercase());
    release
}

fn unquote(value: &str) -> String {
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return inner.to_string();
    }
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_and_version_id() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=Debian\nVERSION_ID=\"12\"\n";
        assert_eq!(parse(text), OsRelease { id: Some("debian".into()), version_id: Some("12".into()) });
        assert_eq!(parse("ID='alpine'\nVERSION_ID=3.19.1\n").version_id.as_deref(), Some("3.19.1"));
        assert_eq!(parse("ID=\"a\\\"b\"").id.as_deref(), Some("a\"b"));
        assert_eq!(parse("garbage\n=\nID=\n"), OsRelease::default());
    }
}
