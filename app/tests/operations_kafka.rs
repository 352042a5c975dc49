//! The operator's tools on Apache Kafka: `sluice tail` decodes records of
//! two versions of a schema and shows undecodable bytes with the reason;
//! `sluice dlq inspect` counts what a raw read counts; `sluice dlq replay`
//! copies the chosen letters once (a second run copies nothing), the fixed
//! ones come out of the topology, a still-bad one returns to the DLQ marked
//! `sluice.replayed.from`, and a value with every byte 0–255 survives.

mod common;

use std::{collections::BTreeMap, time::Duration};

use apache_avro::{Schema, types::Value as Avro};
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use serde_json::Value;

use common::{
    Api,
    kafka::Kafka,
    logins::{DLQ, Logins, OUTPUT, SOURCE},
    read_committed_all, sluice,
};
use sluice::avro::{Reader, RegistryConfig};
use sluice_app::{simulate::logins::Generator, topologies::user_login::ProcessedUserLogin};

/// `sluice ARGS` against this Kafka and registry: (ok, stdout, stderr).
fn run(bootstrap: &str, registry: &str, args: &[&str]) -> (bool, String, String) {
    let out = sluice()
        .args(args)
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
        .env("SCHEMA_REGISTRY_URL", registry)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Confluent framing: magic byte, schema id, Avro body.
fn wire(id: u32, schema: &Schema, value: Avro) -> Vec<u8> {
    let mut out = vec![0];
    out.extend(id.to_be_bytes());
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .unwrap();
    out.extend(writer.write_value_to_vec(value).unwrap());
    out
}

async fn produce(
    p: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: &str,
    value: Option<&[u8]>,
) {
    let headers = OwnedHeaders::new().insert(Header {
        key: "origin",
        value: Some("test"),
    });
    let mut r = FutureRecord::<str, [u8]>::to(topic)
        .key(key)
        .headers(headers);
    if let Some(v) = value {
        r = r.payload(v);
    }
    if let Some(part) = partition {
        r = r.partition(part);
    }
    p.send(r, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_decodes_two_schema_versions_and_shows_undecodable_bytes() {
    let kafka = Kafka::start();
    kafka.create_topics(&[("ops-events", 2)]).await;
    let registry = sluice::registry::spawn_preloaded(&[]).await.unwrap();
    let api = Api::new(registry.url());
    let v1 = r#"{"type":"record","name":"Event","fields":[{"name":"name","type":"string"}]}"#;
    let v2 = r#"{"type":"record","name":"Event","fields":[{"name":"name","type":"string"},{"name":"size","type":"int","default":0}]}"#;
    let id1 = api.register("ops-events-value", v1).await.1["id"]
        .as_u64()
        .unwrap() as u32;
    let id2 = api.register("ops-events-value", v2).await.1["id"]
        .as_u64()
        .unwrap() as u32;
    assert_ne!(id1, id2);
    let (s1, s2) = (
        Schema::parse_str(v1).unwrap(),
        Schema::parse_str(v2).unwrap(),
    );
    let p: FutureProducer = kafka.config().producer(None).create().unwrap();
    let one = wire(
        id1,
        &s1,
        Avro::Record(vec![("name".into(), Avro::String("a".into()))]),
    );
    let two = wire(
        id2,
        &s2,
        Avro::Record(vec![
            ("name".into(), Avro::String("b".into())),
            ("size".into(), Avro::Int(7)),
        ]),
    );
    let junk = b"not avro at all".to_vec();
    produce(&p, "ops-events", Some(0), "k1", Some(&one)).await;
    produce(&p, "ops-events", Some(0), "k2", Some(&two)).await;
    produce(&p, "ops-events", Some(0), "k3", Some(&junk)).await;
    produce(&p, "ops-events", Some(0), "k4", None).await;
    let (b, r) = (kafka.bootstrap.as_str(), registry.url());

    let (ok, out, err) = run(b, &r, &["tail", "ops-events", "--from-beginning"]);
    assert!(ok, "{err}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0]["value"], serde_json::json!({"name": "a"}));
    assert_eq!(lines[0]["schema_id"], id1);
    assert_eq!(lines[0]["key"], "k1");
    assert_eq!(lines[0]["headers"]["origin"], "test");
    assert_eq!(
        (lines[0]["partition"].as_i64(), lines[0]["offset"].as_i64()),
        (Some(0), Some(0))
    );
    assert!(lines[0]["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        lines[1]["value"],
        serde_json::json!({"name": "b", "size": 7})
    );
    assert_eq!(lines[1]["schema_id"], id2);
    use base64::Engine;
    assert_eq!(
        lines[2]["value_base64"],
        base64::engine::general_purpose::STANDARD.encode(&junk)
    );
    assert_eq!(lines[2]["error"]["kind"], "bad_magic_byte", "{}", lines[2]);
    assert!(
        lines[3]["value"].is_null() && lines[3].get("error").is_none(),
        "a tombstone"
    );

    // Positions, counts and the table.
    let (_, out, _) = run(
        b,
        &r,
        &["tail", "ops-events", "--offset", "0:1", "--count", "2"],
    );
    let offsets: Vec<i64> = json_lines(&out)
        .iter()
        .map(|l| l["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, vec![1, 2]);
    let (_, out, _) = run(b, &r, &["tail", "ops-events", "--count", "1"]);
    assert_eq!(json_lines(&out)[0]["offset"], 3, "the last record: {out}");
    let (_, out, _) = run(
        b,
        &r,
        &["tail", "ops-events", "--from", "2099-01-01T00:00:00Z"],
    );
    assert!(out.is_empty(), "{out}");
    let (_, out, _) = run(
        b,
        &r,
        &[
            "tail",
            "ops-events",
            "--from-beginning",
            "--format",
            "table",
            "--headers",
        ],
    );
    assert!(
        out.contains("0:2") && out.contains("undecodable (bad_magic_byte"),
        "{out}"
    );
    assert!(
        out.contains(r#"{"name":"b","size":7}"#) && out.contains(r#""origin":"test""#),
        "{out}"
    );
    let (ok, _, err) = run(b, &r, &["tail", "ops-events", "--offset", "5:0"]);
    assert!(!ok && err.contains("has no partition 5"), "{err}");
    let (ok, _, err) = run(b, &r, &["tail", "no-such-topic"]);
    assert!(!ok && err.contains("does not exist"), "{err}");

    // The IoT simulator's settings under the seeds' names, read back with tail.
    let (ok, _, err) = run(b, &r, &["schemas", "register"]);
    assert!(ok, "{err}");
    kafka.create_topics(&[("iot_sensor_data", 2)]).await;
    let sim = sluice()
        .args(["simulate", "iot"])
        .env("KAFKA_BOOTSTRAP_SERVERS", b)
        .env("SCHEMA_REGISTRY_URL", &r)
        .env("IOT_NUM_DEVICES", "3")
        .env("IOT_DEVICE_TYPES", "temperature,light")
        .env("IOT_DATA_INTERVAL_SEC", "0.2")
        .env("IOT_ANOMALY_PROBABILITY", "0")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sim = common::Proc(sim);
    tokio::time::sleep(Duration::from_secs(4)).await;
    std::process::Command::new("kill")
        .args(["-TERM", &sim.0.id().to_string()])
        .status()
        .unwrap();
    drop(sim);
    let (ok, out, err) = run(b, &r, &["tail", "iot_sensor_data", "--from-beginning"]);
    assert!(ok, "{err}");
    let readings = json_lines(&out);
    assert!(readings.len() >= 12, "{} readings", readings.len());
    let devices: std::collections::BTreeSet<String> = readings
        .iter()
        .map(|l| l["value"]["device_id"].as_str().unwrap().to_string())
        .collect();
    let types: std::collections::BTreeSet<String> = readings
        .iter()
        .map(|l| l["value"]["sensor_type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(devices.len(), 3, "IOT_NUM_DEVICES: {devices:?}");
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        vec!["light", "temperature"],
        "IOT_DEVICE_TYPES"
    );
}

/// Dead letters by reason, as the raw topic tells.
async fn raw_reasons(bootstrap: &str) -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    for r in read_committed_all(bootstrap, DLQ).await {
        *by.entry(r.headers["sluice.error.kind"].clone())
            .or_default() += 1;
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dlq_inspect_counts_and_replay_copies_chosen_letters_once() {
    let logins = Logins::new(Kafka::start(), "classic").await;
    let (b, r) = (logins.kafka.bootstrap.clone(), logins.registry_url.clone());
    let api = Api::new(r.clone());
    // The next schema id the registry gives out: that of a user-login
    // schema v2 whose records come before it is registered.
    let mut next_id = 1;
    while api.get(&format!("/schemas/ids/{next_id}")).await.0 == 200 {
        next_id += 1;
    }
    let mut v2: Value = serde_json::from_str(&common::schema_text(SOURCE)).unwrap();
    v2["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "referrer", "type": ["null", "string"], "default": null}));
    let v2_text = v2.to_string();
    let v2_schema = Schema::parse_str(&v2_text).unwrap();

    let p: FutureProducer = logins.kafka.config().producer(None).create().unwrap();
    let mut generator = Generator::new(3, 0.0);
    let now = chrono::Utc::now().timestamp();
    for i in 0..30 {
        let mut l = generator.valid(now);
        l.device_id = format!("fixed-{i}");
        let record = Avro::Record(vec![
            ("user_id".into(), Avro::String(l.user_id.clone())),
            ("app_version".into(), Avro::String(l.app_version)),
            ("ip".into(), Avro::String(l.ip)),
            ("locale".into(), Avro::String(l.locale)),
            ("device_id".into(), Avro::String(l.device_id)),
            ("timestamp".into(), Avro::Long(l.timestamp)),
            ("device_type".into(), Avro::String(l.device_type)),
            ("referrer".into(), Avro::Union(0, Box::new(Avro::Null))),
        ]);
        produce(
            &p,
            SOURCE,
            None,
            &l.user_id,
            Some(&wire(next_id, &v2_schema, record)),
        )
        .await;
    }
    // Invalid ones (an impossible address), then valid ones.
    for (kind, n) in [("invalid", 20), ("valid", 10)] {
        for i in 0..n {
            let mut l = generator.valid(now);
            l.device_id = format!("{kind}-{i}");
            if kind == "invalid" {
                l.ip = "999.1.1.1".into();
            }
            let bytes = logins.codec.encode(SOURCE, &l).await.unwrap();
            produce(&p, SOURCE, None, &l.user_id, Some(&bytes)).await;
        }
    }
    // Magic byte 0, schema id 0x00010203 (unknown), then every byte value.
    let binary: Vec<u8> = (0..=255u8).collect();
    produce(&p, SOURCE, Some(1), "binary", Some(&binary)).await;

    let mut w = logins.worker("first");
    logins
        .wait_caught_up(Duration::from_secs(60), &mut [&mut w])
        .await;
    w.terminate().await;

    // inspect: the counts are the raw topic's.
    let raw = raw_reasons(&b).await;
    assert_eq!(raw.get("unknown_schema_id"), Some(&31), "{raw:?}");
    let (ok, out, err) = run(&b, &r, &["dlq", "inspect", DLQ, "--format", "json"]);
    assert!(ok, "{err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    let counted: BTreeMap<String, u64> =
        serde_json::from_value(summary["by_reason"].clone()).unwrap();
    assert_eq!(counted, raw);
    assert_eq!(summary["letters"].as_u64(), Some(raw.values().sum()));
    let by_partition: u64 = summary["by_source_partition"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_partition, summary["letters"].as_u64().unwrap());
    let invalid_kind = raw
        .keys()
        .find(|k| *k != "unknown_schema_id")
        .unwrap()
        .clone();
    let first = &summary["first"][&invalid_kind][0];
    assert!(
        first["value"]["device_id"]
            .as_str()
            .unwrap()
            .starts_with("invalid-"),
        "{first}"
    );
    assert!(
        first["message"].as_str().is_some() && first["source_offset"].as_i64().is_some(),
        "{first}"
    );
    assert!(summary["first"]["unknown_schema_id"][0]["value_base64"].is_string());
    let (ok, table, _) = run(&b, &r, &["dlq", "inspect", DLQ]);
    assert!(
        ok && table.contains("by reason:") && table.contains("unknown_schema_id  31"),
        "{table}"
    );

    // The fix: the schema is registered now.
    let (status, body) = api.register("user-login-value", &v2_text).await;
    assert_eq!(
        (status, body["id"].as_u64()),
        (200, Some(next_id as u64)),
        "{body}"
    );

    let before = read_committed_all(&b, SOURCE).await.len();
    let replay = ["dlq", "replay", DLQ, "--reason", "unknown_schema_id"];
    let (ok, out, err) = run(&b, &r, &[&replay[..], &["--dry-run"]].concat());
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("would copy")).count(),
        31,
        "{out}"
    );
    assert_eq!(
        read_committed_all(&b, SOURCE).await.len(),
        before,
        "a dry run copies nothing"
    );
    let (ok, out, err) = run(&b, &r, &replay);
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("copied")).count(),
        31,
        "{out}\n{err}"
    );
    let (ok, again, err) = run(&b, &r, &replay);
    assert!(
        ok && again.is_empty() && err.contains("copied 0 letter"),
        "a second run copies nothing: {again}{err}"
    );

    let copies: Vec<_> = read_committed_all(&b, SOURCE)
        .await
        .into_iter()
        .filter(|r| r.headers.contains_key("sluice.replayed.from"))
        .collect();
    assert_eq!(copies.len(), 31);
    let mut froms: Vec<&String> = copies
        .iter()
        .map(|c| &c.headers["sluice.replayed.from"])
        .collect();
    froms.sort();
    froms.dedup();
    assert_eq!(froms.len(), 31, "each letter once");
    assert!(
        copies
            .iter()
            .all(|c| c.headers.get("origin").map(String::as_str) == Some("test"))
    );
    assert!(copies.iter().all(|c| {
        !c.headers
            .keys()
            .any(|k| k.starts_with("sluice.") && k != "sluice.replayed.from")
    }));
    let copy = copies
        .iter()
        .find(|c| c.key.as_deref() == Some(b"binary"))
        .unwrap();
    assert_eq!(copy.value, binary, "binary-safe copy");
    assert_eq!(copy.partition, 1, "back to its partition");

    // A fresh worker: the fixed ones come out, the binary one returns.
    // (The copies' commit markers keep the group's offsets one short of the
    // partitions' ends: the outputs tell when it is done.)
    let mut w = logins.worker("second");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        w.assert_running();
        let out = read_committed_all(&b, OUTPUT).await.len();
        let back = read_committed_all(&b, DLQ)
            .await
            .iter()
            .filter(|r| r.headers.contains_key("sluice.replayed.from"))
            .count();
        if out >= 40 && back >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replayed letters were not processed: {out} outputs, {back} returned"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    w.terminate().await;
    let reader = Reader::new(common::schema(OUTPUT));
    let codec = sluice::avro::AvroCodec::new(&RegistryConfig::new(&r, None).unwrap()).unwrap();
    let mut out_devices: BTreeMap<String, u32> = BTreeMap::new();
    for rec in read_committed_all(&b, OUTPUT).await {
        let (_, o): (u32, ProcessedUserLogin) = codec.decode(&rec.value, &reader).await.unwrap();
        *out_devices.entry(o.device_id).or_default() += 1;
    }
    for i in 0..30 {
        assert_eq!(
            out_devices.get(&format!("fixed-{i}")),
            Some(&1),
            "fixed-{i}: {out_devices:?}"
        );
    }
    assert_eq!(out_devices.len(), 40, "10 valid + 30 fixed");
    let returned: Vec<_> = read_committed_all(&b, DLQ)
        .await
        .into_iter()
        .filter(|r| r.headers.contains_key("sluice.replayed.from"))
        .collect();
    assert_eq!(returned.len(), 1, "only the binary one fails again");
    assert_eq!(returned[0].value, binary);
    assert_eq!(
        returned[0].headers["sluice.error.kind"],
        "unknown_schema_id"
    );
    // The returned letter is not offered again: replays do not loop.
    let (ok, again, err) = run(&b, &r, &replay);
    assert!(
        ok && again.is_empty() && err.contains("failed again after a replay"),
        "{again}{err}"
    );
    let (ok, again, err) = run(
        &b,
        &r,
        &[
            &replay[..],
            &["--include-replayed", "--dry-run", "--group", "another"],
        ]
        .concat(),
    );
    assert!(ok && again.lines().count() == 32, "{again}{err}");
    let after = raw_reasons(&b).await;
    assert_eq!(after.get("unknown_schema_id"), Some(&32));
    assert_eq!(
        after.get(&invalid_kind),
        raw.get(&invalid_kind),
        "other letters untouched"
    );
}
