//! A versioned table in memory: each key's rows over time, so that a
//! record is joined with the row that was valid at its event time (Kafka
//! Streams' versioned stores, KIP-889). A row is valid from its record's
//! timestamp until a later record or a tombstone replaces it. History older
//! than the retention (behind the newest timestamp seen) is dropped, but a
//! key's row valid at that edge is kept, so lookups within the retention
//! are exact; a lookup older than that gets the oldest row kept and is
//! marked `Expired` for the caller to count.
//!
//! Keys and values are bytes (values as their topic has them, decoded by
//! the caller on lookup), and each row is one allocation — its time, key
//! and value together — in a hash table of 24-byte entries: a million
//! small rows cost about 130 MB, where typed values with their own strings
//! in a `HashMap` cost three times that. Most keys have one row and never
//! change (`Rows::One`). `hashbrown::HashTable` (std's map underneath)
//! lets the table hold rows whose key is inside them.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder as RandomState, HashTable};

/// One row: `from_ms` (8 bytes LE), deleted (1), key length (4 LE), key,
/// value.
type Row = Box<[u8]>;

const HEAD: usize = 13;

fn row(from_ms: i64, key: &[u8], value: Option<&[u8]>) -> Row {
    let value = value.unwrap_or_default();
    let mut r = Vec::with_capacity(HEAD + key.len() + value.len());
    r.extend_from_slice(&from_ms.to_le_bytes());
    r.push(0);
    r.extend_from_slice(&(key.len() as u32).to_le_bytes());
    r.extend_from_slice(key);
    r.extend_from_slice(value);
    r.into_boxed_slice()
}

fn from_ms(r: &[u8]) -> i64 {
    i64::from_le_bytes(r[..8].try_into().expect("8 bytes"))
}

fn key_len(r: &[u8]) -> usize {
    u32::from_le_bytes(r[9..HEAD].try_into().expect("4 bytes")) as usize
}

fn key_of(r: &[u8]) -> &[u8] {
    &r[HEAD..HEAD + key_len(r)]
}

/// The row's value; `None` for a deletion.
fn value_of(r: &[u8]) -> Option<&[u8]> {
    (r[8] == 0).then(|| &r[HEAD + key_len(r)..])
}

fn deleting(from_ms_: i64, key: &[u8]) -> Row {
    let mut r = row(from_ms_, key, None).into_vec();
    r[8] = 1;
    r.into_boxed_slice()
}

#[derive(Debug, Clone, PartialEq)]
enum Rows {
    One(Row),
    /// Oldest first; at least two.
    Many(Box<[Row]>),
}

impl Rows {
    fn as_slice(&self) -> &[Row] {
        match self {
            Rows::One(r) => std::slice::from_ref(r),
            Rows::Many(v) => v,
        }
    }

    fn key(&self) -> &[u8] {
        key_of(&self.as_slice()[0])
    }
}

/// What a lookup found.
#[derive(Debug, PartialEq)]
pub enum Lookup<'a, V: ?Sized> {
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

#[derive(Debug)]
pub struct VersionedTable {
    rows: HashTable<Rows>,
    hasher: RandomState,
    retention_ms: i64,
    /// The newest record timestamp seen: history is kept behind it.
    observed_ms: i64,
}

impl VersionedTable {
    pub fn new(retention: std::time::Duration) -> Self {
        VersionedTable {
            rows: HashTable::new(),
            hasher: RandomState::default(),
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
    pub fn put(&mut self, key: &[u8], from_ms_: i64, value: Option<&[u8]>) -> Put {
        self.observed_ms = self.observed_ms.max(from_ms_);
        let cutoff = self.cutoff();
        let new = match value {
            Some(v) => row(from_ms_, key, Some(v)),
            None => deleting(from_ms_, key),
        };
        let hash = self.hasher.hash_one(key);
        let hasher = &self.hasher;
        let mut entry = match self.rows.find_entry(hash, |r| r.key() == key) {
            Ok(entry) => entry,
            Err(absent) => {
                if value.is_some() || from_ms_ >= cutoff {
                    absent
                        .into_table()
                        .insert_unique(hash, Rows::One(new), |r| hasher.hash_one(r.key()));
                }
                return Put::Applied;
            }
        };
        let newest = entry
            .get()
            .as_slice()
            .last()
            .map_or(i64::MIN, |r| from_ms(r));
        if from_ms_ < cutoff && from_ms_ < newest {
            return Put::Expired;
        }
        let old = std::mem::replace(entry.get_mut(), Rows::Many(Box::default()));
        let mut list = match old {
            Rows::One(r) => vec![r],
            Rows::Many(v) => v.into_vec(),
        };
        match list.binary_search_by_key(&from_ms_, |r| from_ms(r)) {
            Ok(i) => list[i] = new,
            Err(i) => list.insert(i, new),
        }
        // Keep the row valid at the cutoff and every later one.
        let valid_at_cutoff = list.partition_point(|r| from_ms(r) <= cutoff);
        if valid_at_cutoff > 1 {
            list.drain(..valid_at_cutoff - 1);
        }
        if list.len() == 1 && value_of(&list[0]).is_none() && from_ms(&list[0]) < cutoff {
            entry.remove();
            return Put::Applied;
        }
        *entry.get_mut() = if list.len() == 1 {
            Rows::One(list.pop().expect("one"))
        } else {
            Rows::Many(list.into_boxed_slice())
        };
        Put::Applied
    }

    fn find(&self, key: &[u8]) -> Option<&Rows> {
        self.rows
            .find(self.hasher.hash_one(key), |r| r.key() == key)
    }

    /// The value of `key`'s row valid at `at_ms`.
    pub fn get_at(&self, key: &[u8], at_ms: i64) -> Lookup<'_, [u8]> {
        let expired = at_ms < self.cutoff();
        let Some(rows) = self.find(key) else {
            return if expired {
                Lookup::Expired(None)
            } else {
                Lookup::Absent
            };
        };
        let list = rows.as_slice();
        if expired {
            return Lookup::Expired(list.first().and_then(|r| value_of(r)));
        }
        match list.partition_point(|r| from_ms(r) <= at_ms) {
            0 => Lookup::Absent,
            i => value_of(&list[i - 1]).map_or(Lookup::Absent, Lookup::Found),
        }
    }

    /// The value of `key`'s newest row, whatever its time.
    pub fn latest(&self, key: &[u8]) -> Option<&[u8]> {
        value_of(self.find(key)?.as_slice().last()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const H: i64 = 3_600_000;

    fn table() -> VersionedTable {
        VersionedTable::new(Duration::from_secs(24 * 3600))
    }

    fn put(t: &mut VersionedTable, key: &str, at: i64, value: Option<&str>) -> Put {
        t.put(key.as_bytes(), at, value.map(str::as_bytes))
    }

    fn at<'a>(t: &'a VersionedTable, key: &str, at: i64) -> Lookup<'a, str> {
        match t.get_at(key.as_bytes(), at) {
            Lookup::Found(v) => Lookup::Found(std::str::from_utf8(v).unwrap()),
            Lookup::Absent => Lookup::Absent,
            Lookup::Expired(v) => Lookup::Expired(v.map(|v| std::str::from_utf8(v).unwrap())),
        }
    }

    #[test]
    fn a_row_holds_its_time_key_and_value_in_one_allocation() {
        let r = row(-5, b"dev", Some(b"site"));
        assert_eq!(
            (from_ms(&r), key_of(&r), value_of(&r)),
            (-5, &b"dev"[..], Some(&b"site"[..]))
        );
        let d = deleting(7, b"dev");
        assert_eq!(
            (from_ms(&d), key_of(&d), value_of(&d)),
            (7, &b"dev"[..], None)
        );
        let empty = row(1, b"k", Some(b""));
        assert_eq!(
            value_of(&empty),
            Some(&b""[..]),
            "an empty value is not a deletion"
        );
    }

    #[test]
    fn a_record_joins_the_row_valid_at_its_time() {
        let mut t = table();
        put(&mut t, "d1", 100 * H, Some("north"));
        put(&mut t, "d1", 105 * H, Some("south"));
        assert_eq!(at(&t, "d1", 99 * H), Lookup::Absent, "not described yet");
        assert_eq!(at(&t, "d1", 100 * H), Lookup::Found("north"));
        assert_eq!(at(&t, "d1", 105 * H - 1), Lookup::Found("north"));
        assert_eq!(at(&t, "d1", 105 * H), Lookup::Found("south"));
        assert_eq!(at(&t, "d2", 105 * H), Lookup::Absent, "never described");
        assert_eq!(t.latest(b"d1"), Some(&b"south"[..]));
    }

    #[test]
    fn a_tombstone_ends_the_row_and_out_of_order_records_take_their_place() {
        let mut t = table();
        put(&mut t, "d1", 100 * H, Some("north"));
        put(&mut t, "d1", 110 * H, None);
        put(&mut t, "d1", 105 * H, Some("south"));
        assert_eq!(at(&t, "d1", 104 * H), Lookup::Found("north"));
        assert_eq!(at(&t, "d1", 107 * H), Lookup::Found("south"));
        assert_eq!(at(&t, "d1", 111 * H), Lookup::Absent);
        put(&mut t, "d1", 105 * H, Some("east"));
        assert_eq!(
            at(&t, "d1", 107 * H),
            Lookup::Found("east"),
            "same time: later wins"
        );
    }

    #[test]
    fn history_older_than_the_retention_goes_but_the_row_at_its_edge_stays() {
        let mut t = table();
        put(&mut t, "d1", 0, Some("a"));
        put(&mut t, "d1", 10 * H, Some("b"));
        put(&mut t, "d2", 0, Some("x"));
        put(&mut t, "d3", H, Some("gone"));
        put(&mut t, "d3", 2 * H, None);
        // Observed time moves to 40 h: the cutoff is 16 h.
        put(&mut t, "d1", 40 * H, Some("c"));
        assert_eq!(
            at(&t, "d1", 20 * H),
            Lookup::Found("b"),
            "valid at the edge"
        );
        assert_eq!(at(&t, "d1", 5 * H), Lookup::Expired(Some("b")));
        assert_eq!(
            at(&t, "d2", 30 * H),
            Lookup::Found("x"),
            "an old row that still holds"
        );
        assert_eq!(at(&t, "d9", 5 * H), Lookup::Expired(None));
        assert_eq!(put(&mut t, "d1", 5 * H, Some("late")), Put::Expired);
        assert_eq!(
            put(&mut t, "d4", 5 * H, Some("first")),
            Put::Applied,
            "a key's only row is kept"
        );
        assert_eq!(at(&t, "d4", 20 * H), Lookup::Found("first"));
        let d1 = t.find(b"d1").unwrap().as_slice().len();
        assert_eq!(d1, 2, "b at the edge and c");
        // A deletion older than the history, with nothing after it, removes the key.
        assert_eq!(t.len(), 4);
        put(&mut t, "d3", 2 * H, None);
        assert_eq!(t.len(), 3, "d3 is gone");
        assert_eq!(at(&t, "d3", 30 * H), Lookup::Absent);
    }
}
