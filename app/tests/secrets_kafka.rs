//! Secrets are never printed: the worker, the simulators and the registry
//! run at debug log level with every secret set — the SASL password, an
//! SSL key password, the registry's password and the database's — through
//! flags, a properties file and the environment, each of them also made to
//! fail; none of the secret strings appears in any stdout or stderr, on
//! `/metrics` or `/readyz`, or in any dead-letter header.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    Proc, free_port, kafka::Kafka, postgres_tls::TlsPostgres, read_committed_all, sluice,
};

const SASL: &str = "Sasl-S3cret-4b7e";
const KEY: &str = "Key-S3cret-91c2";
const REGISTRY: &str = "Reg-S3cret-5d0a";
const DATABASE: &str = "Db-S3cret-e3f8";
const SECRETS: [&str; 4] = [SASL, KEY, REGISTRY, DATABASE];

/// A sluice process whose stdout and stderr go to files.
struct Run {
    name: String,
    proc: Proc,
    out: PathBuf,
    metrics: Option<String>,
}

impl Run {
    fn text(&self) -> String {
        let read =
            |ext: &str| std::fs::read_to_string(self.out.with_extension(ext)).unwrap_or_default();
        format!("{}{}", read("out"), read("err"))
    }

    /// /metrics and /readyz, as they are now.
    async fn endpoints(&self) -> String {
        let Some(base) = &self.metrics else {
            return String::new();
        };
        let mut text = String::new();
        for path in ["metrics", "readyz"] {
            if let Ok(r) = reqwest::get(format!("{base}/{path}")).await {
                text.push_str(&r.text().await.unwrap_or_default());
            }
        }
        text
    }

    async fn wait_for(&self, what: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = self.text();
            if text.contains(what) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what:?} within {within:?}:\n{text}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn stop(mut self) -> String {
        let pid = self.proc.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.proc.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.text()
    }
}

fn spawn(dir: &Path, name: &str, args: &[&str], envs: &[(&str, &str)], metrics: bool) -> Run {
    let out = dir.join(name);
    let mut cmd = sluice();
    cmd.args(args)
        .args(["--log-level", "debug"])
        .envs(envs.iter().copied())
        .env("NO_COLOR", "1")
        .stdout(std::fs::File::create(out.with_extension("out")).unwrap())
        .stderr(std::fs::File::create(out.with_extension("err")).unwrap());
    let mut base = None;
    if metrics {
        let port = free_port();
        cmd.args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
        base = Some(format!("http://127.0.0.1:{port}"));
    }
    Run {
        name: name.into(),
        proc: Proc(cmd.stdin(Stdio::null()).spawn().unwrap()),
        out,
        metrics: base,
    }
}

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows the secret {s:?}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_is_printed_served_or_written_to_a_dead_letter() {
    let kafka = Kafka::secure(&[("sluice", SASL)]);
    kafka.acl(&[
        "--add",
        "--allow-principal",
        "User:sluice",
        "--operation",
        "All",
        "--topic",
        "*",
        "--group",
        "*",
        "--transactional-id",
        "*",
    ]);
    let secure = kafka.secure.clone().unwrap();
    let pg = TlsPostgres::start(DATABASE);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut seen: Vec<(String, String)> = Vec::new();

    let created = sluice()
        .args([
            "topics",
            "create",
            "--partitions",
            "2",
            "--bootstrap-servers",
            &kafka.bootstrap,
        ])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );

    // The registry, its password from the environment; a wrong one refused.
    let reg_port = free_port();
    let listen = format!("127.0.0.1:{reg_port}");
    let auth = format!("admin:{REGISTRY}");
    let registry = spawn(
        dir,
        "registry",
        &["registry", "serve", "--listen", &listen],
        &[("SLUICE_REGISTRY_BASIC_AUTH", &auth)],
        false,
    );
    registry
        .wait_for("schema registry listening", Duration::from_secs(30))
        .await;
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let denied = http
        .get(format!("{base}/subjects"))
        .basic_auth("admin", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    seen.push(("a 401 answer".into(), denied.text().await.unwrap()));
    let registry_in_url = format!("http://admin:{REGISTRY}@{listen}");

    // Kafka settings three ways: a file, the environment, flags.
    let file = dir.join("client.properties");
    std::fs::write(
        &file,
        format!(
            "bootstrap.servers={}\nsecurity.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"sluice\" password=\"{SASL}\";\n\
             ssl.ca.location={}\nssl.key.password={KEY}\n",
            secure.bootstrap,
            secure.ca.display()
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    let ca = secure.ca.display().to_string();
    let env_kafka: Vec<(&str, &str)> = vec![
        ("KAFKA_BOOTSTRAP_SERVERS", &secure.bootstrap),
        ("SLUICE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        ("SLUICE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
        ("SLUICE_KAFKA_SASL_USERNAME", "sluice"),
        ("SLUICE_KAFKA_SASL_PASSWORD", SASL),
        ("SLUICE_KAFKA_SSL_KEY_PASSWORD", KEY),
        ("SLUICE_KAFKA_SSL_CA_LOCATION", &ca),
    ];
    let sasl_flag = format!("sasl.password={SASL}");
    let key_flag = format!("ssl.key.password={KEY}");
    let ca_flag = format!("ssl.ca.location={ca}");
    let flags: Vec<&str> = vec![
        "--bootstrap-servers",
        &secure.bootstrap,
        "--kafka-config",
        "security.protocol=SASL_SSL",
        "--kafka-config",
        "sasl.mechanism=SCRAM-SHA-512",
        "--kafka-config",
        "sasl.username=sluice",
        "--kafka-config",
        &sasl_flag,
        "--kafka-config",
        &key_flag,
        "--kafka-config",
        &ca_flag,
    ];

    // The simulators: logins from the file (bad records among them make
    // dead letters), readings with flags.
    let logins = spawn(
        dir,
        "simulate-logins",
        &[
            "simulate",
            "logins",
            "--count",
            "400",
            "--rate",
            "0",
            "--kafka-config-file",
            &file,
            "--registry-url",
            &registry_in_url,
        ],
        &[],
        false,
    );
    let mut iot_args = vec![
        "simulate",
        "iot",
        "--devices",
        "5",
        "--interval",
        "200ms",
        "--registry-url",
        &registry_in_url,
    ];
    iot_args.extend(&flags);
    let iot = spawn(dir, "simulate-iot", &iot_args, &[], true);

    // The workers: user-login from the environment, the registry's
    // credentials apart; iot-windows with flags and the database.
    let user_info = format!("admin:{REGISTRY}");
    let mut envs = env_kafka.clone();
    envs.push(("SCHEMA_REGISTRY_URL", &base));
    envs.push(("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", &user_info));
    let login_worker = spawn(
        dir,
        "worker-user-login",
        &["run", "--topology", "user-login"],
        &envs,
        true,
    );
    let db_url = pg.url("127.0.0.1", DATABASE, "sslmode=require");
    let mut w_args = vec![
        "run",
        "--topology",
        "iot-windows",
        "--registry-url",
        &registry_in_url,
        "--database-url",
        &db_url,
    ];
    w_args.extend(&flags);
    let windows_worker = spawn(dir, "worker-iot-windows", &w_args, &[], true);

    let produced = logins
        .wait_for("produced 400 logins", Duration::from_secs(90))
        .await;
    seen.push(("simulate logins".into(), produced));
    login_worker
        .wait_for("partitions assigned", Duration::from_secs(90))
        .await;
    windows_worker
        .wait_for("partitions assigned", Duration::from_secs(90))
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    for r in [&login_worker, &windows_worker, &iot] {
        seen.push((format!("{} endpoints", r.name), r.endpoints().await));
    }

    // Each secret wrong once.
    let wrong_sasl: Vec<(&str, &str)> = env_kafka
        .iter()
        .map(|(k, v)| {
            if *k == "SLUICE_KAFKA_SASL_PASSWORD" {
                (*k, "wrong-sasl")
            } else {
                (*k, *v)
            }
        })
        .chain([("SCHEMA_REGISTRY_URL", registry_in_url.as_str())])
        .collect();
    let refused = spawn(
        dir,
        "worker-wrong-sasl",
        &["run", "--topology", "user-login", "--group-id", "x"],
        &wrong_sasl,
        true,
    );
    refused
        .wait_for("SASL credentials", Duration::from_secs(60))
        .await;
    seen.push(("refused worker endpoints".into(), refused.endpoints().await));
    let wrong_registry = format!("http://admin:wrong@{listen}");
    let mut a = vec![
        "run",
        "--topology",
        "user-login",
        "--registry-url",
        &wrong_registry,
    ];
    a.extend(&flags);
    let bad_registry = spawn(dir, "worker-wrong-registry", &a, &[], true);
    bad_registry
        .wait_for("refused the credentials", Duration::from_secs(60))
        .await;
    let wrong_db = pg.url("127.0.0.1", "wrong-db", "sslmode=require");
    let mut a = vec![
        "run",
        "--topology",
        "iot-windows",
        "--registry-url",
        &registry_in_url,
    ];
    a.extend(&flags);
    let bad_db = spawn(
        dir,
        "worker-wrong-db",
        &a,
        &[("DATABASE_URL", &wrong_db)],
        true,
    );
    bad_db
        .wait_for("password authentication failed", Duration::from_secs(60))
        .await;
    let bad_flag = spawn(
        dir,
        "bad-registry-auth-flag",
        &[
            "schemas",
            "register",
            "--registry-url",
            &base,
            "--registry-auth",
            REGISTRY,
        ],
        &[],
        false,
    );
    let mut a = vec![
        "simulate",
        "logins",
        "--count",
        "5",
        "--registry-url",
        &registry_in_url,
    ];
    a.extend(&flags);
    let at = a.iter().position(|s| *s == sasl_flag).unwrap();
    a[at] = "sasl.password=wrong-sasl";
    let bad_sim = spawn(dir, "simulate-wrong-sasl", &a, &[], false);
    tokio::time::sleep(Duration::from_secs(8)).await;

    for r in [
        refused,
        bad_registry,
        bad_db,
        bad_flag,
        bad_sim,
        iot,
        login_worker,
        windows_worker,
        logins,
        registry,
    ] {
        let name = r.name.clone();
        seen.push((name, r.stop()));
    }
    for topic in [
        "user-login.dlq",
        "iot_sensor_data.dlq",
        "iot_sensor_data.late",
    ] {
        let letters = read_committed_all(&kafka.bootstrap, topic).await;
        if topic == "user-login.dlq" {
            assert!(
                !letters.is_empty(),
                "the simulated bad logins made dead letters"
            );
        }
        let headers: Vec<String> = letters.iter().map(|r| format!("{:?}", r.headers)).collect();
        seen.push((format!("{topic} headers"), headers.join("\n")));
    }
    for (what, text) in &seen {
        assert_clean(what, text);
    }
    // The failures were driven, not skipped: each said what went wrong.
    let all: String = seen.iter().map(|(_, t)| t.as_str()).collect();
    for said in [
        "SASL credentials",
        "refused the credentials",
        "password authentication failed",
        "sluice_records_in_total",
    ] {
        assert!(all.contains(said), "nothing said {said:?}");
    }
}
