use super::*;
use crate::topology::{FailureKind, topology};

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
    let e = s.apply(item(-1)).unwrap_err();
    assert_eq!(
        (e.operator.as_str(), e.kind),
        ("positive", FailureKind::Validation)
    );
    assert_eq!(e.message, "not positive");
    let e = s.apply(item(500)).unwrap_err();
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

#[derive(serde::Deserialize, serde::Serialize)]
struct Any {}

#[test]
fn building_validates_the_graph() {
    let ok = topology("user-login")
        .source::<Any>("user-login")
        .records_for("out")
        .unwrap();
    assert_eq!(ok.description.group_id, "sluice-user-login");
    assert_eq!(ok.description.dead_letter, "user-login.dlq");
    assert_eq!(
        ok.description.topics(),
        vec!["user-login", "out", "user-login.dlq"]
    );
    let err = |r: Result<super::super::Declared, BuildError>| r.unwrap_err();
    assert!(matches!(
        err(topology("bad name")
            .source::<Any>("user-login")
            .records_for("out")),
        BuildError::BadName(_)
    ));
    assert!(matches!(
        err(topology("t")
            .source::<Any>("user-login")
            .records_for("user-login")),
        BuildError::Loop { .. }
    ));
    assert!(matches!(
        err(topology("t")
            .source::<Any>("user-login")
            .records_for("no/slash")),
        BuildError::BadTopic { .. }
    ));
    assert!(matches!(
        err(topology("t")
            .source::<Any>("unknown-topic")
            .records_for("out")),
        BuildError::NoSchema { .. }
    ));
}
