//! The audit trail as WorkOS events, end to end over `vault serve`:
//! - webhooks: the outbox is delivered to a receiver on loopback, signed as WorkOS signs
//!   (checked here; the SDKs check it in `tests/sdk.rs`), and nothing is lost when the server
//!   is killed with deliveries pending; failures back off, die after `max_attempts` and are
//!   revived by `vault webhook replay`; metadata addresses are never delivered to;
//! - `Idempotency-Key`: a retry gets the first answer, byte for byte, and concurrent duplicates
//!   make one object;
//! - `GET /events`: ring events reach the environments with data under the ring.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::Serve;
use common::client::ApiClient;
use common::receiver::{Got, Receiver};
use hyper::Method;
use serde_json::{Value, json};

mod common;

const VAULT: &str = env!("CARGO_BIN_EXE_vault");

fn vault(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(VAULT)
        .arg("--data-dir")
        .arg(dir)
        .arg("--config")
        .arg(dir.join("vault.toml"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vault {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn setup(dir: &Path, webhooks: &str) -> String {
    std::fs::write(
        dir.join("vault.toml"),
        format!("default = \"managed\"\n[providers.managed]\ntype = \"managed\"\n[webhooks]\n{webhooks}\n"),
    )
    .unwrap();
    vault(dir, &["apikey", "create", "-e", "prod", "--name", "hooks"])
        .trim()
        .to_owned()
}

fn serve(dir: &Path) -> (Serve, String) {
    let mut child = Command::new(VAULT)
        .arg("--data-dir")
        .arg(dir)
        .arg("--config")
        .arg(dir.join("vault.toml"))
        .args(["serve", "--listen", "127.0.0.1:0", "--environment", "prod"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = common::listening_address(&mut child);
    (Serve(child), format!("http://{addr}"))
}

/// A loopback port nobody listens on (yet).
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Checks `WorkOS-Signature` as the SDKs do: `t=<ms>, v1=<hex HMAC-SHA256("<t>.<body>")>`.
fn signed_by(got: &Got, secret: &str) -> bool {
    let (t, v1) = got.signature.split_once(", ").unwrap();
    let t: i64 = t.strip_prefix("t=").unwrap().parse().unwrap();
    let expected = vault::server::webhooks::signature(secret, t, &got.body);
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    expected.ends_with(v1.strip_prefix("v1=").unwrap()) && (now_ms - t).abs() < 180_000
}

async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn endpoints(dir: &Path) -> Vec<Value> {
    vault(dir, &["webhook", "list", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn create_webhook(dir: &Path, url: &str, events: &str) -> (String, String) {
    let out = vault(
        dir,
        &[
            "webhook", "create", "-e", "prod", "--url", url, "--events", events,
        ],
    );
    let mut lines = out.lines();
    let id = lines.next().unwrap().to_owned();
    let secret = lines.last().unwrap().to_owned();
    assert!(id.starts_with("we_"), "{out}");
    assert_eq!(secret.len(), 64, "the secret alone on the last line");
    (id, secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_delivers_every_pending_event_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = setup(
        dir.path(),
        "retry_base_ms = 100\nretry_cap_secs = 1\nmax_attempts = 100",
    );
    let port = free_port();
    let (_, secret) = create_webhook(
        dir.path(),
        &format!("http://{port}/hook"),
        "vault.data.created,vault.data.updated",
    );
    // The receiver is down: every delivery fails and stays in the outbox.
    let (server, base) = serve(dir.path());
    let client = ApiClient::new(&base, &key);
    for i in 0..15 {
        let (status, meta) = client
            .call(
                Method::POST,
                "/vault/v1/kv",
                Some(&json!({"name": format!("n{i}"), "value": "v", "key_context": {"organization_id": "org_1"}})),
            )
            .await
            .unwrap();
        assert_eq!(status, 201);
        if i < 5 {
            let path = format!("/vault/v1/kv/{}", meta["id"].as_str().unwrap());
            let (status, _) = client
                .call(Method::PUT, &path, Some(&json!({"value": "v2"})))
                .await
                .unwrap();
            assert_eq!(status, 200);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(server); // SIGKILL, with 20 deliveries pending
    let listed = endpoints(dir.path());
    assert_eq!(listed[0]["pending"], 20, "{listed:?}");

    let receiver = Receiver::start(port, 200).await;
    let (_server, base) = serve(dir.path());
    wait_for("every event delivered", 30, || {
        receiver.accepted().len() >= 20
    })
    .await;
    // Exactly the environment's events of those types, none missing, in order.
    let client = ApiClient::new(&base, &key);
    let (status, page) = client
        .call(
            Method::GET,
            "/events?events=vault.data.created,vault.data.updated&limit=100",
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{page}");
    let expected: Vec<String> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(expected.len(), 20);
    assert_eq!(receiver.accepted(), expected, "all delivered, in order");
    for got in receiver.got() {
        assert!(signed_by(&got, &secret), "signature of {got:?}");
        let event: Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(event["object"], "event");
        assert_eq!(event["data"]["actor_source"], "api");
        assert_eq!(event["data"]["key_context"]["organization_id"], "org_1");
    }
    wait_for("the outbox to empty", 10, || {
        endpoints(dir.path())[0]["pending"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_die_after_max_attempts_and_replay_revives_them() {
    let dir = tempfile::tempdir().unwrap();
    let key = setup(
        dir.path(),
        "retry_base_ms = 50\nretry_cap_secs = 1\nmax_attempts = 3",
    );
    let port = free_port();
    let receiver = Receiver::start(port, 500).await;
    let (id, secret) = create_webhook(
        dir.path(),
        &format!("http://{port}/hook"),
        "vault.data.created",
    );
    // The metadata address, in two of its forms: never connected to.
    let (metadata, _) = create_webhook(
        dir.path(),
        "http://169.254.169.254/latest/meta-data",
        "vault.data.created",
    );
    let (mapped, _) = create_webhook(
        dir.path(),
        "http://[::ffff:169.254.169.254]:80/",
        "vault.data.created",
    );
    let (_server, base) = serve(dir.path());
    let client = ApiClient::new(&base, &key);
    let create = |name: &'static str| {
        let client = client.clone();
        async move {
            let (status, _) = client
                .call(
                    Method::POST,
                    "/vault/v1/kv",
                    Some(&json!({"name": name, "value": "v", "key_context": {"organization_id": "o"}})),
                )
                .await
                .unwrap();
            assert_eq!(status, 201);
        }
    };
    create("first").await;
    wait_for("three failed attempts and a dead delivery", 20, || {
        endpoints(dir.path())
            .iter()
            .all(|e| e["dead"] == 1 && e["pending"] == 0)
    })
    .await;
    assert_eq!(receiver.got().len(), 3, "max_attempts = 3");
    for e in endpoints(dir.path()) {
        if e["id"] == metadata || e["id"] == mapped {
            assert_eq!(e["dead"], 1, "refused, never delivered: {e}");
            let error = e["last_error"].as_str().unwrap();
            assert!(
                error.contains("refused") && error.contains("metadata"),
                "{error}"
            );
        } else {
            assert_eq!(e["last_error"], "answered 500", "{e}");
        }
    }
    // Fixed receiver, replayed: delivered once more, and accepted.
    receiver.status.store(200, Ordering::SeqCst);
    let out = vault(dir.path(), &["webhook", "replay", &id]);
    assert!(out.starts_with("1 "), "{out}");
    wait_for("the replayed delivery", 10, || {
        receiver.accepted().len() == 1
    })
    .await;
    assert!(receiver.got().iter().all(|g| signed_by(g, &secret)));
    // A new secret signs what follows; the old one no longer verifies it.
    let rotated = vault(dir.path(), &["webhook", "rotate-secret", &id]);
    let new_secret = rotated.lines().last().unwrap().to_owned();
    assert_eq!(new_secret.len(), 64);
    assert_ne!(new_secret, secret);
    create("second").await;
    wait_for("the second event", 10, || receiver.accepted().len() == 2).await;
    let last = receiver.got().last().unwrap().clone();
    assert!(signed_by(&last, &new_secret));
    assert!(!signed_by(&last, &secret));
    // A deleted endpoint gets nothing more.
    vault(dir.path(), &["webhook", "delete", &id]);
    create("third").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.accepted().len(), 2);
    assert!(!endpoints(dir.path()).iter().any(|e| e["id"] == id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhooks_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), "");
    for (url, events) in [
        ("ftp://example.com/", "vault.data.read"),
        ("http://user:pw@example.com/", "vault.data.read"),
        ("not a url", "vault.data.read"),
        ("http://example.com/", "vault.data.exploded"),
    ] {
        let out = Command::new(VAULT)
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--config")
            .arg(dir.path().join("vault.toml"))
            .args([
                "webhook", "create", "-e", "prod", "--url", url, "--events", events,
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url} {events}");
        assert!(out.stdout.is_empty(), "no secret for a refused endpoint");
    }
    assert!(endpoints(dir.path()).is_empty());
}

async fn post(
    client: &ApiClient,
    path: &str,
    body: &Value,
    key: &str,
) -> (u16, Option<String>, Vec<u8>) {
    let (status, headers, bytes) = client
        .send(
            Method::POST,
            path,
            body.to_string().into_bytes(),
            &[("idempotency-key", key)],
        )
        .await
        .unwrap();
    let replayed = headers
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, replayed, bytes.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_an_idempotency_key_get_the_first_answer() {
    let dir = tempfile::tempdir().unwrap();
    let key = setup(dir.path(), "");
    let (_server, base) = serve(dir.path());
    let client = ApiClient::new(&base, &key);
    let object = json!({"name": "once", "value": "v", "key_context": {"organization_id": "o"}});
    let (status, replayed, first) = post(&client, "/vault/v1/kv", &object, "k-create").await;
    assert_eq!((status, replayed), (201, None));
    let (status, replayed, again) = post(&client, "/vault/v1/kv", &object, "k-create").await;
    assert_eq!((status, replayed.as_deref()), (201, Some("true")));
    assert_eq!(again, first, "the same answer, byte for byte");
    // The same key with another request: 422, and nothing made.
    let other = json!({"name": "other", "value": "v", "key_context": {"organization_id": "o"}});
    let (status, _, body) = post(&client, "/vault/v1/kv", &other, "k-create").await;
    assert_eq!(status, 422);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "idempotency_key_reused");
    // Eight duplicates at once: one object, one answer.
    let racing = json!({"name": "raced", "value": "v", "key_context": {"organization_id": "o"}});
    let answers =
        futures::future::join_all((0..8).map(|_| post(&client, "/vault/v1/kv", &racing, "k-race")))
            .await;
    let ids: BTreeSet<String> = answers
        .iter()
        .map(|(status, _, body)| {
            assert_eq!(*status, 201, "{}", String::from_utf8_lossy(body));
            serde_json::from_slice::<Value>(body).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let (_, list) = client
        .call(Method::GET, "/vault/v1/kv?limit=100", None)
        .await
        .unwrap();
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.iter().filter(|n| **n == "raced").count(), 1);
    assert!(!names.contains(&"other"));

    // Data keys: the retry gets the same key and bytes; the stored answer holds no key.
    let ctx = json!({"context": {"organization_id": "o"}});
    let (status, _, first) = post(&client, "/vault/v1/keys/data-key", &ctx, "k-dek").await;
    assert_eq!(status, 201);
    let (status, replayed, again) = post(&client, "/vault/v1/keys/data-key", &ctx, "k-dek").await;
    assert_eq!((status, replayed.as_deref()), (201, Some("true")));
    assert_eq!(again, first);
    let issued: Value = serde_json::from_slice(&first).unwrap();
    let data_key = issued["data_key"].as_str().unwrap();
    let db = std::fs::read(dir.path().join("vault.db")).unwrap();
    let wal = std::fs::read(dir.path().join("vault.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes
                .windows(data_key.len())
                .any(|w| w == data_key.as_bytes()),
            "the data key is not at rest in the store"
        );
    }
    let keys = json!({"keys": issued["encrypted_keys"]});
    let (status, _, first) = post(&client, "/vault/v1/keys/decrypt", &keys, "k-dec").await;
    assert_eq!(status, 200);
    let (status, replayed, again) = post(&client, "/vault/v1/keys/decrypt", &keys, "k-dec").await;
    assert_eq!((status, replayed.as_deref()), (200, Some("true")));
    assert_eq!(again, first);
    let rekey =
        json!({"context": {"organization_id": "p"}, "encrypted_keys": issued["encrypted_keys"]});
    let (status, _, first) = post(&client, "/vault/v1/keys/rekey", &rekey, "k-rekey").await;
    assert_eq!(status, 200);
    let (_, replayed, again) = post(&client, "/vault/v1/keys/rekey", &rekey, "k-rekey").await;
    assert_eq!((replayed.as_deref(), again), (Some("true"), first));
    // A key used on another endpoint is another request.
    let (status, _, _) = post(&client, "/vault/v1/keys/data-key", &ctx, "k-create").await;
    assert_eq!(status, 422);
    // A malformed key is refused before anything runs.
    let long = "k".repeat(256);
    let (status, _, _) = post(&client, "/vault/v1/kv", &object, &long).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_events_reach_the_environments_with_data_under_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    let key = setup(dir.path(), "");
    let other_key = vault(
        dir.path(),
        &["apikey", "create", "-e", "empty", "--name", "other"],
    )
    .trim()
    .to_owned();
    let (_server, base) = serve(dir.path());
    let client = ApiClient::new(&base, &key);
    let (status, _) = client
        .call(
            Method::POST,
            "/vault/v1/kv",
            Some(&json!({"name": "n", "value": "v", "key_context": {"organization_id": "o"}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);
    assert_eq!(vault(dir.path(), &["keys", "rotate"]).trim(), "v2");
    let kek = "/events?events=vault.kek.created";
    let (status, page) = client.call(Method::GET, kek, None).await.unwrap();
    assert_eq!(status, 200, "{page}");
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{page}");
    assert_eq!(data[0]["event"], "vault.kek.created");
    assert_eq!(data[0]["data"]["key_name"], "root");
    assert_eq!(data[0]["data"]["key_id"], "managed://root#v2");
    assert_eq!(
        data[0]["data"]["actor_id"], "vault_keys",
        "not the operator's login"
    );
    assert_eq!(
        data[0]["data"]["actor_source"], "dashboard",
        "not an API call"
    );
    // A rewrap and a destruction, by the operator: key management too.
    vault(dir.path(), &["keys", "rewrap", "--all"]);
    tokio::time::sleep(Duration::from_secs(vault::DESTROY_QUIET_SECS + 1)).await;
    vault(dir.path(), &["keys", "destroy", "1"]);
    for event in ["vault.data.rewrapped", "vault.kek.deleted"] {
        let (_, page) = client
            .call(Method::GET, &format!("/events?events={event}"), None)
            .await
            .unwrap();
        let data = page["data"].as_array().unwrap();
        assert_eq!(data.len(), 1, "{event}: {page}");
        assert_eq!(
            (
                &data[0]["data"]["actor_id"],
                &data[0]["data"]["actor_source"]
            ),
            (&json!("vault_keys"), &json!("dashboard")),
            "{event}: {page}"
        );
    }
    let other = ApiClient::new(&base, &other_key);
    let (_, page) = other.call(Method::GET, kek, None).await.unwrap();
    assert_eq!(page["data"], json!([]), "no data under the ring: no event");
    // The filter is required, and names only known types.
    for (path, code) in [
        ("/events", "events_required"),
        ("/events?events=vault.nope", "invalid_events"),
    ] {
        let (status, body) = client.call(Method::GET, path, None).await.unwrap();
        assert_eq!((status, body["code"].as_str()), (422, Some(code)), "{path}");
    }
    let (status, _) = client
        .call(
            Method::GET,
            "/events?events=vault.data.read&limit=101",
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
}

/// Endpoints that answer slowly (or have a long backlog) take turns of one attempt's deadline:
/// eight of them busy with seconds of backlog each do not keep a ninth waiting for a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_receivers_take_turns_and_cannot_stall_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let key = setup(dir.path(), "timeout_secs = 1");
    let mut slow = Vec::new();
    for _ in 0..8 {
        let r = Receiver::start_slow(free_port(), 200, Duration::from_millis(300)).await;
        create_webhook(
            dir.path(),
            &format!("http://{}/hook", r.addr),
            "vault.data.created",
        );
        slow.push(r);
    }
    let (_server, base) = serve(dir.path());
    let client = ApiClient::new(&base, &key);
    let create = |name: String| {
        let client = &client;
        async move {
            let body = json!({"name": name, "value": "v", "key_context": {"organization_id": "o"}});
            let (status, _) = client
                .call(Method::POST, "/vault/v1/kv", Some(&body))
                .await
                .unwrap();
            assert_eq!(status, 201);
        }
    };
    // Six seconds of backlog for each slow endpoint, every slot taken.
    for i in 0..20 {
        create(format!("slow-{i}")).await;
    }
    wait_for("every slow endpoint at work", 10, || {
        slow.iter().all(|r| !r.got().is_empty())
    })
    .await;
    let fast = Receiver::start(free_port(), 200).await;
    create_webhook(
        dir.path(),
        &format!("http://{}/hook", fast.addr),
        "vault.data.created",
    );
    create("fast".into()).await;
    let started = Instant::now();
    wait_for("the fast endpoint's delivery", 10, || {
        !fast.got().is_empty()
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "waited {:?} for a slot (the slow endpoints' backlog is 6 s)",
        started.elapsed()
    );
    assert!(
        slow.iter().all(|r| r.got().len() < 21),
        "the slow endpoints were still at work"
    );
}
