//! Every endpoint through `app()` without a socket: shapes as the WorkOS SDKs parse them,
//! optimistic concurrency, authentication, tenant isolation, every bad-input case with its status
//! and error body (and never a 500), the data-key API and the SDK blob format end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use vault_crypto::{ManagedKeyProvider, Router as KeyRouter, danger, workos};
use vault_objects::Vault;
use vault_server::{AppState, Limits, app, auth};
use vault_store::{SqlStore, Store};

struct Server {
    app: Router,
    store: Arc<dyn Store>,
    keys: vault_objects::ApiKeys,
    key_a: String,
    key_b: String,
    _dir: tempfile::TempDir,
}

async fn server_with(limits: Limits) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqlStore::open_sqlite(dir.path()).await.unwrap());
    let keys = KeyRouter::new(Arc::new(ManagedKeyProvider::in_memory("root").unwrap()));
    // Protected as a deployment's store is (the key beside it), so revocations are recorded.
    let integrity = vault_objects::integrity::open(
        &*store,
        &vault_objects::KeyHome::File(dir.path().join("integrity.key")),
        vault_objects::Upgrade::Refuse,
    )
    .await
    .unwrap();
    let vault = Vault::new(Arc::new(keys), store.clone(), integrity);
    let key_a = auth::create(&vault.api_keys(), "env_a", "Key A")
        .await
        .unwrap();
    let key_b = auth::create(&vault.api_keys(), "env_b", "Key B")
        .await
        .unwrap();
    Server {
        keys: vault.api_keys(),
        app: app(AppState::new(vault, limits)),
        store,
        key_a: key_a.expose_secret().to_owned(),
        key_b: key_b.expose_secret().to_owned(),
        _dir: dir,
    }
}

async fn server() -> Server {
    server_with(Limits::default()).await
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: Value,
}

impl Server {
    async fn send(
        &self,
        method: &str,
        uri: &str,
        key: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        req = req.header("content-type", "application/json");
        // As the listener does for every connection: here, a loopback peer.
        req = req.extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            40000,
        ))));
        let req = req.body(body.map_or_else(Body::empty, Body::from)).unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        assert_ne!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{method} {uri}: 500"
        );
        assert!(
            headers.contains_key("x-request-id"),
            "{method} {uri}: no X-Request-ID"
        );
        let json = if uri == "/metrics" {
            Value::String(String::from_utf8(bytes.to_vec()).unwrap())
        } else {
            assert!(
                headers["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("application/json"),
                "{method} {uri}: content type"
            );
            serde_json::from_slice(&bytes).unwrap()
        };
        Answer {
            status,
            headers,
            json,
        }
    }

    async fn a(&self, method: &str, uri: &str, body: Option<Value>) -> Answer {
        self.send(
            method,
            uri,
            Some(&self.key_a.clone()),
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
    }

    async fn create(&self, name: &str, value: &str) -> Value {
        let r = self
            .a(
                "POST",
                "/vault/v1/kv",
                Some(json!({"key_context": {"organization_id": "org_1"}, "name": name, "value": value})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
        r.json
    }
}

fn assert_error(r: &Answer, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{}", r.json);
    assert_eq!(r.json["code"], code, "{}", r.json);
    assert!(
        r.json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.json
    );
}

fn assert_metadata(m: &Value) {
    for field in [
        "created_at",
        "environment_id",
        "id",
        "key_id",
        "updated_at",
        "version_id",
    ] {
        assert!(m[field].is_string(), "metadata.{field} in {m}");
    }
    assert!(m["context"].is_object());
    assert!(m["updated_by"]["id"].is_string() && m["updated_by"]["name"].is_string());
}

#[tokio::test]
async fn object_lifecycle_has_the_shapes_the_sdks_parse() {
    let s = server().await;
    let created = s.create("my/secret name", "s3cr3t").await;
    assert_metadata(&created);
    assert_eq!(created["environment_id"], "env_a");
    assert_eq!(created["context"], json!({"organization_id": "org_1"}));
    assert_eq!(created["updated_by"]["name"], "Key A");
    let id = created["id"].as_str().unwrap().to_owned();
    let v1 = created["version_id"].as_str().unwrap().to_owned();

    let read = s.a("GET", &format!("/vault/v1/kv/{id}"), None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json["value"], "s3cr3t");
    assert_eq!(read.json["name"], "my/secret name");
    assert_metadata(&read.json["metadata"]);

    // Node and Python 10 percent-encode the slash; Python 5 sends it raw.
    for path in ["my%2Fsecret%20name", "my/secret%20name"] {
        let by_name = s.a("GET", &format!("/vault/v1/kv/name/{path}"), None).await;
        assert_eq!(by_name.status, StatusCode::OK, "{path}");
        assert_eq!(by_name.json["id"], id.as_str());
        assert_eq!(by_name.json["value"], "s3cr3t");
    }

    let described = s
        .a("GET", &format!("/vault/v1/kv/{id}/metadata"), None)
        .await;
    assert_eq!(described.status, StatusCode::OK);
    assert!(described.json.get("value").is_none());
    assert_eq!(described.json["metadata"]["version_id"], v1.as_str());

    // Node always sends version_check, null when not given.
    let updated = s
        .a(
            "PUT",
            &format!("/vault/v1/kv/{id}"),
            Some(json!({"value": "new", "version_check": null})),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.json);
    let v2 = updated.json["metadata"]["version_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(v1, v2);
    let stale = s
        .a(
            "PUT",
            &format!("/vault/v1/kv/{id}"),
            Some(json!({"value": "lost", "version_check": v1})),
        )
        .await;
    assert_error(&stale, StatusCode::CONFLICT, "version_conflict");
    let checked = s
        .a(
            "PUT",
            &format!("/vault/v1/kv/{id}"),
            Some(json!({"value": "third", "version_check": v2})),
        )
        .await;
    assert_eq!(checked.status, StatusCode::OK);
    let v3 = checked.json["metadata"]["version_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        s.a("GET", &format!("/vault/v1/kv/{id}"), None).await.json["value"],
        "third"
    );

    let versions = s
        .a("GET", &format!("/vault/v1/kv/{id}/versions"), None)
        .await;
    assert_eq!(versions.status, StatusCode::OK);
    assert_eq!(
        versions.json["list_metadata"],
        json!({"before": null, "after": null})
    );
    let data = versions.json["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[0]["id"], v3.as_str());
    assert_eq!(data[0]["current_version"], true);
    assert_eq!(data[2]["id"], v1.as_str());
    assert!(data[1..].iter().all(|v| v["current_version"] == false));
    assert!(
        data.iter()
            .all(|v| v["etag"].as_str().is_some_and(|e| e.len() == 32))
    );
    assert_eq!(data[0]["size"], 5);
    assert_eq!(data[2]["size"], 6);

    let dup = s
        .a(
            "POST",
            "/vault/v1/kv",
            Some(json!({"key_context": {"organization_id": "org_1"}, "name": "my/secret name", "value": "x"})),
        )
        .await;
    assert_error(&dup, StatusCode::CONFLICT, "name_conflict");

    let stale_delete = s
        .a(
            "DELETE",
            &format!("/vault/v1/kv/{id}?version_check={v2}"),
            None,
        )
        .await;
    assert_error(&stale_delete, StatusCode::CONFLICT, "version_conflict");
    let deleted = s
        .a(
            "DELETE",
            &format!("/vault/v1/kv/{id}?version_check={v3}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(
        deleted.json,
        json!({"name": "my/secret name", "success": true})
    );
    for uri in [
        format!("/vault/v1/kv/{id}"),
        format!("/vault/v1/kv/{id}/metadata"),
        format!("/vault/v1/kv/{id}/versions"),
        "/vault/v1/kv/name/my%2Fsecret%20name".to_owned(),
    ] {
        assert_error(
            &s.a("GET", &uri, None).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
    // The name is free again.
    s.create("my/secret name", "again").await;

    let events: Vec<String> = s
        .store
        .audit_events("env_a", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    for e in [
        "vault.data.created",
        "vault.data.read",
        "vault.data.updated",
        "vault.data.deleted",
        "vault.metadata.read",
    ] {
        assert!(events.iter().any(|x| x == e), "{e} missing from {events:?}");
    }
}

/// The object's `created_at` stays its creation time through updates, while `updated_at`
/// moves; an update may state the object's own context, never another (422
/// `key_context_immutable`, its message not replaced by a list of codes in the Node SDK).
#[tokio::test]
async fn created_at_stays_and_the_context_is_immutable() {
    let s = server().await;
    let created = s.create("c", "one").await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["created_at"], created["updated_at"]);
    let same = s
        .a(
            "PUT",
            &format!("/vault/v1/kv/{id}"),
            Some(json!({"value": "two", "key_context": {"organization_id": "org_1"}})),
        )
        .await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.json);
    let meta = &same.json["metadata"];
    assert_eq!(meta["created_at"], created["created_at"]);
    assert_ne!(meta["updated_at"], created["updated_at"]);
    let moved = s
        .a(
            "PUT",
            &format!("/vault/v1/kv/{id}"),
            Some(json!({"value": "three", "key_context": {"organization_id": "org_2"}})),
        )
        .await;
    assert_error(
        &moved,
        StatusCode::UNPROCESSABLE_ENTITY,
        "key_context_immutable",
    );
    assert!(moved.json.get("errors").is_none(), "{}", moved.json);
    assert!(
        moved.json["message"]
            .as_str()
            .unwrap()
            .contains("create a new object"),
        "{}",
        moved.json
    );
    let read = s.a("GET", &format!("/vault/v1/kv/{id}"), None).await;
    assert_eq!(read.json["value"], "two");
    assert_eq!(
        read.json["metadata"]["context"],
        json!({"organization_id": "org_1"})
    );
}

/// `organization_id` beside the context files the object's events under it (the events filter
/// finds its create, read, update and delete); one that differs from the context's is refused.
#[tokio::test]
async fn organization_id_on_create_files_the_objects_events() {
    let s = server().await;
    let created = s
        .a(
            "POST",
            "/vault/v1/kv",
            Some(json!({"key_context": {"user_id": "u_1"}, "organization_id": "org_x", "name": "o", "value": "v"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json);
    let id = created.json["id"].as_str().unwrap().to_owned();
    s.a("GET", &format!("/vault/v1/kv/{id}"), None).await;
    s.a(
        "PUT",
        &format!("/vault/v1/kv/{id}"),
        Some(json!({"value": "w"})),
    )
    .await;
    s.a("DELETE", &format!("/vault/v1/kv/{id}"), None).await;
    // Another object without an organization: not in the filter.
    s.create("other", "v").await;
    let kinds = "vault.data.created,vault.data.read,vault.data.updated,vault.data.deleted";
    let filed = s
        .a(
            "GET",
            &format!("/events?events={kinds}&organization_id=org_x"),
            None,
        )
        .await;
    assert_eq!(filed.status, StatusCode::OK, "{}", filed.json);
    let got: Vec<&str> = filed.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        [
            "vault.data.created",
            "vault.data.read",
            "vault.data.updated",
            "vault.data.deleted"
        ]
    );
    // The label files events; it routes nothing, so it subscribes this environment to no
    // customer key's events of that organization (a context naming it does).
    let byok_event = |org: &str| vault_store::DeploymentEvent {
        event: vault_store::events::BYOK_VERIFIED.into(),
        actor: vault_store::Actor::new("vault_byok", "vault byok"),
        key_id: Some("aws-kms://".into()),
        key_context: Some(
            vault_crypto::KeyContext::from_pairs([("organization_id", org)]).unwrap(),
        ),
        detail: Some(r#"{"verified":true}"#.into()),
    };
    assert_eq!(
        s.store
            .record_deployment_event(&byok_event("org_x"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.store
            .record_deployment_event(&byok_event("org_1"))
            .await
            .unwrap(),
        1
    );
    // The context's own organization agrees: taken; another: refused, nothing created.
    let agreeing = s
        .a(
            "POST",
            "/vault/v1/kv",
            Some(json!({"key_context": {"organization_id": "org_1"}, "organization_id": "org_1", "name": "a", "value": "v"})),
        )
        .await;
    assert_eq!(agreeing.status, StatusCode::CREATED, "{}", agreeing.json);
    let differing = s
        .a(
            "POST",
            "/vault/v1/kv",
            Some(json!({"key_context": {"organization_id": "org_1"}, "organization_id": "org_2", "name": "d", "value": "v"})),
        )
        .await;
    assert_error(
        &differing,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    assert_eq!(differing.json["errors"][0]["field"], "organization_id");
    let by_name = s.a("GET", "/vault/v1/kv/name/d", None).await;
    assert_error(&by_name, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn list_paginates_forward_with_after_and_filters() {
    let s = server().await;
    for i in 0..25 {
        s.create(&format!("item {i:02}"), "v").await;
    }
    // What the Node SDK's autoPagination does: limit 100 pages forward via list_metadata.after;
    // here with limit 10 so there are three pages.
    let mut seen = Vec::new();
    let mut uri = "/vault/v1/kv?limit=10&order=desc".to_owned();
    loop {
        let page = s.a("GET", &uri, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.json);
        let lm = &page.json["list_metadata"];
        assert!(lm.get("before").is_some() && lm.get("after").is_some());
        for item in page.json["data"].as_array().unwrap() {
            assert!(item.get("value").is_none() && item.get("context").is_none());
            assert!(item["updated_at"].is_string());
            seen.push(item["name"].as_str().unwrap().to_owned());
        }
        match lm["after"].as_str() {
            Some(after) => uri = format!("/vault/v1/kv?limit=10&order=desc&after={after}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 25, "no duplicates across pages");
    assert_eq!(seen[0], "item 24", "newest first");

    let default = s.a("GET", "/vault/v1/kv", None).await;
    assert_eq!(
        default.json["data"].as_array().unwrap().len(),
        10,
        "default limit 10"
    );
    let search = s
        .a("GET", "/vault/v1/kv?search=ITEM+0&limit=100", None)
        .await;
    assert_eq!(
        search.json["data"].as_array().unwrap().len(),
        10,
        "'+' is a space"
    );
    let future = s
        .a(
            "GET",
            "/vault/v1/kv?updatedAfter=2999-01-01T00:00:00.000Z",
            None,
        )
        .await;
    assert!(future.json["data"].as_array().unwrap().is_empty());
    let node_date = s
        .a(
            "GET",
            "/vault/v1/kv?limit=100&updated_after=Tue+Jan+02+2024+03%3A04%3A05+GMT%2B0000+(Coordinated+Universal+Time)",
            None,
        )
        .await;
    assert_eq!(node_date.json["data"].as_array().unwrap().len(), 25);
}

#[tokio::test]
async fn without_a_valid_key_nothing_is_done() {
    let s = server().await;
    let body = json!({"key_context": {"organization_id": "o"}, "name": "n", "value": "v"})
        .to_string()
        .into_bytes();
    let forged = format!("sk_{}", "A".repeat(43));
    for key in [
        None,
        Some("sk_short"),
        Some(forged.as_str()),
        Some("not-a-key"),
    ] {
        let r = s
            .send("POST", "/vault/v1/kv", key, Some(body.clone()))
            .await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // A key with the right lookup but a wrong secret.
    let mut near = s.key_a.clone();
    let last = near.pop().unwrap();
    near.push(if last == 'a' { 'b' } else { 'a' });
    let r = s
        .send("POST", "/vault/v1/kv", Some(&near), Some(body.clone()))
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = s
        .send(
            "POST",
            "/vault/v1/keys/data-key",
            None,
            Some(b"{}".to_vec()),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        s.a("GET", "/vault/v1/kv", None).await.json["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Revoked keys stop working at once.
    let id = s.store.api_keys().await.unwrap()[1].id.clone();
    s.keys.revoke(&id).await.unwrap();
    let r = s
        .send("GET", "/vault/v1/kv", Some(&s.key_b.clone()), None)
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
}

/// The database is untrusted: an API key row that someone who can write it inserted (without
/// a tag, or with any tag but the deployment's) authenticates nothing, and every other key
/// keeps working.
#[tokio::test]
async fn an_api_key_row_written_into_the_database_authenticates_nothing() {
    use sha2::Digest as _;
    let s = server().await;
    s.create("a-secret", "A's value").await;
    for (n, mac) in [(0, Vec::new()), (1, vec![0u8; 32])] {
        // A key minted by an INSERT: its hash is of a key the writer knows.
        let minted = format!("sk_Minted{n}ByAnInsert012345678abcdefghijklmnopq");
        assert_eq!(minted.len(), 3 + 43);
        let record = vault_objects::ApiKeyRecord {
            id: format!("key_{}", &minted[3..15]),
            lookup: minted[3..15].to_owned(),
            hash: sha2::Sha256::digest(minted.as_bytes()).to_vec(),
            environment: "env_a".into(),
            name: "mallory".into(),
            created_at: vault_objects::Timestamp::now(),
            revoked_at: None,
            mac,
        };
        s.store.create_api_key(&record).await.unwrap();
        let r = s.send("GET", "/vault/v1/kv", Some(&minted), None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let listed = s.keys.list().await.unwrap();
    assert_eq!(listed.iter().filter(|k| !k.authentic).count(), 2);
    assert_eq!(listed.iter().filter(|k| k.authentic).count(), 2);
    // Everyone else is still served.
    let r = s.a("GET", "/vault/v1/kv", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_environment_never_sees_another() {
    let s = server().await;
    let created = s.create("shared-name", "A's value").await;
    let id = created["id"].as_str().unwrap();
    let b = Some(s.key_b.clone());
    let b = b.as_deref();
    for (method, uri, body) in [
        ("GET", format!("/vault/v1/kv/{id}"), None),
        ("GET", format!("/vault/v1/kv/{id}/metadata"), None),
        ("GET", format!("/vault/v1/kv/{id}/versions"), None),
        ("GET", "/vault/v1/kv/name/shared-name".to_owned(), None),
        (
            "PUT",
            format!("/vault/v1/kv/{id}"),
            Some(br#"{"value":"B was here"}"#.to_vec()),
        ),
        ("DELETE", format!("/vault/v1/kv/{id}"), None),
    ] {
        let r = s.send(method, &uri, b, body).await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    }
    let listed = s.send("GET", "/vault/v1/kv", b, None).await;
    assert!(listed.json["data"].as_array().unwrap().is_empty());
    // B may use the same name in its own environment.
    let own = s
        .send(
            "POST",
            "/vault/v1/kv",
            b,
            Some(
                br#"{"key_context":{"organization_id":"o"},"name":"shared-name","value":"B"}"#
                    .to_vec(),
            ),
        )
        .await;
    assert_eq!(own.status, StatusCode::CREATED);
    let a = s.a("GET", &format!("/vault/v1/kv/{id}"), None).await;
    assert_eq!(a.json["value"], "A's value");
    assert_eq!(a.json["metadata"]["version_id"], created["version_id"]);

    // A data key issued to A does not decrypt for B.
    let dk = s
        .a(
            "POST",
            "/vault/v1/keys/data-key",
            Some(json!({"context": {"organization_id": "o"}})),
        )
        .await;
    let r = s
        .send(
            "POST",
            "/vault/v1/keys/decrypt",
            b,
            Some(
                json!({"keys": dk.json["encrypted_keys"]})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_encrypted_keys");
}

/// One bad request: what it is, and the status and code it must get.
struct BadInput {
    case: &'static str,
    method: &'static str,
    uri: String,
    body: Vec<u8>,
    status: StatusCode,
    code: &'static str,
}

fn bad(
    case: &'static str,
    method: &'static str,
    uri: impl Into<String>,
    body: impl Into<Vec<u8>>,
    (status, code): (StatusCode, &'static str),
) -> BadInput {
    BadInput {
        case,
        method,
        uri: uri.into(),
        body: body.into(),
        status,
        code,
    }
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx_and_changes_nothing() {
    use StatusCode as S;
    let s = server_with(Limits {
        max_body_bytes: 64 * 1024,
        max_value_bytes: 16 * 1024,
        requests_per_second: None,
        ..Limits::default()
    })
    .await;
    let created = s.create("n", "v1").await;
    let id = created["id"].as_str().unwrap().to_owned();
    let object = format!("/vault/v1/kv/{id}");
    let eleven: serde_json::Map<String, Value> =
        (0..11).map(|i| (format!("k{i}"), json!("v"))).collect();
    let create = |v: Value| v.to_string().into_bytes();
    let (json_error, invalid_type, missing, unknown, duplicate) = (
        (S::BAD_REQUEST, "invalid_json"),
        (S::UNPROCESSABLE_ENTITY, "invalid_type"),
        (S::UNPROCESSABLE_ENTITY, "missing_field"),
        (S::UNPROCESSABLE_ENTITY, "unknown_field"),
        (S::UNPROCESSABLE_ENTITY, "duplicate_field"),
    );
    let (bad_context, bad_field, bad_query, bad_keys) = (
        (S::UNPROCESSABLE_ENTITY, "invalid_key_context"),
        (S::UNPROCESSABLE_ENTITY, "invalid_request"),
        (S::BAD_REQUEST, "invalid_request"),
        (S::BAD_REQUEST, "invalid_encrypted_keys"),
    );
    let kv = "/vault/v1/kv";
    let cases = [
        bad("body is not JSON", "POST", kv, *b"{not json", json_error),
        bad("body is empty", "POST", kv, *b"", json_error),
        bad("body is an array", "POST", kv, *b"[1,2]", json_error),
        bad(
            "name is a number",
            "POST",
            kv,
            *br#"{"key_context":{"a":"b"},"name":5,"value":"v"}"#,
            invalid_type,
        ),
        bad(
            "value is an object",
            "POST",
            kv,
            *br#"{"key_context":{"a":"b"},"name":"n","value":{"x":1}}"#,
            invalid_type,
        ),
        bad(
            "value is missing",
            "POST",
            kv,
            *br#"{"key_context":{"a":"b"},"name":"n"}"#,
            missing,
        ),
        bad(
            "an unknown field",
            "POST",
            kv,
            *br#"{"key_context":{"a":"b"},"name":"n","value":"v","extra":1}"#,
            unknown,
        ),
        bad(
            "a field twice",
            "POST",
            kv,
            *br#"{"key_context":{"a":"b"},"name":"n","name":"m","value":"v"}"#,
            duplicate,
        ),
        bad(
            "eleven context pairs",
            "POST",
            kv,
            create(json!({"key_context": eleven, "name": "n", "value": "v"})),
            bad_context,
        ),
        bad(
            "a context key twice",
            "POST",
            kv,
            *br#"{"key_context":{"a":"b","a":"c"},"name":"n","value":"v"}"#,
            bad_context,
        ),
        bad(
            "a context key reserved for sealing key rings",
            "POST",
            kv,
            *br#"{"key_context":{"vault_ring":"root","vault_ring_version":"1"},"name":"n","value":"v"}"#,
            bad_context,
        ),
        bad(
            "data key: a context key reserved for sealing key rings",
            "POST",
            "/vault/v1/keys/data-key",
            *br#"{"context":{"vault_ring":"root","vault_ring_version":"7"}}"#,
            bad_context,
        ),
        bad(
            "a context value not a string",
            "POST",
            kv,
            *br#"{"key_context":{"a":1},"name":"n","value":"v"}"#,
            bad_context,
        ),
        bad(
            "an empty context",
            "POST",
            kv,
            *br#"{"key_context":{},"name":"n","value":"v"}"#,
            bad_context,
        ),
        bad(
            "a context not an object",
            "POST",
            kv,
            *br#"{"key_context":"org","name":"n","value":"v"}"#,
            bad_context,
        ),
        bad(
            "a 201-character name",
            "POST",
            kv,
            create(json!({"key_context": {"a": "b"}, "name": "n".repeat(201), "value": "v"})),
            bad_field,
        ),
        bad(
            "a blank name",
            "POST",
            kv,
            *br#"{"key_context":{"a":"b"},"name":"   ","value":"v"}"#,
            bad_field,
        ),
        bad(
            "a value over the limit",
            "POST",
            kv,
            create(
                json!({"key_context": {"a": "b"}, "name": "n", "value": "x".repeat(16 * 1024 + 1)}),
            ),
            (S::PAYLOAD_TOO_LARGE, "value_too_large"),
        ),
        bad(
            "a body over the limit",
            "POST",
            kv,
            vec![b' '; 64 * 1024 + 1],
            (S::PAYLOAD_TOO_LARGE, "request_too_large"),
        ),
        bad(
            "data key: an unknown field",
            "POST",
            "/vault/v1/keys/data-key",
            *br#"{"context":{"a":"b"},"ctx":1}"#,
            unknown,
        ),
        bad(
            "data key: no context",
            "POST",
            "/vault/v1/keys/data-key",
            *br#"{}"#,
            missing,
        ),
        bad(
            "decrypt: keys not base64",
            "POST",
            "/vault/v1/keys/decrypt",
            *br#"{"keys":"***not base64***"}"#,
            bad_keys,
        ),
        bad(
            "decrypt: keys not an issued key",
            "POST",
            "/vault/v1/keys/decrypt",
            *br#"{"keys":"b3BhcXVl"}"#,
            bad_keys,
        ),
        bad(
            "decrypt: keys a number",
            "POST",
            "/vault/v1/keys/decrypt",
            *br#"{"keys":7}"#,
            invalid_type,
        ),
        bad(
            "rekey: keys not base64",
            "POST",
            "/vault/v1/keys/rekey",
            *br#"{"context":{"a":"b"},"encrypted_keys":"%%%"}"#,
            bad_keys,
        ),
        bad(
            "list: limit 0",
            "GET",
            "/vault/v1/kv?limit=0",
            *b"",
            bad_query,
        ),
        bad(
            "list: limit 101",
            "GET",
            "/vault/v1/kv?limit=101",
            *b"",
            bad_query,
        ),
        bad(
            "list: limit not a number",
            "GET",
            "/vault/v1/kv?limit=ten",
            *b"",
            bad_query,
        ),
        bad(
            "list: an unknown order",
            "GET",
            "/vault/v1/kv?order=sideways",
            *b"",
            bad_query,
        ),
        bad(
            "list: a forged cursor",
            "GET",
            "/vault/v1/kv?after=garbage",
            *b"",
            bad_query,
        ),
        bad(
            "list: a time that is not one",
            "GET",
            "/vault/v1/kv?updatedAfter=yesterday",
            *b"",
            bad_query,
        ),
        bad(
            "read: not an id",
            "GET",
            "/vault/v1/kv/not-an-id",
            *b"",
            (S::NOT_FOUND, "not_found"),
        ),
        bad(
            "update: no such object",
            "PUT",
            "/vault/v1/kv/secret_00000000000000000000000000000000",
            *br#"{"value":"v"}"#,
            (S::NOT_FOUND, "not_found"),
        ),
        bad(
            "no such route",
            "GET",
            "/vault/v1/nothing",
            *b"",
            (S::NOT_FOUND, "not_found"),
        ),
        bad(
            "no such method",
            "PATCH",
            kv,
            *b"",
            (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ),
        bad(
            "update: value a number",
            "PUT",
            &object,
            *br#"{"value":1}"#,
            invalid_type,
        ),
        bad(
            "update: no value",
            "PUT",
            &object,
            *br#"{"version_check":null}"#,
            missing,
        ),
        bad(
            "update: version check a number",
            "PUT",
            &object,
            *br#"{"value":"x","version_check":5}"#,
            invalid_type,
        ),
        bad(
            "update: another context (it never changes)",
            "PUT",
            &object,
            *br#"{"value":"x","key_context":{"a":"b"}}"#,
            (S::UNPROCESSABLE_ENTITY, "key_context_immutable"),
        ),
        bad(
            "update: a context that is not one",
            "PUT",
            &object,
            *br#"{"value":"x","key_context":{"a":1}}"#,
            (S::UNPROCESSABLE_ENTITY, "invalid_key_context"),
        ),
    ];
    for c in cases {
        let r = s.send(c.method, &c.uri, Some(&s.key_a), Some(c.body)).await;
        let case = c.case;
        assert_eq!(
            (r.status, r.json["code"].as_str()),
            (c.status, Some(c.code)),
            "{case}: {}",
            r.json
        );
        assert!(
            r.json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{case}: no message"
        );
        // Field problems name their field; the immutable context is advice the Node SDK
        // would replace by a list of codes (docs/API.md, "Errors").
        let field_error = c.status == S::BAD_REQUEST || c.status == S::UNPROCESSABLE_ENTITY;
        if field_error && !["invalid_json", "key_context_immutable"].contains(&c.code) {
            assert!(
                r.json["errors"].as_array().is_some_and(|e| !e.is_empty()),
                "{case}: no field named: {}",
                r.json
            );
        }
        assert!(
            !r.json.to_string().contains("\"v\""),
            "{case}: echoes a value: {}",
            r.json
        );
    }
    // Nothing of all that was stored or changed.
    let list = s.a("GET", kv, None).await;
    assert_eq!(list.json["data"].as_array().unwrap().len(), 1);
    let read = s.a("GET", &object, None).await;
    assert_eq!(read.json["value"], "v1");
    assert_eq!(read.json["metadata"]["version_id"], created["version_id"]);
}

#[tokio::test]
async fn data_keys_issue_decrypt_rekey_and_open_sdk_blobs() {
    let s = server().await;
    let dk = s
        .a(
            "POST",
            "/vault/v1/keys/data-key",
            Some(json!({"context": {"organization_id": "org_123"}})),
        )
        .await;
    assert_eq!(dk.status, StatusCode::CREATED, "{}", dk.json);
    assert_eq!(dk.json["context"], json!({"organization_id": "org_123"}));
    let key = STANDARD
        .decode(dk.json["data_key"].as_str().unwrap())
        .unwrap();
    assert_eq!(key.len(), 32);
    let encrypted_keys = dk.json["encrypted_keys"].as_str().unwrap().to_owned();
    let id = dk.json["id"].as_str().unwrap().to_owned();
    // Canonical padded standard base64, as the SDKs re-encode it.
    assert_eq!(
        STANDARD.encode(STANDARD.decode(&encrypted_keys).unwrap()),
        encrypted_keys
    );

    // The SDKs' vault.encrypt, done here with the issued key; decrypt through the server.
    let data_key = danger::data_key_from_bytes(key.clone().try_into().unwrap());
    let blob = workos::encrypt(
        &data_key,
        &STANDARD.decode(&encrypted_keys).unwrap(),
        "card 4111".as_bytes(),
        vault_crypto::Aad::new(b"aad"),
    )
    .unwrap();
    let parsed_bytes = workos::LocalBlob::decode_text(&blob).unwrap();
    let parsed = workos::LocalBlob::parse(&parsed_bytes).unwrap();
    let keys = STANDARD.encode(parsed.encrypted_keys());
    let dec = s
        .a(
            "POST",
            "/vault/v1/keys/decrypt",
            Some(json!({ "keys": keys })),
        )
        .await;
    assert_eq!(dec.status, StatusCode::OK, "{}", dec.json);
    assert_eq!(dec.json["id"], id.as_str());
    let back = STANDARD
        .decode(dec.json["data_key"].as_str().unwrap())
        .unwrap();
    assert_eq!(back, key);
    let recovered = danger::data_key_from_bytes(back.try_into().unwrap());
    assert_eq!(
        parsed
            .decrypt(&recovered, vault_crypto::Aad::new(b"aad"))
            .unwrap(),
        b"card 4111"
    );

    // Rekey: same key and id under a new context; both blobs still decrypt.
    let re = s
        .a(
            "POST",
            "/vault/v1/keys/rekey",
            Some(json!({"context": {"organization_id": "org_456"}, "encrypted_keys": encrypted_keys})),
        )
        .await;
    assert_eq!(re.status, StatusCode::OK, "{}", re.json);
    assert_eq!(re.json["context"], json!({"organization_id": "org_456"}));
    assert_eq!(re.json["id"], id.as_str());
    assert_eq!(
        STANDARD
            .decode(re.json["data_key"].as_str().unwrap())
            .unwrap(),
        key
    );
    assert_ne!(re.json["encrypted_keys"], encrypted_keys.as_str());
    let dec2 = s
        .a(
            "POST",
            "/vault/v1/keys/decrypt",
            Some(json!({"keys": re.json["encrypted_keys"]})),
        )
        .await;
    assert_eq!(
        STANDARD
            .decode(dec2.json["data_key"].as_str().unwrap())
            .unwrap(),
        key
    );

    // Every call issues a new key.
    let other = s
        .a(
            "POST",
            "/vault/v1/keys/data-key",
            Some(json!({"context": {"organization_id": "org_123"}})),
        )
        .await;
    assert_ne!(other.json["data_key"], dk.json["data_key"]);
    assert_ne!(other.json["id"], dk.json["id"]);

    // A tampered encrypted_keys (any byte) is a 400, never a 500 and never a key.
    let raw = STANDARD.decode(&encrypted_keys).unwrap();
    for i in (0..raw.len()).step_by(7) {
        let mut bad = raw.clone();
        bad[i] ^= 0x20;
        let r = s
            .a(
                "POST",
                "/vault/v1/keys/decrypt",
                Some(json!({"keys": STANDARD.encode(&bad)})),
            )
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_encrypted_keys");
        assert!(r.json.get("data_key").is_none());
    }

    let events: Vec<String> = s
        .store
        .audit_events("env_a", 50)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    for e in ["vault.dek.read", "vault.dek.decrypted", "vault.dek.rekeyed"] {
        assert!(events.iter().any(|x| x == e), "{e} missing from {events:?}");
    }
}

#[tokio::test]
async fn rate_limit_health_and_metrics() {
    let s = server_with(Limits {
        requests_per_second: Some(3),
        ..Limits::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            s.a("GET", "/vault/v1/kv", None).await.status,
            StatusCode::OK
        );
    }
    let limited = s.a("GET", "/vault/v1/kv", None).await;
    assert_error(
        &limited,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_exceeded",
    );
    assert_eq!(limited.headers["retry-after"], "1");
    // Another key has its own budget.
    let b = s
        .send("GET", "/vault/v1/kv", Some(&s.key_b.clone()), None)
        .await;
    assert_eq!(b.status, StatusCode::OK);

    let health = s.send("GET", "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json["status"], "ok");
    let metrics = s.send("GET", "/metrics", None, None).await;
    let text = metrics.json.as_str().unwrap();
    assert!(
        text.contains(
            r#"vault_http_requests_total{route="/vault/v1/kv",method="GET",status="200"} 4"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"vault_http_requests_total{route="/vault/v1/kv",method="GET",status="429"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"vault_http_request_duration_seconds_count{route="/vault/v1/kv"} 5"#),
        "{text}"
    );
    assert!(
        text.contains("vault_provider_calls_total{op=\"generate_data_key\"} 0"),
        "{text}"
    );
}

#[tokio::test]
async fn provider_calls_are_counted() {
    let s = server().await;
    s.create("one", "v").await;
    let id = s.create("two", "v").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.a("GET", &format!("/vault/v1/kv/{id}"), None).await;
    let text = s
        .send("GET", "/metrics", None, None)
        .await
        .json
        .as_str()
        .unwrap()
        .to_owned();
    // Two seals: two data keys asked for a seal, none generated outside one.
    assert!(
        text.contains("vault_provider_calls_total{op=\"data_key_for_seal\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("vault_provider_calls_total{op=\"generate_data_key\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("vault_provider_calls_total{op=\"unwrap\"} 1"),
        "{text}"
    );
    assert!(text.contains("vault_provider_failures_total 0"), "{text}");
}

/// `/metrics` names routes and key providers: a peer that is not on loopback gets it only with
/// the configured token as a bearer token; with no token configured, never.
#[tokio::test]
async fn metrics_are_for_loopback_or_the_token_holder() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqlStore::open_sqlite(dir.path()).await.unwrap());
    let keys = KeyRouter::new(Arc::new(ManagedKeyProvider::in_memory("root").unwrap()));
    let vault = Vault::new(Arc::new(keys), store.clone(), fresh_integrity());
    let with_token = app(AppState::with_metrics_token(
        vault.clone(),
        Limits::default(),
        Some("scrape-token-123".into()),
    ));
    let without_token = app(AppState::new(vault, Limits::default()));
    let get = |app: Router, peer: [u8; 4], bearer: Option<&'static str>| async move {
        let mut req = Request::builder()
            .uri("/metrics")
            .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                peer, 5555,
            ))));
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        res.status()
    };
    let remote = [10, 0, 0, 5];
    let loopback = [127, 0, 0, 1];
    assert_eq!(
        get(without_token.clone(), remote, None).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(without_token.clone(), remote, Some("scrape-token-123")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(get(without_token, loopback, None).await, StatusCode::OK);
    assert_eq!(
        get(with_token.clone(), remote, None).await,
        StatusCode::FORBIDDEN
    );
    for wrong in ["scrape-token-12", "scrape-token-1234", ""] {
        assert_eq!(
            get(with_token.clone(), remote, Some(wrong)).await,
            StatusCode::FORBIDDEN,
            "{wrong:?}"
        );
    }
    assert_eq!(
        get(with_token.clone(), remote, Some("scrape-token-123")).await,
        StatusCode::OK
    );
    assert_eq!(get(with_token, loopback, None).await, StatusCode::OK);
}

/// A provider defined wrongly is the operator's mistake: met at request time it is a 500 with
/// code `configuration_error` (and its cause in the log), never a 4xx that blames the caller.
#[tokio::test]
async fn a_configuration_mistake_met_at_request_time_is_a_500_configuration_error() {
    #[derive(Debug)]
    struct Misconfigured;

    fn mistake() -> vault_crypto::ProviderError {
        vault_crypto::ConfigError {
            scheme: "test-kms",
            rule: "key_name must be a key name",
        }
        .into()
    }

    #[async_trait::async_trait]
    impl vault_crypto::KeyProvider for Misconfigured {
        fn owns(&self, _: &vault_crypto::KeyRef) -> bool {
            false
        }
        async fn wrap(
            &self,
            _: &vault_crypto::DataKey,
            _: &vault_crypto::KeyContext,
        ) -> Result<vault_crypto::WrappedKey, vault_crypto::ProviderError> {
            Err(mistake())
        }
        async fn unwrap_owned(
            &self,
            _: &vault_crypto::WrappedKey,
            _: &vault_crypto::KeyContext,
            _: vault_crypto::Attempts,
        ) -> Result<vault_crypto::DataKey, vault_crypto::ProviderError> {
            Err(mistake())
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqlStore::open_sqlite(dir.path()).await.unwrap());
    let vault = Vault::new(
        Arc::new(KeyRouter::new(Arc::new(Misconfigured))),
        store.clone(),
        fresh_integrity(),
    );
    let key = auth::create(&vault.api_keys(), "env_a", "Key A")
        .await
        .unwrap();
    let app = app(AppState::new(vault, Limits::default()));
    for (uri, body) in [
        (
            "/vault/v1/kv",
            json!({"key_context": {"organization_id": "org_1"}, "name": "n", "value": "v"}),
        ),
        (
            "/vault/v1/keys/data-key",
            json!({"context": {"organization_id": "org_1"}}),
        ),
    ] {
        let req = Request::builder()
            .method("POST")
            .uri(uri)
            .header("authorization", format!("Bearer {}", key.expose_secret()))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR, "{uri}");
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["code"], "configuration_error", "{uri}: {json}");
        assert!(
            !json["message"].as_str().unwrap().contains("key_name"),
            "the detail is for the log: {json}"
        );
    }
    // Nothing was stored.
    assert!(store.audit_events("env_a", 10).await.unwrap().is_empty());
}

/// An integrity key of its own for a store made by the test (nothing it reads needs the
/// store's integrity record).
fn fresh_integrity() -> Arc<vault_objects::IntegrityKey> {
    Arc::new(vault_objects::IntegrityKey::generate().unwrap())
}
