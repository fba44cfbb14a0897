//! Wildcards in COPY sources.
//!
//! Two dialects, as in BuildKit:
//!
//! - plain sources use Go's `filepath.Match`, one path segment at a time (`*` and `?`
//!   never match `/`; `[...]` classes with `^` negation and `a-z` ranges; `\` escapes;
//!   a malformed pattern matches nothing). [`split_wildcards`] cuts a source into the
//!   literal directory prefix and the wildcard part, like fsutil's `splitWildcards`;
//! - `COPY --parents` patterns use moby/patternmatcher, where a `**` segment matches
//!   any number of segments (including none) and a directory that matches brings
//!   everything below it ([`PathPattern`]).

/// Whether `s` holds an unescaped `*`, `?` or `[`.
pub(crate) fn contains_wildcards(s: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// Split cleaned components into the literal prefix and the rest, starting at the first
/// component with a wildcard.
pub(crate) fn split_wildcards(comps: &[Vec<u8>]) -> (&[Vec<u8>], &[Vec<u8>]) {
    let at = comps.iter().position(|c| contains_wildcards(c)).unwrap_or(comps.len());
    comps.split_at(at)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Star,
    Any,
    Lit(char),
    Class { negated: bool, ranges: Vec<(char, char)> },
}

/// A compiled `filepath.Match` pattern for one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentPattern {
    /// `None` for a malformed pattern (matches nothing).
    tokens: Option<Vec<Token>>,
}

impl SegmentPattern {
    pub fn new(pattern: &[u8]) -> SegmentPattern {
        SegmentPattern { tokens: tokenize(&String::from_utf8_lossy(pattern)) }
    }

    pub fn matches(&self, name: &[u8]) -> bool {
        let Some(tokens) = &self.tokens else {
            return false;
        };
        let name: Vec<char> = String::from_utf8_lossy(name).chars().collect();
        match_tokens(tokens, &name)
    }
}

/// Go's `filepath.Match` for a single segment.
#[cfg(test)]
pub(crate) fn match_segment(pattern: &[u8], name: &[u8]) -> bool {
    SegmentPattern::new(pattern).matches(name)
}

fn tokenize(p: &str) -> Option<Vec<Token>> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    // An escaped or plain character inside a class; `-` and `]` must be escaped there.
    let class_char = |i: &mut usize| -> Option<char> {
        let c = *chars.get(*i)?;
        if c == '-' || c == ']' {
            return None;
        }
        if c == '\\' {
            *i += 1;
            let c = *chars.get(*i)?;
            *i += 1;
            return Some(c);
        }
        *i += 1;
        Some(c)
    };
    while i < chars.len() {
        match chars[i] {
            '*' => {
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star);
                }
                i += 1;
            }
            '?' => {
                out.push(Token::Any);
                i += 1;
            }
            '\\' => {
                let c = *chars.get(i + 1)?;
                out.push(Token::Lit(c));
                i += 2;
            }
            '[' => {
                i += 1;
                let negated = chars.get(i) == Some(&'^');
                if negated {
                    i += 1;
                }
                let mut ranges = Vec::new();
                loop {
                    if chars.get(i) == Some(&']') && !ranges.is_empty() {
                        i += 1;
                        break;
                    }
                    let lo = class_char(&mut i)?;
                    let mut hi = lo;
                    if chars.get(i) == Some(&'-') {
                        i += 1;
                        hi = class_char(&mut i)?;
                    }
                    ranges.push((lo, hi));
                }
                out.push(Token::Class { negated, ranges });
            }
            c => {
                out.push(Token::Lit(c));
                i += 1;
            }
        }
    }
    Some(out)
}

fn token_matches(t: &Token, c: char) -> bool {
    match t {
        Token::Any => true,
        Token::Lit(l) => *l == c,
        Token::Class { negated, ranges } => ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negated,
        Token::Star => true,
    }
}

/// Greedy wildcard matching with backtracking to the last `*` (linear in practice).
fn match_tokens(tokens: &[Token], name: &[char]) -> bool {
    let (mut t, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if t < tokens.len() && tokens[t] == Token::Star {
            star = Some((t, n));
            t += 1;
        } else if t < tokens.len() && token_matches(&tokens[t], name[n]) {
            t += 1;
            n += 1;
        } else if let Some((st, sn)) = star {
            t = st + 1;
            n = sn + 1;
            star = Some((st, sn + 1));
        } else {
            return false;
        }
    }
    tokens[t..].iter().all(|tk| *tk == Token::Star)
}

/// A `COPY --parents` include pattern (patternmatcher semantics, see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct PathPattern {
    segs: Vec<Seg>,
}

#[derive(Debug, Clone)]
enum Seg {
    DoubleStar,
    One(SegmentPattern),
}

impl PathPattern {
    /// From cleaned components; no components matches everything.
    pub fn new(comps: &[Vec<u8>]) -> PathPattern {
        let segs = comps
            .iter()
            .map(|c| if c.as_slice() == b"**" { Seg::DoubleStar } else { Seg::One(SegmentPattern::new(c)) })
            .collect();
        PathPattern { segs }
    }

    /// The path itself matches (a parent matching is the caller's business).
    pub fn matches(&self, path: &[Vec<u8>]) -> bool {
        self.segs.is_empty() || match_segs(&self.segs, path, false)
    }

    /// Something below `path` could match.
    pub fn may_match_below(&self, path: &[Vec<u8>]) -> bool {
        self.segs.is_empty() || match_segs(&self.segs, path, true)
    }
}

fn match_segs(p: &[Seg], s: &[Vec<u8>], prefix: bool) -> bool {
    let Some((first, rest)) = s.split_first() else {
        return prefix || p.iter().all(|seg| matches!(seg, Seg::DoubleStar));
    };
    match p.split_first() {
        None => false,
        Some((Seg::DoubleStar, prest)) => match_segs(prest, s, prefix) || match_segs(p, rest, prefix),
        Some((Seg::One(sp), prest)) => sp.matches(first) && match_segs(prest, rest, prefix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        match_segment(p.as_bytes(), n.as_bytes())
    }

    #[test]
    fn go_filepath_match() {
        assert!(m("*.txt", "top.txt"));
        assert!(m("*.txt", ".hidden.txt"));
        assert!(!m("*.txt", "top.md"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("[a-c]x", "bx"));
        assert!(!m("[^a-c]x", "bx"));
        assert!(m("[^a-c]x", "dx"));
        assert!(m("a\\*", "a*"));
        assert!(!m("a\\*", "ab"));
        assert!(m("*", ""));
        assert!(m("**", "abc"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("日本?", "日本語"));
        // malformed patterns match nothing
        assert!(!m("[", "["));
        assert!(!m("[]a]", "a"));
        assert!(!m("a\\", "a"));
        assert!(!m("[z-a]", "m"));
        assert!(m("[z-ab]", "b"));
    }

    #[test]
    fn wildcards_and_split() {
        assert!(contains_wildcards(b"*.txt"));
        assert!(!contains_wildcards(b"a\\*b"));
        let comps = crate::root::clean(b"src/lib/*.rs");
        let (a, b) = split_wildcards(&comps);
        assert_eq!(a, &[b"src".to_vec(), b"lib".to_vec()]);
        assert_eq!(b, &[b"*.rs".to_vec()]);
    }

    #[test]
    fn path_patterns() {
        let p = |s: &str| PathPattern::new(&crate::root::clean(s.as_bytes()));
        let c = |s: &str| crate::root::clean(s.as_bytes());
        let pat = p("src/**/*.txt");
        assert!(pat.matches(&c("src/a.txt")));
        assert!(pat.matches(&c("src/x/y/c.txt")));
        assert!(!pat.matches(&c("other/a.txt")));
        assert!(pat.may_match_below(&c("src/x")));
        assert!(!pat.may_match_below(&c("other")));
        let lit = p("a/b/c.txt");
        assert!(lit.may_match_below(&c("a")));
        assert!(lit.may_match_below(&c("a/b")));
        assert!(!lit.may_match_below(&c("a/c")));
        assert!(lit.matches(&c("a/b/c.txt")));
        assert!(p("").matches(&c("anything")));
    }
}
