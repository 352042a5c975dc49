//! `iot-readings` into PostgreSQL through a broker: records consumed per
//! second until every one is a row of the table. Runs in a table of its own,
//! dropped afterwards.

use std::time::Duration;

use sqlx::PgPool;

use super::{
    Figures,
    e2e::Setup,
    windows::{start_preloaded, wait_for},
};
use crate::topologies::{iot_readings, iot_windows};
use sluice::sink::{DEFAULT_DATABASE, Databases, postgres::Postgres};

pub async fn readings(s: &Setup<'_>, pool: PgPool) -> anyhow::Result<Figures> {
    let (input, _) = s.topics("readings");
    let dlq = format!("{input}.dlq");
    s.create(&[&input, &dlq]).await?;
    s.register(&input, iot_windows::SOURCE).await?;
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
    let topology = iot_readings::declare(name, input, table)?;
    let databases = Databases::new().with(DEFAULT_DATABASE, Postgres::new(pool.clone()));
    let (workers, _, started) = start_preloaded(s, input, topology, databases).await?;
    // The sink creates the table when it starts; until then there is none.
    let (n, count) = (s.records, format!("SELECT count(*) FROM {table}"));
    wait_for(n, "stored", Duration::from_millis(20), || async {
        Ok(sqlx::query_scalar(&count)
            .fetch_one(pool)
            .await
            .unwrap_or(0))
    })
    .await?;
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
