//! The user-login topology without a broker: decode → validate → map → encode.

use std::time::{Duration, Instant};

use super::Figures;
use crate::{simulate::logins::Generator, topologies::user_login};
use sluice::{
    avro::{AvroCodec, RegistryConfig},
    registry::{self},
    schemas,
    topology::Input,
};

/// Processes `records` pre-encoded valid logins on the current task (one core).
pub async fn run(records: usize) -> anyhow::Result<Figures> {
    let reg = registry::spawn_preloaded(&schemas::files(&crate::topologies::schemas())).await?;
    let config = RegistryConfig::new(&reg.url(), None)?;
    let codec = AvroCodec::new(&config)?;
    let topology = user_login::build()?;
    let mut generator = Generator::new(3, 0.0);
    let now = chrono::Utc::now().timestamp();
    let mut inputs = Vec::with_capacity(4096);
    for _ in 0..4096 {
        inputs.push(
            codec
                .encode(user_login::SOURCE, &generator.valid(now))
                .await?,
        );
    }
    let processor = topology.processor().clone();
    let mut out = Vec::with_capacity(4);
    let mut latencies = Vec::with_capacity(records);
    // The first 10 000 warm the schema caches and are not counted.
    let mut started = Instant::now();
    for i in 0..records + 10_000 {
        if i == 10_000 {
            latencies.clear();
            started = Instant::now();
        }
        let input = Input {
            key: None,
            value: Some(&inputs[i % inputs.len()]),
            timestamp_ms: 0,
        };
        out.clear();
        // Timing every record would cost as much as some operators; every
        // 16th is plenty for percentiles.
        if i % 16 == 0 {
            let t = Instant::now();
            step(&*processor, &codec, input, &mut out).await?;
            latencies.push(t.elapsed());
        } else {
            step(&*processor, &codec, input, &mut out).await?;
        }
    }
    let elapsed = started.elapsed();
    reg.stop().await?;
    let mut figures = Figures::from_latencies(
        "in-process user-login (1 core, no broker)",
        elapsed.max(Duration::from_nanos(1)),
        latencies,
    );
    figures.records = records as u64;
    Ok(figures)
}

/// What the worker does per record: process, asking the registry for a
/// schema not cached yet.
async fn step(
    processor: &dyn sluice::topology::Processor,
    codec: &AvroCodec,
    input: Input<'_>,
    out: &mut Vec<sluice::topology::Emitted>,
) -> Result<(), sluice::topology::Failure> {
    loop {
        match processor.process(codec, input, out) {
            Err(sluice::topology::Failure::Missing(m)) => {
                sluice::topology::fetch_missing(codec, processor, input, &m).await?
            }
            done => return done,
        }
    }
}
