//! The user-login topology end to end in-process: fast pipeline tests on
//! librdkafka's mock cluster (a Kafka-protocol endpoint on loopback, with
//! consumer groups and transactions), and the metrics a real Prometheus
//! scrapes from a worker on Apache Kafka.

mod common;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use common::*;
use rdkafka::mocking::MockCluster;
use sluice::{
    avro::{AvroCodec, Reader, RegistryConfig},
    kafka::KafkaConfig,
    runtime::{self, RunOptions},
    stats::Stats,
    topology::Guarantee,
};
use sluice_app::{
    simulate::logins::{self, Planned},
    topologies::user_login::{self, ProcessedUserLogin},
};
use tokio::sync::oneshot;

struct Setup {
    _registry: sluice::registry::Running,
    codec: Arc<AvroCodec>,
    kafka: KafkaConfig,
}

const TOPICS: [(&str, i32); 3] = [
    ("user-login", 4),
    ("processed-user-login", 4),
    ("user-login.dlq", 1),
];

async fn setup(mock: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>) -> Setup {
    for (topic, partitions) in TOPICS {
        mock.create_topic(topic, partitions, 1).unwrap();
    }
    setup_on(&mock.bootstrap_servers()).await
}

async fn setup_kafka(kafka: &common::kafka::Kafka) -> Setup {
    kafka.create_topics(&TOPICS).await;
    setup_on(&kafka.bootstrap).await
}

async fn setup_on(bootstrap: &str) -> Setup {
    let registry = sluice::registry::spawn_preloaded(&common::schemas())
        .await
        .unwrap();
    let config = RegistryConfig::new(&registry.url(), None).unwrap();
    Setup {
        _registry: registry,
        codec: Arc::new(AvroCodec::new(&config).unwrap()),
        kafka: KafkaConfig::new(bootstrap),
    }
}

fn spawn_worker(
    s: &Setup,
    guarantee: Guarantee,
    instance: &str,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>, Arc<Stats>) {
    spawn_worker_with(
        s,
        RunOptions {
            guarantee,
            instance_id: instance.to_string(),
            ..RunOptions::default()
        },
    )
}

fn spawn_worker_with(
    s: &Setup,
    opts: RunOptions,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>, Arc<Stats>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let stats = Arc::new(Stats::default());
    let (kafka, codec, st) = (s.kafka.clone(), s.codec.clone(), stats.clone());
    let task = tokio::spawn(async move {
        let topology = user_login::build().unwrap();
        runtime::run_topology(&topology, &kafka, codec, &opts, st, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (stop, task, stats)
}

async fn produce(s: &Setup, count: u64, bad_ratio: f64, seed: u64) -> Vec<Planned> {
    // The same generator the simulator uses, replayed to know what was sent.
    let mut generator = logins::Generator::new(seed, bad_ratio);
    let now = chrono::Utc::now().timestamp();
    let planned: Vec<Planned> = (0..count).map(|_| generator.next(now)).collect();
    let producer: rdkafka::producer::FutureProducer = s.kafka.producer(None).create().unwrap();
    let mut deliveries = Vec::new();
    for p in &planned {
        let bytes = p.encode(&s.codec).await.unwrap();
        let mut r = rdkafka::producer::FutureRecord::<str, [u8]>::to("user-login").payload(&bytes);
        if let Some(k) = p.key() {
            r = r.key(k);
        }
        deliveries.push(producer.send_result(r).map_err(|(e, _)| e).unwrap());
    }
    for d in deliveries {
        d.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    planned
}

async fn check_outputs(s: &Setup, planned: &[Planned]) {
    let valid: Vec<_> = planned
        .iter()
        .filter_map(|p| match p {
            Planned::Valid(l) => Some(l.clone()),
            _ => None,
        })
        .collect();
    let bad: Vec<_> = planned
        .iter()
        .filter(|p| !matches!(p, Planned::Valid(_)))
        .collect();
    let bootstrap = &s.kafka.bootstrap;
    let out = read_topic(
        bootstrap,
        "processed-user-login",
        valid.len(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.len(), valid.len(), "every valid login exactly once");
    let reader = Reader::new(common::schema("processed-user-login"));
    let mut got = Vec::new();
    for r in &out {
        let (_, p): (u32, ProcessedUserLogin) = s.codec.decode(&r.value, &reader).await.unwrap();
        assert_eq!(r.key.as_deref(), Some(p.user_id.as_bytes()));
        assert_eq!(
            r.partition,
            java_partition(p.user_id.as_bytes(), 4),
            "keyed like the Java client: {}",
            p.user_id
        );
        assert_eq!(p.device_type, p.device_type.to_lowercase());
        assert!(p.processed_timestamp >= p.timestamp * 1000);
        got.push((p.user_id, p.device_id, p.timestamp, p.device_type));
    }
    let mut want: Vec<_> = valid
        .into_iter()
        .map(|l| {
            (
                l.user_id,
                l.device_id,
                l.timestamp,
                l.device_type.to_lowercase(),
            )
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    let dlq = read_topic(
        bootstrap,
        "user-login.dlq",
        bad.len(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        dlq.len(),
        bad.len(),
        "every bad record exactly once in the DLQ"
    );
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for r in &dlq {
        for h in [
            "sluice.error.kind",
            "sluice.error.message",
            "sluice.source.topic",
            "sluice.source.partition",
            "sluice.source.offset",
            "sluice.source.timestamp",
            "sluice.topology",
        ] {
            assert!(r.headers.contains_key(h), "missing {h}: {:?}", r.headers);
        }
        assert_eq!(r.headers["sluice.source.topic"], "user-login");
        assert_eq!(r.headers["sluice.topology"], "user-login");
        *kinds
            .entry(r.headers["sluice.error.kind"].clone())
            .or_default() += 1;
    }
    let mut want_kinds: BTreeMap<String, usize> = BTreeMap::new();
    for p in bad {
        let k = match p {
            Planned::Invalid(_) => "validation",
            Planned::Undecodable(_, k) => k,
            Planned::Valid(_) => unreachable!(),
        };
        *want_kinds.entry(k.to_string()).or_default() += 1;
    }
    assert_eq!(kinds, want_kinds);
    // The original bytes are kept: undecodable JSON comes back as sent.
    assert!(dlq.iter().any(|r| r.value.starts_with(b"{\"user_id\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_valid_out_and_bad_to_the_dead_letter_topic() {
    let mock = MockCluster::new(3).unwrap();
    let s = setup(&mock).await;
    let t0 = std::time::Instant::now();
    let planned = produce(&s, 3000, 0.2, 11).await;
    eprintln!("produced in {:?}", t0.elapsed());
    let (stop, task, stats) = spawn_worker(&s, Guarantee::ExactlyOnce, "w1");
    check_outputs(&s, &planned).await;
    eprintln!("checked in {:?}", t0.elapsed());
    stop.send(()).unwrap();
    task.await.unwrap();
    eprintln!("stopped in {:?}", t0.elapsed());
    assert_eq!(
        stats.records_in.load(std::sync::atomic::Ordering::Relaxed),
        3000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_split_the_partitions() {
    let mock = MockCluster::new(3).unwrap();
    let s = setup(&mock).await;
    let (stop1, task1, stats1) = spawn_worker(&s, Guarantee::ExactlyOnce, "a");
    let (stop2, task2, stats2) = spawn_worker(&s, Guarantee::ExactlyOnce, "b");
    let planned = produce(&s, 4000, 0.1, 12).await;
    check_outputs(&s, &planned).await;
    let (n1, n2) = (
        stats1.records_in.load(std::sync::atomic::Ordering::Relaxed),
        stats2.records_in.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(n1 > 0 && n2 > 0, "both workers got partitions: {n1} + {n2}");
    assert_eq!(n1 + n2, 4000);
    stop1.send(()).unwrap();
    stop2.send(()).unwrap();
    task1.await.unwrap();
    task2.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_least_once_loses_nothing() {
    let mock = MockCluster::new(3).unwrap();
    let s = setup(&mock).await;
    let planned = produce(&s, 2000, 0.1, 13).await;
    let (stop, task, _) = spawn_worker(&s, Guarantee::AtLeastOnce, "alo");
    check_outputs(&s, &planned).await;
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// On Apache Kafka: what a worker exports, and a real Prometheus scraping it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_and_health_are_served() {
    let kafka = common::kafka::Kafka::start();
    let s = setup_kafka(&kafka).await;
    let planned = produce(&s, 1000, 0.2, 14).await;
    let opts = RunOptions {
        instance_id: "metrics".into(),
        ..RunOptions::default()
    };
    let metrics = sluice::metrics::Metrics::new().unwrap();
    let opts = RunOptions {
        meter: Some(metrics.meter()),
        ..opts
    };
    let workers = runtime::Workers::spawn(
        vec![user_login::build().unwrap()],
        &s.kafka,
        s.codec.clone(),
        &opts,
    );
    metrics.observe_topologies(workers.stats.clone());
    let metrics = std::sync::Arc::new(metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(sluice::metrics::serve(listener, metrics, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    let bad = planned
        .iter()
        .filter(|p| !matches!(p, Planned::Valid(_)))
        .count();
    let valid = planned.len() - bad;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // The value of `metric` on the series with all of these labels.
    let value = |body: &str, metric: &str, labels: &[&str]| -> Option<u64> {
        body.lines()
            .filter(|l| l.starts_with(&format!("{metric}{{")))
            .find(|l| labels.iter().all(|lab| l.contains(lab)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let topo = "topology=\"user-login\"";
    let body = loop {
        let (_, body) = get("/metrics").await;
        // Every record counted in, and its outcome (output or dead letter) too.
        let dead: u64 = body
            .lines()
            .filter(|l| l.starts_with("sluice_dead_letters_total{") && l.contains(topo))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        let out = value(&body, "sluice_records_out_total", &[topo]).unwrap_or(0);
        if value(&body, "sluice_records_in_total", &[topo]) == Some(planned.len() as u64)
            && out + dead == planned.len() as u64
            && value(&body, "sluice_commits_total", &[topo]).is_some_and(|n| n > 0)
        {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metrics never showed all records:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        value(&body, "sluice_records_out_total", &[topo]),
        Some(valid as u64),
        "{body}"
    );
    let validation = value(
        &body,
        "sluice_dead_letters_total",
        &[topo, "reason=\"validation\""],
    );
    let invalid = planned
        .iter()
        .filter(|p| matches!(p, Planned::Invalid(_)))
        .count() as u64;
    assert_eq!(validation, Some(invalid), "{body}");
    assert!(
        value(&body, "sluice_commits_total", &[topo]).is_some_and(|n| n > 0),
        "{body}"
    );
    // Histograms: a sampled processing latency, batches and commits.
    for h in [
        "sluice_processing_latency_seconds_count",
        "sluice_batch_duration_seconds_count",
        "sluice_commit_duration_seconds_count",
    ] {
        assert!(
            value(&body, h, &[topo]).is_some_and(|n| n > 0),
            "{h} missing or zero:\n{body}"
        );
    }
    assert!(
        body.contains("sluice_commit_duration_seconds_bucket{") && body.contains("le=\"0.005\""),
        "{body}"
    );
    assert!(
        value(
            &body,
            "sluice_schema_cache_total",
            &[topo, "result=\"hit\""]
        )
        .is_some_and(|n| n > 0),
        "{body}"
    );
    assert!(
        value(&body, "sluice_rebalances_total", &[topo, "kind=\"assign\""]).is_some_and(|n| n > 0),
        "{body}"
    );
    assert_eq!(get("/readyz").await.0, 200);

    // A real Prometheus scrapes the worker and answers queries with its series.
    let prometheus = common::prometheus("sluice", base.trim_start_matches("http://"));
    let query = format!(
        "{}/api/v1/query?query=sluice_records_in_total",
        prometheus.url
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answer = match http.get(&query).send().await {
            Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        let seen = answer["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok());
        if seen == Some(planned.len() as u64) {
            assert_eq!(
                answer["data"]["result"][0]["metric"]["topology"],
                "user-login"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Prometheus never scraped the worker: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    workers.stop(Duration::from_secs(30)).await.unwrap();
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// `--threads 2`: two group members in one process, each with its own
/// consumer and its own two transactional producers, and together exactly
/// the input.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn threads_in_one_process_split_the_partitions() {
    let mock = MockCluster::new(1).unwrap();
    let s = setup(&mock).await;
    let opts = RunOptions {
        instance_id: "threads".to_string(),
        threads: 2,
        ..RunOptions::default()
    };
    let workers = runtime::Workers::spawn(
        vec![user_login::build().unwrap()],
        &s.kafka,
        s.codec.clone(),
        &opts,
    );
    let mut planned = produce(&s, 2000, 0.1, 15).await;
    check_outputs(&s, &planned).await;
    // A second wave after the first committed: every member has committed
    // units on both of its transactional producers, which take turns.
    planned.extend(produce(&s, 2000, 0.1, 16).await);
    check_outputs(&s, &planned).await;
    let stats = workers.stats[0].1.clone();
    assert_eq!(
        stats.records_in.load(std::sync::atomic::Ordering::Relaxed),
        4000
    );
    // Each member writes through transactional producers of its own.
    let mut raw = common::raw::RawReader::connect(&s.kafka.bootstrap).await;
    let mut producers = std::collections::BTreeSet::new();
    for partition in 0..4 {
        for r in raw.read_partition("processed-user-login", partition).await {
            producers.insert(r.producer_id);
        }
    }
    assert_eq!(
        producers.len(),
        4,
        "two producers per member, none shared: {producers:?}"
    );
    workers.stop(Duration::from_secs(30)).await.unwrap();
}

/// Members joining and leaving while records flow, with commits every few
/// milliseconds, so that rebalances land while units commit in the
/// background and processed records wait for them. Nothing may be lost.
///
/// At-least-once, because the mock cluster discards offsets committed in a
/// transaction (its TxnOffsetCommit handler reads and drops them): after an
/// exactly-once handover there, the new owner starts from the beginning.
/// Exactly-once across restarts is proved on Apache Kafka (`crash_kafka.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handovers_under_load_lose_nothing() {
    // The workers' logs (rebalances, commits) show with a failure.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info,sluice::runtime=debug,librdkafka=warn")
        .try_init();
    let mock = MockCluster::new(1).unwrap();
    let s = setup(&mock).await;
    let member = |instance: &str| {
        let opts = RunOptions {
            guarantee: Guarantee::AtLeastOnce,
            instance_id: instance.to_string(),
            batch_size: 300,
            commit_interval: Duration::from_millis(5),
            ..RunOptions::default()
        };
        spawn_worker_with(&s, opts)
    };
    // Records keep coming while members join and leave.
    let feeding = async {
        let mut planned = Vec::new();
        for chunk in 0..60 {
            planned.extend(produce(&s, 200, 0.0, 100 + chunk).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        planned
    };
    let membership = async {
        let (stop_a, task_a, stats_a) = member("a");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (stop_b, task_b, stats_b) = member("b");
        tokio::time::sleep(Duration::from_secs(2)).await;
        // a leaves: its partitions go to b mid-stream.
        stop_a.send(()).unwrap();
        task_a.await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (stop_c, task_c, stats_c) = member("c");
        (
            [stats_a, stats_b, stats_c],
            [stop_b, stop_c],
            [task_b, task_c],
        )
    };
    let (planned, (stats, stops, tasks)) = tokio::join!(feeding, membership);

    let reader = Reader::new(common::schema("processed-user-login"));
    let mut want: BTreeMap<(String, String, i64), usize> = BTreeMap::new();
    for p in &planned {
        let Planned::Valid(l) = p else {
            unreachable!("no bad records planned")
        };
        *want
            .entry((l.user_id.clone(), l.device_id.clone(), l.timestamp))
            .or_default() += 1;
    }
    let mut raw = common::raw::RawReader::connect(&s.kafka.bootstrap).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let mut got: BTreeMap<(String, String, i64), usize> = BTreeMap::new();
        for partition in 0..4 {
            for r in raw.read_partition("processed-user-login", partition).await {
                let value = r.value.expect("a value");
                let (_, p): (u32, ProcessedUserLogin) =
                    s.codec.decode(&value, &reader).await.unwrap();
                *got.entry((p.user_id, p.device_id, p.timestamp))
                    .or_default() += 1;
            }
        }
        let missing: Vec<_> = want
            .iter()
            .filter(|(k, n)| got.get(*k).copied().unwrap_or(0) < **n)
            .map(|(k, _)| k.clone())
            .collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !missing.is_empty() {
        panic!(
            "{} logins never output, e.g. {:?}\n{}",
            missing.len(),
            missing.first(),
            where_missing(&s, &mut raw, &missing).await
        );
    }
    let read = stats
        .iter()
        .map(|s| s.records_in.load(std::sync::atomic::Ordering::Relaxed))
        .sum::<u64>();
    assert!(read >= 12_000, "{read} records read in all");
    for stop in stops {
        stop.send(()).unwrap();
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Where missing outputs' inputs sit, per partition: below the group's
/// committed offset they were lost (committed, never output); at or above
/// it, the group stalled before them.
async fn where_missing(
    s: &Setup,
    raw: &mut common::raw::RawReader,
    missing: &[(String, String, i64)],
) -> String {
    use rdkafka::{
        Offset, TopicPartitionList,
        consumer::{BaseConsumer, Consumer},
    };
    let reader = Reader::new(common::schema("user-login"));
    let consumer: BaseConsumer = s.kafka.consumer("sluice-user-login").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition("user-login", p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let mut report = String::new();
    for p in 0..4 {
        let at = match committed
            .find_partition("user-login", p)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        };
        let (_, end) = consumer
            .fetch_watermarks("user-login", p, Duration::from_secs(10))
            .unwrap();
        let mut lost = Vec::new();
        let mut stalled = Vec::new();
        for r in raw.read_partition("user-login", p).await {
            let Some(value) = r.value else { continue };
            let Ok((_, l)) = s
                .codec
                .decode::<user_login::UserLogin>(&value, &reader)
                .await
            else {
                continue;
            };
            if missing.contains(&(l.user_id, l.device_id, l.timestamp)) {
                if r.offset < at {
                    lost.push(r.offset);
                } else {
                    stalled.push(r.offset);
                }
            }
        }
        report += &format!(
            "partition {p}: committed {at}, end {end}; missing below the committed offset (lost): {} {:?}; at or above it (stalled): {} {:?}\n",
            lost.len(),
            &lost[..lost.len().min(10)],
            stalled.len(),
            &stalled[..stalled.len().min(10)]
        );
    }
    report
}

/// Small units: a commit begins by size every few dozen records, most of
/// them while the one before is still under way, and the results held
/// meanwhile go into the next; every record is still committed exactly
/// once, down to the last, with no commit interval to fall back on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_units_commit_every_record() {
    let mock = MockCluster::new(3).unwrap();
    let s = setup(&mock).await;
    let planned = produce(&s, 3000, 0.1, 15).await;
    let (stop, task, stats) = spawn_worker_with(
        &s,
        RunOptions {
            guarantee: Guarantee::ExactlyOnce,
            instance_id: "small".into(),
            batch_size: 37,
            commit_interval: Duration::from_secs(3600),
            ..RunOptions::default()
        },
    );
    check_outputs(&s, &planned).await;
    assert!(stats.commits.load(std::sync::atomic::Ordering::Relaxed) > 10);
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// A commit the broker fails (TxnOffsetCommit answered with
/// ILLEGAL_GENERATION, an abortable error to librdkafka) is aborted and its
/// unit read again, while later records wait in the sender's channel:
/// every valid login still comes out. The mock cluster leaves aborted
/// records visible, so this checks for loss; tests/refused_kafka.rs checks
/// the same rewind for duplicates through the transaction markers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_commit_reads_its_unit_again() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use std::sync::atomic::Ordering::Relaxed;
    let mock = MockCluster::new(1).unwrap();
    let s = setup(&mock).await;
    let planned = produce(&s, 3000, 0.1, 17).await;
    let valid = planned
        .iter()
        .filter(|p| matches!(p, Planned::Valid(_)))
        .count() as u64;
    mock.request_errors(
        RDKafkaApiKey::TxnOffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION; 3],
    );
    let (stop, task, stats) = spawn_worker_with(
        &s,
        RunOptions {
            guarantee: Guarantee::ExactlyOnce,
            instance_id: "failed-commit".into(),
            batch_size: 500,
            ..RunOptions::default()
        },
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let handled = || stats.records_out.load(Relaxed) + stats.dead_letters.load(Relaxed);
    while stats.aborts.load(Relaxed) < 3
        || stats.commits.load(Relaxed) < 3
        || handled() < planned.len() as u64
    {
        assert!(
            std::time::Instant::now() < deadline,
            "aborts {} commits {} out {} dlq {}",
            stats.aborts.load(Relaxed),
            stats.commits.load(Relaxed),
            stats.records_out.load(Relaxed),
            stats.dead_letters.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap();
    // Counted once committed: the aborted units' records are not counted
    // twice, though they were handled twice.
    assert_eq!(stats.records_out.load(Relaxed), valid);
    assert_eq!(
        stats.dead_letters.load(Relaxed),
        planned.len() as u64 - valid
    );
    let out = read_topic(
        &s.kafka.bootstrap,
        "processed-user-login",
        usize::MAX,
        Duration::from_secs(5),
    )
    .await;
    let reader = Reader::new(common::schema("processed-user-login"));
    let mut got = std::collections::BTreeSet::new();
    for r in &out {
        let (_, p): (u32, ProcessedUserLogin) = s.codec.decode(&r.value, &reader).await.unwrap();
        got.insert((p.user_id, p.device_id, p.timestamp));
    }
    for p in &planned {
        let Planned::Valid(l) = p else { continue };
        let id = (l.user_id.to_lowercase(), l.device_id.clone(), l.timestamp);
        assert!(
            got.contains(&id),
            "lost {id:?}: {} outputs, {} aborts",
            out.len(),
            stats.aborts.load(Relaxed)
        );
    }
}
