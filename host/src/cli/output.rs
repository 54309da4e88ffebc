//! How commands print: `--output table` (the default, for people: aligned
//! columns, RFC 3339 times) or `--output json` (for scripts: the same
//! fields the API answers with).

use std::io::Write;

use serde::Serialize;

/// The output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns, RFC 3339 times.
    #[default]
    Table,
    /// JSON, as the API answers.
    Json,
}

/// `--output`, on every command that lists or shows something.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutputArgs {
    /// How to print: `table` for people, `json` for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// Same as `--output json`.
    #[arg(long, global = true, hide = true)]
    pub json: bool,
}

impl OutputArgs {
    /// Whether JSON was asked for.
    pub(crate) fn is_json(&self) -> bool {
        self.json || self.output == Output::Json
    }
}

/// Writes `value` as pretty JSON.
pub(crate) fn json(out: &mut dyn Write, value: &impl Serialize) {
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// A table: a header row and rows, printed with each column as wide as its
/// widest cell. Cells are single-line; control characters are shown
/// escaped, so a name cannot rewrite the terminal.
#[derive(Debug, Default)]
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub(crate) fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|cell| {
                    if cell.chars().any(char::is_control) {
                        cell.escape_debug().to_string()
                    } else {
                        cell
                    }
                })
                .collect(),
        );
    }

    /// Whether it has no rows.
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Prints it; `empty` instead when there are no rows.
    pub(crate) fn print(&self, out: &mut dyn Write, empty: &str) {
        if self.rows.is_empty() {
            let _ = writeln!(out, "{empty}");
            return;
        }
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut text = String::new();
            for (i, cell) in cells.enumerate().take(columns) {
                if i + 1 == columns {
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    let pad = widths[i] - cell.chars().count() + 2;
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            text.trim_end().to_string()
        };
        let _ = writeln!(out, "{}", line(&mut self.header.iter().copied()));
        for row in &self.rows {
            let _ = writeln!(out, "{}", line(&mut row.iter().map(String::as_str)));
        }
    }
}

/// Unix seconds as RFC 3339 (UTC), for people.
pub(crate) fn rfc3339(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0).map_or_else(
        || seconds.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// An optional Unix time from JSON as RFC 3339, or `-`.
pub(crate) fn rfc3339_field(value: &serde_json::Value) -> String {
    value.as_i64().map_or_else(|| "-".into(), rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_and_names_cannot_rewrite_the_terminal() {
        let mut table = Table::new(&["NAME", "STATE"]);
        table.row(vec!["a-long-name".into(), "active".into()]);
        table.row(vec!["x\u{1b}[2J".into(), "revoked".into()]);
        let mut out = Vec::new();
        table.print(&mut out, "none");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "NAME         STATE\na-long-name  active\nx\\u{1b}[2J   revoked\n"
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
