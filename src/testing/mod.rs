//! Testing a topology without a broker or a registry (Kafka Streams'
//! `TopologyTestDriver`): records piped in run through the same consuming
//! side and the same task, sinks, operators and commits the runtime runs,
//! against Kafka, a registry and a database kept in memory. Outputs, dead
//! letters and late records are read back as a read_committed reader sees
//! them; store contents and tables can be looked at; event time moves with
//! the records piped, wall time with `advance_wall_clock`; `restart`
//! drops everything uncommitted and starts a new member from what was
//! committed, as a crash would.
//!
//! ```ignore
//! let mut driver = TestDriver::new(my_topology()?)?;
//! driver.pipe(Some("user-1"), &order, 1_000)?;
//! let out: Vec<Item<Total>> = driver.read("order-totals")?;
//! ```

pub mod kafka;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use serde::{Serialize, de::DeserializeOwned};

use self::kafka::{Memory, MemoryGroup, MemoryOutbox, Record};
use crate::{
    avro::{AvroCodec, AvroSchema, CodecError, Reader},
    runtime::{
        CommitError, KafkaKeeper, Keeper, Participant, Parts, Rewind, Task, Unit, WriteError,
        letters::{self, KIND, MESSAGE, Source, SourceHeaders},
        pieces,
    },
    sink::{Database, SinkError, memory::InMemory},
    state::KeyValueStore,
    stats::{Stats, Timings},
    topology::{Domain, Failure, Input, Item, Topology, fetch_missing},
};

/// Why the driver could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("schemas: {0}")]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("commit: {0}")]
    Commit(#[from] CommitError),
    #[error("writing a record's results: {}", .0.error)]
    Write(WriteError),
    #[error("partition {0} does not exist (the driver has {1})")]
    NoPartition(i32, i32),
    #[error("the topology reads no table {0} with values of that type")]
    NoTable(String),
}

/// A record the driver's input topic holds.
#[derive(Debug, Clone)]
struct Piped {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp_ms: i64,
}

/// A dead letter or a late record, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    /// `sluice.error.kind`: why.
    pub kind: String,
    /// `sluice.error.message`.
    pub message: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Letter {
    /// A header's value as text.
    pub fn header(&self, key: &str) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Runs one topology in memory.
pub struct TestDriver {
    topology: Topology,
    codec: Arc<AvroCodec>,
    kafka: Memory,
    tables: InMemory,
    /// The tables its joins read, filled by `table_row`.
    read_tables: crate::table::Tables,
    task: Task,
    wall_ms: Arc<AtomicI64>,
    input: Vec<Vec<Piped>>,
    /// Per partition, the next offset the member reads.
    next: Vec<i64>,
    unit: Unit,
    /// Per topic, how many committed records were read already.
    read: HashMap<String, usize>,
    commit_each: bool,
    /// The sub-topologies after its repartition topics (`Stream::group_by`),
    /// each with the topic it reads and how many of its records it was
    /// fed: what commits there, into one partition.
    subs: Vec<(String, usize, TestDriver)>,
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

impl TestDriver {
    /// A driver reading one partition.
    pub fn new(topology: Topology) -> Result<Self, DriverError> {
        Self::with_partitions(topology, 1)
    }

    /// A driver whose input topic has `partitions` partitions.
    pub fn with_partitions(topology: Topology, partitions: i32) -> Result<Self, DriverError> {
        // One registry for every part: what one writes, the next reads.
        let parts = topology.parts().into_iter();
        let schemas: Vec<(String, String)> = parts.flat_map(|t| t.schemas.clone()).collect();
        let codec = Arc::new(AvroCodec::in_memory(&schemas)?);
        Self::with_codec(topology, partitions, codec, InMemory::new())
    }

    /// A driver of `topology` and its sub-topologies, which share the
    /// registry and the database.
    fn with_codec(
        mut topology: Topology,
        partitions: i32,
        codec: Arc<AvroCodec>,
        tables: InMemory,
    ) -> Result<Self, DriverError> {
        let mut subs = Vec::new();
        for sub in std::mem::take(&mut topology.subs) {
            let topic = sub.description.source.clone();
            let driver = Self::with_codec(sub, 1, codec.clone(), tables.clone())?;
            subs.push((topic, 0, driver));
        }
        let kafka = Memory::default();
        let mut read_tables = crate::table::Tables::default();
        for t in &topology.read_tables {
            read_tables.add(t.in_memory());
        }
        let wall_ms = Arc::new(AtomicI64::new(crate::topology::clock::wall_clock_ms()));
        let task = open(&topology, &codec, &kafka, &tables, &read_tables, &wall_ms)?;
        let n = partitions.max(1) as usize;
        let mut driver = TestDriver {
            topology,
            codec,
            kafka,
            tables,
            read_tables,
            task,
            wall_ms,
            input: vec![Vec::new(); n],
            next: vec![0; n],
            unit: Unit::default(),
            read: HashMap::new(),
            commit_each: true,
            subs,
        };
        driver.claim()?;
        Ok(driver)
    }

    /// Whether each piped record is committed at once (the default), or
    /// only on `commit`.
    pub fn commit_each(mut self, yes: bool) -> Self {
        self.commit_each = yes;
        self
    }

    fn claim(&mut self) -> Result<(), DriverError> {
        let all: Vec<i32> = (0..self.input.len() as i32).collect();
        let claims = self.task.claim(&all, &MemoryGroup)?;
        let committed = self.kafka.lock().offsets.clone();
        for p in all {
            let from_claim = claims
                .iter()
                .find(|c| c.partition == p)
                .and_then(|c| c.next_offset);
            let from_group = committed.get(&p).map(|(o, _)| *o);
            self.next[p as usize] = from_claim.or(from_group).unwrap_or(0);
        }
        Ok(())
    }

    /// The source's name.
    pub fn source(&self) -> &str {
        &self.topology.description.source
    }

    /// Pipes a value (encoded with the source's schema) into partition 0.
    pub fn pipe<T: Serialize>(
        &mut self,
        key: Option<&str>,
        value: &T,
        timestamp_ms: i64,
    ) -> Result<(), DriverError> {
        self.pipe_to(0, key, value, timestamp_ms)
    }

    /// Pipes a value into `partition`.
    pub fn pipe_to<T: Serialize>(
        &mut self,
        partition: i32,
        key: Option<&str>,
        value: &T,
        timestamp_ms: i64,
    ) -> Result<(), DriverError> {
        let source = self.source().to_string();
        let bytes = block_on(self.codec.encode(&source, value))?;
        self.pipe_raw(
            partition,
            key.map(str::as_bytes),
            Some(&bytes),
            timestamp_ms,
        )
    }

    /// Pipes raw bytes (bad input, say) into `partition`.
    pub fn pipe_raw(
        &mut self,
        partition: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: i64,
    ) -> Result<(), DriverError> {
        let n = self.input.len() as i32;
        let log = self
            .input
            .get_mut(partition as usize)
            .ok_or(DriverError::NoPartition(partition, n))?;
        log.push(Piped {
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            timestamp_ms,
        });
        self.catch_up()?;
        if self.commit_each {
            self.commit()?;
        }
        Ok(())
    }

    /// Processes every piped record not read yet, in partition order.
    fn catch_up(&mut self) -> Result<(), DriverError> {
        for p in 0..self.input.len() {
            while (self.next[p] as usize) < self.input[p].len() {
                let offset = self.next[p];
                self.next[p] += 1;
                self.process(p as i32, offset)?;
            }
        }
        Ok(())
    }

    fn process(&mut self, partition: i32, offset: i64) -> Result<(), DriverError> {
        let r = self.input[partition as usize][offset as usize].clone();
        let d = &self.topology.description;
        let input = Input {
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            timestamp_ms: r.timestamp_ms,
        };
        let source = Source {
            topic: &d.source,
            partition,
            offset,
            timestamp_ms: r.timestamp_ms,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: SourceHeaders::Copied(&[]),
        };
        let processor = &*self.topology.processor;
        let mut emitted = Vec::new();
        let mut dead = None;
        loop {
            emitted.clear();
            match processor.process(&self.codec, input, &mut emitted) {
                Ok(()) => break,
                Err(Failure::Missing(m)) => {
                    if let Err(f) = block_on(fetch_missing(&self.codec, processor, input, &m)) {
                        dead = Some(letters::dead_letter(
                            &d.dead_letter.as_str().into(),
                            &d.name,
                            &source,
                            &f,
                        ));
                        break;
                    }
                }
                Err(f) => {
                    dead = Some(letters::dead_letter(
                        &d.dead_letter.as_str().into(),
                        &d.name,
                        &source,
                        &f,
                    ));
                    break;
                }
            }
        }
        self.task
            .write(&source, &mut emitted, dead.as_ref())
            .map_err(DriverError::Write)?;
        self.unit.consumed(partition, offset);
        Ok(())
    }

    /// Commits what was processed: stateful operators emit what is due,
    /// and the unit commits. An abort (never, in memory) reads again.
    pub fn commit(&mut self) -> Result<(), DriverError> {
        match self.task.commit(&self.unit, &MemoryGroup) {
            Ok(_) => {
                self.unit.clear();
                self.feed_subs()
            }
            Err(e) => {
                let rewind = self.task.abort(&self.unit);
                self.unit.clear();
                if let Rewind::To(positions) = rewind {
                    for (p, o) in positions {
                        self.next[p as usize] = o;
                    }
                } else {
                    self.claim()?;
                }
                Err(e.into())
            }
        }
    }

    /// Pipes what committed to the repartition topics into the
    /// sub-topologies that read them.
    fn feed_subs(&mut self) -> Result<(), DriverError> {
        for (topic, fed, sub) in &mut self.subs {
            let records: Vec<Record> = {
                let k = self.kafka.lock();
                let all = k
                    .topics
                    .get(topic.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                all[(*fed).min(all.len())..].to_vec()
            };
            *fed += records.len();
            for r in records {
                sub.pipe_raw(0, r.key.as_deref(), r.value.as_deref(), r.timestamp_ms)?;
            }
        }
        Ok(())
    }

    /// Moves wall-clock time on (idle partitions' event time follows it)
    /// and commits, as the runtime does on its clock tick.
    pub fn advance_wall_clock(&mut self, by: Duration) -> Result<(), DriverError> {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.wall_ms.fetch_add(ms, Ordering::Relaxed);
        self.commit()
    }

    /// A record of table `topic`: `key`'s row from `at_ms` on (`None`
    /// deletes it), encoded with the table's schema. The driver's tables
    /// hold every row at once.
    pub fn table_row<V: Serialize + Send + Sync + 'static>(
        &mut self,
        topic: &str,
        key: &[u8],
        at_ms: i64,
        value: Option<V>,
    ) -> Result<(), DriverError> {
        let live = self
            .read_tables
            .get(topic)
            .and_then(|r| r.live.clone().downcast::<crate::table::LiveTable<V>>().ok())
            .ok_or_else(|| DriverError::NoTable(topic.to_string()))?;
        let bytes = match &value {
            Some(v) => {
                let bytes = block_on(self.codec.encode(topic, v))?;
                block_on(self.codec.prepare_reader(&bytes, live.reader()))?;
                Some(bytes)
            }
            None => None,
        };
        // Rows filled by hand serve every partition.
        live.apply([(0, key.into(), at_ms, bytes)]);
        Ok(())
    }

    /// Drops everything not committed and starts a new member from what
    /// was (state restored from changelogs, or rebuilt by reading again).
    pub fn restart(&mut self) -> Result<(), DriverError> {
        for (_, _, sub) in &mut self.subs {
            sub.restart()?;
        }
        self.unit.clear();
        self.task = open(
            &self.topology,
            &self.codec,
            &self.kafka,
            &self.tables,
            &self.read_tables,
            &self.wall_ms,
        )?;
        self.claim()?;
        self.catch_up()?;
        if self.commit_each {
            self.commit()?;
        }
        Ok(())
    }

    /// The committed records of `topic` not read yet (the
    /// sub-topologies' too).
    pub fn read_raw(&mut self, topic: &str) -> Vec<Record> {
        let mut out = Vec::new();
        for (_, _, sub) in &mut self.subs {
            out.extend(sub.read_raw(topic));
        }
        let k = self.kafka.lock();
        let all = k.topics.get(topic).map(Vec::as_slice).unwrap_or_default();
        let seen = self.read.entry(topic.to_string()).or_default();
        out.extend_from_slice(&all[(*seen).min(all.len())..]);
        *seen = all.len();
        out
    }

    /// The committed records of `topic` not read yet, decoded as `T`.
    pub fn read<T: AvroSchema + DeserializeOwned>(
        &mut self,
        topic: &str,
    ) -> Result<Vec<Item<T>>, DriverError> {
        let schema =
            apache_avro::Schema::parse_str(T::SCHEMA).map_err(|e| CodecError::Corrupt {
                id: 0,
                reason: e.to_string(),
            })?;
        let reader = Reader::new(schema);
        let mut out = Vec::new();
        for r in self.read_raw(topic) {
            let bytes = r.value.unwrap_or_default();
            let (_, value) = block_on(self.codec.decode::<T>(&bytes, &reader))?;
            out.push(Item {
                key: r.key,
                value,
                timestamp_ms: r.timestamp_ms,
            });
        }
        Ok(out)
    }

    fn letters(&mut self, topic: &str) -> Vec<Letter> {
        self.read_raw(topic)
            .into_iter()
            .map(|r| {
                let text = |k: &str| {
                    r.headers
                        .iter()
                        .rev()
                        .find(|(h, _)| h == k)
                        .and_then(|(_, v)| v.as_deref())
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                Letter {
                    kind: text(KIND),
                    message: text(MESSAGE),
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: r.headers.clone(),
                }
            })
            .collect()
    }

    /// Dead letters committed since the last call.
    pub fn dead_letters(&mut self) -> Vec<Letter> {
        let topic = self.topology.description.dead_letter.clone();
        self.letters(&topic)
    }

    /// Records too late for their windows, committed since the last call.
    pub fn late_records(&mut self) -> Vec<Letter> {
        match self.topology.description.late.clone() {
            Some(topic) => self.letters(&topic),
            None => Vec::new(),
        }
    }

    /// A key-value store's contents, every partition's together.
    pub fn store<K, V>(&self, name: &str) -> BTreeMap<K, V>
    where
        K: Ord + Clone + 'static,
        V: Clone + 'static,
    {
        let mut out = BTreeMap::new();
        for (_, _, sub) in &self.subs {
            out.extend(sub.store(name));
        }
        if let Some(parts) = self
            .task
            .store(name)
            .and_then(|s| s.downcast_ref::<BTreeMap<i32, KeyValueStore<K, V>>>())
        {
            for store in parts.values() {
                for (k, v) in store.iter() {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        out
    }

    /// The tables of database sinks, kept in memory.
    pub fn tables(&self) -> &crate::sink::memory::MemoryTables {
        &self.tables.0
    }

    /// Transactions committed and aborted so far.
    pub fn transactions(&self) -> (u64, u64) {
        let k = self.kafka.lock();
        (k.commits, k.aborts)
    }
}

fn open(
    topology: &Topology,
    codec: &Arc<AvroCodec>,
    kafka: &Memory,
    tables: &InMemory,
    read_tables: &crate::table::Tables,
    wall_ms: &Arc<AtomicI64>,
) -> Result<Task, DriverError> {
    let d = &topology.description;
    // As a worker does before it starts: what is encoded where the unit
    // commits needs its schema at hand.
    for topic in topology.sinks.iter().filter_map(|s| s.schema_topic()) {
        block_on(codec.resolve_sink(topic))?;
    }
    let db: Arc<dyn Database> = Arc::new(tables.clone());
    let database = match d.commit {
        Domain::Database(_) => Some(&db),
        Domain::Kafka => None,
    };
    let keeper: Box<dyn Keeper> = match database {
        Some(db) => db.keeper(&d.group_id, &d.source),
        None => {
            let stateful = !topology.operators.is_empty();
            let committed = Some(Box::new(kafka.clone()) as Box<_>);
            Box::new(KafkaKeeper::with(&d.source, committed, stateful))
        }
    };
    let (sinks, operators, clock) = pieces(
        topology,
        &d.group_id,
        database,
        codec,
        read_tables,
        &crate::state::Stores::default(),
    )?;
    let wall = wall_ms.clone();
    Ok(Task::new(Parts {
        topology: d.name.clone(),
        source: d.source.clone(),
        dead_letter: d.dead_letter.as_str().into(),
        late: d.late.as_deref().map(Into::into),
        codec: codec.clone(),
        keeper,
        out: Box::new(MemoryOutbox::new(kafka.clone())),
        sinks,
        operators,
        clock,
        changelogs: Box::new(kafka.clone()),
        wall_ms: Arc::new(move || wall.load(Ordering::Relaxed)),
        stats: Arc::new(Stats::default()),
        timings: Timings::disabled(),
    }))
}

#[cfg(test)]
mod tests;
