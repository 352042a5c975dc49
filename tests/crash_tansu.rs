//! Kill the worker process abruptly, many times, under load, on a real
//! Kafka-protocol broker (tansu). Read back through the raw batch reader that
//! honours transaction markers: every valid login exactly once in
//! processed-user-login, every bad record exactly once in the dead-letter topic.

mod common;

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    raw::RawReader,
    tansu::{start_tansu, start_tansu_on},
    *,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice::{
    avro::{AvroCodec, Reader, RegistryConfig},
    kafka::{KafkaConfig, TopicSpec, create_topics},
    registry::ServeOptions,
    schemas,
    simulate::logins::{Generator, Planned},
    topologies::user_login::ProcessedUserLogin,
};

const PARTITIONS: i32 = 3;

/// The user-login topology's topics, once the broker answers.
async fn create_login_topics(kafka: &KafkaConfig) {
    let specs: Vec<TopicSpec> = ["user-login", "processed-user-login", "user-login.dlq"]
        .iter()
        .map(|t| TopicSpec {
            name: t.to_string(),
            partitions: PARTITIONS,
            replication: 1,
            min_insync_replicas: None,
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = create_topics(kafka, &specs).await {
        assert!(Instant::now() < deadline, "tansu did not come up: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct World {
    _tansu: Proc,
    _registry: sluice::registry::Running,
    bootstrap: String,
    registry_url: String,
    codec: Arc<AvroCodec>,
    producer: FutureProducer,
    generator: Generator,
    sent: Vec<Planned>,
    rng: StdRng,
}

impl World {
    async fn new(seed: u64) -> World {
        let (tansu, bootstrap) = start_tansu();
        let registry = sluice::registry::spawn_preloaded(&schemas::embedded())
            .await
            .unwrap();
        let config = RegistryConfig::new(&registry.url(), None).unwrap();
        let kafka = KafkaConfig::new(&bootstrap);
        create_login_topics(&kafka).await;
        World {
            producer: kafka.producer(None).create().unwrap(),
            _tansu: tansu,
            _registry: registry,
            registry_url: String::new() + &config.base_url(),
            bootstrap,
            codec: Arc::new(AvroCodec::new(&config).unwrap()),
            generator: Generator::new(seed, 0.15),
            sent: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Produces `n` more records, each valid or invalid one with a unique device id.
    async fn produce(&mut self, n: usize) {
        let now = chrono::Utc::now().timestamp();
        let mut deliveries = Vec::new();
        for _ in 0..n {
            let mut planned = self.generator.next(now);
            let id = format!("dev-{}", self.sent.len());
            if let Planned::Valid(l) | Planned::Invalid(l) = &mut planned {
                l.device_id = id;
            }
            let bytes = planned.encode(&self.codec).await.unwrap();
            let mut r = FutureRecord::<str, [u8]>::to("user-login").payload(&bytes);
            if let Some(k) = planned.key() {
                r = r.key(k);
            }
            deliveries.push(self.producer.send_result(r).map_err(|(e, _)| e).unwrap());
            self.sent.push(planned);
        }
        for d in deliveries {
            d.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
    }

    fn worker(&self, guarantee: &str) -> Proc {
        let child = sluice()
            .args(["run", "--topology", "user-login", "--guarantee", guarantee])
            .args(["--shutdown-timeout", "20s"])
            .env("KAFKA_BOOTSTRAP_SERVERS", &self.bootstrap)
            .env("SCHEMA_REGISTRY_URL", &self.registry_url)
            // Stable: a restarted worker fences its killed predecessor's transaction.
            .env("SLUICE_INSTANCE_ID", "crash-test")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Proc(child)
    }

    async fn read(&self, topic: &str) -> (Vec<kafka_protocol::records::Record>, usize) {
        let mut reader = RawReader::connect(&self.bootstrap).await;
        let (mut kept, mut aborted) = (Vec::new(), 0);
        for p in 0..PARTITIONS {
            let (k, a) = raw::committed(reader.read_partition(topic, p).await);
            kept.extend(k);
            aborted += a;
        }
        (kept, aborted)
    }

    fn expected(&self) -> (Vec<String>, usize) {
        let mut valid: Vec<String> = self
            .sent
            .iter()
            .filter_map(|p| match p {
                Planned::Valid(l) => Some(l.device_id.clone()),
                _ => None,
            })
            .collect();
        valid.sort();
        (
            valid,
            self.sent
                .iter()
                .filter(|p| !matches!(p, Planned::Valid(_)))
                .count(),
        )
    }

    /// Device ids in the committed output, with how often each appears.
    async fn outputs(&self) -> (BTreeMap<String, usize>, usize) {
        let reader = Reader::new(schemas::for_topic("processed-user-login").unwrap());
        let (records, aborted) = self.read("processed-user-login").await;
        let mut seen = BTreeMap::new();
        for r in records {
            let (_, p): (u32, ProcessedUserLogin) = self
                .codec
                .decode(r.value.as_deref().unwrap(), &reader)
                .await
                .unwrap();
            *seen.entry(p.device_id).or_insert(0) += 1;
        }
        (seen, aborted)
    }

    /// Dead letters by source (partition, offset), with how often each appears.
    async fn dead_letters(&self) -> BTreeMap<(String, String), usize> {
        let (records, _) = self.read("user-login.dlq").await;
        let mut seen = BTreeMap::new();
        for r in records {
            let h = |k: &str| {
                let v = r
                    .headers
                    .get(&kafka_protocol::protocol::StrBytes::from_string(
                        k.to_string(),
                    ));
                String::from_utf8_lossy(v.and_then(|v| v.as_deref()).unwrap_or_default())
                    .into_owned()
            };
            *seen
                .entry((h("sluice.source.partition"), h("sluice.source.offset")))
                .or_insert(0) += 1;
        }
        seen
    }

    /// Kills the worker at random moments while producing more records.
    async fn chaos(&mut self, guarantee: &str, kills: usize) {
        self.produce(3000).await;
        for _ in 0..kills {
            let worker = self.worker(guarantee);
            let life = Duration::from_millis(self.rng.random_range(2_000..15_000));
            let started = Instant::now();
            while started.elapsed() < life {
                self.produce(200).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drop(worker); // SIGKILL: no commit, no leaving the group
        }
    }

    /// A last worker runs until everything is through, then gets SIGTERM.
    async fn finish(&self, guarantee: &str) {
        let (valid, bad) = self.expected();
        let mut worker = self.worker(guarantee);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let (out, _) = self.outputs().await;
            let dlq = self.dead_letters().await;
            if out.len() >= valid.len() && dlq.len() >= bad {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {} valid and {} of {bad} bad arrived",
                out.len(),
                valid.len(),
                dlq.len()
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let pid = worker.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = worker.0.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "worker did not stop on SIGTERM");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(status.success(), "graceful stop exits 0: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_survives_repeated_kills() {
    let mut w = World::new(21).await;
    w.chaos("exactly-once", 6).await;
    w.finish("exactly-once").await;

    let (valid, bad) = w.expected();
    let (out, aborted) = w.outputs().await;
    let twice: Vec<_> = out.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "duplicates in committed output: {twice:?}"
    );
    assert_eq!(
        out.keys().cloned().collect::<Vec<_>>(),
        valid,
        "every valid login exactly once"
    );
    let dlq = w.dead_letters().await;
    assert!(dlq.values().all(|n| *n == 1), "duplicate dead letters");
    assert_eq!(dlq.len(), bad, "every bad record exactly once in the DLQ");
    eprintln!(
        "{} records, {} valid out, {bad} dead letters, {aborted} records of aborted transactions skipped",
        w.sent.len(),
        valid.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_least_once_loses_nothing_across_kills() {
    let mut w = World::new(22).await;
    w.chaos("at-least-once", 3).await;
    w.finish("at-least-once").await;
    let (valid, bad) = w.expected();
    let (out, _) = w.outputs().await;
    assert_eq!(
        out.keys().cloned().collect::<Vec<_>>(),
        valid,
        "no valid login lost"
    );
    assert_eq!(w.dead_letters().await.len(), bad, "no bad record lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_started_before_its_broker_and_registry_waits_for_them() {
    let port = free_port();
    let registry_port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let mut worker = Proc(
        sluice()
            .args(["run", "--topology", "user-login"])
            .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
            .env(
                "SCHEMA_REGISTRY_URL",
                format!("http://127.0.0.1:{registry_port}"),
            )
            .env("SLUICE_INSTANCE_ID", "early-bird")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        worker.0.try_wait().unwrap().is_none(),
        "no registry: the worker must wait, not exit"
    );
    let store = std::sync::Arc::new(sluice::registry::MemoryStore::new());
    let _promised = sluice::registry::spawn(
        format!("127.0.0.1:{registry_port}").parse().unwrap(),
        store,
        ServeOptions::default(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        worker.0.try_wait().unwrap().is_none(),
        "no broker: the worker must wait, not exit"
    );

    let (_tansu, _) = start_tansu_on(port);
    let config = RegistryConfig::new(&format!("http://127.0.0.1:{registry_port}"), None).unwrap();
    // Whoever comes first registers; the worker retries until it can.
    let client = sluice::avro::RegistryClient::new(config.clone()).unwrap();
    for f in schemas::embedded() {
        client.register(&f.subject(), &f.text).await.unwrap();
    }
    let codec = AvroCodec::new(&config).unwrap();
    let kafka = KafkaConfig::new(&bootstrap);
    create_login_topics(&kafka).await;
    let producer: FutureProducer = kafka.producer(None).create().unwrap();
    let mut generator = Generator::new(5, 0.0);
    let now = chrono::Utc::now().timestamp();
    for _ in 0..300 {
        let login = generator.valid(now);
        let bytes = codec.encode("user-login", &login).await.unwrap();
        producer
            .send(
                FutureRecord::<str, [u8]>::to("user-login")
                    .key(&login.user_id)
                    .payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut reader = RawReader::connect(&bootstrap).await;
        let mut out = 0;
        for p in 0..PARTITIONS {
            out += raw::committed(reader.read_partition("processed-user-login", p).await)
                .0
                .len();
        }
        if out == 300 {
            break;
        }
        assert!(out < 300, "duplicates: {out}");
        assert!(
            Instant::now() < deadline,
            "only {out} of 300 processed after the broker came up"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(worker.0.try_wait().unwrap().is_none());
}
