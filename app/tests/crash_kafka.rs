//! Kill `sluice run --topology user-login` with SIGKILL at random moments
//! under a steady load on Apache Kafka, 50 times (`SLUICE_SOAK=1`: 500),
//! with a stable instance id so that each restart fences its predecessor's
//! transaction; once with one worker, once with two in one group killed
//! alternately; with each consumer group protocol. Then prove exactly-once
//! as Kafka's own EOS system tests do: a plain read_committed consumer
//! finds every valid login exactly once in the output and every bad record
//! exactly once in the dead-letter topic, nothing else; the raw batch
//! reader agrees, and saw the aborted transactions the kills left.

mod common;

use std::time::{Duration, Instant};

use common::{
    free_port,
    kafka::{FAST_CONSUMER_SESSIONS, Kafka},
    logins::{Logins, Worker},
};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn kills(ci: usize) -> usize {
    if std::env::var_os("SLUICE_SOAK").is_some() {
        ci * 10
    } else {
        ci
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

async fn world(protocol: &'static str) -> Logins {
    Logins::new(Kafka::cluster_with(1, &FAST_CONSUMER_SESSIONS), protocol).await
}

/// Lets the worker live a random while after it has committed, then kills it.
async fn live_and_die(w: &mut Worker, rng: &mut StdRng) {
    let life = Duration::from_millis(rng.random_range(0..1500));
    let until = Instant::now() + life;
    while Instant::now() < until {
        w.assert_running();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn one_worker_killed(protocol: &'static str, seed: u64) {
    let w = world(protocol).await;
    let load = w.load(seed, 400);
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut first, mut restarts) = (None, Vec::new());
    let n = kills(50);
    for life in 0..n {
        let mut worker = w.worker("crash-one");
        // Every life commits progress before it is killed.
        let took = worker.wait_commits(0, Duration::from_secs(120)).await;
        if life == 0 {
            first = Some(took);
        } else {
            restarts.push(took);
        }
        live_and_die(&mut worker, &mut rng).await;
        worker.kill();
    }
    load.stop().await;
    let mut last = w.worker("crash-one");
    w.wait_caught_up(Duration::from_secs(180), &mut [&mut last])
        .await;
    last.terminate().await;

    let outcome = w.check_exactly_once().await;
    assert!(
        outcome.aborted_transactions > 0,
        "no kill landed inside a transaction: the test proves nothing ({outcome})"
    );
    eprintln!(
        "{protocol}: {n} kills of one worker; {outcome}; start to first commit {:?}, restart after a kill to first commit: median {:?}, max {:?}",
        first.unwrap(),
        median(restarts.clone()),
        restarts.iter().max().unwrap()
    );
}

async fn two_workers_killed_alternately(protocol: &'static str, seed: u64) {
    let w = world(protocol).await;
    let load = w.load(seed, 400);
    let mut rng = StdRng::seed_from_u64(seed);
    let names = ["crash-a", "crash-b"];
    let mut workers: Vec<Worker> = names.iter().map(|n| w.worker(n)).collect();
    for worker in &mut workers {
        worker.wait_commits(0, Duration::from_secs(120)).await;
    }
    let mut restarts = Vec::new();
    let n = kills(20);
    for kill in 0..n {
        let i = kill % 2;
        live_and_die(&mut workers[i], &mut rng).await;
        let dead = std::mem::replace(&mut workers[i], w.worker(names[i]));
        dead.kill();
        // The other one keeps going meanwhile, and the new one takes its
        // share back and commits.
        let took = workers[i].wait_commits(0, Duration::from_secs(120)).await;
        workers[1 - i].assert_running();
        restarts.push(took);
    }
    load.stop().await;
    let [mut a, mut b] = <[Worker; 2]>::try_from(workers).ok().unwrap();
    w.wait_caught_up(Duration::from_secs(180), &mut [&mut a, &mut b])
        .await;
    a.terminate().await;
    b.terminate().await;

    let outcome = w.check_exactly_once().await;
    assert!(
        outcome.aborted_transactions > 0,
        "no kill landed inside a transaction ({outcome})"
    );
    eprintln!(
        "{protocol}: {n} kills of two workers in turn; {outcome}; a killed worker's successor's first commit: median {:?}, max {:?}",
        median(restarts.clone()),
        restarts.iter().max().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_kills_classic_protocol() {
    one_worker_killed("classic", 21).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_kills_consumer_protocol() {
    one_worker_killed("consumer", 22).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_killed_in_turn_classic_protocol() {
    two_workers_killed_alternately("classic", 23).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_killed_in_turn_consumer_protocol() {
    two_workers_killed_alternately("consumer", 24).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_least_once_loses_nothing_across_kills() {
    let w = world("classic").await;
    let load = w.load(25, 400);
    let mut rng = StdRng::seed_from_u64(25);
    let args = ["--guarantee", "at-least-once"];
    for _ in 0..5 {
        let mut worker = w.worker_with("alo", &args);
        worker.wait_commits(0, Duration::from_secs(120)).await;
        live_and_die(&mut worker, &mut rng).await;
        worker.kill();
    }
    load.stop().await;
    let mut last = w.worker_with("alo", &args);
    w.wait_caught_up(Duration::from_secs(180), &mut [&mut last])
        .await;
    last.terminate().await;
    // Repeats are allowed; losses are not.
    let sent = w.sent();
    let reader = sluice::avro::Reader::new(common::schema("processed-user-login"));
    let mut seen = std::collections::BTreeSet::new();
    for r in common::read_committed_all(&w.kafka.bootstrap, "processed-user-login").await {
        let (_, p): (u32, sluice_app::topologies::user_login::ProcessedUserLogin) =
            w.codec.decode(&r.value, &reader).await.unwrap();
        seen.insert(p.device_id);
    }
    let lost: Vec<_> = sent
        .iter()
        .filter_map(|s| s.valid.as_ref())
        .filter(|d| !seen.contains(*d))
        .collect();
    assert!(lost.is_empty(), "lost valid logins: {lost:?}");
}

/// Started before its broker and its registry exist, the worker waits for
/// both instead of exiting, and then processes everything exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_started_before_its_broker_and_registry_waits_for_them() {
    use sluice::{avro::RegistryConfig, registry::ServeOptions};
    let port = free_port();
    let registry_port = free_port();
    let registry_url = format!("http://127.0.0.1:{registry_port}");
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut worker = common::Proc(
        common::sluice()
            .args(["run", "--topology", "user-login"])
            .env("KAFKA_BOOTSTRAP_SERVERS", format!("127.0.0.1:{port}"))
            .env("SCHEMA_REGISTRY_URL", &registry_url)
            .env("SLUICE_INSTANCE_ID", "early-bird")
            .env("SLUICE_LOG_LEVEL", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        worker.0.try_wait().unwrap().is_none(),
        "no registry: the worker must wait, not exit"
    );
    let store = std::sync::Arc::new(sluice::registry::MemoryStore::new());
    let registry = sluice::registry::spawn(
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

    let kafka = Kafka::start_on(port);
    let config = RegistryConfig::new(&registry_url, None).unwrap();
    let client = sluice::avro::RegistryClient::new(config.clone()).unwrap();
    for f in common::schemas() {
        client.register(&f.subject(), &f.text).await.unwrap();
    }
    let w = Logins::with_registry(kafka, "classic", registry).await;
    let load = w.load(26, 1000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.stop().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !w.caught_up().await {
        assert!(
            worker.0.try_wait().unwrap().is_none(),
            "the worker exited: {}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
        assert!(
            Instant::now() < deadline,
            "nothing processed after the broker came up: {}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let outcome = w.check_exactly_once().await;
    eprintln!("early worker: {outcome}");
}
