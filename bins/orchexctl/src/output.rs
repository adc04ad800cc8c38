//! Rendering: output format selection, colour, aligned tables, key/value
//! blocks and the formatting of times and durations.
//!
//! Every renderer returns a `String` rather than printing, so that the
//! layout is unit-tested without a terminal and so that writing to stdout
//! happens in one place ([`print()`]), where a closed pipe becomes an error
//! instead of a panic.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Write as _;

use clap::ValueEnum;
use orchex_core::{JobState, Severity, Timestamp};
use serde_json::Value;

use crate::client::ClientError;

/// The `-o` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Aligned, human-readable text.
    Table,
    /// JSON, for scripts.
    Json,
    /// Comma-separated values (`events` only, streamed from the daemon).
    Csv,
}

/// The two renderings every command supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Aligned text.
    Table,
    /// JSON.
    Json,
}

/// The effective format: the one asked for, else `table` on a terminal and
/// `json` when piped (scripts get something parseable without a flag).
pub(crate) fn select_format(requested: Option<Format>, stdout_is_terminal: bool) -> Format {
    requested.unwrap_or(if stdout_is_terminal {
        Format::Table
    } else {
        Format::Json
    })
}

/// Narrows `format` to table or JSON for a command that cannot write CSV.
pub(crate) fn mode_for(format: Format, command: &str) -> Result<Mode, ClientError> {
    match format {
        Format::Table => Ok(Mode::Table),
        Format::Json => Ok(Mode::Json),
        Format::Csv => Err(ClientError::Usage(format!(
            "`{command}` cannot write csv; use -o table or -o json (csv is for `orchexctl events`)"
        ))),
    }
}

/// Whether to colour output: only on a terminal, and never when `NO_COLOR`
/// is set to a non-empty value (<https://no-color.org>).
pub(crate) fn color_enabled(no_color: Option<&OsStr>, is_terminal: bool) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// The few colours the CLI uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Color {
    /// Success.
    Green,
    /// Failure.
    Red,
    /// Needs attention.
    Yellow,
    /// In progress.
    Cyan,
    /// Not important.
    Dim,
}

impl Color {
    /// The ANSI SGR parameter.
    const fn code(self) -> &'static str {
        match self {
            Color::Green => "32",
            Color::Red => "31",
            Color::Yellow => "33",
            Color::Cyan => "36",
            Color::Dim => "2",
        }
    }
}

/// Whether colour is on; applies colours to text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Style {
    /// Colour escapes are written only when this is set.
    pub(crate) color: bool,
}

impl Style {
    /// `text` in `color`, or unchanged when colour is off.
    pub(crate) fn paint(self, text: &str, color: Option<Color>) -> String {
        match color {
            Some(color) if self.color => format!("\x1b[{}m{text}\x1b[0m", color.code()),
            _ => text.to_owned(),
        }
    }
}

/// The colour of a job state.
pub(crate) const fn state_color(state: JobState) -> Option<Color> {
    match state {
        JobState::Succeeded => Some(Color::Green),
        JobState::Failed | JobState::TimedOut => Some(Color::Red),
        JobState::Cancelled | JobState::Interrupted | JobState::RolledBack => Some(Color::Yellow),
        JobState::Running => Some(Color::Cyan),
        JobState::Skipped => Some(Color::Dim),
        JobState::Queued => None,
    }
}

/// The colour of an event severity.
pub(crate) const fn severity_color(severity: Severity) -> Option<Color> {
    match severity {
        Severity::Info => None,
        Severity::Warn => Some(Color::Yellow),
        Severity::Error | Severity::Critical => Some(Color::Red),
    }
}

/// The colour of a health level name (`ok`, `degraded`, `unhealthy`).
pub(crate) fn health_color(level: &str) -> Option<Color> {
    match level {
        "ok" => Some(Color::Green),
        "degraded" => Some(Color::Yellow),
        "unhealthy" => Some(Color::Red),
        _ => None,
    }
}

/// One table cell: its text and an optional colour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cell {
    text: String,
    color: Option<Color>,
}

impl Cell {
    /// A cell with colour.
    pub(crate) fn colored(text: impl Into<String>, color: Option<Color>) -> Self {
        Self {
            text: one_line(&text.into()),
            color,
        }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell::colored(text, None)
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell::colored(text, None)
    }
}

/// A table with a header row and columns separated by two spaces.
///
/// Widths are measured on the text before colouring, so escapes never
/// break the alignment; the last column is not padded, so lines carry no
/// trailing blanks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    headers: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these column headers.
    pub(crate) fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            right: vec![false; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns the given columns (numbers read better that way).
    #[must_use]
    pub(crate) fn right_aligned(mut self, columns: &[usize]) -> Self {
        for &column in columns {
            if let Some(flag) = self.right.get_mut(column) {
                *flag = true;
            }
        }
        self
    }

    /// Appends a row; missing cells render empty, extra cells are dropped.
    pub(crate) fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// The rendered table, one line per row, each ending in `\n`.
    pub(crate) fn render(&self, style: Style) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (index, cell) in row.iter().take(columns).enumerate() {
                widths[index] = widths[index].max(width(&cell.text));
            }
        }
        let mut out = String::new();
        let header_cells: Vec<Cell> = self
            .headers
            .iter()
            .map(|h| Cell::from(h.as_str()))
            .collect();
        for row in std::iter::once(&header_cells).chain(&self.rows) {
            let mut line = String::new();
            for (index, (column_width, right)) in widths.iter().zip(&self.right).enumerate() {
                let (text, color) = row
                    .get(index)
                    .map_or(("", None), |cell| (cell.text.as_str(), cell.color));
                let pad = column_width.saturating_sub(width(text));
                let last = index + 1 == columns;
                if index > 0 {
                    line.push_str("  ");
                }
                if *right {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(&style.paint(text, color));
                } else {
                    line.push_str(&style.paint(text, color));
                    if !last {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A block of `key  value` lines with the values aligned.
pub(crate) fn key_values(pairs: &[(&str, String)]) -> String {
    let key_width = pairs.iter().map(|(key, _)| width(key)).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let _ = writeln!(out, "{key:<key_width$}  {}", one_line(value));
    }
    out
}

/// Display width, counted in characters (good enough for the ASCII the
/// daemon sends; no dependency for East Asian widths).
fn width(text: &str) -> usize {
    text.chars().count()
}

/// `text` on one line, with control characters (newlines, tabs, terminal
/// escapes from a tool's output) replaced, so a cell cannot break the layout
/// or drive the terminal.
pub(crate) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `text` shortened to `max` characters with an ellipsis.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// A timestamp to the second, in UTC: `2025-01-31T12:00:00Z`.
pub(crate) fn timestamp(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// How long ago `ts` was, kubectl style: `42s`, `5m`, `3h`, `2d`.
pub(crate) fn age(ts: Timestamp, now: Timestamp) -> String {
    let seconds = now.duration_since(ts).as_secs().max(0);
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A duration in milliseconds, compactly: `850ms`, `4.2s`, `3m12s`, `1h05m`.
pub(crate) fn duration_ms(ms: u64) -> String {
    match ms {
        ms if ms < 1000 => format!("{ms}ms"),
        ms if ms < 60_000 => format!("{}.{}s", ms / 1000, ms % 1000 / 100),
        ms if ms < 3_600_000 => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000),
        ms => format!("{}h{:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// The time between two instants as [`duration_ms`] (zero if reversed).
pub(crate) fn between(start: Timestamp, end: Timestamp) -> String {
    let ms = end.duration_since(start).as_millis().max(0);
    duration_ms(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// A JSON value as cell text: strings without quotes, `-` for null or
/// missing, anything else as compact JSON.
pub(crate) fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A number of milliseconds from JSON (integer or float) as [`duration_ms`].
pub(crate) fn ms_value(value: Option<&Value>) -> String {
    match value.and_then(Value::as_f64) {
        // Rounding to whole milliseconds is the precision shown anyway.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(ms) if ms.is_finite() && ms >= 0.0 => duration_ms(ms.round() as u64),
        _ => "-".to_owned(),
    }
}

/// A score in [0, 1] with two decimals, or `-`.
pub(crate) fn score(value: Option<&Value>) -> String {
    value
        .and_then(Value::as_f64)
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// `value` as pretty JSON with a final newline.
pub(crate) fn json(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

/// Writes `text` to stdout. A closed pipe (`orchexctl jobs | head`) comes
/// back as an error, which `main` turns into a quiet exit, where `println!`
/// would panic.
pub(crate) fn print(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const PLAIN: Style = Style { color: false };

    #[test]
    fn format_follows_the_terminal_unless_asked() {
        assert_eq!(select_format(None, true), Format::Table);
        assert_eq!(select_format(None, false), Format::Json);
        assert_eq!(select_format(Some(Format::Json), true), Format::Json);
        assert_eq!(select_format(Some(Format::Table), false), Format::Table);
        assert_eq!(select_format(Some(Format::Csv), true), Format::Csv);
    }

    #[test]
    fn csv_is_refused_outside_events() {
        assert_eq!(mode_for(Format::Table, "jobs").unwrap(), Mode::Table);
        assert_eq!(mode_for(Format::Json, "jobs").unwrap(), Mode::Json);
        let err = mode_for(Format::Csv, "jobs").unwrap_err();
        assert!(matches!(err, ClientError::Usage(_)));
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(color_enabled(None, true));
        assert!(!color_enabled(None, false));
        assert!(!color_enabled(Some(OsStr::new("1")), true));
        // An empty NO_COLOR does not count, per no-color.org.
        assert!(color_enabled(Some(OsStr::new("")), true));
    }

    #[test]
    fn tables_align_and_carry_no_trailing_blanks() {
        let mut table = Table::new(&["ID", "STATE", "NOTE"]).right_aligned(&[0]);
        table.row(vec!["7".into(), "running".into(), "".into()]);
        table.row(vec!["1234".into(), "ok".into(), "line\nbreak".into()]);
        assert_eq!(
            table.render(PLAIN),
            "  ID  STATE    NOTE\n   7  running\n1234  ok       line break\n"
        );
    }

    #[test]
    fn colour_does_not_change_the_alignment() {
        let mut table = Table::new(&["STATE", "X"]);
        table.row(vec![Cell::colored("ok", Some(Color::Green)), "1".into()]);
        table.row(vec!["failed".into(), "2".into()]);
        let colored = table.render(Style { color: true });
        assert_eq!(colored, "STATE   X\n\x1b[32mok\x1b[0m      1\nfailed  2\n");
        assert_eq!(table.render(PLAIN), "STATE   X\nok      1\nfailed  2\n");
    }

    #[test]
    fn short_rows_render_empty_cells() {
        let mut table = Table::new(&["A", "B"]);
        table.row(vec!["x".into()]);
        assert_eq!(table.render(PLAIN), "A  B\nx\n");
    }

    #[test]
    fn key_values_align() {
        let text = key_values(&[("state", "running".into()), ("queue depth", "3".into())]);
        assert_eq!(text, "state        running\nqueue depth  3\n");
    }

    #[test]
    fn durations_are_compact() {
        assert_eq!(duration_ms(850), "850ms");
        assert_eq!(duration_ms(4_250), "4.2s");
        assert_eq!(duration_ms(192_000), "3m12s");
        assert_eq!(duration_ms(3_900_000), "1h05m");
        assert_eq!(ms_value(Some(&serde_json::json!(35.6))), "36ms");
        assert_eq!(ms_value(None), "-");
    }

    #[test]
    fn ages_are_kubectl_style() {
        let now: Timestamp = "2025-01-31T12:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(age(at("2025-01-31T11:59:18Z"), now), "42s");
        assert_eq!(age(at("2025-01-31T11:55:00Z"), now), "5m");
        assert_eq!(age(at("2025-01-31T09:00:00Z"), now), "3h");
        assert_eq!(age(at("2025-01-29T12:00:00Z"), now), "2d");
        // A clock skewed into the future is not a negative age.
        assert_eq!(age(at("2025-01-31T12:00:05Z"), now), "0s");
        assert_eq!(
            timestamp(at("2025-01-31T11:55:00.123Z")),
            "2025-01-31T11:55:00Z"
        );
    }

    #[test]
    fn json_values_become_cell_text() {
        assert_eq!(text(Some(&serde_json::json!("api"))), "api");
        assert_eq!(text(Some(&serde_json::json!(3))), "3");
        assert_eq!(text(Some(&Value::Null)), "-");
        assert_eq!(text(None), "-");
        assert_eq!(score(Some(&serde_json::json!(0.456))), "0.46");
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("a long message", 6), "a lon…");
    }
}
