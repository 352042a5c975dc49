//! Broker faults under load on a 3-broker Apache Kafka cluster (replication
//! factor 3, min.insync.replicas 2): SIGKILL one broker and restart it;
//! SIGKILL the broker coordinating the worker's transactions; stop every
//! broker for 30 s and start them again. The worker keeps going or waits,
//! never exits, says what happened in a line or two, and `/readyz` says 503
//! while it cannot reach its brokers and 200 once it processes again.
//! Output and dead letters stay exactly-once, and nothing is lost.

mod common;

use std::time::{Duration, Instant};

use common::{
    kafka::Kafka,
    logins::{Logins, Worker},
    raw::RawReader,
};

const INSTANCE: &str = "faults";

/// Waits until the worker commits again, and `/readyz` says 200.
async fn keeps_going(w: &mut Worker, what: &str) -> Duration {
    let started = Instant::now();
    let before = w.commits().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        w.assert_running();
        let (status, body) = w.readyz().await;
        if w.commits().await > before && status == 200 {
            return started.elapsed();
        }
        // SLUICE_TEST_STALL_DUMP=1: a stuck worker's threads (gdb) and log go
        // to /tmp/stall.txt and /tmp/stall-worker.log.
        if Instant::now() >= deadline && std::env::var_os("SLUICE_TEST_STALL_DUMP").is_some() {
            let out = std::process::Command::new("gdb")
                .args([
                    "-p",
                    &w.proc.0.id().to_string(),
                    "-batch",
                    "-ex",
                    "thread apply all bt",
                ])
                .output()
                .unwrap();
            std::fs::write("/tmp/stall.txt", &out.stdout).unwrap();
            std::fs::write("/tmp/stall-worker.log", w.log_text()).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no commit or not ready ({status} {body}) in 120 s; the log ends:\n{}",
            w.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The worker's log lines at warn or error from byte `from` on.
fn complaints(w: &Worker, from: usize) -> Vec<String> {
    w.log_text()[from..]
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_worker_rides_out_broker_faults() {
    rides_out_broker_faults("classic").await;
}

/// The same under the consumer group protocol (KIP-848): the broker
/// coordinates the group, and a coordinator killed takes its heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_worker_rides_out_broker_faults_with_the_consumer_protocol() {
    rides_out_broker_faults("consumer").await;
}

/// One three-broker cluster at a time: two at once on two cores starve
/// both of CPU, and the faults would be the machine's.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn rides_out_broker_faults(protocol: &'static str) {
    let _one = ONE_CLUSTER.lock().await;
    let w = Logins::new(Kafka::cluster(3), protocol).await;
    let load = w.load(31, 300);
    let mut worker = w.worker(INSTANCE);
    worker.wait_commits(0, Duration::from_secs(120)).await;
    let txn_id = format!("sluice-user-login-{INSTANCE}");
    let mut raw = RawReader::connect(&w.kafka.bootstrap).await;
    let coordinator = w.kafka.node_at(&raw.transaction_coordinator(&txn_id).await);

    // 1. One broker (not the transaction coordinator) killed and restarted.
    let victim = (1..=3).find(|n| *n != coordinator).unwrap();
    w.kafka.kill(victim);
    let one_down = keeps_going(&mut worker, "one broker killed").await;
    w.kafka.restart(victim);
    keeps_going(&mut worker, "the killed broker back").await;

    // 2. The transaction coordinator killed: another broker takes over
    // __transaction_state and the worker's next transaction goes there.
    w.kafka.kill(coordinator);
    let coordinator_down = keeps_going(&mut worker, "transaction coordinator killed").await;
    w.kafka.restart(coordinator);
    keeps_going(&mut worker, "the coordinator back").await;

    // 3. Every broker down for 30 s.
    let log_from = worker.log_text().len();
    for n in 1..=3 {
        w.kafka.kill(n);
    }
    let down_at = Instant::now();
    let mut saw_unready = None;
    while down_at.elapsed() < Duration::from_secs(30) {
        worker.assert_running();
        let (status, body) = worker.readyz().await;
        if status == 503 && body.contains("cannot reach any Kafka broker") {
            saw_unready.get_or_insert(down_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let unready_after = saw_unready.expect("/readyz never said 503 while every broker was down");
    let lines_while_down = complaints(&worker, log_from);
    w.kafka.restart_all();
    let up_at = Instant::now();
    keeps_going(&mut worker, "every broker back").await;
    let ready_again = up_at.elapsed();
    let lines_outage = complaints(&worker, log_from);

    load.stop().await;
    w.wait_caught_up(Duration::from_secs(180), &mut [&mut worker])
        .await;
    let log = worker.log_text();
    worker.terminate().await;
    let outcome = w.check_exactly_once().await;

    assert!(
        lines_while_down
            .iter()
            .filter(|l| l.contains("cannot reach any Kafka broker"))
            .count()
            >= 1,
        "the outage is logged: {lines_while_down:#?}"
    );
    // One line per thing that happened, not one per connection and retry.
    assert!(
        lines_outage.len() <= 12,
        "{} warnings for one outage:\n{}",
        lines_outage.len(),
        lines_outage.join("\n")
    );
    assert!(!log.contains("panicked"), "the worker panicked:\n{log}");
    eprintln!(
        "3 brokers, {protocol} protocol: {outcome}; one broker killed: committing again after {one_down:?}; the transaction coordinator (node {coordinator}) killed: after {coordinator_down:?}; all down 30 s: /readyz 503 after {unready_after:?}, ready and committing {ready_again:?} after they were back, {} warnings:\n{}",
        lines_outage.len(),
        lines_outage.join("\n")
    );
}
