//! What the committer drives: a participant in a two-phase commit with
//! the input. The committer hands it each input record's results (which
//! open a unit), then has it commit the unit with the input positions it
//! covers, or abort it, and reads those records again. `task::Task` is
//! the participant a topology runs; the committer's tests use fakes.

use std::sync::Arc;

use super::{
    Claim, CommitError, Group,
    letters::{DeadLetter, Source},
    unit::Unit,
};
use crate::{sink::SinkError, topology::Emitted};

/// What taking one input record's results added to the unit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// Records for topics (counted once the unit commits).
    pub outputs: u64,
    /// The record was too late for its window and went to the late topic.
    pub late: bool,
    /// The record became a dead letter here (its reason), rather than
    /// on the consuming side.
    pub dead: Option<&'static str>,
    /// The operator that refused it, when one did.
    pub refused_by: Option<Arc<str>>,
}

/// After an abort: where to read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewind {
    /// Seek these partitions back to these offsets.
    To(Vec<(i32, i64)>),
    /// Claim these partitions again, then seek to what the claim says.
    Claim(Vec<i32>),
}

/// A record a participant could not take into its unit.
#[derive(Debug)]
pub struct WriteError {
    pub error: SinkError,
    /// The refused record was a dead letter, not an output.
    pub of_dead_letter: bool,
    pub topic: Arc<str>,
}

/// A commit participant, run on the member's task thread (its calls may
/// block).
pub trait Participant: Send {
    /// Whether it claims partitions on assignment before they are read.
    fn keeps_positions(&self) -> bool {
        false
    }

    /// Whether the group's committed offsets are its own (else the runtime
    /// mirrors its positions there, to show lag).
    fn owns_group_offsets(&self) -> bool {
        true
    }

    /// Whether it needs each input record's key, value and headers.
    fn needs_input(&self) -> bool {
        false
    }

    /// Takes over partitions, fencing their previous owner.
    fn claim(&mut self, partitions: &[i32], _group: &dyn Group) -> Result<Vec<Claim>, CommitError> {
        Ok(partitions.iter().map(|&p| Claim::fresh(p)).collect())
    }

    /// The records written next were fetched no later than `at`.
    fn fetched_by(&mut self, _at: std::time::Instant) {}

    /// Takes one input record's results (and dead letter) into the unit.
    fn write(
        &mut self,
        source: &Source<'_>,
        emitted: &mut [Emitted],
        dead: Option<&DeadLetter>,
    ) -> Result<Written, WriteError>;

    /// Commits the unit with the input positions it covers; gives the
    /// rows written at commit, or `None` when there was nothing to commit.
    fn commit(&mut self, unit: &Unit, group: &dyn Group) -> Result<Option<u64>, CommitError>;

    /// Drops the unit.
    fn abort(&mut self, unit: &Unit) -> Rewind;

    /// These partitions are no longer this member's: forget them.
    fn release(&mut self, _partitions: &[i32]) {}

    /// Whether a commit is due although no input came (windows closing by
    /// the clock).
    fn wants_commit(&mut self) -> bool {
        false
    }

    /// How long the parts of the last Kafka commit took, where known.
    fn commit_parts(&self) -> Option<crate::commit::CommitParts> {
        None
    }
}
