//! A Kafka topic as a sink: each record encoded as Avro (the latest schema
//! of `<topic>-value`, `T`'s schema registered there at start) where it is
//! processed, and handed to the unit's producer. It commits with the
//! unit: in the Kafka transaction with the input offsets, or, when the unit
//! commits in a database, acknowledged before it does (at least once).

use std::sync::{Arc, OnceLock};

use serde::Serialize;

use super::{OpenSink, Sink, SinkEnv, SinkError, UnitWriter};
use crate::{
    avro::{AvroSchema, SinkSchema},
    operator::At,
    topology::{Domain, Ended, Output, Payload, SinkDesc, Stream, encode_for, ops::Ops},
};

/// Ends a stream in a topic.
pub trait ToTopic {
    /// Writes each record to `topic` as Avro with the latest schema of
    /// `<topic>-value` (the record type's schema is registered there).
    fn to_topic(self, topic: &str) -> Ended;

    /// As `to_topic`, to a topic that keeps each key's latest record
    /// (`cleanup.policy=compact`, where sluice creates it): for a table's
    /// changes, such as an aggregation's updates.
    fn to_compacted_topic(self, topic: &str) -> Ended;
}

impl<S, T, O> ToTopic for Stream<S, T, O>
where
    S: 'static,
    T: Serialize + AvroSchema + Send + 'static,
    O: Ops<S, T>,
{
    fn to_topic(self, topic: &str) -> Ended {
        self.graph().borrow_mut().schema(topic, T::SCHEMA);
        let name: Arc<str> = topic.into();
        let cache: Arc<OnceLock<SinkSchema>> = Arc::default();
        let desc = SinkDesc {
            label: format!("topic {topic}"),
            topics: vec![topic.to_string()],
            domain: Domain::Kafka,
            guarantee: String::new(),
        };
        let open = Arc::new(TopicSpec {
            topic: topic.to_string(),
        });
        self.into_sink(open, desc, move |item, ctx| {
            let value = encode_for(ctx.codec, &name, &cache, &item.value)?;
            Ok(Payload::Record(Output {
                topic: name.clone(),
                key: item.key,
                value,
                timestamp_ms: item.timestamp_ms,
            }))
        })
    }

    fn to_compacted_topic(self, topic: &str) -> Ended {
        {
            let graph = self.graph();
            let compacted = &mut graph.borrow_mut().compacted;
            if !compacted.iter().any(|t| t == topic) {
                compacted.push(topic.to_string());
            }
        }
        self.to_topic(topic)
    }
}

/// A topic sink's declaration.
pub struct TopicSpec {
    pub topic: String,
}

impl OpenSink for TopicSpec {
    fn open(&self, _: &SinkEnv<'_>) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(TopicSink {
            topic: self.topic.clone(),
        }))
    }

    fn schema_topic(&self) -> Option<&str> {
        Some(&self.topic)
    }
}

/// A topic sink of one group member.
pub struct TopicSink {
    topic: String,
}

impl Sink for TopicSink {
    fn write(
        &mut self,
        payload: &mut Payload,
        _: At,
        unit: &mut UnitWriter<'_>,
    ) -> Result<(), SinkError> {
        if let Payload::Record(out) = &*payload {
            unit.kafka
                .send(out)
                .map_err(|e| SinkError::new(&self.topic, true, e))?;
        }
        Ok(())
    }
}
