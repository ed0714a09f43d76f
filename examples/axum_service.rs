//! Sealing and opening values inside your own axum service, with the managed key.
//!
//! Each note is sealed for its tenant's key context (`organization_id`), bound to its id with
//! associated data, and stored as an envelope; reading it back opens the envelope through the
//! same router. Nothing but envelopes is stored, and the key ring lives in `./example-data`.
//!
//! ```text
//! cargo run --example axum_service            # serves on 127.0.0.1:3000
//! curl -X PUT -H 'x-org: org_1' --data 'meet at dawn' 127.0.0.1:3000/notes/n1
//! curl -H 'x-org: org_1' 127.0.0.1:3000/notes/n1
//! cargo run --example axum_service -- --demo  # the two requests above in-process, then exit
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use vault_crypto::{Aad, KeyContext, ManagedKeyProvider, Router as KeyRouter};

/// What the service keeps: the key router and, standing in for your database, envelopes by id.
struct App {
    keys: KeyRouter,
    notes: Mutex<HashMap<String, Vec<u8>>>,
}

/// The key context of a request: its tenant. Parsed strictly, like every context.
fn context(headers: &HeaderMap) -> Result<KeyContext, StatusCode> {
    let org = headers
        .get("x-org")
        .and_then(|v| v.to_str().ok())
        .ok_or(StatusCode::BAD_REQUEST)?;
    KeyContext::from_pairs([("organization_id", org)]).map_err(|_| StatusCode::BAD_REQUEST)
}

/// Associated data binding an envelope to its note: one copied under another id will not open.
fn aad(id: &str) -> Vec<u8> {
    [b"notes/v1\0".as_slice(), id.as_bytes()].concat()
}

async fn put_note(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, StatusCode> {
    let ctx = context(&headers)?;
    let sealed = vault_crypto::seal(&app.keys, &ctx, &body, Aad::new(&aad(&id)))
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let mut notes = app.notes.lock().unwrap_or_else(|e| e.into_inner());
    notes.insert(id, sealed.into_bytes());
    Ok(StatusCode::NO_CONTENT)
}

async fn get_note(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Vec<u8>, StatusCode> {
    let ctx = context(&headers)?;
    let envelope = {
        let notes = app.notes.lock().unwrap_or_else(|e| e.into_inner());
        notes.get(&id).cloned().ok_or(StatusCode::NOT_FOUND)?
    };
    // Opened only as the caller's tenant: another tenant's note is not found, not shown.
    let opened = vault_crypto::open(&app.keys, &envelope, &ctx, Aad::new(&aad(&id)))
        .await
        .map_err(|_| StatusCode::NOT_FOUND)?;
    Ok(opened.into_plaintext())
}

fn service(keys: KeyRouter) -> Router {
    let app = Arc::new(App {
        keys,
        notes: Mutex::default(),
    });
    Router::new()
        .route("/notes/{id}", put(put_note).get(get_note))
        .with_state(app)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let demo = std::env::args().any(|a| a == "--demo");
    let dir = tempfile::tempdir()?;
    let data_dir = if demo {
        dir.path().to_path_buf()
    } else {
        "example-data".into()
    };
    // The managed ring: created on first use, then shared with every process on this directory.
    let ring = ManagedKeyProvider::open_or_create(&data_dir, "root")?;
    let app = service(KeyRouter::new(Arc::new(ring)));
    if !demo {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
        println!("serving on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        return Ok(());
    }
    use tower::ServiceExt as _;
    let request = |method: &str, org: &str, body: &'static str| {
        axum::http::Request::builder()
            .method(method)
            .uri("/notes/n1")
            .header("x-org", org)
            .body(axum::body::Body::from(body))
    };
    let put = app
        .clone()
        .oneshot(request("PUT", "org_1", "meet at dawn")?)
        .await?;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let got = app.clone().oneshot(request("GET", "org_1", "")?).await?;
    assert_eq!(got.status(), StatusCode::OK);
    let body = axum::body::to_bytes(got.into_body(), 1 << 20).await?;
    println!("org_1 reads its note: {}", String::from_utf8_lossy(&body));
    let other = app.oneshot(request("GET", "org_2", "")?).await?;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    println!("org_2 reading it: {}", other.status());
    Ok(())
}
