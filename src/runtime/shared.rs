//! What the worker's loop and its sender thread share: where partitions
//! must be read again after a failed unit (a rewind), and what the producer
//! refused of records that will be read again.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use super::WriteError;
use super::refused::{Refusal, Refusals};

/// What the loop and the sender thread share.
#[derive(Default)]
pub struct Shared {
    refusals: Mutex<Refusals>,
    pub any_refused: AtomicBool,
    pub rewind: Mutex<Rewind>,
    pub rewind_due: AtomicBool,
    /// Wakes a loop waiting for messages when a rewind is due.
    pub wake: tokio::sync::Notify,
}

#[derive(Default)]
pub struct Rewind {
    /// Where each partition restarts.
    pub positions: Vec<(i32, i64)>,
    pub generation: u64,
}

impl Shared {
    /// What the producer refused of this record when it was last handled.
    pub fn refusal(&self, partition: i32, offset: i64) -> Option<Refusal> {
        if !self.any_refused.load(Ordering::Acquire) {
            return None;
        }
        let refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        refusals.get(partition, offset)
    }

    /// Forgets refusals of records that are committed or handed over.
    pub fn forget_refusals(&self, done: impl Fn(i32, i64) -> bool) {
        if !self.any_refused.load(Ordering::Acquire) {
            return;
        }
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        refusals.forget(done);
        self.any_refused
            .store(!refusals.is_empty(), Ordering::Release);
    }

    pub fn absorb(&self, partition: i32, offset: i64, f: &WriteError) -> bool {
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let absorbed = refusals.absorb(partition, offset, f);
        self.any_refused
            .store(!refusals.is_empty(), Ordering::Release);
        absorbed
    }

    /// Where to seek back to, if a unit failed since the last call.
    pub fn take_rewind(&self) -> Option<Rewind> {
        // Checked per message: a plain load while nothing is due.
        if !self.rewind_due.load(Ordering::Acquire)
            || !self.rewind_due.swap(false, Ordering::AcqRel)
        {
            return None;
        }
        Some(std::mem::take(
            &mut *self.rewind.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }

    /// Resolves when a rewind may be due (check with `take_rewind`).
    pub async fn rewind_wanted(&self) {
        self.wake.notified().await
    }

    pub fn forget_rewinds(&self, revoked: &[i32]) {
        let mut r = self.rewind.lock().unwrap_or_else(|p| p.into_inner());
        r.positions.retain(|(p, _)| !revoked.contains(p));
    }
}

/// Adds positions, keeping the earliest per partition.
pub fn merge(into: &mut Vec<(i32, i64)>, more: impl IntoIterator<Item = (i32, i64)>) {
    for (partition, offset) in more {
        match into.iter_mut().find(|(p, _)| *p == partition) {
            Some((_, o)) => *o = (*o).min(offset),
            None => into.push((partition, offset)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_the_earliest_position_per_partition() {
        let mut into = vec![(0, 10), (1, 5)];
        merge(&mut into, [(1, 3), (2, 7), (0, 12)]);
        assert_eq!(into, vec![(0, 10), (1, 3), (2, 7)]);
    }

    #[test]
    fn a_rewind_is_taken_once() {
        let shared = Shared::default();
        assert!(shared.take_rewind().is_none());
        {
            let mut r = shared.rewind.lock().unwrap();
            r.positions = vec![(0, 4), (1, 9)];
            r.generation = 2;
        }
        shared.rewind_due.store(true, Ordering::Release);
        shared.forget_rewinds(&[1]);
        let r = shared.take_rewind().unwrap();
        assert_eq!((r.positions, r.generation), (vec![(0, 4)], 2));
        assert!(shared.take_rewind().is_none());
    }
}
