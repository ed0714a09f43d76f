//! The load run's correctness, not its speed (speed is `vault bench server`'s business): many
//! concurrent clients on a real loopback socket, a create/read/update mix with version checks,
//! and then every object read back must hold exactly the last value and version written.
#![allow(clippy::unwrap_used)] // Test code: a panic is a failed test, helpers included.

use vault::load::{self, LoadSettings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (base, key, server) = load::start_local_server(dir.path()).await.unwrap();
    let report = load::run(
        &base,
        &key,
        LoadSettings {
            clients: 16,
            requests: 1600,
            value_bytes: 1024,
        },
    )
    .await
    .unwrap();
    server.shutdown().await;
    assert_eq!(report.requests, 1600);
    assert_eq!(report.errors, 0, "{report:?}");
    // 20% creates plus each client's first request.
    assert!(report.objects >= 320, "{report:?}");
    assert_eq!(report.intact, report.objects, "{report:?}");
    assert_eq!(
        report.create.count + report.read.count + report.update.count,
        report.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_counted_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _key, server) = load::start_local_server(dir.path()).await.unwrap();
    let forged = format!("sk_{}", "Q".repeat(43));
    let report = load::run(
        &base,
        &forged,
        LoadSettings {
            clients: 2,
            requests: 20,
            value_bytes: 16,
        },
    )
    .await
    .unwrap();
    server.shutdown().await;
    assert_eq!(report.errors, 20, "every request was refused: {report:?}");
    assert_eq!(report.objects, 0);
}
