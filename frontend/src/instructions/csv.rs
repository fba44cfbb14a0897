//! One line of CSV, split the way `tonistiigi/go-csvvalue` does for `RUN --mount` and
//! `RUN --device` values: comma-separated fields, a field that *starts* with `"` is
//! quoted (`""` inside it is a literal quote), a quote anywhere else is an error.

/// A CSV syntax error, worded like Go's `encoding/csv.ParseError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// The value is empty (Go returns `io.EOF`).
    #[error("EOF")]
    Empty,
    #[error("parse error on line 1, column {column}: bare \" in non-quoted-field")]
    BareQuote { column: usize },
    #[error("parse error on line 1, column {column}: extraneous or missing \" in quoted-field")]
    Quote { column: usize },
}

/// Split one CSV record into its fields.
pub fn csv_fields(line: &str) -> Result<Vec<String>, CsvError> {
    let mut line = line;
    if let Some(l) = line.strip_suffix('\n') {
        line = l.strip_suffix('\r').unwrap_or(l);
    }
    if line.is_empty() {
        return Err(CsvError::Empty);
    }
    let mut fields: Vec<String> = Vec::new();
    let mut pos = 0usize; // byte offset into the original line
    let mut rest = line;
    'field: loop {
        if !rest.starts_with('"') {
            let (field, next) = match rest.find(',') {
                Some(i) => (&rest[..i], Some(i)),
                None => (rest, None),
            };
            if let Some(j) = field.find('"') {
                return Err(CsvError::BareQuote { column: pos + j + 1 });
            }
            fields.push(field.to_string());
            match next {
                Some(i) => {
                    rest = &rest[i + 1..];
                    pos += i + 1;
                    continue;
                }
                None => break,
            }
        }
        // Quoted field.
        rest = &rest[1..];
        pos += 1;
        let mut half_open = false;
        loop {
            let Some(i) = rest.find('"') else {
                return Err(CsvError::Quote { column: pos + 1 });
            };
            if half_open {
                if let Some(last) = fields.last_mut() {
                    last.push_str(&rest[..i]);
                }
            } else {
                fields.push(rest[..i].to_string());
            }
            rest = &rest[i + 1..];
            pos += i + 1;
            match rest.chars().next() {
                Some('"') => {
                    if let Some(last) = fields.last_mut() {
                        last.push('"');
                    }
                    rest = &rest[1..];
                    pos += 1;
                    half_open = true;
                }
                Some(',') => {
                    rest = &rest[1..];
                    pos += 1;
                    continue 'field;
                }
                None => break 'field,
                Some(_) => return Err(CsvError::Quote { column: pos }),
            }
        }
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_like_go_csvvalue() {
        assert_eq!(csv_fields("type=cache,target=/x").unwrap(), vec!["type=cache", "target=/x"]);
        assert_eq!(csv_fields("a,,b,").unwrap(), vec!["a", "", "b", ""]);
        assert_eq!(csv_fields("\"target=/a,b\",ro").unwrap(), vec!["target=/a,b", "ro"]);
        assert_eq!(csv_fields("\"a\"\"b\"").unwrap(), vec!["a\"b"]);
        assert_eq!(csv_fields(""), Err(CsvError::Empty));
        assert_eq!(csv_fields("target=\"x\""), Err(CsvError::BareQuote { column: 8 }));
        assert_eq!(csv_fields("\"abc"), Err(CsvError::Quote { column: 2 }));
        assert_eq!(csv_fields("\"a\"b"), Err(CsvError::Quote { column: 3 }));
    }
}
