//! The vault's HTTP API, wire-compatible with WorkOS Vault, so the official WorkOS SDKs work
//! against it unchanged (`docs/API.md` says what we answer, and where it differs).
//!
//! [`app`] builds the axum router over an [`AppState`]: the [`Vault`] facade (key router and
//! store), the request [`Limits`] and the [`Metrics`]. The server holds no crypto of its own
//! and reaches no store: objects and data keys go through the facade, and authentication reads
//! API key records through the narrow [`ApiKeys`](vault_objects::ApiKeys).
//!
//! | endpoint | what |
//! |---|---|
//! | `POST /vault/v1/kv` | create an object |
//! | `GET /vault/v1/kv` | list names (cursor pagination) |
//! | `GET/PUT/DELETE /vault/v1/kv/{id}` | read, update (`version_check`), delete |
//! | `GET /vault/v1/kv/name/{name}` | read by name (percent-encoded or with raw slashes) |
//! | `GET /vault/v1/kv/{id}/metadata`, `/versions` | describe, list versions |
//! | `POST /vault/v1/keys/data-key`, `/decrypt`, `/rekey` | the data-key API |
//! | `GET /events` | the audit trail as WorkOS events (the Events API) |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | liveness, readiness (database and keys), Prometheus text |

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
mod body;
pub mod error;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
mod handlers;
mod idempotency;
pub mod listen;
pub mod metrics;
mod rate;
mod timefmt;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use vault_objects::Vault;

pub use auth::Principal;
pub use error::ApiError;
pub use listen::{Listening, Tls, serve};
pub use metrics::Metrics;

/// Request limits. Each breach is a clear 4xx, never a 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// The largest object value, in bytes of UTF-8 (413 beyond).
    pub max_value_bytes: usize,
    /// The largest blob, in bytes (413 beyond: at once for a `Content-Length` above it, else
    /// when the body passes it; nothing is stored).
    pub max_blob_bytes: u64,
    /// Requests per second allowed per API key, with a burst of the same size (429 beyond);
    /// `None` for no limit.
    pub requests_per_second: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            max_value_bytes: 1024 * 1024,
            max_blob_bytes: 64 << 30,
            requests_per_second: None,
        }
    }
}

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    vault: Vault,
    /// What authentication reads: API key records, their rows checked, nothing else of the
    /// store.
    api_keys: vault_objects::ApiKeys,
    limits: Limits,
    metrics: Metrics,
    rate: rate::RateLimiter,
    /// The bearer token that opens `/metrics` to non-loopback peers.
    metrics_token: Option<zeroize::Zeroizing<String>>,
    /// The last readiness probe and when it ran: `/readyz` probes at most once a second,
    /// however often it is asked (it is unauthenticated, and a probe may call a KMS).
    readiness: tokio::sync::Mutex<Option<Instant>>,
    /// The last probe's answer, for callers arriving while a probe runs.
    ready: std::sync::atomic::AtomicBool,
}

impl AppState {
    /// A state over `vault` with `limits`; `/metrics` answers loopback peers only.
    pub fn new(vault: Vault, limits: Limits) -> Arc<Self> {
        Self::with_metrics_token(vault, limits, None)
    }

    /// As [`new`](Self::new), with `/metrics` also open to any peer presenting `token` as a
    /// bearer token.
    pub fn with_metrics_token(vault: Vault, limits: Limits, token: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            rate: rate::RateLimiter::new(limits.requests_per_second),
            api_keys: vault.api_keys(),
            vault,
            limits,
            metrics: Metrics::default(),
            metrics_token: token.map(zeroize::Zeroizing::new),
            readiness: tokio::sync::Mutex::default(),
            ready: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The facade.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// Provider verifications show as `vault_provider_verified{provider}`.
impl vault_objects::jobs::VerificationReport for AppState {
    fn verified(&self, name: &str, ok: bool) {
        self.metrics().set_provider_verified(name, ok);
    }

    fn providers(&self, names: &std::collections::BTreeSet<String>) {
        self.metrics().retain_providers(names);
    }
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route template a request matched (a response extension, for the request log).
#[derive(Debug, Clone)]
struct Route(String);

/// Gives every response an `X-Request-ID` (the caller's, if it sent a short printable one, or
/// a fresh random one) and writes the request's one log line: id, method, route template (never
/// the path: names can be in it), status, latency, and for errors the code and the server-side
/// cause. Nothing else of the request or the answer is logged: no header, body, value, key or
/// context.
async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let incoming = req
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| v.len() <= 64 && v.as_bytes().iter().all(u8::is_ascii_graphic))
        .cloned();
    let method = req.method().clone();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let mut res = next.run(req).await;
    let id = incoming.unwrap_or_else(|| {
        let mut b = [0u8; 12];
        let _ = getrandom::fill(&mut b);
        let mut s = String::from("req_");
        for x in b {
            s.push_str(&format!("{x:02x}"));
        }
        HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("req_unknown"))
    });
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = res.status().as_u16();
    let route = res
        .extensions()
        .get::<Route>()
        .map_or("unmatched", |r| r.0.as_str());
    let request_id = id.to_str().unwrap_or("req_unknown");
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    match res.extensions().get::<error::Logged>() {
        None => tracing::info!(
            target: "vault::request",
            request_id, %method, route, status, latency_ms, peer, "request"
        ),
        Some(e) => {
            let (provider, kind, cause) = e.cause.as_ref().map_or(("", "", ""), |c| {
                (
                    c.provider.as_deref().unwrap_or(""),
                    c.kind.unwrap_or(""),
                    c.detail.as_str(),
                )
            });
            if status >= 500 {
                tracing::error!(
                    target: "vault::request",
                    request_id, %method, route, status, latency_ms, peer,
                    error = e.code, provider, provider_error = kind, cause, "request failed"
                );
            } else {
                tracing::info!(
                    target: "vault::request",
                    request_id, %method, route, status, latency_ms, peer,
                    error = e.code, provider, provider_error = kind, cause, "request refused"
                );
            }
        }
    }
    res.headers_mut().insert(REQUEST_ID.clone(), id);
    res
}

/// Counts the request under its route template and times it.
async fn track(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    let mut res = next.run(req).await;
    state
        .metrics
        .record(&route, &method, res.status().as_u16(), started.elapsed());
    res.extensions_mut().insert(Route(route));
    res
}

/// The HTTP API over `state`. Tests can drive it without a socket (`tower::ServiceExt::oneshot`).
pub fn app(state: Arc<AppState>) -> Router {
    use handlers as h;
    let limit = state.limits.max_body_bytes;
    Router::new()
        .route("/vault/v1/kv", post(h::create).get(h::list))
        .route(
            "/vault/v1/kv/{id}",
            get(h::read).put(h::update).delete(h::delete),
        )
        .route("/vault/v1/kv/name/{*name}", get(h::read_by_name))
        .route("/vault/v1/kv/{id}/metadata", get(h::describe))
        .route("/vault/v1/kv/{id}/versions", get(h::versions))
        .route("/vault/v1/blobs", get(h::list_blobs))
        .route(
            "/vault/v1/blobs/{*name}",
            get(h::get_blob)
                .head(h::head_blob)
                .put(h::put_blob)
                .delete(h::delete_blob),
        )
        .route("/vault/v1/keys/data-key", post(h::create_data_key))
        .route("/vault/v1/keys/decrypt", post(h::decrypt_data_key))
        .route("/vault/v1/keys/rekey", post(h::rekey))
        .route("/events", get(events::list))
        .route("/healthz", get(h::healthz))
        .route("/readyz", get(h::readyz))
        .route("/metrics", get(h::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .fallback(h::no_route)
        .method_not_allowed_fallback(h::no_method)
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::internal("unexpected failure"))
        }))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}
