use super::*;
use crate::{
    prelude::ToTopic,
    topology::{BuildError, FailureKind, NodeKind, topology},
};

fn item(v: i64) -> Item<i64> {
    Item {
        key: None,
        value: v,
        timestamp_ms: 5,
    }
}

fn stream() -> Stream<i64, i64, crate::topology::ops::Source> {
    topology("t").source::<i64>("in")
}

fn op_error(f: Failure) -> OpError {
    match f {
        Failure::Operator(e) => e,
        other => panic!("not an operator's failure: {other}"),
    }
}

#[test]
fn map_filter_flat_map_compose_in_order() {
    let s = stream()
        .map("double", |v| v * 2)
        .filter("big", |v| *v > 4)
        .flat_map("twice", |v| [v, v + 1]);
    assert!(s.apply(item(2)).unwrap().is_empty());
    let out = s.apply(item(3)).unwrap();
    assert_eq!(out.iter().map(|i| i.value).collect::<Vec<_>>(), vec![6, 7]);
    assert!(out.iter().all(|i| i.timestamp_ms == 5));
}

#[test]
fn try_map_and_validate_report_the_operator_and_kind() {
    let s = stream()
        .validate("positive", |v| {
            if *v > 0 { Ok(()) } else { Err("not positive") }
        })
        .try_map("parse", |v| {
            if v < 100 {
                Ok(v.to_string())
            } else {
                Err(format!("{v} too big"))
            }
        });
    assert_eq!(s.apply(item(7)).unwrap()[0].value, "7");
    let e = op_error(s.apply(item(-1)).unwrap_err());
    assert_eq!(
        (e.operator.as_str(), e.kind),
        ("positive", FailureKind::Validation)
    );
    assert_eq!(e.message, "not positive");
    let e = op_error(s.apply(item(500)).unwrap_err());
    assert_eq!(
        (e.operator.as_str(), e.kind),
        ("parse", FailureKind::Operator)
    );
    assert_eq!(e.to_string(), "parse: 500 too big");
}

#[test]
fn key_by_sets_the_key() {
    let s = stream().key_by("parity", |v| (v % 2).to_string());
    assert_eq!(s.apply(item(3)).unwrap()[0].key.as_deref(), Some(&b"1"[..]));
}

#[test]
fn building_checks_names_topics_and_loops() {
    let ok = topology("user-login")
        .source::<i64>("user-login")
        .to_topic("out")
        .build()
        .unwrap();
    assert_eq!(ok.description.group_id, "sluice-user-login");
    assert_eq!(ok.description.dead_letter, "user-login.dlq");
    assert_eq!(
        ok.description.topics(),
        vec!["user-login", "out", "user-login.dlq"]
    );
    let err = |name: &str, source: &str, sink: &str| {
        topology(name)
            .source::<i64>(source)
            .to_topic(sink)
            .build()
            .unwrap_err()
    };
    assert!(matches!(
        err("bad name", "in", "out"),
        BuildError::BadName(_)
    ));
    assert!(matches!(err("t", "in", "in"), BuildError::Loop { .. }));
    assert!(matches!(
        err("t", "in", "no/slash"),
        BuildError::BadTopic { .. }
    ));
    let bad = topology("t")
        .source_with_schema::<i64>("in", "{not avro")
        .to_topic("out")
        .build()
        .unwrap_err();
    assert!(matches!(bad, BuildError::BadSchema { .. }), "{bad}");
}

#[test]
fn a_graph_without_a_source_or_a_sink_or_with_loose_ends_is_refused() {
    assert!(matches!(
        topology("t").build().unwrap_err(),
        BuildError::NoSource(_)
    ));
    let t = topology("t");
    let _ = t.source::<i64>("in").map("m", |v| v + 1);
    assert!(matches!(t.build().unwrap_err(), BuildError::NoSink(_)));
    let t = topology("t");
    let [a, _b] = t.source::<i64>("in").fan_out();
    a.to_topic("out");
    let e = t.build().unwrap_err();
    assert!(matches!(e, BuildError::Dangling { .. }), "{e}");
    assert!(e.to_string().contains("fan-out(2)"), "{e}");
    let t = topology("t");
    t.source::<i64>("in").to_topic("a");
    t.source::<i64>("in2").to_topic("b");
    assert!(matches!(t.build().unwrap_err(), BuildError::TwoSources(_)));
}

#[test]
fn a_fan_out_gives_every_record_to_every_branch_in_one_topology() {
    let t = topology("t");
    let [a, b] = t.source::<i64>("in").fan_out();
    a.map("inc", |v| v + 1).to_topic("plus");
    b.filter("even", |v| v % 2 == 0).to_topic("even");
    let built = t.build().unwrap();
    let d = &built.description;
    assert_eq!(d.writes(), ["plus", "even"]);
    assert!(d.nodes.iter().any(|n| n.kind == NodeKind::FanOut));
    let listing = d.to_string();
    assert!(listing.contains("fan-out(2)"), "{listing}");
    assert!(listing.contains("topic plus") && listing.contains("topic even"));
}

#[test]
fn a_split_names_its_branches_and_checks_how_many_are_taken() {
    let t = topology("t");
    let [small, big] = t
        .source::<i64>("in")
        .split("size")
        .branch("small", |v| *v < 10)
        .default_branch("big")
        .streams();
    small.to_topic("small");
    big.to_topic("big");
    let d = t.build().unwrap().description;
    let labels: Vec<&str> = d.nodes.iter().map(|n| n.label.as_str()).collect();
    assert!(labels.contains(&"split(size)"));
    assert!(labels.contains(&"branch(small)") && labels.contains(&"branch(big)"));

    let t = topology("t");
    let [only] = t
        .source::<i64>("in")
        .split("size")
        .branch("small", |v| *v < 10)
        .default_branch("big")
        .streams();
    only.to_topic("x");
    let e = t.build().unwrap_err();
    assert!(e.to_string().contains("2 branch(es) declared"), "{e}");

    let t = topology("t");
    let [a, b] = t
        .source::<i64>("in")
        .split("s")
        .default_branch("rest")
        .branch("late", |_| true)
        .streams();
    a.to_topic("a");
    b.to_topic("b");
    assert!(
        t.build()
            .unwrap_err()
            .to_string()
            .contains("must be the last")
    );
}

#[test]
fn merged_streams_flow_on_as_one() {
    let t = topology("t");
    let [a, b] = t.source::<i64>("in").fan_out();
    a.map("double", |v| v * 2)
        .merge(b.map("negate", |v| -v))
        .to_topic("out");
    let built = t.build().unwrap();
    let merge = built
        .description
        .nodes
        .iter()
        .find(|n| n.kind == NodeKind::Merge)
        .unwrap();
    assert_eq!(merge.parents.len(), 2);
    assert!(built.description.to_string().contains("merge #"));
}
