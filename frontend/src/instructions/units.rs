//! Go-compatible parsing of the scalar values in builder flags: durations
//! (`time.ParseDuration`), sizes (`go-units.RAMInBytes`), booleans
//! (`strconv.ParseBool`) and integers (`strconv.ParseInt` / `ParseUint`).
//! Dockerfiles written for BuildKit rely on exactly these spellings.

use crate::ast::go_quote;

/// Parse a Go duration (`1h30m`, `1.5s`, `300ms`, `-2us`) into signed nanoseconds.
/// Errors carry Go's messages (`time: invalid duration "x"`).
pub fn parse_go_duration(text: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(text));
    let mut s = text;
    let mut neg = false;
    if let Some(c) = s.chars().next() {
        if c == '-' || c == '+' {
            neg = c == '-';
            s = &s[1..];
        }
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    const LIMIT: u128 = 1 << 63;
    let mut total: u128 = 0;
    while !s.is_empty() {
        let b = s.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // [0-9]*
        let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut whole: u128 = 0;
        for &c in &b[..int_len] {
            whole = whole * 10 + u128::from(c - b'0');
            if whole > LIMIT {
                return Err(invalid());
            }
        }
        s = &s[int_len..];
        // (\.[0-9]*)?
        let mut frac: u128 = 0;
        let mut scale: f64 = 1.0;
        let mut has_frac_digits = false;
        if s.starts_with('.') {
            s = &s[1..];
            let fb = s.as_bytes();
            let frac_len = fb.iter().take_while(|c| c.is_ascii_digit()).count();
            let mut overflow = false;
            for &c in &fb[..frac_len] {
                if overflow {
                    continue;
                }
                let next = frac * 10 + u128::from(c - b'0');
                if next > LIMIT {
                    overflow = true;
                    continue;
                }
                frac = next;
                scale *= 10.0;
            }
            has_frac_digits = frac_len > 0;
            s = &s[frac_len..];
        }
        if int_len == 0 && !has_frac_digits {
            return Err(invalid());
        }
        let unit_len = s.bytes().take_while(|c| !(*c == b'.' || c.is_ascii_digit())).count();
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {}", go_quote(text)));
        }
        let unit_name = &s[..unit_len];
        s = &s[unit_len..];
        let unit: u128 = match unit_name {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            _ => return Err(format!("time: unknown unit {} in duration {}", go_quote(unit_name), go_quote(text))),
        };
        if whole > LIMIT / unit {
            return Err(invalid());
        }
        let mut v = whole * unit;
        if frac > 0 {
            v += (frac as f64 * (unit as f64 / scale)) as u128;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        total += v;
        if total > LIMIT {
            return Err(invalid());
        }
    }
    if neg {
        return Ok((total as i128).wrapping_neg() as i64);
    }
    if total > LIMIT - 1 {
        return Err(invalid());
    }
    Ok(total as i64)
}

/// Go's `time.Duration.String()` for the non-negative values flags produce (`1m30s`,
/// `1.5s`, `300ms`, `0s`).
pub fn format_go_duration(nanos: u64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        let (unit, div) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("\u{b5}s", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", fraction(nanos, div));
    }
    let mut out = String::new();
    let hours = nanos / 3_600_000_000_000;
    let rest = nanos % 3_600_000_000_000;
    let minutes = rest / 60_000_000_000;
    let secs = rest % 60_000_000_000;
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{}s", fraction(secs, 1_000_000_000)));
    out
}

fn fraction(value: u64, div: u64) -> String {
    let whole = value / div;
    let frac = value % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Why [`parse_go_int32`] failed, with `strconv`'s wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntErrorKind {
    InvalidSyntax,
    OutOfRange,
}

/// `strconv.ParseInt(s, 10, 32)`. The error is `strconv.ParseInt: parsing "s": …`.
pub fn parse_go_int32(s: &str) -> Result<i32, String> {
    let fail = |kind: IntErrorKind| {
        let what = match kind {
            IntErrorKind::InvalidSyntax => "invalid syntax",
            IntErrorKind::OutOfRange => "value out of range",
        };
        format!("strconv.ParseInt: parsing {}: {what}", go_quote(s))
    };
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail(IntErrorKind::InvalidSyntax));
    }
    s.parse::<i32>().map_err(|_| fail(IntErrorKind::OutOfRange))
}

/// `strconv.ParseUint(s, radix, 32)` for radix 8 or 10.
pub fn parse_go_uint32(s: &str, radix: u32) -> Option<u32> {
    if s.is_empty() || !s.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(s, radix).ok()
}

/// `go-units.RAMInBytes`: `512`, `64k`, `1.5g`, `10MiB`, `2 GB` (binary multiples).
pub fn parse_ram_in_bytes(s: &str) -> Option<i64> {
    let sep = s.rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ')?;
    let (num, suffix) =
        if s.as_bytes()[sep] == b' ' { (&s[..sep], &s[sep + 1..]) } else { (&s[..=sep], &s[sep + 1..]) };
    let size: f64 = num.parse().ok()?;
    if size < 0.0 || size.is_nan() {
        return None;
    }
    if suffix.is_empty() {
        return Some(size as i64);
    }
    if suffix.len() > 3 {
        return None;
    }
    let suffix = suffix.to_lowercase();
    let mut chars = suffix.chars();
    let first = chars.next()?;
    if first == 'b' {
        return if suffix.len() == 1 { Some(size as i64) } else { None };
    }
    let multiplier: f64 = match first {
        'k' => 1024.0,
        'm' => 1024.0 * 1024.0,
        'g' => 1024.0 * 1024.0 * 1024.0,
        't' => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        'p' => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let rest = chars.as_str();
    if !(rest.is_empty() || rest == "b" || rest == "ib") {
        return None;
    }
    Some((size * multiplier) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("50ns"), Ok(50));
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-1ms"), Ok(-1_000_000));
        assert_eq!(parse_go_duration(".5ms"), Ok(500_000));
        assert_eq!(parse_go_duration("5"), Err("time: missing unit in duration \"5\"".into()));
        assert_eq!(parse_go_duration("5x"), Err("time: unknown unit \"x\" in duration \"5x\"".into()));
        assert_eq!(parse_go_duration(""), Err("time: invalid duration \"\"".into()));
        assert_eq!(parse_go_duration("."), Err("time: invalid duration \".\"".into()));
        assert!(parse_go_duration("9999999999999h").is_err());
        assert_eq!(format_go_duration(90_000_000_000), "1m30s");
        assert_eq!(format_go_duration(1_500_000), "1.5ms");
        assert_eq!(format_go_duration(3_600_000_000_000), "1h0m0s");
    }

    #[test]
    fn go_scalars() {
        assert_eq!(parse_go_bool("True"), Some(true));
        assert_eq!(parse_go_bool("yes"), None);
        assert_eq!(parse_go_int32("-3"), Ok(-3));
        assert_eq!(parse_go_int32("x"), Err("strconv.ParseInt: parsing \"x\": invalid syntax".into()));
        assert!(parse_go_int32("99999999999").unwrap_err().ends_with("value out of range"));
        assert_eq!(parse_go_uint32("0755", 8), Some(0o755));
        assert_eq!(parse_go_uint32("0789", 8), None);
        assert_eq!(parse_ram_in_bytes("64m"), Some(64 << 20));
        assert_eq!(parse_ram_in_bytes("1.5KiB"), Some(1536));
        assert_eq!(parse_ram_in_bytes("2 GB"), Some(2 << 30));
        assert_eq!(parse_ram_in_bytes("12"), Some(12));
        assert_eq!(parse_ram_in_bytes("12x"), None);
        assert_eq!(parse_ram_in_bytes("k"), None);
    }
}
