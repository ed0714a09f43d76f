//! The vault's HTTP API, wire-compatible with WorkOS Vault, so the official WorkOS SDKs work
//! against it unchanged (`../shared/workos-vault-api.md` is the contract; `docs/API.md` says
//! what we answer).
//!
//! [`app`] builds the axum router over an [`AppState`]: the [`Vault`] facade (key router and
//! store), the request [`Limits`] and the [`Metrics`]. The server holds no crypto of its own:
//! objects go through the facade, data keys through [`vault_crypto::issued`].
//!
//! | endpoint | what |
//! |---|---|
//! | `POST /vault/v1/kv` | create an object |
//! | `GET /vault/v1/kv` | list names (cursor pagination) |
//! | `GET/PUT/DELETE /vault/v1/kv/{id}` | read, update (`version_check`), delete |
//! | `GET /vault/v1/kv/name/{name}` | read by name (percent-encoded or with raw slashes) |
//! | `GET /vault/v1/kv/{id}/metadata`, `/versions` | describe, list versions |
//! | `POST /vault/v1/keys/data-key`, `/decrypt`, `/rekey` | the data-key API |
//! | `GET /healthz`, `GET /metrics` | liveness, Prometheus text |

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
mod body;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod handlers;
pub mod metrics;
mod rate;
mod timefmt;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use vault_objects::Vault;

pub use auth::Principal;
pub use error::ApiError;
pub use metrics::Metrics;

/// Request limits. Each breach is a clear 4xx, never a 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// The largest object value, in bytes of UTF-8 (413 beyond).
    pub max_value_bytes: usize,
    /// Requests per second allowed per API key, with a burst of the same size (429 beyond);
    /// `None` for no limit.
    pub requests_per_second: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            max_value_bytes: 1024 * 1024,
            requests_per_second: None,
        }
    }
}

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    vault: Vault,
    limits: Limits,
    metrics: Metrics,
    rate: rate::RateLimiter,
}

impl AppState {
    /// A state over `vault` with `limits`.
    pub fn new(vault: Vault, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            rate: rate::RateLimiter::new(limits.requests_per_second),
            vault,
            limits,
            metrics: Metrics::default(),
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

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives every response an `X-Request-ID`: the caller's, if it sent a short printable one, or a
/// fresh random one.
async fn request_id(req: Request, next: Next) -> Response {
    let incoming = req
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| v.len() <= 64 && v.as_bytes().iter().all(u8::is_ascii_graphic))
        .cloned();
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
    let res = next.run(req).await;
    state
        .metrics
        .record(&route, &method, res.status().as_u16(), started.elapsed());
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
        .route("/vault/v1/keys/data-key", post(h::create_data_key))
        .route("/vault/v1/keys/decrypt", post(h::decrypt_data_key))
        .route("/vault/v1/keys/rekey", post(h::rekey))
        .route("/healthz", get(h::healthz))
        .route("/metrics", get(h::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .fallback(h::no_route)
        .method_not_allowed_fallback(h::no_method)
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::internal("unexpected failure"))
        }))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` completes, then lets in-flight requests finish
/// (each change is one database transaction, so nothing is left half-written).
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
