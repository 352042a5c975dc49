//! An in-memory key-value store of one partition, ordered by key, that
//! remembers which keys changed since its last flush. Keys and values are
//! any serde types; the changelog holds them as JSON (readable with any
//! Kafka tool, and one serialisation crate already in the engine).

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::RangeBounds,
};

use serde::{Serialize, de::DeserializeOwned};

use super::Change;

/// A key-value store of one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValueStore<K: Ord, V> {
    entries: BTreeMap<K, V>,
    /// Keys put or deleted since the last flush.
    dirty: BTreeSet<K>,
    /// Keys put or deleted since their last update was sent downstream,
    /// for an operator that sends at most one per interval (`Some` once it
    /// asks, with `track_unsent`).
    unsent: Option<BTreeSet<K>>,
}

impl<K: Ord, V> Default for KeyValueStore<K, V> {
    fn default() -> Self {
        KeyValueStore {
            entries: BTreeMap::new(),
            dirty: BTreeSet::new(),
            unsent: None,
        }
    }
}

/// Why a changelog record could not be restored.
#[derive(Debug, thiserror::Error)]
#[error("changelog record does not decode as the store's key and value ({0})")]
pub struct Undecodable(String);

impl<K: Ord + Clone, V> KeyValueStore<K, V> {
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key)
    }

    pub fn put(&mut self, key: K, value: V) {
        if let Some(unsent) = &mut self.unsent {
            unsent.insert(key.clone());
        }
        self.dirty.insert(key.clone());
        self.entries.insert(key, value);
    }

    /// Removes `key`, giving its value.
    pub fn delete(&mut self, key: &K) -> Option<V> {
        let old = self.entries.remove(key);
        if old.is_some() {
            if let Some(unsent) = &mut self.unsent {
                unsent.insert(key.clone());
            }
            self.dirty.insert(key.clone());
        }
        old
    }

    /// Remembers the keys changed from now on until `take_unsent`, and
    /// counts every key held now as changed: after a restore nobody knows
    /// which updates of the store's keys were sent before the crash.
    pub fn track_unsent(&mut self) {
        if self.unsent.is_none() {
            self.unsent = Some(self.entries.keys().cloned().collect());
        }
    }

    /// The keys changed since the last call, in key order.
    pub fn take_unsent(&mut self) -> Vec<K> {
        match &mut self.unsent {
            Some(u) => std::mem::take(u).into_iter().collect(),
            None => Vec::new(),
        }
    }

    pub fn has_unsent(&self) -> bool {
        self.unsent.as_ref().is_some_and(|u| !u.is_empty())
    }

    /// The entries whose keys are in `range`, in key order.
    pub fn range<R: RangeBounds<K>>(&self, range: R) -> impl Iterator<Item = (&K, &V)> {
        self.entries.range(range)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether anything changed since the last flush.
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }
}

impl<K, V> KeyValueStore<K, V>
where
    K: Ord + Clone + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// The changes since the last flush, one per key (its latest value, or
    /// a tombstone), and forgets them.
    pub fn flush(&mut self) -> Vec<Change> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|k| {
                let key = serde_json::to_vec(&k).ok()?;
                let value = match self.entries.get(&k) {
                    Some(v) => Some(serde_json::to_vec(v).ok()?),
                    None => None,
                };
                Some(Change { key, value })
            })
            .collect()
    }

    /// A store as its changelog leaves it.
    pub fn restore(changes: &[Change]) -> Result<Self, Undecodable> {
        let mut store = KeyValueStore::default();
        for c in changes {
            let key: K = serde_json::from_slice(&c.key).map_err(|e| Undecodable(e.to_string()))?;
            match &c.value {
                Some(v) => {
                    let value: V =
                        serde_json::from_slice(v).map_err(|e| Undecodable(e.to_string()))?;
                    store.entries.insert(key, value);
                }
                None => {
                    store.entries.remove(&key);
                }
            }
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_delete_and_range_in_key_order() {
        let mut s: KeyValueStore<String, i64> = KeyValueStore::default();
        s.put("b".into(), 2);
        s.put("a".into(), 1);
        s.put("c".into(), 3);
        assert_eq!(s.get(&"b".into()), Some(&2));
        assert_eq!(s.delete(&"b".into()), Some(2));
        assert_eq!(s.delete(&"zz".into()), None);
        let keys: Vec<&String> = s.range("a".to_string()..).map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "c"]);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_flush_gives_each_changed_key_once_with_its_latest_value() {
        let mut s: KeyValueStore<String, i64> = KeyValueStore::default();
        s.put("a".into(), 1);
        s.put("a".into(), 5);
        s.put("b".into(), 2);
        s.delete(&"b".into());
        let changes = s.flush();
        assert_eq!(
            changes,
            vec![
                Change {
                    key: b"\"a\"".to_vec(),
                    value: Some(b"5".to_vec())
                },
                Change {
                    key: b"\"b\"".to_vec(),
                    value: None
                },
            ]
        );
        assert!(!s.is_dirty());
        assert!(s.flush().is_empty());
    }

    #[test]
    fn unsent_keys_are_those_changed_since_taken_and_all_at_first() {
        let mut s: KeyValueStore<String, i64> = KeyValueStore::default();
        s.put("a".into(), 1);
        assert!(!s.has_unsent());
        s.track_unsent();
        assert_eq!(s.take_unsent(), ["a"]);
        s.put("c".into(), 3);
        s.put("b".into(), 2);
        s.put("c".into(), 4);
        s.delete(&"a".into());
        s.flush();
        assert!(s.has_unsent());
        assert_eq!(s.take_unsent(), ["a", "b", "c"]);
        assert!(s.take_unsent().is_empty());
    }

    #[test]
    fn a_store_comes_back_from_its_changelog() {
        let mut s: KeyValueStore<(String, u8), Vec<f64>> = KeyValueStore::default();
        s.put(("x".into(), 1), vec![1.5]);
        s.put(("y".into(), 2), vec![2.5, 3.0]);
        let mut log = s.flush();
        s.delete(&("x".into(), 1));
        log.extend(s.flush());
        let back = KeyValueStore::<(String, u8), Vec<f64>>::restore(&log).unwrap();
        assert_eq!(back.iter().count(), 1);
        assert_eq!(back.get(&("y".into(), 2)), Some(&vec![2.5, 3.0]));
        let bad = [Change {
            key: b"not json".to_vec(),
            value: None,
        }];
        assert!(KeyValueStore::<String, i64>::restore(&bad).is_err());
    }
}
