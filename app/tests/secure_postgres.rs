//! PostgreSQL over TLS: a server of the test's own that takes TLS
//! connections only (dev/postgres/start-tls), reached with `sslmode=require`
//! and with `verify-full` against the test's CA; an untrusted CA, a
//! plaintext connection and a wrong password are clear errors that never
//! show the password.

mod common;

use common::{output_text, postgres_tls::TlsPostgres, sluice};

const PASSWORD: &str = "pg-S3cret-Pa55";

/// `sluice ARGS` with this DATABASE_URL: (ok, stdout + stderr), which
/// must not show the password.
fn with_url(args: &[&str], url: &str) -> (bool, String) {
    let (ok, text) = output_text(sluice().args(args).env("DATABASE_URL", url));
    assert!(
        !text.contains(PASSWORD),
        "the password was printed:\n{text}"
    );
    (ok, text)
}

fn migrate(url: &str) -> (bool, String) {
    with_url(&["migrate"], url)
}

#[test]
fn postgres_over_tls_require_and_verify_full_and_clear_refusals() {
    let pg = TlsPostgres::start(PASSWORD);
    let (ok, text) = migrate(&pg.url("127.0.0.1", PASSWORD, "sslmode=require"));
    assert!(ok && text.contains("applied migrations"), "{text}");
    let full = format!("sslmode=verify-full&sslrootcert={}", pg.ca("ca.pem"));
    for host in ["localhost", "127.0.0.1"] {
        let (ok, text) = migrate(&pg.url(host, PASSWORD, &full));
        assert!(ok && text.contains("already up to date"), "{host}: {text}");
    }
    let (ok, text) = sluice_windows(&pg.url("localhost", PASSWORD, &full));
    assert!(ok, "windows query over TLS: {text}");

    let untrusted = format!("sslmode=verify-full&sslrootcert={}", pg.ca("other-ca.pem"));
    let (ok, text) = migrate(&pg.url("localhost", PASSWORD, &untrusted));
    assert!(
        !ok && text.contains("cannot connect to PostgreSQL"),
        "{text}"
    );
    assert!(
        text.to_lowercase().contains("certificate"),
        "says what failed: {text}"
    );
    println!("{}", text.trim());

    let (ok, text) = migrate(&pg.url("127.0.0.1", PASSWORD, "sslmode=disable"));
    assert!(
        !ok && text.contains("no encryption"),
        "a plaintext connection is refused: {text}"
    );

    let (ok, text) = migrate(&pg.url("127.0.0.1", "not-the-password", "sslmode=require"));
    assert!(
        !ok && text.contains("password authentication failed"),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");
    println!("{}", text.trim());
}

fn sluice_windows(url: &str) -> (bool, String) {
    with_url(&["windows", "query"], url)
}
