//! Workers joining and leaving under load on Apache Kafka: one worker, then
//! three (each takes partitions and commits), then one again (the other two
//! stopped with SIGTERM), with each consumer group protocol. Exactly-once
//! throughout, by the read_committed and the raw witnesses.

mod common;

use std::time::{Duration, Instant};

use common::{kafka::Kafka, logins::Logins};

async fn one_three_one(protocol: &'static str, seed: u64) {
    let w = Logins::new(Kafka::start(), protocol).await;
    let load = w.load(seed, 400);
    let mut a = w.worker("scale-a");
    let first = a.wait_commits(0, Duration::from_secs(120)).await;

    let mut b = w.worker("scale-b");
    let mut c = w.worker("scale-c");
    let joined = Instant::now();
    b.wait_commits(0, Duration::from_secs(120)).await;
    c.wait_commits(0, Duration::from_secs(120)).await;
    let spread = joined.elapsed();
    // All three share the load for a while.
    let a_before = a.commits().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.wait_commits(a_before, Duration::from_secs(60)).await;

    let left = Instant::now();
    b.terminate().await;
    c.terminate().await;
    // The last one takes their partitions back and keeps up.
    let before = a.commits().await;
    a.wait_commits(before, Duration::from_secs(60)).await;
    load.stop().await;
    w.wait_caught_up(Duration::from_secs(120), &mut [&mut a])
        .await;
    let back = left.elapsed();
    a.terminate().await;

    let outcome = w.check_exactly_once().await;
    eprintln!(
        "{protocol}: 1 → 3 → 1 workers: {outcome}; first worker's first commit after {first:?}; two more committing {spread:?} after they started; one worker caught up alone {back:?} after the others stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_three_one_workers_classic_protocol() {
    one_three_one("classic", 41).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_three_one_workers_consumer_protocol() {
    one_three_one("consumer", 42).await;
}
