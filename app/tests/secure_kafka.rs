//! sluice on a Kafka that asks for credentials and a certificate: a
//! SASL_SSL listener (SCRAM-SHA-512, a CA made for the test) with ACLs. The
//! user-login topology runs exactly-once through it with the settings given
//! as flags, as a properties file and as environment variables; and each
//! refusal (wrong password, unknown CA, plaintext on the TLS port, an ACL
//! missing for the topic, the group or the transactional id) is one log
//! line and a reason on /readyz, with the worker up and committing nothing.

mod common;

use std::time::{Duration, Instant};

use common::{
    kafka::Kafka,
    logins::{Logins, PARTITIONS, SOURCE, Worker, committed_offsets},
};

const PASSWORD: &str = "s3cret-sasl-Pa55";
const LIMITED_PASSWORD: &str = "l1mited-Pa55";

fn grant(kafka: &Kafka, user: &str, resource: &[&str]) {
    let principal = format!("User:{user}");
    let mut args = vec![
        "--add",
        "--allow-principal",
        &principal,
        "--operation",
        "All",
    ];
    args.extend_from_slice(resource);
    kafka.acl(&args);
}

/// Flags for a SASL_SSL client of `kafka` as `user`.
fn flags(kafka: &Kafka, user: &str, password: &str) -> Vec<String> {
    let s = kafka.secure.as_ref().unwrap();
    [
        "security.protocol=SASL_SSL".to_string(),
        "sasl.mechanism=SCRAM-SHA-512".into(),
        format!("sasl.username={user}"),
        format!("sasl.password={password}"),
        format!("ssl.ca.location={}", s.ca.display()),
    ]
    .into_iter()
    .flat_map(|p| ["--kafka-config".to_string(), p])
    .chain(["--bootstrap-servers".into(), s.bootstrap.clone()])
    .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn user_login_runs_exactly_once_over_sasl_ssl_from_flags_file_and_environment() {
    let kafka = Kafka::secure(&[("sluice", PASSWORD)]);
    grant(
        &kafka,
        "sluice",
        &[
            "--topic",
            "user-login",
            "--topic",
            "processed-user-login",
            "--group",
            "sluice-",
            "--transactional-id",
            "sluice-",
            "--resource-pattern-type",
            "prefixed",
        ],
    );
    let secure = kafka.secure.clone().unwrap();
    let logins = Logins::new(kafka, "classic").await;
    let load = logins.load(7, 400);

    // 1. Flags.
    let mut w = logins.worker_with("flags", &strs(&flags(&logins.kafka, "sluice", PASSWORD)));
    w.wait_commits(0, Duration::from_secs(60)).await;
    w.terminate().await;

    // 2. A properties file in the Java client's form, as Confluent Cloud
    //    hands out (the JAAS line carries the credentials).
    let file = logins.logs.path().join("client.properties");
    std::fs::write(
        &file,
        format!(
            "# from the cluster's \"client configuration\" page\n\
             bootstrap.servers={}\n\
             security.protocol=SASL_SSL\n\
             sasl.mechanism=SCRAM-SHA-512\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"sluice\" password=\"{PASSWORD}\";\n\
             ssl.ca.location={}\n\
             client.dns.lookup=use_all_dns_ips\n",
            secure.bootstrap,
            secure.ca.display()
        ),
    )
    .unwrap();
    let file_arg = file.display().to_string();
    // The environment's KAFKA_BOOTSTRAP_SERVERS (the harness sets the
    // plaintext one) would win over the file: unset it.
    let mut w = logins.worker_env(
        "file",
        &["--kafka-config-file", &file_arg],
        &[("KAFKA_BOOTSTRAP_SERVERS", "")],
    );
    w.wait_commits(0, Duration::from_secs(60)).await;
    w.terminate().await;

    // 3. The environment.
    let ca = secure.ca.display().to_string();
    let mut w = logins.worker_env(
        "env",
        &[],
        &[
            ("KAFKA_BOOTSTRAP_SERVERS", &secure.bootstrap),
            ("SLUICE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("SLUICE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("SLUICE_KAFKA_SASL_USERNAME", "sluice"),
            ("SLUICE_KAFKA_SASL_PASSWORD", PASSWORD),
            ("SLUICE_KAFKA_SSL_CA_LOCATION", &ca),
        ],
    );
    w.wait_commits(0, Duration::from_secs(60)).await;
    load.stop().await;
    logins
        .wait_caught_up(Duration::from_secs(60), &mut [&mut w])
        .await;
    w.terminate().await;
    let outcome = logins.check_exactly_once().await;
    assert!(outcome.records > 0);
    println!("over SASL_SSL: {outcome}");
}

/// Waits for the worker's one refusal line; checks /readyz says it, that
/// the worker stays up, says it once and commits nothing.
async fn assert_refused(logins: &Logins, mut w: Worker, group: &str, expect: &[&str]) -> Worker {
    let deadline = Instant::now() + Duration::from_secs(60);
    let line = loop {
        w.assert_running();
        if let Some(l) = w
            .log_text()
            .lines()
            .find(|l| l.contains("not starting the workers"))
        {
            break l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "worker {} said no refusal; its log ends:\n{}",
            w.name,
            w.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for e in expect {
        assert!(
            line.contains(e),
            "{}: {e:?} not in the refusal: {line}",
            w.name
        );
    }
    let (status, body) = w.readyz().await;
    assert_eq!(status, 503, "{}: {body}", w.name);
    assert!(
        body.contains("refused") && body.contains(expect[0]),
        "{}: {body}",
        w.name
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    w.assert_running();
    let text = w.log_text();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "{}: one line, not a stream:\n{}",
        w.name,
        errors.join("\n")
    );
    assert!(
        committed_offsets(&logins.kafka.bootstrap, group, SOURCE, PARTITIONS)
            .iter()
            .all(|o| *o <= 0),
        "{}: committed something",
        w.name
    );
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_are_one_clear_line_a_reason_on_readyz_and_no_commit() {
    let kafka = Kafka::secure(&[("sluice", PASSWORD), ("limited", LIMITED_PASSWORD)]);
    grant(
        &kafka,
        "sluice",
        &["--topic", "*", "--group", "*", "--transactional-id", "*"],
    );
    let secure = kafka.secure.clone().unwrap();
    let logins = Logins::new(kafka, "classic").await;
    let load = logins.load(8, 200);
    let good = flags(&logins.kafka, "sluice", PASSWORD);
    let with = |over: &[&str]| {
        let mut a = good.clone();
        for o in over {
            a.extend(["--kafka-config".to_string(), o.to_string()]);
        }
        a
    };

    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        (
            "wrong-password",
            with(&["sasl.password=not-the-password"]),
            vec!["SASL credentials", "sasl.password"],
        ),
        (
            "unknown-ca",
            with(&[&format!("ssl.ca.location={}", secure.other_ca.display())]),
            vec!["not trusted", "ssl.ca.location"],
        ),
        (
            "plaintext",
            vec!["--bootstrap-servers".into(), secure.bootstrap.clone()],
            vec!["another protocol", "security.protocol"],
        ),
    ];
    for (name, args, expect) in cases {
        let group = format!("refused-{name}");
        let mut a = args.clone();
        a.extend(["--group-id".to_string(), group.clone()]);
        let w = assert_refused(
            &logins,
            logins.worker_with(name, &strs(&a)),
            &group,
            &expect,
        )
        .await;
        w.terminate().await;
    }

    // ACLs: the user "limited" has none, then one more each time.
    let limited = flags(&logins.kafka, "limited", LIMITED_PASSWORD);
    let worker = |name: &str| {
        let mut a = limited.clone();
        a.extend(["--group-id".to_string(), "limited-group".into()]);
        logins.worker_with(name, &strs(&a))
    };
    let w = assert_refused(
        &logins,
        worker("no-acl"),
        "limited-group",
        &["topic user-login", "kafka-acls --topic"],
    )
    .await;
    w.terminate().await;
    grant(&logins.kafka, "limited", &["--topic", "*"]);
    let w = assert_refused(
        &logins,
        worker("topics-only"),
        "limited-group",
        &["consumer group limited-group"],
    )
    .await;
    w.terminate().await;
    grant(&logins.kafka, "limited", &["--group", "limited-group"]);
    let w = assert_refused(
        &logins,
        worker("no-txn"),
        "limited-group",
        &["transactional id", "--transactional-id sluice-user-login"],
    )
    .await;
    // Granted while it waits: it starts by itself on its next look.
    grant(
        &logins.kafka,
        "limited",
        &[
            "--transactional-id",
            "sluice-user-login",
            "--resource-pattern-type",
            "prefixed",
        ],
    );
    let mut w = w;
    w.wait_commits(0, Duration::from_secs(60)).await;
    let (status, body) = w.readyz().await;
    assert_eq!(status, 200, "{body}");
    load.stop().await;
    w.terminate().await;
}
