//! After a timed run: is the output exactly what the input asks for, each
//! record once? Read back with read_committed, and counted again with
//! read_uncommitted, where records of aborted transactions show up as
//! extra ones.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use rdkafka::{Message, consumer::Consumer};

use super::{
    child::Watched,
    run::{Bench, Processor, Topics, preload},
    stream::{Stream, Work, login_count, login_seq, sentinel, seq_id, site_of},
};
use crate::topologies::{iot_enriched::EnrichedReading, iot_events::SensorWindowAggregate};
use sluice::avro::AvroSchema;

pub async fn output(
    b: &Bench<'_>,
    work: Work,
    stream: &Stream,
    who: Processor,
    t: &Topics,
    child: &mut Watched,
) -> anyhow::Result<usize> {
    let name = who.label(work);
    match work {
        Work::Enriched | Work::Unjoined => enriched(b, work, stream, name, t).await,
        Work::Logins => {
            let want = stream.records + if b.rate > 0 { b.latency_records } else { 0 };
            let mut seen = vec![0u8; want];
            let mut other = 0usize;
            for_all(b, t, "read_committed", |m| {
                if m.topic() != t.output || sentinel(m.key()).is_some() {
                    return;
                }
                match m
                    .payload()
                    .and_then(login_seq)
                    .and_then(|s| seen.get_mut(s))
                {
                    Some(n) => *n = n.saturating_add(1),
                    None => other += 1,
                }
            })
            .await?;
            let missing = seen.iter().filter(|&&n| n == 0).count();
            let twice = seen.iter().filter(|&&n| n > 1).count();
            anyhow::ensure!(
                missing == 0 && twice == 0 && other == 0,
                "{name}: of {want} logins offered, {missing} missing and {twice} more than once \
                 on {} (read_committed), {other} unknown records",
                t.output
            );
            let mut all = 0usize;
            for_all(b, t, "read_uncommitted", |m| {
                if m.topic() == t.output && sentinel(m.key()).is_none() {
                    all += 1;
                }
            })
            .await?;
            Ok(all.saturating_sub(want))
        }
        Work::Counts => {
            // Each locale's updates in order: 1, 2, … its logins; the
            // latency pass's logins have a locale each.
            let mut want: HashMap<String, u64> = stream.locales.clone();
            let offered = if b.rate > 0 { b.latency_records } else { 0 };
            for i in stream.records..stream.records + offered {
                want.insert(seq_id(i), 1);
            }
            let mut updates: HashMap<String, Vec<i64>> = HashMap::new();
            let mut other = 0usize;
            for_all(b, t, "read_committed", |m| {
                if m.topic() != t.output || sentinel(m.key()).is_some() {
                    return;
                }
                match m.payload().and_then(login_count) {
                    Some((locale, n)) => updates.entry(locale).or_default().push(n),
                    None => other += 1,
                }
            })
            .await?;
            let wrong = want
                .iter()
                .filter(|(locale, n)| {
                    let expected: Vec<i64> = (1..=**n as i64).collect();
                    updates.get(*locale) != Some(&expected)
                })
                .count();
            let unknown = updates.keys().filter(|l| !want.contains_key(*l)).count();
            anyhow::ensure!(
                wrong == 0 && unknown == 0 && other == 0,
                "{name}: of {} locales, {wrong} without exactly the updates 1..n on {} \
                 (read_committed), {unknown} unknown locales, {other} undecodable records",
                want.len(),
                t.output
            );
            let total: u64 = want.values().sum();
            let mut all = 0usize;
            for_all(b, t, "read_uncommitted", |m| {
                if m.topic() == t.output && sentinel(m.key()).is_none() {
                    all += 1;
                }
            })
            .await?;
            Ok(all.saturating_sub(total as usize))
        }
        Work::Readings => {
            // Close every window, then wait until all have come out.
            let closers = stream.closers(&b.codec, &t.input).await?;
            let (kafka, input) = (b.kafka.clone(), t.input.clone());
            tokio::task::spawn_blocking(move || preload(&kafka, &input, &closers)).await??;
            // Windows that closed during the timed run were read there: count afresh.
            let committed = b.reader(t, "read_committed")?;
            let mut counted = 0u64;
            let deadline = Instant::now() + Duration::from_secs(180);
            while counted < stream.records as u64 {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{name}: final windows count {counted} of {} readings after the closers",
                    stream.records
                );
                let m = match tokio::time::timeout(Duration::from_secs(1), committed.recv()).await {
                    Ok(m) => m?,
                    Err(_) => {
                        child.check_alive()?;
                        continue;
                    }
                };
                if m.topic() == t.output
                    && let Some(w) = m.payload().and_then(window)
                    && !w.device_id.starts_with("closer-")
                {
                    counted += w.count as u64;
                }
            }
            let mut got: HashMap<(String, String, i64), (u64, u32)> = HashMap::new();
            let mut bad = 0usize;
            for_all(b, t, "read_uncommitted", |m| {
                if m.topic() != t.output {
                    return;
                }
                match m.payload().and_then(window) {
                    Some(w) if w.device_id.starts_with("closer-") => {}
                    Some(w) => {
                        let e = got
                            .entry((w.device_id, w.sensor_type, w.window_start))
                            .or_default();
                        e.0 += w.count as u64;
                        e.1 += 1;
                    }
                    None => bad += 1,
                }
            })
            .await?;
            let twice = got.values().filter(|(_, n)| *n > 1).count();
            let wrong = stream
                .windows
                .iter()
                .filter(|(k, n)| got.get(*k).map(|g| g.0) != Some(**n))
                .count();
            anyhow::ensure!(
                bad == 0 && twice == 0 && wrong == 0 && got.len() == stream.windows.len(),
                "{name}: of {} windows, {wrong} missing or miscounted, {twice} emitted more than once, \
                 {} emitted, {bad} undecodable",
                stream.windows.len(),
                got.len()
            );
            Ok(0)
        }
    }
}

/// Every reading out once, with its device's site (`Enriched`) or none
/// (`Unjoined`); the records of aborted transactions counted.
async fn enriched(
    b: &Bench<'_>,
    work: Work,
    stream: &Stream,
    name: &str,
    t: &Topics,
) -> anyhow::Result<usize> {
    let schema = apache_avro::Schema::parse_str(EnrichedReading::SCHEMA)?;
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema).build()?;
    let decode = |value: Option<&[u8]>| -> Option<EnrichedReading> {
        let v = reader.read_value(&mut value?.get(5..)?).ok()?;
        apache_avro::from_value(&v).ok()
    };
    let mut seen: HashMap<(String, &'static str, i64), u32> =
        HashMap::with_capacity(stream.records);
    let (mut wrong, mut bad) = (0usize, 0usize);
    for_all(b, t, "read_committed", |m| {
        if m.topic() != t.output {
            return;
        }
        let Some(e) = decode(m.payload()) else {
            bad += 1;
            return;
        };
        let device = e
            .device_id
            .strip_prefix("device-")
            .and_then(|d| d.parse().ok());
        let want = match work {
            Work::Enriched => device.map(site_of),
            _ => None,
        };
        if e.site != want || device.is_none() {
            wrong += 1;
        }
        *seen
            .entry((e.device_id, e.sensor_type.as_str(), e.timestamp))
            .or_default() += 1;
    })
    .await?;
    let twice = seen.values().filter(|n| **n > 1).count();
    anyhow::ensure!(
        seen.len() == stream.records && twice == 0 && wrong == 0 && bad == 0,
        "{name}: of {} readings, {} came out (read_committed), {twice} more than once, \
         {wrong} with the wrong site, {bad} undecodable",
        stream.records,
        seen.len()
    );
    let mut all = 0usize;
    for_all(b, t, "read_uncommitted", |m| {
        if m.topic() == t.output {
            all += 1;
        }
    })
    .await?;
    Ok(all.saturating_sub(stream.records))
}

fn window(value: &[u8]) -> Option<SensorWindowAggregate> {
    let schema = apache_avro::Schema::parse_str(SensorWindowAggregate::SCHEMA).ok()?;
    let v = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .ok()?
        .read_value(&mut value.get(5..)?)
        .ok()?;
    apache_avro::from_value(&v).ok()
}

/// Every record of the output and dead letters, up to the end of each partition.
async fn for_all(
    b: &Bench<'_>,
    t: &Topics,
    isolation: &str,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> anyhow::Result<()> {
    let reader = b.reader(t, isolation)?;
    let mut ends = Vec::new();
    for topic in [&t.output, &t.dlq] {
        for p in 0..b.partitions {
            let (_, high) = reader.fetch_watermarks(topic, p, Duration::from_secs(10))?;
            ends.push((topic.clone(), p, high));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut idle = 0;
    loop {
        match tokio::time::timeout(Duration::from_millis(300), reader.recv()).await {
            Ok(m) => {
                idle = 0;
                each(&m?)
            }
            Err(_) => {
                idle += 1;
                // Control records (commit markers) are never delivered:
                // the position says whether the end has been passed.
                let positions = reader.position()?;
                let done = ends.iter().all(|(topic, p, high)| {
                    *high == 0
                        || positions
                            .find_partition(topic, *p)
                            .and_then(|e| e.offset().to_raw())
                            .is_some_and(|o| o >= *high)
                });
                // A partition ending in a commit marker may leave the
                // position short of the end: 3 s of nothing is the end too.
                if done || idle >= 10 {
                    return Ok(());
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "reading {} back took over 300 s",
                    t.output
                );
            }
        }
    }
}
