//! The Dockerfile syntax tree as BuildKit's parser builds it, and its `Dump` format.
//!
//! [`parse`] drives the [`crate::scanner`] (logical lines, directives, heredocs) and
//! turns each logical line into a [`Node`] with the per-instruction argument rules of
//! BuildKit's `line_parsers.go`. Nothing is expanded here: that is the job of the
//! instruction layer, with the shell lexer.

use std::fmt::Write as _;

use crate::grammar::{self, JsonArgs};
use crate::scanner::{self, Directives, LogicalLine, ParseError, Warning};
use crate::words::{parse_words, split_whitespace, split_whitespace_once};

/// A heredoc attached to an instruction (`RUN <<EOF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    /// The raw body, each line with its `\n`; tabs not yet stripped for `<<-`.
    pub content: String,
    /// False when any part of the opener word was quoted (the body is not expanded).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from each line.
    pub chomp: bool,
    pub file_descriptor: u32,
}

impl Heredoc {
    /// The body with `<<-` tab stripping applied.
    pub fn chomped_content(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        chomp_tabs(&self.content)
    }
}

/// Strip leading tabs from every line (`<<-`).
pub fn chomp_tabs(content: &str) -> String {
    content.split_inclusive('\n').map(|l| l.trim_start_matches('\t')).collect()
}

/// One argument node of an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Value(String),
    /// The instruction nested in an `ONBUILD`.
    Nested(Box<Node>),
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword, lower-cased (`from`, `run`, …).
    pub value: String,
    /// The keyword as written.
    pub keyword: String,
    /// The logical line as read (continuations joined).
    pub original: String,
    /// Builder flags, verbatim (`--from=build`).
    pub flags: Vec<String>,
    pub args: Vec<Arg>,
    /// The arguments were a JSON array (exec form).
    pub json: bool,
    pub heredocs: Vec<Heredoc>,
    /// 1-based, inclusive.
    pub start_line: usize,
    pub end_line: usize,
    /// Comment lines directly above the instruction.
    pub comments: Vec<String>,
}

impl Node {
    /// The plain string arguments.
    pub fn values(&self) -> Vec<&str> {
        self.args
            .iter()
            .filter_map(|a| match a {
                Arg::Value(v) => Some(v.as_str()),
                Arg::Nested(_) => None,
            })
            .collect()
    }

    /// BuildKit's `Node.Dump()` of this instruction.
    pub fn dump(&self) -> String {
        let mut s = self.value.to_lowercase();
        if !self.flags.is_empty() {
            s.push_str(" [");
            for (i, f) in self.flags.iter().enumerate() {
                if i > 0 {
                    s.push(' ');
                }
                s.push_str(&go_quote(f));
            }
            s.push(']');
        }
        for a in &self.args {
            match a {
                Arg::Value(v) => {
                    s.push(' ');
                    s.push_str(&go_quote(v));
                }
                Arg::Nested(n) => {
                    let _ = write!(s, " ({})", n.dump());
                }
            }
        }
        s.trim().to_string()
    }

    fn can_contain_heredoc(&self) -> bool {
        let inner = if self.value == "onbuild" {
            match self.args.first() {
                Some(Arg::Nested(n)) => n.as_ref(),
                _ => self,
            }
        } else {
            self
        };
        matches!(inner.value.as_str(), "add" | "copy" | "run") && !inner.json
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub children: Vec<Node>,
    pub directives: Directives,
    pub warnings: Vec<Warning>,
    /// 1-based lines spanned by the instructions.
    pub start_line: usize,
    pub end_line: usize,
}

impl Parsed {
    /// The whole tree in BuildKit's dump format (one line per instruction).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for c in &self.children {
            out.push('(');
            out.push_str(&c.dump());
            out.push_str(")\n");
        }
        out
    }
}

/// Parse a Dockerfile.
pub fn parse(source: &[u8]) -> Result<Parsed, ParseError> {
    let text = String::from_utf8_lossy(source);
    let mut scan = scanner::Scanner::new(&text);
    let mut children = Vec::new();
    while let Some(line) = scan.next_line()? {
        let LogicalLine { text: line_text, start_line, comments, .. } = line;
        let mut node = node_from_line(&line_text, scan.directives().escape, comments)
            .map_err(|message| ParseError::new(message, start_line, scan.current_line()))?;
        node.start_line = start_line;
        if node.can_contain_heredoc() && line_text.contains("<<") {
            let openers = heredocs_from_line(&line_text)
                .map_err(|message| ParseError::new(message, start_line, scan.current_line()))?;
            for opener in openers {
                let content = scan.read_heredoc_body(&opener.name, opener.chomp).map_err(|_| {
                    let name = &opener.name;
                    let how = if opener.chomp {
                        "a line holding only it (tabs before it allowed)".to_string()
                    } else {
                        format!(
                            "a line holding only {name:?} at its start; to indent it with tabs, open with <<-{name}"
                        )
                    };
                    let mut e = ParseError::new(
                        format!(
                            "unterminated heredoc <<{}{name}: the file ended before {how}",
                            if opener.chomp { "-" } else { "" }
                        ),
                        start_line,
                        scan.current_line(),
                    );
                    e.column = heredoc_column(&line_text, name);
                    e
                })?;
                node.heredocs.push(Heredoc { content, ..opener });
            }
        }
        node.end_line = scan.current_line();
        children.push(node);
    }
    if children.is_empty() {
        return Err(ParseError::new("file with no instructions".to_string(), scan.current_line().max(1), 0));
    }
    let start_line = children[0].start_line;
    let end_line = children.last().map(|c| c.end_line).unwrap_or(start_line);
    let warnings = scan.take_warnings();
    Ok(Parsed { children, directives: scan.directives().clone(), warnings, start_line, end_line })
}

/// Build a node from one logical line (BuildKit's `newNodeFromLine`).
pub fn node_from_line(line: &str, escape: char, comments: Vec<String>) -> Result<Node, String> {
    let split = grammar::split_command(line);
    let value = split.keyword.to_lowercase();
    let rest = split.args.as_str();
    let mut json = false;
    let values = |v: Vec<String>| v.into_iter().map(Arg::Value).collect::<Vec<_>>();
    let args: Vec<Arg> = match value.as_str() {
        "add" | "copy" | "volume" => match grammar::parse_json_array(rest) {
            JsonArgs::Strings(v) => {
                json = true;
                values(v)
            }
            JsonArgs::NotStringArray => return Err(not_string_array()),
            JsonArgs::NotJson => values(split_whitespace(rest)),
        },
        "cmd" | "entrypoint" | "run" | "shell" => {
            let (a, j) = maybe_json(rest)?;
            json = j;
            a
        }
        "arg" => values(parse_words(rest, escape)),
        "env" | "label" => name_val(rest, &value.to_uppercase(), escape)?,
        "expose" | "from" => values(split_whitespace(rest)),
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if rest.is_empty() {
                Vec::new()
            } else {
                vec![Arg::Value(rest.to_string())]
            }
        }
        "healthcheck" => {
            let trimmed = rest;
            match trimmed.find(char::is_whitespace) {
                _ if trimmed.is_empty() => Vec::new(),
                Some(sep) => {
                    let typ = &trimmed[..sep];
                    let after = trimmed[sep..].trim_start();
                    let (mut a, j) = maybe_json(after)?;
                    json = j;
                    a.insert(0, Arg::Value(typ.to_string()));
                    a
                }
                None => vec![Arg::Value(trimmed.to_string())],
            }
        }
        "onbuild" => {
            if rest.is_empty() {
                Vec::new()
            } else {
                let inner = node_from_line(rest, escape, Vec::new())?;
                vec![Arg::Nested(Box::new(inner))]
            }
        }
        _ => vec![Arg::Value(String::new())],
    };
    Ok(Node {
        value,
        keyword: split.keyword,
        original: line.to_string(),
        flags: split.flags,
        args,
        json,
        heredocs: Vec::new(),
        start_line: 0,
        end_line: 0,
        comments,
    })
}

fn not_string_array() -> String {
    "failed to parse as a JSON array of strings: the exec form must be an array of strings".to_string()
}

fn maybe_json(rest: &str) -> Result<(Vec<Arg>, bool), String> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match grammar::parse_json_array(rest) {
        JsonArgs::Strings(v) => Ok((v.into_iter().map(Arg::Value).collect(), true)),
        JsonArgs::NotStringArray => Err(not_string_array()),
        JsonArgs::NotJson => Ok((vec![Arg::Value(rest.to_string())], false)),
    }
}

/// ENV / LABEL arguments: `name value…` (legacy) or `k=v k2=v2` triples.
fn name_val(rest: &str, key: &str, escape: char) -> Result<Vec<Arg>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else { return Ok(Vec::new()) };
    if !first.contains('=') {
        let Some((name, value)) = split_whitespace_once(rest) else {
            return Err(format!("{key} must have two arguments"));
        };
        return Ok(vec![Arg::Value(name.into()), Arg::Value(value.into()), Arg::Value(String::new())]);
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!("Syntax error - can't find = in {}. Must be of the form: name=value", go_quote(&w)));
        };
        out.push(Arg::Value(k.into()));
        out.push(Arg::Value(v.into()));
        out.push(Arg::Value("=".into()));
    }
    Ok(out)
}

/// The heredocs opened on an instruction line, in order (BuildKit's `heredocsFromLine`).
pub fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let lexer = crate::shell::Lexer {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset_env: true,
        ..crate::shell::Lexer::new('\\')
    };
    let words = lexer.process_words(line, &crate::shell::EmptyEnv).unwrap_or_default();
    let mut docs = Vec::new();
    for w in words {
        if let Some(h) = parse_heredoc(&w)? {
            docs.push(h);
        }
    }
    Ok(docs)
}

/// The 1-based column of the `<<` that opens the heredoc `name` in `line` (quoted or
/// not, with or without `-`).
fn heredoc_column(line: &str, name: &str) -> Option<usize> {
    line.match_indices("<<").find_map(|(i, _)| {
        let rest = line[i + 2..].trim_start_matches('-').trim_start_matches(['"', '\'']);
        rest.starts_with(name).then(|| line[..i].chars().count() + 1)
    })
}

/// Parse one word as a heredoc opener (BuildKit's `ParseHeredoc`); `Ok(None)` when it
/// is not one.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, String> {
    let Some(opener) = grammar::heredoc_opener(word) else { return Ok(None) };
    if opener.name.is_empty() {
        return Ok(None);
    }
    let env = crate::shell::EmptyEnv;
    let cooked_lexer = crate::shell::Lexer { skip_unset_env: true, ..crate::shell::Lexer::new('\\') };
    let words = cooked_lexer.process_words(opener.name, &env).map_err(|e| e.to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw_lexer = crate::shell::Lexer { skip_unset_env: true, raw_quotes: true, ..crate::shell::Lexer::new('\\') };
    let raw = raw_lexer.process_words(opener.name, &env).map_err(|e| e.to_string())?;
    if raw.len() != words.len() {
        return Err(format!("internal lexing of heredoc produced inconsistent results: {}", opener.name));
    }
    let count = |s: &str| s.matches(['\'', '"']).count();
    let expand = count(&words[0]) == count(&raw[0]);
    Ok(Some(Heredoc {
        name: words[0].clone(),
        content: String::new(),
        expand,
        chomp: opener.chomp,
        file_descriptor: opener.fd,
    }))
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint`: graphic characters and the ASCII space.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let cp = c as u32;
    // Format characters, private use, surrogates and noncharacters are not printable.
    !matches!(cp,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E
        | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB | 0xE000..=0xF8FF | 0xFDD0..=0xFDEF
        | 0xFFFE | 0xFFFF | 0xF0000..=0x10FFFF | 0xE0000..=0xE007F)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_matches_strconv() {
        assert_eq!(go_quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(go_quote("\u{0}"), r#""\x00""#);
        assert_eq!(go_quote("♥☃"), "\"♥☃\"");
        assert_eq!(go_quote("\u{a0}"), r#""\u00a0""#);
    }

    #[test]
    fn dumps_onbuild_and_flags() {
        let p = parse(b"FROM a\nONBUILD RUN [\"echo\",\"test\"]\nCOPY --from=x a b\n").unwrap();
        assert_eq!(p.dump(), "(from \"a\")\n(onbuild (run \"echo\" \"test\"))\n(copy [\"--from=x\"] \"a\" \"b\")\n");
    }
}
