//! RFC 822-style stanzas (deb822, Python core metadata headers): `Field: value` lines,
//! continuation lines starting with a space or a tab, stanzas separated by blank lines.
//! Fields are looked up where they are; nothing is copied but the values asked for.

/// The stanzas of a text, in order, each as its slice of the text.
pub(crate) fn stanzas(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let (line, after) = split_line(rest);
        if line.trim().is_empty() {
            rest = after;
            continue;
        }
        let start = rest;
        let mut consumed = 0;
        let mut cursor = rest;
        while !cursor.is_empty() {
            let (line, after) = split_line(cursor);
            if line.trim().is_empty() {
                break;
            }
            consumed += cursor.len() - after.len();
            cursor = after;
        }
        rest = cursor;
        return Some(&start[..consumed]);
    })
}

/// The first stanza (the header block of a metadata file), empty when there is none.
pub(crate) fn first_stanza(text: &str) -> &str {
    stanzas(text).next().unwrap_or("")
}

/// The value of a field (name compared ignoring ASCII case), continuation lines joined
/// with newlines, each trimmed; `None` when the stanza has no such field.
pub(crate) fn field(stanza: &str, name: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for line in stanza.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = value.as_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if value.is_some() {
            break;
        }
        if let Some((key, rest)) = line.split_once(':') {
            if key.trim_end().eq_ignore_ascii_case(name) {
                value = Some(rest.trim().to_string());
            }
        }
    }
    value
}

fn split_line(text: &str) -> (&str, &str) {
    match text.find('\n') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanzas_split_on_blank_lines_and_fields_join_continuations() {
        let text = "\n\nPackage: a\nDescription: one\n two\n .\nVersion: 1\n\n \t\nPackage: b\r\nversion: 2\r\n";
        let all: Vec<&str> = stanzas(text).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(field(all[0], "package").as_deref(), Some("a"));
        assert_eq!(field(all[0], "Description").as_deref(), Some("one\ntwo\n."));
        assert_eq!(field(all[0], "Version").as_deref(), Some("1"));
        assert_eq!(field(all[1], "Version").as_deref(), Some("2"));
        assert_eq!(field(all[1], "Status"), None);
        assert_eq!(first_stanza(""), "");
    }
}
