//! `iot-readings` into PostgreSQL through a broker: records consumed per
//! second until every one is a row of the table. Runs in a table of its own,
//! dropped afterwards.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::{
    Figures,
    e2e::{Setup, feed, first_taken},
};
use crate::topologies::{iot_readings, iot_windows};
use sluice::{
    runtime::{RunOptions, Workers},
    sink::Stores,
};

pub async fn readings(s: &Setup<'_>, pool: PgPool) -> anyhow::Result<Figures> {
    let (input, _) = s.topics("readings");
    let dlq = format!("{input}.dlq");
    s.create(&[&input, &dlq]).await?;
    super::windows::register(s, &input, iot_windows::SOURCE).await?;
    let table = format!("bench_readings_{}", s.run_id);
    let name = format!("bench-{}-readings", s.run_id);
    let result = run(s, &pool, &name, &input, &table).await;
    s.drop_topics(&[&input, &dlq]).await;
    // Whatever happened, leave nothing behind in the database.
    super::windows::drop_scratch(&pool, &table, &name).await;
    result
}

async fn run(
    s: &Setup<'_>,
    pool: &PgPool,
    name: &str,
    input: &str,
    table: &str,
) -> anyhow::Result<Figures> {
    let payloads = super::windows::payloads(s, input).await?;
    let topology = iot_readings::declare(name, input, table)?;
    let opts = RunOptions {
        instance_id: format!("bench-{}", s.run_id),
        stores: Some(Stores::Postgres(pool.clone())),
        batch_size: s.batch_size,
        commit_interval: s.commit_interval,
        ..RunOptions::default()
    };
    let (kafka, n, topic) = (s.kafka.clone(), s.records, input.to_string());
    tokio::task::spawn_blocking(move || feed(&kafka, &topic, &payloads, n, 0)).await??;
    let (topology, first) = super::e2e::Stamped::wrap(topology);
    let workers = Workers::spawn(vec![topology], s.kafka, s.codec.clone(), &opts);
    let stats = workers.stats[0].1.clone();
    let started = first_taken(&stats.records_in, &first).await?;
    // The sink creates the table when it starts; until then there is none.
    let count = format!("SELECT count(*) FROM {table}");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let stored: i64 = sqlx::query_scalar(&count)
            .fetch_one(pool)
            .await
            .unwrap_or(0);
        if stored >= n as i64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {stored} of {n} readings stored within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let figures = Figures::throughput(
        "iot-readings into PostgreSQL, exactly-once",
        n as u64,
        started.elapsed(),
    );
    workers.stop(Duration::from_secs(30)).await?;
    let stored: i64 = sqlx::query_scalar(&count).fetch_one(pool).await?;
    anyhow::ensure!(
        stored == n as i64,
        "{stored} rows for {n} readings: a reading was stored twice"
    );
    Ok(figures)
}
