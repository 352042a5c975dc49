//! How the query commands print: an aligned table, JSON or CSV; and the
//! instants they take.

use chrono::{DateTime, Utc};
use clap::ValueEnum;
use serde::Serialize;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// `1h` (that long ago) or `2026-11-22T10:00:00Z`.
pub fn instant(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(s).map_err(|_| {
        format!("{s:?} is neither a duration (90s, 15m, 1h, 2d) nor an RFC 3339 time (2026-11-22T10:00:00Z)")
    })?;
    let ago = chrono::Duration::from_std(ago).map_err(|e| e.to_string())?;
    Ok(Utc::now() - ago)
}

/// `COLUMN=VALUE`, for the column filters.
pub fn column_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!(
            "expected COLUMN=VALUE (e.g. device_id=device-001), got {s:?}"
        )),
    }
}

/// The column filters, once `--limit` is checked.
pub fn filters(equals: Vec<(String, String)>, limit: i64) -> anyhow::Result<Vec<(String, String)>> {
    if limit < 1 {
        anyhow::bail!("--limit must be at least 1");
    }
    Ok(equals)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `body` (cells as text, in `header`'s order) as a table or CSV, or
/// `rows` as JSON.
pub fn render(
    header: &[String],
    body: &[Vec<String>],
    rows: &(impl Serialize + ?Sized),
    format: Format,
    none: &str,
) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(rows)? + "\n",
        Format::Csv => {
            let mut out = header.join(",") + "\n";
            for r in body {
                let line: Vec<String> = r.iter().map(|c| csv_field(c)).collect();
                out += &(line.join(",") + "\n");
            }
            out
        }
        Format::Table => {
            let widths: Vec<usize> = (0..header.len())
                .map(|i| {
                    body.iter()
                        .map(|r| r[i].len())
                        .chain([header[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cols: &[String]| {
                cols.iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
                    + "\n"
            };
            let mut out = line(header);
            body.iter().for_each(|r| out += &line(r));
            if body.is_empty() {
                out += none;
                out += "\n";
            }
            out
        }
    })
}
