//! Splitting an instruction's arguments into words as BuildKit's `parseWords` does:
//! only unquoted whitespace splits, and quotes and escapes are kept verbatim (they are
//! removed later, when the shell lexer expands the word). This depends on the escape
//! character chosen by `# escape=`, which is why it is not part of the pest grammar.

/// Split `rest` into words, keeping quotes and escape characters.
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut blank_ok = false;
    let mut chars = rest.chars().peekable();
    while let Some(ch) = chars.next() {
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                continue;
            }
            phase = Phase::Word;
        }
        match phase {
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    match chars.next() {
                        None => continue, // an escape at the very end is dropped
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
            Phase::Quote(quote) => {
                if ch == quote {
                    phase = Phase::Word;
                }
                if ch == escape && quote != '\'' {
                    match chars.next() {
                        None => {
                            phase = Phase::Word;
                            continue;
                        }
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
            Phase::Spaces => unreachable!("handled above"),
        }
    }
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// Split on runs of `[\t\v\f\r ]` (BuildKit's `reWhitespace`), no quote processing.
pub fn split_whitespace(rest: &str) -> Vec<String> {
    rest.split(['\t', '\u{0B}', '\u{0C}', '\r', ' ']).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Split in two at the first run of `[\t\v\f\r ]`.
pub fn split_whitespace_once(rest: &str) -> Option<(&str, &str)> {
    let is_ws = |c: char| matches!(c, '\t' | '\u{0B}' | '\u{0C}' | '\r' | ' ');
    let i = rest.find(is_ws)?;
    let tail = rest[i..].trim_start_matches(is_ws);
    Some((&rest[..i], tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_quotes_and_escapes() {
        assert_eq!(parse_words(r#"a "b c" d\ e 'f\'"#, '\\'), vec!["a", "\"b c\"", "d\\ e", "'f\\'"]);
        assert_eq!(parse_words("x=`` y", '`'), vec!["x=``", "y"]);
        assert_eq!(parse_words(r#"a "" b"#, '\\'), vec!["a", "\"\"", "b"]);
    }
}
