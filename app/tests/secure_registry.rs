//! The registry over HTTPS: `sluice registry serve --tls-cert/--tls-key`
//! with basic auth, reached by `schemas register` and by the codec with
//! the credentials in the URL or in SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO and
//! the test's CA; a wrong credential, an untrusted certificate and plain
//! HTTP on the HTTPS port are clear errors, and a wrong credential never
//! makes a record a dead letter.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use common::{Proc, free_port, output_text, sluice};
use sluice::{
    avro::{AvroCodec, Reader, RegistryConfig},
    registry::Credentials,
};

const PASSWORD: &str = "reg-S3cret-Pa55";

fn certs(dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/tls/certs");
    let tls = dir.join("tls");
    let out = std::process::Command::new(script)
        .arg(&tls)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tls
}

/// `sluice registry serve` over HTTPS with basic auth; waits until it answers.
async fn https_registry(tls: &Path) -> (Proc, u16) {
    let port = free_port();
    let child = sluice()
        .args([
            "registry",
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--tls-cert")
        .arg(tls.join("server.pem"))
        .arg("--tls-key")
        .arg(tls.join("server.key"))
        .env("SLUICE_REGISTRY_BASIC_AUTH", format!("admin:{PASSWORD}"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(tls.join("ca.pem")).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = http
            .get(format!("https://localhost:{port}/subjects"))
            .basic_auth("admin", Some(PASSWORD))
            .send()
            .await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return (proc, port);
        }
        assert!(
            Instant::now() < deadline,
            "the HTTPS registry did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `sluice schemas register` with these arguments and environment.
fn register(args: &[&str], envs: &[(&str, &str)]) -> (bool, String) {
    let (ok, text) = output_text(
        sluice()
            .args(["schemas", "register"])
            .args(args)
            .envs(envs.iter().copied()),
    );
    assert!(
        !text.contains(PASSWORD),
        "the password was printed:\n{text}"
    );
    (ok, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_over_https_with_basic_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let tls = certs(tmp.path());
    let (_registry, port) = https_registry(&tls).await;
    let ca = tls.join("ca.pem").display().to_string();
    let url = format!("https://localhost:{port}");
    let in_url = format!("https://admin:{PASSWORD}@localhost:{port}");

    let (ok, text) = register(&["--registry-url", &in_url, "--registry-ca", &ca], &[]);
    assert!(
        ok && text.contains("user-login-value: registered"),
        "{text}"
    );
    let user_info = format!("admin:{PASSWORD}");
    let (ok, text) = register(
        &[],
        &[
            ("SCHEMA_REGISTRY_URL", &url),
            ("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", &user_info),
            ("SCHEMA_REGISTRY_SSL_CA_LOCATION", &ca),
        ],
    );
    assert!(ok && text.contains("user-login-value: unchanged"), "{text}");

    let wrong = format!("https://admin:not-the-password@localhost:{port}");
    let (ok, text) = register(&["--registry-url", &wrong, "--registry-ca", &ca], &[]);
    assert!(
        !ok && text.contains("refused the credentials (401)"),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");
    let other = tls.join("other-ca.pem").display().to_string();
    let (ok, text) = register(&["--registry-url", &in_url, "--registry-ca", &other], &[]);
    assert!(!ok && text.contains("certificate verify failed"), "{text}");
    let plain = format!("http://admin:{PASSWORD}@localhost:{port}");
    let (ok, text) = register(&["--registry-url", &plain], &[]);
    assert!(!ok && text.contains("unreachable"), "{text}");

    // The codec: encode and decode over HTTPS, credentials apart from the URL.
    let creds = Credentials {
        user: "admin".into(),
        password: PASSWORD.into(),
    };
    let config = RegistryConfig::new(&url, Some(creds))
        .unwrap()
        .with_ca(Some(tls.join("ca.pem")));
    let codec = AvroCodec::new(&config).unwrap();
    let login = sluice_app::topologies::user_login::UserLogin {
        user_id: "u-1".into(),
        app_version: "1.0".into(),
        ip: "10.0.0.1".into(),
        locale: "en_GB".into(),
        device_id: "d-1".into(),
        timestamp: 1_700_000_000,
        device_type: "android".into(),
    };
    let bytes = codec.encode("user-login", &login).await.unwrap();
    let reader = Reader::new(common::schema("user-login"));
    let (_, back): (u32, sluice_app::topologies::user_login::UserLogin) =
        codec.decode(&bytes, &reader).await.unwrap();
    assert_eq!(back.user_id, "u-1");

    // A wrong credential is the registry's refusal, to retry once fixed:
    // never a verdict on the record.
    let wrong = Credentials {
        user: "admin".into(),
        password: "not-the-password".into(),
    };
    let config = RegistryConfig::new(&url, Some(wrong))
        .unwrap()
        .with_ca(Some(tls.join("ca.pem")));
    let codec = AvroCodec::new(&config).unwrap();
    let e = codec
        .decode::<sluice_app::topologies::user_login::UserLogin>(&bytes, &reader)
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e} ({})", e.kind());
    println!("{e}");
}
