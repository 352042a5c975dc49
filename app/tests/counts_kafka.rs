//! `logins-by-locale` on Apache Kafka, with each group protocol: valid logins re-keyed by locale
//! through a repartition topic and counted in a changelogged store, under a
//! steady load and 20 SIGKILLs at random moments; and
//! `logins-by-locale-pg`, its counts upserted into PostgreSQL with the
//! store's changes and the positions, through 10 (with the consumer
//! protocol, keeping CI short; `SLUICE_SOAK=1`: ten times as many): the
//! table's count per locale is exactly its number of valid logins, and
//! the last worker restored its store from the database.
//! Then, read with read_committed: each locale's updates in the compacted
//! output are exactly 1, 2, … up to its number of valid logins (none
//! missing, none repeated, none higher), so a restarted worker's counts went
//! on from the changelog rather than starting over; and the repartition
//! topic holds every valid login exactly once; the last worker's metrics
//! count the changelog records it restored.
//!
//! And with workers going 1 → 3 → 1 under load: the counts stay exact, and
//! every worker answers a query for any locale's count (`/stores`), itself
//! or by redirecting to the worker that holds the locale's partition.

mod common;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use common::{
    TestDb,
    kafka::{FAST_CONSUMER_SESSIONS, Kafka},
    logins::{Logins, Worker},
    read_committed_all,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::de::DeserializeOwned;
use sluice::{
    avro::{AvroSchema, Reader},
    sink::query::{RowFilter, query_rows},
    topology::Cell,
};
use sluice_app::topologies::{
    logins_by_locale::{self, LoginCount, pg},
    user_login::UserLogin,
};

fn kills(ci: usize) -> usize {
    if std::env::var_os("SLUICE_SOAK").is_some() {
        ci * 10
    } else {
        ci
    }
}

/// `topic`'s values read with read_committed, each checked to be keyed
/// by `key(value)`.
async fn committed<T: AvroSchema + DeserializeOwned>(
    w: &Logins,
    topic: &str,
    key: impl Fn(&T) -> &str,
) -> Vec<T> {
    let reader = Reader::new(apache_avro::Schema::parse_str(T::SCHEMA).unwrap());
    let mut out = Vec::new();
    for r in read_committed_all(&w.kafka.bootstrap, topic).await {
        let (_, v) = w.codec.decode::<T>(&r.value, &reader).await.unwrap();
        assert_eq!(r.key.as_deref(), Some(key(&v).as_bytes()), "{topic}'s key");
        out.push(v);
    }
    out
}

/// Each locale's count updates in the output, read with read_committed.
async fn updates(w: &Logins) -> BTreeMap<String, Vec<i64>> {
    let mut updates: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for c in committed::<LoginCount>(w, logins_by_locale::SINK, |c| &c.locale).await {
        updates.entry(c.locale).or_default().push(c.count);
    }
    updates
}

/// Where the counts go: the compacted topic (the store's changes in its
/// changelog topic), or PostgreSQL (the table and the store's changes
/// committed with the positions there).
enum Counts {
    Topic,
    Postgres(TestDb),
}

impl Counts {
    fn topology(&self) -> &'static str {
        match self {
            Counts::Topic => logins_by_locale::NAME,
            Counts::Postgres(_) => pg::NAME,
        }
    }

    fn store(&self) -> &'static str {
        match self {
            Counts::Topic => logins_by_locale::STORE,
            Counts::Postgres(_) => pg::STORE,
        }
    }

    fn repartition(&self) -> String {
        format!(
            "sluice-{}-{}-repartition",
            self.topology(),
            logins_by_locale::REKEY
        )
    }

    fn worker(&self, w: &Logins, instance: &str) -> Worker {
        let args = ["--create-topics"];
        match self {
            Counts::Topic => w.worker_with(instance, &args),
            Counts::Postgres(db) => w.worker_env(instance, &args, &[("DATABASE_URL", &db.url)]),
        }
    }

    /// Each locale's latest count, committed.
    async fn latest(&self, w: &Logins) -> BTreeMap<String, i64> {
        match self {
            Counts::Topic => (updates(w).await.iter())
                .filter_map(|(l, u)| Some((l.clone(), *u.last()?)))
                .collect(),
            Counts::Postgres(db) => {
                let pool = sluice::db::connect(&db.url).await.unwrap();
                let q = format!("SELECT locale, count FROM {}", pg::TABLE);
                // Missing until the first worker made it.
                let rows: Vec<(String, i64)> = sqlx::query_as(&q)
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_default();
                pool.close().await;
                rows.into_iter().collect()
            }
        }
    }
}

async fn counted_exactly_once_through_kills(
    protocol: &'static str,
    counts: Counts,
    seed: u64,
    n: usize,
) {
    let mut w = Logins::new(Kafka::cluster_with(1, &FAST_CONSUMER_SESSIONS), protocol).await;
    w.topology = counts.topology();
    let load = w.load(seed, 400);
    let mut rng = StdRng::seed_from_u64(seed);
    let n = kills(n);
    for _ in 0..n {
        let mut worker = counts.worker(&w, "counts");
        worker.wait_commits(0, Duration::from_secs(120)).await;
        let until = Instant::now() + Duration::from_millis(rng.random_range(0..1500));
        while Instant::now() < until {
            worker.assert_running();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worker.kill();
    }
    load.stop().await;
    let sent = w.sent();
    let want = valid_per_locale(&w);
    assert!(want.len() > 1, "the load had one locale: {want:?}");
    // Caught up when each locale's latest count is its number of logins
    // (offsets would not say: the repartition topic's end is past its
    // last marker).
    let mut last: Worker = counts.worker(&w, "counts");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let latest = counts.latest(&w).await;
        if latest == want {
            break;
        }
        last.assert_running();
        assert!(
            Instant::now() < deadline,
            "the counts did not reach {want:?} in 180 s (latest {latest:?}); the worker's log ends:\n{}",
            last.log_tail(40)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Ready once its partitions are claimed and stores restored.
    while last.readyz().await.0 != 200 {
        last.assert_running();
        assert!(
            Instant::now() < deadline,
            "the last worker never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = last.log_text();
    let restored = log
        .lines()
        .find(|l| l.contains("store restored from its changelog"));
    let restored_records = last.metric("sluice_store_restored_records_total").await;
    // Alone in its group, it answers every locale's count itself.
    assert_eq!(
        ask_counts(&last, counts.store(), &want).await,
        0,
        "a lone worker redirected"
    );
    last.terminate().await;
    assert!(
        restored_records > 0,
        "the last worker's metrics count no restored changelog records"
    );
    let restored = restored.expect("the last worker did not restore its store");
    if let Counts::Postgres(_) = counts {
        assert!(restored.contains("postgres"), "restored from: {restored}");
    }
    if let Counts::Topic = counts {
        // Every update in order: none missing, repeated or higher.
        let updates = updates(&w).await;
        for (locale, n) in &want {
            let seen = updates.get(locale).cloned().unwrap_or_default();
            let expected: Vec<i64> = (1..=*n).collect();
            assert!(seen == expected, "{locale}: updates {seen:?}, want 1..={n}");
        }
    }

    let mut rekeyed: BTreeMap<String, usize> = BTreeMap::new();
    for login in committed::<UserLogin>(&w, &counts.repartition(), |l| &l.locale).await {
        *rekeyed.entry(login.device_id).or_default() += 1;
    }
    let valid: BTreeMap<String, usize> = sent
        .iter()
        .filter_map(|s| s.valid.clone())
        .map(|d| (d, 1))
        .collect();
    assert!(
        rekeyed == valid,
        "the repartition topic does not hold every valid login once"
    );
    eprintln!(
        "{protocol}, {}: {n} kills; {} valid logins over {} locales counted exactly once",
        counts.topology(),
        valid.len(),
        want.len()
    );
    if let Counts::Postgres(db) = counts {
        // Read back as `sluice readings query` and the console do.
        let pool = sluice::db::connect(&db.url).await.unwrap();
        let spec = logins_by_locale::table_spec(pg::TABLE).unwrap();
        let filter = RowFilter {
            limit: 100,
            ..RowFilter::default()
        };
        let rows = query_rows(&pool, &spec, &filter).await.unwrap();
        let read: BTreeMap<String, i64> = (rows.iter())
            .map(|r| match &r.columns[..] {
                [(_, Cell::Text(l)), (_, Cell::Int(n))] => (l.clone(), *n),
                other => panic!("a row of {other:?}"),
            })
            .collect();
        assert_eq!(read, want, "the table read back");
        assert!(rows.iter().all(|r| r.source_offset == -1));
        pool.close().await;
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_are_exact_through_twenty_kills_classic_protocol() {
    counted_exactly_once_through_kills("classic", Counts::Topic, 31, 20).await;
}

/// The consumer protocol's run counts into PostgreSQL (its 1 -> 3 -> 1
/// test below covers the changelog topic with that protocol).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_upserted_into_postgres_are_exact_through_ten_kills_consumer_protocol() {
    let db = TestDb::create().await;
    counted_exactly_once_through_kills("consumer", Counts::Postgres(db), 32, 10).await;
}

/// Each locale's count (`want`) asked of `worker` over HTTP; how many
/// answers came from another worker (after a redirect).
async fn ask_counts(worker: &Worker, store: &str, want: &BTreeMap<String, i64>) -> usize {
    let mut redirected = 0;
    for (locale, n) in want {
        let url = format!("{}/stores/{store}/{locale}", worker.metrics);
        let r = reqwest::get(&url).await.unwrap();
        let (status, from) = (r.status(), r.url().clone());
        let body = r.text().await.unwrap();
        assert_eq!(status, 200, "{url}: {body}");
        assert_eq!(body, n.to_string(), "{url} (answered by {from})");
        if !from.as_str().starts_with(&worker.metrics) {
            redirected += 1;
        }
    }
    redirected
}

/// Waits until each locale's last committed update is `want`'s count.
async fn wait_counted(w: &Logins, want: &BTreeMap<String, i64>, workers: &mut [&mut Worker]) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let updates = updates(w).await;
        let latest: BTreeMap<String, i64> = (updates.iter())
            .filter_map(|(l, u)| Some((l.clone(), *u.last()?)))
            .collect();
        if &latest == want {
            return;
        }
        for worker in workers.iter_mut() {
            worker.assert_running();
        }
        assert!(
            Instant::now() < deadline,
            "the counts did not reach {want:?} in 180 s (latest {latest:?})"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn valid_per_locale(w: &Logins) -> BTreeMap<String, i64> {
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for locale in w.sent().iter().filter_map(|s| s.locale.clone()) {
        *want.entry(locale).or_default() += 1;
    }
    want
}

async fn wait_ready(workers: &mut [&mut Worker]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for w in workers.iter_mut() {
        while w.readyz().await.0 != 200 {
            w.assert_running();
            assert!(
                Instant::now() < deadline,
                "{} never became ready",
                w.metrics
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_stay_exact_from_one_to_three_workers_and_back_and_any_worker_answers() {
    let mut w = Logins::new(Kafka::cluster_with(1, &FAST_CONSUMER_SESSIONS), "consumer").await;
    w.topology = logins_by_locale::NAME;
    let load = w.load(41, 300);
    let mut a = w.worker_with("scale-a", &["--create-topics"]);
    a.wait_commits(0, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut b, mut c) = (w.worker("scale-b"), w.worker("scale-c"));
    wait_ready(&mut [&mut a, &mut b, &mut c]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    load.stop().await;
    let want = valid_per_locale(&w);
    assert!(want.len() > 1, "the load had one locale: {want:?}");
    wait_counted(&w, &want, &mut [&mut a, &mut b, &mut c]).await;
    wait_ready(&mut [&mut a, &mut b, &mut c]).await;

    // Any worker answers for any locale; with three of them, some answers
    // come from another one.
    let mut redirected = 0;
    for worker in [&a, &b, &c] {
        redirected += ask_counts(worker, logins_by_locale::STORE, &want).await;
    }
    assert!(
        redirected > 0,
        "no query was redirected among three workers"
    );
    let stores: serde_json::Value = reqwest::get(format!("{}/stores", a.metrics))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stores[0]["name"], logins_by_locale::STORE, "{stores}");
    let held = stores[0]["partitions"].as_array().unwrap().len();
    assert!(
        held > 0 && held < 6,
        "one of three workers holds {held} of 6 partitions"
    );
    let absent = reqwest::get(format!(
        "{}/stores/{}/xx-NOPE",
        a.metrics,
        logins_by_locale::STORE
    ))
    .await
    .unwrap();
    assert_eq!(absent.status(), 404);

    // Back to one worker: it holds every partition and answers alone.
    b.terminate().await;
    c.terminate().await;
    let load = w.load(42, 300);
    tokio::time::sleep(Duration::from_secs(3)).await;
    load.stop().await;
    let want = valid_per_locale(&w);
    wait_counted(&w, &want, &mut [&mut a]).await;
    wait_ready(&mut [&mut a]).await;
    assert_eq!(
        ask_counts(&a, logins_by_locale::STORE, &want).await,
        0,
        "one worker redirected"
    );
    let page: serde_json::Value = reqwest::get(format!(
        "{}/stores/{}?limit=3",
        a.metrics,
        logins_by_locale::STORE
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let first: Vec<(String, i64)> = want.iter().take(3).map(|(l, n)| (l.clone(), *n)).collect();
    let got: Vec<(String, i64)> = (page["entries"].as_array().unwrap().iter())
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_string(),
                e["value"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, first, "{page}");
    assert_eq!(page["next"], want.keys().nth(3).unwrap().as_str(), "{page}");
    a.terminate().await;

    let updates = updates(&w).await;
    for (locale, n) in &want {
        let seen = updates.get(locale).cloned().unwrap_or_default();
        assert!(
            seen == (1..=*n).collect::<Vec<_>>(),
            "{locale}: updates {seen:?}, want 1..={n}"
        );
    }
    eprintln!(
        "1 -> 3 -> 1 workers: {} valid logins over {} locales counted exactly once; {redirected} queries redirected",
        want.values().sum::<i64>(),
        want.len()
    );
}
