//! What the commands show: errors, progress bars, sizes and JSON.

use anyhow::Result;
use indicatif::{BinaryBytes, ProgressBar, ProgressFinish, ProgressStyle};
use serde::Serialize;
use std::io::{IsTerminal, Write};

/// Prints `error: …` and every cause on its own line to stderr.
pub fn print_error(error: &anyhow::Error) {
    let mut stderr = std::io::stderr().lock();
    let mut lines = error_chain(error).into_iter();
    if let Some(first) = lines.next() {
        let _ = writeln!(stderr, "error: {first}");
    }
    for cause in lines {
        let _ = writeln!(stderr, "  caused by: {cause}");
    }
}

/// The messages of an error and its causes, outermost first. A cause whose
/// text the message before already contains is left out: some library
/// errors both show their source and return it from `source()`.
pub fn error_chain(error: &anyhow::Error) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if lines.last().is_some_and(|last| last.contains(&text)) {
            continue;
        }
        lines.push(text);
    }
    lines
}

/// A bar over `len` bytes on stderr, or a hidden one with `--quiet` or when
/// stderr is not a terminal.
pub fn byte_progress(len: u64, quiet: bool, message: String) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .map(|style| style.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    // Cleared when dropped too, so an error is not printed under a stale bar.
    ProgressBar::new(len)
        .with_style(style)
        .with_message(message)
        .with_finish(ProgressFinish::AndClear)
}

/// `1234567` → `1234567 bytes (1.18 MiB)`.
pub fn size(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{bytes} bytes ({})", BinaryBytes(bytes))
    }
}

/// Prints `value` as pretty JSON and a newline on stdout.
pub fn print_json(value: &impl Serialize) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}
