//! What commands print: aligned tables (kubectl style, no borders) by
//! default, `-o json` or `-o yaml` for scripts, `-q` for ids only. Colour
//! only when stdout is a terminal and `NO_COLOR` is unset.
//!
//! Tables are hand-aligned rather than drawn with comfy-table: kubectl's
//! borderless columns are twenty lines, and scripts that `awk` them want
//! exactly that. Cell widths are display columns (`unicode-width`). Ages are
//! kubectl's one-unit `5s`/`3m`/`2h`/`4d`, which humantime does not write.
//!
//! Commands read API objects as `lb_model::views` types for the tables and
//! keep the JSON they got for `-o json|yaml`, shown as the API sent it.

use std::io::{IsTerminal, Write};

use lb_model::Timestamp;
use serde::Serialize;
use serde_json::Value;
use unicode_width::UnicodeWidthStr;

use crate::error::{Error, Result};

/// `-o` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns (lists) or `Field: value` lines (one resource).
    Table,
    /// The API's JSON.
    Json,
    /// The API's JSON as YAML.
    Yaml,
}

/// How to print.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// The format.
    pub format: Format,
    /// Ids only.
    pub quiet: bool,
    /// Colour on stdout.
    pub color: bool,
    /// Colour on stderr.
    pub color_err: bool,
}

/// A list as a table: headers and rows of cells.
#[derive(Debug, Default)]
pub struct Table {
    /// Column headers.
    pub headers: Vec<&'static str>,
    /// Rows of cells.
    pub rows: Vec<Vec<String>>,
}

/// What a command shows.
pub enum Shown {
    /// A list: the API's JSON, the table, the ids.
    List {
        /// JSON for `-o json|yaml`.
        value: Value,
        /// The table.
        table: Table,
        /// Ids for `-q`.
        ids: Vec<String>,
    },
    /// One resource: the API's JSON, `Field: value` lines, its id.
    One {
        /// JSON for `-o json|yaml`.
        value: Value,
        /// Field lines.
        fields: Vec<(&'static str, String)>,
        /// Id for `-q`.
        id: String,
    },
    /// A message for people (not shown with `-q`; JSON shows `value`).
    Message {
        /// JSON for `-o json|yaml`, if any.
        value: Value,
        /// The line.
        text: String,
    },
}

impl Output {
    /// Settings from the flags and the terminal.
    pub fn new(format: Format, quiet: bool, no_color: bool) -> Self {
        let env_ok = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && !no_color;
        Self {
            format,
            quiet,
            color: env_ok && std::io::stdout().is_terminal(),
            color_err: env_ok && std::io::stderr().is_terminal(),
        }
    }

    /// Prints what a command shows.
    pub fn show(&self, shown: Shown) -> Result<()> {
        let mut out = std::io::stdout().lock();
        let result = match shown {
            Shown::List { value, table, ids } => {
                if self.quiet {
                    ids.iter().try_for_each(|id| writeln!(out, "{id}"))
                } else {
                    match self.format {
                        Format::Table => write_table(&mut out, &table, self.color),
                        _ => self.write_value(&mut out, &value),
                    }
                }
            }
            Shown::One { value, fields, id } => {
                if self.quiet {
                    writeln!(out, "{id}")
                } else {
                    match self.format {
                        Format::Table => write_fields(&mut out, &fields, self.color),
                        _ => self.write_value(&mut out, &value),
                    }
                }
            }
            Shown::Message { value, text } => match (self.quiet, self.format) {
                (true, _) => Ok(()),
                (false, Format::Table) => writeln!(out, "{text}"),
                (false, _) if value.is_null() => Ok(()),
                (false, _) => self.write_value(&mut out, &value),
            },
        };
        match result {
            Ok(()) => Ok(()),
            // `lbc ... | head` closes the pipe: not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(Error::from(e)),
        }
    }

    fn write_value(&self, out: &mut impl Write, value: &Value) -> std::io::Result<()> {
        match self.format {
            Format::Yaml => {
                let text = serde_yaml::to_string(value)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                out.write_all(text.as_bytes())
            }
            _ => {
                serde_json::to_writer_pretty(&mut *out, value)?;
                writeln!(out)
            }
        }
    }

    /// A status line on stderr, for people (progress, hints).
    pub fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }
}

/// Colours a state word when `color` is on.
pub fn paint_state(state: &str, color: bool) -> String {
    if !color {
        return state.to_owned();
    }
    let code = match state {
        "running" | "succeeded" | "true" | "alive" | "healthy" | "issued" => "32",
        "failed" | "exited" | "canceled" | "false" | "lost" | "unhealthy" => "31",
        "pending" | "starting" | "stopping" | "paused" | "queued" => "33",
        _ => return state.to_owned(),
    };
    format!("\x1b[{code}m{state}\x1b[0m")
}

/// Visible width of a cell: its display columns, ANSI colour codes
/// (`ESC [ ... m`) excluded.
fn width(s: &str) -> usize {
    let mut n = 0;
    let mut rest = s;
    while let Some(start) = rest.find('\x1b') {
        n += rest[..start].width();
        rest = rest[start..]
            .find('m')
            .map_or("", |end| &rest[start + end + 1..]);
    }
    n + rest.width()
}

/// `Field: value` lines, then a blank line and a table, as one text (for
/// views that show a resource and its parts, like `lbc status`).
pub fn fields_and_table(fields: &[(&'static str, String)], table: &Table, color: bool) -> String {
    let mut out = Vec::new();
    let _ = write_fields(&mut out, fields, color);
    if !table.rows.is_empty() {
        out.push(b'\n');
        let _ = write_table(&mut out, table, color);
    }
    String::from_utf8_lossy(&out).trim_end().to_owned()
}

fn write_table(out: &mut impl Write, table: &Table, color: bool) -> std::io::Result<()> {
    let mut widths: Vec<usize> = table.headers.iter().map(|h| h.len()).collect();
    for row in &table.rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(width(cell));
            }
        }
    }
    let line = |cells: Vec<String>| -> String {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(width(&cell));
            s.push_str(&cell);
            if i != last {
                s.push_str(&" ".repeat(pad + 3));
            }
        }
        s
    };
    let header = line(table.headers.iter().map(|h| h.to_string()).collect());
    if color {
        writeln!(out, "\x1b[1m{header}\x1b[0m")?;
    } else {
        writeln!(out, "{header}")?;
    }
    for row in &table.rows {
        writeln!(out, "{}", line(row.clone()))?;
    }
    Ok(())
}

fn write_fields(
    out: &mut impl Write,
    fields: &[(&'static str, String)],
    color: bool,
) -> std::io::Result<()> {
    let w = fields.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    for (key, value) in fields.iter().filter(|(_, v)| !v.is_empty()) {
        let label = format!("{key}:");
        let label = if color {
            format!("\x1b[1m{label:<w$}\x1b[0m")
        } else {
            format!("{label:<w$}")
        };
        writeln!(out, "{label}   {value}")?;
    }
    Ok(())
}

/// An enum as its word on the wire (`running`, `installing_dependencies`).
pub fn word(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// A number as the API's JSON writes it (`0.5`, `4.0`).
pub fn number(x: f64) -> String {
    Value::from(x).to_string()
}

/// An optional string, or "".
pub fn text(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

/// A Unix time as the age kubectl shows (`5s`, `3m`, `2h`, `4d`); "" when
/// unknown (0).
pub fn age(t: Timestamp) -> String {
    if t <= 0 {
        return String::new();
    }
    // Times may be seconds or milliseconds.
    let t = if t > 100_000_000_000 { t / 1000 } else { t };
    duration((lb_model::now() - t).max(0) as u64)
}

/// Seconds as `5s`, `3m`, `2h`, `4d`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let table = Table {
            headers: vec!["NAME", "STATE"],
            rows: vec![
                vec!["web".into(), paint_state("running", true)],
                vec!["database".into(), "x".into()],
            ],
        };
        let mut out = Vec::new();
        write_table(&mut out, &table, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "NAME       STATE\nweb        \x1b[32mrunning\x1b[0m\ndatabase   x\n"
        );
    }

    #[test]
    fn widths_are_columns_without_colour_codes() {
        assert_eq!(width("web"), 3);
        assert_eq!(width(&paint_state("running", true)), 7);
        assert_eq!(width("\x1b[1m日本\x1b[0m-x"), 6);
        assert_eq!(width("e\u{301}"), 1);
    }

    #[test]
    fn words_and_numbers_as_on_the_wire() {
        assert_eq!(
            word(&lb_model::BuildStatus::InstallingDependencies),
            "installing_dependencies"
        );
        assert_eq!(word(&lb_model::ReplicaState::Running), "running");
        assert_eq!(number(4.0), "4.0");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(age(0), "");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(600), "10m");
        assert_eq!(duration(7200), "2h");
        assert_eq!(duration(3 * 86400), "3d");
    }
}
