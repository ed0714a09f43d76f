//! `vault serve` as a process: the first start creates and prints an API key once, with a curl
//! line; SIGTERM in the middle of a load lets requests in flight finish and exits cleanly, and
//! every create the server acknowledged is in the store afterwards and decrypts.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::client::ApiClient;
use hyper::Method;
use serde_json::json;
use vault_store::Actor;

const VAULT: &str = env!("CARGO_BIN_EXE_vault");

/// Starts `vault serve` on a free loopback port; returns the child, its address and what it
/// printed on standard output before listening.
fn start(dir: &Path) -> (Child, String, Vec<String>) {
    let mut child = Command::new(VAULT)
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--environment", "prod"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = common::listening_address(&mut child);
    // The first-key banner is printed right after the listening line, then stdout is flushed.
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let mut printed = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        printed.push(line);
    }
    (child, addr, printed)
}

/// A new API key for environment `prod` of the data directory `dir`.
fn api_key(dir: &Path) -> String {
    let out = Command::new(VAULT)
        .arg("--data-dir")
        .arg(dir)
        .args(["apikey", "create", "-e", "prod", "--name", "load"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn stop(mut child: Child) -> std::process::ExitStatus {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_prints_a_working_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr, printed) = start(dir.path());
    let key = printed
        .iter()
        .find(|l| l.starts_with("sk_"))
        .expect("the key on a line of its own")
        .clone();
    assert!(
        printed
            .iter()
            .any(|l| l.starts_with("Try: curl") && l.contains(&key) && l.contains(&addr)),
        "{printed:?}"
    );
    let client = ApiClient::new(&format!("http://{addr}"), &key);
    let (status, _) = client
        .call(Method::GET, "/vault/v1/kv", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, meta) = client
        .call(
            Method::POST,
            "/vault/v1/kv",
            Some(&json!({"name": "n", "value": "v", "key_context": {"organization_id": "o"}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{meta}");
    assert_eq!(meta["environment_id"], "prod");
    assert!(stop(child).success());

    let (child, _, printed) = start(dir.path());
    assert!(
        printed.iter().all(|l| !l.contains("sk_")),
        "a key is printed only once: {printed:?}"
    );
    assert!(stop(child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_finish_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let key = api_key(dir.path());
    let (child, addr, _) = start(dir.path());
    let base = format!("http://{addr}");

    let stopping = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let client = ApiClient::new(&base, &key);
        let stopping = stopping.clone();
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0.. {
                let value = format!("value {w}-{i}");
                let body = json!({"name": format!("o-{w}-{i}"), "value": value,
                                  "key_context": {"organization_id": "org_1"}});
                match client.call(Method::POST, "/vault/v1/kv", Some(&body)).await {
                    Ok((201, meta)) => {
                        acknowledged.push((meta["id"].as_str().unwrap().to_owned(), value));
                    }
                    // Refused or cut off once the server stops accepting: not acknowledged.
                    _ if stopping.load(Ordering::SeqCst) => break,
                    other => panic!("before shutdown: {other:?}"),
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stopping.store(true, Ordering::SeqCst);
    let status = tokio::task::spawn_blocking(move || stop(child))
        .await
        .unwrap();
    assert!(status.success(), "a clean exit on SIGTERM: {status:?}");
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    assert!(
        acknowledged.len() >= 8,
        "the load ran: {}",
        acknowledged.len()
    );

    let vault = vault::open_embedded(dir.path()).await.unwrap();
    let actor = Actor::new("user_test", "test");
    for (id, value) in &acknowledged {
        let object = vault.read("prod", id, &actor).await.unwrap();
        assert_eq!(object.value, value.as_bytes());
    }
}

/// What one client of the crash test saw: its object, the versions the server acknowledged
/// (in order, with their values), and the change in flight when the server died (not
/// acknowledged: it may or may not have been applied).
#[derive(Default)]
struct Seen {
    id: Option<String>,
    acknowledged: Vec<(String, String)>,
    in_flight: Option<String>,
}

/// One client: creates its object, then updates it with `version_check` until the server
/// stops answering.
async fn change_until_killed(client: ApiClient, w: usize) -> Seen {
    let mut seen = Seen::default();
    let create = json!({"name": format!("c-{w}"), "value": format!("{w}-0"),
                        "key_context": {"organization_id": format!("org_{}", w % 4)}});
    seen.in_flight = Some(format!("{w}-0"));
    match client
        .call(Method::POST, "/vault/v1/kv", Some(&create))
        .await
    {
        Ok((201, meta)) => {
            seen.id = Some(meta["id"].as_str().unwrap().to_owned());
            let version = meta["version_id"].as_str().unwrap().to_owned();
            seen.acknowledged.push((version, format!("{w}-0")));
            seen.in_flight = None;
        }
        Ok(other) => panic!("create refused before the kill: {other:?}"),
        Err(_) => return seen,
    }
    let id = seen.id.clone().unwrap();
    for i in 1.. {
        let value = format!("{w}-{i}");
        let (last, _) = seen.acknowledged.last().unwrap();
        let body = json!({"value": value, "version_check": last});
        seen.in_flight = Some(value.clone());
        match client
            .call(Method::PUT, &format!("/vault/v1/kv/{id}"), Some(&body))
            .await
        {
            Ok((200, obj)) => {
                let version = obj["metadata"]["version_id"].as_str().unwrap().to_owned();
                seen.acknowledged.push((version, value));
                seen.in_flight = None;
            }
            Ok(other) => panic!("update refused before the kill: {other:?}"),
            Err(_) => break, // the server is gone: this change was not acknowledged
        }
    }
    seen
}

/// SIGKILL while 32 clients change objects (the group commit's worst moment): every change the
/// server acknowledged is there afterwards, and the one in flight per client is either wholly
/// there (its version, its value, its audit event) or not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_32_writers_loses_no_acknowledged_change_and_half_applies_none() {
    let dir = tempfile::tempdir().unwrap();
    let key = api_key(dir.path());
    let (mut child, addr, _) = start(dir.path());
    let base = format!("http://{addr}");
    let clients: Vec<_> = (0..32)
        .map(|w| tokio::spawn(change_until_killed(ApiClient::new(&base, &key), w)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL: no shutdown, no flush, no checkpoint
    child.wait().unwrap();
    let mut seen = Vec::new();
    for c in clients {
        seen.push(c.await.unwrap());
    }
    let acknowledged: usize = seen.iter().map(|s| s.acknowledged.len()).sum();
    assert!(acknowledged >= 64, "the load ran: {acknowledged} changes");

    let vault = vault::open_embedded(dir.path()).await.unwrap();
    let actor = Actor::new("user_test", "test");
    let store = vault_store::SqlStore::open_sqlite(dir.path())
        .await
        .unwrap();
    let events = vault_store::AuditLog::audit_events(&store, "prod", 1_000_000)
        .await
        .unwrap();
    for (w, s) in seen.iter().enumerate() {
        let object = match &s.id {
            Some(id) => vault.read("prod", id, &actor).await.unwrap(),
            // The create was in flight: the object is there whole, or not at all.
            None => match vault.read_by_name("prod", &format!("c-{w}"), &actor).await {
                Ok(object) => object,
                Err(_) => continue,
            },
        };
        let value = String::from_utf8(object.value.clone()).unwrap();
        let versions = vault
            .versions("prod", &object.meta.id, &actor)
            .await
            .unwrap();
        let stored: Vec<&str> = versions.iter().rev().map(|v| v.id.as_str()).collect();
        let acked: Vec<&str> = s.acknowledged.iter().map(|(v, _)| v.as_str()).collect();
        // Every acknowledged version, in order, then at most the one in flight.
        assert_eq!(&stored[..acked.len()], &acked[..], "client {w}");
        match stored.len() - acked.len() {
            0 => {
                let (version, last) = s.acknowledged.last().unwrap();
                assert_eq!(
                    (&object.meta.version_id, &value),
                    (version, last),
                    "client {w}"
                );
            }
            1 => assert_eq!(Some(&value), s.in_flight.as_ref(), "client {w}: {value}"),
            n => panic!("client {w}: {n} versions nobody sent"),
        }
        // One audit event per version: a change is never there without its event.
        let changes = events
            .iter()
            .filter(|e| e.object_id.as_deref() == Some(object.meta.id.as_str()))
            .filter(|e| e.event == "vault.data.created" || e.event == "vault.data.updated")
            .count();
        assert_eq!(changes, stored.len(), "client {w}: events and versions");
    }
}

/// Runs the `vault` command line on `dir`; returns (exit code, stdout, stderr).
fn cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(VAULT)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The key-lifecycle scenario a new user runs with the documented commands only, with a
/// running server and the command line on one data directory: the server obeys a rotation
/// and a destruction made by the CLI within a second, rewrap moves old versions, destroy is
/// refused while stored data is under the version, and after rewrap, destroy and a restart
/// every object still reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_obeys_rotate_rewrap_and_destroy_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, key, _) = cli(d, &["apikey", "create", "-e", "prod", "--name", "t"]);
    assert_eq!(code, 0);
    let key = key.trim().to_owned();
    let (child, addr, _) = start(d);
    let client = ApiClient::new(&format!("http://{addr}"), &key);
    let mut written: Vec<(String, String)> = Vec::new();
    let mut n = 0;
    // Creates an object for org o1; returns its key reference.
    let mut create = async |client: &ApiClient, written: &mut Vec<(String, String)>| {
        n += 1;
        let (name, value) = (format!("obj-{n}"), format!("value {n}"));
        let body = json!({"name": name, "value": value, "key_context": {"organization_id": "o1"}});
        let (status, meta) = client
            .call(Method::POST, "/vault/v1/kv", Some(&body))
            .await
            .unwrap();
        assert_eq!(status, 201, "{meta}");
        written.push((name, value));
        meta["key_id"].as_str().unwrap().to_owned()
    };
    let read = async |client: &ApiClient, name: &str| {
        client
            .call(Method::GET, &format!("/vault/v1/kv/name/{name}"), None)
            .await
            .unwrap()
    };

    assert_eq!(create(&client, &mut written).await, "managed://root#v1");
    let (code, out, _) = cli(d, &["keys", "rotate"]);
    assert_eq!((code, out.as_str()), (0, "v2\n"));
    let rotated = Instant::now();
    loop {
        let key_id = create(&client, &mut written).await;
        if key_id == "managed://root#v2" {
            break;
        }
        assert!(
            rotated.elapsed() < Duration::from_secs(1),
            "still sealing under {key_id} after {:?}",
            rotated.elapsed()
        );
    }

    // Stored data under v1: destroy refuses, with the count and the ways on.
    let (code, _, err) = cli(d, &["keys", "destroy", "1"]);
    assert_eq!(code, 7, "{err}");
    assert!(
        err.contains("stored object version(s): `vault keys rewrap --all` moves them")
            && err.contains("--yes-destroy-data"),
        "{err}"
    );
    let (code, status, _) = cli(d, &["keys", "status"]);
    assert_eq!(code, 0);
    assert!(
        status.contains("primary") && status.contains("STORED"),
        "{status}"
    );

    let (code, out, err) = cli(d, &["keys", "rewrap", "--match", "organization_id=o1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(" rewrapped, 1 already current, 0 changed meanwhile, 0 unreadable")
            && !out.contains(" 0 rewrapped"),
        "{out}"
    );
    let (code, out, _) = cli(d, &["keys", "rewrap", "--all"]);
    assert_eq!(code, 0);
    assert!(out.contains(" 0 rewrapped"), "{out}");

    // Nothing is under v1 now; once it has not been the primary for a moment, destroy needs
    // no consent.
    let destroyed = loop {
        let (code, out, err) = cli(d, &["keys", "destroy", "1"]);
        match code {
            0 => break out,
            7 if err.contains("until moments ago") => {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            _ => panic!("{code}: {err}"),
        }
    };
    assert!(destroyed.contains("v1 destroyed: 0 stored"), "{destroyed}");
    for (name, value) in &written {
        let (status, body) = read(&client, name).await;
        assert_eq!(
            (status, body["value"].as_str()),
            (200, Some(value.as_str()))
        );
    }
    assert!(stop(child).success());
    let (child, addr, _) = start(d);
    let client = ApiClient::new(&format!("http://{addr}"), &key);
    for (name, value) in &written {
        let (status, body) = read(&client, name).await;
        assert_eq!(
            (status, body["value"].as_str()),
            (200, Some(value.as_str()))
        );
    }

    // Crypto-shredding with consent: data still under v2 becomes unreadable on the running
    // server within a second, and nothing new is sealed under v2 afterwards.
    let (code, _, _) = cli(d, &["keys", "rotate"]);
    assert_eq!(code, 0);
    let (code, out, err) = cli(d, &["keys", "destroy", "2", "--yes-destroy-data"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("v2 destroyed: "), "{out}");
    assert!(err.contains("cannot be counted"), "{err}");
    let shredded = Instant::now();
    let victim = written[0].0.clone();
    loop {
        let (status, body) = read(&client, &victim).await;
        if status == 403 {
            assert_eq!(body["code"], "key_unavailable", "{body}");
            break;
        }
        assert_eq!(status, 200);
        assert!(
            shredded.elapsed() < Duration::from_secs(1),
            "shredded data still served after {:?}",
            shredded.elapsed()
        );
    }
    for _ in 0..5 {
        assert_eq!(create(&client, &mut written).await, "managed://root#v3");
    }
    assert!(stop(child).success());
}

/// SIGHUP reloads a TLS certificate; a plain-HTTP server has none, and must not die of it (the
/// signal's default action): it keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_never_kills_a_plain_http_server() {
    let dir = tempfile::tempdir().unwrap();
    let key = api_key(dir.path());
    let (mut child, addr, _) = start(dir.path());
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(child.try_wait().unwrap().is_none(), "still running");
    let (status, body) = ApiClient::new(&format!("http://{addr}"), &key)
        .call(Method::GET, "/vault/v1/kv", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(stop(child).success());
}

/// `[objects] purge_deleted_after_days`: `vault serve` purges, at its start and hourly, the
/// objects deleted longer ago than that, with their versions, each recorded as
/// `vault.data.purged`; an object deleted more recently is kept (still purgeable by hand), and
/// a live one is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_purges_objects_deleted_longer_ago_than_configured() {
    use sqlx::Row as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let create = |name: &str| {
        let (code, out, err) = cli(
            d,
            &[
                "kv",
                "create",
                "-e",
                "prod",
                "--name",
                name,
                "--context",
                r#"{"organization_id":"org_1"}"#,
                "--value",
                "v",
                "--json",
            ],
        );
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (old, newer, live) = (create("old"), create("newer"), create("live"));
    for id in [&old, &newer] {
        let (code, _, err) = cli(d, &["kv", "delete", "-e", "prod", id]);
        assert_eq!(code, 0, "{err}");
    }
    // Deleted three days and one day ago, as far as the store can tell.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", d.join("vault.db").display()))
        .await
        .unwrap();
    let day: i64 = 86_400_000_000;
    let now = vault_store::Timestamp::now().0;
    for (id, ago) in [(&old, 3 * day), (&newer, day)] {
        sqlx::query("UPDATE objects SET deleted_at = ? WHERE id = ?")
            .bind(now - ago)
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
    }
    let config = d.join("vault.toml");
    std::fs::write(&config, "[objects]\npurge_deleted_after_days = 2\n").unwrap();
    let mut child = Command::new(VAULT)
        .arg("--data-dir")
        .arg(d)
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", "127.0.0.1:0", "--environment", "prod"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = common::listening_address(&mut child);
    let client = ApiClient::new(&format!("http://{addr}"), &api_key(d));
    let deadline = Instant::now() + Duration::from_secs(20);
    let purged = loop {
        let (status, page) = client
            .call(Method::GET, "/events?events=vault.data.purged", None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap().clone();
        if !data.is_empty() || Instant::now() > deadline {
            break data;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(purged.len(), 1, "{purged:?}");
    assert_eq!(purged[0]["data"]["kv_name"], "old");
    assert_eq!(purged[0]["data"]["actor_id"], "vault_serve");
    let rows = |table: &'static str, column: &'static str, id: String| {
        let pool = pool.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) AS n FROM {table} WHERE {column} = ?"
            )))
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
            .get::<i64, _>("n")
        }
    };
    assert_eq!(rows("objects", "id", old.clone()).await, 0);
    assert_eq!(rows("versions", "object_id", old.clone()).await, 0);
    assert_eq!(rows("objects", "id", newer.clone()).await, 1);
    assert_eq!(rows("versions", "object_id", newer.clone()).await, 1);
    let (status, read) = client
        .call(Method::GET, &format!("/vault/v1/kv/{live}"), None)
        .await
        .unwrap();
    assert_eq!((status, read["value"].as_str()), (200, Some("v")));
    assert!(stop(child).success());
    pool.close().await;
}
