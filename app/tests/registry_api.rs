//! The embedded Schema Registry over real HTTP, against both storages.

mod common;

use common::*;
use serde_json::json;
use sluice::registry::{Credentials, ServeOptions};

/// The REST API end to end; run against each store.
async fn exercise(api: &Api) {
    let v1 = record(r#"{"name":"a","type":"int"}"#);
    let v2 = record(r#"{"name":"a","type":"int"},{"name":"b","type":"string","default":""}"#);

    // Registration is idempotent, even with other whitespace; ids are global.
    let (s, first) = api.register("orders-value", &v1).await;
    assert_eq!(s, 200, "{first}");
    let id1 = first["id"].as_i64().unwrap();
    let spaced = v1.replace(',', " ,\n ");
    assert_eq!(api.register("orders-value", &spaced).await.1["id"], id1);
    assert_eq!(
        api.register("other-value", &v1).await.1["id"],
        id1,
        "one text, one id"
    );
    let id2 = api.register("orders-value", &v2).await.1["id"]
        .as_i64()
        .unwrap();
    assert_ne!(id1, id2);

    assert_eq!(
        api.get("/subjects").await,
        (200, json!(["orders-value", "other-value"]))
    );
    assert_eq!(
        api.get("/subjects/orders-value/versions").await,
        (200, json!([1, 2]))
    );
    let (s, latest) = api.get("/subjects/orders-value/versions/latest").await;
    assert_eq!(s, 200);
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["id"], id2);
    assert_eq!(latest["subject"], "orders-value");
    let (_, v1_body) = api.get("/subjects/orders-value/versions/1").await;
    assert_eq!(v1_body["id"], id1);
    let (s, raw) = api.get("/subjects/orders-value/versions/1/schema").await;
    assert_eq!(s, 200);
    assert_eq!(raw["name"], "R");
    let (s, by_id) = api.get(&format!("/schemas/ids/{id1}")).await;
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(by_id["schema"].as_str().unwrap()).unwrap()["fields"]
            [0]["name"],
        "a"
    );
    assert_eq!(
        api.get(&format!("/schemas/ids/{id1}/versions")).await,
        (
            200,
            json!([{"subject":"orders-value","version":1},{"subject":"other-value","version":1}])
        )
    );

    // Lookup by schema.
    let (s, found) = api
        .post("/subjects/orders-value", &json!({"schema": v2}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        (found["id"].as_i64(), found["version"].as_i64()),
        (Some(id2), Some(2))
    );
    let unknown = record(r#"{"name":"zz","type":"long"}"#);
    assert_error(
        &api.post("/subjects/orders-value", &json!({"schema": unknown}))
            .await,
        404,
        40403,
    );
    assert_error(
        &api.post("/subjects/nope", &json!({"schema": v1})).await,
        404,
        40401,
    );

    // Config: global default BACKWARD, subject-level overrides.
    assert_eq!(api.get("/config").await.1["compatibilityLevel"], "BACKWARD");
    assert_error(&api.get("/config/orders-value").await, 404, 40408);
    assert_eq!(
        api.get("/config/orders-value?defaultToGlobal=true").await.1["compatibilityLevel"],
        "BACKWARD"
    );
    assert_eq!(
        api.put("/config/orders-value", &json!({"compatibility":"full"}))
            .await,
        (200, json!({"compatibility":"FULL"}))
    );
    assert_eq!(
        api.get("/config/orders-value").await.1["compatibilityLevel"],
        "FULL"
    );
    assert_error(
        &api.put("/config", &json!({"compatibility":"SIDEWAYS"}))
            .await,
        422,
        42203,
    );
    assert_eq!(
        api.delete("/config/orders-value").await,
        (200, json!({"compatibilityLevel":"FULL"}))
    );
    assert_error(&api.delete("/config/orders-value").await, 404, 40408);

    // Compatibility endpoint, terse and verbose.
    let breaking = record(r#"{"name":"a","type":"string"}"#);
    assert_eq!(
        api.post(
            "/compatibility/subjects/orders-value/versions/latest",
            &json!({"schema": breaking})
        )
        .await,
        (200, json!({"is_compatible": false}))
    );
    let (_, verbose) = api
        .post(
            "/compatibility/subjects/orders-value/versions/1?verbose=true",
            &json!({"schema": breaking}),
        )
        .await;
    assert_eq!(verbose["is_compatible"], false);
    assert!(
        verbose["messages"][0]
            .as_str()
            .unwrap()
            .contains("version 1"),
        "{verbose}"
    );
    assert_eq!(
        api.post(
            "/compatibility/subjects/orders-value/versions/latest",
            &json!({"schema": v2})
        )
        .await
        .1,
        json!({"is_compatible": true})
    );
    assert_error(
        &api.post(
            "/compatibility/subjects/orders-value/versions/9",
            &json!({"schema": v2}),
        )
        .await,
        404,
        40402,
    );

    // Soft delete, then permanent; each refused out of order.
    assert_error(
        &api.delete("/subjects/other-value/versions/1?permanent=true")
            .await,
        404,
        40407,
    );
    assert_eq!(
        api.delete("/subjects/other-value/versions/1").await,
        (200, json!(1))
    );
    assert_error(
        &api.delete("/subjects/other-value/versions/1").await,
        404,
        40406,
    );
    assert_error(&api.get("/subjects/other-value/versions").await, 404, 40401);
    assert_eq!(
        api.get("/subjects/other-value/versions?deleted=true").await,
        (200, json!([1]))
    );
    assert_eq!(api.get("/subjects").await.1, json!(["orders-value"]));
    assert_eq!(
        api.get("/subjects?deleted=true").await.1,
        json!(["orders-value", "other-value"])
    );
    assert_eq!(
        api.get(&format!("/schemas/ids/{id1}/versions")).await.1,
        json!([{"subject":"orders-value","version":1}])
    );
    assert_eq!(
        api.delete("/subjects/other-value/versions/1?permanent=true")
            .await,
        (200, json!(1))
    );
    assert_error(
        &api.get("/subjects/other-value/versions?deleted=true").await,
        404,
        40401,
    );

    assert_error(
        &api.delete("/subjects/orders-value?permanent=true").await,
        404,
        40405,
    );
    assert_eq!(
        api.delete("/subjects/orders-value").await,
        (200, json!([1, 2]))
    );
    assert_error(&api.delete("/subjects/orders-value").await, 404, 40404);
    assert_error(
        &api.get("/subjects/orders-value/versions/1").await,
        404,
        40401,
    );
    assert_eq!(
        api.get("/subjects/orders-value/versions/1?deleted=true")
            .await
            .1["id"],
        id1
    );
    // Re-registering after a soft delete continues the numbering, same id.
    let (_, again) = api.register("orders-value", &v1).await;
    assert_eq!(again["id"], id1);
    assert_eq!(
        api.get("/subjects/orders-value/versions").await.1,
        json!([3])
    );
    assert_eq!(api.delete("/subjects/orders-value").await.1, json!([3]));
    assert_eq!(
        api.delete("/subjects/orders-value?permanent=true").await,
        (200, json!([1, 2, 3]))
    );
    assert_eq!(api.get("/subjects?deleted=true").await.1, json!([]));
    // Ids outlive their subjects, as in Confluent.
    assert_eq!(api.get(&format!("/schemas/ids/{id1}")).await.0, 200);
}

/// Every bad request gets its Confluent error, never a 500.
async fn refuse_bad_requests(api: &Api) {
    let url = |p: &str| format!("{}{p}", api.base);
    let malformed = api
        .send(
            api.http
                .post(url("/subjects/x/versions"))
                .header("Content-Type", CT)
                .body("{\"schema\": "),
        )
        .await;
    assert_error(&malformed, 400, 400);
    let not_object = api
        .send(
            api.http
                .post(url("/subjects/x/versions"))
                .header("Content-Type", CT)
                .body("[1,2]"),
        )
        .await;
    assert_error(&not_object, 400, 400);
    assert_error(
        &api.register(
            "x",
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"intt"}]}"#,
        )
        .await,
        422,
        42201,
    );
    assert_error(&api.register("x", "not json at all").await, 422, 42201);
    assert_error(
        &api.post("/subjects/x/versions", &json!({})).await,
        422,
        42201,
    );
    assert_error(
        &api.post(
            "/subjects/x/versions",
            &json!({"schema": record(r#"{"name":"a","type":"int"}"#), "schemaType": "PROTOBUF"}),
        )
        .await,
        422,
        42201,
    );
    assert_error(&api.get("/subjects/missing/versions").await, 404, 40401);
    assert_error(&api.get("/subjects/missing/versions/1").await, 404, 40401);
    api.register("x", &record(r#"{"name":"a","type":"int"}"#))
        .await;
    assert_error(&api.get("/subjects/x/versions/2").await, 404, 40402);
    assert_error(&api.get("/subjects/x/versions/0").await, 422, 42202);
    assert_error(&api.get("/subjects/x/versions/banana").await, 422, 42202);
    assert_error(&api.get("/schemas/ids/999999").await, 404, 40403);
    assert_error(&api.get("/schemas/ids/abc").await, 404, 40403);
    assert_error(&api.get("/no/such/route").await, 404, 404);
    let huge = "x".repeat(sluice::registry::DEFAULT_MAX_BODY + 1);
    let oversize = api
        .send(
            api.http
                .post(url("/subjects/x/versions"))
                .header("Content-Type", CT)
                .body(json!({ "schema": huge }).to_string()),
        )
        .await;
    assert_error(&oversize, 413, 413);
    // Responses carry the Confluent media type; plain JSON requests work too.
    let resp = api
        .http
        .post(url("/subjects/y/versions"))
        .header("Content-Type", "application/json")
        .body(json!({"schema": record(r#"{"name":"a","type":"int"}"#)}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], CT);
}

#[tokio::test]
async fn api_in_memory() {
    let reg = memory_registry(ServeOptions::default()).await;
    exercise(&Api::new(reg.url())).await;
    reg.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_in_memory() {
    let reg = memory_registry(ServeOptions::default()).await;
    refuse_bad_requests(&Api::new(reg.url())).await;
    reg.stop().await.unwrap();
}

#[tokio::test]
async fn api_on_postgres() {
    let db = TestDb::create().await;
    let reg = spawn_registry(pg_store(&db).await, ServeOptions::default()).await;
    exercise(&Api::new(reg.url())).await;
    refuse_bad_requests(&Api::new(reg.url())).await;
    reg.stop().await.unwrap();
    db.drop_db().await;
}

#[tokio::test]
async fn basic_auth_is_enforced() {
    let creds: Credentials = "alice:wonder land".parse().unwrap();
    let reg = memory_registry(ServeOptions {
        basic_auth: Some(creds),
        ..ServeOptions::default()
    })
    .await;
    let api = Api::new(reg.url());
    let (status, body) = api.get("/subjects").await;
    assert_error(&(status, body), 401, 401);
    let wrong = api
        .send(
            api.http
                .get(format!("{}/subjects", api.base))
                .basic_auth("alice", Some("x")),
        )
        .await;
    assert_error(&wrong, 401, 401);
    let ok = api
        .send(
            api.http
                .get(format!("{}/subjects", api.base))
                .basic_auth("alice", Some("wonder land")),
        )
        .await;
    assert_eq!(ok, (200, json!([])));
    reg.stop().await.unwrap();
}
