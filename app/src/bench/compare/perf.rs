//! The broker's own limit for records of the comparison's size, from
//! Kafka's perf tools (`kafka-producer-perf-test`, `kafka-consumer-perf-test`,
//! in `org.apache.kafka:kafka-tools`), run from the jars `dev/kafka/fetch` puts
//! in place.

use std::{path::Path, process::Command};

#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub produce: f64,
    pub consume: f64,
}

/// Produces `records` of `size` bytes to `topic` as fast as the broker
/// takes them (acks=all, as the processors' producers), then consumes them.
pub fn measure(
    libs: &Path,
    bootstrap: &str,
    topic: &str,
    records: usize,
    size: usize,
) -> anyhow::Result<Limit> {
    let classpath = format!("{}/*", libs.display());
    let java = |class: &str, args: &[String]| -> anyhow::Result<String> {
        let out = Command::new("java")
            .args(["-Xmx512m", "-cp", &classpath, class])
            .args(args)
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run java for {class}: {e}"))?;
        anyhow::ensure!(
            out.status.success(),
            "{class} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let produced = java(
        "org.apache.kafka.tools.ProducerPerformance",
        &[
            "--topic".into(),
            topic.into(),
            "--num-records".into(),
            records.to_string(),
            "--record-size".into(),
            size.to_string(),
            "--throughput".into(),
            "-1".into(),
            "--producer-props".into(),
            format!("bootstrap.servers={bootstrap}"),
            "acks=all".into(),
        ],
    )?;
    let consumed = java(
        "org.apache.kafka.tools.ConsumerPerformance",
        &[
            "--bootstrap-server".into(),
            bootstrap.into(),
            "--topic".into(),
            topic.into(),
            "--messages".into(),
            records.to_string(),
            "--timeout".into(),
            "60000".into(),
        ],
    )?;
    Ok(Limit {
        produce: producer_rate(&produced).ok_or_else(|| {
            anyhow::anyhow!("no rate in ProducerPerformance's output: {produced}")
        })?,
        consume: consumer_rate(&consumed).ok_or_else(|| {
            anyhow::anyhow!("no rate in ConsumerPerformance's output: {consumed}")
        })?,
    })
}

/// "500000 records sent, 412371.1 records/sec (40.12 MB/sec), …": the last such line.
fn producer_rate(out: &str) -> Option<f64> {
    let line = out.lines().rev().find(|l| l.contains("records sent"))?;
    line.split(", ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The CSV line under ConsumerPerformance's header: fetch.nMsg.sec, the
/// rate after the group join.
fn consumer_rate(out: &str) -> Option<f64> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with("start.time"));
    let header: Vec<&str> = lines.next()?.split(", ").map(str::trim).collect();
    let values: Vec<&str> = lines.next()?.split(", ").map(str::trim).collect();
    let at = header.iter().position(|h| *h == "fetch.nMsg.sec")?;
    values.get(at)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tools_output() {
        let p = "250001 records sent, 250001.0 records/sec (23.84 MB/sec), 10.0 ms avg latency, 300.0 ms max latency.\n\
                 500000 records sent, 412371.1 records/sec (40.12 MB/sec), 5.2 ms avg latency, 200.0 ms max latency, 3 ms 50th, 20 ms 95th, 40 ms 99th, 90 ms 99.9th.\n";
        assert_eq!(producer_rate(p), Some(412371.1));
        let c = "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec\n\
                 2026-12-02 03:00:00:000, 2026-12-02 03:00:02:000, 47.6837, 23.8419, 500000, 250000.0000, 300, 1700, 28.0492, 294117.6471\n";
        assert_eq!(consumer_rate(c), Some(294117.6471));
    }
}
