//! `WWW-Authenticate` challenges (RFC 7235): what a registry asks for on a 401.
//!
//! Pure parsing, no I/O: `Bearer realm="https://auth.example/token",service="reg",
//! scope="repository:library/busybox:pull"` becomes a [`Challenge`] with scheme `bearer`
//! and its parameters; several challenges in one header (or several headers) are kept
//! in order.

use std::collections::BTreeMap;

/// One authentication challenge.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Challenge {
    /// The scheme in lowercase (`basic`, `bearer`).
    pub scheme: String,
    /// Parameters, names in lowercase.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn is_basic(&self) -> bool {
        self.scheme == "basic"
    }
    pub fn is_bearer(&self) -> bool {
        self.scheme == "bearer"
    }
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
    /// The token endpoint of a Bearer challenge.
    pub fn realm(&self) -> Option<&str> {
        self.param("realm")
    }
    pub fn service(&self) -> Option<&str> {
        self.param("service")
    }
    /// The scopes the registry asked for (space separated in the header).
    pub fn scopes(&self) -> Vec<String> {
        self.param("scope")
            .map(|s| s.split(' ').filter(|x| !x.is_empty()).map(str::to_string).collect())
            .unwrap_or_default()
    }
    /// `error="insufficient_scope"` and the like.
    pub fn error(&self) -> Option<&str> {
        self.param("error")
    }
}

/// Parse every challenge in the values of one or more `WWW-Authenticate` headers.
pub fn parse_challenges<'a>(headers: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    headers.into_iter().flat_map(parse_header).collect()
}

/// The challenge strata answers: Bearer if offered, else Basic.
pub fn preferred(challenges: &[Challenge]) -> Option<&Challenge> {
    challenges.iter().find(|c| c.is_bearer()).or_else(|| challenges.iter().find(|c| c.is_basic()))
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// token68 also allows '/' (and trailing '=' padding, handled separately).
fn is_token68_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~+/".contains(&c)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> String {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }
    fn quoted(&mut self) -> String {
        // At the opening quote.
        self.i += 1;
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn parse_header(value: &str) -> Vec<Challenge> {
    let mut c = Cursor { s: value.as_bytes(), i: 0 };
    let mut out = Vec::new();
    let mut pending: Option<String> = None; // a scheme already read as a lookahead
    loop {
        let scheme = match pending.take() {
            Some(s) => s,
            None => {
                while matches!(c.peek(), Some(b' ' | b'\t' | b',')) {
                    c.i += 1;
                }
                if c.peek().is_none() {
                    break;
                }
                let s = c.take_while(is_tchar);
                if s.is_empty() {
                    c.i += 1; // skip a stray character
                    continue;
                }
                s
            }
        };
        let mut ch = Challenge { scheme: scheme.to_ascii_lowercase(), params: BTreeMap::new() };
        let mut first = true;
        loop {
            c.skip_ws();
            let Some(next) = c.peek() else { break };
            if next == b',' {
                c.i += 1;
                first = false;
                continue;
            }
            let start = c.i;
            let name = c.take_while(is_tchar);
            if name.is_empty() {
                // token68 with a '/' or another stray character.
                if first && is_token68_char(next) {
                    c.take_while(|b| is_token68_char(b) || b == b'=');
                    first = false;
                    continue;
                }
                c.i += 1;
                continue;
            }
            c.skip_ws();
            if c.peek() == Some(b'=') {
                let eq = c.i;
                c.i += 1;
                c.skip_ws();
                match c.peek() {
                    Some(b'"') => {
                        let v = c.quoted();
                        ch.params.insert(name.to_ascii_lowercase(), v);
                    }
                    Some(b) if b != b',' && b != b'=' => {
                        // Lenient: unquoted values such as `realm=https://x/t` are common.
                        let v = c.take_while(|b| b != b',' && b != b' ' && b != b'\t');
                        ch.params.insert(name.to_ascii_lowercase(), v);
                    }
                    _ => {
                        // token68 with '=' padding (e.g. `Negotiate abc==`).
                        c.i = eq;
                        c.take_while(|b| b == b'=');
                    }
                }
                first = false;
            } else if first {
                // token68 right after the scheme.
                c.i = start;
                c.take_while(|b| is_token68_char(b) || b == b'=');
                first = false;
            } else {
                // A bare token after a comma starts the next challenge.
                pending = Some(name);
                break;
            }
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_scope() {
        let cs = parse_challenges([
            r#"Bearer realm="http://127.0.0.1:5003/token",service="oci-rig-registry",scope="repository:library/busybox:pull""#,
        ]);
        assert_eq!(cs.len(), 1);
        let c = &cs[0];
        assert!(c.is_bearer());
        assert_eq!(c.realm(), Some("http://127.0.0.1:5003/token"));
        assert_eq!(c.service(), Some("oci-rig-registry"));
        assert_eq!(c.scopes(), ["repository:library/busybox:pull"]);
    }

    #[test]
    fn basic_and_multiple() {
        let cs = parse_challenges([r#"Basic realm="oci-rig""#]);
        assert_eq!(cs, [Challenge { scheme: "basic".into(), params: [("realm".into(), "oci-rig".into())].into() }]);

        let cs = parse_challenges([
            r#"basic realm="a, b", BEARER Realm=https://x/t , Service="s\"q", Error=insufficient_scope"#,
        ]);
        assert_eq!(cs.len(), 2, "{cs:?}");
        assert_eq!(cs[0].param("realm"), Some("a, b"));
        assert!(cs[1].is_bearer());
        assert_eq!(cs[1].realm(), Some("https://x/t"));
        assert_eq!(cs[1].service(), Some("s\"q"));
        assert_eq!(cs[1].error(), Some("insufficient_scope"));
        assert!(preferred(&cs).unwrap().is_bearer());

        let cs = parse_challenges(["Negotiate abc==, Basic realm=r", "Bearer realm=\"z\""]);
        assert_eq!(cs.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>(), ["negotiate", "basic", "bearer"]);
        assert_eq!(cs[1].param("realm"), Some("r"));
        let cs = parse_challenges(["Bearer realm=\"x\",scope=\"repository:a:pull repository:b:pull,push\""]);
        assert_eq!(cs[0].scopes(), ["repository:a:pull", "repository:b:pull,push"]);
    }

    #[test]
    fn junk_does_not_panic() {
        for s in [
            "",
            ",,,",
            "=",
            "Bearer",
            "Bearer =",
            "Bearer realm=\"unterminated",
            "Basic realm=",
            "\"x\" y=",
            "Bearer a b c",
        ] {
            let _ = parse_challenges([s]);
        }
        assert_eq!(parse_challenges(["Bearer"])[0].scheme, "bearer");
        assert!(preferred(&parse_challenges(["Digest realm=x"])).is_none());
    }
}
