//! The commit protocol with a fake participant and a fake group member:
//! aborts and rewinds, a seek that never took, claims and their retries,
//! fencing, and revocations in the middle of a unit.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, mpsc},
};

use rdkafka::{Offset, TopicPartitionList, consumer::ConsumerGroupMetadata, error::KafkaError};

use super::*;
use crate::runtime::{
    Claim, CommitError,
    chunk::Read,
    letters::{DeadLetter, Source},
    participant::{WriteError, Written},
};

#[derive(Default)]
struct Log {
    /// (partition, offset) of every record taken into a unit.
    writes: Vec<(i32, i64)>,
    /// Each committed unit's next offsets.
    commits: Vec<Vec<(i32, i64)>>,
    aborts: usize,
    claims: Vec<Vec<i32>>,
    releases: Vec<Vec<i32>>,
}

/// A participant that records what it is asked and fails when told to.
struct Fake {
    log: Arc<Mutex<Log>>,
    keeps: bool,
    /// Where each partition resumes, as a store would say on a claim.
    stored: Arc<Mutex<BTreeMap<i32, i64>>>,
    failing_commits: VecDeque<CommitError>,
    failing_claims: usize,
}

impl Participant for Fake {
    fn keeps_positions(&self) -> bool {
        self.keeps
    }

    fn claim(&mut self, partitions: &[i32], _: &dyn Group) -> Result<Vec<Claim>, CommitError> {
        if self.failing_claims > 0 {
            self.failing_claims -= 1;
            return Err(CommitError::Database("the store is down".into()));
        }
        self.log.lock().unwrap().claims.push(partitions.to_vec());
        let stored = self.stored.lock().unwrap();
        Ok(partitions
            .iter()
            .map(|&p| Claim {
                next_offset: stored.get(&p).copied(),
                ..Claim::fresh(p)
            })
            .collect())
    }

    fn write(
        &mut self,
        source: &Source<'_>,
        _: &mut [crate::topology::Emitted],
        _: Option<&DeadLetter>,
    ) -> Result<Written, WriteError> {
        self.log
            .lock()
            .unwrap()
            .writes
            .push((source.partition, source.offset));
        Ok(Written {
            outputs: 1,
            ..Written::default()
        })
    }

    fn commit(&mut self, unit: &Unit, _: &dyn Group) -> Result<Option<u64>, CommitError> {
        if unit.is_empty() {
            return Ok(None);
        }
        if let Some(e) = self.failing_commits.pop_front() {
            return Err(e);
        }
        let next = unit.next_offsets();
        self.stored.lock().unwrap().extend(next.iter().copied());
        self.log.lock().unwrap().commits.push(next);
        Ok(Some(0))
    }

    fn abort(&mut self, unit: &Unit) -> Rewind {
        self.log.lock().unwrap().aborts += 1;
        if self.keeps {
            Rewind::Claim(unit.first_offsets().into_iter().map(|(p, _)| p).collect())
        } else {
            Rewind::To(unit.first_offsets())
        }
    }

    fn release(&mut self, partitions: &[i32]) {
        self.log.lock().unwrap().releases.push(partitions.to_vec());
    }
}

/// An assignment: each partition's offset, and whether eager.
type Assignment = (Vec<(i32, Offset)>, bool);

/// A group member that records its assignments.
#[derive(Default)]
struct FakeMember {
    assigns: Mutex<Vec<Assignment>>,
}

impl Group for FakeMember {
    fn metadata(&self) -> Option<ConsumerGroupMetadata> {
        None
    }

    fn commit_offsets(&self, _: &TopicPartitionList, _: bool) -> Result<(), KafkaError> {
        Ok(())
    }
}

impl Member for FakeMember {
    fn assign(&self, tpl: &TopicPartitionList, eager: bool) -> Result<(), KafkaError> {
        let offsets = tpl
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
        self.assigns.lock().unwrap().push((offsets, eager));
        Ok(())
    }
}

struct Rig {
    committer: Committer,
    log: Arc<Mutex<Log>>,
    stored: Arc<Mutex<BTreeMap<i32, i64>>>,
    member: Arc<FakeMember>,
    shared: Arc<Shared>,
    stats: Arc<Stats>,
    used: SyncSender<Chunk>,
    _reused: Receiver<Chunk>,
}

fn rig(keeps: bool, failing_commits: Vec<CommitError>, failing_claims: usize) -> Rig {
    let log = Arc::new(Mutex::new(Log::default()));
    let stored = Arc::new(Mutex::new(BTreeMap::new()));
    let member = Arc::new(FakeMember::default());
    let shared = Arc::new(Shared::default());
    let fake = Fake {
        log: log.clone(),
        keeps,
        stored: stored.clone(),
        failing_commits: failing_commits.into(),
        failing_claims,
    };
    let settings = Settings {
        name: "t".into(),
        source: "in".into(),
        batch_size: 1_000_000,
        commit_interval: Duration::from_secs(3600),
        trace: None,
    };
    let stats = Arc::new(Stats::default());
    let committer = Committer::new(
        member.clone(),
        Box::new(fake),
        stats.clone(),
        Timings::disabled(),
        settings,
        shared.clone(),
    );
    let (used, reused) = mpsc::sync_channel(16);
    Rig {
        committer,
        log,
        stored,
        member,
        shared,
        stats,
        used,
        _reused: reused,
    }
}

fn chunk(records: &[(i32, i64)]) -> Chunk {
    let mut c = Chunk::default();
    for &(partition, offset) in records {
        let read = Read {
            partition,
            offset,
            timestamp_ms: 0,
            input: None,
        };
        c.push(read, &mut Vec::new(), None);
    }
    c
}

impl Rig {
    fn send(&mut self, records: &[(i32, i64)]) {
        self.committer
            .handle(Work::Chunk(chunk(records)), &self.used);
    }

    fn writes(&self) -> Vec<(i32, i64)> {
        std::mem::take(&mut self.log.lock().unwrap().writes)
    }

    fn commits(&self) -> Vec<Vec<(i32, i64)>> {
        self.log.lock().unwrap().commits.clone()
    }
}

fn kafka_down() -> CommitError {
    CommitError::Kafka(KafkaError::Flush(
        rdkafka::types::RDKafkaErrorCode::BrokerNotAvailable,
    ))
}

/// Traced records get their last steps, in order, when their unit
/// commits; an aborted unit's are dropped (read again, traced again).
#[test]
fn traced_records_get_their_steps_when_the_unit_commits() {
    let mut r = rig(false, vec![kafka_down()], 0);
    let trace = Arc::new(Trace::new(1));
    r.committer.settings.trace = Some(trace.clone());
    let records = [(0, 0), (0, 1), (0, 2), (0, 3)];
    let traced = || {
        let mut c = chunk(&records);
        for offset in [1, 3] {
            c.traced.push(Sample {
                partition: 0,
                offset,
                fetched_us: 1,
                processed_us: 2,
                handed_us: 3,
                ..Sample::default()
            });
        }
        Work::Chunk(c)
    };
    r.committer.handle(traced(), &r.used);
    r.committer.commit();
    assert!(trace.taken().is_empty(), "the aborted unit's samples");
    let rewind = r.shared.take_rewind().expect("a rewind");
    r.committer
        .handle(Work::Rewound(rewind.generation), &r.used);
    r.committer.handle(traced(), &r.used);
    r.committer.commit();
    let taken = trace.taken();
    assert_eq!(taken.iter().map(|s| s.offset).collect::<Vec<_>>(), [1, 3]);
    for s in &taken {
        let steps = s.steps();
        assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
        assert!(s.written_us > s.handed_us, "{s:?}");
    }
}

/// End-to-end latency is known for a unit's sampled records once it
/// commits; an aborted unit's samples are dropped (read again, sampled again).
#[test]
fn sampled_records_get_their_latency_when_the_unit_commits() {
    let mut r = rig(false, vec![kafka_down()], 0);
    let records: Vec<(i32, i64)> = (0..20).map(|o| (0, o)).collect();
    let span = Duration::from_secs(3600);
    r.send(&records);
    r.committer.commit();
    assert_eq!(r.stats.recent_e2e.quantiles(Instant::now(), span), None);
    let rewind = r.shared.take_rewind().expect("a rewind");
    r.committer
        .handle(Work::Rewound(rewind.generation), &r.used);
    r.send(&records);
    r.committer.commit();
    let q = r.stats.recent_e2e.quantiles(Instant::now(), span).unwrap();
    assert_eq!(
        q.count, 2,
        "the first record of the unit and one in 16 after it"
    );
}

#[test]
fn a_failed_commit_aborts_rewinds_and_drops_what_was_read_before_the_seek() {
    let mut r = rig(false, vec![kafka_down()], 0);
    r.send(&[(0, 10), (0, 11), (1, 5)]);
    r.committer.commit();
    assert_eq!(r.log.lock().unwrap().aborts, 1);
    let rewind = r.shared.take_rewind().expect("a rewind is asked for");
    assert_eq!(rewind.positions, vec![(0, 10), (1, 5)]);
    r.writes();
    // Read before the loop seeked: dropped.
    r.send(&[(0, 12), (1, 6)]);
    assert!(r.writes().is_empty());
    r.committer
        .handle(Work::Rewound(rewind.generation), &r.used);
    r.send(&[(0, 10), (0, 11), (1, 5)]);
    assert_eq!(r.writes(), vec![(0, 10), (0, 11), (1, 5)]);
    r.committer.commit();
    assert_eq!(r.commits(), vec![vec![(0, 12), (1, 6)]]);
}

#[test]
fn without_the_seek_nothing_after_the_gap_is_ever_committed() {
    let mut r = rig(false, vec![kafka_down()], 0);
    r.send(&[(0, 10), (2, 1)]);
    r.committer.commit();
    let rewind = r.shared.take_rewind().unwrap();
    assert_eq!(rewind.positions, vec![(0, 10), (2, 1)]);
    // The loop could not seek partition 0 (it ends the member instead of
    // saying it did); partition 2 it did.
    let _ = rewind;
    r.writes();
    r.send(&[(0, 11), (0, 12)]);
    r.committer.commit();
    r.committer.commit();
    assert!(r.writes().is_empty());
    assert!(r.commits().is_empty(), "nothing past the gap commits");
}

#[test]
fn claims_assign_at_the_stored_offsets_and_are_retried_after_a_failure() {
    let mut r = rig(true, Vec::new(), 1);
    r.stored.lock().unwrap().insert(0, 42);
    r.committer.handle(
        Work::Claim {
            partitions: vec![0, 1],
            eager: false,
        },
        &r.used,
    );
    assert!(
        r.member.assigns.lock().unwrap().is_empty(),
        "no record is read before its position is known"
    );
    assert!(r.committer.claim_at.is_some(), "retried later");
    r.committer.claim();
    let assigns = r.member.assigns.lock().unwrap().clone();
    assert_eq!(
        assigns,
        vec![(vec![(0, Offset::Offset(42)), (1, Offset::Beginning)], false)]
    );
    assert!(r.committer.claim_at.is_none());
}

#[test]
fn a_fenced_commit_claims_again_and_reads_on_from_what_the_store_says() {
    let fenced = CommitError::Fenced { partition: 0 };
    let mut r = rig(true, vec![fenced], 0);
    r.committer.handle(
        Work::Claim {
            partitions: vec![0],
            eager: false,
        },
        &r.used,
    );
    r.send(&[(0, 0), (0, 1), (0, 2)]);
    r.committer.commit();
    assert_eq!(r.log.lock().unwrap().aborts, 1);
    assert!(
        r.shared.take_rewind().is_none(),
        "no seek before the claim says where"
    );
    // Meanwhile another member committed up to 2.
    r.stored.lock().unwrap().insert(0, 2);
    r.writes();
    r.send(&[(0, 3)]);
    assert!(r.writes().is_empty(), "dropped until claimed again");
    r.committer.claim();
    let rewind = r.shared.take_rewind().unwrap();
    assert_eq!(rewind.positions, vec![(0, 2)]);
    assert_eq!(r.log.lock().unwrap().claims, vec![vec![0], vec![0]]);
}

#[test]
fn a_revoke_mid_unit_commits_what_was_handed_over_first() {
    let mut r = rig(false, Vec::new(), 0);
    r.send(&[(0, 1), (1, 7)]);
    let (done, answered) = mpsc::sync_channel(1);
    r.committer.handle(
        Work::Revoke {
            revoked: vec![1],
            lost: false,
            done,
        },
        &r.used,
    );
    answered.try_recv().expect("the revoke is answered");
    assert_eq!(r.commits(), vec![vec![(0, 2), (1, 8)]]);
    assert_eq!(r.log.lock().unwrap().releases, vec![vec![1]]);
}

#[test]
fn lost_partitions_are_dropped_not_committed() {
    let mut r = rig(false, Vec::new(), 0);
    r.send(&[(0, 1), (0, 2)]);
    let (done, answered) = mpsc::sync_channel(1);
    r.committer.handle(
        Work::Revoke {
            revoked: vec![0],
            lost: true,
            done,
        },
        &r.used,
    );
    answered.try_recv().unwrap();
    assert!(r.commits().is_empty());
    assert_eq!(r.log.lock().unwrap().aborts, 1);
    // Their next owner reads them from the committed offsets: no rewind here.
    assert!(r.shared.take_rewind().is_none());
}
