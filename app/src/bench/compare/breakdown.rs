//! Where sluice's latency goes: the latency pass's records are offered
//! with their input partition and offset noted (from the delivery
//! reports); sluice's worker samples one record in 16 and writes each
//! sampled record's steps on exit (`runtime::trace`); joined with when
//! the reader read each record back, every step's p50 and p99.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use rdkafka::{
    ClientContext, Message,
    message::DeliveryResult,
    producer::{BaseProducer, BaseRecord, Producer, ProducerContext},
};

use super::{child::now_ms, stream::Rec};
use crate::bench::{
    e2e::{enqueue, pace_with},
    quantile,
};
use sluice::{kafka::KafkaConfig, runtime::trace::Sample};

/// Where each offered record landed: partition and offset by its index.
#[derive(Default)]
pub struct Located {
    at: Vec<(AtomicI32, AtomicI64)>,
    failed: AtomicU64,
}

impl ClientContext for Located {}

impl ProducerContext for Located {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, i: usize) {
        match (result, self.at.get(i)) {
            (Ok(m), Some((p, o))) => {
                p.store(m.partition(), Ordering::Relaxed);
                o.store(m.offset(), Ordering::Relaxed);
            }
            _ => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Located {
    /// Index of each record by where it landed.
    pub fn index(&self) -> HashMap<(i32, i64), usize> {
        self.at
            .iter()
            .enumerate()
            .map(|(i, (p, o))| ((p.load(Ordering::Relaxed), o.load(Ordering::Relaxed)), i))
            .collect()
    }
}

/// Sends `records` at `rate` per second, noting when each went and, once
/// acknowledged, where it landed.
pub fn paced(
    kafka: &KafkaConfig,
    topic: &str,
    records: &[Rec],
    rate: u64,
    sent: &[AtomicI64],
) -> anyhow::Result<HashMap<(i32, i64), usize>> {
    let context = Located {
        at: (0..records.len())
            .map(|_| (AtomicI32::new(-1), AtomicI64::new(-1)))
            .collect(),
        failed: AtomicU64::new(0),
    };
    let producer: BaseProducer<Located> = kafka.producer(None).create_with_context(context)?;
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let started = Instant::now();
    for (i, (key, value, _)) in records.iter().enumerate() {
        pace_with(|| producer.poll(Duration::ZERO), started, i, rate);
        let now = now_ms();
        sent[i].store(now, Ordering::Release);
        enqueue(
            &producer,
            BaseRecord::with_opaque_to(topic, i)
                .key(key.as_slice())
                .payload(value.as_slice())
                .timestamp(now),
        );
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60))?;
    match producer.context().failed.load(Ordering::Relaxed) {
        0 => Ok(producer.context().index()),
        n => anyhow::bail!("{n} offered records were not delivered"),
    }
}

/// The steps between two of a record's times, and what each measures.
const STEPS: [&str; 8] = [
    "offered → fetched by the worker",
    "fetched → processed (decode, rules, encode)",
    "processed → handed to the task thread",
    "handed → written to the producer",
    "written → its unit's commit begins",
    "commit begins → the unit's deliveries in",
    "deliveries in → committed (offsets, commit)",
    "committed → read back (read_committed)",
];

/// p50 and p99 of each step, and of the whole, over the sampled records
/// that were read back.
#[derive(Debug, Clone)]
pub struct Breakdown {
    pub records: usize,
    pub steps: Vec<(&'static str, Duration, Duration)>,
}

impl Breakdown {
    /// `read_ms[i]`: when offered record `i` was read back (0: never).
    pub fn of(
        samples: &[Sample],
        located: &HashMap<(i32, i64), usize>,
        read_ms: &[i64],
    ) -> Option<Breakdown> {
        let mut steps: Vec<Vec<i64>> = vec![Vec::new(); STEPS.len() + 1];
        for s in samples {
            let Some(&i) = located.get(&(s.partition, s.offset)) else {
                continue;
            };
            let read = read_ms.get(i).copied().unwrap_or(0);
            if read == 0 || s.committed_us == 0 {
                continue;
            }
            let mut times = vec![s.record_ms * 1000];
            times.extend(s.steps());
            times.push(read * 1000);
            for (k, w) in times.windows(2).enumerate() {
                steps[k].push((w[1] - w[0]).max(0));
            }
            steps[STEPS.len()].push((read - s.record_ms).max(0) * 1000);
        }
        let records = steps[0].len();
        if records == 0 {
            return None;
        }
        let names = STEPS.iter().copied().chain(["offered → read back (all)"]);
        let steps = names
            .zip(steps)
            .map(|(name, mut v)| {
                v.sort_unstable();
                let q = |f: f64| Duration::from_micros(quantile(&v, f) as u64);
                (name, q(0.50), q(0.99))
            })
            .collect();
        Some(Breakdown { records, steps })
    }

    /// A trace file as the worker wrote it.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Vec<Sample>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the trace {}: {e}", path.display()))?;
        Ok(text.lines().filter_map(Sample::parse).collect())
    }
}

impl std::fmt::Display for Breakdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "| step ({} sampled records) | p50 | p99 |", self.records)?;
        write!(f, "| --- | ---: | ---: |")?;
        for (name, p50, p99) in &self.steps {
            let ms = |d: &Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
            write!(f, "\n| {name} | {} | {} |", ms(p50), ms(p99))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(offset: i64, record_ms: i64, steps_ms: [i64; 7]) -> Sample {
        let us = steps_ms.map(|m| m * 1000);
        Sample {
            partition: 0,
            offset,
            record_ms,
            fetched_us: us[0],
            processed_us: us[1],
            handed_us: us[2],
            written_us: us[3],
            commit_begun_us: us[4],
            delivered_us: us[5],
            committed_us: us[6],
        }
    }

    #[test]
    fn steps_add_up_and_unmatched_samples_are_left_out() {
        let samples = [
            sample(10, 1000, [1002, 1003, 1003, 1004, 1050, 1060, 1070]),
            sample(11, 2000, [2004, 2005, 2005, 2006, 2090, 2100, 2110]),
            // Not an offered record (a preloaded one): no index.
            sample(99, 0, [1, 2, 3, 4, 5, 6, 7]),
        ];
        let located = HashMap::from([((0, 10), 0), ((0, 11), 1)]);
        let b = Breakdown::of(&samples, &located, &[1075, 2112]).expect("two matched");
        assert_eq!(b.records, 2);
        let ms = |d: Duration| d.as_millis() as i64;
        // Of two, p50 and p99 are both the larger: per step, not per record.
        assert_eq!(ms(b.steps[0].2), 4);
        assert_eq!(ms(b.steps[4].2), 84);
        assert_eq!(ms(b.steps[7].1), 5);
        assert_eq!(ms(b.steps[8].1), 112);
        let sum: i64 = b.steps[..8].iter().map(|s| ms(s.2)).sum();
        assert!(
            sum >= 112,
            "the steps' worst add up to at least the whole: {sum}"
        );
        assert!(Breakdown::of(&samples, &located, &[0, 0]).is_none());
    }
}
