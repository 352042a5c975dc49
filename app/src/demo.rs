//! `sluice demo`: the whole pipeline in one process with no services — the
//! mock Kafka cluster, the embedded registry, the simulator and the topologies.

use std::{
    future::Future,
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
    mocking::MockCluster,
};
use tokio::sync::watch;

use crate::{
    simulate::{iot, logins},
    topologies::{
        iot_alerts::SensorAlert,
        iot_enriched::{self, EnrichedReading},
        iot_events, iot_readings, iot_windows,
        logins_by_locale::{self, LoginCount},
        user_login::{self, ProcessedUserLogin},
    },
};
use sluice::{
    avro::{AvroCodec, AvroSchema, Reader, RegistryConfig},
    console::{Console, Sources},
    kafka::KafkaConfig,
    metrics::{Metrics, MetricsError},
    registry::{self},
    runtime::{RunOptions, Workers},
    sink::{
        DEFAULT_DATABASE, Databases,
        memory::{InMemory, MemoryTables},
        postgres::Postgres,
    },
    stats::Stats,
    window::WindowSpec,
};

#[derive(Debug, Clone)]
pub struct Options {
    pub rate: u64,
    pub bad_ratio: f64,
    pub partitions: i32,
    pub status_every: Duration,
    pub duration: Option<Duration>,
    /// PostgreSQL for the window aggregates; in memory without it.
    pub database_url: Option<String>,
    pub window: WindowSpec,
    /// Where to serve the console and /metrics; `None`: 127.0.0.1:8080, or
    /// a free port when that is taken.
    pub console: Option<SocketAddr>,
}

impl Options {
    /// Windows short enough to see them turn final within a demo.
    pub fn demo_window() -> WindowSpec {
        WindowSpec {
            idle_timeout: Duration::from_secs(5),
            ..WindowSpec::tumbling(Duration::from_secs(10), Duration::from_secs(2))
        }
    }
}

/// What one topology did in the demo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub records_in: u64,
    pub records_out: u64,
    pub dead_letters: u64,
    pub late: u64,
    pub window_rows: u64,
    /// Records committed per output topic.
    pub by_topic: std::collections::BTreeMap<String, u64>,
}

impl Counts {
    fn of(s: &Stats) -> Counts {
        Counts {
            records_in: s.records_in.load(Ordering::Relaxed),
            records_out: s.records_out.load(Ordering::Relaxed),
            dead_letters: s.dead_letters.load(Ordering::Relaxed),
            late: s.late.load(Ordering::Relaxed),
            window_rows: s.window_rows.load(Ordering::Relaxed),
            by_topic: s.outputs_by_topic(),
        }
    }

    /// Records committed to `topic`.
    pub fn to(&self, topic: &str) -> u64 {
        self.by_topic.get(topic).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub logins: logins::Report,
    pub readings: u64,
    pub user_login: Counts,
    pub iot_events: Counts,
    pub iot_windows: Counts,
    pub iot_readings: Counts,
    pub iot_enriched: Counts,
    /// The part of logins-by-locale that counts (after its repartition topic).
    pub logins_by_locale: Counts,
    /// Readings the simulator stamped later than any grace period.
    pub late_readings: u64,
}

/// The latest committed output of each sampled topic, for the status lines.
type Samples = Mutex<std::collections::BTreeMap<&'static str, String>>;

/// Keeps the latest committed login and enriched reading so the status
/// lines can show one of each.
async fn tap(bootstrap: String, codec: Arc<AvroCodec>, latest: Arc<Samples>) {
    let consumer: Result<StreamConsumer, _> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "sluice-demo-tap")
        .set("auto.offset.reset", "latest")
        .set("isolation.level", "read_committed")
        .create();
    let Ok(consumer) = consumer else { return };
    if consumer
        .subscribe(&[
            user_login::SINK,
            iot_enriched::SINK,
            iot_enriched::ALERTS,
            logins_by_locale::SINK,
        ])
        .is_err()
    {
        return;
    }
    let reader = |schema: &str| apache_avro::Schema::parse_str(schema).ok().map(Reader::new);
    let (Some(logins), Some(enriched), Some(alerts), Some(counted)) = (
        reader(ProcessedUserLogin::SCHEMA),
        reader(EnrichedReading::SCHEMA),
        reader(SensorAlert::SCHEMA),
        reader(LoginCount::SCHEMA),
    ) else {
        return;
    };
    // Each locale's latest count, as the compacted topic keeps it.
    let mut by_locale = std::collections::BTreeMap::new();
    while let Ok(m) = consumer.recv().await {
        let bytes = m.payload().unwrap_or_default();
        let (topic, line) = if m.topic() == logins_by_locale::SINK {
            let line = codec.decode::<LoginCount>(bytes, &counted).await;
            (
                logins_by_locale::SINK,
                line.ok().map(|(_, c)| {
                    by_locale.insert(c.locale, c.count);
                    let mut top: Vec<(&String, &i64)> = by_locale.iter().collect();
                    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                    let top: Vec<String> = top
                        .iter()
                        .take(6)
                        .map(|(l, n)| format!("{l} {n}"))
                        .collect();
                    format!("{} (of {} locales)", top.join(", "), by_locale.len())
                }),
            )
        } else if m.topic() == user_login::SINK {
            let line = codec.decode::<ProcessedUserLogin>(bytes, &logins).await;
            (
                user_login::SINK,
                line.ok().map(|(_, p)| {
                    format!(
                        "user {} on {} {} from {} ({}), processed at {}",
                        &p.user_id[..8],
                        p.device_type,
                        p.app_version,
                        p.ip,
                        p.locale,
                        p.processed_timestamp
                    )
                }),
            )
        } else if m.topic() == iot_enriched::ALERTS {
            let line = codec.decode::<SensorAlert>(bytes, &alerts).await;
            (
                iot_enriched::ALERTS,
                line.ok().map(|(_, a)| {
                    format!(
                        "{} {} {:.2}: {} ({:?}, limit {:.2})",
                        a.device_id,
                        a.sensor_type.as_str(),
                        a.value,
                        a.rule,
                        a.severity,
                        a.threshold
                    )
                }),
            )
        } else {
            let line = codec.decode::<EnrichedReading>(bytes, &enriched).await;
            (
                iot_enriched::SINK,
                line.ok().map(|(_, r)| {
                    format!(
                        "{} {} {:.2} {} at site {}",
                        r.device_id,
                        r.sensor_type.as_str(),
                        r.value,
                        r.unit,
                        r.site.as_deref().unwrap_or("(none known then)")
                    )
                }),
            )
        };
        if let Some(line) = line {
            latest
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(topic, line);
        }
    }
}

fn status(
    out: &mut impl Write,
    started: Instant,
    stats: &[(String, Arc<Stats>)],
    sample: &Samples,
    memory: Option<&MemoryTables>,
) {
    for (name, s) in stats {
        let kinds: Vec<String> = s
            .dead_letters_by_kind()
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let produced = if name == iot_events::NAME {
            let out = s.outputs_by_topic();
            let to = |t: &str| out.get(t).copied().unwrap_or(0);
            format!(
                "alerts {}  final windows {}  late {}",
                to(iot_events::ALERTS),
                to(iot_events::WINDOWS),
                s.late.load(Ordering::Relaxed)
            )
        } else if name == iot_readings::NAME {
            format!("rows {}", s.window_rows.load(Ordering::Relaxed))
        } else if name == iot_enriched::NAME {
            let out = s.outputs_by_topic();
            let to = |t: &str| out.get(t).copied().unwrap_or(0);
            format!(
                "enriched {}  device alerts {}",
                to(iot_enriched::SINK),
                to(iot_enriched::ALERTS)
            )
        } else if name == iot_windows::NAME {
            format!(
                "window rows {}  late {}",
                s.window_rows.load(Ordering::Relaxed),
                s.late.load(Ordering::Relaxed)
            )
        } else {
            format!("out {}", s.records_out.load(Ordering::Relaxed))
        };
        let _ = writeln!(
            out,
            "[{:>4}s] {name}: in {}  {produced}  dlq {}{}  lag {}  commits {}",
            started.elapsed().as_secs(),
            s.records_in.load(Ordering::Relaxed),
            s.dead_letters.load(Ordering::Relaxed),
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            },
            s.total_lag(),
            s.commits.load(Ordering::Relaxed),
        );
    }
    for (topic, line) in sample.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(out, "        {topic}: {line}");
    }
    if let Some(m) = memory {
        for (table, columns, total, newest) in m.row_tables(1) {
            for r in newest {
                let cells: Vec<String> = columns
                    .iter()
                    .zip(&r.cells)
                    .map(|(c, v)| format!("{c}={v}"))
                    .collect();
                let rows = match m.keys_in(&table) {
                    Some(keys) => format!("{keys} rows, one per key ({total} upserts)"),
                    None => format!("{total} rows"),
                };
                let _ = writeln!(
                    out,
                    "        {table}: {rows}; newest (partition {}, offset {}): {}",
                    r.partition,
                    r.offset,
                    cells.join(" ")
                );
            }
        }
        let rows = m.latest(5);
        if let Some(first) = rows.first() {
            let keys: String = first.key.iter().map(|(k, _)| format!("{k:<12} ")).collect();
            let _ = writeln!(
                out,
                "        latest windows ({} in memory, {} final):\n          {keys}{:<17}  {:>6} {:>8} {:>8} {:>8}  final",
                m.len(),
                m.finals(),
                "window (UTC)",
                "count",
                "avg",
                "min",
                "max"
            );
        }
        for r in rows {
            let at = |ms: i64| {
                chrono::DateTime::from_timestamp_millis(ms)
                    .map(|t| t.format("%H:%M:%S").to_string())
                    .unwrap_or_default()
            };
            let value = |name: &str| {
                r.aggregates
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(f64::NAN, |(_, v)| v.as_f64())
            };
            let keys: String = r.key.iter().map(|(_, v)| format!("{v:<12} ")).collect();
            let _ = writeln!(
                out,
                "          {keys}{}–{}  {:>6} {:>8.2} {:>8.2} {:>8.2}  {}",
                at(r.window.start_ms),
                at(r.window.end_ms),
                value("count"),
                value("avg"),
                value("min"),
                value("max"),
                if r.is_final { "yes" } else { "no" }
            );
        }
    }
}

pub async fn run(
    opts: &Options,
    shutdown: impl Future<Output = ()>,
    out: &mut (impl Write + Send),
) -> anyhow::Result<Summary> {
    let mock = MockCluster::new(3)?;
    let kafka = KafkaConfig::new(&mock.bootstrap_servers());
    let settings = sluice_cli::Settings {
        window: opts.window,
    };
    let catalog = crate::catalog();
    // Groups of this run only: offsets a previous demo stored in the same
    // database belong to a mock cluster that is gone.
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let all: Vec<_> = catalog
        .select(&[], &settings)?
        .into_iter()
        .map(|t| {
            let group = format!("sluice-demo-{}-{}", &run_id[..8], t.description.name);
            t.in_group(&group)
        })
        .collect();
    let (databases, memory): (Databases, Option<Arc<MemoryTables>>) = match &opts.database_url {
        Some(url) => {
            let pool = sluice::db::connect(url).await?;
            sluice::db::migrate(&pool).await?;
            (
                Databases::new().with(DEFAULT_DATABASE, Postgres::new(pool)),
                None,
            )
        }
        None => {
            let m = InMemory::new();
            let tables = m.0.clone();
            (
                Databases::new().with(DEFAULT_DATABASE, Arc::new(m)),
                Some(tables),
            )
        }
    };
    for t in all.iter().flat_map(sluice::Topology::parts) {
        for topic in t.description.topics() {
            let _ = mock.create_topic(&topic, opts.partitions, 1);
        }
    }
    let reg = registry::spawn_preloaded(&sluice::service::schemas_of(&all)).await?;
    let config = RegistryConfig::new(&reg.url(), None)?;
    let codec = Arc::new(AvroCodec::new(&config)?);
    writeln!(
        out,
        "sluice demo: mock Kafka at {}, schema registry at {}, topologies: {}",
        kafka.bootstrap,
        reg.url(),
        catalog.names().join(", ")
    )?;
    writeln!(
        out,
        "to look at its topics from another terminal while it runs: export KAFKA_BOOTSTRAP_SERVERS={} SCHEMA_REGISTRY_URL={}",
        kafka.bootstrap,
        reg.url()
    )?;
    writeln!(
        out,
        "simulating {} logins/s, {:.0} % of them bad; Ctrl-C to stop",
        opts.rate,
        opts.bad_ratio * 100.0
    )?;

    match &opts.database_url {
        Some(url) => writeln!(
            out,
            "window aggregates and readings → PostgreSQL at {} (tables {}, {}); query them with \
             `sluice windows query` and `sluice readings query`",
            sluice::config::redact_url(url),
            iot_windows::TABLE,
            iot_readings::TABLE
        )?,
        None => writeln!(
            out,
            "DATABASE_URL is not set: window aggregates and readings are kept in memory and shown below \
             (set DATABASE_URL=postgres://… to write them to PostgreSQL)"
        )?,
    }
    let metrics = Arc::new(Metrics::new()?);
    let run_opts = RunOptions {
        instance_id: "demo".into(),
        databases: databases.clone(),
        meter: Some(metrics.meter()),
        ..RunOptions::default()
    };
    let queries = sluice::query::Queries::new(run_opts.stores.clone(), kafka.clone());
    let console = Console::new(Sources {
        kafka: kafka.clone(),
        codec: codec.clone(),
        databases,
        instance: run_opts.instance_id.clone(),
        metrics: metrics.clone(),
        links: Vec::new(),
        protocol: run_opts.group_protocol.to_string(),
        queries: queries.clone(),
    });
    let (stop_console, console_stopped) = tokio::sync::oneshot::channel::<()>();
    let (at, console_task) = serve_console(
        opts.console,
        (&console, &queries),
        metrics.clone(),
        console_stopped,
    )
    .await?;
    queries.set_address(at.to_string());
    writeln!(
        out,
        "the console: http://{at}/ (open it in a browser; /metrics beside it)"
    )?;
    writeln!(
        out,
        "the live counts by locale, from another terminal: sluice state get {} en-US --worker http://{at}",
        logins_by_locale::STORE
    )?;
    let watched = all.clone();
    let workers = Workers::spawn(all, &kafka, codec.clone(), &run_opts);
    metrics.observe_topologies(workers.stats.clone());
    console.watch(&watched, &workers.stats);
    let (stop_sim, sim_stopped) = watch::channel(false);
    let sim_opts = logins::Options {
        rate: opts.rate,
        count: None,
        bad_ratio: opts.bad_ratio,
        seed: 42,
        observed: None,
    };
    let (sim_kafka, sim_codec, mut stopped) = (kafka.clone(), codec.clone(), sim_stopped.clone());
    let simulator = tokio::spawn(async move {
        logins::run(&sim_kafka, sim_codec, &sim_opts, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
    });
    let iot_opts = iot::Options {
        interval: Duration::from_millis(250),
        out_of_order: 0.05,
        late: 0.01,
        move_probability: 0.05,
        ..iot::Options::default()
    };
    let (iot_kafka, iot_codec, mut stopped) = (kafka.clone(), codec.clone(), sim_stopped);
    let sensors = tokio::spawn(async move {
        iot::run(&iot_kafka, iot_codec, &iot_opts, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
    });
    let sample = Arc::new(Samples::default());
    let tap_task = tokio::spawn(tap(kafka.bootstrap.clone(), codec.clone(), sample.clone()));

    let started = Instant::now();
    let mut every = tokio::time::interval(opts.status_every);
    every.tick().await;
    let until = async {
        match opts.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(shutdown, until);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = &mut until => break,
            _ = every.tick() => status(out, started, &workers.stats, &sample, memory.as_deref()),
        }
    }

    let _ = stop_sim.send(true);
    let produced = simulator.await??;
    let sensor_report = sensors.await??;
    let readings = sensor_report.total;
    // Let the workers catch up with what the simulators produced, briefly.
    let drain_until = Instant::now() + Duration::from_secs(10);
    let stats = workers.stats.clone();
    let counting = format!("{}.{}", logins_by_locale::NAME, logins_by_locale::REKEY);
    let counts = |name: &str| {
        stats
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| Counts::of(s))
            .unwrap_or_default()
    };
    while (counts(user_login::NAME).records_in < produced.total()
        || counts(iot_events::NAME).records_in < readings
        || counts(iot_windows::NAME).records_in < readings
        || counts(iot_readings::NAME).records_in < readings
        || counts(iot_enriched::NAME).records_in < readings
        || counts(logins_by_locale::NAME).records_in < produced.total()
        || counts(&counting).records_in < counts(logins_by_locale::NAME).records_out)
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let asked = ask_a_count(&format!("http://{at}")).await;
    // Outputs, dead letters and late records count once committed, which
    // stopping does for what is in flight.
    workers.stop(Duration::from_secs(30)).await?;
    status(out, started, &stats, &sample, memory.as_deref());
    let summary = Summary {
        logins: produced,
        readings,
        user_login: counts(user_login::NAME),
        iot_events: counts(iot_events::NAME),
        iot_windows: counts(iot_windows::NAME),
        iot_readings: counts(iot_readings::NAME),
        iot_enriched: counts(iot_enriched::NAME),
        logins_by_locale: counts(&counting),
        late_readings: sensor_report.late,
    };
    tap_task.abort();
    // Its consumer must be closed before the mock cluster goes away.
    let _ = tap_task.await;
    let _ = stop_console.send(());
    let _ = console_task.await;
    reg.stop().await?;
    let u = &summary.user_login;
    writeln!(
        out,
        "done: logins produced {} ({} valid, {} invalid, {} undecodable) → processed {}, output {}, dead-lettered {}",
        produced.total(),
        produced.valid,
        produced.invalid,
        produced.undecodable,
        u.records_in,
        u.records_out,
        u.dead_letters
    )?;
    let (rekeyed, counted) = (counts(logins_by_locale::NAME), &summary.logins_by_locale);
    let latest = sample
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(logins_by_locale::SINK)
        .cloned();
    writeln!(
        out,
        "      valid logins re-keyed by locale {} → counted {} ({} {}): {}",
        rekeyed.records_out,
        counted.records_in,
        logins_by_locale::SINK,
        counted.records_out,
        latest.as_deref().unwrap_or("(no count read yet)")
    )?;
    writeln!(out, "      {asked}")?;
    let e = &summary.iot_events;
    writeln!(
        out,
        "      sensor readings produced {readings} → iot-events processed {}, alerts {}, final windows {} (late {}), dead-lettered {}",
        e.records_in,
        e.to(iot_events::ALERTS),
        e.to(iot_events::WINDOWS),
        e.late,
        e.dead_letters
    )?;
    let w = &summary.iot_windows;
    writeln!(
        out,
        "      windows: readings processed {}, late {} ({} stamped minutes back, the rest out of order past the grace), window rows written {}",
        w.records_in, w.late, sensor_report.late, w.window_rows
    )?;
    let r = &summary.iot_readings;
    writeln!(
        out,
        "      readings stored: processed {}, rows written {} (table {}), dead-lettered {}",
        r.records_in,
        r.window_rows,
        iot_readings::TABLE,
        r.dead_letters
    )?;
    let n = &summary.iot_enriched;
    writeln!(
        out,
        "      readings enriched with their device's site then: processed {}, written {} ({}), alerts by the device's own limits {} ({}), dead-lettered {}",
        n.records_in,
        n.to(iot_enriched::SINK),
        iot_enriched::SINK,
        n.to(iot_enriched::ALERTS),
        iot_enriched::ALERTS,
        n.dead_letters
    )?;
    drop(mock);
    Ok(summary)
}

/// What `sluice state get` answers for the first locale the store holds,
/// asked of the demo's own worker as a user would.
async fn ask_a_count(worker: &str) -> String {
    let store = logins_by_locale::STORE;
    let asked = async {
        let url: url::Url = worker.parse()?;
        let (page, _) =
            sluice_cli::state::ask(&url, &["stores", store], &[("limit", "1".into())]).await?;
        let Some(locale) = page["entries"][0]["key"].as_str().map(str::to_string) else {
            anyhow::bail!("the store holds no locale yet");
        };
        let (count, _) = sluice_cli::state::ask(&url, &["stores", store, &locale], &[]).await?;
        anyhow::Ok(format!(
            "$ sluice state get {store} {locale} --worker {worker}\n      {count}"
        ))
    };
    asked
        .await
        .unwrap_or_else(|e| format!("sluice state get {store}: {e:#}"))
}

/// Serves the console and /metrics until `stop`: at `wanted`, or at
/// 127.0.0.1:8080, or at a free port of loopback when 8080 is taken.
async fn serve_console(
    wanted: Option<SocketAddr>,
    (console, queries): (&Arc<Console>, &Arc<sluice::query::Queries>),
    metrics: Arc<Metrics>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<(
    SocketAddr,
    tokio::task::JoinHandle<Result<(), MetricsError>>,
)> {
    let listener = match wanted {
        Some(addr) => tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot serve the console on {addr}: {e}; choose another --console-addr"
            )
        })?,
        None => match tokio::net::TcpListener::bind(("127.0.0.1", 8080)).await {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?,
        },
    };
    let at = listener.local_addr()?;
    let task = tokio::spawn(sluice::metrics::serve_with(
        listener,
        metrics,
        console.router().merge(queries.router()),
        async move {
            let _ = stop.await;
        },
    ));
    Ok((at, task))
}
