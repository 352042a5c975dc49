//! A topology's group member run inside the test's process until stopped.

use std::{sync::Arc, time::Duration};

use sluice::{
    avro::AvroCodec,
    kafka::KafkaConfig,
    runtime::{self, RunOptions},
    stats::Stats,
    topology::Topology,
};
use tokio::sync::oneshot;

pub struct Member {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    pub stats: Arc<Stats>,
}

impl Member {
    /// Runs `topology` with `opts` until `stop`; an error fails the test.
    pub fn spawn(
        topology: Topology,
        kafka: &KafkaConfig,
        codec: &Arc<AvroCodec>,
        opts: RunOptions,
    ) -> Member {
        let (stop, stopped) = oneshot::channel::<()>();
        let stats = Arc::new(Stats::default());
        let (kafka, codec, st) = (kafka.clone(), codec.clone(), stats.clone());
        let task = tokio::spawn(async move {
            runtime::run_topology(&topology, &kafka, codec, &opts, st, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Member { stop, task, stats }
    }

    /// Asks it to commit and leave; it must within 30 s.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("member stops within 30 s")
            .unwrap();
    }

    /// Records it has taken in.
    pub fn read(&self) -> u64 {
        self.stats
            .records_in
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}
