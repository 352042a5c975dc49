//! Avro over the Confluent wire format through a running registry, with
//! schema_registry_converter doing the look-ups, and `sluice schemas register`.

mod common;

use apache_avro::Schema;
use common::*;
use serde::{Deserialize, Serialize};
use sluice::{
    avro::{AvroCodec, CodecError, Reader, RegistryClient, RegistryConfig, wire},
    registry::ServeOptions,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct UserLogin {
    user_id: String,
    app_version: String,
    ip: String,
    locale: String,
    device_id: String,
    timestamp: i64,
    device_type: String,
}

fn login() -> UserLogin {
    UserLogin {
        user_id: "6f1c2a1e-4b7d-4c59-9f0e-2d5b8a1c3e77".into(),
        app_version: "2.3.1".into(),
        ip: "203.0.113.7".into(),
        locale: "en-GB".into(),
        device_id: "dev-42".into(),
        timestamp: 1_790_000_000,
        device_type: "Android".into(),
    }
}

async fn registered() -> (sluice::registry::Running, AvroCodec, RegistryClient) {
    let reg = memory_registry(ServeOptions::default()).await;
    let config = RegistryConfig::new(&reg.url(), None).unwrap();
    let client = RegistryClient::new(config.clone()).unwrap();
    for file in common::schemas() {
        client.register(&file.subject(), &file.text).await.unwrap();
    }
    (reg, AvroCodec::new(&config).unwrap(), client)
}

#[tokio::test]
async fn round_trip_through_the_registry() {
    let (reg, codec, _) = registered().await;
    let bytes = codec.encode("user-login", &login()).await.unwrap();
    let (id, body) = wire::split(&bytes).unwrap();
    assert!(id > 0 && !body.is_empty());
    let reader = Reader::new(common::schema("user-login"));
    let (decoded_id, back): (u32, UserLogin) = codec.decode(&bytes, &reader).await.unwrap();
    assert_eq!((decoded_id, back), (id, login()));
    reg.stop().await.unwrap();
}

#[tokio::test]
async fn writer_schemas_resolve_to_the_reader() {
    let (reg, codec, client) = registered().await;
    // An older producer wrote a schema without app_version; our reader
    // (with a default for it) still reads its records.
    let old = r#"{"type":"record","name":"UserLogin","namespace":"io.sluice.login","fields":[
        {"name":"user_id","type":"string"},{"name":"timestamp","type":"int"}]}"#;
    client.register("legacy-value", old).await.unwrap();
    #[derive(Serialize)]
    struct Old {
        user_id: String,
        timestamp: i32,
    }
    let bytes = codec
        .encode(
            "legacy",
            &Old {
                user_id: "u".into(),
                timestamp: 7,
            },
        )
        .await
        .unwrap();
    let reader = Reader::new(
        Schema::parse_str(
            r#"{"type":"record","name":"UserLogin","namespace":"io.sluice.login","fields":[
        {"name":"user_id","type":"string"},{"name":"timestamp","type":"long"},
        {"name":"app_version","type":"string","default":"unknown"}]}"#,
        )
        .unwrap(),
    );
    #[derive(Debug, Deserialize, PartialEq)]
    struct New {
        user_id: String,
        timestamp: i64,
        app_version: String,
    }
    let (_, new): (u32, New) = codec.decode(&bytes, &reader).await.unwrap();
    assert_eq!(
        new,
        New {
            user_id: "u".into(),
            timestamp: 7,
            app_version: "unknown".into()
        }
    );

    // A reader that needs a field the writer never had, without default, refuses.
    let strict = Reader::new(common::schema("user-login"));
    let err = codec
        .decode::<UserLogin>(&bytes, &strict)
        .await
        .unwrap_err();
    assert!(matches!(err, CodecError::Incompatible { .. }), "{err:?}");
    assert_eq!(err.kind(), "incompatible_schema");
    reg.stop().await.unwrap();
}

#[tokio::test]
async fn undecodable_bytes_are_classified() {
    let (reg, codec, _) = registered().await;
    let reader = Reader::new(common::schema("user-login"));
    let good = codec.encode("user-login", &login()).await.unwrap();

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "empty_payload"),
        (b"{\"json\":true}".to_vec(), "bad_magic_byte"),
        (vec![0, 0, 0], "truncated_header"),
        (vec![0, 0, 0, 0x7f, 0x01, 2, 3], "unknown_schema_id"),
        (good[..good.len() - 3].to_vec(), "corrupt_avro"),
        ([good.clone(), vec![1, 2, 3]].concat(), "corrupt_avro"),
    ];
    for (bytes, kind) in cases {
        let err = codec
            .decode::<UserLogin>(&bytes, &reader)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), kind, "{bytes:?}: {err}");
        assert!(!err.is_retryable(), "{err}");
    }
    reg.stop().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_registry_is_retryable() {
    let config = RegistryConfig::new(&format!("http://127.0.0.1:{}", free_port()), None).unwrap();
    let codec = AvroCodec::new(&config).unwrap();
    let err = codec.encode("user-login", &login()).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let err = codec
        .decode::<UserLogin>(
            &[0, 0, 0, 0, 1, 2],
            &Reader::new(common::schema("user-login")),
        )
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn schemas_register_command() {
    let reg = memory_registry(ServeOptions::default()).await;
    let run = |args: &[&str]| {
        sluice()
            .args(["schemas", "register", "--registry-url", &reg.url()])
            .args(args)
            .output()
            .unwrap()
    };
    let first = run(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let out = String::from_utf8_lossy(&first.stdout);
    for topic in [
        "user-login",
        "processed-user-login",
        "iot_sensor_data",
        "iot-alerts",
    ] {
        assert!(out.contains(&format!("{topic}-value: registered")), "{out}");
    }
    let again = run(&[]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("user-login-value: unchanged"));

    // A breaking change to user-login: a new field without default.
    let dir = tempfile::tempdir().unwrap();
    let mut breaking: serde_json::Value =
        serde_json::from_str(&common::schema_text("user-login")).unwrap();
    breaking["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "tenant", "type": "string", "doc": "new"}));
    std::fs::write(dir.path().join("user-login.avsc"), breaking.to_string()).unwrap();
    let refused = run(&["--dir", dir.path().to_str().unwrap()]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    for needle in ["user-login-value", "version 1", "BACKWARD", "tenant"] {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }
    reg.stop().await.unwrap();
}
