//! Stateful operators: one lifecycle, driven by the runtime where the unit
//! commits (the task thread), in input order. An operator takes over its
//! partitions' state when they are assigned (restored from a changelog, or
//! rebuilt by reading input again), folds each record into it, emits what
//! is due before every commit (`punctuate`), writes its state's changes
//! into the unit (`flush`), and on an abort forgets everything uncommitted
//! (the runtime claims the partitions again, which restores it). Every hook
//! but `process` has a default.
//!
//! Shipped: event-time windows (`window`) and operators over a key-value
//! store (`stateful`). A new one is an `OperatorSpec` (its declaration:
//! its stores, how it is restored) and an `Operator` (the hooks above),
//! added to a stream with `Stream::process_with`; `stateful` is the
//! smallest example.

pub mod aggregate;
pub mod stateful;
pub mod window;

use std::{any::Any, time::Duration};

use rdkafka::error::KafkaError;

/// Each partition's event time, shared by a topology's windows.
pub use crate::window::Watermarks as EventClock;

use crate::{
    avro::AvroCodec,
    commit::Claim,
    state::{ChangeWriter, Changelogs},
    topology::{Ctx, Downstream, Emitted, Failure, Item, Slot, StoreDesc, push},
    window::Late,
};

/// Where an input record was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub partition: i32,
    pub offset: i64,
}

/// What an operator's hooks may use: the codec, the downstream results of
/// the current record (or punctuation), the partitions' event time, and
/// where to say that the current record was too late.
pub struct OpCtx<'a> {
    pub codec: &'a AvroCodec,
    pub out: &'a mut Vec<Emitted>,
    pub clock: &'a mut EventClock,
    /// Wall-clock time, ms since the epoch (injected in tests).
    pub wall_ms: i64,
    /// Set by an operator when the current record missed its windows.
    pub late: &'a mut Vec<Late>,
    /// The current record was fetched no later than this (joins wait for
    /// their tables to hold what their topics had then).
    pub fetched: std::time::Instant,
}

impl OpCtx<'_> {
    /// Sends `item` on downstream.
    pub fn emit<T>(&mut self, to: &Downstream<T>, item: Item<T>) -> Result<(), Failure> {
        self.emit_to(&to.0, item)
    }

    pub(crate) fn emit_to<T>(&mut self, to: &Slot<T>, item: Item<T>) -> Result<(), Failure> {
        let mut ctx = Ctx {
            codec: self.codec,
            out: self.out,
        };
        push(to, item, &mut ctx)
    }
}

/// Opening an operator for one group member.
pub struct OperatorEnv<'a> {
    pub topology: &'a str,
    pub group: &'a str,
    /// The topic the member reads (its partitions are the stores').
    pub source: &'a str,
    /// Where stores are published for queries.
    pub stores: &'a crate::state::Stores,
    /// The tables the process reads, for joins.
    pub tables: &'a crate::table::Tables,
}

/// Why an operator could not be opened or restored.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// Reading a changelog failed; retrying may help.
    #[error("restoring store {store}: {source}")]
    Restore {
        store: String,
        #[source]
        source: crate::state::ReadError,
    },
    /// A changelog record does not decode as the store's types: the
    /// topic holds something else (a renamed type, another topology's).
    #[error("restoring store {store}: {reason}")]
    Corrupt { store: String, reason: String },
}

impl OperatorError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, OperatorError::Restore { .. })
    }
}

/// A stateful operator's declaration.
pub trait OperatorSpec: Send + Sync + 'static {
    /// Its stores, for listings, topic creation and checks.
    fn stores(&self) -> Vec<StoreDesc> {
        Vec::new()
    }
    /// Whether it rebuilds its state by reading input again after a restart
    /// (the committed offset is then the first record it still needs).
    fn rebuilds_from_input(&self) -> bool {
        false
    }
    /// Whether it sends records too late for it to the late topic.
    fn sends_late(&self) -> bool {
        false
    }
    /// The event-time clock it reads: (out-of-order allowance, idle timeout).
    fn clock(&self) -> Option<(Duration, Duration)> {
        None
    }
    /// One instance per group member.
    fn open(&self, env: &OperatorEnv<'_>) -> Box<dyn Operator>;
}

/// A partition taken over, as the operator sees it.
pub struct Assigned<'a> {
    pub claim: &'a Claim,
    pub changelogs: &'a mut dyn Changelogs,
    /// Where the changelogs are kept, for logs: topics, or a database.
    pub kept_in: &'a str,
}

/// A stateful operator of one group member.
pub trait Operator: Send {
    /// A partition is this member's now: restore its state.
    fn assigned(&mut self, _partition: Assigned<'_>) -> Result<(), OperatorError> {
        Ok(())
    }

    /// One record (an `Item<T>`, boxed) from `at`.
    fn process(
        &mut self,
        at: At,
        item: Box<dyn Any + Send>,
        ctx: &mut OpCtx<'_>,
    ) -> Result<(), Failure>;

    /// Before every commit, and on clock ticks: emit what is due.
    fn punctuate(&mut self, _ctx: &mut OpCtx<'_>) -> Result<(), Failure> {
        Ok(())
    }

    /// The first offset of `partition` it still needs after a restart
    /// (operators that rebuild from input).
    fn resume_offset(&self, _partition: i32) -> Option<i64> {
        None
    }

    /// Writes the unit's state changes (changelog records) into the unit.
    fn flush(&mut self, _out: &mut dyn ChangeWriter) -> Result<(), KafkaError> {
        Ok(())
    }

    /// The unit committed.
    fn committed(&mut self) {}

    /// The unit was aborted: drop all state; the partitions are claimed
    /// (and restored) again before reading goes on.
    fn abort(&mut self);

    /// These partitions are no longer this member's.
    fn release(&mut self, partitions: &[i32]);

    /// Whether a commit is due without input (windows closing by the clock).
    fn ticking(&self) -> bool {
        false
    }

    /// Entries it holds in memory (open windows, keys), for metrics.
    fn held(&self) -> u64 {
        0
    }

    /// A store's contents, for the test driver and queries.
    fn store(&self, _name: &str) -> Option<&dyn Any> {
        None
    }
}
