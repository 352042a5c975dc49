//! What queries of live state read: a copy of each key-value store's
//! partitions that this process's members hold, as JSON, shared between
//! the task threads that write it and the HTTP server that reads it. The
//! task thread owns the store itself; it publishes each partition whole
//! when it restores it and then each changed key at every flush (just
//! before the unit commits), so a query never takes a lock the hot path
//! waits on per record, and sees the state as of the last flush.

use std::{
    collections::BTreeMap,
    ops::Bound,
    sync::{Arc, Mutex, RwLock},
};

use serde::{Serialize, de::DeserializeOwned};

use super::Change;

/// How a query names a key it cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key:?} is not a key of store {store} (its keys are {wants})")]
pub struct BadKey {
    pub store: String,
    pub key: String,
    pub wants: String,
}

/// One key's value, or where it would be.
#[derive(Debug, PartialEq)]
pub enum Found {
    /// The value, as JSON.
    Value(serde_json::Value),
    /// Not in this process's partitions. `Some(bytes)`: the key's bytes as
    /// its records carry them, to find its partition (and its owner) by;
    /// `None`: the store cannot say which partition would hold it.
    Elsewhere(Option<Vec<u8>>),
}

/// A page of a range: entries in key order, and the first key of the next
/// page when there is one.
#[derive(Debug, Serialize, PartialEq)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub next: Option<serde_json::Value>,
    /// The partitions read (those this process holds).
    pub partitions: Vec<i32>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Entry {
    pub key: serde_json::Value,
    pub value: serde_json::Value,
}

/// What `GET /stores` lists of a store.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StoreInfo {
    pub name: String,
    pub topology: String,
    /// The consumer group whose assignment says which member holds which
    /// partition, and the topic whose partitions those are.
    pub group: String,
    pub topic: String,
    /// The Rust types of keys and values (their JSON is serde's).
    pub key: String,
    pub value: String,
    pub partitions: Vec<i32>,
    pub keys: usize,
}

/// A store as queries see it.
pub trait Queryable: Send + Sync {
    fn info(&self) -> StoreInfo;
    /// `key` as text: JSON, or a plain string for a string key.
    fn get(&self, key: &str) -> Result<Found, BadKey>;
    /// Keys from `from` to `to` (both included), at most `limit`.
    fn range(&self, from: Option<&str>, to: Option<&str>, limit: usize) -> Result<Page, BadKey>;
    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync>;
}

/// The stores of a process, by name, as its members publish them.
#[derive(Clone, Default)]
pub struct Stores(Arc<Mutex<BTreeMap<String, Arc<dyn Queryable>>>>);

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Stores").field(&self.names()).finish()
    }
}

impl Stores {
    /// The view of store `name` that the members of one topology share
    /// (each writes the partitions it holds), made by the first to ask.
    pub fn view<K>(&self, name: &str, at: Where<K>) -> Arc<View<K>>
    where
        K: Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = all.get(name) {
            if let Ok(view) = known.clone().as_any().downcast::<View<K>>() {
                return view;
            }
            // Two topologies of one process name a store alike with other
            // key types: the later one's is not queryable.
            tracing::warn!(
                store = name,
                "another topology of this process has a store of this name: this one is not served to queries"
            );
            return Arc::new(View::new(name, at));
        }
        let view = Arc::new(View::new(name, at));
        all.insert(name.to_string(), view.clone());
        view
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Queryable>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn names(&self) -> Vec<String> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.keys().cloned().collect()
    }

    pub fn all(&self) -> Vec<Arc<dyn Queryable>> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.values().cloned().collect()
    }
}

/// A Rust type's name without its module paths (`Option<String>`).
pub fn type_name<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let mut out = String::with_capacity(full.len());
    let mut word = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            out.push_str(word.rsplit("::").next().unwrap_or(""));
            word.clear();
            out.push(c);
        }
    }
    out.push_str(word.rsplit("::").next().unwrap_or(""));
    out
}

/// Where a store's partitions come from.
#[derive(Default)]
pub struct Where<K> {
    pub topology: String,
    pub group: String,
    pub topic: String,
    /// The Rust type of its values.
    pub value: String,
    /// A key's bytes as the input records carry it (the partitioner hashes
    /// them), where the store is keyed by the record key.
    pub key_bytes: Option<fn(&K) -> Vec<u8>>,
}

/// One store's partitions held in this process, each key's value as JSON.
pub struct View<K> {
    name: String,
    at: Where<K>,
    parts: RwLock<BTreeMap<i32, BTreeMap<K, serde_json::Value>>>,
}

impl<K> View<K>
where
    K: Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn new(name: &str, at: Where<K>) -> View<K> {
        View {
            name: name.to_string(),
            at,
            parts: RwLock::new(BTreeMap::new()),
        }
    }

    /// A partition restored: its entries, whole.
    pub fn publish<'a, V: Serialize + 'a>(
        &self,
        partition: i32,
        entries: impl Iterator<Item = (&'a K, &'a V)>,
    ) where
        K: 'a,
    {
        let part = entries
            .filter_map(|(k, v)| Some((k.clone(), serde_json::to_value(v).ok()?)))
            .collect();
        self.write().insert(partition, part);
    }

    /// A partition's changes since the last flush (as its changelog has them).
    pub fn apply(&self, partition: i32, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let mut parts = self.write();
        let part = parts.entry(partition).or_default();
        for c in changes {
            let Ok(key) = serde_json::from_slice::<K>(&c.key) else {
                continue;
            };
            match c.value.as_deref().map(serde_json::from_slice) {
                Some(Ok(v)) => {
                    part.insert(key, v);
                }
                Some(Err(_)) => {}
                None => {
                    part.remove(&key);
                }
            }
        }
    }

    /// These partitions are no longer held here.
    pub fn forget(&self, partitions: &[i32]) {
        let mut parts = self.write();
        for p in partitions {
            parts.remove(p);
        }
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<i32, BTreeMap<K, serde_json::Value>>> {
        self.parts.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<i32, BTreeMap<K, serde_json::Value>>> {
        self.parts.read().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, text: &str) -> Result<K, BadKey> {
        serde_json::from_str::<K>(text)
            .or_else(|_| serde_json::from_value::<K>(serde_json::Value::String(text.into())))
            .map_err(|_| BadKey {
                store: self.name.clone(),
                key: text.to_string(),
                wants: type_name::<K>(),
            })
    }
}

impl<K> Queryable for View<K>
where
    K: Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn info(&self) -> StoreInfo {
        let parts = self.read();
        StoreInfo {
            name: self.name.clone(),
            topology: self.at.topology.clone(),
            group: self.at.group.clone(),
            topic: self.at.topic.clone(),
            key: type_name::<K>(),
            value: self.at.value.clone(),
            partitions: parts.keys().copied().collect(),
            keys: parts.values().map(BTreeMap::len).sum(),
        }
    }

    fn get(&self, text: &str) -> Result<Found, BadKey> {
        let key = self.key(text)?;
        let parts = self.read();
        if let Some(v) = parts.values().find_map(|p| p.get(&key)) {
            return Ok(Found::Value(v.clone()));
        }
        let Some(bytes) = self.at.key_bytes.map(|f| f(&key)) else {
            // Which partition holds it is the operator's business: a key
            // not here may be anywhere.
            return Ok(Found::Elsewhere(None));
        };
        Ok(Found::Elsewhere(Some(bytes)))
    }

    fn range(&self, from: Option<&str>, to: Option<&str>, limit: usize) -> Result<Page, BadKey> {
        let bound = |t: Option<&str>| -> Result<Bound<K>, BadKey> {
            Ok(match t {
                Some(t) => Bound::Included(self.key(t)?),
                None => Bound::Unbounded,
            })
        };
        let (lo, hi) = (bound(from)?, bound(to)?);
        let parts = self.read();
        let mut all: Vec<(&K, &serde_json::Value)> = Vec::new();
        for p in parts.values() {
            if let (Bound::Included(a), Bound::Included(b)) = (&lo, &hi)
                && a > b
            {
                break;
            }
            all.extend(p.range((lo.clone(), hi.clone())).take(limit + 1));
        }
        all.sort_by(|a, b| a.0.cmp(b.0));
        let next = all
            .get(limit)
            .and_then(|(k, _)| serde_json::to_value(k).ok());
        let entries = all
            .into_iter()
            .take(limit)
            .filter_map(|(k, v)| {
                Some(Entry {
                    key: serde_json::to_value(k).ok()?,
                    value: v.clone(),
                })
            })
            .collect();
        Ok(Page {
            entries,
            next,
            partitions: parts.keys().copied().collect(),
        })
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Where<String> {
        Where {
            topology: "t".into(),
            group: "g".into(),
            topic: "in".into(),
            value: "i64".into(),
            key_bytes: Some(|k: &String| k.as_bytes().to_vec()),
        }
    }

    fn change(k: &str, v: Option<i64>) -> Change {
        Change {
            key: serde_json::to_vec(k).unwrap(),
            value: v.map(|v| serde_json::to_vec(&v).unwrap()),
        }
    }

    /// Partitions published whole and then changed by flushes, read by key
    /// and by range in pages over every partition held, forgotten when
    /// given up; members of one topology share a store's view.
    #[test]
    fn a_view_follows_its_partitions_and_pages_ranges_in_key_order() {
        let stores = Stores::default();
        let view = stores.view::<String>("counts", at());
        let second = stores.view::<String>("counts", at());
        assert!(Arc::ptr_eq(&view, &second));
        let restored: BTreeMap<String, i64> = [("b".to_string(), 2), ("d".to_string(), 4)].into();
        view.publish(0, restored.iter());
        view.apply(1, &[change("a", Some(1)), change("c", Some(3))]);
        view.apply(0, &[change("d", None), change("e", Some(5))]);
        let q = stores.get("counts").unwrap();
        assert_eq!(q.get("c").unwrap(), Found::Value(3.into()));
        assert_eq!(q.get("\"a\"").unwrap(), Found::Value(1.into()));
        assert_eq!(q.get("d").unwrap(), Found::Elsewhere(Some(b"d".to_vec())));
        let page = q.range(Some("b"), None, 2).unwrap();
        let keys: Vec<_> = page.entries.iter().map(|e| e.key.clone()).collect();
        assert_eq!(keys, ["b", "c"]);
        assert_eq!(page.next, Some("e".into()));
        assert_eq!(page.partitions, [0, 1]);
        let last = q.range(Some("e"), Some("z"), 2).unwrap();
        assert_eq!(last.entries.len(), 1);
        assert_eq!(last.next, None);
        assert_eq!(q.range(Some("z"), Some("a"), 5).unwrap().entries, []);
        view.forget(&[1]);
        let info = q.info();
        assert_eq!((info.partitions, info.keys), (vec![0], 2));
        assert_eq!(info.key, "String");
        assert_eq!(
            type_name::<Option<Vec<(String, i64)>>>(),
            "Option<Vec<(String, i64)>>"
        );
    }

    /// A key the store's type cannot take is the asker's error, named.
    #[test]
    fn a_key_of_another_type_is_refused() {
        let stores = Stores::default();
        let view = stores.view::<u32>(
            "by-id",
            Where {
                key_bytes: None,
                ..Default::default()
            },
        );
        view.apply(
            0,
            &[Change {
                key: b"7".to_vec(),
                value: Some(b"1".to_vec()),
            }],
        );
        let q = stores.get("by-id").unwrap();
        assert_eq!(q.get("7").unwrap(), Found::Value(1.into()));
        assert_eq!(q.get("8").unwrap(), Found::Elsewhere(None));
        let e = q.get("seven").unwrap_err();
        assert!(e.to_string().contains("u32"), "{e}");
    }
}
