//! The user-login topology under test on Apache Kafka: a steady load of
//! logins (valid, invalid, undecodable and tombstones, each carrying headers
//! of its own), `sluice run` workers as child processes whose progress is
//! read from their own `/metrics`, and the exactly-once check made by two
//! witnesses — a plain read_committed consumer, and the raw batch reader,
//! which must also see the aborted transactions the first one hides.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use sluice::avro::{AvroCodec, Reader, RegistryConfig};
use sluice_app::{
    simulate::logins::{Generator, Planned},
    topologies::user_login::ProcessedUserLogin,
};
use tokio::{sync::watch, task::JoinHandle};

use super::{Proc, free_port, kafka::Kafka, raw::RawReader, read_committed_all, sluice};

pub const SOURCE: &str = "user-login";
pub const OUTPUT: &str = "processed-user-login";
pub const DLQ: &str = "user-login.dlq";
pub const GROUP: &str = "sluice-user-login";
pub const PARTITIONS: i32 = 4;
/// Every produced record carries its sequence number in this header, as
/// text, and these bytes (every value 0–255 once) in a second one.
pub const SEQ: &str = "test.seq";
pub const BINARY: &str = "test.binary";

pub fn binary_header() -> Vec<u8> {
    (0..=255u8).collect()
}

/// What one produced record should become.
#[derive(Debug, Clone)]
pub struct Sent {
    pub seq: u64,
    pub partition: i32,
    pub offset: i64,
    /// The device id of a valid login, which is unique per record.
    pub valid: Option<String>,
    /// The locale of a valid login.
    pub locale: Option<String>,
    pub tombstone: bool,
}

pub struct Logins {
    pub kafka: Kafka,
    _registry: sluice::registry::Running,
    pub registry_url: String,
    pub codec: Arc<AvroCodec>,
    pub logs: tempfile::TempDir,
    pub protocol: &'static str,
    /// What `worker` runs: user-login unless set.
    pub topology: &'static str,
    sent: Arc<Mutex<Vec<Sent>>>,
}

impl Logins {
    /// The topology's topics on `kafka`, and the embedded registry.
    pub async fn new(kafka: Kafka, protocol: &'static str) -> Logins {
        let registry = sluice::registry::spawn_preloaded(&super::schemas())
            .await
            .unwrap();
        Logins::with_registry(kafka, protocol, registry).await
    }

    /// As `new`, with a registry of the caller's (holding the schemas).
    pub async fn with_registry(
        kafka: Kafka,
        protocol: &'static str,
        registry: sluice::registry::Running,
    ) -> Logins {
        let config = RegistryConfig::new(&registry.url(), None).unwrap();
        kafka
            .create_topics(&[
                (SOURCE, PARTITIONS),
                (OUTPUT, PARTITIONS),
                (DLQ, PARTITIONS),
            ])
            .await;
        Logins {
            kafka,
            registry_url: registry.url(),
            _registry: registry,
            codec: Arc::new(AvroCodec::new(&config).unwrap()),
            logs: tempfile::tempdir().unwrap(),
            protocol,
            topology: "user-login",
            sent: Arc::default(),
        }
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }

    /// Produces about `per_second` records a second until stopped; 15 % of
    /// them bad, one in 50 a tombstone.
    pub fn load(&self, seed: u64, per_second: u64) -> Load {
        let (stop, mut stopped) = watch::channel(false);
        let producer: FutureProducer = self
            .kafka
            .config()
            .producer(None)
            .set("linger.ms", "5")
            .create()
            .unwrap();
        let (codec, sent) = (self.codec.clone(), self.sent.clone());
        let per_tick = (per_second / 20).max(1);
        let task = tokio::spawn(async move {
            let mut generator = Generator::new(seed, 0.15);
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => return,
                    _ = tick.tick() => {}
                }
                let first = sent.lock().unwrap().len() as u64;
                let mut pending = Vec::new();
                for seq in first..first + per_tick {
                    pending.push(produce_one(&producer, &codec, &mut generator, seq).await);
                }
                let mut done = Vec::new();
                for (mut s, delivery) in pending {
                    let d = delivery
                        .await
                        .expect("delivery report")
                        .map_err(|(e, _)| e)
                        .expect("the load is delivered");
                    let (partition, offset) = (d.partition, d.offset);
                    s.partition = partition;
                    s.offset = offset;
                    done.push(s);
                }
                sent.lock().unwrap().extend(done);
            }
        });
        Load { stop, task }
    }

    /// `sluice run --topology <self.topology>` with this instance id, logging
    /// to a file of its own.
    pub fn worker(&self, instance: &str) -> Worker {
        self.worker_with(instance, &[])
    }

    pub fn worker_with(&self, instance: &str, args: &[&str]) -> Worker {
        self.worker_env(instance, args, &[])
    }

    /// As `worker_with`, with these environment variables set.
    pub fn worker_env(&self, instance: &str, args: &[&str], envs: &[(&str, &str)]) -> Worker {
        let port = free_port();
        let log = self.logs.path().join(format!("{instance}.log"));
        let mut cmd = sluice();
        // For a closer look at a failing test: e.g. info,sluice::runtime::health=debug
        // with `--kafka-config debug=eos,cgrp` in the worker's arguments.
        if let Ok(filter) = std::env::var("SLUICE_TEST_WORKER_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        let extra: Vec<String> = std::env::var("SLUICE_TEST_WORKER_ARGS")
            .map(|a| a.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let child = cmd
            .args(["run", "--topology", self.topology])
            .args(&extra)
            .args(["--group-protocol", self.protocol])
            .args(["--shutdown-timeout", "20s"])
            .args(args)
            .env("KAFKA_BOOTSTRAP_SERVERS", &self.kafka.bootstrap)
            .env("SCHEMA_REGISTRY_URL", &self.registry_url)
            .env("SLUICE_INSTANCE_ID", instance)
            .env("SLUICE_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("SLUICE_LOG_LEVEL", "info")
            .env("NO_COLOR", "1")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Worker {
            proc: Proc(child),
            name: instance.to_string(),
            metrics: format!("http://127.0.0.1:{port}"),
            log,
            started: Instant::now(),
        }
    }

    /// Whether the group has committed every input record.
    pub async fn caught_up(&self) -> bool {
        let ends = end_offsets(&self.kafka.bootstrap, SOURCE, PARTITIONS);
        let committed = committed_offsets(&self.kafka.bootstrap, GROUP, SOURCE, PARTITIONS);
        ends == committed
    }

    /// Waits until the group has committed everything produced.
    pub async fn wait_caught_up(&self, within: Duration, workers: &mut [&mut Worker]) {
        let deadline = Instant::now() + within;
        while !self.caught_up().await {
            for w in workers.iter_mut() {
                w.assert_running();
            }
            assert!(
                Instant::now() < deadline,
                "the group did not catch up in {within:?}: committed {:?} of {:?}",
                committed_offsets(&self.kafka.bootstrap, GROUP, SOURCE, PARTITIONS),
                end_offsets(&self.kafka.bootstrap, SOURCE, PARTITIONS)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Checks, through both witnesses, that every valid login is in the
    /// output exactly once and every bad record in the dead-letter topic
    /// exactly once, with nothing else there.
    pub async fn check_exactly_once(&self) -> Outcome {
        let sent = self.sent();
        let bootstrap = &self.kafka.bootstrap;
        let mut valid: BTreeMap<String, usize> = BTreeMap::new();
        let mut bad: BTreeMap<(i32, i64), &Sent> = BTreeMap::new();
        for s in &sent {
            match &s.valid {
                Some(d) => *valid.entry(d.clone()).or_default() += 0,
                None => {
                    bad.insert((s.partition, s.offset), s);
                }
            }
        }
        let reader = Reader::new(super::schema(OUTPUT));

        // Witness 1: a plain read_committed consumer.
        let mut out = valid.clone();
        let mut extra = Vec::new();
        for r in read_committed_all(bootstrap, OUTPUT).await {
            let (_, p): (u32, ProcessedUserLogin) =
                self.codec.decode(&r.value, &reader).await.unwrap();
            match out.get_mut(&p.device_id) {
                Some(n) => *n += 1,
                None => extra.push(p.device_id),
            }
        }
        let dup_out: Vec<_> = out.iter().filter(|(_, n)| **n > 1).collect();
        let lost_out: Vec<_> = out
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(d, _)| d)
            .collect();
        assert!(
            extra.is_empty() && dup_out.is_empty() && lost_out.is_empty(),
            "read_committed output: {} unexpected, duplicated {dup_out:?}, lost {lost_out:?}",
            extra.len()
        );
        let mut letters: BTreeMap<(i32, i64), usize> = BTreeMap::new();
        for r in read_committed_all(bootstrap, DLQ).await {
            let at = (
                r.headers["sluice.source.partition"].parse().unwrap(),
                r.headers["sluice.source.offset"].parse().unwrap(),
            );
            let s = bad.get(&at).unwrap_or_else(|| {
                panic!("a dead letter of no bad record: {at:?} {:?}", r.headers)
            });
            assert_eq!(
                r.headers[SEQ],
                s.seq.to_string(),
                "the original headers stay"
            );
            assert_eq!(
                r.null_value, s.tombstone,
                "a tombstone's letter has a null value: {at:?}"
            );
            *letters.entry(at).or_default() += 1;
        }
        let dup_dlq: Vec<_> = letters.iter().filter(|(_, n)| **n > 1).collect();
        let lost_dlq: Vec<_> = bad.keys().filter(|k| !letters.contains_key(k)).collect();
        assert!(
            dup_dlq.is_empty() && lost_dlq.is_empty(),
            "read_committed dead letters: duplicated {dup_dlq:?}, lost {lost_dlq:?}"
        );

        // Witness 2: the raw batches, aborted transactions and markers included.
        let mut raw = RawReader::connect(bootstrap).await;
        let out_raw = raw.read_topic(OUTPUT, PARTITIONS).await;
        let dlq_raw = raw.read_topic(DLQ, PARTITIONS).await;
        assert!(
            out_raw.open.is_empty() && dlq_raw.open.is_empty(),
            "transactions left open: output {:?}, dead letters {:?}",
            out_raw.open,
            dlq_raw.open
        );
        let mut raw_devices = Vec::new();
        for r in &out_raw.kept {
            let (_, p): (u32, ProcessedUserLogin) = self
                .codec
                .decode(r.value.as_deref().unwrap(), &reader)
                .await
                .unwrap();
            raw_devices.push(p.device_id);
        }
        raw_devices.sort();
        assert_eq!(
            raw_devices,
            valid.keys().cloned().collect::<Vec<_>>(),
            "the raw reader's committed output"
        );
        let mut raw_letters: Vec<(i32, i64)> = Vec::new();
        for r in &dlq_raw.kept {
            let h = |k: &str| super::raw::header(r, k).unwrap();
            raw_letters.push((
                h("sluice.source.partition").parse().unwrap(),
                h("sluice.source.offset").parse().unwrap(),
            ));
            let binary = r
                .headers
                .get(&kafka_protocol::protocol::StrBytes::from_static_str(BINARY))
                .and_then(|v| v.as_deref());
            assert_eq!(binary, Some(&binary_header()[..]), "binary headers survive");
        }
        raw_letters.sort();
        assert_eq!(
            raw_letters,
            bad.keys().copied().collect::<Vec<_>>(),
            "the raw reader's committed dead letters"
        );
        Outcome {
            records: sent.len(),
            valid: valid.len(),
            bad: bad.len(),
            tombstones: sent.iter().filter(|s| s.tombstone).count(),
            aborted_records: out_raw.aborted + dlq_raw.aborted,
            aborted_transactions: out_raw.aborted_transactions + dlq_raw.aborted_transactions,
        }
    }
}

/// Counts from a passed exactly-once check.
#[derive(Debug)]
pub struct Outcome {
    pub records: usize,
    pub valid: usize,
    pub bad: usize,
    pub tombstones: usize,
    /// Seen by the raw reader only: hidden from read_committed.
    pub aborted_records: usize,
    pub aborted_transactions: usize,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records in: {} out exactly once, {} in the DLQ exactly once ({} tombstones), 0 duplicates, 0 lost; the raw reader saw {} records of {} aborted transactions",
            self.records,
            self.valid,
            self.bad,
            self.tombstones,
            self.aborted_records,
            self.aborted_transactions
        )
    }
}

async fn produce_one(
    producer: &FutureProducer,
    codec: &AvroCodec,
    generator: &mut Generator,
    seq: u64,
) -> (Sent, rdkafka::producer::DeliveryFuture) {
    let now = chrono::Utc::now().timestamp();
    let tombstone = seq % 50 == 49;
    let mut planned = generator.next(now);
    let device = format!("dev-{seq}");
    if let Planned::Valid(l) | Planned::Invalid(l) = &mut planned {
        l.device_id = device.clone();
    }
    let key = format!("key-{seq}");
    let bytes = planned.encode(codec).await.unwrap();
    let seq_text = seq.to_string();
    let binary = binary_header();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: SEQ,
            value: Some(seq_text.as_bytes()),
        })
        .insert(Header {
            key: BINARY,
            value: Some(&binary[..]),
        });
    let mut record = FutureRecord::<str, [u8]>::to(SOURCE)
        .key(&key)
        .headers(headers);
    if !tombstone {
        record = record.payload(&bytes);
    }
    let delivery = producer
        .send_result(record)
        .map_err(|(e, _)| e)
        .expect("queued");
    let locale = match &planned {
        Planned::Valid(l) if !tombstone => Some(l.locale.clone()),
        _ => None,
    };
    let valid = locale.is_some().then_some(device);
    let sent = Sent {
        seq,
        partition: -1,
        offset: -1,
        valid,
        locale,
        tombstone,
    };
    (sent, delivery)
}

pub struct Load {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Load {
    /// Stops producing once the records in flight are delivered.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap();
    }
}

/// A `sluice run` worker process.
pub struct Worker {
    pub proc: Proc,
    pub name: String,
    pub metrics: String,
    pub log: PathBuf,
    pub started: Instant,
}

impl Worker {
    /// Fails the test if the worker exited by itself.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(status) = self.proc.0.try_wait().unwrap() {
            panic!(
                "worker {} exited by itself ({status}); its log ends:\n{}",
                self.name,
                self.log_tail(40)
            );
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A counter from its `/metrics` (0 while it does not answer).
    pub async fn metric(&self, name: &str) -> u64 {
        let Ok(resp) = reqwest::get(format!("{}/metrics", self.metrics)).await else {
            return 0;
        };
        let text = resp.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    pub async fn commits(&self) -> u64 {
        self.metric("sluice_commits_total").await
    }

    /// Waits until this process has committed more than `after` times;
    /// gives the time since it started.
    pub async fn wait_commits(&mut self, after: u64, within: Duration) -> Duration {
        let deadline = Instant::now() + within;
        loop {
            self.assert_running();
            if self.commits().await > after {
                return self.started.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "worker {} committed nothing in {within:?}; its log ends:\n{}",
                self.name,
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/readyz`: (status, body); status 0 when it does not answer.
    pub async fn readyz(&self) -> (u16, String) {
        match reqwest::get(format!("{}/readyz", self.metrics)).await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    /// SIGKILL: no commit, no leaving the group. Fails if it had exited.
    pub fn kill(mut self) {
        self.assert_running();
        drop(self.proc);
    }

    /// SIGTERM; it must commit, leave and exit 0 within 30 s.
    pub async fn terminate(mut self) {
        self.assert_running();
        let pid = self.proc.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.proc.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "worker {} did not stop on SIGTERM",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            status.success(),
            "worker {}: graceful stop exits 0, got {status}; its log ends:\n{}",
            self.name,
            self.log_tail(40)
        );
    }
}

/// The high watermark of each partition.
pub fn end_offsets(bootstrap: &str, topic: &str, partitions: i32) -> Vec<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            sluice::kafka::blocking(|| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)))
                .map(|(_, high)| high)
                .unwrap_or(-1)
        })
        .collect()
}

/// The offsets `group` has committed on each partition (0 where none).
pub fn committed_offsets(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    use rdkafka::{
        Offset, TopicPartitionList,
        consumer::{BaseConsumer, Consumer},
    };
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let Ok(c) =
        sluice::kafka::blocking(|| consumer.committed_offsets(tpl, Duration::from_secs(10)))
    else {
        return vec![-1; partitions as usize];
    };
    (0..partitions)
        .map(|p| match c.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => 0,
        })
        .collect()
}
