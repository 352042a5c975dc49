//! A PostgreSQL server of a test's own that takes TLS connections only
//! (`dev/postgres/start-tls`), user "sluice" with a password.

use std::path::{Path, PathBuf};

pub struct TlsPostgres {
    pub port: String,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl TlsPostgres {
    pub fn start(password: &str) -> TlsPostgres {
        let tmp = tempfile::tempdir().unwrap();
        // Run as root, the server is the postgres user's, and must get in.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = tmp.path().join("pg");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/postgres/start-tls");
        let out = std::process::Command::new(script)
            .arg(&dir)
            .arg(password)
            .args(["--owner", &std::process::id().to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dev/postgres/start-tls: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TlsPostgres {
            port: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            dir,
            _tmp: tmp,
        }
    }

    /// postgres://sluice:PASSWORD@HOST:PORT/postgres?QUERY
    pub fn url(&self, host: &str, password: &str, query: &str) -> String {
        format!(
            "postgres://sluice:{password}@{host}:{}/postgres?{query}",
            self.port
        )
    }

    /// A file of `dev/tls/certs` (ca.pem, other-ca.pem).
    pub fn ca(&self, name: &str) -> String {
        self.dir.join("tls").join(name).display().to_string()
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/postgres/start-tls");
        let _ = std::process::Command::new(script)
            .arg("--stop")
            .arg(&self.dir)
            .output();
    }
}
