//! Every compatibility level, with compatible and incompatible evolutions,
//! decided by Avro schema resolution, over HTTP on both storages.

mod common;

use common::*;
use serde_json::json;
use sluice::registry::ServeOptions;

const A_INT: &str = r#"{"name":"a","type":"int"}"#;
const A_LONG: &str = r#"{"name":"a","type":"long"}"#;
const A_STRING: &str = r#"{"name":"a","type":"string"}"#;
const B_DEFAULT: &str = r#"{"name":"b","type":"string","default":""}"#;
const B_REQUIRED: &str = r#"{"name":"b","type":"string"}"#;

fn fields(parts: &[&str]) -> String {
    record(&parts.join(","))
}

fn with_enum(symbols: &[&str]) -> String {
    record(&format!(
        r#"{{"name":"e","type":{{"type":"enum","name":"E","symbols":{}}}}}"#,
        json!(symbols)
    ))
}

struct Case {
    name: &'static str,
    history: Vec<String>,
    next: String,
}

fn cases() -> Vec<Case> {
    let c = |name, history: Vec<String>, next| Case {
        name,
        history,
        next,
    };
    vec![
        c(
            "add field with default",
            vec![fields(&[A_INT])],
            fields(&[A_INT, B_DEFAULT]),
        ),
        c(
            "add field without default",
            vec![fields(&[A_INT])],
            fields(&[A_INT, B_REQUIRED]),
        ),
        c(
            "remove field without default",
            vec![fields(&[A_INT, B_REQUIRED])],
            fields(&[A_INT]),
        ),
        c(
            "remove field with default",
            vec![fields(&[A_INT, B_DEFAULT])],
            fields(&[A_INT]),
        ),
        c(
            "change type int to string",
            vec![fields(&[A_INT])],
            fields(&[A_STRING]),
        ),
        c(
            "promote int to long",
            vec![fields(&[A_INT])],
            fields(&[A_LONG]),
        ),
        c(
            "add enum symbol",
            vec![with_enum(&["X", "Y"])],
            with_enum(&["X", "Y", "Z"]),
        ),
        // Three versions: only the transitive levels look past the latest.
        c(
            "require b after an optional b",
            vec![fields(&[A_INT]), fields(&[A_INT, B_DEFAULT])],
            fields(&[A_INT, B_REQUIRED]),
        ),
        c(
            "drop b after b got a default",
            vec![fields(&[A_INT, B_REQUIRED]), fields(&[A_INT, B_DEFAULT])],
            fields(&[A_INT]),
        ),
    ]
}

/// Expected outcome per level, in the order of `cases()`.
fn expected(level: &str) -> [bool; 9] {
    match level {
        "NONE" => [true; 9],
        "BACKWARD" => [true, false, true, true, false, true, true, true, true],
        "BACKWARD_TRANSITIVE" => [true, false, true, true, false, true, true, false, true],
        "FORWARD" => [true, true, false, true, false, false, false, true, true],
        "FORWARD_TRANSITIVE" => [true, true, false, true, false, false, false, true, false],
        "FULL" => [true, false, false, true, false, false, false, true, true],
        "FULL_TRANSITIVE" => [true, false, false, true, false, false, false, false, false],
        other => panic!("{other}"),
    }
}

async fn check_levels(api: &Api) {
    let levels = [
        "NONE",
        "BACKWARD",
        "BACKWARD_TRANSITIVE",
        "FORWARD",
        "FORWARD_TRANSITIVE",
        "FULL",
        "FULL_TRANSITIVE",
    ];
    let mut failures = Vec::new();
    for level in levels {
        for (case, ok) in cases().into_iter().zip(expected(level)) {
            let subject = format!("{}-{}", level, case.name.replace(' ', "_"));
            // Build the history under NONE so it always registers, then switch.
            api.put(
                &format!("/config/{subject}"),
                &json!({"compatibility": "NONE"}),
            )
            .await;
            for s in &case.history {
                assert_eq!(api.register(&subject, s).await.0, 200);
            }
            api.put(
                &format!("/config/{subject}"),
                &json!({"compatibility": level}),
            )
            .await;
            let (_, check) = api
                .post(
                    &format!("/compatibility/subjects/{subject}/versions"),
                    &json!({"schema": case.next}),
                )
                .await;
            let (status, body) = api.register(&subject, &case.next).await;
            let registered = status == 200;
            if registered != ok || check["is_compatible"] != json!(ok) {
                failures.push(format!(
                    "{level} / {}: expected {ok}, got {status} {body}, check {check}",
                    case.name
                ));
            }
            if !ok && status == 409 {
                let message = body["message"].as_str().unwrap();
                assert!(
                    message.contains(&subject) && message.contains("version"),
                    "{message}"
                );
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn every_level_in_memory() {
    let reg = memory_registry(ServeOptions::default()).await;
    check_levels(&Api::new(reg.url())).await;
    reg.stop().await.unwrap();
}

#[tokio::test]
async fn every_level_on_postgres() {
    let db = TestDb::create().await;
    let reg = spawn_registry(pg_store(&db).await, ServeOptions::default()).await;
    check_levels(&Api::new(reg.url())).await;
    reg.stop().await.unwrap();
    db.drop_db().await;
}

#[tokio::test]
async fn global_level_applies_where_a_subject_has_none() {
    let reg = memory_registry(ServeOptions::default()).await;
    let api = Api::new(reg.url());
    api.register("s", &fields(&[A_INT])).await;
    assert_eq!(
        api.register("s", &fields(&[A_INT, B_REQUIRED])).await.0,
        409
    );
    assert_eq!(
        api.put("/config", &json!({"compatibility": "FORWARD"}))
            .await
            .0,
        200
    );
    assert_eq!(
        api.register("s", &fields(&[A_INT, B_REQUIRED])).await.0,
        200
    );
    reg.stop().await.unwrap();
}
