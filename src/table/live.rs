//! A table as it is read: its rows (a `VersionedTable` per partition read,
//! or one for a global table), and how fresh they are. A join may use the
//! rows for a record only once they hold everything the table's topic had
//! when the record was fetched: the reader asks the brokers for the
//! topic's end offsets (a probe), reads up to them, and then marks the
//! partitions it read fresh as of the probe's start. A join that needs a
//! later mark asks for one and waits; one probe serves every record fetched
//! before it began, so under load the wait is shared.
//!
//! A co-partitioned table is read only where joins hold its partitions
//! (`hold`, when their member is assigned the stream's partition of the
//! same number); a partition taken over is read from the beginning, and
//! joins of it wait until that is done.

use std::{
    collections::{BTreeMap, BTreeSet},
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

/// The rows of a global table (every partition in one).
const GLOBAL: i32 = -1;

/// A table record: partition, key, timestamp, value (`None`: deleted).
pub type TableRecord = (i32, Box<[u8]>, i64, Option<Vec<u8>>);

#[derive(Debug, Default)]
struct Freshness {
    /// Per rows kept (partition, or `GLOBAL`): the start of the latest
    /// probe they have caught up with.
    fresh_as_of: BTreeMap<i32, Instant>,
    /// The latest time a join needs the rows fresh as of.
    wanted: Option<Instant>,
    /// Co-partitioned: the partitions joins hold, with how many hold each.
    held: BTreeMap<i32, usize>,
    closed: bool,
    /// Filled by hand: nothing to wait for.
    always: bool,
}

impl Freshness {
    /// Whether the rows of `slot` hold what the topic had at `fetched`.
    fn holds(&self, slot: i32, fetched: Instant) -> bool {
        self.always || self.fresh_as_of.get(&slot).is_some_and(|f| *f >= fetched)
    }
}

/// A table's rows, kept as their topic has them (Avro in the wire
/// format), decoded into `V` by the joins that look them up.
pub struct LiveTable<V> {
    topic: String,
    co_partitioned: bool,
    /// Rows kept per partition: a co-partitioned table's, unless filled
    /// by hand (the test driver's rows serve every partition).
    by_partition: std::sync::atomic::AtomicBool,
    retention: Duration,
    rows: RwLock<BTreeMap<i32, VersionedTable>>,
    /// `V`'s schema: what the rows are decoded with.
    reader: Arc<Reader>,
    _value: std::marker::PhantomData<fn() -> V>,
    freshness: Mutex<Freshness>,
    changed: Condvar,
    /// Wakes the reader when a join wants a probe or partitions changed hands.
    pub(super) wanted: tokio::sync::Notify,
    pub stats: Arc<TableStats>,
}

impl<V> LiveTable<V> {
    pub fn new(topic: &str, retention: Duration, reader: Arc<Reader>) -> Self {
        Self::with_scope(topic, retention, reader, false)
    }

    /// A table read only in the partitions its joins hold (`hold`).
    pub fn co_partitioned(topic: &str, retention: Duration, reader: Arc<Reader>) -> Self {
        Self::with_scope(topic, retention, reader, true)
    }

    fn with_scope(topic: &str, retention: Duration, reader: Arc<Reader>, co: bool) -> Self {
        LiveTable {
            topic: topic.to_string(),
            co_partitioned: co,
            by_partition: co.into(),
            retention,
            rows: RwLock::default(),
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

    pub fn is_co_partitioned(&self) -> bool {
        self.co_partitioned
    }

    /// The schema rows are decoded into `V` with.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// Where the rows of `partition` are kept.
    fn slot(&self, partition: i32) -> i32 {
        if self.by_partition.load(Ordering::Relaxed) {
            partition
        } else {
            GLOBAL
        }
    }

    /// Applies a batch of table records.
    pub fn apply(&self, records: impl IntoIterator<Item = TableRecord>) {
        let mut rows = self.rows.write().unwrap_or_else(|p| p.into_inner());
        for (partition, key, at_ms, value) in records {
            let slot = self.slot(partition);
            let table = rows
                .entry(slot)
                .or_insert_with(|| VersionedTable::new(self.retention));
            if table.put(&key, at_ms, value.as_deref()) == Put::Expired {
                tracing::debug!(table = %self.topic, at_ms, "a table record older than its history was dropped");
            }
        }
        let keys: usize = rows.values().map(|t| t.len()).sum();
        self.stats.keys.store(keys as u64, Ordering::Relaxed);
    }

    /// `f` of the value of `key`'s row valid at `at_ms` (bytes), in the
    /// rows of `partition` (a co-partitioned table's); lookups older than
    /// the history are counted.
    pub fn lookup<R>(
        &self,
        partition: i32,
        key: &[u8],
        at_ms: i64,
        f: impl FnOnce(Lookup<'_, [u8]>) -> R,
    ) -> R {
        let slot = self.slot(partition);
        let rows = self.rows.read().unwrap_or_else(|p| p.into_inner());
        let found = match rows.get(&slot) {
            Some(t) => t.get_at(key, at_ms),
            None => Lookup::Absent,
        };
        if matches!(found, Lookup::Expired(_)) {
            self.stats.expired_lookups.fetch_add(1, Ordering::Relaxed);
        }
        f(found)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Freshness> {
        self.freshness.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A join's member took over `partition` of the stream: a
    /// co-partitioned table reads its partition of the same number.
    pub fn hold(&self, partition: i32) {
        if self.co_partitioned {
            *self.state().held.entry(partition).or_default() += 1;
            self.wanted.notify_one();
        }
    }

    /// A join's member gave `partition` up; the last to do so drops its rows.
    pub fn unhold(&self, partition: i32) {
        if self.co_partitioned {
            let mut s = self.state();
            if let Some(n) = s.held.get_mut(&partition) {
                *n -= 1;
                if *n == 0 {
                    s.held.remove(&partition);
                }
            }
            drop(s);
            self.wanted.notify_one();
        }
    }

    /// The partitions joins hold (co-partitioned tables).
    pub(super) fn held(&self) -> BTreeSet<i32> {
        self.state().held.keys().copied().collect()
    }

    /// The reader stopped reading `partition`: its rows go.
    pub(super) fn drop_partition(&self, partition: i32) {
        self.state().fresh_as_of.remove(&partition);
        let mut rows = self.rows.write().unwrap_or_else(|p| p.into_inner());
        rows.remove(&partition);
        let keys: usize = rows.values().map(|t| t.len()).sum();
        self.stats.keys.store(keys as u64, Ordering::Relaxed);
    }

    /// Whether the rows a record of `partition` is joined with hold what
    /// the topic had at `fetched`.
    pub fn fresh_for(&self, partition: i32, fetched: Instant) -> bool {
        let slot = self.slot(partition);
        self.state().holds(slot, fetched)
    }

    /// Rows filled by hand (the test driver's): joins never wait.
    pub fn always_fresh(&self) {
        self.state().always = true;
        self.by_partition.store(false, Ordering::Relaxed);
    }

    /// Asks for the rows to hold what the topic had at `fetched`, without
    /// waiting (the worker, as it hands records over).
    pub fn want(&self, fetched: Instant) {
        let mut s = self.state();
        if !s.always {
            self.ask(&mut s, fetched);
        }
    }

    /// Records that a join needs the rows fresh as of `fetched`, and wakes
    /// the reader if that is later than it was asked for.
    fn ask(&self, s: &mut Freshness, fetched: Instant) {
        if s.wanted.is_none_or(|w| w < fetched) {
            s.wanted = Some(fetched);
            self.wanted.notify_one();
        }
    }

    /// Waits until the rows a record of `partition` is joined with hold
    /// everything the topic had at `fetched`.
    pub fn wait_fresh(&self, partition: i32, fetched: Instant) -> Result<(), Closed> {
        let slot = self.slot(partition);
        let mut s = self.state();
        let mut told = false;
        let began = Instant::now();
        loop {
            if s.holds(slot, fetched) {
                let waited = began.elapsed().as_micros() as u64;
                self.stats.join_wait_us.fetch_add(waited, Ordering::Relaxed);
                return Ok(());
            }
            if s.closed {
                return Err(Closed(self.topic.clone()));
            }
            self.ask(&mut s, fetched);
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

    /// The latest time a join waits for, if some rows read are not fresh
    /// as of it yet.
    pub(super) fn wanted_after(&self) -> Option<Instant> {
        let s = self.state();
        s.wanted
            .filter(|w| s.fresh_as_of.is_empty() || s.fresh_as_of.values().any(|f| f < w))
    }

    /// The rows of `partitions` (`None`: a global table's) hold what the
    /// topic had when a probe begun at `probe` asked.
    pub(super) fn fresh_as_of(&self, probe: Instant, partitions: Option<&[i32]>) {
        let mut s = self.state();
        for &slot in partitions.unwrap_or(&[GLOBAL]) {
            let f = s.fresh_as_of.entry(slot).or_insert(probe);
            if *f < probe {
                *f = probe;
            }
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
        assert!(!t.fresh_for(0, fetched));
        let waiter = {
            let t = t.clone();
            std::thread::spawn(move || t.wait_fresh(0, fetched))
        };
        // The reader sees the wish, probes, reads to the end it got.
        let wanted = loop {
            if let Some(w) = t.wanted_after() {
                break w;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(wanted, fetched);
        t.fresh_as_of(fetched - Duration::from_millis(1), None);
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !waiter.is_finished(),
            "a probe begun before the fetch is not enough"
        );
        let probe = Instant::now();
        t.apply([(
            0,
            b"d1".to_vec().into_boxed_slice(),
            5,
            Some(b"north".to_vec()),
        )]);
        t.fresh_as_of(probe, None);
        assert_eq!(waiter.join().unwrap(), Ok(()));
        assert!(t.fresh_for(0, fetched));
        assert_eq!(t.wanted_after(), None);
        let site = t.lookup(0, b"d1", 10, |l| match l {
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
            std::thread::spawn(move || t.wait_fresh(0, Instant::now()))
        };
        std::thread::sleep(Duration::from_millis(10));
        t.close();
        assert_eq!(waiter.join().unwrap(), Err(Closed("devices".into())));
    }

    #[test]
    fn a_co_partitioned_table_keeps_and_freshens_each_partition_on_its_own() {
        let reader = Arc::new(Reader::new(apache_avro::Schema::String));
        let t = LiveTable::<String>::co_partitioned("devices", Duration::from_secs(3600), reader);
        t.hold(0);
        t.hold(1);
        t.hold(1);
        assert_eq!(t.held(), BTreeSet::from([0, 1]));
        let key = |k: &str| k.as_bytes().to_vec().into_boxed_slice();
        t.apply([
            (0, key("d0"), 5, Some(b"north".to_vec())),
            (1, key("d1"), 5, Some(b"south".to_vec())),
        ]);
        let site = |p: i32, k: &str| {
            t.lookup(p, k.as_bytes(), 10, |l| match l {
                Lookup::Found(s) => Some(s.to_vec()),
                _ => None,
            })
        };
        assert_eq!(site(0, "d0").as_deref(), Some(&b"north"[..]));
        // A key is looked up in the rows of the record's partition only.
        assert_eq!(site(1, "d0"), None);
        let fetched = Instant::now();
        t.fresh_as_of(Instant::now(), Some(&[0]));
        assert!(t.fresh_for(0, fetched));
        assert!(
            !t.fresh_for(1, fetched),
            "partition 1 was not read to its end yet"
        );
        t.unhold(1);
        assert_eq!(
            t.held(),
            BTreeSet::from([0, 1]),
            "still held by another join"
        );
        t.unhold(1);
        assert_eq!(t.held(), BTreeSet::from([0]));
        t.drop_partition(1);
        assert_eq!(site(1, "d1"), None);
        assert_eq!(t.stats.keys.load(Ordering::Relaxed), 1);
    }
}
