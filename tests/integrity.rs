//! The database is untrusted storage, end to end through the `vault` binary, on SQLite and (from
//! `scripts/test`) PostgreSQL: whatever someone who can write the database adds, changes or
//! deletes in the rows that decide who may do what is refused, not obeyed.
//!
//! - BYOK rules forged from a data-key answer (a genuine data key and wrap for the attacker's own
//!   context, sealed as the rules' envelope) route nothing and reach no forged endpoint;
//! - API key rows inserted or edited authenticate nothing; webhook endpoints edited or inserted
//!   are never posted to; every other tenant keeps being served;
//! - the BYOK document deleted, or an older one put back, is refused at start, naming its table;
//! - a store provider over plain HTTP is refused;
//! - a data directory made by the release before row integrity is protected once, and keeps
//!   every key, rule and webhook it had.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::client::ApiClient;
use common::receiver::Receiver;
use hyper::Method;
use serde_json::{Value, json};
use sqlx::Row as _;

const VAULT: &str = env!("CARGO_BIN_EXE_vault");

/// A deployment under test: a data directory and `vault.toml`, and on PostgreSQL its database
/// and master key.
struct Deployment {
    dir: tempfile::TempDir,
    /// PostgreSQL's URL and the seal, or `None` for the embedded default.
    postgres: Option<(String, String)>,
}

struct Serve {
    child: Child,
    base: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CONFIG: &str = "default = \"managed\"\n[providers.managed]\ntype = \"managed\"\n\
    [byok]\nallow_http_endpoints = true\n[webhooks]\nretry_base_ms = 100\n";

impl Deployment {
    fn sqlite() -> Self {
        let d = Self {
            dir: tempfile::tempdir().unwrap(),
            postgres: None,
        };
        std::fs::write(d.dir.path().join("vault.toml"), CONFIG).unwrap();
        d
    }

    /// On a fresh database of the test cluster, sealed by a new master key; `None` (skipped)
    /// outside `scripts/test`.
    async fn postgres() -> Option<Self> {
        let Ok(url) = std::env::var("VAULT_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "VAULT_TEST_POSTGRES_URL is not set: the PostgreSQL integrity tests must run in CI"
            );
            eprintln!("SKIPPED: PostgreSQL integrity tests (run scripts/test)");
            return None;
        };
        let url = vault_testkit::postgres::fresh_database(&url, "integrity").await;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("master.key");
        let d = Self {
            postgres: Some((url, format!("file:{}", key.display()))),
            dir,
        };
        std::fs::write(d.dir.path().join("vault.toml"), CONFIG).unwrap();
        d.ok(&["keys", "init-seal", key.to_str().unwrap()]);
        Some(d)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(VAULT);
        cmd.arg("--data-dir")
            .arg(self.data())
            .arg("--config")
            .arg(self.dir.path().join("vault.toml"))
            .env_remove("VAULT_DATABASE_URL")
            .env_remove("VAULT_SEAL")
            .stdin(Stdio::null());
        if let Some((url, seal)) = &self.postgres {
            cmd.env("VAULT_DATABASE_URL", url).env("VAULT_SEAL", seal);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "vault {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail with `code`, saying `says`.
    fn fails(&self, args: &[&str], code: i32, says: &str) {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "vault {args:?}: {stderr}");
        assert!(stderr.contains(says), "vault {args:?}: {stderr}");
    }

    fn api_key(&self, environment: &str) -> String {
        self.ok(&["apikey", "create", "-e", environment, "--name", "test"])
            .trim()
            .to_owned()
    }

    fn serve(&self) -> Serve {
        let mut child = self
            .command()
            .args(["serve", "--listen", "127.0.0.1:0", "--environment", "prod"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let addr = common::listening_address(&mut child);
        Serve {
            child,
            base: format!("http://{addr}"),
        }
    }

    /// `vault serve`, which must refuse to start, saying `says`.
    fn serve_refused(&self, says: &str) {
        let out = self
            .command()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started: {stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }

    /// A webhook endpoint of environment `prod` for `vault.data.created` at `url`; its id.
    fn webhook(&self, url: &str) -> String {
        let out = self.ok(&[
            "webhook",
            "create",
            "-e",
            "prod",
            "--url",
            url,
            "--events",
            "vault.data.created",
        ]);
        out.lines().next().unwrap().to_owned()
    }

    async fn pool(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        let url = match &self.postgres {
            Some((url, _)) => url.clone(),
            None => format!("sqlite://{}/vault.db", self.data().display()),
        };
        sqlx::AnyPool::connect(&url).await.unwrap()
    }

    /// Runs one statement as a database writer would.
    async fn sql(&self, statement: &str) {
        let pool = self.pool().await;
        sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

async fn call(
    base: &str,
    key: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    ApiClient::new(base, key)
        .call(method, path, body)
        .await
        .unwrap()
}

async fn create(base: &str, key: &str, name: &str, org: &str) -> (u16, Value) {
    call(
        base,
        key,
        Method::POST,
        "/vault/v1/kv",
        Some(&json!({"name": name, "value": "v", "key_context": {"organization_id": org}})),
    )
    .await
}

/// A customer key that answers nothing (a closed loopback port): onboarding it tries no network
/// beyond this machine.
fn add_ghost_rule(d: &Deployment, org: &str, provider: &str) {
    d.ok(&[
        "byok",
        "provider",
        "add",
        provider,
        "--type",
        "aws-kms",
        "--key-id",
        &format!("arn:aws:kms:us-east-1:111122223333:key/{provider}"),
        "--region",
        "us-east-1",
        "--endpoint-url",
        "http://127.0.0.1:9",
        "--unverified",
    ]);
    d.ok(&[
        "byok",
        "set",
        "--match",
        &format!("organization_id={org}"),
        "--provider",
        provider,
        "--unverified",
    ]);
}

/// The seal's associated data, as `docs/FORMAT.md` ("The BYOK document") defines it.
fn byok_aad(generation: u64, document: &str) -> Vec<u8> {
    let mut aad = b"vault-byok/v1\0".to_vec();
    aad.extend_from_slice(&generation.to_be_bytes());
    aad.extend_from_slice(document.as_bytes());
    aad
}

async fn forged_byok_rules_are_refused(d: Deployment) {
    let key = d.api_key("prod");
    add_ghost_rule(&d, "org_ghost", "ghost");
    let serve = d.serve();

    // What the data-key API hands any caller: a data key and its genuine wrap, for the
    // caller's own context.
    let (status, answer) = call(
        &serve.base,
        &key,
        Method::POST,
        "/vault/v1/keys/data-key",
        Some(&json!({"context": {"organization_id": "org_mallory"}})),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let data_key: [u8; 32] = STANDARD
        .decode(answer["data_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let blob = STANDARD
        .decode(answer["encrypted_keys"].as_str().unwrap())
        .unwrap();
    let envelope = vault_crypto::Envelope::parse(&blob).unwrap();
    let wrapped = envelope.wrapped_keys().to_vec();
    let mallory = envelope.context().clone();

    // The forged rules: every organization_id=org_acme value to a key service of the
    // attacker's, which would log every data key and receive this process's credentials.
    let evil = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    evil.set_nonblocking(true).unwrap();
    let evil_url = format!("http://{}", evil.local_addr().unwrap());
    let document = json!({
        "providers": [{
            "name": "evil",
            "definition": format!("type = \"aws-kms\"\nkey_id = \"arn:aws:kms:us-east-1:999999999999:key/evil\"\nregion = \"us-east-1\"\nendpoint_url = \"{evil_url}\"\n"),
            "created_at": 1,
        }],
        "rules": [{"match": {"organization_id": "org_acme"}, "provider": "evil", "verified": true, "created_at": 1}],
    })
    .to_string();
    let seal = vault_crypto::danger::seal_with_key(
        &vault_crypto::danger::data_key_from_bytes(data_key),
        &wrapped,
        &mallory,
        b"",
        vault_crypto::Aad::new(&byok_aad(1, &document)),
    )
    .unwrap();
    // The same generation the integrity record says exists: only the seal can tell.
    let pool = d.pool().await;
    let before: (String, Vec<u8>) = {
        let row = sqlx::query("SELECT document, seal FROM byok_config WHERE id = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        (row.get("document"), row.get("seal"))
    };
    sqlx::query("UPDATE byok_config SET document = $1, seal = $2 WHERE id = 1")
        .bind(&document)
        .bind(seal)
        .execute(&pool)
        .await
        .unwrap();

    d.fails(
        &["byok", "list"],
        5,
        "not sealed by this deployment's default key",
    );
    d.fails(
        &["config", "check"],
        3,
        "not sealed by this deployment's default key",
    );
    d.serve_refused("table byok_config");
    // The running server keeps the rules it had: org_acme's values stay on the managed ring.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, meta) = create(&serve.base, &key, "acme-card", "org_acme").await;
    assert_eq!(status, 201, "{meta}");
    assert!(
        meta["key_id"].as_str().unwrap().starts_with("managed://"),
        "{meta}"
    );
    let (status, ghost) = create(&serve.base, &key, "other-tenant", "org_other").await;
    assert_eq!(status, 201, "every other tenant is served: {ghost}");
    assert!(
        matches!(evil.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no request reached the forged endpoint"
    );

    // Put back as it was: the rules open again.
    sqlx::query("UPDATE byok_config SET document = $1, seal = $2 WHERE id = 1")
        .bind(&before.0)
        .bind(&before.1)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert!(d.ok(&["byok", "list"]).contains("org_ghost"));
}

#[tokio::test]
async fn forged_byok_rules_are_refused_on_sqlite() {
    forged_byok_rules_are_refused(Deployment::sqlite()).await;
}

#[tokio::test]
async fn forged_byok_rules_are_refused_on_postgres() {
    if let Some(d) = Deployment::postgres().await {
        forged_byok_rules_are_refused(d).await;
    }
}

/// Waits until `check` holds, failing after `limit`.
async fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rows_written_into_the_database_are_refused(d: Deployment) {
    use sha2::Digest as _;
    let key_a = d.api_key("prod");
    let key_b = d.api_key("prod");
    let key_other = d.api_key("other");
    let id_b = format!("key_{}", &key_b[3..15]);
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), 200).await;
    let attacker = Receiver::start("127.0.0.1:0".parse().unwrap(), 200).await;
    let hook = format!("http://{}/hook", receiver.addr);
    let endpoint = d.webhook(&hook);
    let serve = d.serve();
    let (status, _) = create(&serve.base, &key_a, "first", "org_1").await;
    assert_eq!(status, 201);
    within(Duration::from_secs(10), "the genuine delivery", || {
        receiver.got().len() == 1
    })
    .await;

    // The outbox: another environment's event put in this endpoint's queue is not posted.
    let (status, _) = create(&serve.base, &key_other, "theirs", "org_2").await;
    assert_eq!(status, 201);
    d.sql(&format!(
        "INSERT INTO webhook_deliveries (endpoint_id, event_seq) \
         SELECT '{endpoint}', seq FROM audit_events WHERE environment = 'other'"
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.got().len(),
        1,
        "another environment's event was posted"
    );

    // Webhooks: an endpoint pointed elsewhere, and one inserted beside it.
    let evil = format!("http://{}/hook", attacker.addr);
    d.sql(&format!(
        "UPDATE webhook_endpoints SET url = '{evil}' WHERE id = '{endpoint}'"
    ))
    .await;
    d.sql(&format!(
        "INSERT INTO webhook_endpoints (id, environment, url, events, secret, secret_key_id, created_at, mac) \
         SELECT 'we_FORGED', environment, '{evil}', events, secret, secret_key_id, created_at, mac \
         FROM webhook_endpoints WHERE id = '{endpoint}'"
    ))
    .await;
    // API keys: one minted by an INSERT, one moved to another environment.
    let minted = "sk_MintedByAnInsertABCDEFGHIJKLMNOPQRSTUVWXYZ0";
    assert_eq!(minted.len(), 46);
    let hash = hex(&sha2::Sha256::digest(minted.as_bytes()));
    let blob = if d.postgres.is_some() {
        format!("decode('{hash}', 'hex')")
    } else {
        format!("X'{hash}'")
    };
    d.sql(&format!(
        "INSERT INTO api_keys (id, lookup, hash, environment, name, created_at) \
         VALUES ('key_MintedByAnIn', 'MintedByAnIn', {blob}, 'prod', 'mallory', 1)"
    ))
    .await;
    d.sql(&format!(
        "UPDATE api_keys SET environment = 'other' WHERE id = '{id_b}'"
    ))
    .await;

    for key in [minted, key_b.as_str()] {
        let (status, body) = call(&serve.base, key, Method::GET, "/vault/v1/kv", None).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, _) = create(&serve.base, &key_a, "second", "org_1").await;
    assert_eq!(status, 201, "the genuine key is still served");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        attacker.got().is_empty(),
        "nothing posted where a writer said"
    );
    assert_eq!(
        receiver.got().len(),
        1,
        "the edited endpoint is refused whole"
    );
    let listed = d.ok(&["webhook", "list"]);
    assert_eq!(listed.matches("TAMPERED").count(), 2, "{listed}");
    let keys = d.ok(&["apikey", "list"]);
    assert_eq!(keys.matches("TAMPERED").count(), 2, "{keys}");
    drop(serve);

    // The BYOK document: deleted, then an older one put back.
    add_ghost_rule(&d, "org_ghost", "ghost");
    let pool = d.pool().await;
    let row = sqlx::query("SELECT generation, document, seal, seal_key_id FROM byok_config")
        .fetch_one(&pool)
        .await
        .unwrap();
    let old: (i64, String, Vec<u8>, String) = (
        row.get("generation"),
        row.get("document"),
        row.get("seal"),
        row.get("seal_key_id"),
    );
    pool.close().await;
    d.sql("DELETE FROM byok_config").await;
    d.serve_refused("table byok_config");
    d.fails(&["byok", "list"], 5, "table byok_config");
    restore_byok(&d, &old).await;
    assert!(d.ok(&["byok", "list"]).contains("org_ghost"));
    add_ghost_rule(&d, "org_ghost2", "ghost2");
    restore_byok(&d, &old).await;
    d.serve_refused("table byok_config");
    d.fails(&["byok", "list"], 5, "integrity record says exists");

    // The integrity record itself deleted.
    d.sql("DELETE FROM integrity").await;
    if d.postgres.is_some() {
        d.serve_refused("run `vault keys protect`");
        // Its rows carry tags: protecting it again takes the operator's explicit word.
        d.fails(&["keys", "protect"], 8, "vault keys protect --force");
        d.ok(&["keys", "protect", "--force"]);
        let serve = d.serve();
        let (status, _) = create(&serve.base, &key_a, "third", "org_1").await;
        assert_eq!(status, 201, "every row and the ring taken as they are");
    } else {
        d.serve_refused("the integrity record (table integrity) is missing");
    }
}

/// Puts `old` (generation, document, seal, seal key) back as the BYOK document.
async fn restore_byok(d: &Deployment, old: &(i64, String, Vec<u8>, String)) {
    let pool = d.pool().await;
    sqlx::query("DELETE FROM byok_config")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO byok_config (id, generation, document, seal, seal_key_id) \
         VALUES (1, $1, $2, $3, $4)",
    )
    .bind(old.0)
    .bind(old.1.clone())
    .bind(old.2.clone())
    .bind(old.3.clone())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn rows_written_into_the_database_are_refused_on_sqlite() {
    rows_written_into_the_database_are_refused(Deployment::sqlite()).await;
}

#[tokio::test]
async fn rows_written_into_the_database_are_refused_on_postgres() {
    if let Some(d) = Deployment::postgres().await {
        rows_written_into_the_database_are_refused(d).await;
    }
}

/// A row put back as it was before the vault changed it (a revoked key's row from before its
/// revocation, a deleted webhook endpoint) is refused, by a running server within a second and
/// by every process started afterwards: the integrity record lists what was revoked and
/// deleted.
async fn an_older_copy_of_a_row_is_refused(d: Deployment) {
    let key_a = d.api_key("prod");
    let key_b = d.api_key("prod");
    let id_b = format!("key_{}", &key_b[3..15]);
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), 200).await;
    let hook = format!("http://{}/hook", receiver.addr);
    let endpoint = d.webhook(&hook);
    let pool = d.pool().await;
    let key_row = sqlx::query("SELECT mac FROM api_keys WHERE id = $1")
        .bind(&id_b)
        .fetch_one(&pool)
        .await
        .unwrap();
    let old_mac: Vec<u8> = key_row.get("mac");
    let hook_row = sqlx::query(
        "SELECT environment, url, events, secret, secret_key_id, created_at, mac \
         FROM webhook_endpoints WHERE id = $1",
    )
    .bind(&endpoint)
    .fetch_one(&pool)
    .await
    .unwrap();
    let serve = d.serve();
    let kv = |key: &str| {
        let (base, key) = (serve.base.clone(), key.to_owned());
        async move { call(&base, &key, Method::GET, "/vault/v1/kv", None).await.0 }
    };
    assert_eq!(kv(&key_b).await, 200);

    d.ok(&["apikey", "revoke", &id_b]);
    d.ok(&["webhook", "delete", &endpoint]);
    assert_eq!(kv(&key_b).await, 401);
    // Put back as they were before.
    sqlx::query("UPDATE api_keys SET revoked_at = NULL, mac = $1 WHERE id = $2")
        .bind(old_mac)
        .bind(&id_b)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, environment, url, events, secret, secret_key_id, \
         created_at, mac) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&endpoint)
    .bind(hook_row.get::<String, _>("environment"))
    .bind(hook_row.get::<String, _>("url"))
    .bind(hook_row.get::<String, _>("events"))
    .bind(hook_row.get::<Vec<u8>, _>("secret"))
    .bind(hook_row.get::<String, _>("secret_key_id"))
    .bind(hook_row.get::<i64, _>("created_at"))
    .bind(hook_row.get::<Vec<u8>, _>("mac"))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(kv(&key_b).await, 401, "a running server refuses it");
    let (status, _) = create(&serve.base, &key_a, "after", "org_1").await;
    assert_eq!(status, 201);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        receiver.got().is_empty(),
        "the deleted endpoint is not posted to"
    );
    drop(serve);
    let serve = d.serve();
    assert_eq!(
        call(&serve.base, &key_b, Method::GET, "/vault/v1/kv", None)
            .await
            .0,
        401,
        "nor one started afterwards"
    );
    assert_eq!(d.ok(&["apikey", "list"]).matches("TAMPERED").count(), 1);
    assert_eq!(d.ok(&["webhook", "list"]).matches("TAMPERED").count(), 1);

    // The row taken away before the operator revokes it (who is told it is not found), then
    // put back: the revocation was recorded all the same.
    let key_c = d.api_key("prod");
    let id_c = format!("key_{}", &key_c[3..15]);
    assert_eq!(
        call(&serve.base, &key_c, Method::GET, "/vault/v1/kv", None)
            .await
            .0,
        200
    );
    let pool = d.pool().await;
    let row = sqlx::query(
        "SELECT lookup, hash, environment, name, created_at, mac FROM api_keys WHERE id = $1",
    )
    .bind(&id_c)
    .fetch_one(&pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM api_keys WHERE id = $1")
        .bind(&id_c)
        .execute(&pool)
        .await
        .unwrap();
    d.fails(&["apikey", "revoke", &id_c], 6, "not found");
    sqlx::query(
        "INSERT INTO api_keys (id, lookup, hash, environment, name, created_at, mac) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id_c)
    .bind(row.get::<String, _>("lookup"))
    .bind(row.get::<Vec<u8>, _>("hash"))
    .bind(row.get::<String, _>("environment"))
    .bind(row.get::<String, _>("name"))
    .bind(row.get::<i64, _>("created_at"))
    .bind(row.get::<Vec<u8>, _>("mac"))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        call(&serve.base, &key_c, Method::GET, "/vault/v1/kv", None)
            .await
            .0,
        401,
        "revoked though its row was gone"
    );
}

#[tokio::test]
async fn an_older_copy_of_a_row_is_refused_on_sqlite() {
    an_older_copy_of_a_row_is_refused(Deployment::sqlite()).await;
}

#[tokio::test]
async fn an_older_copy_of_a_row_is_refused_on_postgres() {
    if let Some(d) = Deployment::postgres().await {
        an_older_copy_of_a_row_is_refused(d).await;
    }
}

/// An answer stored for an idempotency key is replayed only as the vault stored it: one a
/// database writer changed, or planted for a request a client has yet to retry, is refused
/// (500), never shown, and nothing is done twice.
async fn a_stored_answer_written_into_the_database_is_not_replayed(d: Deployment) {
    use sha2::Digest as _;
    let key = d.api_key("prod");
    let serve = d.serve();
    let client = ApiClient::new(&serve.base, &key);
    let post = |idem: &'static str, body: Vec<u8>| {
        let client = &client;
        async move {
            let (status, _, bytes) = client
                .send(
                    Method::POST,
                    "/vault/v1/kv",
                    body,
                    &[("idempotency-key", idem)],
                )
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let body = |name: &str| {
        json!({"name": name, "value": "v", "key_context": {"organization_id": "org_1"}})
            .to_string()
            .into_bytes()
    };
    let (status, first) = post("k1", body("one")).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = post("k1", body("one")).await;
    assert_eq!(
        (status, &again),
        (201, &first),
        "a genuine answer is replayed"
    );

    let forged = br#"{"id":"secret_FORGED","name":"one"}"#.to_vec();
    let pool = d.pool().await;
    sqlx::query("UPDATE idempotent_answers SET body = $1 WHERE idem_key = 'k1'")
        .bind(forged.clone())
        .execute(&pool)
        .await
        .unwrap();
    // Planted for a request not made yet, with the hash the server will compute.
    let mut hash = sha2::Sha256::new();
    hash.update(b"POST /vault/v1/kv\0");
    hash.update(body("two"));
    let owner = format!("key_{}", &key[3..15]);
    sqlx::query(
        "INSERT INTO idempotent_answers (owner, idem_key, request_hash, status, body, created_at) \
         VALUES ($1, 'k2', $2, 201, $3, $4)",
    )
    .bind(&owner)
    .bind(hash.finalize().to_vec())
    .bind(forged)
    .bind(vault_store::Timestamp::now().0)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    for (idem, name) in [("k1", "one"), ("k2", "two")] {
        let (status, answer) = post(idem, body(name)).await;
        assert_eq!(status, 500, "{idem}: {answer}");
        assert!(!answer.contains("FORGED"), "{answer}");
    }
    let (status, list) = call(&serve.base, &key, Method::GET, "/vault/v1/kv", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "nothing done twice, nothing done for the planted answer: {list}"
    );
}

#[tokio::test]
async fn a_stored_answer_written_into_the_database_is_not_replayed_on_sqlite() {
    a_stored_answer_written_into_the_database_is_not_replayed(Deployment::sqlite()).await;
}

#[tokio::test]
async fn a_stored_answer_written_into_the_database_is_not_replayed_on_postgres() {
    if let Some(d) = Deployment::postgres().await {
        a_stored_answer_written_into_the_database_is_not_replayed(d).await;
    }
}

/// A customer key kept in the store reaches its key service over HTTPS only, unless
/// `vault.toml` allows plain HTTP (an emulator on loopback); the store cannot allow it.
#[test]
fn a_store_provider_over_plain_http_is_refused() {
    let d = Deployment::sqlite();
    std::fs::write(
        d.dir.path().join("vault.toml"),
        "default = \"managed\"\n[providers.managed]\ntype = \"managed\"\n",
    )
    .unwrap();
    let add = [
        "byok",
        "provider",
        "add",
        "plain",
        "--type",
        "aws-kms",
        "--key-id",
        "arn:aws:kms:us-east-1:111122223333:key/plain",
        "--endpoint-url",
        "http://127.0.0.1:9",
        "--unverified",
    ];
    d.fails(&add, 3, "endpoint_url must be https://");
    assert_eq!(d.ok(&["byok", "provider", "list", "--json"]), "");
    // Allowed by the file: added; the same document is then refused by a process whose file
    // does not allow it.
    std::fs::write(d.dir.path().join("vault.toml"), CONFIG).unwrap();
    d.ok(&add);
    std::fs::write(
        d.dir.path().join("vault.toml"),
        "default = \"managed\"\n[providers.managed]\ntype = \"managed\"\n",
    )
    .unwrap();
    d.fails(&["config", "check"], 3, "endpoint_url must be https://");
}

/// A data directory made by the release before row integrity (`tests/fixtures/`): its first
/// use protects it once, every key, webhook and rule kept; what is written afterwards is
/// checked.
#[tokio::test]
async fn the_release_before_is_protected_once() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/release-before-integrity");
    let d = Deployment::sqlite();
    std::fs::create_dir(d.data()).unwrap();
    for file in ["vault.db", "keyring-root.json"] {
        std::fs::copy(fixture.join(file), d.data().join(file)).unwrap();
    }
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(d.data(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(
            d.data().join("keyring-root.json"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    std::fs::write(
        d.dir.path().join("vault.toml"),
        "default = \"managed\"\n[providers.managed]\ntype = \"managed\"\n",
    )
    .unwrap();
    assert!(!d.data().join("integrity.key").exists());
    let keys = d.ok(&["apikey", "list"]);
    assert!(
        d.data().join("integrity.key").exists(),
        "protected at first use"
    );
    assert!(!keys.contains("TAMPERED"), "{keys}");
    assert!(
        keys.contains("key_xDOUYokWowM7  default  fixture  active"),
        "{keys}"
    );
    assert!(
        keys.contains("key_gwY57KQy3ote  default  revoked  revoked"),
        "{keys}"
    );
    let hooks = d.ok(&["webhook", "list"]);
    assert!(
        hooks.contains("we_96DD5F88BF65DEC69EB042AE95658744") && !hooks.contains("TAMPERED"),
        "{hooks}"
    );
    assert!(
        d.ok(&["byok", "list"])
            .contains("organization_id=org_ghost  ->  ghost")
    );
    let id = "secret_5DC7B09AECEEA16C1BA3436C8CADD537";
    assert_eq!(d.ok(&["kv", "get", "-e", "default", id]).trim(), "4111");

    // The API: the old key works, the revoked one does not.
    let serve = d.serve();
    let path = format!("/vault/v1/kv/{id}");
    let fixture_key = "sk_xDOUYokWowM7rXNtcbIWmZwgNR6erWJ0Hi54sDfvyxB";
    let (status, body) = call(&serve.base, fixture_key, Method::GET, &path, None).await;
    assert_eq!(
        (status, body["value"].as_str()),
        (200, Some("4111")),
        "{body}"
    );
    let revoked = "sk_gwY57KQy3oteRICSh2xy3nf9HuGCpPvP21DKmkd6YPa";
    assert_eq!(
        call(&serve.base, revoked, Method::GET, &path, None).await.0,
        401
    );

    // Protected once: a row written now the old way (no tag) is refused, not blessed again.
    d.sql(
        "INSERT INTO api_keys (id, lookup, hash, environment, name, created_at) \
         SELECT 'key_copyOfFixtur', 'copyOfFixtur', hash, environment, name, created_at \
         FROM api_keys WHERE id = 'key_xDOUYokWowM7'",
    )
    .await;
    drop(serve);
    let keys = d.ok(&["apikey", "list"]);
    assert_eq!(keys.matches("TAMPERED").count(), 1, "{keys}");
}
