//! The brokers' own metrics: a broker started with Prometheus's JMX
//! exporter agent (`dev/kafka/start --jmx-exporter`, as the brokers of
//! compose/ run it) is scraped by a real Prometheus, and every expression
//! of the brokers' Grafana dashboard names only series it exposes and
//! answers with data once transactions and a consumer group have run.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::kafka::Kafka;
use rdkafka::{
    ClientConfig, Message,
    consumer::{BaseConsumer, CommitMode, Consumer},
    producer::{BaseProducer, BaseRecord, Producer},
};
use serde_json::Value;

const TOPIC: &str = "broker-metrics";

/// Transactions, and a consumer group that reads and commits.
fn traffic(bootstrap: &str) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", "broker-metrics-test")
        .create()
        .unwrap();
    let t = Duration::from_secs(30);
    producer.init_transactions(t).unwrap();
    for round in 0..5 {
        producer.begin_transaction().unwrap();
        for i in 0..20 {
            let key = format!("{round}-{i}");
            producer
                .send(BaseRecord::to(TOPIC).key(&key).payload("x"))
                .unwrap();
        }
        producer.commit_transaction(t).unwrap();
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "broker-metrics-readers")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let mut read = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while read < 100 && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            assert_eq!(m.topic(), TOPIC);
            read += 1;
        }
    }
    assert_eq!(read, 100, "the consumer read what was committed");
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
}

/// Metric names in a PromQL expression (the broker's and the JVM's).
fn names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find(|c: char| c.is_ascii_lowercase()) {
        let word: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + word.len().max(1)..];
        if word.starts_with("kafka_") || word.starts_with("jvm_") {
            out.push(word);
        }
    }
    out
}

fn dashboard_exprs() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../compose/grafana/dashboards/brokers.json"
    );
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect()
}

fn query_url(prom: &str, q: &str) -> url::Url {
    url::Url::parse_with_params(&format!("{prom}/api/v1/query"), &[("query", q)]).unwrap()
}

async fn query(http: &reqwest::Client, prom: &str, q: &str) -> Value {
    http.get(query_url(prom, q))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map(|r| r.json::<Value>())
        .unwrap_or_else(|e| panic!("{q}: {e}"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_brokers_and_the_dashboard_reads_only_what_they_expose() {
    let kafka = Kafka::with_jmx_exporter();
    let exporters = kafka.exporters();
    assert_eq!(exporters.len(), 1, "one exporter per node");
    kafka.create_topics(&[(TOPIC, 3)]).await;
    let bootstrap = kafka.bootstrap.clone();
    tokio::task::spawn_blocking(move || traffic(&bootstrap))
        .await
        .unwrap();

    let prometheus = common::prometheus("kafka", &exporters[0]);
    let prom = prometheus.url.clone();
    let http = reqwest::Client::new();

    // Scraped a few times, so that rate() over a minute has two samples.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let up = match http
            .get(query_url(&prom, "count_over_time(up{job=\"kafka\"}[1m])"))
            .send()
            .await
        {
            Ok(r) => r.json::<Value>().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        let samples = up["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        if samples >= 4 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Prometheus never scraped the broker: {up}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let up = query(&http, &prom, "up{job=\"kafka\"}").await;
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");

    let series: BTreeSet<String> = http
        .get(format!("{prom}/api/v1/label/__name__/values"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 12, "{exprs:?}");
    for e in &exprs {
        let used = names(e);
        assert!(
            !used.is_empty() || e.contains("up{"),
            "{e} reads no broker series"
        );
        for n in used {
            assert!(
                series.contains(&n),
                "{e}: Prometheus has no {n} from the broker"
            );
        }
        let answer = query(&http, &prom, e).await;
        assert_eq!(answer["status"], "success", "{e}: {answer}");
        assert!(
            !answer["data"]["result"].as_array().unwrap().is_empty(),
            "{e} answers with no data: {answer}"
        );
    }
    let by_topic = query(
        &http,
        &prom,
        &format!("sum(kafka_server_brokertopicmetrics_count{{name=\"MessagesInPerSec\",topic=\"{TOPIC}\"}})"),
    )
    .await;
    // The broker counts the commit markers too: one per partition a
    // transaction wrote to, five transactions over at most three partitions.
    let counted: u64 = by_topic["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((100..=115).contains(&counted), "{by_topic}");
}

#[test]
fn metric_names_are_read_from_promql() {
    assert_eq!(
        names(
            "sum by (request) (rate(kafka_network_requestmetrics_count{name=\"x\"}[1m])) + jvm_memory_used_bytes"
        ),
        vec![
            "kafka_network_requestmetrics_count",
            "jvm_memory_used_bytes"
        ]
    );
}
