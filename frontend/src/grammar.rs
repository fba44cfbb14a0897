//! The pest grammar (`instruction.pest`) for the structure of one logical instruction:
//! keyword and arguments, builder flags, JSON exec-form arrays and heredoc openers.

use pest::iterators::Pair;
use pest::Parser;
use pest_derive::Parser;

#[derive(Parser)]
#[grammar = "instruction.pest"]
struct InstructionGrammar;

/// An instruction line split into keyword, builder flags and the remaining arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitInstruction {
    pub keyword: String,
    pub flags: Vec<String>,
    pub args: String,
}

/// Split `KEYWORD --flag=v ... args` the way BuildKit's `splitCommand` does.
pub fn split_command(line: &str) -> SplitInstruction {
    let Ok(mut pairs) = InstructionGrammar::parse(Rule::instruction, line) else {
        // Only an all-whitespace line fails; the scanner never passes one.
        return SplitInstruction { keyword: String::new(), flags: Vec::new(), args: String::new() };
    };
    let inst = pairs.next().expect("instruction rule");
    let mut keyword = String::new();
    let mut rest = "";
    for p in inst.into_inner() {
        match p.as_rule() {
            Rule::keyword => keyword = p.as_str().to_string(),
            Rule::rest => rest = p.as_str(),
            _ => {}
        }
    }
    let (flags, args) = extract_flags(rest);
    SplitInstruction { keyword, flags, args: args.trim_matches(is_space).to_string() }
}

fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// Leading `--flag` words: quotes removed, backslash escapes processed; a bare `--`
/// ends them and is dropped.
pub fn extract_flags(rest: &str) -> (Vec<String>, &str) {
    let Ok(mut pairs) = InstructionGrammar::parse(Rule::flags_and_args, rest) else {
        return (Vec::new(), rest);
    };
    let mut flags = Vec::new();
    let mut args = "";
    for p in pairs.next().expect("flags_and_args rule").into_inner() {
        match p.as_rule() {
            Rule::flag => flags.push(flag_value(p)),
            Rule::args => args = p.as_str(),
            _ => {}
        }
    }
    (flags, args)
}

fn flag_value(flag: Pair<'_, Rule>) -> String {
    let mut out = String::new();
    for piece in flag.into_inner() {
        match piece.as_rule() {
            Rule::flag_plain => out.push_str(piece.as_str()),
            Rule::flag_escaped => {
                if let Some(c) = piece.into_inner().next() {
                    out.push_str(c.as_str());
                }
            }
            Rule::flag_squoted | Rule::flag_dquoted => {
                let body = piece.into_inner().next().map(|b| b.as_str()).unwrap_or("");
                let mut chars = body.chars();
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        if let Some(n) = chars.next() {
                            out.push(n);
                        }
                    } else {
                        out.push(c);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The outcome of reading an argument as a JSON exec-form array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonArgs {
    /// A JSON array of strings.
    Strings(Vec<String>),
    /// Not JSON (or not an array): the caller falls back to shell form.
    NotJson,
    /// A JSON array holding something other than strings: an error in BuildKit.
    NotStringArray,
}

/// Read `rest` as a JSON array of strings (only the first JSON value counts).
pub fn parse_json_array(rest: &str) -> JsonArgs {
    let rest = rest.trim_start_matches(is_space);
    if !rest.starts_with('[') {
        return JsonArgs::NotJson;
    }
    let Ok(mut pairs) = InstructionGrammar::parse(Rule::json_document, rest) else {
        return JsonArgs::NotJson;
    };
    let doc = pairs.next().expect("json_document rule");
    let Some(array) = doc.into_inner().find(|p| p.as_rule() == Rule::json_array) else {
        return JsonArgs::NotJson;
    };
    let mut out = Vec::new();
    for item in array.into_inner() {
        if item.as_rule() != Rule::json_string {
            return JsonArgs::NotStringArray;
        }
        let raw = item.into_inner().next().map(|c| c.as_str()).unwrap_or("");
        match unescape_json(raw) {
            Some(s) => out.push(s),
            None => return JsonArgs::NotJson,
        }
    }
    JsonArgs::Strings(out)
}

fn unescape_json(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let hi = read_hex4(&mut chars)?;
                if (0xD800..0xDC00).contains(&hi) {
                    // A surrogate pair, or a lone surrogate (Go writes U+FFFD).
                    let mut look = chars.clone();
                    if look.next() == Some('\\') && look.next() == Some('u') {
                        if let Some(lo) = read_hex4(&mut look) {
                            if (0xDC00..0xE000).contains(&lo) {
                                chars = look;
                                let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                                out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                                continue;
                            }
                        }
                    }
                    out.push('\u{FFFD}');
                } else {
                    out.push(char::from_u32(hi).unwrap_or('\u{FFFD}'));
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

fn read_hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
    let mut v = 0;
    for _ in 0..4 {
        v = v * 16 + chars.next()?.to_digit(16)?;
    }
    Some(v)
}

/// A heredoc opener word split into parts: `3<<-"EOF"` → (3, chomp, `"EOF"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeredocOpener<'a> {
    pub fd: u32,
    pub chomp: bool,
    pub name: &'a str,
}

pub fn heredoc_opener(word: &str) -> Option<HeredocOpener<'_>> {
    let mut pairs = InstructionGrammar::parse(Rule::heredoc_word, word).ok()?;
    let mut fd = 0;
    let mut chomp = false;
    let mut name = "";
    for p in pairs.next()?.into_inner() {
        match p.as_rule() {
            Rule::heredoc_fd => fd = if p.as_str().is_empty() { 0 } else { p.as_str().parse().ok()? },
            Rule::heredoc_chomp => chomp = p.as_str() == "-",
            Rule::heredoc_name => name = p.as_str(),
            _ => {}
        }
    }
    Some(HeredocOpener { fd, chomp, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_keyword_flags_and_args() {
        let s = split_command("  COPY --from=build --chown=\"a b\" src dst ");
        assert_eq!(s.keyword, "COPY");
        assert_eq!(s.flags, vec!["--from=build", "--chown=a b"]);
        assert_eq!(s.args, "src dst");
        let s = split_command("RUN -- --not-a-flag");
        assert_eq!(s.flags, Vec::<String>::new());
        assert_eq!(s.args, "--not-a-flag");
        let s = split_command("RUN");
        assert_eq!((s.keyword.as_str(), s.args.as_str()), ("RUN", ""));
    }

    #[test]
    fn json_arrays() {
        assert_eq!(parse_json_array(r#"["a", "b\u00e9"] x"#), JsonArgs::Strings(vec!["a".into(), "bé".into()]));
        assert_eq!(parse_json_array(r#"["a", ["b"]]"#), JsonArgs::NotStringArray);
        assert_eq!(parse_json_array(r#"['a']"#), JsonArgs::NotJson);
        assert_eq!(parse_json_array("echo"), JsonArgs::NotJson);
    }

    #[test]
    fn heredoc_openers() {
        assert_eq!(heredoc_opener("3<<-EOF"), Some(HeredocOpener { fd: 3, chomp: true, name: "EOF" }));
        assert_eq!(heredoc_opener("<EOF"), None);
        assert_eq!(heredoc_opener("<<<EOF"), None);
    }
}
