//! Reading a table's topic into its `LiveTable`: every partition (of a
//! co-partitioned table, those its joins hold) from the beginning, as
//! committed (read_committed), into the rows; a record with
//! no value deletes its key's row from its timestamp on. First to the end
//! the topic had at start (the restore, counted for `/readyz` and the
//! metrics), then on, probing the topic's end offsets whenever a join
//! needs the rows fresh as of a later time. It commits nothing: every
//! start reads the topic again.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    sync::atomic::Ordering,
    time::Duration,
    time::Instant,
};

use futures::{FutureExt, StreamExt};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
    error::KafkaError,
    message::BorrowedMessage,
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::live::{LiveTable, TableRecord};
use crate::{
    avro::AvroCodec,
    kafka::{KafkaConfig, QuietReader},
};

/// Records applied under one write lock.
const BATCH: usize = 512;

pub(super) struct TableReader<V> {
    pub live: Arc<LiveTable<V>>,
    pub kafka: KafkaConfig,
    pub codec: Arc<AvroCodec>,
}

/// Why reading stopped; the reader starts again from the beginning.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("topic {0} does not exist (create it, compacted, before the workers start)")]
    NoTopic(String),
    #[error("the reader's thread pool is gone")]
    Gone,
}

/// The end offsets the partitions read had when a probe began.
struct Target {
    began: Instant,
    ends: BTreeMap<i32, i64>,
}

type Consumer_ = Arc<StreamConsumer<QuietReader>>;

/// A probe under way: the end offsets it will give.
type Probe = tokio::task::JoinHandle<Result<Offsets, ReadError>>;

/// Offsets by partition.
type Offsets = BTreeMap<i32, i64>;

impl<V: DeserializeOwned + Send + Sync + 'static> TableReader<V> {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let topic = self.live.topic().to_string();
        let mut told = None::<String>;
        while !*stop.borrow() {
            match self.read(&mut stop).await {
                Ok(()) => break,
                Err(e) => {
                    let why = e.to_string();
                    if told.as_ref() != Some(&why) {
                        tracing::warn!(table = %topic, error = %why, "cannot read the table; reading it again from the start in 1 s");
                        told = Some(why);
                    }
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        self.live.close();
    }

    async fn read(&self, stop: &mut watch::Receiver<bool>) -> Result<(), ReadError> {
        let topic = self.live.topic().to_string();
        let consumer: Consumer_ = Arc::new(
            self.kafka
                .reader(&format!("sluice-table-{topic}"))
                .create_with_context(QuietReader)?,
        );
        // Probes ask on a connection of their own: on the reader's, the
        // broker answers them only after its pending fetch, which waits up
        // to fetch.wait.max.ms (500 ms) while the table's topic is quiet.
        let prober: Consumer_ = Arc::new(
            self.kafka
                .reader(&format!("sluice-table-{topic}-probe"))
                .create_with_context(QuietReader)?,
        );
        let count = blocking(&consumer, {
            let topic = topic.clone();
            move |c| crate::kafka::partition_count(c, &topic)
        })
        .await??
        .ok_or_else(|| ReadError::NoTopic(topic.clone()))?;
        let co = self.live.is_co_partitioned();
        let stats = &self.live.stats;
        stats.restored.store(false, Ordering::Relaxed);
        // Per partition read: its first offset and how far it was read.
        let (mut lows, mut reached) = (BTreeMap::new(), BTreeMap::<i32, i64>::new());
        // Partitions read from the beginning until the target is reached.
        let mut restoring = BTreeSet::new();
        let mut target = Some(Target {
            began: Instant::now(),
            ends: BTreeMap::new(),
        });
        let mut probe: Option<(Instant, Probe)> = None;
        let mut stream = consumer.stream();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            // What to read: every partition of a global table; of a
            // co-partitioned one, those its joins hold.
            let wanted: BTreeSet<i32> = if co {
                self.live
                    .held()
                    .into_iter()
                    .filter(|p| *p < count)
                    .collect()
            } else {
                (0..count).collect()
            };
            if !wanted.iter().eq(reached.keys()) {
                let gone: Vec<i32> = reached
                    .keys()
                    .filter(|p| !wanted.contains(p))
                    .copied()
                    .collect();
                if !gone.is_empty() {
                    consumer.incremental_unassign(&tpl(&topic, &gone, None)?)?;
                    for p in gone {
                        reached.remove(&p);
                        lows.remove(&p);
                        restoring.remove(&p);
                        self.live.drop_partition(p);
                    }
                }
                let new: Vec<i32> = wanted
                    .iter()
                    .filter(|p| !reached.contains_key(p))
                    .copied()
                    .collect();
                // One target for every partition read, as of now; asked on
                // the prober's connection (the reader's has a fetch parked).
                let began = Instant::now();
                let parts: Vec<i32> = wanted.iter().copied().collect();
                let (first, ends) = blocking(&prober, {
                    let (topic, parts, new) = (topic.clone(), parts.clone(), new.clone());
                    move |c| {
                        let first = offsets(c, &topic, &new, Offset::Beginning)?;
                        Ok::<_, ReadError>((first, offsets(c, &topic, &parts, Offset::End)?))
                    }
                })
                .await??;
                if !new.is_empty() {
                    consumer.incremental_assign(&tpl(&topic, &new, Some(Offset::Beginning))?)?;
                    for p in &new {
                        lows.insert(*p, first[p]);
                        reached.insert(*p, first[p]);
                        restoring.insert(*p);
                    }
                    // Every partition being restored, those taken over earlier included.
                    let total: i64 = restoring.iter().map(|p| ends[p] - lows[p]).sum();
                    stats
                        .restore_total
                        .store(total.max(0) as u64, Ordering::Relaxed);
                    stats.restored.store(false, Ordering::Relaxed);
                }
                probe = None;
                target = Some(Target { began, ends });
            }
            if let Some(t) = &target
                && t.ends
                    .iter()
                    .all(|(p, e)| reached.get(p).is_none_or(|r| r >= e))
            {
                if !stats.restored.load(Ordering::Relaxed) {
                    stats.restored.store(true, Ordering::Relaxed);
                    if !restoring.is_empty() {
                        tracing::info!(table = %topic, partitions = ?restoring, keys = stats.keys.load(Ordering::Relaxed), records = stats.records.load(Ordering::Relaxed), took = ?t.began.elapsed(), "table restored");
                    }
                    restoring.clear();
                }
                let read: Vec<i32> = t.ends.keys().copied().collect();
                self.live.fresh_as_of(t.began, co.then_some(&read[..]));
                target = None;
            }
            if let Some(t) = &target
                && !restoring.is_empty()
            {
                let read: i64 = restoring
                    .iter()
                    .map(|p| reached[p].min(t.ends.get(p).copied().unwrap_or(0)) - lows[p])
                    .sum();
                stats
                    .restore_read
                    .store(read.max(0) as u64, Ordering::Relaxed);
            }
            if target.is_none() && probe.is_none() && self.live.wanted_after().is_some() {
                let (topic, began, c) = (topic.clone(), Instant::now(), prober.clone());
                let parts: Vec<i32> = reached.keys().copied().collect();
                stats.probes.fetch_add(1, Ordering::Relaxed);
                let job =
                    tokio::task::spawn_blocking(move || offsets(&c, &topic, &parts, Offset::End));
                probe = Some((began, job));
            }
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(()),
                done = async { (&mut probe.as_mut().expect("some").1).await }, if probe.is_some() => {
                    let (began, _) = probe.take().expect("some");
                    let mut ends = done.map_err(|_| ReadError::Gone)??;
                    // Partitions given up meanwhile are not waited for.
                    ends.retain(|p, _| reached.contains_key(p));
                    target = Some(Target { began, ends });
                }
                _ = self.live.wanted.notified(), if co || (probe.is_none() && target.is_none()) => {}
                m = stream.next() => {
                    let mut next = m;
                    while let Some(m) = next {
                        self.take(m, &consumer, &mut reached, &mut batch).await;
                        if batch.len() >= BATCH {
                            break;
                        }
                        next = stream.next().now_or_never().flatten();
                    }
                    stats.records.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    self.live.apply(batch.drain(..));
                }
            }
        }
    }

    /// One message of the topic: a row into `batch`, or an end reached.
    async fn take(
        &self,
        m: Result<BorrowedMessage<'_>, KafkaError>,
        consumer: &Consumer_,
        reached: &mut BTreeMap<i32, i64>,
        batch: &mut Vec<TableRecord>,
    ) {
        let topic = self.live.topic();
        let m = match m {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(p)) => {
                // The position is past any transaction markers at the end.
                if let Ok(pos) = consumer.position()
                    && let Some(Offset::Offset(o)) =
                        pos.find_partition(topic, p).map(|e| e.offset())
                    && let Some(r) = reached.get_mut(&p)
                {
                    *r = (*r).max(o);
                }
                return;
            }
            Err(e) => {
                tracing::debug!(table = %topic, error = %e, "table reader");
                return;
            }
        };
        // A partition given up: what was fetched of it before goes unread.
        let Some(r) = reached.get_mut(&m.partition()) else {
            return;
        };
        *r = (*r).max(m.offset() + 1);
        let Some(key) = m.key() else {
            self.undecodable(&m, "it has no key");
            return;
        };
        let at_ms = m.timestamp().to_millis().unwrap_or(0);
        let value = match m.payload() {
            None => None,
            // Decoded once here, so that a row that cannot be one is said
            // now, and joins find the writer's schema known.
            Some(bytes) => match self.decode(bytes).await {
                Ok(_) => Some(bytes.to_vec()),
                Err(why) => {
                    self.undecodable(&m, &why);
                    return;
                }
            },
        };
        batch.push((m.partition(), key.into(), at_ms, value));
    }

    async fn decode(&self, bytes: &[u8]) -> Result<V, String> {
        let mut waited = false;
        loop {
            let reader = self.live.reader();
            match self.codec.decode_cached::<V>(bytes, reader) {
                Some(Ok((_, v))) => return Ok(v),
                Some(Err(e)) => return Err(e.to_string()),
                None => match self.codec.prepare_reader(bytes, reader).await {
                    Ok(()) => {}
                    Err(e) if e.is_retryable() => {
                        if !waited {
                            tracing::warn!(table = %self.live.topic(), error = %e, "waiting for the schema registry to read the table");
                            waited = true;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => return Err(e.to_string()),
                },
            }
        }
    }

    /// A table record that cannot be a row: counted, said, and skipped (the
    /// table is read again on every start, so a dead letter would repeat).
    fn undecodable(&self, m: &BorrowedMessage<'_>, why: &str) {
        let n = self.live.stats.undecodable.fetch_add(1, Ordering::Relaxed);
        if n < 10 || n.is_power_of_two() {
            tracing::warn!(table = %self.live.topic(), partition = m.partition(), offset = m.offset(), reason = why, skipped = n + 1, "a table record cannot be read; skipping it");
        }
    }
}

/// The first (`Offset::Beginning`) or end (`Offset::End`, as committed:
/// the clients are read_committed) offsets of `topic`'s `partitions`, in
/// one request per leader: a probe, run back to back while joins wait.
fn offsets(
    c: &StreamConsumer<QuietReader>,
    topic: &str,
    partitions: &[i32],
    at: Offset,
) -> Result<Offsets, ReadError> {
    if partitions.is_empty() {
        return Ok(Offsets::new());
    }
    let timeout = Duration::from_secs(10);
    let got = c.offsets_for_times(tpl(topic, partitions, Some(at))?, timeout)?;
    let mut out = BTreeMap::new();
    for &p in partitions {
        let offset = match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            // Not an offset: asked the long way.
            _ => {
                let (low, high) = c.fetch_watermarks(topic, p, timeout)?;
                if at == Offset::Beginning { low } else { high }
            }
        };
        out.insert(p, offset);
    }
    Ok(out)
}

fn tpl(
    topic: &str,
    partitions: &[i32],
    at: Option<Offset>,
) -> Result<TopicPartitionList, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        match at {
            Some(o) => tpl.add_partition_offset(topic, p, o)?,
            None => {
                tpl.add_partition(topic, p);
            }
        }
    }
    Ok(tpl)
}

async fn blocking<T: Send + 'static>(
    c: &Consumer_,
    f: impl FnOnce(&StreamConsumer<QuietReader>) -> T + Send + 'static,
) -> Result<T, ReadError> {
    let c = c.clone();
    tokio::task::spawn_blocking(move || f(&c))
        .await
        .map_err(|_| ReadError::Gone)
}
