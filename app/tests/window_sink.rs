//! Window aggregates merged into a real PostgreSQL batch by batch equal the
//! aggregates computed independently, to the last count and sum.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::TestDb;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::sync::{Arc, Mutex};

use sluice::{
    operator::At,
    runtime::{Claim, CommitError, Keeper, Position},
    sink::{
        Database, Sink, TableSpec, UnitWriter,
        postgres::{Postgres, windows::PgWindowSink},
        window_table::WindowRow,
    },
    testing::kafka::{Memory, MemoryGroup, MemoryOutbox},
    topology::{KeyValue, Payload},
    window::{Aggregate, Columns, Stats, Watermarks, Window, WindowSpec, WindowState},
};
use sluice_app::topologies::iot_windows;

/// A window table of group `g` reading `topic`, as a member's task has
/// it: its sink, and the keeper it commits through. Their calls block,
/// as on a task thread.
#[derive(Clone)]
struct Table {
    spec: Arc<TableSpec>,
    sink: Arc<Mutex<Box<dyn Sink>>>,
    keeper: Arc<Mutex<Box<dyn Keeper>>>,
}

/// A partial aggregate as a row of the table.
struct Row {
    key: Vec<KeyValue>,
    window: Window,
    partial: Stats,
    is_final: bool,
}

impl Clone for Row {
    fn clone(&self) -> Self {
        Row {
            key: self.key.clone(),
            window: self.window,
            partial: self.partial,
            is_final: self.is_final,
        }
    }
}

async fn table(pool: &sqlx::PgPool, name: &str, topic: &str) -> Table {
    let spec = Arc::new(iot_windows::table_spec(name).unwrap());
    let db = Postgres::new(pool.clone());
    let (s, t) = (spec.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || Table {
        sink: Arc::new(Mutex::new(db.window_table(s.clone()).unwrap())),
        keeper: Arc::new(Mutex::new(db.keeper("g", &t))),
        spec: s,
    })
    .await
    .unwrap()
}

/// The same, for a table the sink does not create.
async fn uncreated(pool: &sqlx::PgPool, name: &str, topic: &str) -> Table {
    let spec = Arc::new(iot_windows::table_spec(name).unwrap());
    let db = Postgres::new(pool.clone());
    let t = topic.to_string();
    let keeper = tokio::task::spawn_blocking(move || db.keeper("g", &t))
        .await
        .unwrap();
    Table {
        sink: Arc::new(Mutex::new(Box::new(PgWindowSink::new(spec.clone())))),
        keeper: Arc::new(Mutex::new(keeper)),
        spec,
    }
}

impl Table {
    async fn claim_async(&self, partitions: &[i32]) -> Result<Vec<Claim>, CommitError> {
        let (k, p) = (self.keeper.clone(), partitions.to_vec());
        tokio::task::spawn_blocking(move || k.lock().unwrap().claim(&p, &MemoryGroup))
            .await
            .unwrap()
    }

    /// Merges `rows`, marks `closed` final and stores `positions`, in one unit.
    async fn commit_async(
        &self,
        rows: &[Row],
        closed: &[(Vec<KeyValue>, Window)],
        positions: &[Position],
    ) -> Result<(), CommitError> {
        let picks = self.spec.check(2, &Stats::columns()).unwrap();
        let mut payloads: Vec<WindowRow> = rows
            .iter()
            .map(|r| WindowRow::Changed {
                key: r.key.clone(),
                window: r.window,
                values: TableSpec::pick(&picks, &r.partial.values()),
                is_final: r.is_final,
            })
            .collect();
        payloads.extend(closed.iter().map(|(key, window)| WindowRow::Closed {
            key: key.clone(),
            window: *window,
        }));
        let (sink, keeper, positions) =
            (self.sink.clone(), self.keeper.clone(), positions.to_vec());
        tokio::task::spawn_blocking(move || {
            let (mut sink, mut keeper) = (sink.lock().unwrap(), keeper.lock().unwrap());
            let mut out = MemoryOutbox::new(Memory::default());
            let at = At {
                partition: 0,
                offset: 0,
            };
            for p in payloads {
                let mut w = UnitWriter {
                    kafka: &mut out,
                    staged: keeper.staged(),
                };
                sink.write(&mut Payload::Value(Box::new(p)), at, &mut w)
                    .unwrap();
            }
            let mut w = UnitWriter {
                kafka: &mut out,
                staged: keeper.staged(),
            };
            sink.flush(&mut w).unwrap();
            let done = keeper.commit(&positions, &mut out, &MemoryGroup);
            if done.is_err() {
                sink.abort();
                keeper.abort(&mut out);
            }
            done
        })
        .await
        .unwrap()
    }
}

fn key(device: &str, sensor: &str) -> Vec<KeyValue> {
    vec![device.into(), sensor.into()]
}

/// The stored next offsets of group `g` on `topic`'s partitions.
async fn positions(pool: &sqlx::PgPool, topic: &str, partitions: &[i32]) -> Vec<(i32, i64)> {
    sqlx::query_as(
        "SELECT partition, next_offset FROM sluice_offsets
          WHERE consumer_group = 'g' AND topic = $1 AND partition = ANY($2) AND next_offset >= 0
          ORDER BY partition",
    )
    .bind(topic)
    .bind(partitions)
    .fetch_all(pool)
    .await
    .unwrap()
}

type Key = (String, String);
/// device, sensor, window start, end (ms), count, sum, min, max, avg, final
type Stored = (String, String, i64, i64, i64, f64, f64, f64, f64, bool);

#[tokio::test]
async fn merged_batches_equal_the_independent_aggregates() {
    let db = TestDb::create().await;
    let pool = sluice::db::connect(&db.url).await.unwrap();
    sluice::db::migrate(&pool).await.unwrap();
    let sink = table(&pool, "sensor_window_aggregates", "iot_sensor_data").await;

    let claims = sink.claim_async(&[0]).await.unwrap();
    assert_eq!(claims[0].next_offset, None, "nothing committed yet");
    let epoch = claims[0].epoch;
    // Readings over ten minutes, a little out of order; quarter values keep
    // every partial sum exact in floating point.
    let mut rng = StdRng::seed_from_u64(9);
    let mut readings: Vec<(Key, i64, f64)> = Vec::new();
    for i in 0..3000i64 {
        let key = (
            format!("device-{}", rng.random_range(0..4)),
            ["temperature", "humidity"][rng.random_range(0..2)].to_string(),
        );
        let ts = i * 200 - rng.random_range(0..3000);
        readings.push((key, ts.max(0), f64::from(rng.random_range(-400..400)) / 4.0));
    }

    let spec = WindowSpec::tumbling(Duration::from_secs(60), Duration::from_secs(10));
    let mut state: WindowState<Key, f64, Stats> = WindowState::new(spec);
    let mut marks = Watermarks::new(0, 60_000);
    let mut expected: BTreeMap<(Key, Window), Stats> = BTreeMap::new();
    let mut offset = 0i64;
    for batch in readings.chunks(137) {
        for (key, ts, v) in batch {
            marks.observe(0, *ts, 0);
            let late = state.add(key, *ts, v, marks.watermark(0, 0));
            // Late readings are not in the table; the independent count skips them too.
            if late.is_empty() {
                for w in spec.kind.windows_for(*ts) {
                    expected.entry((key.clone(), w)).or_default().add(v);
                }
            }
            offset += 1;
        }
        let mark = marks.watermark(0, 0);
        let (updates, closed) = state.flush(mark);
        let rows: Vec<Row> = updates
            .into_iter()
            .map(|u| Row {
                key: key(&u.key.0, &u.key.1),
                window: u.window,
                partial: u.partial,
                is_final: u.is_final,
            })
            .collect();
        let closed: Vec<_> = closed
            .into_iter()
            .map(|c| (key(&c.key.0, &c.key.1), c.window))
            .collect();
        sink.commit_async(
            &rows,
            &closed,
            &[Position {
                partition: 0,
                next_offset: offset,
                resume_offset: offset,
                watermark_ms: mark,
                epoch,
            }],
        )
        .await
        .unwrap();
    }
    // Close everything.
    let (updates, closed) = state.flush(i64::MAX);
    assert!(updates.is_empty());
    let closed: Vec<_> = closed
        .into_iter()
        .map(|c| (key(&c.key.0, &c.key.1), c.window))
        .collect();
    sink.commit_async(&[], &closed, &[]).await.unwrap();

    let stored: Vec<Stored> = sqlx::query_as(
        "SELECT device_id, sensor_type,
                (extract(epoch FROM window_start) * 1000)::bigint, (extract(epoch FROM window_end) * 1000)::bigint,
                count, sum, min, max, avg, is_final
           FROM sensor_window_aggregates ORDER BY 1, 2, 3",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), expected.len());
    for (d, s, ws, we, count, sum, min, max, avg, is_final) in stored {
        let want = expected[&(
            (d.clone(), s.clone()),
            Window {
                start_ms: ws,
                end_ms: we,
            },
        )];
        assert_eq!(
            (count as u64, sum, min, max),
            (want.count, want.sum, want.min, want.max),
            "{d} {s} {ws}"
        );
        assert_eq!(avg, want.sum / want.count as f64);
        assert!(is_final, "{d} {s} {ws} should be final");
    }
    let stored = positions(&pool, "iot_sensor_data", &[0, 1]).await;
    assert_eq!(stored, vec![(0, 3000)]);
    db.drop_db().await;
}

#[tokio::test]
async fn a_failed_commit_writes_nothing() {
    let db = TestDb::create().await;
    let pool = sluice::db::connect(&db.url).await.unwrap();
    sluice::db::migrate(&pool).await.unwrap();
    let sink = table(&pool, "sensor_window_aggregates", "t").await;
    let mut partial = Stats::default();
    partial.add(&1.0);
    let row = Row {
        key: key("d", "light"),
        window: Window {
            start_ms: 0,
            end_ms: 60_000,
        },
        partial,
        is_final: false,
    };
    // The second row's empty partial makes the upsert divide by zero: the
    // whole commit, offsets included, must be rolled back.
    let empty = Row {
        partial: Stats::default(),
        key: key("e", "light"),
        ..row.clone()
    };
    let epoch = sink.claim_async(&[0]).await.unwrap()[0].epoch;
    let err = sink
        .commit_async(
            &[row.clone(), empty],
            &[],
            &[Position {
                partition: 0,
                next_offset: 5,
                resume_offset: 5,
                watermark_ms: 0,
                epoch,
            }],
        )
        .await;
    assert!(err.is_err());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sensor_window_aggregates")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    assert!(positions(&pool, "t", &[0]).await.is_empty());
    // A table that does not exist is refused by the database, which says which.
    let missing = uncreated(&pool, "no_such_table", "t").await;
    let err = missing.commit_async(&[row], &[], &[]).await.unwrap_err();
    assert!(err.to_string().contains("no_such_table"), "{err}");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn windows_query_prints_what_the_sink_stored() {
    let db = TestDb::create().await;
    let pool = sluice::db::connect(&db.url).await.unwrap();
    sluice::db::migrate(&pool).await.unwrap();
    let sink = table(&pool, "sensor_window_aggregates", "t").await;
    let now = chrono::Utc::now().timestamp_millis() / 60_000 * 60_000;
    let mut rows = Vec::new();
    for (device, sensor, minutes_ago, value, is_final) in [
        ("device-1", "temperature", 5, 21.5, true),
        ("device-1", "humidity", 5, 40.0, true),
        ("device-2", "temperature", 5, 19.0, true),
        ("device-1", "temperature", 1, 22.0, false),
        ("device-1", "temperature", 180, 20.0, true),
    ] {
        let mut partial = Stats::default();
        partial.add(&value);
        partial.add(&(value + 1.0));
        let start = now - minutes_ago * 60_000;
        rows.push(Row {
            key: key(device, sensor),
            window: Window {
                start_ms: start,
                end_ms: start + 60_000,
            },
            partial,
            is_final,
        });
    }
    sink.commit_async(&rows, &[], &[]).await.unwrap();

    let run = |args: &[&str]| {
        let out = common::sluice()
            .args(["windows", "query", "--database-url", &db.url])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, json, err) = run(&[
        "--device",
        "device-1",
        "--sensor-type",
        "temperature",
        "--format",
        "json",
    ]);
    assert!(ok, "{err}");
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    let list = parsed.as_array().unwrap();
    assert_eq!(list.len(), 2, "the last hour by default: {json}");
    assert_eq!(list[0]["avg"], 22.5, "newest first");
    assert_eq!(list[1]["count"], 2);
    let (_, final_csv, _) = run(&["--final-only", "--format", "csv", "--since", "3h"]);
    let lines: Vec<&str> = final_csv.lines().collect();
    assert_eq!(
        lines[0],
        "device_id,sensor_type,window_start,window_end,count,sum,min,max,avg,is_final"
    );
    assert_eq!(lines.len(), 1 + 3, "{final_csv}");
    assert!(lines[1..].iter().all(|l| l.ends_with(",true")));
    let (_, table, _) = run(&["--device", "nobody"]);
    assert!(table.contains("(no windows match)"), "{table}");
    let (ok, _, err) = run(&["--since", "yesterday-ish"]);
    assert!(!ok && err.contains("RFC 3339"), "{err}");
    db.drop_db().await;
}

#[tokio::test]
async fn a_worker_that_lost_its_partition_cannot_commit() {
    let db = TestDb::create().await;
    let pool = sluice::db::connect(&db.url).await.unwrap();
    sluice::db::migrate(&pool).await.unwrap();
    let sink = table(&pool, "sensor_window_aggregates", "t").await;
    let row = Row {
        key: key("d", "temperature"),
        window: Window {
            start_ms: 0,
            end_ms: 60_000,
        },
        partial: {
            let mut s = Stats::default();
            s.add(&1.5);
            s
        },
        is_final: false,
    };
    let position = |epoch, next_offset| Position {
        partition: 3,
        next_offset,
        resume_offset: next_offset,
        watermark_ms: 0,
        epoch,
    };
    let old = sink.claim_async(&[3]).await.unwrap()[0];
    sink.commit_async(std::slice::from_ref(&row), &[], &[position(old.epoch, 10)])
        .await
        .unwrap();
    // Another worker takes the partition over and sees where the first stopped.
    let new = sink.claim_async(&[3]).await.unwrap()[0];
    assert_eq!((new.next_offset, new.epoch), (Some(10), old.epoch + 1));
    // The first worker, not yet aware, tries to commit more: refused, nothing written.
    let err = sink
        .commit_async(std::slice::from_ref(&row), &[], &[position(old.epoch, 20)])
        .await
        .unwrap_err();
    assert!(matches!(err, CommitError::Fenced { partition: 3 }), "{err}");
    let count: i64 = sqlx::query_scalar("SELECT count FROM sensor_window_aggregates")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(positions(&pool, "t", &[3]).await, vec![(3, 10)]);
    sink.commit_async(&[row], &[], &[position(new.epoch, 20)])
        .await
        .unwrap();
    assert_eq!(positions(&pool, "t", &[3]).await, vec![(3, 20)]);
    db.drop_db().await;
}
