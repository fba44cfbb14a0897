//! Dockerfile errors and warnings as people read them: the file, line and column, the
//! offending line with a caret, and what to do next.

use std::path::Path;

/// Format an error located in a Dockerfile.
pub fn dockerfile_error(
    file: &Path,
    source: &str,
    line: Option<usize>,
    column: Option<usize>,
    message: &str,
) -> String {
    let name = file.display();
    // A hint (what to do next) comes after the quoted line.
    let (message, hint) = match message.split_once("\nhint: ") {
        Some((m, h)) => (m, Some(h)),
        None => (message, None),
    };
    let Some(line) = line.filter(|l| *l > 0) else {
        let mut out = format!("error: {name}: {message}");
        if let Some(h) = hint {
            out.push_str(&format!("\nhint: {h}"));
        }
        return out;
    };
    let col = column.unwrap_or(1);
    let mut out = format!("error: {name}:{line}:{col}: {message}\n");
    if let Some(text) = source.lines().nth(line - 1) {
        let num = line.to_string();
        out.push_str(&format!(" {num} | {text}\n"));
        out.push_str(&format!(" {} | {}^", " ".repeat(num.len()), " ".repeat(col.saturating_sub(1))));
    }
    if let Some(h) = hint {
        out.push_str(&format!("\nhint: {h}"));
    }
    out
}

/// Where a failed step comes from, as BuildKit shows it: the file and line, then the
/// instruction (marked) after the line before it.
pub fn step_location(file: &Path, source: &str, line: usize) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let Some(text) = line.checked_sub(1).and_then(|i| lines.get(i)) else {
        return format!("{}:{line}", file.display());
    };
    let mut out = format!("{}:{line}\n--------------------\n", file.display());
    if let Some(before) = line.checked_sub(2).and_then(|i| lines.get(i)) {
        out.push_str(&format!(" {:>3} |     {before}\n", line - 1));
    }
    out.push_str(&format!(" {line:>3} | >>> {text}\n--------------------"));
    out
}

/// Format a warning located in a Dockerfile.
pub fn dockerfile_warning(file: &Path, line: Option<usize>, message: &str) -> String {
    match line {
        Some(l) => format!("warning: {}:{l}: {message}", file.display()),
        None => format!("warning: {message}"),
    }
}
