use crate::AppState;
use crate::error::ApiError;

use super::reply;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

pub(crate) async fn healthz() -> Response {
    reply(StatusCode::OK, json!({ "status": "ok" }))
}

/// For load balancers: 200 only while the database and the keys are usable, else 503 (the
/// cause is logged, not told).
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    // One probe at a time, at most one a second: callers arriving meanwhile get the last
    // answer instead of queueing behind a slow database or KMS.
    use std::sync::atomic::Ordering::Relaxed;
    let ready = match state.readiness.try_lock() {
        Err(_) => state.ready.load(Relaxed),
        Ok(last) if last.is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(1)) => {
            state.ready.load(Relaxed)
        }
        Ok(mut last) => {
            let probe =
                tokio::time::timeout(std::time::Duration::from_secs(2), state.vault.ready()).await;
            let ready = match probe {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::warn!(target: "vault::server", error = %e, "not ready");
                    false
                }
                Err(_) => {
                    tracing::warn!(target: "vault::server", "not ready: the probe took over 2 s");
                    false
                }
            };
            state.ready.store(ready, Relaxed);
            *last = Some(std::time::Instant::now());
            ready
        }
    };
    if ready {
        reply(StatusCode::OK, json!({ "status": "ready" }))
    } else {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "unavailable" }),
        )
    }
}

/// Prometheus text, for loopback peers, and for any peer presenting `[server] metrics_token`
/// as a bearer token. The counters name routes and key providers, which is not for everyone
/// who can reach the port.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let loopback = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|c| c.0.ip().is_loopback());
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::as_bytes);
    let token_ok = match (state.metrics_token.as_deref(), presented) {
        (Some(expected), Some(given)) => {
            use sha2::{Digest, Sha256};
            // Compared as hashes in constant time: no length or prefix leaks through timing.
            let (a, b) = (Sha256::digest(expected.as_bytes()), Sha256::digest(given));
            bool::from(subtle::ConstantTimeEq::ct_eq(a.as_slice(), b.as_slice()))
        }
        _ => false,
    };
    if !loopback && !token_ok {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "metrics_forbidden",
            "metrics are served to loopback peers, or with the [server] metrics_token as a bearer token",
        )
        .into_response();
    }
    let text = state
        .metrics
        .render(state.vault.router().calls(), state.vault.write_stats());
    let mut res = text.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    res
}

pub(crate) async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

pub(crate) async fn no_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}
