//! Outgrowing one machine: three `vault serve` processes on one PostgreSQL database (a real
//! server on loopback, from `scripts/test`), the managed ring in its tables sealed by a master
//! key file (and by AWS KMS on moto). What one replica or the CLI does, all replicas see.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::client::ApiClient;
use hyper::Method;
use serde_json::{Value, json};
use sqlx::Row;

const VAULT: &str = env!("CARGO_BIN_EXE_vault");

/// A database of its own on the test cluster, or `None` (skipped) outside CI without one.
async fn fresh_database() -> Option<String> {
    let Ok(url) = std::env::var("VAULT_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "VAULT_TEST_POSTGRES_URL is not set: the replica tests must run in CI"
        );
        eprintln!("SKIPPED: replica tests (set VAULT_TEST_POSTGRES_URL or run scripts/test)");
        return None;
    };
    Some(vault_testkit::postgres::fresh_database(&url, "replicas").await)
}

/// Three replicas (started on demand) sharing one database and one seal.
struct Cluster {
    dir: tempfile::TempDir,
    url: String,
    seal: String,
    config: Option<PathBuf>,
    env: Vec<(String, String)>,
}

struct Replica {
    child: Child,
    base: String,
}

impl Cluster {
    /// A cluster on a fresh database, sealed by a new master key file.
    async fn new() -> Option<Self> {
        let url = fresh_database().await?;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("master.key");
        let mut c = Self {
            dir,
            url,
            seal: format!("file:{}", key.display()),
            config: None,
            env: Vec::new(),
        };
        let out = c.cli_ok(&["keys", "init-seal", key.to_str().unwrap()]);
        assert!(out.starts_with("master-key:"), "{out}");
        c.config = None;
        Some(c)
    }

    fn command(&self, data_dir: &Path) -> Command {
        let mut cmd = Command::new(VAULT);
        cmd.arg("--data-dir")
            .arg(data_dir)
            .env("VAULT_DATABASE_URL", &self.url)
            .env("VAULT_SEAL", &self.seal)
            .env_remove("VAULT_CONFIG");
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.command(&self.dir.path().join("cli"))
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs the CLI, which must succeed; returns its standard output.
    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "vault {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn api_key(&self, name: &str) -> String {
        self.cli_ok(&["apikey", "create", "-e", "prod", "--name", name])
    }

    /// Starts replica `i` on a free loopback port, each with a data directory of its own
    /// (nothing in it is used: the database is the only shared state).
    fn start(&self, i: usize) -> Replica {
        let mut child = self
            .command(&self.dir.path().join(format!("replica-{i}")))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        let base = loop {
            let line = err.next().expect("serve exited").unwrap();
            if let Some(rest) = line.strip_prefix("vault: listening on ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        std::thread::spawn(move || for _ in err {});
        Replica { child, base }
    }

    async fn pool(&self) -> sqlx::AnyPool {
        sqlx::AnyPool::connect(&self.url).await.unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(r: &Replica, key: &str) -> ApiClient {
    ApiClient::new(&r.base, key)
}

async fn create(c: &ApiClient, name: &str, value: &str) -> Value {
    let (status, meta) = c
        .call(
            Method::POST,
            "/vault/v1/kv",
            Some(
                &json!({"name": name, "value": value, "key_context": {"organization_id": "org_1"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{meta}");
    meta
}

/// Waits until `check` holds, failing after `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_objects_keys_and_the_ring() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let key = cluster.api_key("e2e");
    let replicas: Vec<Replica> = (0..3).map(|i| cluster.start(i)).collect();
    let clients: Vec<ApiClient> = replicas.iter().map(|r| client(r, &key)).collect();

    // Ready: the database answers and the ring is unsealed.
    for c in &clients {
        let (status, body) = c.call(Method::GET, "/readyz", None).await.unwrap();
        assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    }

    // Created through replica 1, read through 2 and 3.
    let meta = create(&clients[0], "card", "4111").await;
    let id = meta["id"].as_str().unwrap().to_owned();
    assert!(meta["key_id"].as_str().unwrap().ends_with("#v1"), "{meta}");
    for c in &clients[1..] {
        let (status, obj) = c
            .call(Method::GET, &format!("/vault/v1/kv/{id}"), None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{obj}");
        assert_eq!(obj["value"], "4111");
    }

    // The same update with the same version check through all three at once: one wins.
    let version = meta["version_id"].as_str().unwrap().to_owned();
    let updates = clients.iter().enumerate().map(|(i, c)| {
        let body = json!({"value": format!("v{i}"), "version_check": version});
        let path = format!("/vault/v1/kv/{id}");
        async move { c.call(Method::PUT, &path, Some(&body)).await.unwrap().0 }
    });
    let mut statuses = futures::future::join_all(updates).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409, 409]);

    // An API key made with the CLI works on all three at once; revoked, on none within 1 s.
    let second = cluster.api_key("second");
    let id_of_second = {
        let list = cluster.cli_ok(&["apikey", "list", "--json"]);
        list.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|k| k["name"] == "second")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let seconds: Vec<ApiClient> = replicas.iter().map(|r| client(r, &second)).collect();
    let lists = seconds
        .iter()
        .map(|c| async move { c.call(Method::GET, "/vault/v1/kv", None).await.unwrap().0 });
    assert_eq!(futures::future::join_all(lists).await, [200, 200, 200]);
    cluster.cli_ok(&["apikey", "revoke", &id_of_second]);
    within(
        Duration::from_secs(1),
        "revocation seen by every replica",
        || async {
            let lists = seconds
                .iter()
                .map(|c| async move { c.call(Method::GET, "/vault/v1/kv", None).await.unwrap().0 });
            futures::future::join_all(lists).await == [401, 401, 401]
        },
    )
    .await;

    // A data key issued under v1, kept by its caller.
    let (status, issued) = clients[0]
        .call(
            Method::POST,
            "/vault/v1/keys/data-key",
            Some(&json!({"context": {"organization_id": "org_1"}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{issued}");
    let blob = issued["encrypted_keys"].as_str().unwrap().to_owned();

    // Rotated with the CLI: within 1 s every replica seals under v2.
    assert_eq!(cluster.cli_ok(&["keys", "rotate"]), "v2");
    let rotated = Instant::now();
    for (i, c) in clients.iter().enumerate() {
        let mut n = 0;
        within(
            Duration::from_secs(1).saturating_sub(rotated.elapsed()) + Duration::from_millis(100),
            "sealing under v2",
            || {
                n += 1;
                let name = format!("after-rotate-{i}-{n}");
                async move {
                    create(c, &name, "x").await["key_id"]
                        .as_str()
                        .unwrap()
                        .ends_with("#v2")
                }
            },
        )
        .await;
    }

    // Rewrapped, then v1 destroyed (the issued key under it shredded with consent): within
    // 1 s no replica opens v1, and every stored object still reads.
    let out = cluster.cli_ok(&["keys", "rewrap", "--all"]);
    assert!(
        out.contains("unreadable") && !out.contains(" 0 rewrapped"),
        "{out}"
    );
    for c in &clients {
        let (status, _) = c
            .call(
                Method::POST,
                "/vault/v1/keys/decrypt",
                Some(&json!({"keys": blob})),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "v1 still opens before the destroy");
    }
    let out = cluster.cli_ok(&["keys", "destroy", "1", "--yes-destroy-data"]);
    assert!(out.contains("v1 destroyed"), "{out}");
    within(
        Duration::from_secs(1),
        "v1 refused by every replica",
        || async {
            let tries = clients.iter().map(|c| {
                let body = json!({"keys": blob});
                async move {
                    c.call(Method::POST, "/vault/v1/keys/decrypt", Some(&body))
                        .await
                        .unwrap()
                        .0
                }
            });
            futures::future::join_all(tries)
                .await
                .iter()
                .all(|&s| s == 403) // key_unavailable: the key is gone (not an outage, not bad input)
        },
    )
    .await;
    for c in &clients {
        let (status, obj) = c
            .call(Method::GET, &format!("/vault/v1/kv/{id}"), None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{obj}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replica_loses_no_acknowledged_write_and_no_audit_event() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let key = cluster.api_key("load");
    let mut replicas: Vec<Option<Replica>> = (0..3).map(|i| Some(cluster.start(i))).collect();
    let bases: Vec<String> = replicas
        .iter()
        .map(|r| r.as_ref().unwrap().base.clone())
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..16 {
        let c = ApiClient::new(&bases[w % 3], &key);
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            // (id, the last acknowledged value)
            let mut acknowledged: Vec<(String, String)> = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let value = format!("w{w}-{n}");
                let body = json!({"name": format!("o-{w}-{n}"), "value": value, "key_context": {"organization_id": "org_1"}});
                let Ok((201, meta)) = c.call(Method::POST, "/vault/v1/kv", Some(&body)).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let id = meta["id"].as_str().unwrap().to_owned();
                let updated = format!("{value}-updated");
                let body = json!({"value": updated, "version_check": meta["version_id"]});
                match c.call(Method::PUT, &format!("/vault/v1/kv/{id}"), Some(&body)).await {
                    Ok((200, _)) => acknowledged.push((id, updated)),
                    _ => acknowledged.push((id, value)),
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SIGKILL: no shutdown, requests cut in the middle.
    let mut killed = replicas[1].take().unwrap();
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    assert!(
        acknowledged.len() > 48,
        "the load ran: {}",
        acknowledged.len()
    );

    // Every acknowledged write is there and decrypts through the survivors. An update cut
    // off before its answer may have landed: the value is then the updated one.
    let survivors = [
        client(replicas[0].as_ref().unwrap(), &key),
        client(replicas[2].as_ref().unwrap(), &key),
    ];
    for (i, (id, value)) in acknowledged.iter().enumerate() {
        let (status, obj) = survivors[i % 2]
            .call(Method::GET, &format!("/vault/v1/kv/{id}"), None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{id}: {obj}");
        let got = obj["value"].as_str().unwrap();
        assert!(
            got == value || got == format!("{value}-updated"),
            "{id}: {got} for {value}"
        );
    }

    // The audit trail matches the stored changes exactly: one created event per object, one
    // updated event per later version, and no event for a change that is not stored.
    let pool = cluster.pool().await;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
                .try_get::<i64, _>("n")
                .unwrap()
        }
    };
    assert_eq!(
        count(
            "SELECT COUNT(*) AS n FROM objects o WHERE (SELECT COUNT(*) FROM audit_events a \
               WHERE a.event = 'vault.data.created' AND a.object_id = o.id) <> 1"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) AS n FROM objects o WHERE (SELECT COUNT(*) FROM audit_events a \
               WHERE a.event = 'vault.data.updated' AND a.object_id = o.id) <> \
               (SELECT COUNT(*) FROM versions v WHERE v.object_id = o.id) - 1"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) AS n FROM audit_events a WHERE a.event IN \
               ('vault.data.created', 'vault.data.updated') AND NOT EXISTS \
               (SELECT 1 FROM objects o WHERE o.id = a.object_id)"
        )
        .await,
        0
    );
    let objects = count("SELECT COUNT(*) AS n FROM objects").await;
    assert!(objects >= i64::try_from(acknowledged.len()).unwrap());
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_or_missing_seal_stops_the_start() {
    let Some(mut cluster) = Cluster::new().await else {
        return;
    };
    cluster.api_key("first");
    // The ring exists (sealed by the cluster's key) once a process opened it.
    cluster.cli_ok(&["kv", "list", "-e", "prod"]);
    let status = cluster.cli_ok(&["keys", "status"]);
    assert!(status.contains("ring root"), "{status}");
    let good = cluster.seal.clone();

    let other = cluster.dir.path().join("other.key");
    cluster.cli_ok(&["keys", "init-seal", other.to_str().unwrap()]);
    cluster.seal = format!("file:{}", other.display());
    let out = cluster
        .command(&cluster.dir.path().join("r"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    // The integrity key, sealed like the root keys, is the first thing it unseals.
    assert!(
        err.contains("cannot unseal the integrity key (table integrity)")
            && err.contains("not by this master key"),
        "{err}"
    );

    cluster.seal = format!("file:{}", cluster.dir.path().join("missing.key").display());
    let out = cluster
        .command(&cluster.dir.path().join("r"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing.key"),
        "{out:?}"
    );

    // No seal at all with a database: refused before anything is opened.
    let out = Command::new(VAULT)
        .args([
            "--data-dir",
            cluster.dir.path().join("r").to_str().unwrap(),
            "--database-url",
            &cluster.url,
            "serve",
        ])
        .env_remove("VAULT_SEAL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--seal"),
        "{out:?}"
    );

    cluster.seal = good;
    let r = cluster.start(0);
    let key = cluster.api_key("after");
    create(&client(&r, &key), "fine", "v").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_embedded_store_moves_into_postgres_and_reads_through_a_replica() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let embedded = cluster.dir.path().join("embedded");
    let local = |args: &[&str]| {
        let out = Command::new(VAULT)
            .arg("--data-dir")
            .arg(&embedded)
            .args(args)
            .env_remove("VAULT_DATABASE_URL")
            .env_remove("VAULT_SEAL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let mut objects = Vec::new();
    for i in 0..30 {
        let meta: Value = serde_json::from_str(&local(&[
            "kv",
            "create",
            "-e",
            "prod",
            "--json",
            "--name",
            &format!("n{i}"),
            "--context",
            r#"{"organization_id":"org_1"}"#,
            "--value",
            &format!("value-{i}"),
        ]))
        .unwrap();
        objects.push((
            meta["id"].as_str().unwrap().to_owned(),
            format!("value-{i}"),
        ));
    }
    local(&["keys", "rotate"]);
    let key = local(&["apikey", "create", "-e", "prod", "--name", "moved"]);

    // The embedded store with a seal wants its ring in the database: refused while the file
    // ring holds the data, with the way out named.
    let out = Command::new(VAULT)
        .arg("--data-dir")
        .arg(&embedded)
        .args(["--seal", &cluster.seal, "kv", "list", "-e", "prod"])
        .env_remove("VAULT_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("vault keys migrate-ring"),
        "{out:?}"
    );

    let copy = |to: &str| {
        Command::new(VAULT)
            .arg("--data-dir")
            .arg(&embedded)
            .args(["--seal", &cluster.seal, "store", "copy", "--to", to])
            .env_remove("VAULT_DATABASE_URL")
            .output()
            .unwrap()
    };
    let out = copy(&cluster.url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("objects: 30 rows") && printed.contains("ring root: generation 1"),
        "{printed}"
    );
    // Done: a second copy into it is refused.
    let again = copy(&cluster.url);
    assert_eq!(again.status.code(), Some(3), "{again:?}");

    let r = cluster.start(0);
    let c = client(&r, &key);
    for (id, value) in &objects {
        let (status, obj) = c
            .call(Method::GET, &format!("/vault/v1/kv/{id}"), None)
            .await
            .unwrap();
        assert_eq!(
            (status, obj["value"].as_str()),
            (200, Some(value.as_str())),
            "{obj}"
        );
    }
    let meta = create(&c, "new", "v").await;
    assert!(
        meta["key_id"].as_str().unwrap().ends_with("#v2"),
        "the copied ring's primary: {meta}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ring_sealed_by_aws_kms_on_moto() {
    let Some(moto) = common::moto_url() else {
        return;
    };
    let Some(mut cluster) = Cluster::new().await else {
        return;
    };
    let kms = common::aws_client(&moto);
    let key_id = kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let config = cluster.dir.path().join("vault.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.managed]\ntype = \"managed\"\n\n[providers.sealer]\ntype = \"aws-kms\"\nkey_id = \"{key_id}\"\nregion = \"us-east-1\"\nendpoint_url = \"{moto}\"\ncache = false\n"
        ),
    )
    .unwrap();
    cluster.config = Some(config);
    cluster.seal = "sealer".into();
    cluster.env = vec![
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
    ];
    let key = cluster.api_key("kms");
    let r = cluster.start(0);
    let meta = create(&client(&r, &key), "sealed", "by kms").await;
    assert!(
        meta["key_id"]
            .as_str()
            .unwrap()
            .starts_with("managed://root#"),
        "{meta}"
    );
    let pool = cluster.pool().await;
    let by: String =
        sqlx::query("SELECT sealed_by FROM key_ring_versions WHERE ring = 'root' AND version = 1")
            .fetch_one(&pool)
            .await
            .unwrap()
            .try_get("sealed_by")
            .unwrap();
    assert!(by.starts_with("aws-kms://") && by.contains(&key_id), "{by}");
    pool.close().await;
    drop(r);
    // Restarted: the ring is unsealed through KMS again.
    let r = cluster.start(1);
    let (status, obj) = client(&r, &key)
        .call(
            Method::GET,
            &format!("/vault/v1/kv/{}", meta["id"].as_str().unwrap()),
            None,
        )
        .await
        .unwrap();
    assert_eq!((status, obj["value"].as_str()), (200, Some("by kms")));
}

/// A loopback TCP proxy to `target`; aborting its task drops every connection through it, as
/// a database crash or a network cut would.
async fn proxy(listener: tokio::net::TcpListener, target: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            connections.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_is_a_503_with_retry_after_and_changes_nothing() {
    let Some(mut cluster) = Cluster::new().await else {
        return;
    };
    let key = cluster.api_key("outage");
    // The replica reaches the database through a proxy the test can cut.
    let direct = cluster.url.clone();
    let (scheme_user, rest) = direct.split_once('@').unwrap();
    let (host, database) = rest.split_once('/').unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cut = proxy(listener, host.to_owned()).await;
    cluster.url = format!("{scheme_user}@127.0.0.1:{port}/{database}");
    let r = cluster.start(0);
    let c = client(&r, &key);
    let id = create(&c, "before", "v").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    cut.abort();
    let _ = cut.await;
    let (status, headers, body) = c
        .call_with_headers(Method::GET, &format!("/vault/v1/kv/{id}"), None)
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    let (status, _) = c
        .call(
            Method::POST,
            "/vault/v1/kv",
            Some(&json!({"name": "during", "value": "v", "key_context": {"organization_id": "org_1"}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 503);
    let (status, body) = c.call(Method::GET, "/readyz", None).await.unwrap();
    assert_eq!(
        (status, body["status"].as_str()),
        (503, Some("unavailable"))
    );
    let (status, _) = c.call(Method::GET, "/healthz", None).await.unwrap();
    assert_eq!(status, 200, "alive, though not ready");

    // Back: the replica recovers by itself, and the write refused during the outage is not
    // there, half or whole.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let _back = proxy(listener, host.to_owned()).await;
    within(Duration::from_secs(10), "recovery", || async {
        c.call(Method::GET, "/readyz", None).await.unwrap().0 == 200
    })
    .await;
    let (status, obj) = c
        .call(Method::GET, &format!("/vault/v1/kv/{id}"), None)
        .await
        .unwrap();
    assert_eq!((status, obj["value"].as_str()), (200, Some("v")));
    let (status, _) = c
        .call(Method::GET, "/vault/v1/kv/name/during", None)
        .await
        .unwrap();
    assert_eq!(status, 404);
}

/// On one machine: the file ring moves into the SQLite store (sealed), is resealed with
/// another master key, and moves back into its file, the data readable at every step and the
/// refusals where they belong. Needs no PostgreSQL.
#[test]
fn the_ring_moves_into_the_database_and_back_and_is_resealed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        Command::new(VAULT)
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env_remove("VAULT_DATABASE_URL")
            .env_remove("VAULT_SEAL")
            .env_remove("VAULT_CONFIG")
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let a = dir.path().join("a.key");
    let b = dir.path().join("b.key");
    ok(&["keys", "init-seal", a.to_str().unwrap()]);
    ok(&["keys", "init-seal", b.to_str().unwrap()]);
    let (seal_a, seal_b) = (
        format!("file:{}", a.display()),
        format!("file:{}", b.display()),
    );
    let get = |seal: Option<&str>, id: &str| {
        let mut args = vec!["kv", "get", "-e", "prod", id];
        if let Some(s) = seal {
            args = [&["--seal", s][..], &args[..]].concat();
        }
        run(&args)
    };
    let meta: Value = serde_json::from_str(&ok(&[
        "kv",
        "create",
        "-e",
        "prod",
        "--json",
        "--name",
        "n",
        "--context",
        r#"{"organization_id":"org_1"}"#,
        "--value",
        "kept",
    ]))
    .unwrap();
    let id = meta["id"].as_str().unwrap().to_owned();

    // In: the file is set aside, the ring is sealed in vault.db, the value reads with the seal.
    let out = ok(&[
        "--seal",
        &seal_a,
        "keys",
        "migrate-ring",
        "--to",
        "database",
    ]);
    assert!(out.contains("moved into SQLite"), "{out}");
    assert!(!data.join("keyring-root.json").exists());
    let read = get(Some(&seal_a), &id);
    assert_eq!(String::from_utf8_lossy(&read.stdout), "kept", "{read:?}");
    // Without the seal the ring is the (now missing) file: nothing opens, nothing is created.
    assert!(!get(None, &id).status.success());
    assert!(
        !data.join("keyring-root.json").exists(),
        "reading never creates a ring"
    );
    // Encrypting without the seal would need a new ring file over the store's ring: refused.
    let enc = Command::new(VAULT)
        .arg("--data-dir")
        .arg(&data)
        .args(["encrypt", "--context", r#"{"organization_id":"org_1"}"#])
        .env_remove("VAULT_DATABASE_URL")
        .env_remove("VAULT_SEAL")
        .env_remove("VAULT_CONFIG")
        .output()
        .unwrap();
    assert_eq!(enc.status.code(), Some(5), "{enc:?}");
    assert!(
        String::from_utf8_lossy(&enc.stderr).contains("give --seal"),
        "{enc:?}"
    );
    assert!(!data.join("keyring-root.json").exists());
    // Again: the database holds one already.
    let again = run(&[
        "--seal",
        &seal_a,
        "keys",
        "migrate-ring",
        "--to",
        "database",
    ]);
    assert_eq!(again.status.code(), Some(5), "{again:?}");

    // Resealed with b: b opens it, a no longer does.
    let out = ok(&["--seal", &seal_a, "keys", "reseal", "--to", &seal_b]);
    assert!(out.contains("1 root key(s) sealed again"), "{out}");
    assert_eq!(
        String::from_utf8_lossy(&get(Some(&seal_b), &id).stdout),
        "kept"
    );
    let refused = get(Some(&seal_a), &id);
    assert_eq!(refused.status.code(), Some(5), "{refused:?}");

    // Out: back into the file, the database rows gone, the value readable without a seal.
    ok(&["--seal", &seal_b, "keys", "migrate-ring", "--to", "file"]);
    assert!(data.join("keyring-root.json").exists());
    assert_eq!(String::from_utf8_lossy(&get(None, &id).stdout), "kept");
}
