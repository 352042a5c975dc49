//! `sluice tail TOPIC`: records as JSON lines or a table, values decoded
//! through the registry.

use std::sync::Arc;

use clap::{Args, ValueEnum};

use super::args::{KafkaArgs, RegistryArgs};
use crate::ops::{
    read::{self, ReadOptions, Start},
    view,
};
use sluice::avro::AvroCodec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TailFormat {
    /// One JSON object per line.
    Json,
    /// partition:offset, time, key, value (and headers with --headers).
    Table,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The topic to read.
    topic: String,
    /// From each partition's first record (default: its last --count, or 10).
    #[arg(long, conflicts_with_all = ["from", "offset"])]
    from_beginning: bool,
    /// From the first record at or after this time: a duration ago (15m,
    /// 2h) or an RFC 3339 time.
    #[arg(long, value_parser = super::output::instant, conflicts_with = "offset")]
    from: Option<chrono::DateTime<chrono::Utc>>,
    /// Only partition P, from offset O (repeatable).
    #[arg(long, value_name = "P:O", value_parser = partition_offset)]
    offset: Vec<(i32, i64)>,
    /// Keep reading new records (stop with Ctrl-C).
    #[arg(long, short)]
    follow: bool,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    count: Option<u64>,
    #[arg(long, value_enum, default_value = "json")]
    format: TailFormat,
    /// Show headers in the table (JSON lines always have them).
    #[arg(long)]
    headers: bool,
    /// Also show records of aborted and open transactions.
    #[arg(long)]
    read_uncommitted: bool,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// `P:O`, for --offset.
fn partition_offset(s: &str) -> Result<(i32, i64), String> {
    let parsed = s
        .split_once(':')
        .and_then(|(p, o)| Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?)));
    match parsed {
        Some((p, o)) if p >= 0 && o >= 0 => Ok((p, o)),
        _ => Err(format!(
            "expected PARTITION:OFFSET with both numbers at least 0 (e.g. 0:1200), got {s:?}"
        )),
    }
}

const DEFAULT_LAST: i64 = 10;

pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let start = if args.from_beginning {
        Start::Beginning
    } else if let Some(t) = args.from {
        Start::Time(t.timestamp_millis())
    } else if !args.offset.is_empty() {
        Start::Offsets(args.offset.clone())
    } else {
        Start::Last(args.count.map_or(DEFAULT_LAST, |n| n as i64))
    };
    let opts = ReadOptions {
        start,
        follow: args.follow,
        committed: !args.read_uncommitted,
        group: None,
    };
    let kafka = args.kafka.config()?;
    let codec = Arc::new(AvroCodec::new(&args.registry.config()?)?);
    let (mut rx, reading) = read::spawn(kafka, args.topic.clone(), opts);
    let shutdown = super::shutdown_signal();
    tokio::pin!(shutdown);
    let mut shown = 0u64;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // Whether the reader ended by itself (at the end, or failing): then its
    // outcome is awaited; stopped early, it is left blocked in its poll.
    let mut reader_ended = false;
    loop {
        if args.count.is_some_and(|n| shown >= n) {
            break;
        }
        let m = tokio::select! {
            _ = &mut shutdown => break,
            m = rx.recv() => match m {
                Some(m) => m,
                None => {
                    reader_ended = true;
                    break;
                }
            },
        };
        let record = view::to_json(&codec, &m).await;
        let line = match args.format {
            TailFormat::Json => record.to_string(),
            TailFormat::Table => view::to_row(&record, args.headers),
        };
        if writeln!(out, "{line}").is_err() {
            // A closed pipe (`| head`) ends the tail.
            break;
        }
        shown += 1;
    }
    drop(rx);
    if reader_ended {
        reading.await??;
    }
    Ok(())
}
