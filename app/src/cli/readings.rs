//! `sluice readings query`: rows of a row table (`sensor_readings`), newest
//! first.

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use sluice::{
    db,
    sink::{
        Table,
        query::{self, RowFilter, RowRecord},
        rows::{INGESTED_AT, RowSpec, SOURCE_OFFSET, SOURCE_PARTITION},
        table::TableName,
    },
};
use sluice_cli::{
    Catalog,
    output::{self, Format, instant},
};

#[derive(Debug, Subcommand)]
pub enum ReadingsCommand {
    /// Print stored readings from PostgreSQL, newest first.
    Query(QueryArgs),
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Only this device (the `device_id` column).
    #[arg(long)]
    device: Option<String>,
    /// Only this sensor type (the `sensor_type` column).
    #[arg(long)]
    sensor_type: Option<crate::topologies::iot_alerts::SensorType>,
    /// Only rows whose column COLUMN has VALUE (repeatable).
    #[arg(long = "where", value_name = "COLUMN=VALUE", value_parser = output::column_value)]
    equals: Vec<(String, String)>,
    /// The topology whose row table to read (its columns).
    #[arg(long, default_value = crate::topologies::iot_readings::NAME)]
    topology: String,
    /// Rows at or after this event time: a duration ago (90s, 15m, 1h, 2d) or an RFC 3339 time.
    #[arg(long, value_parser = instant, default_value = "1h")]
    since: DateTime<Utc>,
    /// Rows before this event time: a duration ago or an RFC 3339 time (default: no bound).
    #[arg(long, value_parser = instant)]
    until: Option<DateTime<Utc>>,
    /// At most this many rows.
    #[arg(long, default_value_t = 100)]
    limit: i64,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// The table (default: the topology's).
    #[arg(long)]
    table: Option<String>,
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

pub async fn run(catalog: &Catalog, cmd: ReadingsCommand) -> anyhow::Result<()> {
    let ReadingsCommand::Query(args) = cmd;
    let equals = super::windows::filters(args.equals, args.device, args.sensor_type, args.limit)?;
    let spec = table_of(catalog, &args.topology, args.table.as_deref())?;
    let pool = db::connect(&args.database_url).await?;
    let filter = RowFilter {
        equals,
        since: Some(args.since),
        until: args.until,
        limit: args.limit,
    };
    let rows = query::query_rows(&pool, &spec, &filter).await?;
    print!("{}", render(&spec, &rows, args.format)?);
    Ok(())
}

/// The row spec of a topology, under another table name if given.
fn table_of(catalog: &Catalog, topology: &str, table: Option<&str>) -> anyhow::Result<RowSpec> {
    let topologies = catalog.select(&[topology.to_string()], &Default::default())?;
    let found = topologies[0].tables().into_iter().find_map(|t| match t {
        Table::Rows(s) => Some((*s).clone()),
        Table::Windows(_) => None,
    });
    let Some(mut spec) = found else {
        anyhow::bail!(
            "topology {topology} writes no row table; name one that does with --topology (e.g. {})",
            crate::topologies::iot_readings::NAME
        );
    };
    if let Some(name) = table {
        spec.table = TableName::parse(name).map_err(|e| anyhow::anyhow!("--table: {e}"))?;
    }
    Ok(spec)
}

pub fn render(spec: &RowSpec, rows: &[RowRecord], format: Format) -> anyhow::Result<String> {
    let mut header: Vec<String> = spec.names().into_iter().map(String::from).collect();
    header.extend([SOURCE_PARTITION, SOURCE_OFFSET, INGESTED_AT].map(String::from));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c: Vec<String> = r.columns.iter().map(|(_, v)| RowRecord::text(v)).collect();
            c.extend([
                r.source_partition.to_string(),
                r.source_offset.to_string(),
                RowRecord::time(r.ingested_at),
            ]);
            c
        })
        .collect();
    output::render(&header, &body, rows, format, "(no rows match)")
}
