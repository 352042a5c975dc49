//! Final window aggregates to a Kafka topic, exactly once: each window is
//! emitted once, whole, when the watermark closes it, in the transaction
//! that also carries the unit's late and dead letters and the input offsets.
//!
//! Open windows live only in memory. Rather than a changelog topic per
//! store (Kafka Streams), the committed offset of each input partition is
//! the first record still in an open window, and the offset commit's
//! metadata carries the partition's watermark and the offset it was
//! processed up to. A restarted worker reads again from the committed
//! offset and so rebuilds exactly the open windows; windows already
//! emitted are closed at the restored watermark, so none is emitted twice,
//! and records below the processed-up-to offset send no letters again.
//! Why not a changelog: no second topic to create, size and compact, no
//! extra write per update; the cost is re-reading at most a window plus its
//! grace of input after a restart, and a group lag that trails by that much.

use std::{sync::Arc, time::Duration};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    Claim, Group, Sink, SinkEnv, SinkError, SinkSpec, Topology,
    kafka::Txn,
    window::{ClosedRow, Position, Row, WindowStage, WindowTable},
};
use crate::{
    avro::{CodecError, SinkSchema},
    kafka::KafkaConfig,
    topology::{
        Aggregated, BuildError, Guarantee, MakeAggregate, Ops, Output, WindowKey, valid_topic,
    },
    window::{Combined as Agg, Window, WindowSpec},
};

type Encode = Arc<
    dyn Fn(&WindowKey, Window, &Agg, &SinkSchema) -> Result<(Option<Vec<u8>>, Vec<u8>), CodecError>
        + Send
        + Sync,
>;

/// Finishes a windowed declaration with a topic of final windows.
pub trait ToFinalTopic {
    /// Emits each window once, when final, as the value `output` makes of
    /// its key, bounds and aggregate (with the record key it gives),
    /// encoded with the latest schema of `<topic>-value`.
    fn to_topic_when_final<V, F>(self, topic: &str, output: F) -> Result<Topology, BuildError>
    where
        V: Serialize + 'static,
        F: Fn(&WindowKey, Window, &Agg) -> (Option<Vec<u8>>, V) + Send + Sync + 'static;
}

impl<S, T, O> ToFinalTopic for Aggregated<S, T, O>
where
    S: DeserializeOwned + Send + Sync + 'static,
    T: Send + Sync + 'static,
    O: Ops<S, T>,
{
    fn to_topic_when_final<V, F>(self, topic: &str, output: F) -> Result<Topology, BuildError>
    where
        V: Serialize + 'static,
        F: Fn(&WindowKey, Window, &Agg) -> (Option<Vec<u8>>, V) + Send + Sync + 'static,
    {
        let w = self.readings("count, sum, min, max, avg")?;
        let d = &w.declared.description;
        if !valid_topic(topic) {
            return Err(BuildError::BadTopic {
                topology: d.name.clone(),
                topic: topic.to_string(),
            });
        }
        if topic == d.source {
            return Err(BuildError::Loop {
                topology: d.name.clone(),
                topic: topic.to_string(),
            });
        }
        let encode: Encode = Arc::new(move |key, window, agg, schema| {
            let (k, value) = output(key, window, agg);
            Ok((k, schema.encode(&value)?))
        });
        Ok(Topology::new(
            w.declared,
            Arc::new(FinalTopicSpec {
                topic: topic.to_string(),
                window: w.spec,
                encode,
                make: w.make,
            }),
        ))
    }
}

/// The declaration of a topic of final windows.
pub struct FinalTopicSpec {
    topic: String,
    window: WindowSpec,
    encode: Encode,
    make: MakeAggregate,
}

impl SinkSpec for FinalTopicSpec {
    fn describe(&self) -> String {
        format!("{} (final windows)", self.topic)
    }

    fn topics(&self) -> Vec<String> {
        vec![self.topic.clone()]
    }

    fn transactional(&self, guarantee: Guarantee) -> bool {
        guarantee == Guarantee::ExactlyOnce
    }

    fn guarantee(&self) -> &'static str {
        "exactly-once (each final window, its letters and the input offsets in one Kafka transaction)"
    }

    fn open(&self, env: &SinkEnv<'_>) -> Result<Box<dyn Sink>, SinkError> {
        let handle = tokio::runtime::Handle::current();
        let schema = handle
            .block_on(env.codec.resolve_sink(&self.topic))
            .map_err(SinkError::Registry)?;
        let id = self
            .transactional(env.guarantee)
            .then_some(env.transactional_id);
        let txn = Txn::new(env.kafka, id, env.topology, env.stats.clone())?;
        let table = FinalTopic {
            topic: self.topic.as_str().into(),
            source: env.source.to_string(),
            encode: self.encode.clone(),
            schema,
            committed: committed_reader(env.kafka, env.group)?,
        };
        let late = env.late.unwrap_or(env.dead_letter);
        Ok(Box::new(
            WindowStage::new(
                table,
                self.window,
                txn,
                (env.topology, late),
                env.stats.clone(),
                env.timings.clone(),
            )
            .with_aggregate(self.make.clone()),
        ))
    }
}

/// A consumer of the group that never joins it: it only reads the group's
/// committed offsets (waiting for any pending transactional commit).
fn committed_reader(kafka: &KafkaConfig, group: &str) -> Result<BaseConsumer, SinkError> {
    Ok(kafka.consumer(group).create()?)
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// What the offset commit's metadata says of a partition: the offset it
/// was processed up to, and its watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub processed: i64,
    pub watermark_ms: i64,
}

impl Progress {
    fn to_metadata(self) -> String {
        format!(
            "sluice:1 processed={} watermark={}",
            self.processed, self.watermark_ms
        )
    }

    pub fn parse(metadata: &str) -> Option<Progress> {
        let rest = metadata.strip_prefix("sluice:1 ")?;
        let mut processed = None;
        let mut watermark_ms = None;
        for field in rest.split(' ') {
            match field.split_once('=')? {
                ("processed", v) => processed = v.parse().ok(),
                ("watermark", v) => watermark_ms = v.parse().ok(),
                _ => {}
            }
        }
        Some(Progress {
            processed: processed?,
            watermark_ms: watermark_ms?,
        })
    }
}

/// The window store of one group member: final windows go to the topic.
pub struct FinalTopic {
    topic: Arc<str>,
    source: String,
    encode: Encode,
    schema: SinkSchema,
    committed: BaseConsumer,
}

impl WindowTable for FinalTopic {
    fn claim(&mut self, partitions: &[i32]) -> Result<Vec<Claim>, SinkError> {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition(&self.source, p);
        }
        let committed = crate::kafka::blocking(|| self.committed.committed_offsets(tpl, TIMEOUT))?;
        let mut claims = Vec::new();
        for e in committed.elements_for_topic(&self.source) {
            let progress = Progress::parse(e.metadata());
            let next_offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            if next_offset.is_some() && progress.is_none() && !e.metadata().is_empty() {
                tracing::warn!(
                    partition = e.partition(),
                    metadata = e.metadata(),
                    "committed offset without sluice's window metadata; reading on from it"
                );
            }
            claims.push(Claim {
                partition: e.partition(),
                next_offset,
                watermark_ms: progress.map_or(i64::MIN, |p| p.watermark_ms),
                epoch: 0,
                processed: progress.map_or(-1, |p| p.processed),
            });
        }
        Ok(claims)
    }

    fn commit(
        &mut self,
        rows: &[Row],
        _closed: &[ClosedRow],
        positions: &[Position],
        txn: &mut Txn,
        group: &dyn Group,
    ) -> Result<(), SinkError> {
        for r in rows {
            let (key, value) =
                (self.encode)(&r.key, r.window, &r.partial, &self.schema).map_err(|e| {
                    SinkError::Config(format!(
                        "cannot encode a final window for topic {}: {e}",
                        self.topic
                    ))
                })?;
            let out = Output {
                topic: self.topic.clone(),
                key,
                value,
                timestamp_ms: r.window.end_ms - 1,
            };
            txn.send(&out)?;
        }
        if !rows.is_empty() {
            // A crash here leaves final windows in a transaction never committed.
            crate::failpoint::hit("final-windows-sent");
        }
        let mut tpl = TopicPartitionList::new();
        for p in positions.iter().filter(|p| p.next_offset >= 0) {
            let progress = Progress {
                processed: p.next_offset,
                watermark_ms: p.watermark_ms,
            };
            tpl.add_partition_offset(&self.source, p.partition, Offset::Offset(p.resume_offset))?;
            if let Some(mut e) = tpl.find_partition(&self.source, p.partition) {
                e.set_metadata(progress.to_metadata());
            }
        }
        txn.commit(&tpl, group)?;
        Ok(())
    }

    fn finals_only(&self) -> bool {
        true
    }

    fn owns_group_offsets(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_through_the_metadata() {
        let p = Progress {
            processed: 1234,
            watermark_ms: -5,
        };
        assert_eq!(Progress::parse(&p.to_metadata()), Some(p));
        assert_eq!(Progress::parse(""), None);
        assert_eq!(Progress::parse("someone else's"), None);
        assert_eq!(Progress::parse("sluice:1 processed=x watermark=1"), None);
    }
}
