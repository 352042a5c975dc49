//! A Kafka topic as a sink: each unit's records, its dead letters and its
//! input offsets commit in one transaction (exactly-once, EOS v2: the
//! offsets go with the consumer group's metadata, so a zombie is fenced), or
//! the offsets commit once every record is acknowledged (at-least-once).

pub mod deliveries;
pub mod txn;

use std::sync::Arc;

use serde::{Serialize, de::DeserializeOwned};

pub use deliveries::serve_deliveries;
pub use txn::Txn;

use super::{
    DeadLetter, Group, Rewind, Sink, SinkEnv, SinkError, SinkSpec, Source, Topology, Unit,
    WriteError, Written,
};
use crate::topology::{BuildError, Emitted, Guarantee, Ops, Stream};

/// Finishes a declaration with a topic sink.
pub trait ToTopic {
    /// Writes Avro values to `topic` with the latest schema of
    /// `<topic>-value`, and finishes the declaration.
    fn to_topic(self, topic: &str) -> Result<Topology, BuildError>;
}

impl<S, T, O> ToTopic for Stream<S, T, O>
where
    S: DeserializeOwned + Send + Sync + 'static,
    T: Serialize + Send + Sync + 'static,
    O: Ops<S, T>,
{
    fn to_topic(self, topic: &str) -> Result<Topology, BuildError> {
        let declared = self.records_for(topic)?;
        Ok(Topology::new(
            declared,
            Arc::new(TopicSpec {
                topic: topic.to_string(),
            }),
        ))
    }
}

/// The declaration of a topic sink.
pub struct TopicSpec {
    pub topic: String,
}

impl SinkSpec for TopicSpec {
    fn describe(&self) -> String {
        self.topic.clone()
    }

    fn topics(&self) -> Vec<String> {
        vec![self.topic.clone()]
    }

    fn transactional(&self, guarantee: Guarantee) -> bool {
        guarantee == Guarantee::ExactlyOnce
    }

    fn guarantee(&self) -> &'static str {
        "exactly-once by default (--guarantee at-least-once)"
    }

    fn open(&self, env: &SinkEnv<'_>) -> Result<Box<dyn Sink>, SinkError> {
        let id = self
            .transactional(env.guarantee)
            .then_some(env.transactional_id);
        let txn = Txn::new(env.kafka, id, env.topology, env.stats.clone())?;
        Ok(Box::new(TopicSink {
            txn,
            source: env.source.to_string(),
        }))
    }
}

/// A topic sink of one group member.
pub struct TopicSink {
    txn: Txn,
    /// The one topic the member consumes, whose offsets it commits.
    source: String,
}

impl Sink for TopicSink {
    fn write(
        &mut self,
        _: &Source<'_>,
        emitted: &[Emitted],
        dead: Option<&DeadLetter>,
    ) -> Result<Written, WriteError> {
        if let Some(d) = dead {
            self.txn.send_letter(d).map_err(|error| WriteError {
                error,
                of_dead_letter: true,
                topic: d.topic.clone(),
            })?;
        }
        let mut outputs = 0;
        for e in emitted {
            if let Emitted::Record(out) = e {
                self.txn.send(out).map_err(|error| WriteError {
                    error,
                    of_dead_letter: false,
                    topic: out.topic.clone(),
                })?;
                outputs += 1;
            }
        }
        Ok(Written {
            outputs,
            late: false,
        })
    }

    fn commit(&mut self, unit: &Unit, group: &dyn Group) -> Result<Option<u64>, SinkError> {
        if unit.is_empty() {
            return Ok(None);
        }
        let offsets = unit.offsets(&self.source)?;
        self.txn.commit(&offsets, group)?;
        Ok(Some(0))
    }

    fn abort(&mut self, unit: &Unit) -> Rewind {
        self.txn.abort();
        Rewind::To(unit.first_offsets())
    }
}
