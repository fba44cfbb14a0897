//! `--chmod` values: octal (`0755`, `755`, `4755`) and symbolic (`u+x,g-w,o=r`, `a+X`,
//! `go=u-w`), with the semantics of BSD `setmode(3)` as BuildKit applies them.
//!
//! This module owns parsing a mode string and applying it to the permission bits of one
//! file. It knows nothing about files: [`Chmod::apply`] maps old bits (and whether the
//! entry is a directory, for `X`) to new bits.
//!
//! # Rules (as in BuildKit's Dockerfile frontend and `tonistiigi/dchapes-mode`)
//!
//! - A value made only of octal digits is an absolute mode; it must not exceed `07777`.
//!   It replaces all twelve bits (setuid, setgid, sticky and `rwx` for all classes).
//! - A value starting with a digit that is not valid octal is rejected with the
//!   frontend's message (`it should be octal string and between 0 and 07777`).
//! - Otherwise it is a comma-separated list of clauses `[ugoa]*([-+=][rwxXstugo]*)+`;
//!   the umask is taken as 0 (a clause without a `who` applies to all classes).
//!   `X` (only with `+`) sets execute where the entry is a directory or already has an
//!   execute bit; `s` affects setuid/setgid of the named classes (ignored for `o`
//!   alone), `t` the sticky bit; `u`, `g`, `o` after an operator copy that class's
//!   current bits (`go=u-w`).
//!
//! ```
//! use strata_executor::chmod::Chmod;
//! let c: Chmod = "u+x,go-w".parse().unwrap();
//! assert_eq!(c.apply(0o666, false), 0o744);
//! assert_eq!(Chmod::parse("0755").unwrap().apply(0o4644, false), 0o755);
//! assert_eq!(Chmod::parse("a+X").unwrap().apply(0o644, true), 0o755);
//! ```

use std::fmt;
use std::str::FromStr;

const SET_UID: u32 = 0o4000;
const SET_GID: u32 = 0o2000;
const STICKY: u32 = 0o1000;
const RWX_U: u32 = 0o700;
const RWX_G: u32 = 0o070;
const RWX_O: u32 = 0o007;
const R_ALL: u32 = 0o444;
const W_ALL: u32 = 0o222;
const X_ALL: u32 = 0o111;
/// Everything a `who` of `a` (or none) touches: setuid, setgid and `rwx` of all
/// classes — the sticky bit only through `t`.
const STANDARD: u32 = SET_UID | SET_GID | RWX_U | RWX_G | RWX_O;

/// Why a `--chmod` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChmodError {
    #[error("invalid chmod parameter: '{spec}'. it should be octal string and between 0 and 07777")]
    NotOctal { spec: String },
    #[error("invalid chmod parameter: '{spec}': not a valid symbolic mode (expected clauses like u+x,g-w,o=r,a+X)")]
    Syntax { spec: String },
}

/// A parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chmod {
    spec: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Octal(u32),
    Symbolic(Vec<Step>),
}

/// Which classes a copy step writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Targets {
    user: bool,
    group: bool,
    other: bool,
}

/// One step of a symbolic mode, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Clear(u32),
    Set(u32),
    /// `+X`: set these bits if the entry is a directory or was executable by anyone.
    SetIfSearchable(u32),
    /// `u`/`g`/`o` after an operator: copy that class's current bits.
    CopyClass {
        from: Class,
        targets: Targets,
        mask: u32,
        clear: bool,
        set: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    User,
    Group,
    Other,
}

impl Chmod {
    /// Parse a `--chmod` value (see the module documentation for the rules).
    pub fn parse(spec: &str) -> Result<Chmod, ChmodError> {
        let kind = parse_kind(spec)?;
        Ok(Chmod { spec: spec.to_string(), kind })
    }

    /// The absolute mode, when the value was octal. BuildKit also uses it (its `rwx`
    /// bits) as the mode of destination directories the copy creates.
    pub fn octal(&self) -> Option<u32> {
        match self.kind {
            Kind::Octal(m) => Some(m),
            Kind::Symbolic(_) => None,
        }
    }

    /// The value as written.
    pub fn as_str(&self) -> &str {
        &self.spec
    }

    /// New permission bits (`0o7777` range) for an entry whose current bits are `mode`
    /// (file type bits are ignored). `is_dir` matters for `X`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let old = mode & 0o7777;
        match &self.kind {
            Kind::Octal(m) => *m,
            Kind::Symbolic(steps) => {
                let mut new = old;
                for step in steps {
                    match step {
                        Step::Clear(bits) => new &= !bits,
                        Step::Set(bits) => new |= bits,
                        Step::SetIfSearchable(bits) => {
                            if is_dir || old & X_ALL != 0 {
                                new |= bits;
                            }
                        }
                        Step::CopyClass { from, targets, mask, clear, set } => {
                            let value = match from {
                                Class::User => (new & RWX_U) >> 6,
                                Class::Group => (new & RWX_G) >> 3,
                                Class::Other => new & RWX_O,
                            };
                            // `=` clears the whole class before copying into it.
                            let clear_value = if *set { 0o7 } else { value };
                            let shifts = [(targets.user, 6u32), (targets.group, 3), (targets.other, 0)];
                            if *clear {
                                for (on, shift) in shifts {
                                    if on {
                                        new &= !((clear_value << shift) & mask);
                                    }
                                }
                            }
                            if *set {
                                for (on, shift) in shifts {
                                    if on {
                                        new |= (value << shift) & mask;
                                    }
                                }
                            }
                        }
                    }
                }
                new
            }
        }
    }
}

impl FromStr for Chmod {
    type Err = ChmodError;
    fn from_str(s: &str) -> Result<Chmod, ChmodError> {
        Chmod::parse(s)
    }
}

impl fmt::Display for Chmod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

fn parse_kind(spec: &str) -> Result<Kind, ChmodError> {
    let not_octal = || ChmodError::NotOctal { spec: spec.to_string() };
    let syntax = || ChmodError::Syntax { spec: spec.to_string() };
    let bytes = spec.as_bytes();
    match bytes.first() {
        None => return Err(syntax()),
        Some(b) if b.is_ascii_digit() => {
            if !bytes.iter().all(|b| (b'0'..=b'7').contains(b)) {
                return Err(not_octal());
            }
            let v = u32::from_str_radix(spec, 8).map_err(|_| not_octal())?;
            if v > 0o7777 {
                return Err(not_octal());
            }
            return Ok(Kind::Octal(v));
        }
        Some(_) => {}
    }

    let mut steps = Vec::new();
    let mut s = bytes;
    loop {
        // who
        let mut who = 0u32;
        loop {
            match s.first() {
                None => return Err(syntax()),
                Some(b'a') => who |= STANDARD,
                Some(b'u') => who |= SET_UID | RWX_U,
                Some(b'g') => who |= SET_GID | RWX_G,
                Some(b'o') => who |= RWX_O,
                Some(_) => break,
            }
            s = &s[1..];
        }
        // one or more `op perms` groups
        loop {
            let Some((&op, rest)) = s.split_first() else {
                return Err(syntax());
            };
            if !matches!(op, b'+' | b'-' | b'=') {
                return Err(syntax());
            }
            s = rest;
            let mut who = who & !STICKY;
            let mut perm = 0u32;
            let mut perm_x = 0u32;
            let mut equal_done = false;
            loop {
                match s.first() {
                    Some(b'r') => perm |= R_ALL,
                    Some(b'w') => perm |= W_ALL,
                    Some(b'x') => perm |= X_ALL,
                    Some(b'X') => {
                        if op == b'+' {
                            perm_x = X_ALL;
                        }
                    }
                    Some(b's') => {
                        if who == 0 || who & !RWX_O != 0 {
                            perm |= SET_UID | SET_GID;
                        }
                    }
                    Some(b't') => {
                        if who == 0 || who & !RWX_O != 0 {
                            who |= STICKY;
                            perm |= STICKY;
                        }
                    }
                    Some(&c @ (b'u' | b'g' | b'o')) => {
                        if perm != 0 {
                            push_op(&mut steps, op, who, perm);
                            perm = 0;
                        }
                        if op == b'=' {
                            equal_done = true;
                        }
                        if perm_x != 0 {
                            push_op(&mut steps, b'X', who, perm_x);
                            perm_x = 0;
                        }
                        let from = match c {
                            b'u' => Class::User,
                            b'g' => Class::Group,
                            _ => Class::Other,
                        };
                        push_copy(&mut steps, from, who, op);
                    }
                    _ => {
                        if perm != 0 || (op == b'=' && !equal_done) {
                            push_op(&mut steps, op, who, perm);
                        }
                        if perm_x != 0 {
                            push_op(&mut steps, b'X', who, perm_x);
                        }
                        break;
                    }
                }
                s = &s[1..];
            }
            match s.first() {
                None => return Ok(Kind::Symbolic(steps)),
                Some(b',') => {
                    s = &s[1..];
                    break;
                }
                Some(_) => continue,
            }
        }
    }
}

/// `+`, `-`, `=` or `X` with the bits `perm` for the classes `who` (none = all).
fn push_op(steps: &mut Vec<Step>, op: u8, who: u32, perm: u32) {
    let scoped = |bits: u32| if who != 0 { who & bits } else { bits };
    match op {
        b'=' => {
            steps.push(Step::Clear(if who != 0 { who } else { STANDARD }));
            steps.push(Step::Set(scoped(perm)));
        }
        b'+' => steps.push(Step::Set(scoped(perm))),
        b'-' => steps.push(Step::Clear(scoped(perm))),
        _ => steps.push(Step::SetIfSearchable(scoped(perm))),
    }
}

fn push_copy(steps: &mut Vec<Step>, from: Class, who: u32, op: u8) {
    let (targets, mask) = if who != 0 {
        (Targets { user: who & 0o400 != 0, group: who & 0o040 != 0, other: who & 0o004 != 0 }, u32::MAX)
    } else {
        (Targets { user: true, group: true, other: true }, u32::MAX)
    };
    let (clear, set) = match op {
        b'+' => (false, true),
        b'-' => (true, false),
        _ => (true, true),
    };
    steps.push(Step::CopyClass { from, targets, mask, clear, set });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ap(spec: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(spec).unwrap().apply(mode, dir)
    }

    #[test]
    fn octal() {
        assert_eq!(ap("755", 0o600, false), 0o755);
        assert_eq!(ap("0644", 0o4777, true), 0o644);
        assert_eq!(ap("4755", 0o600, false), 0o4755);
        assert_eq!(ap("0", 0o777, false), 0);
        assert_eq!(Chmod::parse("0755").unwrap().octal(), Some(0o755));
        assert!(matches!(Chmod::parse("10000"), Err(ChmodError::NotOctal { .. })));
        assert!(matches!(Chmod::parse("0999"), Err(ChmodError::NotOctal { .. })));
        assert!(matches!(Chmod::parse("7x"), Err(ChmodError::NotOctal { .. })));
    }

    #[test]
    fn symbolic() {
        assert_eq!(ap("u+x", 0o644, false), 0o744);
        assert_eq!(ap("g-w", 0o664, false), 0o644);
        assert_eq!(ap("o=r", 0o667, false), 0o664);
        assert_eq!(ap("a+x", 0o644, false), 0o755);
        assert_eq!(ap("+x", 0o644, false), 0o755);
        assert_eq!(ap("go-w", 0o666, false), 0o644);
        assert_eq!(ap("u=rwx,go=rx", 0o000, false), 0o755);
        assert_eq!(ap("go=", 0o777, false), 0o700);
        assert_eq!(ap("=rw,+X", 0o700, false), 0o777 & !0o111 | 0o111);
        assert_eq!(ap("=rw,+X", 0o600, false), 0o666);
        assert_eq!(ap("u+rw-x", 0o755, false), 0o655);
        assert_eq!(ap("u+s", 0o755, false), 0o4755);
        assert_eq!(ap("g+s", 0o755, true), 0o2755);
        assert_eq!(ap("o+s", 0o755, false), 0o755);
        assert_eq!(ap("+t", 0o777, true), 0o1777);
        assert_eq!(ap("o+t", 0o777, true), 0o777);
        assert_eq!(ap("u-s", 0o4755, false), 0o755);
    }

    #[test]
    fn capital_x() {
        assert_eq!(ap("a+X", 0o644, false), 0o644);
        assert_eq!(ap("a+X", 0o744, false), 0o755);
        assert_eq!(ap("a+X", 0o600, true), 0o711);
        // X only means something with `+`
        assert_eq!(ap("a-X", 0o755, true), 0o755);
    }

    #[test]
    fn copy_classes() {
        assert_eq!(ap("go=u-w", 0o700, false), 0o755 & !0o022 & 0o755);
        assert_eq!(ap("go=u-w", 0o751, false), 0o755);
        assert_eq!(ap("g=u", 0o640, false), 0o660);
        assert_eq!(ap("o+g", 0o650, false), 0o655);
        assert_eq!(ap("u-o", 0o777, false), 0o077);
    }

    #[test]
    fn syntax_errors() {
        for bad in ["", "u", "u+r,", "z+x", "u!x", "+x,", ","] {
            assert!(matches!(Chmod::parse(bad), Err(ChmodError::Syntax { .. })), "{bad:?}");
        }
    }
}
