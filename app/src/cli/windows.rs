//! `sluice windows query`.

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use sluice_cli::{
    Catalog,
    output::{self, Format, instant},
};

use sluice::{
    db,
    sink::{
        Table, TableSpec,
        query::{self, Filter, QueryRow},
        table::{TableName, Value},
    },
};

#[derive(Debug, Subcommand)]
pub enum WindowsCommand {
    /// Print window aggregates from PostgreSQL, newest first.
    Query(QueryArgs),
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Only this device (the `device_id` key column).
    #[arg(long)]
    device: Option<String>,
    /// Only this sensor type (temperature, humidity, pressure, motion, light;
    /// the `sensor_type` key column).
    #[arg(long)]
    sensor_type: Option<crate::topologies::iot_alerts::SensorType>,
    /// Only rows whose key column COLUMN has VALUE (repeatable).
    #[arg(long = "key", value_name = "COLUMN=VALUE", value_parser = output::column_value)]
    keys: Vec<(String, String)>,
    /// The windowed topology whose table to read (its columns).
    #[arg(long, default_value = crate::topologies::iot_windows::NAME)]
    topology: String,
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
    /// The aggregates table (default: the topology's).
    #[arg(long)]
    table: Option<String>,
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

pub async fn run(catalog: &Catalog, cmd: WindowsCommand) -> anyhow::Result<()> {
    let WindowsCommand::Query(args) = cmd;
    let keys = filters(args.keys, args.device, args.sensor_type, args.limit)?;
    let spec = table_of(catalog, &args.topology, args.table.as_deref())?;
    let pool = db::connect(&args.database_url).await?;
    let filter = Filter {
        keys,
        since: Some(args.since),
        until: args.until,
        final_only: args.final_only,
        limit: args.limit,
    };
    let rows = query::query(&pool, &spec, &filter).await?;
    print!("{}", render(&spec, &rows, args.format)?);
    Ok(())
}

/// The table spec of a windowed topology, under another table name if given.
fn table_of(catalog: &Catalog, topology: &str, table: Option<&str>) -> anyhow::Result<TableSpec> {
    let topologies = catalog.select(&[topology.to_string()], &Default::default())?;
    let found = topologies[0].tables().into_iter().find_map(|t| match t {
        Table::Windows(s) => Some((*s).clone()),
        Table::Rows(_) => None,
    });
    let Some(mut spec) = found else {
        anyhow::bail!(
            "topology {topology} writes no window table; name a windowed one with --topology"
        );
    };
    if let Some(name) = table {
        spec.table = TableName::parse(name).map_err(|e| anyhow::anyhow!("--table: {e}"))?;
    }
    Ok(spec)
}

fn header(spec: &TableSpec) -> Vec<String> {
    let mut h: Vec<String> = spec
        .keys
        .iter()
        .map(|k| k.name.as_str().to_string())
        .collect();
    h.extend(["window_start".into(), "window_end".into()]);
    h.extend(spec.aggregates.iter().map(|a| a.name.as_str().to_string()));
    h.push("is_final".into());
    h
}

fn cells(r: &QueryRow) -> Vec<String> {
    let mut c: Vec<String> = r.keys.iter().map(|(_, v)| v.clone()).collect();
    c.extend([r.window_start.to_rfc3339(), r.window_end.to_rfc3339()]);
    c.extend(r.aggregates.iter().map(|(_, v)| match v {
        Value::Int(n) => n.to_string(),
        Value::Float(x) => format!("{x:.2}"),
    }));
    c.push(r.is_final.to_string());
    c
}

pub fn render(spec: &TableSpec, rows: &[QueryRow], format: Format) -> anyhow::Result<String> {
    let body: Vec<Vec<String>> = rows.iter().map(cells).collect();
    output::render(&header(spec), &body, rows, format, "(no windows match)")
}

/// The column filters with `--device` and `--sensor-type` added, once
/// `--limit` is checked.
pub fn filters(
    mut equals: Vec<(String, String)>,
    device: Option<String>,
    sensor_type: Option<crate::topologies::iot_alerts::SensorType>,
    limit: i64,
) -> anyhow::Result<Vec<(String, String)>> {
    equals = output::filters(equals, limit)?;
    if let Some(d) = device {
        equals.push(("device_id".into(), d));
    }
    if let Some(t) = sensor_type {
        equals.push(("sensor_type".into(), t.as_str().to_string()));
    }
    Ok(equals)
}
