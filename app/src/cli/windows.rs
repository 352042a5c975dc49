//! `sluice windows query`.

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};

use sluice::{
    db,
    sink::query::{self, AggregateRow, Filter},
};

#[derive(Debug, Subcommand)]
pub enum WindowsCommand {
    /// Print window aggregates from PostgreSQL, newest first.
    Query(QueryArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Only this device.
    #[arg(long)]
    device: Option<String>,
    /// Only this sensor type (temperature, humidity, pressure, motion, light).
    #[arg(long)]
    sensor_type: Option<crate::topologies::iot_alerts::SensorType>,
    /// Windows starting at or after this: a duration ago (90s, 15m, 1h, 2d) or an RFC 3339 time.
    #[arg(long, value_parser = instant, default_value = "1h")]
    since: DateTime<Utc>,
    /// Windows starting before this: a duration ago or an RFC 3339 time (default: no bound).
    #[arg(long, value_parser = instant)]
    until: Option<DateTime<Utc>>,
    /// Only windows past their grace period, whose values will not change.
    #[arg(long)]
    final_only: bool,
    /// At most this many rows.
    #[arg(long, default_value_t = 100)]
    limit: i64,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// The aggregates table.
    #[arg(long, default_value = "sensor_window_aggregates")]
    table: String,
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

/// `1h` (that long ago) or `2026-11-22T10:00:00Z`.
fn instant(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(s).map_err(|_| {
        format!("{s:?} is neither a duration (90s, 15m, 1h, 2d) nor an RFC 3339 time (2026-11-22T10:00:00Z)")
    })?;
    let ago = chrono::Duration::from_std(ago).map_err(|e| e.to_string())?;
    Ok(Utc::now() - ago)
}

pub async fn run(cmd: WindowsCommand) -> anyhow::Result<()> {
    let WindowsCommand::Query(args) = cmd;
    if args.limit < 1 {
        anyhow::bail!("--limit must be at least 1");
    }
    let pool = db::connect(&args.database_url).await?;
    let filter = Filter {
        device: args.device,
        sensor_type: args.sensor_type.map(|t| t.as_str().to_string()),
        since: Some(args.since),
        until: args.until,
        final_only: args.final_only,
        limit: args.limit,
    };
    let rows = query::query(&pool, &args.table, &filter).await?;
    print!("{}", render(&rows, args.format)?);
    Ok(())
}

const HEADER: [&str; 10] = [
    "device_id",
    "sensor_type",
    "window_start",
    "window_end",
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "is_final",
];

fn cells(r: &AggregateRow) -> [String; 10] {
    [
        r.device_id.clone(),
        r.sensor_type.clone(),
        r.window_start.to_rfc3339(),
        r.window_end.to_rfc3339(),
        r.count.to_string(),
        format!("{:.2}", r.sum),
        format!("{:.2}", r.min),
        format!("{:.2}", r.max),
        format!("{:.2}", r.avg),
        r.is_final.to_string(),
    ]
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn render(rows: &[AggregateRow], format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(rows)? + "\n",
        Format::Csv => {
            let mut out = HEADER.join(",") + "\n";
            for r in rows {
                let line: Vec<String> = cells(r).iter().map(|c| csv_field(c)).collect();
                out += &(line.join(",") + "\n");
            }
            out
        }
        Format::Table => {
            let body: Vec<[String; 10]> = rows.iter().map(cells).collect();
            let widths: Vec<usize> = (0..10)
                .map(|i| {
                    body.iter()
                        .map(|r| r[i].len())
                        .chain([HEADER[i].len()])
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
            let mut out = line(&HEADER.map(String::from));
            body.iter().for_each(|r| out += &line(r));
            if rows.is_empty() {
                out += "(no windows match)\n";
            }
            out
        }
    })
}
