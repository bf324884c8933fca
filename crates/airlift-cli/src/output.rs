//! What the commands show: errors, progress bars, sizes and JSON.

use anyhow::Result;
use chrono::{DateTime, Utc};
use indicatif::{BinaryBytes, ProgressBar, ProgressFinish, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
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

/// Columns of text for people: a header row, then rows, each column as wide
/// as its widest cell, two spaces apart; the last column is not padded.
#[derive(Debug)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row (as many cells as headers).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines of text, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (index, cell) in row.iter().enumerate() {
                if index + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[index] - cell.chars().count();
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on stdout.
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// A time for people: `2025-06-01 14:03:27 UTC`.
pub fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `a, b, c`, or `empty` when there is nothing.
pub fn list(items: &[String], empty: &str) -> String {
    if items.is_empty() {
        empty.to_owned()
    } else {
        items.join(", ")
    }
}

/// `k=v, k2=v2`, or `empty` when there is nothing.
pub fn pairs(map: &BTreeMap<String, String>, empty: &str) -> String {
    let items: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
    list(&items, empty)
}

/// One `label  value` line of a detail view, labels aligned.
pub fn field(label: &str, value: impl std::fmt::Display) {
    println!("{label:<18}  {value}");
}

/// The line under one page of a list: `page 2 of 7, 20 of 130 tokens;
/// next: --page 3` (as `airlift device list` says it).
pub fn page_footer<T>(page: &airlift_protocol::management::Page<T>, noun: &str) -> String {
    let pages = pages(page);
    let mut footer = format!(
        "page {} of {pages}, {} of {} {noun}",
        page.page,
        page.items.len(),
        page.total
    );
    if u64::from(page.page) < pages {
        footer.push_str(&format!("; next: --page {}", page.page + 1));
    }
    footer
}

/// How many pages a list has (at least one, if empty).
pub fn pages<T>(page: &airlift_protocol::management::Page<T>) -> u64 {
    page.total.div_ceil(u64::from(page.per_page.max(1))).max(1)
}

/// What to say when a page shows nothing: there is nothing at all, or the
/// page is past the end.
pub fn empty_page<T>(
    page: &airlift_protocol::management::Page<T>,
    none: &str,
    noun: &str,
) -> String {
    if page.total == 0 {
        none.to_owned()
    } else {
        format!(
            "page {} is empty: {} {noun} in all, {} pages of {}",
            page.page,
            page.total,
            pages(page),
            page.per_page
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_do_not_pad_the_last() {
        let mut table = Table::new(&["ID", "NAME", "NOTE"]);
        table.row(vec!["1".into(), "rootfs".into(), "".into()]);
        table.row(vec!["22".into(), "ü".into(), "last".into()]);
        assert_eq!(
            table.render(),
            "ID  NAME    NOTE\n\
             1   rootfs\n\
             22  ü       last\n"
        );
    }
}
