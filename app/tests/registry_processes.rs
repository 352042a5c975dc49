//! `sluice registry serve --storage postgres` as real processes: ids survive
//! a restart, and two processes on one database agree on every id.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::json;

fn schema_n(n: usize) -> String {
    record(&format!(r#"{{"name":"f{n}","type":"int"}}"#))
}

#[tokio::test]
async fn restart_keeps_ids_and_versions() {
    let db = TestDb::create().await;
    let args = ["--storage", "postgres", "--database-url", &db.url];
    let (proc, api) = registry_process(&args).await;
    let id_a = api.register("a-value", &schema_n(1)).await.1["id"].clone();
    let id_b = api.register("b-value", &schema_n(2)).await.1["id"].clone();
    api.put("/config/a-value", &json!({"compatibility": "NONE"}))
        .await;
    api.register("a-value", &schema_n(3)).await;
    drop(proc); // SIGKILL: no chance to flush anything

    let (_proc, api) = registry_process(&args).await;
    assert_eq!(api.get("/subjects/a-value/versions").await.1, json!([1, 2]));
    assert_eq!(api.get("/subjects/a-value/versions/1").await.1["id"], id_a);
    assert_eq!(
        api.get("/subjects/b-value/versions/latest").await.1["id"],
        id_b
    );
    assert_eq!(
        api.get("/config/a-value").await.1["compatibilityLevel"],
        "NONE"
    );
    // Same text again: same id, no new version.
    assert_eq!(api.register("b-value", &schema_n(2)).await.1["id"], id_b);
    assert_eq!(api.get("/subjects/b-value/versions").await.1, json!([1]));
    db.drop_db().await;
}

#[tokio::test]
async fn two_processes_on_one_database_agree_on_ids() {
    let db = TestDb::create().await;
    let args = ["--storage", "postgres", "--database-url", &db.url];
    // Start both at once: they race to migrate the fresh database too.
    let ((_p1, one), (_p2, two)) = tokio::join!(registry_process(&args), registry_process(&args));
    for api in [&one, &two] {
        api.put("/config", &json!({"compatibility": "NONE"})).await;
    }

    // Both register the same 20 schemas under 4 subjects, interleaved.
    const SCHEMAS: usize = 20;
    let work = |api: Api, reverse: bool| async move {
        let mut order: Vec<usize> = (0..SCHEMAS).collect();
        if reverse {
            order.reverse();
        }
        let mut ids = BTreeMap::new();
        for n in order {
            let subject = format!("s{}-value", n % 4);
            let (status, body) = api.register(&subject, &schema_n(n)).await;
            assert_eq!(status, 200, "{body}");
            ids.insert(n, body["id"].as_i64().unwrap());
        }
        ids
    };
    let (ids_one, ids_two) = tokio::join!(
        tokio::spawn(work(one.clone(), false)),
        tokio::spawn(work(two.clone(), true))
    );
    let (ids_one, ids_two) = (ids_one.unwrap(), ids_two.unwrap());
    assert_eq!(
        ids_one, ids_two,
        "both processes must hand out the same id per schema"
    );
    let mut distinct: Vec<i64> = ids_one.values().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct,
        (1..=SCHEMAS as i64).collect::<Vec<_>>(),
        "ids are dense and unique"
    );

    // Each subject got exactly its 5 schemas once, with the same view from both.
    for s in 0..4 {
        let path = format!("/subjects/s{s}-value/versions");
        let (_, versions) = one.get(&path).await;
        assert_eq!(versions, json!([1, 2, 3, 4, 5]));
        assert_eq!(two.get(&path).await.1, versions);
    }
    db.drop_db().await;
}

#[tokio::test]
async fn postgres_storage_without_a_database_says_how_to_fix_it() {
    let out = sluice()
        .args(["registry", "serve", "--storage", "postgres"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--database-url") && err.contains("DATABASE_URL"),
        "{err}"
    );
}
