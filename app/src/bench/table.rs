//! What a table row costs in memory: a million small rows (the shipped
//! `DeviceInfo`, keyed by device id, Avro in the wire format as the topic
//! holds them) applied to a table as its reader applies them, and the
//! process's resident memory before and after.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sluice::{
    avro::{AvroCodec, AvroSchema, Reader},
    table::LiveTable,
};

use crate::topologies::iot_enriched::DeviceInfo;

/// Resident memory of this process, bytes (Linux).
fn resident() -> Option<u64> {
    super::compare::child::resident(std::process::id())
}

pub struct TableMemory {
    pub rows: usize,
    pub grew: Option<u64>,
    pub resident: Option<u64>,
    pub took: Duration,
}

impl std::fmt::Display for TableMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = |b: u64| b as f64 / 1e6;
        match (self.grew, self.resident) {
            (Some(grew), Some(total)) => write!(
                f,
                "table memory: {} rows of DeviceInfo (device id key, site, model) took {:.0} MB resident, {} bytes per row; process {:.0} MB; applied in {:.2} s",
                self.rows,
                mb(grew),
                grew / self.rows.max(1) as u64,
                mb(total),
                self.took.as_secs_f64()
            ),
            _ => write!(
                f,
                "table memory: resident memory not readable here (/proc/self/status)"
            ),
        }
    }
}

pub async fn run(rows: usize) -> anyhow::Result<TableMemory> {
    const TOPIC: &str = "bench-devices";
    let schema = apache_avro::Schema::parse_str(DeviceInfo::SCHEMA)?;
    let codec = AvroCodec::in_memory(&[(TOPIC.to_string(), DeviceInfo::SCHEMA.to_string())])?;
    let before = resident();
    let started = Instant::now();
    let reader = Arc::new(Reader::new(schema.clone()));
    let table = LiveTable::<DeviceInfo>::new(TOPIC, sluice::table::DEFAULT_RETENTION, reader);
    let at = 1_800_000_000_000;
    let mut batch = Vec::with_capacity(512);
    for i in 0..rows {
        let id = format!("device-{i:07}");
        let row = DeviceInfo {
            device_id: id.clone(),
            site: format!("plant-{}", i % 16),
            model: Some(format!("sim-{}", i % 3 + 1)),
            temperature_max: None,
            humidity_max: None,
        };
        let value = codec.encode(TOPIC, &row).await?;
        batch.push((0, id.into_bytes().into_boxed_slice(), at, Some(value)));
        if batch.len() == 512 {
            table.apply(batch.drain(..));
        }
    }
    table.apply(batch.drain(..));
    let took = started.elapsed();
    let after = resident();
    let out = TableMemory {
        rows,
        grew: before.zip(after).map(|(b, a)| a.saturating_sub(b)),
        resident: after,
        took,
    };
    drop(table);
    Ok(out)
}
