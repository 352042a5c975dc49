//! A stream joined with a table by event time: each record with the row of
//! its key that was valid at the record's timestamp (`LiveTable::lookup`),
//! once the table holds everything its topic had when the record was
//! fetched. Runs where the unit commits, in input order, as a stateful
//! operator with no state of its own: the table is the process's.
//!
//! `left_join` joins every record (with `None` where no row was valid);
//! `join` joins those with a row, and drops the others or sends them to the
//! dead-letter topic with reason `join_miss`, as declared (`Miss`).

use std::{any::Any, sync::Arc, sync::atomic::Ordering};

use super::{LiveTable, Table};
use crate::{
    operator::{Assigned, At, OpCtx, Operator, OperatorEnv, OperatorError, OperatorSpec},
    state::Lookup,
    topology::{Downstream, Failure, FailureKind, Item, OpError, Stream, ops::Ops, ops::Source},
};

/// What an inner join does with a record no row was valid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Counted (`sluice_join_misses_total`) and dropped.
    Drop,
    /// Counted and sent to the dead-letter topic, reason `join_miss`.
    DeadLetter,
}

type KeyFn<T> = Arc<dyn Fn(&Item<T>) -> Vec<u8> + Send + Sync>;
type Joiner<T, V, U> = Arc<dyn Fn(Item<T>, Option<&V>) -> U + Send + Sync>;

impl<S: 'static, T: Send + 'static, O: Ops<S, T>> Stream<S, T, O> {
    /// Joins each record with the row of `table` under `key(record)` valid
    /// at the record's timestamp, or `None` where there was none:
    /// `joiner` makes the record that flows on (same key and timestamp).
    pub fn left_join<V, U, K, J>(
        self,
        name: &str,
        table: &Table<V>,
        key: K,
        joiner: J,
    ) -> Stream<U, U, Source>
    where
        V: serde::de::DeserializeOwned + Send + Sync + 'static,
        U: 'static,
        K: Fn(&Item<T>) -> Vec<u8> + Send + Sync + 'static,
        J: Fn(Item<T>, Option<&V>) -> U + Send + Sync + 'static,
    {
        self.join_with(name, table, Arc::new(key), Arc::new(joiner), None)
    }

    /// Joins each record that has a row of `table` under `key(record)`
    /// valid at its timestamp; the others are counted and, by `miss`,
    /// dropped or dead-lettered (`join_miss`).
    pub fn join<V, U, K, J>(
        self,
        name: &str,
        table: &Table<V>,
        key: K,
        joiner: J,
        miss: Miss,
    ) -> Stream<U, U, Source>
    where
        V: serde::de::DeserializeOwned + Send + Sync + 'static,
        U: 'static,
        K: Fn(&Item<T>) -> Vec<u8> + Send + Sync + 'static,
        J: Fn(Item<T>, &V) -> U + Send + Sync + 'static,
    {
        let joiner = move |item: Item<T>, row: Option<&V>| {
            joiner(
                item,
                row.expect("an inner join calls its joiner with a row"),
            )
        };
        self.join_with(name, table, Arc::new(key), Arc::new(joiner), Some(miss))
    }

    fn join_with<V, U>(
        self,
        name: &str,
        table: &Table<V>,
        key: KeyFn<T>,
        joiner: Joiner<T, V, U>,
        inner: Option<Miss>,
    ) -> Stream<U, U, Source>
    where
        V: serde::de::DeserializeOwned + Send + Sync + 'static,
        U: 'static,
    {
        self.graph_tables(table.source.clone());
        let (name, topic) = (name.to_string(), table.topic().to_string());
        let kind = if inner.is_some() { "join" } else { "left_join" };
        let label = format!("{kind}({name}, {topic})");
        self.process_with(&label, move |out| {
            Arc::new(JoinSpec {
                name,
                topic,
                how: Arc::new(How {
                    key,
                    joiner,
                    inner,
                    out,
                }),
            }) as Arc<dyn OperatorSpec>
        })
    }
}

/// How records are joined: the declaration's, shared by every member's operator.
struct How<T, V, U> {
    key: KeyFn<T>,
    joiner: Joiner<T, V, U>,
    inner: Option<Miss>,
    out: Downstream<U>,
}

struct JoinSpec<T, V, U> {
    name: String,
    topic: String,
    how: Arc<How<T, V, U>>,
}

impl<T, V, U> OperatorSpec for JoinSpec<T, V, U>
where
    T: Send + 'static,
    V: serde::de::DeserializeOwned + Send + Sync + 'static,
    U: 'static,
{
    fn open(&self, env: &OperatorEnv<'_>) -> Box<dyn Operator> {
        let live = env
            .tables
            .get(&self.topic)
            .and_then(|r| r.live.clone().downcast::<LiveTable<V>>().ok())
            .unwrap_or_else(|| {
                // Started by the runtime for every table a topology declares.
                panic!("table {} was not started for its join", self.topic)
            });
        Box::new(JoinOp {
            operator: format!("join({})", self.name),
            live,
            how: self.how.clone(),
            held: std::collections::BTreeSet::new(),
            rows: Rows::default(),
            fresh: None,
        })
    }
}

struct JoinOp<T, V, U> {
    operator: String,
    live: Arc<LiveTable<V>>,
    how: Arc<How<T, V, U>>,
    /// The member's partitions, whose rows a co-partitioned table reads.
    held: std::collections::BTreeSet<i32>,
    rows: Rows<V>,
    /// The last partition and fetch time the table was fresh for.
    fresh: Option<(i32, std::time::Instant)>,
}

/// Rows decoded lately: a row is decoded once while it stays here, not on
/// every lookup (most lookups find few distinct rows). Found by where the
/// table keeps the row's bytes (hashing an address, not the bytes), and
/// checked against a copy of them: an address the table freed and used
/// again for another row is decoded afresh.
struct Rows<V> {
    index: hashbrown::HashMap<(usize, usize), usize>,
    values: Vec<(Box<[u8]>, V)>,
}

impl<V> Default for Rows<V> {
    fn default() -> Self {
        Rows {
            index: Default::default(),
            values: Vec::new(),
        }
    }
}

/// Rows kept decoded, at most: about 2 MB of small rows.
const DECODED: usize = 16_384;

enum RowError {
    Decode(crate::avro::CodecError),
    UnknownSchema,
}

impl<V: serde::de::DeserializeOwned> Rows<V> {
    fn get_or_decode(
        &mut self,
        bytes: &[u8],
        codec: &crate::avro::AvroCodec,
        reader: &crate::avro::Reader,
    ) -> Result<usize, RowError> {
        let at = (bytes.as_ptr() as usize, bytes.len());
        if let Some(&i) = self.index.get(&at)
            && *self.values[i].0 == *bytes
        {
            return Ok(i);
        }
        let v = match codec.decode_cached::<V>(bytes, reader) {
            Some(Ok((_, v))) => v,
            Some(Err(e)) => return Err(RowError::Decode(e)),
            None => return Err(RowError::UnknownSchema),
        };
        if self.values.len() >= DECODED {
            self.index.clear();
            self.values.clear();
        }
        self.index.insert(at, self.values.len());
        self.values.push((bytes.into(), v));
        Ok(self.values.len() - 1)
    }
}

impl<T, V, U> Drop for JoinOp<T, V, U> {
    fn drop(&mut self) {
        for p in std::mem::take(&mut self.held) {
            self.live.unhold(p);
        }
    }
}

impl<T, V, U> Operator for JoinOp<T, V, U>
where
    T: Send + 'static,
    V: serde::de::DeserializeOwned + Send + Sync + 'static,
    U: 'static,
{
    fn assigned(&mut self, a: Assigned<'_>) -> Result<(), OperatorError> {
        // Claimed again after an abort too: held once.
        if self.held.insert(a.claim.partition) {
            self.live.hold(a.claim.partition);
        }
        Ok(())
    }

    fn process(
        &mut self,
        at: At,
        item: Box<dyn Any + Send>,
        ctx: &mut OpCtx<'_>,
    ) -> Result<(), Failure> {
        let Ok(item) = item.downcast::<Item<T>>() else {
            return Ok(());
        };
        let item = *item;
        // A chunk's records share their fetch time: asked once per chunk.
        if self.fresh != Some((at.partition, ctx.fetched)) {
            if !self.live.fresh_for(at.partition, ctx.fetched) {
                // Not while the worker runs: tables stop after the workers.
                self.live
                    .wait_fresh(at.partition, ctx.fetched)
                    .map_err(|e| self.refuse(FailureKind::Operator, e.to_string()))?;
            }
            self.fresh = Some((at.partition, ctx.fetched));
        }
        let how = &*self.how;
        let key = (how.key)(&item);
        let at_ms = item.timestamp_ms;
        // The row is decoded here, by the join (the table keeps it as
        // bytes), once per distinct row while it stays in the cache.
        let (live, rows) = (&self.live, &mut self.rows);
        let found = live.lookup(at.partition, &key, at_ms, |found| match found {
            Lookup::Found(bytes) | Lookup::Expired(Some(bytes)) => rows
                .get_or_decode(bytes, ctx.codec, live.reader())
                .map(Some),
            Lookup::Absent | Lookup::Expired(None) => Ok(None),
        });
        let row = match found {
            Ok(i) => i.map(|i| &self.rows.values[i].1),
            Err(RowError::Decode(e)) => return Err(Failure::Decode(e)),
            // The reader decoded it with this codec before keeping it.
            Err(RowError::UnknownSchema) => {
                return Err(self.refuse(
                    FailureKind::Operator,
                    format!(
                        "table {}: the row's writer schema is not known",
                        self.live.topic()
                    ),
                ));
            }
        };
        // Joined by the record's own key (the usual case), the lookup's copy
        // becomes the output's key: one allocation a record fewer.
        let own_key = item.key.as_deref() == Some(key.as_slice());
        let other_key = if own_key { None } else { item.key.clone() };
        let value = match (row, how.inner) {
            (Some(row), _) => (how.joiner)(item, Some(row)),
            (None, None) => (how.joiner)(item, None),
            (None, Some(miss)) => {
                self.live.stats.join_misses.fetch_add(1, Ordering::Relaxed);
                return match miss {
                    Miss::DeadLetter => Err(self.refuse(
                        FailureKind::JoinMiss,
                        format!(
                            "no row of table {} for key {} valid at {at_ms}",
                            self.live.topic(),
                            String::from_utf8_lossy(&key)
                        ),
                    )),
                    Miss::Drop => Ok(()),
                };
            }
        };
        let key_out = if own_key { Some(key) } else { other_key };
        ctx.emit(&how.out, Item::new(key_out, value, at_ms))
    }

    fn abort(&mut self) {}

    fn release(&mut self, partitions: &[i32]) {
        self.fresh = None;
        for p in partitions {
            if self.held.remove(p) {
                self.live.unhold(*p);
            }
        }
    }
}

impl<T, V, U> JoinOp<T, V, U> {
    fn refuse(&self, kind: FailureKind, message: String) -> Failure {
        Failure::Operator(OpError {
            operator: self.operator.clone(),
            kind,
            message,
        })
    }
}
