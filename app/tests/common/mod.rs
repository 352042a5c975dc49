//! Helpers shared by the integration tests: throw-away PostgreSQL databases,
//! registries on ephemeral ports, a small HTTP client and the sluice binary.
#![allow(dead_code)]

pub mod browser;
pub mod kafka;
pub mod logins;
pub mod member;
pub mod postgres_tls;
pub mod raw;
pub mod windows;

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use sluice::registry::{self, MemoryStore, ServeOptions, Store, pg::PgStore};
use sqlx::{Connection, PgConnection};

/// Server holding the test databases; `TEST_DATABASE_URL` overrides it.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database of its own for one test, dropped by `drop_db`.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

static DB_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestDb {
    pub async fn create() -> TestDb {
        let admin = admin_url();
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("PostgreSQL must run for these tests (see README: Tests)");
        // Databases left by killed test runs: their process is gone.
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname LIKE 'sluice_test_%'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for name in stale {
            let pid = name.split('_').nth(2).unwrap_or("");
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
        let name = format!(
            "sluice_test_{}_{}",
            std::process::id(),
            DB_COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        TestDb {
            name,
            url: url.to_string(),
        }
    }

    pub async fn drop_db(self) {
        let mut conn = PgConnection::connect(&admin_url()).await.unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
}

pub async fn pg_store(db: &TestDb) -> Arc<dyn Store> {
    let pool = sluice::db::connect(&db.url).await.unwrap();
    sluice::db::migrate(&pool).await.unwrap();
    Arc::new(PgStore::new(pool))
}

pub async fn memory_registry(opts: ServeOptions) -> registry::Running {
    spawn_registry(Arc::new(MemoryStore::new()), opts).await
}

pub async fn spawn_registry(store: Arc<dyn Store>, opts: ServeOptions) -> registry::Running {
    registry::spawn("127.0.0.1:0".parse().unwrap(), store, opts)
        .await
        .unwrap()
}

/// A JSON-over-HTTP client that returns (status, body) and never fails on 4xx.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

pub const CT: &str = "application/vnd.schemaregistry.v1+json";

impl Api {
    pub fn new(base: impl Into<String>) -> Api {
        Api {
            base: base.into(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("registry reachable");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("status {status}: body is not JSON: {text}"));
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("Content-Type", CT)
                .body(body.to_string()),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(
            self.http
                .put(format!("{}{path}", self.base))
                .header("Content-Type", CT)
                .body(body.to_string()),
        )
        .await
    }

    /// Registers a schema text, returning (status, body).
    pub async fn register(&self, subject: &str, schema: &str) -> (u16, Value) {
        self.post(
            &format!("/subjects/{subject}/versions"),
            &serde_json::json!({ "schema": schema }),
        )
        .await
    }
}

/// Asserts a Confluent error body with this HTTP status and error code.
#[track_caller]
pub fn assert_error((status, body): &(u16, Value), http: u16, code: u64) {
    assert_eq!(*status, http, "{body}");
    assert_eq!(body["error_code"].as_u64(), Some(code), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// A record schema `t.R` with the given fields JSON.
pub fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"R","namespace":"t","fields":[{fields}]}}"#)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `sluice` binary as a child process, killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real Prometheus scraping `target` as `job` every second; killed
/// when dropped.
pub struct Prometheus {
    /// Its HTTP API, `http://127.0.0.1:PORT`.
    pub url: String,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

pub fn prometheus(job: &str, target: &str) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .unwrap();
    let port = free_port();
    let proc = Proc(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus not found: `apt-get install prometheus` (.ci/run installs it)"),
    );
    Prometheus {
        url: format!("http://127.0.0.1:{port}"),
        _proc: proc,
        _dir: dir,
    }
}

/// Runs a command to its end: (succeeded, stdout then stderr).
pub fn output_text(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub fn sluice() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env_remove("DATABASE_URL")
        .env_remove("SCHEMA_REGISTRY_URL")
        .env("SLUICE_LOG_LEVEL", "warn")
        // Several workers run at once in the tests: any free port each.
        .env("SLUICE_METRICS_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null());
    cmd
}

/// Starts `sluice registry serve` and waits until it answers.
pub async fn registry_process(args: &[&str]) -> (Proc, Api) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = sluice()
        .args(["registry", "serve", "--listen", &addr.to_string()])
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let api = Api::new(format!("http://{addr}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = api.http.get(format!("{}/subjects", api.base)).send().await
            && resp.status().is_success()
        {
            return (proc, api);
        }
        assert!(
            Instant::now() < deadline,
            "registry process did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A record read back by `read_topic`.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// The value was null (a tombstone), not empty.
    pub null_value: bool,
    pub headers: std::collections::BTreeMap<String, String>,
}

impl Read {
    fn of(m: &rdkafka::message::BorrowedMessage<'_>) -> Read {
        use rdkafka::{Message, message::Headers};
        let mut headers = std::collections::BTreeMap::new();
        if let Some(h) = m.headers() {
            for hd in h.iter() {
                headers.insert(
                    hd.key.to_string(),
                    String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        Read {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().unwrap_or_default().to_vec(),
            null_value: m.payload().is_none(),
            headers,
        }
    }
}

/// Reads `topic` from the start (read_committed) until `want` records or
/// `timeout`, then a second more so that any extra records show up too.
pub async fn read_topic(bootstrap: &str, topic: &str, want: usize, timeout: Duration) -> Vec<Read> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let mut deadline = tokio::time::Instant::now() + timeout;
    let mut lingering = false;
    loop {
        if out.len() >= want && !lingering {
            lingering = true;
            deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        }
        let m = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => break,
        };
        out.push(Read::of(&m));
    }
    out
}

/// Reads every partition of `topic` to its end as a plain `read_committed`
/// consumer (Kafka's EOS system tests' witness): assigned, not subscribed,
/// so no group is joined, and done once every partition reported its end
/// (the last stable offset: nothing of an open or aborted transaction).
pub async fn read_committed_all(bootstrap: &str, topic: &str) -> Vec<Read> {
    use rdkafka::{
        Message, Offset, TopicPartitionList,
        consumer::{Consumer, StreamConsumer},
        error::KafkaError,
    };
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("witness-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let meta =
        sluice::kafka::blocking(|| consumer.fetch_metadata(Some(topic), Duration::from_secs(10)))
            .unwrap();
    let partitions: Vec<i32> = meta.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    assert!(!partitions.is_empty(), "{topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut at_end = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while at_end.len() < partitions.len() {
        let m = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                continue;
            }
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => panic!(
                "reading {topic}: partitions {at_end:?} of {partitions:?} reached their end in 120 s"
            ),
        };
        at_end.remove(&m.partition());
        out.push(Read::of(&m));
    }
    out
}

/// The partition the Java client picks for `key` among `partitions`.
pub fn java_partition(key: &[u8], partitions: i32) -> i32 {
    sluice::kafka::partitioner::partition_for(key, partitions)
}

/// The shipped topologies' schemas, one per topic.
pub fn schemas() -> Vec<sluice::schemas::SchemaFile> {
    sluice::schemas::files(&sluice_app::topologies::schemas())
}

/// The schema of `topic`'s values, as the shipped topologies declare it.
pub fn schema_text(topic: &str) -> String {
    sluice_app::topologies::schema_for(topic).unwrap_or_else(|| panic!("no schema for {topic}"))
}

/// The same, parsed.
pub fn schema(topic: &str) -> apache_avro::Schema {
    apache_avro::Schema::parse_str(&schema_text(topic)).unwrap()
}

/// PostgreSQL as the database topologies with tables run with.
pub fn postgres(pool: sqlx::PgPool) -> sluice::sink::Databases {
    sluice::sink::Databases::new().with(
        sluice::sink::DEFAULT_DATABASE,
        sluice::sink::postgres::Postgres::new(pool),
    )
}
