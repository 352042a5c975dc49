//! Keyed aggregations (Kafka Streams' `groupBy(…).count()`, `reduce`,
//! `aggregate`): a grouped stream folds each key's records into one value,
//! kept in a key-value store with a compacted changelog
//! (`<group>-<store>-changelog`, written in the unit's transaction,
//! restored on assignment), and emits every update as an `Update` keyed by
//! the group key: a table's changes, for a compacted topic
//! (`to_compacted_topic`) or any other sink.
//!
//! ```ignore
//! logins
//!     .group_by("locale", |l| l.locale.clone())   // through a repartition topic
//!     .count("login-counts")
//!     .map("as record", |u| LoginCount { locale: u.key, count: u.value })
//!     .to_compacted_topic("login-counts-by-locale");
//! ```
//!
//! `group_by_key` skips the repartition topic, for records already keyed
//! and partitioned by the group key: a key set by `key_by` after the
//! source's own partitioning would spread one key's records over
//! partitions, each counting its own.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::stateful::{Emit, Keyed};
use crate::{
    avro::AvroSchema,
    record::Item,
    sink::ToTopic,
    state::KeyValueStore,
    topology::{Stream, ops::Ops, ops::Source},
};

/// One key's aggregate after a record changed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update<A> {
    /// The group key (the record key, as text).
    pub key: String,
    pub value: A,
}

/// A stream grouped by its records' keys (`Stream::group_by_key`).
pub struct Grouped<S, T, O> {
    stream: Stream<S, T, O>,
    emit_every: Option<std::time::Duration>,
}

impl<S: 'static, T, O: Ops<S, T>> Stream<S, T, O>
where
    T: AvroSchema + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Groups the records by `key(record)`, for `count`, `reduce` or
    /// `aggregate`. The records go through the repartition topic
    /// `<group>-<name>-repartition` (written in the unit's transaction,
    /// keyed by the new key, so one key's records meet in one partition),
    /// and the aggregation runs in the sub-topology that reads it: a member
    /// of the same group, `<topology>.<name>`, committing its own unit.
    /// Where the records are already keyed and partitioned by the group
    /// key, `group_by_key` skips the topic.
    pub fn group_by<F>(self, name: &str, key: F) -> Grouped<T, T, Source>
    where
        F: Fn(&T) -> String + Send + Sync + 'static,
    {
        let graph = self.graph().clone();
        let rekeyed = self.key_by(name, key);
        let (topic, stream) = crate::topology::repartition::<T>(&graph, name, T::SCHEMA);
        rekeyed.to_topic(&topic);
        Grouped {
            stream,
            emit_every: None,
        }
    }
}

impl<S: 'static, T: Send + 'static, O: Ops<S, T>> Stream<S, T, O> {
    /// Groups the records by their keys, for `count`, `reduce` or
    /// `aggregate`. A record without a key cannot be grouped: it goes to the
    /// dead-letter topic.
    pub fn group_by_key(self) -> Grouped<S, T, O> {
        Grouped {
            stream: self,
            emit_every: None,
        }
    }
}

/// Why a record was not aggregated.
const NO_KEY: &str = "the record has no key to group by";

/// A key's update from its store entry, at wall-clock time `at_ms`.
fn update_of<A: Clone>(key: &String, value: &A, at_ms: i64) -> Item<Update<A>> {
    Item::new(
        Some(key.as_bytes().to_vec()),
        Update {
            key: key.clone(),
            value: value.clone(),
        },
        at_ms,
    )
}

impl<S: 'static, T: Send + 'static, O: Ops<S, T>> Grouped<S, T, O> {
    /// Sends each key's update at most once per `every` (Kafka Streams'
    /// record cache, by time): a key changed meanwhile is sent once, with
    /// its value then, stamped with the wall-clock time. The store and its
    /// changelog still take every record. After a restore every key of the
    /// restored partitions is sent once again, since which of their last
    /// updates went out before a crash is not known: a table's consumers
    /// see a repeated value, never a missing one.
    pub fn emit_every(mut self, every: std::time::Duration) -> Self {
        self.emit_every = Some(every);
        self
    }

    /// The grouped records in event-time windows (Kafka Streams'
    /// `groupBy(…).windowedBy(…)`), their time read by `time_ms`; then
    /// `.aggregate(name, key, init, fold)` by the group key, and where the
    /// windows go (`finals()`, `to_postgres`). After `group_by` the records
    /// come from the repartition topic, so one key's records from every
    /// source partition meet in its windows: readings per site per minute,
    /// whichever devices' partitions they were read from.
    pub fn windowed_by<F>(
        self,
        spec: crate::window::WindowSpec,
        time: &str,
        time_ms: F,
    ) -> crate::topology::WindowedStream<S, T, impl Ops<S, T>>
    where
        F: Fn(&T) -> i64 + Send + Sync + 'static,
    {
        self.stream.event_time(time, time_ms).window(spec)
    }

    /// Folds each key's records into a value: `init` for a key's first
    /// record, then `fold(value, record)`. Every update flows on.
    pub fn aggregate<A, I, F>(
        self,
        store: &str,
        init: I,
        fold: F,
    ) -> Stream<Update<A>, Update<A>, Source>
    where
        A: Clone + Serialize + DeserializeOwned + Send + 'static,
        I: Fn() -> A + Send + Sync + 'static,
        F: Fn(A, &T) -> A + Send + Sync + 'static,
    {
        self.fold_keyed("aggregate", store, move |so_far, next| {
            fold(so_far.unwrap_or_else(&init), &next)
        })
    }

    /// Counts each key's records.
    pub fn count(self, store: &str) -> Stream<Update<i64>, Update<i64>, Source> {
        self.fold_keyed("count", store, |n, _| n.unwrap_or(0) + 1)
    }

    /// The store's value for the record's key (none for its first record)
    /// and the record make the key's next value.
    fn fold_keyed<A, F>(
        self,
        kind: &str,
        store: &str,
        step: F,
    ) -> Stream<Update<A>, Update<A>, Source>
    where
        A: Clone + Serialize + DeserializeOwned + Send + 'static,
        F: Fn(Option<A>, T) -> A + Send + Sync + 'static,
    {
        let keyed = Keyed {
            key_bytes: Some(|k: &String| k.as_bytes().to_vec()),
            emit: self.emit_every.map(|every| Emit {
                every_ms: i64::try_from(every.as_millis()).unwrap_or(i64::MAX),
                update: update_of::<A>,
            }),
        };
        self.stream.stateful_as(
            kind,
            store,
            keyed,
            move |item: Item<T>,
                  kv: &mut KeyValueStore<String, A>,
                  out: &mut Vec<Item<Update<A>>>| {
                let Some(raw) = item.key.as_deref() else {
                    return Err(NO_KEY);
                };
                let key = String::from_utf8_lossy(raw).into_owned();
                let value = step(kv.get(&key).cloned(), item.value);
                kv.put(key.clone(), value.clone());
                out.push(Item::new(
                    item.key,
                    Update { key, value },
                    item.timestamp_ms,
                ));
                Ok(())
            },
        )
    }
}

impl<S: 'static, T, O> Grouped<S, T, O>
where
    T: Clone + Serialize + DeserializeOwned + Send + 'static,
    O: Ops<S, T>,
{
    /// Combines each key's records pairwise: a key's first record is its
    /// value, each later one is combined with the value so far by
    /// `f(so_far, next)`.
    pub fn reduce<F>(self, store: &str, f: F) -> Stream<Update<T>, Update<T>, Source>
    where
        F: Fn(T, &T) -> T + Send + Sync + 'static,
    {
        self.fold_keyed("reduce", store, move |so_far, next| match so_far {
            Some(v) => f(v, &next),
            None => next,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{prelude::*, testing::TestDriver};

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct Reading {
        site: String,
        at: i64,
    }

    impl crate::avro::AvroSchema for Reading {
        const SCHEMA: &'static str = r#"{"type":"record","name":"Reading","fields":[{"name":"site","type":"string"},{"name":"at","type":"long"}]}"#;
    }

    /// Windows of a re-keyed stream hold a key's records from every
    /// source partition: readings per site per minute, read from two
    /// partitions (devices) that each see both sites.
    #[test]
    fn windows_by_a_new_key_meet_every_partitions_records() {
        let t = topology("per-site");
        t.source::<Reading>("readings")
            .group_by("site", |r| r.site.clone())
            .windowed_by(
                WindowSpec::tumbling(Duration::from_secs(60), Duration::ZERO),
                "at",
                |r| r.at,
            )
            .aggregate("readings", |r| r.site.clone(), || 0i64, |n, _| *n += 1)
            .finals()
            .map("line", |w| {
                format!("{} {} {}", w.key, w.window.start_ms, w.value)
            })
            .to_topic("per-site-minute");
        let mut driver = TestDriver::with_partitions(t.build().unwrap(), 2).unwrap();
        let readings = [
            (0, "a", 1_000),
            (1, "a", 2_000),
            (1, "b", 3_000),
            (0, "b", 4_000),
            (0, "a", 59_000),
        ];
        for (p, site, at) in readings {
            let r = Reading {
                site: site.into(),
                at,
            };
            driver.pipe_to(p, Some("device"), &r, at).unwrap();
        }
        // A minute later on both partitions: the first minute is final.
        for p in [0, 1] {
            let r = Reading {
                site: "a".into(),
                at: 130_000,
            };
            driver.pipe_to(p, Some("device"), &r, 130_000).unwrap();
        }
        let lines: Vec<String> = (driver.read::<String>("per-site-minute").unwrap())
            .into_iter()
            .map(|i| i.value)
            .collect();
        let mut lines = lines;
        lines.sort();
        assert_eq!(lines, ["a 0 3", "b 0 2"]);
    }

    /// With `emit_every`, a key changed several times between emissions
    /// goes out once with its latest value while the store takes every
    /// record; after a restart every key goes out once again.
    #[test]
    fn emit_every_sends_each_changed_key_once_per_interval() {
        let t = topology("throttled");
        t.source::<String>("logins")
            .group_by_key()
            .emit_every(Duration::from_secs(60))
            .count("counts")
            .map("count", |u| u.value)
            .to_topic("counts-out");
        let mut driver = TestDriver::new(t.build().unwrap()).unwrap();
        let login = "login".to_string();
        let mut sent = Vec::new();
        let mut take = |d: &mut TestDriver| {
            let out: Vec<Item<i64>> = d.read("counts-out").unwrap();
            for i in out {
                sent.push((String::from_utf8(i.key.unwrap()).unwrap(), i.value));
            }
            sent.clone()
        };
        driver.pipe(Some("de"), &login, 1).unwrap();
        for k in ["de", "fr", "de"] {
            driver.pipe(Some(k), &login, 2).unwrap();
        }
        assert_eq!(take(&mut driver), [("de".into(), 1)]);
        driver.advance_wall_clock(Duration::from_secs(61)).unwrap();
        driver.advance_wall_clock(Duration::from_secs(61)).unwrap();
        driver.pipe(Some("fr"), &login, 3).unwrap();
        let want = |v: &[(&str, i64)]| -> Vec<(String, i64)> {
            v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
        };
        assert_eq!(take(&mut driver), want(&[("de", 1), ("de", 3), ("fr", 1)]));
        driver.restart().unwrap();
        driver.advance_wall_clock(Duration::from_secs(1)).unwrap();
        assert_eq!(
            take(&mut driver),
            want(&[("de", 1), ("de", 3), ("fr", 1), ("de", 3), ("fr", 2)])
        );
        let store = driver.store::<String, i64>("counts");
        assert_eq!((store["de"], store["fr"]), (3, 2));
    }

    /// Counts by key, restored from the changelog after a restart (they go
    /// on from where they were), and every update reaches the topic keyed
    /// by its group key.
    #[test]
    fn counts_go_on_after_a_restart_and_every_update_flows() {
        let t = topology("counts");
        t.source::<String>("logins")
            .group_by_key()
            .count("counts")
            .map("count", |u| u.value)
            .to_compacted_topic("counts-out");
        let topology = t.build().unwrap();
        assert_eq!(topology.description.compacted, ["counts-out"]);
        assert!(
            topology
                .description
                .to_string()
                .contains("topic counts-out (compacted)")
        );
        let mut driver = TestDriver::new(topology).unwrap();
        for (i, locale) in ["de", "fr", "de", "de"].into_iter().enumerate() {
            driver
                .pipe(Some(locale), &"login".to_string(), i as i64)
                .unwrap();
        }
        driver.restart().unwrap();
        driver.pipe(Some("fr"), &"login".to_string(), 9).unwrap();
        driver.pipe(Some("de"), &"login".to_string(), 10).unwrap();
        let out: Vec<Item<i64>> = driver.read("counts-out").unwrap();
        let updates: Vec<(String, i64)> = out
            .iter()
            .map(|i| (String::from_utf8(i.key.clone().unwrap()).unwrap(), i.value))
            .collect();
        let want = [
            ("de", 1),
            ("fr", 1),
            ("de", 2),
            ("de", 3),
            ("fr", 2),
            ("de", 4),
        ];
        assert_eq!(updates, want.map(|(k, n)| (k.to_string(), n)));
        let store = driver.store::<String, i64>("counts");
        assert_eq!(store.get("de"), Some(&4));
        assert_eq!(store.get("fr"), Some(&2));
    }

    /// `aggregate` folds from `init`, `reduce` from a key's first record;
    /// a record without a key is a dead letter, not a count.
    #[test]
    fn aggregate_and_reduce_fold_each_key_and_keyless_records_are_refused() {
        let words = [("a", "xy"), ("b", "xyz"), ("a", "xyzw"), ("a", "x")];
        let t = topology("letters");
        t.source::<String>("words")
            .group_by_key()
            .aggregate("letters", || 0i64, |n, w: &String| n + w.len() as i64)
            .map("total", |u| u.value)
            .to_topic("letters-out");
        let mut driver = TestDriver::new(t.build().unwrap()).unwrap();
        for (k, w) in words {
            driver.pipe(Some(k), &w.to_string(), 1).unwrap();
        }
        driver.pipe(None, &"keyless".to_string(), 2).unwrap();
        let totals = driver.read::<i64>("letters-out").unwrap();
        let totals: Vec<i64> = totals.into_iter().map(|i| i.value).collect();
        assert_eq!(totals, [2, 3, 6, 7]);
        assert_eq!(driver.store::<String, i64>("letters").get("a"), Some(&7));
        let letters = driver.dead_letters();
        assert_eq!(letters.len(), 1, "{letters:?}");
        let message = &letters[0].message;
        assert_eq!(
            message,
            "aggregate(letters): the record has no key to group by"
        );

        let t = topology("longest");
        t.source::<String>("words")
            .group_by_key()
            .reduce(
                "longest",
                |a, b| if b.len() > a.len() { b.clone() } else { a },
            )
            .map("word", |u| u.value)
            .to_topic("longest-out");
        let mut driver = TestDriver::new(t.build().unwrap()).unwrap();
        for (k, w) in words {
            driver.pipe(Some(k), &w.to_string(), 1).unwrap();
        }
        let longest = driver.read::<String>("longest-out").unwrap();
        let longest: Vec<String> = longest.into_iter().map(|i| i.value).collect();
        assert_eq!(longest, ["xy", "xyz", "xyzw", "xyzw"]);
    }

    /// Re-keyed through a repartition topic: the sub-topology counts by the
    /// new key, whatever partition the records came from, and goes on
    /// after a restart; the parts are named after the topology and group.
    #[test]
    fn group_by_counts_by_the_new_key_through_a_repartition_topic() {
        let t = topology("by-length");
        t.source::<String>("words")
            .group_by("length", |w: &String| w.len().to_string())
            .count("word-counts")
            .map("count", |u| u.value)
            .to_compacted_topic("counts-by-length");
        let topology = t.build().unwrap();
        let repartition = "sluice-by-length-length-repartition";
        assert_eq!(topology.description.repartitions, [repartition]);
        let subs = topology.sub_topologies();
        assert_eq!(subs.len(), 1);
        let sub = &subs[0].description;
        assert_eq!(
            (sub.name.as_str(), sub.source.as_str()),
            ("by-length.length", repartition)
        );
        assert_eq!(sub.group_id, "sluice-by-length");
        assert_eq!(sub.dead_letter, "words.dlq");
        assert_ne!(
            sub.transactional_prefix,
            topology.description.transactional_prefix
        );
        assert_eq!(sub.changelogs(), ["sluice-by-length-word-counts-changelog"]);

        let mut driver = TestDriver::with_partitions(topology, 2).unwrap();
        for (p, w) in [(0, "ab"), (1, "cd"), (0, "xyz"), (1, "ef")] {
            driver.pipe_to(p, Some(w), &w.to_string(), 1).unwrap();
        }
        driver.restart().unwrap();
        driver.pipe_to(1, None, &"gh".to_string(), 2).unwrap();
        let counts: Vec<(String, i64)> = (driver.read::<i64>("counts-by-length").unwrap())
            .into_iter()
            .map(|i| (String::from_utf8(i.key.unwrap()).unwrap(), i.value))
            .collect();
        let want = [("2", 1), ("2", 2), ("3", 1), ("2", 3), ("2", 4)];
        assert_eq!(counts, want.map(|(k, n)| (k.to_string(), n)));
        assert_eq!(
            driver.store::<String, i64>("word-counts").get("2"),
            Some(&4)
        );
        assert!(driver.dead_letters().is_empty());
    }

    #[test]
    fn two_rekeying_steps_of_one_name_are_refused() {
        let t = topology("twice");
        let [a, b] = t
            .source::<String>("words")
            .split("s")
            .branch("a", |_| true)
            .default_branch("b")
            .streams();
        a.group_by("k", |w: &String| w.clone())
            .count("one")
            .map("n", |u| u.value)
            .to_topic("x");
        b.group_by("k", |w: &String| w.clone())
            .count("two")
            .map("n", |u| u.value)
            .to_topic("y");
        let e = t.build().unwrap_err();
        assert!(
            e.to_string().contains("two re-keying steps are named k"),
            "{e}"
        );
    }
}
