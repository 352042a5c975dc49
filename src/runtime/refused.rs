//! Records whose results the producer refuses for good: larger than
//! `message.max.bytes`. Retrying cannot help, and retrying forever would stop
//! the partition, so the input goes to the dead-letter topic with the reason
//! instead; if the producer refuses that copy too (the input itself is too
//! large), the dead letter goes without key and value, and its source
//! topic, partition and offset say where to find them.

use std::collections::HashMap;

use rdkafka::{error::KafkaError, types::RDKafkaErrorCode};

use super::{DeadLetter, WriteError};
use crate::topology::Emitted;

/// `sluice.error.kind` of a record whose result the producer refused.
pub const KIND: &str = "refused_by_producer";
/// On a dead letter sent without the original key and value: why.
pub const OMITTED: &str = "sluice.value.omitted";

/// Errors no retry of the same record can get past.
fn is_refusal(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
    )
}

/// What the producer refused of one input record so far, i.e. what to send
/// in its place when the record is handled again.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Refusal {
    /// Why an output was refused: send a dead letter instead of the outputs.
    pub output: Option<String>,
    /// Why a dead letter was refused: send it without key and value.
    pub dead_letter: Option<String>,
}

impl Refusal {
    /// Takes in a failure; false if it is no refusal, or one that nothing
    /// more can be left out of, so that the unit must be aborted and retried.
    pub fn absorb(&mut self, f: &WriteError) -> bool {
        if !f.error.kafka().is_some_and(is_refusal) {
            return false;
        }
        let reason = format!(
            "the producer refused a record for {} ({}): raise the producer's message.max.bytes and the topic's max.message.bytes, or make the record smaller",
            f.topic,
            f.error
                .kafka()
                .map_or_else(|| f.error.to_string(), ToString::to_string)
        );
        let slot = if f.of_dead_letter {
            &mut self.dead_letter
        } else {
            &mut self.output
        };
        slot.replace(reason).is_none()
    }

    /// Whether the record's outputs are replaced, so it need not be processed.
    pub fn replaces_outputs(&self) -> bool {
        self.output.is_some()
    }

    /// Replaces the record's results with what can be sent: `letter` makes a
    /// dead letter of the input from a kind and a reason.
    pub fn apply(
        &self,
        dead: &mut Option<DeadLetter>,
        outputs: &mut Vec<Emitted>,
        letter: impl FnOnce(&'static str, String) -> DeadLetter,
    ) {
        if let Some(reason) = &self.output {
            outputs.clear();
            *dead = Some(letter(KIND, reason.clone()));
        }
        if let (Some(reason), Some(d)) = (&self.dead_letter, dead.as_mut())
            && !d.headers.iter().any(|(k, _)| *k == OMITTED)
        {
            d.key = None;
            d.value = None;
            d.original.clear();
            d.headers.push((
                OMITTED,
                format!("{reason}; the original key and value are at the source topic, partition and offset"),
            ));
        }
    }
}

/// Refusals of records to be read again, by (partition, offset).
#[derive(Debug, Default)]
pub struct Refusals(HashMap<(i32, i64), Refusal>);

impl Refusals {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What was refused of this record when it was last handled.
    pub fn get(&self, partition: i32, offset: i64) -> Option<Refusal> {
        self.0.get(&(partition, offset)).cloned()
    }

    /// Forgets records that are committed, or whose partition is gone:
    /// `done(partition, offset)`.
    pub fn forget(&mut self, done: impl Fn(i32, i64) -> bool) {
        self.0.retain(|&(p, o), _| !done(p, o));
    }

    /// Takes in a failure of a record that will be read again; false as
    /// `Refusal::absorb`.
    pub fn absorb(&mut self, partition: i32, offset: i64, f: &WriteError) -> bool {
        let mut r = self.0.remove(&(partition, offset)).unwrap_or_default();
        let absorbed = r.absorb(f);
        if r != Refusal::default() {
            self.0.insert((partition, offset), r);
        }
        absorbed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn failed(e: KafkaError, of_dead_letter: bool) -> WriteError {
        let topic = if of_dead_letter { "in.dlq" } else { "out" };
        WriteError {
            error: crate::sink::SinkError::new(topic, true, e),
            of_dead_letter,
            topic: Arc::from(topic),
        }
    }

    fn too_large(of_dead_letter: bool) -> WriteError {
        failed(
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
            of_dead_letter,
        )
    }

    fn letter(kind: &'static str, reason: String) -> DeadLetter {
        DeadLetter {
            kind,
            topic: Arc::from("in.dlq"),
            key: Some(b"k".to_vec()),
            value: Some(b"the input".to_vec()),
            timestamp_ms: 1,
            original: vec![("trace".into(), Some(vec![0, 255]))],
            headers: vec![("sluice.error.kind", kind.to_string()), ("m", reason)],
            operator: None,
        }
    }

    fn output() -> Emitted {
        Emitted {
            to: crate::topology::Target::Sink(0),
            payload: crate::topology::Payload::Record(crate::topology::Output {
                topic: Arc::from("out"),
                key: None,
                value: vec![0; 10],
                timestamp_ms: 1,
            }),
        }
    }

    #[test]
    fn a_refused_output_becomes_a_dead_letter_with_the_input() {
        let mut r = Refusal::default();
        assert!(r.absorb(&too_large(false)));
        assert!(r.replaces_outputs());
        let (mut dead, mut outputs) = (None, vec![output(), output()]);
        r.apply(&mut dead, &mut outputs, letter);
        assert!(outputs.is_empty());
        let d = dead.unwrap();
        assert_eq!(d.value.as_deref(), Some(&b"the input"[..]));
        assert_eq!(d.original.len(), 1, "the input's own headers stay");
        assert_eq!(d.headers[0].1, KIND);
        assert!(d.headers[1].1.contains("record for out"), "{:?}", d.headers);
        assert!(d.headers[1].1.contains("message.max.bytes"));
    }

    #[test]
    fn a_refused_dead_letter_goes_without_key_and_value_once() {
        let mut r = Refusal::default();
        assert!(r.absorb(&too_large(false)));
        assert!(r.absorb(&too_large(true)));
        let (mut dead, mut outputs) = (None, vec![output()]);
        r.apply(&mut dead, &mut outputs, letter);
        // Applying again (the record read again) changes nothing more.
        r.apply(&mut dead, &mut outputs, letter);
        let d = dead.unwrap();
        assert!(d.key.is_none() && d.value.is_none() && d.original.is_empty());
        assert_eq!(d.headers.iter().filter(|(k, _)| *k == OMITTED).count(), 1);
        assert_eq!(d.headers[0].1, KIND, "the first refusal's kind stays");
        // Nothing more to leave out: the unit must be retried.
        assert!(!r.absorb(&too_large(true)));
    }

    #[test]
    fn a_processing_failure_keeps_its_kind_when_stripped() {
        let mut r = Refusal::default();
        assert!(r.absorb(&too_large(true)));
        assert!(!r.replaces_outputs(), "the record is processed again");
        let mut dead = Some(letter("corrupt_avro", "bad bytes".into()));
        r.apply(&mut dead, &mut vec![], letter);
        let d = dead.unwrap();
        assert_eq!(d.headers[0].1, "corrupt_avro");
        assert!(d.value.is_none());
    }

    #[test]
    fn other_failures_are_no_refusals() {
        let mut refusals = Refusals::default();
        let f = failed(
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
            false,
        );
        assert!(!refusals.absorb(0, 5, &f));
        assert!(refusals.0.is_empty());
        assert!(refusals.absorb(0, 6, &too_large(false)));
        assert!(refusals.get(0, 6).unwrap().replaces_outputs());
        // Kept until committed: a later refusal of the same record adds to it.
        assert!(refusals.absorb(0, 6, &too_large(true)));
        assert!(refusals.get(0, 6).unwrap().dead_letter.is_some());
        refusals.forget(|p, o| p == 0 && o < 7);
        assert!(refusals.get(0, 6).is_none() && refusals.is_empty());
    }
}
