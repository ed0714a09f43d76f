//! The blob extension (`/vault/v1/blobs`) through `app()` without a socket: a streamed upload
//! of several megabytes, downloads whole and by `Range` (206, 416, ignored ranges), HEAD,
//! listing, replacing, deleting, tenant isolation, and bad input that stores nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;
use vault_crypto::{ManagedKeyProvider, Router as KeyRouter};
use vault_objects::Vault;
use vault_server::{AppState, Limits, app, auth};
use vault_store::{SqlStore, Store, events};

struct Server {
    app: Router,
    store: Arc<dyn Store>,
    key_a: String,
    key_b: String,
    _dir: tempfile::TempDir,
}

async fn server() -> Server {
    server_with(Limits::default()).await
}

async fn server_with(limits: Limits) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqlStore::open_sqlite(dir.path()).await.unwrap());
    let keys = KeyRouter::new(Arc::new(ManagedKeyProvider::in_memory("root").unwrap()));
    let integrity = Arc::new(vault_objects::IntegrityKey::generate().unwrap());
    let vault = Vault::new(Arc::new(keys), store.clone(), integrity);
    let a = auth::create(&vault.api_keys(), "env_a", "A").await.unwrap();
    let b = auth::create(&vault.api_keys(), "env_b", "B").await.unwrap();
    Server {
        app: app(AppState::new(vault, limits)),
        store,
        key_a: a.expose_secret().to_owned(),
        key_b: b.expose_secret().to_owned(),
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

impl Server {
    async fn send(
        &self,
        method: &str,
        uri: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {key}"))
            .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                40000,
            ))));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = self
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{method} {uri}");
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Uploads `value` as the body of a PUT, in pieces of `piece` bytes as a client streams it.
    async fn put(&self, name: &str, context: &str, value: &[u8], piece: usize) -> Answer {
        let pieces: Vec<Result<Bytes, std::io::Error>> = value
            .chunks(piece)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body = Body::from_stream(futures_util::stream::iter(pieces));
        self.send(
            "PUT",
            &format!("/vault/v1/blobs/{name}"),
            &self.key_a,
            &[("vault-key-context", context)],
            body,
        )
        .await
    }

    async fn get(&self, name: &str, range: Option<&str>) -> Answer {
        let headers: Vec<(&str, &str)> = range.map(|r| ("range", r)).into_iter().collect();
        self.send(
            "GET",
            &format!("/vault/v1/blobs/{name}"),
            &self.key_a,
            &headers,
            Body::empty(),
        )
        .await
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 13 + i / 4099).to_le_bytes()[0])
        .collect()
}

const ORG: &str = r#"{"organization_id":"org_1"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_upload_downloads_whole_and_by_range() {
    let s = server().await;
    let value = data(3 * (1 << 20) + 7);
    let put = s.put("backups/db.tar", ORG, &value, 70_001).await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.json());
    let meta = put.json();
    assert_eq!(meta["object"], "blob");
    assert_eq!(meta["name"], "backups/db.tar");
    assert_eq!(meta["size"], value.len());
    assert_eq!(meta["context"]["organization_id"], "org_1");
    assert!(meta["id"].as_str().unwrap().starts_with("blob_"));

    let whole = s.get("backups/db.tar", None).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.headers["content-length"], value.len().to_string());
    assert_eq!(whole.headers["accept-ranges"], "bytes");
    assert_eq!(
        whole.headers["etag"],
        format!("\"{}\"", meta["id"].as_str().unwrap())
    );
    assert!(whole.body == value, "the whole value");

    let len = value.len();
    for (range, first, last) in [
        ("bytes=0-0", 0, 0),
        ("bytes=65535-65536", 65_535, 65_536),
        ("bytes=100-2000000", 100, 2_000_000),
        ("bytes=-10", len - 10, len - 1),
        ("bytes=3145000-", 3_145_000, len - 1),
        ("bytes=5-99999999", 5, len - 1),
    ] {
        let part = s.get("backups/db.tar", Some(range)).await;
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            part.headers["content-range"],
            format!("bytes {first}-{last}/{len}"),
            "{range}"
        );
        assert!(part.body == value[first..=last], "{range}");
    }
    let past = s
        .get("backups/db.tar", Some(&format!("bytes={len}-")))
        .await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(past.headers["content-range"], format!("bytes */{len}"));
    assert_eq!(past.json()["code"], "range_not_satisfiable");
    // A range of another unit, or several: ignored, the whole value answered.
    for ignored in ["items=0-1", "bytes=0-1,5-6", "bytes=9-3"] {
        let all = s.get("backups/db.tar", Some(ignored)).await;
        assert_eq!(all.status, StatusCode::OK, "{ignored}");
        assert_eq!(all.body.len(), len);
    }

    let head = s
        .send(
            "HEAD",
            "/vault/v1/blobs/backups/db.tar",
            &s.key_a,
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["content-length"], len.to_string());
    assert!(head.body.is_empty());

    let trail: Vec<String> = s
        .store
        .audit_events("env_a", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(trail.last().map(String::as_str), Some(events::BLOB_CREATED));
    assert!(trail.iter().filter(|e| *e == events::BLOB_READ).count() >= 10);
    // As the Events API shows them: each names the blob as a blob.
    let listed = s
        .send(
            "GET",
            "/events?events=vault.blob.created,vault.metadata.read&limit=100",
            &s.key_a,
            &[],
            Body::empty(),
        )
        .await
        .json();
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{listed}");
    for event in data {
        assert_eq!(event["data"]["blob_name"], "backups/db.tar", "{event}");
        assert!(event["data"].get("kv_name").is_none(), "{event}");
    }
    assert_eq!(data[0]["data"]["key_context"]["organization_id"], "org_1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_are_listed_replaced_deleted_and_kept_to_their_tenant() {
    let s = server().await;
    assert_eq!(s.put("a", ORG, b"first", 2).await.status, StatusCode::OK);
    assert_eq!(s.put("b", ORG, b"", 1).await.status, StatusCode::OK);
    assert_eq!(s.put("a", ORG, b"second", 4).await.status, StatusCode::OK);
    assert_eq!(s.get("a", None).await.body, b"second");
    assert_eq!(s.get("b", None).await.body, b"");
    assert_eq!(
        s.get("b", Some("bytes=0-")).await.status,
        StatusCode::RANGE_NOT_SATISFIABLE
    );

    let list = s
        .send(
            "GET",
            "/vault/v1/blobs?limit=1",
            &s.key_a,
            &[],
            Body::empty(),
        )
        .await
        .json();
    assert_eq!(list["data"][0]["name"], "a");
    assert_eq!(list["list_metadata"]["after"], "a");
    let rest = s
        .send(
            "GET",
            "/vault/v1/blobs?after=a",
            &s.key_a,
            &[],
            Body::empty(),
        )
        .await
        .json();
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert_eq!(rest["data"][0]["name"], "b");
    assert_eq!(
        s.send(
            "GET",
            "/vault/v1/blobs?limit=0",
            &s.key_a,
            &[],
            Body::empty()
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );

    // Another tenant sees nothing of them.
    let other = s
        .send("GET", "/vault/v1/blobs/a", &s.key_b, &[], Body::empty())
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    let theirs = s
        .send("GET", "/vault/v1/blobs", &s.key_b, &[], Body::empty())
        .await
        .json();
    assert_eq!(theirs["data"].as_array().unwrap().len(), 0);
    assert_eq!(
        s.send("DELETE", "/vault/v1/blobs/a", &s.key_b, &[], Body::empty())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.send("GET", "/vault/v1/blobs/a", "sk_nope", &[], Body::empty())
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    let deleted = s
        .send("DELETE", "/vault/v1/blobs/a", &s.key_a, &[], Body::empty())
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.json()["name"], "a");
    assert_eq!(s.get("a", None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_store_nothing() {
    let s = server().await;
    // No context, or a context that is not one.
    let missing = s
        .send(
            "PUT",
            "/vault/v1/blobs/x",
            &s.key_a,
            &[],
            Body::from("value"),
        )
        .await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(missing.json()["errors"][0]["field"], "Vault-Key-Context");
    for bad in [
        r#"{"a":"1","a":"2"}"#,
        r#"{"a":1}"#,
        "{}",
        "not json",
        r#"{"vault_byok":"rules"}"#,
    ] {
        let answer = s.put("x", bad, b"value", 5).await;
        assert!(answer.status.is_client_error(), "{bad}: {}", answer.status);
        assert_eq!(
            answer.json()["errors"][0]["field"],
            "Vault-Key-Context",
            "{bad}"
        );
    }
    // A body that fails midway (the client went away): nothing stored, the upload removed.
    let pieces: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from(data(2 << 20))),
        Err(std::io::Error::other("connection reset")),
    ];
    let cut = s
        .send(
            "PUT",
            "/vault/v1/blobs/x",
            &s.key_a,
            &[("vault-key-context", ORG)],
            Body::from_stream(futures_util::stream::iter(pieces)),
        )
        .await;
    assert_eq!(cut.status, StatusCode::BAD_REQUEST);
    assert_eq!(cut.json()["code"], "invalid_body");
    assert_eq!(s.get("x", None).await.status, StatusCode::NOT_FOUND);
    // Removed by a task of its own: the answer did not wait for it.
    let since = std::time::Instant::now();
    while !s.store.scan_blob_heads(None, 100).await.unwrap().is_empty() {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(20),
            "an upload is left behind"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A name that is not one.
    let bad_name = s.put("%20%20", ORG, b"v", 1).await;
    assert_eq!(bad_name.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_over_the_limit_is_refused_and_stores_nothing() {
    let s = server_with(Limits {
        max_blob_bytes: 3 << 20,
        ..Limits::default()
    })
    .await;
    // Declared too large: refused before anything is read.
    let declared = s
        .send(
            "PUT",
            "/vault/v1/blobs/big",
            &s.key_a,
            &[("vault-key-context", ORG), ("content-length", "3145729")],
            Body::from(vec![0u8; (3 << 20) + 1]),
        )
        .await;
    assert_eq!(declared.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(declared.json()["code"], "blob_too_large");
    // Streamed without a length: refused once it passes the limit, the upload given up.
    let streamed = s.put("big", ORG, &data((3 << 20) + 1), 1 << 20).await;
    assert_eq!(streamed.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.get("big", None).await.status, StatusCode::NOT_FOUND);
    let since = std::time::Instant::now();
    while !s.store.scan_blob_heads(None, 10).await.unwrap().is_empty() {
        assert!(since.elapsed() < std::time::Duration::from_secs(20));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // At the limit: stored.
    let at = s.put("big", ORG, &data(3 << 20), 1 << 20).await;
    assert_eq!(at.status, StatusCode::OK);
    assert_eq!(s.get("big", None).await.body.len(), 3 << 20);
}
