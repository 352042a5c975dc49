//! A versioned table in memory: each key's rows over time, so that a
//! record is joined with the row that was valid at its event time (Kafka
//! Streams' versioned stores, KIP-889). A row is valid from its record's
//! timestamp until a later record or a tombstone replaces it. History older
//! than the retention (behind the newest timestamp seen) is dropped, but a
//! key's row valid at that edge is kept, so lookups within the retention
//! are exact; a lookup older than that gets the oldest row kept and is
//! marked `Expired` for the caller to count.
//!
//! Most keys have one row and never change; they cost one `Version` and no
//! vector (`Rows::One`).

use std::{borrow::Borrow, collections::HashMap, hash::Hash};

/// One row of a key from `from_ms` on; `None` is a deletion.
#[derive(Debug, Clone, PartialEq)]
struct Version<V> {
    from_ms: i64,
    value: Option<V>,
}

#[derive(Debug, Clone, PartialEq)]
enum Rows<V> {
    One(Version<V>),
    /// Oldest first; at least two.
    Many(Vec<Version<V>>),
}

impl<V> Rows<V> {
    fn as_slice(&self) -> &[Version<V>] {
        match self {
            Rows::One(v) => std::slice::from_ref(v),
            Rows::Many(v) => v,
        }
    }
}

/// What a lookup found.
#[derive(Debug, PartialEq)]
pub enum Lookup<'a, V> {
    /// The row valid at the time asked.
    Found(&'a V),
    /// No row was valid then: never described, deleted, or described later.
    Absent,
    /// The time asked is older than the history kept: the oldest row kept
    /// (if it is not a deletion).
    Expired(Option<&'a V>),
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Applied,
    /// Older than the history kept and not the key's newest row: dropped.
    Expired,
}

#[derive(Debug, Clone)]
pub struct VersionedTable<K, V> {
    rows: HashMap<K, Rows<V>>,
    retention_ms: i64,
    /// The newest record timestamp seen: history is kept behind it.
    observed_ms: i64,
}

impl<K: Hash + Eq, V> VersionedTable<K, V> {
    pub fn new(retention: std::time::Duration) -> Self {
        VersionedTable {
            rows: HashMap::new(),
            retention_ms: i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
            observed_ms: i64::MIN,
        }
    }

    /// Keys with a row or a deletion kept.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Times before this are older than the history kept.
    fn cutoff(&self) -> i64 {
        self.observed_ms.saturating_sub(self.retention_ms)
    }

    /// A record of the table: `value` is the key's row from `from_ms` on
    /// (`None`: deleted). The same timestamp twice: the later record wins.
    pub fn put(&mut self, key: K, from_ms: i64, value: Option<V>) -> Put {
        self.observed_ms = self.observed_ms.max(from_ms);
        let cutoff = self.cutoff();
        let new = Version { from_ms, value };
        let Some(rows) = self.rows.get_mut(&key) else {
            if new.value.is_some() || from_ms >= cutoff {
                self.rows.insert(key, Rows::One(new));
            }
            return Put::Applied;
        };
        let newest = rows.as_slice().last().map_or(i64::MIN, |v| v.from_ms);
        if from_ms < cutoff && from_ms < newest {
            return Put::Expired;
        }
        let mut list = match std::mem::replace(rows, Rows::Many(Vec::new())) {
            Rows::One(v) => vec![v],
            Rows::Many(v) => v,
        };
        match list.binary_search_by_key(&from_ms, |v| v.from_ms) {
            Ok(i) => list[i] = new,
            Err(i) => list.insert(i, new),
        }
        // Keep the row valid at the cutoff and every later one.
        let valid_at_cutoff = list.partition_point(|v| v.from_ms <= cutoff);
        if valid_at_cutoff > 1 {
            list.drain(..valid_at_cutoff - 1);
        }
        if list.len() == 1 && list[0].value.is_none() && list[0].from_ms < cutoff {
            self.rows.remove(&key);
            return Put::Applied;
        }
        *rows = if list.len() == 1 {
            Rows::One(list.pop().expect("one"))
        } else {
            Rows::Many(list)
        };
        Put::Applied
    }

    /// The row of `key` valid at `at_ms`.
    pub fn get_at<Q>(&self, key: &Q, at_ms: i64) -> Lookup<'_, V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(rows) = self.rows.get(key) else {
            return if at_ms < self.cutoff() {
                Lookup::Expired(None)
            } else {
                Lookup::Absent
            };
        };
        let list = rows.as_slice();
        if at_ms < self.cutoff() {
            return Lookup::Expired(list.first().and_then(|v| v.value.as_ref()));
        }
        match list.partition_point(|v| v.from_ms <= at_ms) {
            0 => Lookup::Absent,
            i => list[i - 1]
                .value
                .as_ref()
                .map_or(Lookup::Absent, Lookup::Found),
        }
    }

    /// The newest row of `key`, whatever its time.
    pub fn latest<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.rows.get(key)?.as_slice().last()?.value.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const H: i64 = 3_600_000;

    fn table() -> VersionedTable<&'static str, &'static str> {
        VersionedTable::new(Duration::from_secs(24 * 3600))
    }

    #[test]
    fn a_record_joins_the_row_valid_at_its_time() {
        let mut t = table();
        t.put("d1", 100 * H, Some("north"));
        t.put("d1", 105 * H, Some("south"));
        assert_eq!(t.get_at(&"d1", 99 * H), Lookup::Absent, "not described yet");
        assert_eq!(t.get_at(&"d1", 100 * H), Lookup::Found(&"north"));
        assert_eq!(t.get_at(&"d1", 105 * H - 1), Lookup::Found(&"north"));
        assert_eq!(t.get_at(&"d1", 105 * H), Lookup::Found(&"south"));
        assert_eq!(t.get_at(&"d2", 105 * H), Lookup::Absent, "never described");
        assert_eq!(t.latest(&"d1"), Some(&"south"));
    }

    #[test]
    fn a_tombstone_ends_the_row_and_out_of_order_records_take_their_place() {
        let mut t = table();
        t.put("d1", 100 * H, Some("north"));
        t.put("d1", 110 * H, None);
        t.put("d1", 105 * H, Some("south"));
        assert_eq!(t.get_at(&"d1", 104 * H), Lookup::Found(&"north"));
        assert_eq!(t.get_at(&"d1", 107 * H), Lookup::Found(&"south"));
        assert_eq!(t.get_at(&"d1", 111 * H), Lookup::Absent);
        t.put("d1", 105 * H, Some("east"));
        assert_eq!(
            t.get_at(&"d1", 107 * H),
            Lookup::Found(&"east"),
            "same time: later wins"
        );
    }

    #[test]
    fn history_older_than_the_retention_goes_but_the_row_at_its_edge_stays() {
        let mut t = table();
        t.put("d1", 0, Some("a"));
        t.put("d1", 10 * H, Some("b"));
        t.put("d2", 0, Some("x"));
        t.put("d3", H, Some("gone"));
        t.put("d3", 2 * H, None);
        // Observed time moves to 40 h: the cutoff is 16 h.
        t.put("d1", 40 * H, Some("c"));
        assert_eq!(
            t.get_at(&"d1", 20 * H),
            Lookup::Found(&"b"),
            "valid at the edge"
        );
        assert_eq!(t.get_at(&"d1", 5 * H), Lookup::Expired(Some(&"b")));
        assert_eq!(
            t.get_at(&"d2", 30 * H),
            Lookup::Found(&"x"),
            "an old row that still holds"
        );
        assert_eq!(t.get_at(&"d9", 5 * H), Lookup::Expired(None));
        assert_eq!(t.put("d1", 5 * H, Some("late")), Put::Expired);
        assert_eq!(
            t.put("d4", 5 * H, Some("first")),
            Put::Applied,
            "a key's only row is kept"
        );
        assert_eq!(t.get_at(&"d4", 20 * H), Lookup::Found(&"first"));
        match &t.rows[&"d1"] {
            Rows::Many(v) => assert_eq!(v.len(), 2, "b at the edge and c: {v:?}"),
            Rows::One(v) => panic!("one row left: {v:?}"),
        }
        // A deletion older than the history, with nothing after it, removes the key.
        assert_eq!(t.len(), 4);
        t.put("d3", 2 * H, None);
        assert_eq!(t.len(), 3, "d3 is gone");
        assert_eq!(t.get_at(&"d3", 30 * H), Lookup::Absent);
    }
}
