//! "Did you mean …?" suggestions, as BuildKit's `util/suggest` makes them: the closest
//! option within an edit distance of 2, none when the value is itself an option.

/// The closest option to `value` (Levenshtein distance < 3), in the case of `value`
/// when the comparison is case-insensitive. `None` when nothing is close enough or
/// when `value` is one of the options (the error is then about something else).
pub fn suggest<'a, I>(value: &str, options: I, case_sensitive: bool) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let wanted = if case_sensitive { value.to_string() } else { value.to_lowercase() };
    let mut best: Option<String> = None;
    let mut min_distance = 3;
    for option in options {
        let option = if case_sensitive { option.to_string() } else { option.to_lowercase() };
        if option == wanted {
            return None;
        }
        let d = levenshtein(&wanted, &option);
        if d < min_distance {
            min_distance = d;
            best = Some(if case_sensitive { option } else { match_case(&option, value) });
        }
    }
    best
}

/// The text BuildKit appends to an error that has a suggestion.
pub fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

fn match_case(option: &str, original: &str) -> String {
    if original == original.to_lowercase() {
        option.to_lowercase()
    } else if original == original.to_uppercase() {
        option.to_uppercase()
    } else {
        option.to_string()
    }
}

/// Edit distance over characters (insert, delete, substitute: cost 1 each).
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_options() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(suggest("RUUN", ["run", "copy"], false).as_deref(), Some("RUN"));
        assert_eq!(suggest("lnk", ["link", "chown"], true).as_deref(), Some("link"));
        assert_eq!(suggest("link", ["link"], true), None);
        assert_eq!(suggest("zzzzzz", ["link"], true), None);
    }
}
