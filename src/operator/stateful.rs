//! A stateful operator of the user's: a function of each record and a
//! key-value store of its partition (`state::KeyValueStore`), which emits
//! any number of records. The store's changes go to its changelog topic in
//! the unit's transaction and come back on assignment (Kafka Streams'
//! `process` with a changelogged store).
//!
//! ```ignore
//! stream.stateful("totals", |order: Item<Order>, totals: &mut KeyValueStore<String, f64>, out| {
//!     let total = totals.get(&order.value.customer).copied().unwrap_or(0.0) + order.value.amount;
//!     totals.put(order.value.customer.clone(), total);
//!     out.push(order.with(total));
//!     Ok::<_, String>(())
//! })
//! ```

use std::{any::Any, collections::BTreeMap, fmt::Display, sync::Arc};

use rdkafka::error::KafkaError;
use serde::{Serialize, de::DeserializeOwned};

use super::{Assigned, At, OpCtx, Operator, OperatorEnv, OperatorError, OperatorSpec};
use crate::{
    state::{ChangeWriter, KeyValueStore, View, Where},
    topology::{
        Downstream, Failure, FailureKind, Item, OpError, StoreDesc, Stream, changelog_topic,
        ops::Ops, ops::Source,
    },
};

type Func<T, K, V, U> = Arc<
    dyn Fn(Item<T>, &mut KeyValueStore<K, V>, &mut Vec<Item<U>>) -> Result<(), String>
        + Send
        + Sync,
>;

impl<S: 'static, T: Send + 'static, O: Ops<S, T>> Stream<S, T, O> {
    /// Runs `f` on each record with the key-value store `store` of the
    /// record's partition; what `f` pushes onto its last argument flows on.
    /// An `Err` sends the input record to the dead-letter topic. The store
    /// is kept in memory with a changelog topic (`<group>-<store>-changelog`,
    /// written in the unit's transaction, read back on assignment).
    pub fn stateful<K, V, U, E, F>(self, store: &str, f: F) -> Stream<U, U, Source>
    where
        K: Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
        V: Serialize + DeserializeOwned + Send + 'static,
        U: 'static,
        E: Display,
        F: Fn(Item<T>, &mut KeyValueStore<K, V>, &mut Vec<Item<U>>) -> Result<(), E>
            + Send
            + Sync
            + 'static,
    {
        self.stateful_as("stateful", store, Keyed::default(), f)
    }

    /// `stateful`, its operator named `kind(store)` in the graph and in
    /// its dead letters, its store keyed as `keyed` says.
    pub(crate) fn stateful_as<K, V, U, E, F>(
        self,
        kind: &str,
        store: &str,
        keyed: Keyed<K, V, U>,
        f: F,
    ) -> Stream<U, U, Source>
    where
        K: Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
        V: Serialize + DeserializeOwned + Send + 'static,
        U: 'static,
        E: Display,
        F: Fn(Item<T>, &mut KeyValueStore<K, V>, &mut Vec<Item<U>>) -> Result<(), E>
            + Send
            + Sync
            + 'static,
    {
        let f: Func<T, K, V, U> = Arc::new(
            move |item: Item<T>, s: &mut KeyValueStore<K, V>, o: &mut Vec<Item<U>>| {
                f(item, s, o).map_err(|e| e.to_string())
            },
        );
        let (store, operator) = (store.to_string(), format!("{kind}({store})"));
        self.process_with(&operator.clone(), move |out| {
            Arc::new(StatefulSpec {
                store,
                operator,
                keyed,
                f,
                out,
            })
        })
    }
}

/// How a store relates to its records, where it is keyed by them.
pub(crate) struct Keyed<K, V, U> {
    /// A store key's bytes as the input records carry it (so a query knows
    /// which partition holds a key).
    pub key_bytes: Option<fn(&K) -> Vec<u8>>,
    /// Send a changed key's update at most once per interval, made from
    /// the store's entry, instead of what the function pushes.
    pub emit: Option<Emit<K, V, U>>,
}

impl<K, V, U> Default for Keyed<K, V, U> {
    fn default() -> Self {
        Keyed {
            key_bytes: None,
            emit: None,
        }
    }
}

pub(crate) struct Emit<K, V, U> {
    pub every_ms: i64,
    /// The update of a key from its entry, at a wall-clock time.
    pub update: fn(&K, &V, i64) -> Item<U>,
}

impl<K, V, U> Clone for Emit<K, V, U> {
    fn clone(&self) -> Self {
        Emit {
            every_ms: self.every_ms,
            update: self.update,
        }
    }
}

struct StatefulSpec<T, K: Ord, V, U> {
    store: String,
    /// `kind(store)`: how the graph and dead letters name it.
    operator: String,
    keyed: Keyed<K, V, U>,
    f: Func<T, K, V, U>,
    out: Downstream<U>,
}

impl<T, K, V, U> OperatorSpec for StatefulSpec<T, K, V, U>
where
    T: Send + 'static,
    K: Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + 'static,
    U: 'static,
{
    fn stores(&self) -> Vec<StoreDesc> {
        vec![StoreDesc {
            name: self.store.clone(),
            kept: "key-value, in memory".into(),
            changelog: true,
        }]
    }

    fn open(&self, env: &OperatorEnv<'_>) -> Box<dyn Operator> {
        Box::new(StatefulOp {
            store: self.store.clone(),
            operator: self.operator.clone(),
            changelog: changelog_topic(env.group, &self.store),
            f: self.f.clone(),
            out: self.out.clone(),
            parts: BTreeMap::new(),
            emit: self.keyed.emit.clone(),
            last_emit_ms: i64::MIN,
            view: env.stores.view(
                &self.store,
                Where {
                    topology: env.topology.to_string(),
                    group: env.group.to_string(),
                    topic: env.source.to_string(),
                    value: crate::state::view::type_name::<V>(),
                    key_bytes: self.keyed.key_bytes,
                },
            ),
        })
    }
}

/// The operator of one group member: a store per partition.
pub struct StatefulOp<T, K: Ord, V, U> {
    store: String,
    operator: String,
    changelog: String,
    f: Func<T, K, V, U>,
    out: Downstream<U>,
    parts: BTreeMap<i32, KeyValueStore<K, V>>,
    emit: Option<Emit<K, V, U>>,
    last_emit_ms: i64,
    /// What queries read: each partition as of its last flush.
    view: Arc<View<K>>,
}

impl<T, K, V, U> Operator for StatefulOp<T, K, V, U>
where
    T: Send + 'static,
    K: Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + 'static,
    U: 'static,
{
    fn assigned(&mut self, p: Assigned<'_>) -> Result<(), OperatorError> {
        let partition = p.claim.partition;
        let started = std::time::Instant::now();
        let changes = p
            .changelogs
            .read(&self.changelog, partition)
            .map_err(|source| OperatorError::Restore {
                store: self.store.clone(),
                source,
            })?;
        let mut store = KeyValueStore::restore(&changes).map_err(|e| OperatorError::Corrupt {
            store: self.store.clone(),
            reason: format!("{} partition {partition}: {e}", self.changelog),
        })?;
        tracing::info!(store = %self.store, partition, records = changes.len(), keys = store.len(), took = ?started.elapsed(), from = p.kept_in, "store restored from its changelog");
        self.view.publish(partition, store.iter());
        if self.emit.is_some() {
            store.track_unsent();
        }
        self.parts.insert(partition, store);
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
        let store = self.parts.entry(at.partition).or_default();
        if self.emit.is_some() {
            store.track_unsent();
        }
        let mut outs = Vec::new();
        (self.f)(*item, store, &mut outs).map_err(|message| {
            Failure::Operator(OpError {
                operator: self.operator.clone(),
                kind: FailureKind::Operator,
                message,
            })
        })?;
        if self.emit.is_none() {
            for o in outs {
                ctx.emit(&self.out, o)?;
            }
        }
        Ok(())
    }

    /// With `emit_every`: each key changed since the last time, once, with
    /// its value now.
    fn punctuate(&mut self, ctx: &mut OpCtx<'_>) -> Result<(), Failure> {
        let Some(emit) = &self.emit else {
            return Ok(());
        };
        if ctx.wall_ms.saturating_sub(self.last_emit_ms) < emit.every_ms {
            return Ok(());
        }
        self.last_emit_ms = ctx.wall_ms;
        for store in self.parts.values_mut() {
            for k in store.take_unsent() {
                if let Some(v) = store.get(&k) {
                    ctx.emit(&self.out, (emit.update)(&k, v, ctx.wall_ms))?;
                }
            }
        }
        Ok(())
    }

    fn ticking(&self) -> bool {
        self.emit.is_some() && self.parts.values().any(KeyValueStore::has_unsent)
    }

    fn flush(&mut self, out: &mut dyn ChangeWriter) -> Result<(), KafkaError> {
        for (&partition, store) in &mut self.parts {
            let changes = store.flush();
            if !changes.is_empty() {
                out.write(&self.changelog, partition, &changes)?;
            }
            self.view.apply(partition, &changes);
        }
        Ok(())
    }

    fn abort(&mut self) {
        let held: Vec<i32> = self.parts.keys().copied().collect();
        self.view.forget(&held);
        self.parts.clear();
    }

    fn release(&mut self, partitions: &[i32]) {
        self.view.forget(partitions);
        for p in partitions {
            self.parts.remove(p);
        }
    }

    fn held(&self) -> u64 {
        self.parts.values().map(|s| s.len() as u64).sum()
    }

    fn store(&self, name: &str) -> Option<&dyn Any> {
        (name == self.store).then_some(&self.parts as &dyn Any)
    }
}
