//! The load run's correctness, not its speed (speed is `vault bench server`'s business): many
//! concurrent clients on a real loopback socket, a create/read/update mix with version checks,
//! and then every object read back must hold exactly the last value and version written. Run
//! through the binary, as an operator runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use std::process::Command;

#[test]
fn concurrent_clients_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vault"))
        .args(["--data-dir"])
        .arg(dir.path())
        .args([
            "bench",
            "server",
            "--clients",
            "16",
            "--requests",
            "1600",
            "--value-bytes",
            "1024",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = |k: &str| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k}: {report}"))
    };
    assert_eq!(n("requests"), 1600);
    assert_eq!(n("errors"), 0, "{report}");
    // 20% creates plus each client's first request.
    assert!(n("objects") >= 320, "{report}");
    assert_eq!(n("intact"), n("objects"), "{report}");
    let count = |k: &str| report[k]["count"].as_u64().unwrap();
    assert_eq!(
        count("create") + count("read") + count("update"),
        n("requests")
    );
}
