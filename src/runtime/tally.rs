//! What a unit of work produced, added to the topology's counters only once
//! the unit commits. An aborted unit is read again, so counting at handling
//! time counted its outputs and dead letters twice; counted at commit, the
//! counters say what the sink and the dead-letter topic hold.

use std::sync::atomic::Ordering;

use crate::stats::Stats;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    pub outputs: u64,
    pub late: u64,
    /// Dead letters by reason; a handful of reasons, so a short list.
    dead: Vec<(&'static str, u64)>,
    /// Of them, refused by an operator, by its name.
    refused: Vec<(std::sync::Arc<str>, u64)>,
}

impl Tally {
    pub fn dead_letter(&mut self, kind: &'static str) {
        match self.dead.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.dead.push((kind, 1)),
        }
    }

    pub fn refused_by(&mut self, operator: &std::sync::Arc<str>) {
        match self.refused.iter_mut().find(|(o, _)| o == operator) {
            Some((_, n)) => *n += 1,
            None => self.refused.push((operator.clone(), 1)),
        }
    }

    /// The unit committed: its counts go to `stats`, and this starts over.
    pub fn committed(&mut self, stats: &Stats) {
        stats.records_out.fetch_add(self.outputs, Ordering::Relaxed);
        stats.late.fetch_add(self.late, Ordering::Relaxed);
        for &(kind, n) in &self.dead {
            stats.count_dead_letters(kind, n);
        }
        for (op, n) in &self.refused {
            stats.count_refused(op, *n);
        }
        self.clear();
    }

    /// The unit was aborted: it is read again and counted then.
    pub fn clear(&mut self) {
        self.outputs = 0;
        self.late = 0;
        self.dead.clear();
        self.refused.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reach_the_stats_only_when_committed() {
        let stats = Stats::default();
        let mut t = Tally {
            outputs: 3,
            ..Tally::default()
        };
        t.dead_letter("validation");
        t.clear();
        t.outputs = 2;
        t.late = 1;
        t.dead_letter("validation");
        t.dead_letter("bad_magic_byte");
        t.dead_letter("validation");
        t.outputs += 5;
        t.dead_letter("bad_magic_byte");
        t.committed(&stats);
        assert_eq!(t, Tally::default());
        assert_eq!(stats.records_out.load(Ordering::Relaxed), 7);
        assert_eq!(stats.late.load(Ordering::Relaxed), 1);
        assert_eq!(stats.dead_letters.load(Ordering::Relaxed), 4);
        let by_kind: Vec<_> = stats.dead_letters_by_kind().into_iter().collect();
        assert_eq!(by_kind, vec![("bad_magic_byte", 2), ("validation", 2)]);
    }
}
