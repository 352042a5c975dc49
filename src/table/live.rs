//! A table as it is read: its rows (a `VersionedTable`), and how fresh
//! they are. A join may use the rows for a record only once they hold
//! everything the table's topic had when the record was fetched: the
//! reader asks the brokers for the topic's end offsets (a probe), reads up
//! to them, and then marks the table fresh as of the probe's start. A join
//! that needs a later mark asks for one and waits; one probe serves every
//! record fetched before it began, so under load the wait is shared.

use std::{
    sync::{Arc, Condvar, Mutex, RwLock, atomic::Ordering},
    time::{Duration, Instant},
};

use crate::{
    avro::Reader,
    state::{Lookup, VersionedTable, versioned::Put},
    stats::TableStats,
};

/// Why a join could not wait for its table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("table {0} is no longer read (the worker is stopping)")]
pub struct Closed(pub String);

#[derive(Debug, Default)]
struct Freshness {
    /// The start of the latest probe the rows have caught up with.
    fresh_as_of: Option<Instant>,
    /// The latest time a join needs the rows fresh as of.
    wanted: Option<Instant>,
    closed: bool,
    /// Filled by hand: nothing to wait for.
    always: bool,
}

impl Freshness {
    /// Whether the rows hold what the topic had at `fetched`.
    fn holds(&self, fetched: Instant) -> bool {
        self.always || self.fresh_as_of.is_some_and(|f| f >= fetched)
    }
}

/// A table's rows, kept as their topic has them (Avro in the wire
/// format), decoded into `V` by the joins that look them up.
pub struct LiveTable<V> {
    topic: String,
    rows: RwLock<VersionedTable>,
    /// `V`'s schema: what the rows are decoded with.
    reader: Arc<Reader>,
    _value: std::marker::PhantomData<fn() -> V>,
    freshness: Mutex<Freshness>,
    changed: Condvar,
    /// Wakes the reader when a join wants a probe.
    pub(super) wanted: tokio::sync::Notify,
    pub stats: Arc<TableStats>,
}

impl<V> LiveTable<V> {
    pub fn new(topic: &str, retention: Duration, reader: Arc<Reader>) -> Self {
        LiveTable {
            topic: topic.to_string(),
            rows: RwLock::new(VersionedTable::new(retention)),
            reader,
            _value: std::marker::PhantomData,
            freshness: Mutex::default(),
            changed: Condvar::new(),
            wanted: tokio::sync::Notify::new(),
            stats: Arc::new(TableStats::new(topic)),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The schema rows are decoded into `V` with.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// Applies a batch of table records: (key, timestamp, value or deletion).
    pub fn apply(&self, records: impl IntoIterator<Item = (Box<[u8]>, i64, Option<Vec<u8>>)>) {
        let mut rows = self.rows.write().unwrap_or_else(|p| p.into_inner());
        for (key, at_ms, value) in records {
            if rows.put(&key, at_ms, value.as_deref()) == Put::Expired {
                tracing::debug!(table = %self.topic, at_ms, "a table record older than its history was dropped");
            }
        }
        self.stats.keys.store(rows.len() as u64, Ordering::Relaxed);
    }

    /// `f` of the value of `key`'s row valid at `at_ms` (bytes); lookups
    /// older than the history are counted.
    pub fn lookup<R>(&self, key: &[u8], at_ms: i64, f: impl FnOnce(Lookup<'_, [u8]>) -> R) -> R {
        let rows = self.rows.read().unwrap_or_else(|p| p.into_inner());
        let found = rows.get_at(key, at_ms);
        if matches!(found, Lookup::Expired(_)) {
            self.stats.expired_lookups.fetch_add(1, Ordering::Relaxed);
        }
        f(found)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Freshness> {
        self.freshness.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the rows hold what the topic had at `fetched`.
    pub fn fresh_for(&self, fetched: Instant) -> bool {
        self.state().holds(fetched)
    }

    /// Rows filled by hand (the test driver's): joins never wait.
    pub fn always_fresh(&self) {
        self.state().always = true;
    }

    /// Waits until the rows hold everything the topic had at `fetched`.
    pub fn wait_fresh(&self, fetched: Instant) -> Result<(), Closed> {
        let mut s = self.state();
        let mut told = false;
        let began = Instant::now();
        loop {
            if s.holds(fetched) {
                return Ok(());
            }
            if s.closed {
                return Err(Closed(self.topic.clone()));
            }
            if s.wanted.is_none_or(|w| w < fetched) {
                s.wanted = Some(fetched);
                self.wanted.notify_one();
            }
            if !told && began.elapsed() > Duration::from_secs(10) {
                told = true;
                tracing::warn!(table = %self.topic, "joins have waited 10 s for the table to be read to its end; waiting on");
            }
            s = self
                .changed
                .wait_timeout(s, Duration::from_secs(1))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The latest time a join waits for, if it is not fresh yet.
    pub(super) fn wanted_after(&self) -> Option<Instant> {
        let s = self.state();
        s.wanted.filter(|w| s.fresh_as_of.is_none_or(|f| f < *w))
    }

    /// The rows hold what the topic had when a probe begun at `probe` asked.
    pub(super) fn fresh_as_of(&self, probe: Instant) {
        let mut s = self.state();
        if s.fresh_as_of.is_none_or(|f| f < probe) {
            s.fresh_as_of = Some(probe);
        }
        drop(s);
        self.changed.notify_all();
    }

    /// No more reading: waiting joins give up.
    pub fn close(&self) {
        self.state().closed = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Arc<LiveTable<String>> {
        let reader = Arc::new(Reader::new(apache_avro::Schema::String));
        Arc::new(LiveTable::new("devices", Duration::from_secs(3600), reader))
    }

    #[test]
    fn a_join_waits_for_a_probe_begun_after_its_record_was_fetched() {
        let t = table();
        let fetched = Instant::now();
        assert!(!t.fresh_for(fetched));
        let waiter = {
            let t = t.clone();
            std::thread::spawn(move || t.wait_fresh(fetched))
        };
        // The reader sees the wish, probes, reads to the end it got.
        let wanted = loop {
            if let Some(w) = t.wanted_after() {
                break w;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(wanted, fetched);
        t.fresh_as_of(fetched - Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !waiter.is_finished(),
            "a probe begun before the fetch is not enough"
        );
        let probe = Instant::now();
        t.apply([(
            b"d1".to_vec().into_boxed_slice(),
            5,
            Some(b"north".to_vec()),
        )]);
        t.fresh_as_of(probe);
        assert_eq!(waiter.join().unwrap(), Ok(()));
        assert!(t.fresh_for(fetched));
        assert_eq!(t.wanted_after(), None);
        let site = t.lookup(b"d1", 10, |l| match l {
            Lookup::Found(s) => Some(s.to_vec()),
            _ => None,
        });
        assert_eq!(site.as_deref(), Some(&b"north"[..]));
        assert_eq!(t.stats.keys.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn closing_ends_the_wait() {
        let t = table();
        let waiter = {
            let t = t.clone();
            std::thread::spawn(move || t.wait_fresh(Instant::now()))
        };
        std::thread::sleep(Duration::from_millis(10));
        t.close();
        assert_eq!(waiter.join().unwrap(), Err(Closed("devices".into())));
    }
}
