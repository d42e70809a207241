//! Log files of child processes, and their tails for failure messages.

use std::path::Path;

/// The last `lines` lines of a log file, or a note saying why it cannot be read.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            if all.is_empty() {
                "(empty)".to_owned()
            } else {
                all[start..].join("\n")
            }
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A block naming each log file followed by its tail, for error messages and panics.
pub(crate) fn tails(title: &str, files: &[&Path], lines: usize) -> String {
    let mut out = String::new();
    for file in files {
        out.push_str(&format!(
            "\n----- {title}: last {lines} lines of {} -----\n{}",
            file.display(),
            tail(file, lines)
        ));
    }
    out.push_str(&format!("\n----- end of {title} logs -----"));
    out
}
