//! Tables read from compacted topics, and streams joined with them by
//! event time. A table is declared on a topology (`Builder::global_table`)
//! and joined with `Stream::join` / `Stream::left_join` (`join`); the
//! runtime reads it (`reader`) into a `LiveTable` (`live`) that every
//! member of the process shares, and `/readyz` waits while it is restored.
//!
//! ```ignore
//! let t = topology("iot-enriched");
//! let devices = t.global_table::<DeviceInfo>("iot-devices");
//! t.source::<SensorReading>("iot_sensor_data")
//!     .left_join("devices", &devices, |r| r.value.device_id.clone().into_bytes(), enrich)
//!     .to_topic("iot-enriched-readings");
//! ```

pub mod join;
pub mod live;
mod reader;

use std::{any::Any, collections::BTreeMap, sync::Arc, time::Duration};

pub use join::Miss;
pub use live::LiveTable;

use crate::{
    avro::{AvroCodec, Reader},
    kafka::KafkaConfig,
    stats::TableStats,
};

/// How long a table keeps each key's history by default (behind the
/// newest record it read): lookups within it are exact.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// A table declared on a topology, to join streams with.
pub struct Table<V> {
    /// What the runtime starts: a `TableDecl<V>`.
    pub(crate) source: Arc<dyn TableSource>,
    _value: std::marker::PhantomData<fn() -> V>,
}

impl<V> Clone for Table<V> {
    fn clone(&self) -> Self {
        Table {
            source: self.source.clone(),
            _value: std::marker::PhantomData,
        }
    }
}

impl<V> Table<V> {
    pub(crate) fn new(source: Arc<dyn TableSource>) -> Self {
        Table {
            source,
            _value: std::marker::PhantomData,
        }
    }

    /// The topic it is read from.
    pub fn topic(&self) -> &str {
        self.source.topic()
    }
}

pub(crate) struct TableDecl<V> {
    pub topic: String,
    pub reader: Arc<Reader>,
    pub retention: Duration,
    /// Read in the partitions its joins' members own, not whole.
    pub co_partitioned: bool,
    _value: std::marker::PhantomData<fn() -> V>,
}

impl<V> TableDecl<V> {
    pub fn new(topic: &str, reader: Reader, retention: Duration, co_partitioned: bool) -> Self {
        TableDecl {
            topic: topic.to_string(),
            reader: Arc::new(reader),
            retention,
            co_partitioned,
            _value: std::marker::PhantomData,
        }
    }

    fn live(&self) -> LiveTable<V> {
        let (topic, retention, reader) = (&self.topic, self.retention, self.reader.clone());
        if self.co_partitioned {
            LiveTable::co_partitioned(topic, retention, reader)
        } else {
            LiveTable::new(topic, retention, reader)
        }
    }
}

/// A table as the runtime sees it: something to start reading.
pub trait TableSource: Send + Sync + 'static {
    fn topic(&self) -> &str;
    /// Read in the partitions of the stream a member owns (its topic must
    /// have the stream's partition count), not whole.
    fn co_partitioned(&self) -> bool;
    /// Starts reading it on the current Tokio runtime until `stop`; the
    /// handle (an `Arc<LiveTable<V>>`) goes to the joins.
    fn start(
        &self,
        kafka: &KafkaConfig,
        codec: Arc<AvroCodec>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Running;
    /// An empty table filled by hand, always fresh (the test driver's).
    fn in_memory(&self) -> Running;
}

/// A table being read.
#[derive(Clone)]
pub struct Running {
    pub live: Arc<dyn Any + Send + Sync>,
    pub stats: Arc<TableStats>,
    /// The same table, asked ahead for records handed over.
    pub ahead: Arc<dyn Ahead>,
}

/// A table asked, when a chunk of records is handed to the task thread,
/// to be read up to its topic's end as of then: the probe starts while
/// earlier chunks are processed, so the join rarely waits for it.
pub trait Ahead: Send + Sync {
    fn want(&self, fetched: std::time::Instant);
}

impl<V: Send + Sync> Ahead for LiveTable<V> {
    fn want(&self, fetched: std::time::Instant) {
        LiveTable::want(self, fetched);
    }
}

impl<V> TableSource for TableDecl<V>
where
    V: serde::de::DeserializeOwned + Send + Sync + 'static,
{
    fn topic(&self) -> &str {
        &self.topic
    }

    fn co_partitioned(&self) -> bool {
        self.co_partitioned
    }

    fn start(
        &self,
        kafka: &KafkaConfig,
        codec: Arc<AvroCodec>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Running {
        let live = Arc::new(self.live());
        let stats = live.stats.clone();
        let ahead = live.clone();
        let read = reader::TableReader {
            live: live.clone(),
            kafka: kafka.clone(),
            codec,
        };
        tokio::spawn(read.run(stop));
        Running { live, stats, ahead }
    }

    fn in_memory(&self) -> Running {
        let live = Arc::new(self.live());
        live.always_fresh();
        let stats = live.stats.clone();
        stats
            .restored
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let ahead = live.clone();
        Running { live, stats, ahead }
    }
}

/// The tables a process reads, by topic, started once each.
#[derive(Clone, Default)]
pub struct Tables {
    running: BTreeMap<String, Running>,
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.running.keys()).finish()
    }
}

impl Tables {
    /// Starts each table of `specs` not started yet.
    pub fn start(
        &mut self,
        specs: &[Arc<dyn TableSource>],
        kafka: &KafkaConfig,
        codec: &Arc<AvroCodec>,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) {
        for spec in specs {
            if !self.running.contains_key(spec.topic()) {
                let running = spec.start(kafka, codec.clone(), stop.clone());
                self.running.insert(spec.topic().to_string(), running);
            }
        }
    }

    /// A table read elsewhere (the test driver's).
    pub fn add(&mut self, running: Running) {
        self.running.insert(running.stats.name.clone(), running);
    }

    pub fn get(&self, topic: &str) -> Option<&Running> {
        self.running.get(topic)
    }
}
