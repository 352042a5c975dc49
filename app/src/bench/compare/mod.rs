//! `sluice bench --compare`: on one real Kafka, one after another on the
//! same preloaded records, the pass-through ceiling, sluice and Kafka
//! Streams, each a process of its own, doing the same work: records/s,
//! CPU per record, latency at a fixed offered rate, resident memory, time
//! to first output; then the iot windows the same way; and, with
//! `--scaling`, records/s by threads on 8 partitions.

mod breakdown;
pub(crate) mod child;
mod perf;
mod run;
mod stream;
mod verify;
pub mod worker;

use std::{path::PathBuf, sync::Arc, time::Duration};

use run::{Bench, Processor, Row};
use sluice::{
    avro::{AvroCodec, RegistryClient, RegistryConfig},
    kafka::KafkaConfig,
    registry, schemas,
};
use stream::{Stream, Work};

pub struct Params {
    pub bootstrap: String,
    pub kafka_config: Vec<(String, String)>,
    pub records: usize,
    pub partitions: i32,
    pub rate: u64,
    pub latency_records: usize,
    pub batch_size: usize,
    pub commit_interval: Duration,
    pub peer: PathBuf,
    pub quix: PathBuf,
    pub kafka_libs: PathBuf,
    pub scaling: bool,
    /// pass-through, sluice, kafka-streams, quix-streams; empty for all.
    pub processors: Vec<String>,
    /// logins, windows, enriched, counts; empty for all.
    pub works: Vec<String>,
    pub rounds: u32,
    /// Rows of the enriched work's devices table.
    pub table_devices: usize,
}

impl Params {
    fn runs(&self, who: Processor) -> bool {
        let name = match who {
            Processor::PassThrough => "pass-through",
            Processor::Floor => "floor",
            Processor::Sluice => "sluice",
            Processor::KafkaStreams => "kafka-streams",
            Processor::QuixStreams(_) => "quix-streams",
        };
        self.processors.is_empty() || self.processors.iter().any(|p| p == name)
    }

    fn does(&self, work: Work) -> bool {
        let name = match work {
            Work::Logins => "logins",
            Work::Readings => "windows",
            Work::Enriched | Work::Unjoined => "enriched",
            Work::Counts => "counts",
        };
        self.works.is_empty() || self.works.iter().any(|w| w == name)
    }
}

pub async fn run(p: Params) -> anyhow::Result<()> {
    for (who, launcher, name) in [
        (Processor::KafkaStreams, &p.peer, "Kafka Streams"),
        (Processor::QuixStreams(true), &p.quix, "Quix Streams"),
    ] {
        if !p.runs(who) {
            continue;
        }
        anyhow::ensure!(
            launcher.exists(),
            "the {name} peer is not at {} (run from the repository's root, or pass its path)",
            launcher.display()
        );
        eprintln!("building the {name} peer ({} build)…", launcher.display());
        let built = std::process::Command::new(launcher).arg("build").status()?;
        anyhow::ensure!(built.success(), "{} build failed", launcher.display());
    }
    let reg = registry::spawn_preloaded(&schemas::files(&crate::topologies::schemas())).await?;
    let config = RegistryConfig::new(&reg.url(), None)?;
    let client = RegistryClient::new(config.clone())?;
    let kafka = KafkaConfig {
        bootstrap: p.bootstrap.clone(),
        properties: p.kafka_config.clone(),
    };
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let scratch = std::env::temp_dir().join(format!("sluice-compare-{run_id}"));
    std::fs::create_dir_all(&scratch)?;
    let bench = |partitions: i32, rate: u64, round: u32| Bench {
        kafka: &kafka,
        registry_url: reg.url(),
        client: &client,
        codec: Arc::new(AvroCodec::new(&config).expect("a registry URL that parsed")),
        partitions,
        rate,
        latency_records: p.latency_records,
        run_id: format!("{run_id}r{round}"),
        peer: p.peer.clone(),
        quix: p.quix.clone(),
        scratch: scratch.clone(),
        batch_size: p.batch_size,
        commit_interval: p.commit_interval,
    };
    let b = bench(p.partitions, p.rate, 0);
    println!(
        "comparison on the broker at {}, {} partitions, {} records preloaded per run, {} round(s); latency: {} records offered at {}/s",
        p.bootstrap, p.partitions, p.records, p.rounds, p.latency_records, p.rate
    );
    let logins = preloaded(&b, Work::Logins, &p, p.partitions).await?;
    let readings = match p.does(Work::Readings) {
        true => Some(preloaded(&b, Work::Readings, &p, p.partitions).await?),
        false => None,
    };
    let enriched = match p.does(Work::Enriched) {
        true => Some(preloaded(&b, Work::Enriched, &p, p.partitions).await?),
        false => None,
    };
    let limit = broker_limit(&b, &p, &logins).await;
    // The topology's own cost, on one core without a broker: with the
    // pass-through's, what the parts of sluice's run cost alone.
    let in_process = crate::bench::inprocess::run(1_000_000).await?;
    let in_process_us = 1e6 / in_process.rate();
    let mut rows = Vec::new();
    for round in 0..p.rounds {
        let b = bench(p.partitions, p.rate, round);
        let runs = [
            (Work::Logins, Processor::PassThrough, 1),
            (Work::Logins, Processor::PassThrough, 2),
            (Work::Logins, Processor::Floor, 1),
            (Work::Logins, Processor::Sluice, 1),
            (Work::Logins, Processor::KafkaStreams, 1),
            (Work::Logins, Processor::QuixStreams(true), 1),
            (Work::Logins, Processor::QuixStreams(false), 1),
            (Work::Readings, Processor::Sluice, 1),
            (Work::Readings, Processor::KafkaStreams, 1),
            (Work::Unjoined, Processor::Sluice, 1),
            (Work::Enriched, Processor::Sluice, 1),
            (Work::Enriched, Processor::KafkaStreams, 1),
            (Work::Counts, Processor::Sluice, 1),
            (Work::Counts, Processor::KafkaStreams, 1),
        ];
        for (work, who, threads) in runs {
            if !p.runs(who) || !p.does(work) {
                continue;
            }
            let stream = match work {
                Work::Logins | Work::Counts => &logins,
                Work::Readings => readings.as_ref().expect("preloaded when compared"),
                Work::Enriched | Work::Unjoined => {
                    enriched.as_ref().expect("preloaded when compared")
                }
            };
            let row = b.run(work, stream, who, threads).await?;
            eprintln!("round {}: {}", round + 1, line(&row));
            rows.push(row);
        }
    }
    drop((logins, readings, enriched));
    let medians = medians(&rows);
    println!();
    print_table(&medians);
    if p.rounds > 1 {
        println!();
        println!("(the median round of each by records/s; every round's records/s:)");
        for m in &medians {
            let all: Vec<String> = rows
                .iter()
                .filter(|r| r.name == m.name && r.threads == m.threads)
                .map(|r| format!("{:.0}", r.rate))
                .collect();
            println!("  {} ({}): {}", m.name, m.threads, all.join(", "));
        }
    }
    print_summary(&medians, limit.as_ref());
    print_parts(&medians, in_process_us);
    for (r, b) in medians
        .iter()
        .filter_map(|r| Some((r, r.breakdown.as_ref()?)))
    {
        println!();
        println!(
            "where {}'s latency goes at {}/s (one offered record in 16, traced through the worker):",
            r.name, p.rate
        );
        println!();
        println!("{b}");
    }
    if p.scaling {
        scaling(&bench(8, 0, 0), &p).await?;
    }
    reg.stop().await?;
    // The processes' logs stay when asked for (or when a run failed above).
    if std::env::var_os("SLUICE_COMPARE_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    } else {
        eprintln!("logs in {}", scratch.display());
    }
    Ok(())
}

/// A stream encoded with schema ids registered under a template subject;
/// every run's own subjects register the same schema, so the ids hold.
async fn preloaded(
    b: &Bench<'_>,
    work: Work,
    p: &Params,
    partitions: i32,
) -> anyhow::Result<Stream> {
    let records = p.records;
    let (topic, schema_of) = match work {
        Work::Logins | Work::Counts => (format!("cmp-{}-logins", b.run_id), "user-login"),
        Work::Readings => (format!("cmp-{}-readings", b.run_id), "iot_sensor_data"),
        Work::Enriched | Work::Unjoined => {
            (format!("cmp-{}-enriched", b.run_id), "iot_sensor_data")
        }
    };
    let text = crate::topologies::schema_for(schema_of).unwrap_or_default();
    b.client
        .register(&schemas::value_subject(&topic), &text)
        .await?;
    eprintln!("encoding {records} {work:?}…");
    let mut stream = Stream::build(work, records, partitions, &b.codec, &topic).await?;
    if work == Work::Enriched {
        let table = format!("cmp-{}-devices", b.run_id);
        let text = crate::topologies::schema_for("iot-devices").unwrap_or_default();
        b.client
            .register(&schemas::value_subject(&table), &text)
            .await?;
        stream.table = Stream::devices(&b.codec, &table, p.table_devices).await?;
    }
    Ok(stream)
}

async fn broker_limit(b: &Bench<'_>, p: &Params, logins: &Stream) -> Option<perf::Limit> {
    let topic = format!("cmp-{}-perf", b.run_id);
    let measured = async {
        b.create_topics(&[(&topic, run::Kind::Plain)]).await?;
        let (libs, bootstrap, t) = (p.kafka_libs.clone(), p.bootstrap.clone(), topic.clone());
        let (records, size) = (p.records, logins.record_size);
        tokio::task::spawn_blocking(move || perf::measure(&libs, &bootstrap, &t, records, size))
            .await?
    }
    .await;
    let _ = sluice::kafka::delete_topics(b.kafka, &[&topic]).await;
    measured
        .map_err(|e| eprintln!("(no broker limit: {e})"))
        .ok()
}

/// Throughput by threads on 8 partitions: on two cores this shows the
/// cost of coordination more than any speed-up.
async fn scaling(b: &Bench<'_>, p: &Params) -> anyhow::Result<()> {
    let logins = preloaded(b, Work::Logins, p, 8).await?;
    let mut rows = Vec::new();
    for who in [Processor::Sluice, Processor::KafkaStreams] {
        if !p.runs(who) {
            continue;
        }
        for threads in [1, 2, 4] {
            let row = b.run(Work::Logins, &logins, who, threads).await?;
            eprintln!("{}", line(&row));
            rows.push(row);
        }
    }
    println!();
    println!(
        "scaling, user-login exactly-once, 8 partitions (threads: sluice --threads, Kafka Streams num.stream.threads):"
    );
    println!();
    println!(
        "| processor | threads | records/s | CPU µs/record | peak RSS | aborted, read again |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {} | {} | {} |",
            r.name,
            r.threads,
            r.rate,
            opt(r.cpu_us, |c| format!("{c:.2}")),
            opt(r.peak_rss, mb),
            r.aborted
        );
    }
    Ok(())
}

/// Per processor and thread count, the round of median records/s.
fn medians(rows: &[Row]) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for r in rows {
        if out
            .iter()
            .any(|o| o.name == r.name && o.threads == r.threads)
        {
            continue;
        }
        let mut same: Vec<&Row> = rows
            .iter()
            .filter(|o| o.name == r.name && o.threads == r.threads)
            .collect();
        same.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        out.push(same[same.len() / 2].clone());
    }
    out
}

fn line(r: &Row) -> String {
    format!(
        "{} ({} thread{}): {:.0} records/s",
        r.name,
        r.threads,
        if r.threads == 1 { "" } else { "s" },
        r.rate
    )
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn print_table(rows: &[Row]) {
    println!(
        "| processor | threads | records/s | CPU µs/record | p50 | p99 | p99.9 | peak RSS | steady RSS | first output |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        let lat = |i: usize| opt(r.latency, |l| ms(l[i]));
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {:.1} s |",
            r.name,
            r.threads,
            r.rate,
            opt(r.cpu_us, |c| format!("{c:.2}")),
            lat(0),
            lat(1),
            lat(2),
            opt(r.peak_rss, mb),
            opt(r.steady_rss, mb),
            r.first_output.as_secs_f64()
        );
    }
}

/// sluice's CPU per record against what its parts cost alone: the
/// pass-through's (one thread) and the topology's in-process.
fn print_parts(rows: &[Row], in_process_us: f64) {
    let cpu = |who: Processor| {
        rows.iter()
            .find(|r| r.name == who.label(Work::Logins) && r.threads == 1)
            .and_then(|r| r.cpu_us)
    };
    if let (Some(sluice), Some(pt)) = (cpu(Processor::Sluice), cpu(Processor::PassThrough)) {
        let parts = pt + in_process_us;
        println!(
            "CPU per record: sluice user-login {sluice:.2} µs, its parts alone {parts:.2} µs \
             (pass-through {pt:.2} + the topology in-process {in_process_us:.2}): {:+.0} %",
            (sluice / parts - 1.0) * 100.0
        );
    }
}

fn print_summary(rows: &[Row], limit: Option<&perf::Limit>) {
    let rate = |name: &str| {
        rows.iter()
            .filter(|r| r.name == name)
            .map(|r| r.rate)
            .fold(None, |best: Option<f64>, r| {
                Some(best.map_or(r, |b| b.max(r)))
            })
    };
    println!();
    if let Some(l) = limit {
        println!(
            "broker limit for records of this size (Kafka's perf tools): produce {:.0} records/s, consume {:.0} records/s",
            l.produce, l.consume
        );
    }
    let ceiling = rate(Processor::PassThrough.label(Work::Logins));
    let login = rate(Processor::Sluice.label(Work::Logins));
    let ks_login = rate(Processor::KafkaStreams.label(Work::Logins));
    let quix = rate(Processor::QuixStreams(true).label(Work::Logins));
    let quix_alo = rate(Processor::QuixStreams(false).label(Work::Logins));
    let iot = rate(Processor::Sluice.label(Work::Readings));
    let ks_iot = rate(Processor::KafkaStreams.label(Work::Readings));
    if let (Some(s), Some(c)) = (login, ceiling) {
        println!(
            "sluice user-login at {:.0} % of the pass-through (its better thread count)",
            s / c * 100.0
        );
    }
    if let (Some(s), Some(k)) = (login, ks_login) {
        println!(
            "sluice user-login at {:.2}× Kafka Streams' records/s",
            s / k
        );
    }
    for (peer, guarantee) in [(quix, "exactly-once"), (quix_alo, "at-least-once")] {
        if let (Some(s), Some(q)) = (login, peer) {
            println!(
                "sluice user-login at {:.2}× Quix Streams' records/s ({guarantee})",
                s / q
            );
        }
    }
    let sluice = rows
        .iter()
        .find(|r| r.name == Processor::Sluice.label(Work::Logins) && r.threads == 1);
    if let Some([s50, s99, _]) = sluice.and_then(|s| s.latency) {
        let x = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-3);
        let against: Vec<String> = rows
            .iter()
            .filter(|r| r.name != Processor::Sluice.label(Work::Logins) && r.threads == 1)
            .filter(|r| {
                // The counts' latency is a hop longer: compared below.
                r.name != Processor::Sluice.label(Work::Counts)
                    && r.name != Processor::KafkaStreams.label(Work::Counts)
            })
            .filter_map(|r| {
                let [b50, b99, _] = r.latency?;
                Some(format!(
                    "{}: p50 ×{:.2}, p99 ×{:.2}",
                    r.name,
                    x(s50, b50),
                    x(s99, b99)
                ))
            })
            .collect();
        if !against.is_empty() {
            println!("sluice user-login's latency against {}", against.join("; "));
        }
    }
    if let (Some(s), Some(k)) = (iot, ks_iot) {
        println!(
            "sluice iot windows at {:.2}× Kafka Streams' records/s",
            s / k
        );
    }
    let joined = rate(Processor::Sluice.label(Work::Enriched));
    let unjoined = rate(Processor::Sluice.label(Work::Unjoined));
    let ks_joined = rate(Processor::KafkaStreams.label(Work::Enriched));
    if let (Some(s), Some(k)) = (joined, ks_joined) {
        println!(
            "sluice iot-enriched at {:.2}× Kafka Streams' records/s (its GlobalKTable join)",
            s / k
        );
    }
    if let (Some(j), Some(u)) = (joined, unjoined) {
        println!(
            "the join costs sluice {:.0} % of the same readings' topic-to-topic records/s ({j:.0} against {u:.0})",
            (1.0 - j / u) * 100.0
        );
    }
    let counts = rate(Processor::Sluice.label(Work::Counts));
    let ks_counts = rate(Processor::KafkaStreams.label(Work::Counts));
    if let (Some(s), Some(k)) = (counts, ks_counts) {
        println!(
            "sluice logins-by-locale at {:.2}× Kafka Streams' groupBy(locale).count() records/s",
            s / k
        );
    }
    let latency_of = |name: &str| {
        rows.iter()
            .find(|r| r.name == name && r.threads == 1)
            .and_then(|r| r.latency)
    };
    if let (Some(c), Some(l)) = (counts, login) {
        let hop = match (
            latency_of(Processor::Sluice.label(Work::Counts)),
            latency_of(Processor::Sluice.label(Work::Logins)),
        ) {
            (Some(c), Some(l)) => format!(
                "; latency p50 {} against {}, p99 {} against {}",
                ms(c[0]),
                ms(l[0]),
                ms(c[1]),
                ms(l[1])
            ),
            _ => String::new(),
        };
        println!(
            "a repartition hop (logins-by-locale against user-login, the same checks): {:.0} % fewer records/s ({c:.0} against {l:.0}){hop}",
            (1.0 - c / l) * 100.0
        );
    }
}
