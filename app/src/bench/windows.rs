//! The windowed topology into PostgreSQL through a broker: records consumed
//! per second until every one is merged into the table, and rows written per
//! second. Runs in a table of its own, dropped afterwards.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use rdkafka::{
    TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use sqlx::PgPool;

use super::{
    Figures,
    e2e::{Setup, feed, first_taken},
};
use crate::topologies::{
    iot_alerts::{SensorReading, SensorType},
    iot_events, iot_windows,
};
use sluice::{
    avro::AvroSchema,
    runtime::{Progress, RunOptions, Workers},
    sink::{DEFAULT_DATABASE, Databases, postgres::Postgres},
    stats::Stats,
    topology::Topology,
    window::WindowSpec,
};

/// Leaves nothing of a run behind in the database: its table, its positions.
pub(super) async fn drop_scratch(pool: &PgPool, table: &str, topology: &str) {
    let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(pool)
        .await;
    let _ = sqlx::query("DELETE FROM sluice_offsets WHERE consumer_group = $1")
        .bind(format!("sluice-{topology}"))
        .execute(pool)
        .await;
}

/// Preloads the bench's readings into `input`, then starts `topology`:
/// its workers, their counters, and when the processor took its first
/// record (the clock of every run).
pub(super) async fn start_preloaded(
    s: &Setup<'_>,
    input: &str,
    topology: Topology,
    databases: Databases,
) -> anyhow::Result<(Workers, Arc<Stats>, Instant)> {
    let payloads = payloads(s, input).await?;
    let opts = RunOptions {
        instance_id: format!("bench-{}", s.run_id),
        databases,
        batch_size: s.batch_size,
        commit_interval: s.commit_interval,
        ..RunOptions::default()
    };
    let (kafka, n, topic) = (s.kafka.clone(), s.records, input.to_string());
    tokio::task::spawn_blocking(move || feed(&kafka, &topic, &payloads, n, 0)).await??;
    let (topology, first) = super::e2e::Stamped::wrap(topology);
    let workers = Workers::spawn(vec![topology], s.kafka, s.codec.clone(), &opts);
    let stats: Arc<Stats> = workers.stats[0].1.clone();
    let started = first_taken(&stats.records_in, &first).await?;
    Ok((workers, stats, started))
}

/// Polls `measure` every `step` until it reaches `n`, for at most 10
/// minutes; `what` names it in the error.
pub(super) async fn wait_for<F, Fut>(
    n: usize,
    what: &str,
    step: Duration,
    mut measure: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<i64>>,
{
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let got = measure().await?;
        if got >= n as i64 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {got} of {n} readings {what} within 10 minutes"
        );
        tokio::time::sleep(step).await;
    }
}

/// What the windowed run measured.
#[derive(Debug, Clone)]
pub struct WindowFigures {
    pub records: u64,
    pub elapsed: Duration,
    pub rows: u64,
    pub commits: u64,
}

impl WindowFigures {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

impl std::fmt::Display for WindowFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<44} {:>9} records {:>8.2} s {:>12.0} records/s   rows written {:>8.0}/s ({} commits)",
            "iot-windows into PostgreSQL, exactly-once",
            self.records,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.rows as f64 / self.elapsed.as_secs_f64(),
            self.commits
        )
    }
}

/// Readings of 1 000 devices × 5 sensors, their event times spread over 40 s
/// of the previous minute, so they fold into one window per key and none is late.
async fn payloads(s: &Setup<'_>, topic: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let now = chrono::Utc::now().timestamp_millis();
    let base = now.div_euclid(60_000) * 60_000 - 55_000;
    let mut out = Vec::new();
    for i in 0..10_000i64 {
        let t = SensorType::ALL[(i % 5) as usize];
        let r = SensorReading {
            device_id: format!("bench-dev-{:04}", (i / 5) % 1000),
            sensor_type: t,
            value: (i % 97) as f64,
            unit: t.unit().to_string(),
            timestamp: base + i * 4,
        };
        out.push((r.device_id.clone(), s.codec.encode(topic, &r).await?));
    }
    Ok(out)
}

pub async fn windows(s: &Setup<'_>, pool: PgPool) -> anyhow::Result<WindowFigures> {
    let (input, _) = s.topics("windows");
    let (dlq, late) = (format!("{input}.dlq"), format!("{input}.late"));
    s.create(&[&input, &dlq, &late]).await?;
    s.register(&input, iot_windows::SOURCE).await?;
    let table = format!("bench_windows_{}", s.run_id);
    sqlx::query(&format!(
        "CREATE TABLE {table} (LIKE sensor_window_aggregates INCLUDING ALL)"
    ))
    .execute(&pool)
    .await?;
    let name = format!("bench-{}-windows", s.run_id);
    let result = run(s, &pool, &name, &input, &table).await;
    s.drop_topics(&[&input, &dlq, &late]).await;
    // Whatever happened, leave nothing behind in the database.
    drop_scratch(&pool, &table, &name).await;
    result
}

async fn run(
    s: &Setup<'_>,
    pool: &PgPool,
    name: &str,
    input: &str,
    table: &str,
) -> anyhow::Result<WindowFigures> {
    let spec = WindowSpec::tumbling(Duration::from_secs(60), Duration::from_secs(10));
    let topology = iot_windows::declare(name, input, table, spec)?;
    let databases = Databases::new().with(DEFAULT_DATABASE, Postgres::new(pool.clone()));
    let (workers, stats, started) = start_preloaded(s, input, topology, databases).await?;
    let (n, sum) = (
        s.records,
        format!("SELECT coalesce(sum(count), 0)::bigint FROM {table}"),
    );
    wait_for(n, "merged", Duration::from_millis(20), || async {
        Ok(sqlx::query_scalar(&sum).fetch_one(pool).await?)
    })
    .await?;
    let elapsed = started.elapsed();
    let figures = WindowFigures {
        records: n as u64,
        elapsed,
        rows: stats.window_rows.load(Ordering::Relaxed),
        commits: stats.commits.load(Ordering::Relaxed),
    };
    workers.stop(Duration::from_secs(30)).await?;
    Ok(figures)
}

/// Final windows (`iot-events`' windows alone): the same readings into windows emitted once
/// final to a topic, exactly-once. Timed until every reading is committed
/// (its windows open, in the transaction's offsets); then, untimed, the
/// windows close by idleness and their counts must add up to the readings.
pub async fn final_windows(s: &Setup<'_>) -> anyhow::Result<Figures> {
    let (input, output) = s.topics("final-windows");
    let (dlq, late) = (format!("{input}.dlq"), format!("{input}.late"));
    s.create(&[&input, &output, &dlq, &late]).await?;
    s.register(&input, iot_windows::SOURCE).await?;
    s.register(&output, iot_events::WINDOWS).await?;
    let result = run_final(s, &input, &output).await;
    s.drop_topics(&[&input, &output, &dlq, &late]).await;
    result
}

async fn run_final(s: &Setup<'_>, input: &str, output: &str) -> anyhow::Result<Figures> {
    let spec = WindowSpec {
        idle_timeout: Duration::from_secs(2),
        ..WindowSpec::tumbling(Duration::from_secs(60), Duration::from_secs(10))
    };
    let name = format!("bench-{}-final-windows", s.run_id);
    let topology = iot_events::declare_windows(&name, input, output, spec)?;
    let (workers, _, started) = start_preloaded(s, input, topology, Databases::new()).await?;
    // Committed means in the group's offsets: their metadata says how far
    // each partition was processed.
    let offsets: BaseConsumer = s.kafka.consumer(&format!("sluice-{name}")).create()?;
    let n = s.records;
    wait_for(n, "committed", Duration::from_millis(5), || async {
        processed(&offsets, input, s.partitions)
    })
    .await?;
    let figures = Figures::throughput(
        "final windows to a topic, exactly-once",
        n as u64,
        started.elapsed(),
    );
    let counted = counted_in_windows(s, output, n as u64).await;
    workers.stop(Duration::from_secs(30)).await?;
    let counted = counted?;
    anyhow::ensure!(
        counted == n as u64,
        "the final windows count {counted} readings, not {n}"
    );
    Ok(figures)
}

/// How many records of `topic` the group's commits say were processed.
fn processed(offsets: &BaseConsumer, topic: &str, partitions: i32) -> anyhow::Result<i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed =
        sluice::kafka::blocking(|| offsets.committed_offsets(tpl, Duration::from_secs(10)))?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| Progress::parse(e.metadata()))
        .map(|p| p.processed)
        .sum())
}

/// The readings counted by the final windows on `topic`, read_committed,
/// once they add up to `want` (or after 60 s).
async fn counted_in_windows(s: &Setup<'_>, topic: &str, want: u64) -> anyhow::Result<u64> {
    use rdkafka::{
        Message,
        consumer::{Consumer, StreamConsumer},
    };
    let consumer: StreamConsumer = s
        .kafka
        .consumer(&format!("bench-{}-final-reader", s.run_id))
        .create()?;
    consumer.subscribe(&[topic])?;
    let reader = sluice::avro::Reader::new(apache_avro::Schema::parse_str(
        iot_events::SensorWindowAggregate::SCHEMA,
    )?);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut counted = 0u64;
    while counted < want {
        let Ok(m) = tokio::time::timeout_at(deadline, consumer.recv()).await else {
            break;
        };
        let m = m?;
        let (_, w) = s
            .codec
            .decode::<iot_events::SensorWindowAggregate>(m.payload().unwrap_or_default(), &reader)
            .await?;
        counted += w.count as u64;
    }
    Ok(counted)
}
