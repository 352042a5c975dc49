//! Seeking partitions back after a failed unit. The task thread drops
//! every record of those partitions until the loop says it has seeked, so
//! a seek that did not take must never be reported as done: records after
//! the gap would then be taken and committed past records never sent. A
//! failed seek is retried; a partition given up meanwhile is its new
//! owner's (who starts from the committed offset); one still owned that
//! cannot be seeked ends the member, whose successor starts afresh from
//! the committed positions.

use std::time::Duration;

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{Consumer, ConsumerContext, StreamConsumer},
    error::KafkaResult,
};

/// What seeking back needs of the consumer.
pub trait Seek {
    fn seek_to(&self, partition: i32, offset: i64) -> KafkaResult<()>;
    /// Whether the partition is still assigned to this member.
    fn owns(&self, partition: i32) -> bool;
}

/// A partition that is still this member's and could not be seeked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot seek partition {partition} back to offset {offset}: {reason}")]
pub struct SeekFailed {
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
}

/// Attempts per partition, with this much more wait before each retry.
const ATTEMPTS: u32 = 6;
const STEP: Duration = Duration::from_millis(100);

/// Seeks each partition back, retrying each a few times.
pub fn seek_back(
    seeker: &impl Seek,
    positions: &[(i32, i64)],
    sleep: impl Fn(Duration),
) -> Result<(), SeekFailed> {
    for &(partition, offset) in positions {
        let mut attempt = 0;
        loop {
            match seeker.seek_to(partition, offset) {
                Ok(()) => break,
                Err(_) if !seeker.owns(partition) => {
                    tracing::info!(
                        partition,
                        offset,
                        "partition revoked before it could be seeked back; its new owner reads it from the committed offset"
                    );
                    break;
                }
                Err(e) if attempt + 1 >= ATTEMPTS => {
                    return Err(SeekFailed {
                        partition,
                        offset,
                        reason: e.to_string(),
                    });
                }
                Err(e) => {
                    attempt += 1;
                    tracing::info!(partition, offset, error = %e, attempt, "cannot seek back yet; retrying");
                    sleep(STEP * attempt);
                }
            }
        }
    }
    Ok(())
}

/// A member's consumer of `topic`, as a `Seek`.
pub struct Member<'a, C: ConsumerContext + 'static> {
    pub consumer: &'a StreamConsumer<C>,
    pub topic: &'a str,
}

impl<C: ConsumerContext + 'static> Seek for Member<'_, C> {
    fn seek_to(&self, partition: i32, offset: i64) -> KafkaResult<()> {
        self.consumer.seek(
            self.topic,
            partition,
            Offset::Offset(offset),
            Duration::from_secs(10),
        )
    }

    fn owns(&self, partition: i32) -> bool {
        self.consumer
            .assignment()
            .map(|a: TopicPartitionList| a.find_partition(self.topic, partition).is_some())
            .unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use rdkafka::error::KafkaError;

    use super::*;

    struct Fake {
        fails: RefCell<Vec<(i32, u32)>>,
        owned: Vec<i32>,
        sought: RefCell<Vec<(i32, i64)>>,
    }

    impl Seek for Fake {
        fn seek_to(&self, partition: i32, offset: i64) -> KafkaResult<()> {
            let mut fails = self.fails.borrow_mut();
            if let Some(f) = fails.iter_mut().find(|(p, n)| *p == partition && *n > 0) {
                f.1 -= 1;
                return Err(KafkaError::Seek("erroneous state".into()));
            }
            self.sought.borrow_mut().push((partition, offset));
            Ok(())
        }

        fn owns(&self, partition: i32) -> bool {
            self.owned.contains(&partition)
        }
    }

    fn fake(fails: Vec<(i32, u32)>, owned: Vec<i32>) -> Fake {
        Fake {
            fails: RefCell::new(fails),
            owned,
            sought: RefCell::default(),
        }
    }

    #[test]
    fn a_seek_that_fails_a_while_is_retried_until_it_takes() {
        let f = fake(vec![(1, 3)], vec![0, 1]);
        let slept = Cell::new(0);
        seek_back(&f, &[(0, 10), (1, 20)], |_| slept.set(slept.get() + 1)).unwrap();
        assert_eq!(*f.sought.borrow(), vec![(0, 10), (1, 20)]);
        assert_eq!(slept.get(), 3);
    }

    #[test]
    fn a_partition_still_owned_that_cannot_be_seeked_is_an_error() {
        let f = fake(vec![(1, 100)], vec![0, 1]);
        let e = seek_back(&f, &[(0, 10), (1, 20)], |_| {}).unwrap_err();
        assert_eq!((e.partition, e.offset), (1, 20));
        assert!(e.reason.contains("erroneous state"), "{e}");
    }

    #[test]
    fn a_partition_revoked_meanwhile_is_left_to_its_new_owner() {
        let f = fake(vec![(1, 100)], vec![0]);
        seek_back(&f, &[(1, 20), (0, 10)], |_| {}).unwrap();
        assert_eq!(*f.sought.borrow(), vec![(0, 10)]);
    }
}
