//! The peers of the comparison (`bench/peers/kafka-streams`,
//! `bench/peers/quix-streams`) do the same work as sluice: on Apache
//! Kafka, the same logins (valid, invalid, undecodable, and the awkward
//! forms of UUIDs, IP addresses and device types) give the same
//! normalised records, keys and dead-letter reasons; the same readings
//! give the same final windows (Kafka Streams). So the benchmark compares
//! like with like.

mod common;

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use common::{Proc, Read, kafka::Kafka, read_topic, windows};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice::{
    avro::{AvroCodec, Reader, RegistryClient, RegistryConfig},
    kafka::KafkaConfig,
    runtime::letters,
    runtime::{RunOptions, Workers},
    schemas,
    window::WindowSpec,
};
use sluice_app::{
    simulate::logins::{Generator, Planned},
    topologies::{
        iot_alerts::{SensorReading, SensorType},
        iot_events,
        user_login::{self, ProcessedUserLogin, UserLogin},
    },
};

/// A peer's launcher: `kafka-streams` or `quix-streams`.
fn launcher(peer: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../bench/peers/{peer}/run"))
}

struct Setup {
    peer: PathBuf,
    cluster: Kafka,
    kafka: KafkaConfig,
    registry: sluice::registry::Running,
    codec: std::sync::Arc<AvroCodec>,
    client: RegistryClient,
}

impl Setup {
    /// A broker, a registry and the `peer`, built.
    async fn start(peer: &str) -> Setup {
        sluice::logging::init(sluice::logging::LogFormat::Human, "off");
        let peer = launcher(peer);
        let built = Command::new(&peer).arg("build").status().unwrap();
        assert!(built.success(), "{} build", peer.display());
        let cluster = Kafka::start();
        let registry = sluice::registry::spawn_preloaded(&common::schemas())
            .await
            .unwrap();
        let config = RegistryConfig::new(&registry.url(), None).unwrap();
        Setup {
            peer,
            kafka: cluster.config(),
            cluster,
            client: RegistryClient::new(config.clone()).unwrap(),
            codec: std::sync::Arc::new(AvroCodec::new(&config).unwrap()),
            registry,
        }
    }

    async fn register(&self, topic: &str, schema_of: &str) {
        let text = &common::schema_text(schema_of);
        self.client
            .register(&schemas::value_subject(topic), text)
            .await
            .unwrap();
    }

    /// The peer on `input`, writing `output` and `dlq`.
    fn peer(&self, topology: &str, input: &str, output: &str, dlq: &str) -> Proc {
        let state = tempfile::tempdir().unwrap().keep();
        let child = Command::new(&self.peer)
            .arg(topology)
            .args(["--bootstrap", &self.cluster.bootstrap])
            .args(["--registry", &self.registry.url()])
            .args(["--input", input, "--output", output, "--dlq", dlq])
            .args(["--application-id", &format!("peer-{topology}")])
            .arg("--state-dir")
            .arg(state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Proc(child)
    }
}

/// Keys, and values with the processing time left out, sorted.
async fn logins(codec: &AvroCodec, records: &[Read]) -> Vec<(String, String)> {
    let reader = Reader::new(common::schema(user_login::SINK));
    let mut out = Vec::new();
    for r in records {
        let (_, mut login): (u32, ProcessedUserLogin) =
            codec.decode(&r.value, &reader).await.unwrap();
        login.processed_timestamp = 0;
        let key = String::from_utf8(r.key.clone().unwrap_or_default()).unwrap();
        out.push((key, format!("{login:?}")));
    }
    out.sort();
    out
}

/// Dead-letter reasons and keys, sorted.
fn letters_of(records: &[Read]) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.headers.get(letters::KIND).cloned().unwrap_or_default(),
                r.key.clone(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Logins in the forms clients send that the rules must read the same way.
fn awkward(base: &UserLogin, now: i64) -> Vec<(UserLogin, bool)> {
    let with = |f: &dyn Fn(&mut UserLogin)| {
        let mut l = base.clone();
        f(&mut l);
        l
    };
    let upper = base.user_id.to_uppercase();
    let simple = base.user_id.replace('-', "");
    vec![
        (with(&|l| l.user_id = upper.clone()), true),
        (with(&|l| l.user_id = format!("{{{}}}", base.user_id)), true),
        (with(&|l| l.user_id = simple.clone()), true),
        (
            with(&|l| l.user_id = format!("urn:uuid:{}", base.user_id)),
            true,
        ),
        (with(&|l| l.user_id = "1-1-1-1-1".into()), false),
        (with(&|l| l.ip = "2001:DB8:0:0:0:0:0:1".into()), true),
        (with(&|l| l.ip = "1:0:0:2:0:0:0:3".into()), true),
        (with(&|l| l.ip = "::ffff:10.1.2.3".into()), true),
        (with(&|l| l.ip = "0:0:0:0:0:0:0:0".into()), true),
        (with(&|l| l.ip = "01.2.3.4".into()), false),
        (with(&|l| l.ip = "1.2.3".into()), false),
        (with(&|l| l.ip = "[::1]".into()), false),
        (with(&|l| l.ip = "fe80::1%eth0".into()), false),
        (with(&|l| l.ip = "example.com".into()), false),
        (with(&|l| l.device_type = "  Android \t".into()), true),
        (with(&|l| l.device_type = "ÉCRAN".into()), true),
        (with(&|l| l.device_type = " \t ".into()), false),
        (with(&|l| l.timestamp = now + 2 * 86_400), false),
        (with(&|l| l.timestamp = 946_684_799), false),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_streams_and_sluice_give_the_same_output() {
    let s = Setup::start("kafka-streams").await;
    same_logins(&s, "Kafka Streams").await;
    same_windows(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quix_streams_and_sluice_give_the_same_logins() {
    let s = Setup::start("quix-streams").await;
    same_logins(&s, "Quix Streams").await;
}

/// The peer and sluice on the same logins: the same outputs and letters.
async fn same_logins(s: &Setup, peer: &str) {
    let (input, ours, theirs) = ("logins-in", "logins-sluice", "logins-peer");
    let (our_dlq, their_dlq) = ("logins-in.dlq", "logins-in.peer-dlq");
    s.cluster
        .create_topics(&[
            (input, 4),
            (ours, 4),
            (theirs, 4),
            (our_dlq, 1),
            (their_dlq, 1),
        ])
        .await;
    s.register(input, user_login::SOURCE).await;
    s.register(ours, user_login::SINK).await;
    s.register(theirs, user_login::SINK).await;

    // Logins as the simulator makes them (a fifth bad), and the awkward ones.
    let now = chrono::Utc::now().timestamp();
    let mut generator = Generator::new(21, 0.2);
    let mut planned: Vec<(Option<Vec<u8>>, Vec<u8>, bool)> = Vec::new();
    for _ in 0..1500 {
        let p = generator.next(now);
        let valid = matches!(p, Planned::Valid(_));
        let key = p.key().map(|k| k.as_bytes().to_vec());
        planned.push((key, p.encode(&s.codec).await.unwrap(), valid));
    }
    for (login, valid) in awkward(&generator.valid(now), now) {
        let bytes = s.codec.encode(user_login::SOURCE, &login).await.unwrap();
        planned.push((Some(login.user_id.into_bytes()), bytes, valid));
    }
    let producer: FutureProducer = s.kafka.producer(None).create().unwrap();
    for (key, value, _) in &planned {
        let mut record = FutureRecord::<[u8], [u8]>::to(input).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let valid = planned.iter().filter(|p| p.2).count();
    let refused = planned.len() - valid;

    let topology = user_login::declare("login-sluice", input, ours).unwrap();
    let opts = RunOptions {
        instance_id: "peer-test".into(),
        ..RunOptions::default()
    };
    let workers = Workers::spawn(vec![topology], &s.kafka, s.codec.clone(), &opts);
    let _peer = s.peer("user-login", input, theirs, their_dlq);
    let b = &s.cluster.bootstrap;
    let wait = Duration::from_secs(120);
    let (ours_out, theirs_out) = tokio::join!(
        read_topic(b, ours, valid, wait),
        read_topic(b, theirs, valid, wait)
    );
    let (ours_dlq, theirs_dlq) = tokio::join!(
        read_topic(b, our_dlq, refused, wait),
        read_topic(b, their_dlq, refused, wait)
    );
    assert_eq!(ours_out.len(), valid, "sluice: every valid login once");
    assert_eq!(theirs_out.len(), valid, "{peer}: every valid login once");
    let (a, k) = (
        logins(&s.codec, &ours_out).await,
        logins(&s.codec, &theirs_out).await,
    );
    let differ: Vec<_> = a.iter().zip(&k).filter(|(x, y)| x != y).take(3).collect();
    assert!(differ.is_empty(), "the same records and keys: {differ:#?}");
    assert_eq!(ours_dlq.len(), refused);
    assert_eq!(
        letters_of(&ours_dlq),
        letters_of(&theirs_dlq),
        "the same dead letters with the same reasons"
    );
    workers.stop(Duration::from_secs(30)).await.unwrap();
}

/// Final windows of the same readings, each once, equal to the offline ones.
async fn same_windows(s: &Setup) {
    let (input, ours, theirs) = ("readings-in", "windows-sluice", "windows-ks");
    let partitions = 3;
    s.cluster
        .create_topics(&[
            (input, partitions),
            (ours, 3),
            (theirs, 3),
            ("readings-in.dlq", 1),
            ("readings-in.late", 1),
            ("readings-in.ks-dlq", 1),
        ])
        .await;
    s.register(input, "iot_sensor_data").await;
    s.register(ours, iot_events::WINDOWS).await;
    s.register(theirs, iot_events::WINDOWS).await;
    let spec = WindowSpec::tumbling(Duration::from_secs(60), Duration::from_secs(10));
    let base = windows::past_base(30);
    let readings = windows::readings(6, 170, base, 5);
    let want = windows::expected(&readings, &spec);
    let producer: FutureProducer = s.kafka.producer(None).create().unwrap();
    windows::produce_to(&producer, &s.codec, input, &readings).await;
    // One refused reading, and one per partition an hour ahead that closes
    // every window of the stream.
    let nan = SensorReading {
        value: f64::NAN,
        ..readings[0].clone()
    };
    windows::produce_to(&producer, &s.codec, input, &[nan]).await;
    for p in 0..partitions {
        let closer = SensorReading {
            device_id: format!("closer-{p}"),
            sensor_type: SensorType::Temperature,
            value: 0.0,
            unit: "°C".into(),
            timestamp: base + 3_600_000,
        };
        let bytes = s.codec.encode("iot_sensor_data", &closer).await.unwrap();
        producer
            .send(
                FutureRecord::to(input)
                    .partition(p)
                    .key(&closer.device_id)
                    .payload(&bytes)
                    .timestamp(closer.timestamp),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let topology = iot_events::declare_windows("windows-sluice", input, ours, spec).unwrap();
    let opts = RunOptions {
        instance_id: "peer-test-windows".into(),
        ..RunOptions::default()
    };
    let workers = Workers::spawn(vec![topology], &s.kafka, s.codec.clone(), &opts);
    let _peer = s.peer("iot-windows", input, theirs, "readings-in.ks-dlq");
    let b = &s.cluster.bootstrap;
    let wait = Duration::from_secs(120);
    let (ours_out, theirs_out) = tokio::join!(
        read_topic(b, ours, want.len(), wait),
        read_topic(b, theirs, want.len(), wait)
    );
    let (ours_dlq, theirs_dlq) = tokio::join!(
        read_topic(b, "readings-in.dlq", 1, wait),
        read_topic(b, "readings-in.ks-dlq", 1, wait)
    );
    workers.stop(Duration::from_secs(30)).await.unwrap();
    assert_eq!(ours_out.len(), want.len(), "sluice: every window");
    assert_eq!(theirs_out.len(), want.len(), "Kafka Streams: every window");
    let ours_all = windows::final_windows(b, &s.codec, ours).await;
    let theirs_all = windows::final_windows(b, &s.codec, theirs).await;
    windows::assert_final_windows_exact(&ours_all, &want);
    windows::assert_final_windows_exact(&theirs_all, &want);
    assert_eq!(letters_of(&ours_dlq), letters_of(&theirs_dlq));
    assert_eq!(ours_dlq.len(), 1, "the refused reading");
}
