//! `sluice dlq inspect` and `sluice dlq replay`.

use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};

use super::args::{KafkaArgs, RegistryArgs};
use crate::ops::{
    inspect::Summary,
    read::{self, ReadOptions, Start},
    replay::{self, Copied, ReplayOptions},
};
use sluice::avro::AvroCodec;

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Sum up a dead-letter (`<source>.dlq`) or late (`<source>.late`) topic:
    /// letters by reason and by source partition, the time range, and the
    /// first letters of each reason with their message and value.
    Inspect(InspectArgs),
    /// Copy chosen letters back to their source topic, exactly once: the
    /// copies and the replay's own group offsets commit in one transaction,
    /// so running it again copies nothing twice.
    Replay(ReplayArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummaryFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The dead-letter or late topic.
    topic: String,
    /// How many letters of each reason to show.
    #[arg(long, default_value_t = 3)]
    first: usize,
    #[arg(long, value_enum, default_value = "table")]
    format: SummaryFormat,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The dead-letter or late topic.
    topic: String,
    /// Only letters of this reason (`sluice.error.kind`, as `dlq inspect`
    /// lists them; repeatable); default: every reason.
    #[arg(long = "reason", value_name = "REASON")]
    reasons: Vec<String>,
    /// Only letters whose record time is at or after this: a duration ago
    /// (15m, 2h) or an RFC 3339 time.
    #[arg(long, value_parser = super::output::instant)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only letters whose record time is before this.
    #[arg(long, value_parser = super::output::instant)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// Print what would be copied; copy and commit nothing.
    #[arg(long)]
    dry_run: bool,
    /// The replay's consumer group (and transactional id): where it left
    /// off. Default: sluice-replay.<topic>.<reasons, or all>. Letters it
    /// passes over (other reasons, outside --since/--until) are behind it
    /// for good; another group sees them again.
    #[arg(long, env = "SLUICE_REPLAY_GROUP")]
    group: Option<String>,
    /// Letters per transaction.
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Also copy letters of earlier copies that failed again (they carry
    /// sluice.replayed.from); left by default, so replays do not loop.
    #[arg(long)]
    include_replayed: bool,
    /// Print each copied letter as a JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    kafka: KafkaArgs,
}

pub async fn run(cmd: DlqCommand) -> anyhow::Result<()> {
    match cmd {
        DlqCommand::Inspect(args) => inspect(args).await,
        DlqCommand::Replay(args) => replay_cmd(args).await,
    }
}

async fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let kafka = args.kafka.config()?;
    let codec = Arc::new(AvroCodec::new(&args.registry.config()?)?);
    let opts = ReadOptions {
        start: Start::Beginning,
        follow: false,
        committed: true,
        group: None,
    };
    let (mut rx, reading) = read::spawn(kafka, args.topic.clone(), opts);
    let mut summary = Summary::new(&args.topic, args.first);
    while let Some(m) = rx.recv().await {
        summary.add(&codec, &m).await;
    }
    reading.await??;
    match args.format {
        SummaryFormat::Json => println!("{}", serde_json::to_string_pretty(&summary.to_json())?),
        SummaryFormat::Table => print!("{}", summary.to_table()),
    }
    Ok(())
}

async fn replay_cmd(args: ReplayArgs) -> anyhow::Result<()> {
    if let (Some(s), Some(u)) = (args.since, args.until)
        && s >= u
    {
        anyhow::bail!("--since must be before --until");
    }
    let kafka = args.kafka.config()?;
    let opts = ReplayOptions {
        group: args
            .group
            .clone()
            .unwrap_or_else(|| replay::default_group(&args.topic, &args.reasons)),
        reasons: args.reasons.clone(),
        since_ms: args.since.map(|t| t.timestamp_millis()),
        until_ms: args.until.map(|t| t.timestamp_millis()),
        dry_run: args.dry_run,
        include_replayed: args.include_replayed,
        batch: args.batch,
    };
    let (topic, json, dry) = (args.topic.clone(), args.json, args.dry_run);
    let group = opts.group.clone();
    let report = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // A closed pipe (`| head`) ends the printing, not the replay.
        let mut print = move |line: String| {
            let _ = writeln!(out, "{line}");
        };
        replay::replay(&kafka, &topic, &opts, |c: &Copied| {
            let to = match c.to_partition {
                Some(p) => format!("{}/{p}", c.to_topic),
                None => c.to_topic.clone(),
            };
            if json {
                let line = serde_json::json!({
                    "letter": format!("{topic}/{}/{}", c.letter.0, c.letter.1),
                    "reason": c.reason,
                    "to": to,
                    "dry_run": dry,
                });
                print(line.to_string());
            } else {
                let verb = if dry { "would copy" } else { "copied" };
                print(format!(
                    "{verb} {topic}/{}/{} ({}) → {to}",
                    c.letter.0, c.letter.1, c.reason
                ));
            }
        })
    })
    .await??;
    let total: u64 = report.copied.values().sum();
    let passed: u64 = report.passed_over.values().sum();
    let verb = if args.dry_run { "would copy" } else { "copied" };
    eprintln!(
        "{verb} {total} letter(s) from {} {:?}; passed over {passed} {:?}; group {group}",
        args.topic, report.copied, report.passed_over
    );
    Ok(())
}
