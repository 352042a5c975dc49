//! Apache Kafka for the integration tests: KRaft nodes started by
//! `dev/kafka/start` (jars from Maven Central), killed and restarted one by
//! one for the fault tests, and stopped when the test ends — by `Drop`, or
//! by the script's watchdog if the test process dies first.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sluice::kafka::{KafkaConfig, TopicSpec, create_topics};

/// Under the consumer group protocol (KIP-848) the session timeout is the
/// broker's: a killed member's partitions wait that long for a new owner
/// (45 s by default). Crash tests with many kills shorten it.
pub const FAST_CONSUMER_SESSIONS: [&str; 4] = [
    "group.consumer.min.session.timeout.ms=1000",
    "group.consumer.session.timeout.ms=3000",
    "group.consumer.min.heartbeat.interval.ms=500",
    "group.consumer.heartbeat.interval.ms=500",
];

pub struct Kafka {
    pub bootstrap: String,
    pub nodes: usize,
    /// With `Kafka::secure`: the SASL_SSL listener.
    pub secure: Option<Secure>,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

/// A SASL_SSL listener (SCRAM-SHA-512) whose certificate `ca` signed; the
/// PLAINTEXT one (`Kafka::bootstrap`) stays a super user's, for set-up.
#[derive(Debug, Clone)]
pub struct Secure {
    pub bootstrap: String,
    pub ca: PathBuf,
    /// A CA that signed nothing.
    pub other_ca: PathBuf,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dev/kafka")
        .join(name)
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed (.ci/run installs Java and Maven):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Kafka {
    /// One node: replication factor 1.
    pub fn start() -> Kafka {
        Kafka::cluster(1)
    }

    /// `nodes` combined broker+controller nodes (1 or 3; with 3, topics are
    /// created with replication factor 3 and min.insync.replicas 2).
    pub fn cluster(nodes: usize) -> Kafka {
        Kafka::cluster_with(nodes, &[])
    }

    /// As `cluster`, with extra broker properties.
    pub fn cluster_with(nodes: usize, props: &[&str]) -> Kafka {
        Kafka::launch(nodes, props, None)
    }

    /// One node whose broker listens on `port`.
    pub fn start_on(port: u16) -> Kafka {
        Kafka::launch(1, &[], Some(port))
    }

    /// One node with a SASL_SSL listener, these SCRAM users (name,
    /// password) and ACLs enforced there: users have no rights until
    /// `acl` grants them.
    pub fn secure(users: &[(&str, &str)]) -> Kafka {
        let users: Vec<String> = users.iter().map(|(u, p)| format!("{u}={p}")).collect();
        Kafka::launch_with(1, &[], None, &users, false)
    }

    /// Kafka's own ACL tool over the PLAINTEXT listener, e.g.
    /// `["--add", "--allow-principal", "User:x", "--operation", "All", "--topic", "*"]`.
    pub fn acl(&self, args: &[&str]) {
        run(
            Command::new("java")
                .args([
                    "-Xmx128m",
                    "-Dlog4j2.configurationFile=log4j2.properties",
                    "-cp",
                    "libs/*",
                ])
                .arg("org.apache.kafka.tools.AclCommand")
                .args(["--bootstrap-server", &self.bootstrap, "--force"])
                .args(args)
                .current_dir(script("")),
            "kafka-acls",
        );
    }

    fn launch(nodes: usize, props: &[&str], port: Option<u16>) -> Kafka {
        Kafka::launch_with(nodes, props, port, &[], false)
    }

    /// One node running Prometheus's JMX exporter agent (`exporters`).
    pub fn with_jmx_exporter() -> Kafka {
        Kafka::launch_with(1, &[], None, &[], true)
    }

    /// The JMX exporters' addresses, one per node (with `with_jmx_exporter`).
    pub fn exporters(&self) -> Vec<String> {
        let env = std::fs::read_to_string(self.dir.join("jmx.env")).unwrap_or_default();
        env.trim()
            .strip_prefix("JMX_EXPORTERS=")
            .map(|l| l.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    }

    fn launch_with(
        nodes: usize,
        props: &[&str],
        port: Option<u16>,
        secure: &[String],
        jmx: bool,
    ) -> Kafka {
        // Free ports are picked before the brokers bind them, so tests
        // starting clusters at once can pick the same one: a second try
        // picks others.
        let mut last = String::new();
        for _ in 0..2 {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("kafka");
            let mut cmd = Command::new(script("start"));
            cmd.args(["--nodes", &nodes.to_string()])
                .arg("--dir")
                .arg(&dir)
                .args(["--owner", &std::process::id().to_string()])
                .env("KAFKA_BROKER_PROPS", props.join("\n"))
                .stdin(Stdio::null());
            if let Some(p) = port {
                cmd.args(["--port", &p.to_string()]);
            }
            if jmx {
                cmd.arg("--jmx-exporter");
            }
            if !secure.is_empty() {
                cmd.arg("--secure");
                for u in secure {
                    cmd.args(["--scram-user", u]);
                }
            }
            let out = cmd.output().expect("dev/kafka/start");
            if out.status.success() {
                return Kafka {
                    bootstrap: String::from_utf8_lossy(&out.stdout).trim().to_string(),
                    nodes,
                    secure: (!secure.is_empty()).then(|| secure_env(&dir)),
                    dir,
                    _tmp: tmp,
                };
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            eprintln!("dev/kafka/start failed; trying once more:\n{last}");
        }
        panic!("dev/kafka/start failed twice (.ci/run installs Java and Maven):\n{last}");
    }

    pub fn config(&self) -> KafkaConfig {
        KafkaConfig::new(&self.bootstrap)
    }

    /// Node `id`'s own address (ids count from 1).
    pub fn node_addr(&self, id: usize) -> String {
        self.bootstrap.split(',').nth(id - 1).unwrap().to_string()
    }

    /// The node id listening on `addr`.
    pub fn node_at(&self, addr: &str) -> usize {
        self.bootstrap
            .split(',')
            .position(|a| a == addr)
            .unwrap_or_else(|| panic!("{addr} is none of {}", self.bootstrap))
            + 1
    }

    /// SIGKILL: no clean shutdown, no leadership handed over.
    pub fn kill(&self, id: usize) {
        self.stop_with(id, true);
    }

    /// SIGTERM and wait: a controlled shutdown.
    pub fn stop(&self, id: usize) {
        self.stop_with(id, false);
    }

    fn stop_with(&self, id: usize, kill: bool) {
        let mut cmd = Command::new(script("stop"));
        cmd.arg(&self.dir).args(["--node", &id.to_string()]);
        if kill {
            cmd.arg("--kill");
        }
        run(&mut cmd, "dev/kafka/stop");
    }

    /// Starts a stopped node again and waits until it answers metadata.
    pub fn restart(&self, id: usize) {
        run(
            Command::new(script("start"))
                .arg("--dir")
                .arg(&self.dir)
                .args(["--node", &id.to_string()]),
            "dev/kafka/start --node",
        );
    }

    /// Starts every node again at once: a quorum of controllers must be
    /// up before any node answers.
    pub fn restart_all(&self) {
        let children: Vec<_> = (1..=self.nodes)
            .map(|id| {
                Command::new(script("start"))
                    .arg("--dir")
                    .arg(&self.dir)
                    .args(["--node", &id.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (i, c) in children.into_iter().enumerate() {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "restarting node {}: {}",
                i + 1,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Node `id`'s log so far.
    pub fn log(&self, id: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("node-{id}/server.log"))).unwrap_or_default()
    }

    /// Creates topics as (name, partitions), replicated over every node.
    pub async fn create_topics(&self, topics: &[(&str, i32)]) {
        let replication = self.nodes as i32;
        let specs: Vec<TopicSpec> = topics
            .iter()
            .map(|(name, partitions)| TopicSpec {
                name: name.to_string(),
                partitions: *partitions,
                replication,
                min_insync_replicas: None,
                compact: false,
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match create_topics(&self.config(), &specs).await {
                Ok(_) => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot create topics: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        // Created is not yet led everywhere: wait until every partition has a leader.
        let names: Vec<&str> = topics.iter().map(|(n, _)| *n).collect();
        wait_for_leaders(&self.bootstrap, &names).await;
    }
}

/// What `dev/kafka/start --secure` wrote in DIR/secure.env.
fn secure_env(dir: &Path) -> Secure {
    let text = std::fs::read_to_string(dir.join("secure.env")).expect("secure.env");
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} in secure.env"))
            .to_string()
    };
    Secure {
        bootstrap: get("SECURE_BOOTSTRAP"),
        ca: get("CA").into(),
        other_ca: get("OTHER_CA").into(),
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = Command::new(script("stop"))
            .arg(&self.dir)
            .arg("--kill")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Waits until every partition of `topics` has a leader.
pub async fn wait_for_leaders(bootstrap: &str, topics: &[&str]) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for topic in topics {
        loop {
            let led = sluice::kafka::blocking(|| {
                consumer.fetch_metadata(Some(topic), Duration::from_secs(5))
            })
            .ok()
            .is_some_and(|m| {
                m.topics().iter().all(|t| {
                    t.error().is_none()
                        && !t.partitions().is_empty()
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                })
            });
            if led {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{topic}: partitions without a leader"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
