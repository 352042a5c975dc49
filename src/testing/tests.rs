use std::time::Duration;

use super::*;
use crate::{
    prelude::*,
    topology::{BuildError, Domain},
};

fn rows(table: &str) -> RowSpec {
    RowSpec::new(table)
        .unwrap()
        .column("v", SqlType::BigInt)
        .unwrap()
}

/// A commit that fails after it took effect (a timed-out commit of a
/// transaction the coordinator completed) is read again from where the
/// group's committed offsets say, not from the unit's first record: the
/// outputs stay once each.
#[test]
fn a_commit_that_failed_but_committed_is_not_read_again() {
    let t = topology("ambiguous");
    t.source::<i64>("in")
        .map("double", |v| v * 2)
        .to_topic("out");
    let mut driver = TestDriver::new(t.build().unwrap())
        .unwrap()
        .commit_each(false);
    driver.pipe(None, &1i64, 1).unwrap();
    driver.pipe(None, &2i64, 2).unwrap();
    driver.kafka.lock().ambiguous_commits = 1;
    assert!(driver.commit().is_err(), "the commit reports its failure");
    driver.pipe(None, &3i64, 3).unwrap();
    driver.commit().unwrap();
    let out: Vec<Item<i64>> = driver.read("out").unwrap();
    assert_eq!(out.iter().map(|i| i.value).collect::<Vec<_>>(), [2, 4, 6]);
}

/// A table and a topic from one topology: the unit commits in the
/// database, so the topic gets at least once, and the listing says so.
#[test]
fn outputs_in_two_places_commit_in_the_database_and_say_so() {
    let t = topology("both");
    let [to_table, to_topic] = t.source::<i64>("in").fan_out();
    to_table.to_table(rows("numbers"), |v| vec![Cell::Int(*v)]);
    to_topic.map("double", |v| v * 2).to_topic("doubled");
    let topology = t.build().unwrap();
    let d = &topology.description;
    assert_eq!(d.commit, Domain::Database("default".into()));
    assert!(d.sinks[0].guarantee.starts_with("exactly-once"), "{d}");
    assert!(d.sinks[1].guarantee.starts_with("at-least-once"), "{d}");
    let listing = d.to_string();
    assert!(
        listing.contains("at-least-once (written and acknowledged before"),
        "{listing}"
    );

    let mut driver = TestDriver::new(topology).unwrap();
    driver.pipe(None, &21i64, 1).unwrap();
    driver.pipe(None, &5i64, 2).unwrap();
    let out: Vec<Item<i64>> = driver.read("doubled").unwrap();
    assert_eq!(out.iter().map(|i| i.value).collect::<Vec<_>>(), [42, 10]);
    let tables = driver.tables().row_tables(10);
    assert_eq!(tables[0].2, 2, "both rows stored");
}

#[test]
fn what_cannot_commit_in_one_unit_is_refused_when_built() {
    let t = topology("two-dbs");
    let [a, b] = t.source::<i64>("in").fan_out();
    a.to_table(rows("a"), |v| vec![Cell::Int(*v)]);
    b.to_table(rows("b").in_database("other"), |v| vec![Cell::Int(*v)]);
    let e = t.build().unwrap_err();
    assert!(matches!(e, BuildError::TwoDatabases { .. }), "{e}");
}

/// A topology that commits in a database keeps its stores' changes there,
/// with the positions (a Kafka changelog could not commit with them): no
/// changelog topic; a restart restores the counts from the database, and
/// the keyed table holds each key's latest count.
#[test]
fn stores_of_a_unit_that_commits_in_a_database_are_kept_there() {
    let t = topology("counts-in-db");
    let table = RowSpec::new("counts")
        .and_then(|s| s.column("k", SqlType::Text))
        .and_then(|s| s.column("n", SqlType::BigInt))
        .and_then(|s| s.keyed_by(&["k"]))
        .unwrap();
    t.source::<i64>("in")
        .group_by_key()
        .count("seen")
        .to_table(table, |u| {
            vec![Cell::Text(u.key.clone()), Cell::Int(u.value)]
        });
    let topology = t.build().unwrap();
    assert!(topology.description.changelogs().is_empty());
    let kept = &topology.description.stores[0].kept;
    assert!(kept.contains("kept in database"), "{kept}");
    let mut d = TestDriver::new(topology).unwrap();
    for k in ["a", "b", "a"] {
        d.pipe(Some(k), &1i64, 1).unwrap();
    }
    d.restart().unwrap();
    d.pipe(Some("a"), &1i64, 1).unwrap();
    assert_eq!(d.store::<String, i64>("seen").get("a"), Some(&3));
    let tables = d.tables().row_tables(10);
    let (_, _, given, rows) = tables.iter().find(|t| t.0 == "counts").unwrap();
    assert_eq!(*given, 4, "every update was upserted");
    let mut latest: Vec<Vec<Cell>> = rows.iter().map(|r| r.cells.clone()).collect();
    latest.sort_by_key(|r| format!("{r:?}"));
    let row = |k: &str, n| vec![Cell::Text(k.into()), Cell::Int(n)];
    assert_eq!(latest, [row("a", 3), row("b", 1)]);
    assert!(d.read_raw("sluice-counts-in-db-seen-changelog").is_empty());
}

#[test]
fn records_that_make_two_rows_are_dead_letters() {
    let t = topology("twice");
    t.source::<i64>("in")
        .flat_map("twice", |v| [v, v])
        .to_table(rows("t"), |v| vec![Cell::Int(*v)]);
    let mut d = TestDriver::new(t.build().unwrap()).unwrap();
    d.pipe(None, &1i64, 1).unwrap();
    let dead = d.dead_letters();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].message.contains("made 2 rows"),
        "{}",
        dead[0].message
    );
    assert_eq!(d.tables().row_tables(1)[0].2, 0);
}

/// Windows on an idle stream close by the wall clock.
#[test]
fn windows_close_by_the_wall_clock_when_the_stream_is_idle() {
    let spec = WindowSpec {
        idle_timeout: Duration::from_secs(5),
        ..WindowSpec::tumbling(Duration::from_secs(10), Duration::from_secs(1))
    };
    let t = topology("idle");
    t.source::<i64>("in")
        .window(spec)
        .aggregate("sum", |_| 0i64, || 0i64, |s, v| *s += v)
        .finals()
        .map("value", |w| w.value)
        .to_topic("sums");
    let mut d = TestDriver::new(t.build().unwrap()).unwrap();
    let at = 1_800_000_000_000;
    d.pipe(None, &3i64, at).unwrap();
    d.pipe(None, &4i64, at + 1).unwrap();
    assert!(d.read::<i64>("sums").unwrap().is_empty());
    d.advance_wall_clock(Duration::from_secs(4)).unwrap();
    assert!(d.read::<i64>("sums").unwrap().is_empty(), "not idle yet");
    d.advance_wall_clock(Duration::from_secs(20)).unwrap();
    let sums: Vec<i64> = d
        .read::<i64>("sums")
        .unwrap()
        .into_iter()
        .map(|i| i.value)
        .collect();
    assert_eq!(sums, [7]);
}

/// A split sends each record to its first matching branch; a merge
/// brings branches together again.
#[test]
fn branches_and_merges_route_records() {
    let t = topology("route");
    let [small, big, rest] = t
        .source::<i64>("in")
        .split("size")
        .branch("small", |v| *v < 10)
        .branch("big", |v| *v >= 100)
        .default_branch("rest")
        .streams();
    small
        .map("tag small", |v| -v)
        .merge(big)
        .to_topic("small-or-big");
    rest.to_topic("middling");
    let mut d = TestDriver::new(t.build().unwrap()).unwrap();
    for v in [1i64, 50, 500, 7] {
        d.pipe(None, &v, 1).unwrap();
    }
    let edges: Vec<i64> = d
        .read::<i64>("small-or-big")
        .unwrap()
        .into_iter()
        .map(|i| i.value)
        .collect();
    assert_eq!(edges, [-1, 500, -7]);
    let middling: Vec<i64> = d
        .read::<i64>("middling")
        .unwrap()
        .into_iter()
        .map(|i| i.value)
        .collect();
    assert_eq!(middling, [50]);
}
