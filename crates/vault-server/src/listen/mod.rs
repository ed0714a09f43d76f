//! The listener: HTTP/1.1 over plain TCP or TLS (rustls), with limits that keep slow, idle and
//! too many clients from holding the server.
//!
//! - **Request head**: a connection whose request head (TLS handshake included) has not arrived
//!   within [`Listening::head_timeout`] of its start, or of the first byte of a next request, is
//!   closed.
//! - **Request body**: a body not complete within [`Listening::body_timeout`] of its head is
//!   answered `408` and the connection closed; a blob upload (`PUT /vault/v1/blobs/…`), as
//!   long as its value, only when less than 64 KiB of it arrived in that time (the time the
//!   server spends storing what arrived is not counted).
//! - **Answers not taken**: a write that makes no progress for [`Listening::body_timeout`] (a
//!   client that pipelines requests and never reads) closes the connection.
//! - **Idle keep-alive**: a connection with no request for [`Listening::idle_timeout`] after its
//!   last answer is closed.
//! - **Connections**: beyond [`Listening::max_connections`] open at once, new connections are
//!   closed as soon as they are accepted; established ones are untouched.
//!
//! The timing lives in a thin wrapper under TLS that knows, from the service, whether a request
//! is being handled (then the connection has no deadline: a slow key service is not a slow
//! client) or when it last went quiet.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

pub(crate) mod deadlines;
mod timed_body;
mod tls;

use deadlines::{Busy, Guarded, Watch};
pub(crate) use timed_body::BodyTimedOut;
use timed_body::TimedBody;
pub use tls::Tls;

/// How the server listens. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Listening {
    /// The longest wait for a complete request head, TLS handshake included.
    pub head_timeout: Duration,
    /// The longest wait for a complete request body after its head, and for a client to take
    /// any of an answer it is sent.
    pub body_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// The most connections open at once.
    pub max_connections: usize,
    /// TLS, if the server terminates it itself.
    pub tls: Option<Arc<Tls>>,
}

impl Default for Listening {
    fn default() -> Self {
        Self {
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            tls: None,
        }
    }
}

/// Serves `app` on `listener` as [`Listening`] says until `shutdown` completes, then lets
/// in-flight requests finish (each change is one database transaction, so nothing is left
/// half-written).
///
/// # Errors
/// None today: a failed accept (out of file descriptors) is logged and retried.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    listening: Listening,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut max = listening.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    // Connections must not use up the file descriptors the store and key services need.
    if let Some(limit) = open_file_limit() {
        let room = limit.saturating_sub(FD_RESERVE).max(1);
        if room < max {
            tracing::warn!(
                target: "vault::listen",
                max_connections = max,
                open_file_limit = limit,
                using = room,
                "max_connections is above what the open-file limit leaves room for; lowered"
            );
            max = room;
        }
    }
    let slots = Arc::new(Semaphore::new(max));
    let listening = Arc::new(listening);
    let (stop, stopped) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut refused_since_log = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted.
                    tracing::warn!(target: "vault::listen", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Full: refused at once, so established clients keep their share.
            drop(stream);
            refused_since_log += 1;
            if refused_since_log.is_power_of_two() {
                tracing::warn!(
                    target: "vault::listen",
                    max_connections = max,
                    refused = refused_since_log,
                    "connection limit reached; refusing new connections"
                );
            }
            continue;
        };
        refused_since_log = 0;
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let listening = Arc::clone(&listening);
        let stopped = stopped.clone();
        tokio::spawn(async move {
            connection(stream, peer, app, &listening, stopped).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection gives its slot back when it has finished; one that does not within the
    // grace period (a client that never reads) is dropped with the process.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            target: "vault::listen",
            open = max - slots.available_permits(),
            "connections still open after the shutdown grace period; closing them"
        );
    }
    Ok(())
}

/// How long a stopping server waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// File descriptors kept for everything but client connections (the database, key services,
/// the key ring, logs).
const FD_RESERVE: usize = 256;

/// The soft limit on open files (`/proc/self/limits`), where the system says.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    listening: &Listening,
    mut stopped: watch::Receiver<bool>,
) {
    let watch = Arc::new(Watch::new(listening.tls.is_none()));
    let io = Guarded::new(stream, Arc::clone(&watch), listening);
    let service = {
        let watch = Arc::clone(&watch);
        let body_timeout = listening.body_timeout;
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let busy = Busy::start(Arc::clone(&watch));
            // A blob upload is as long as its value: it may take as long as it keeps arriving
            // (64 KiB at least per body timeout).
            let streamed = req.method() == hyper::Method::PUT
                && req.uri().path().starts_with("/vault/v1/blobs/");
            let deadline = Instant::now() + body_timeout;
            let mut req = req.map(|b| {
                axum::body::Body::new(if streamed {
                    TimedBody::sliding(b, body_timeout)
                } else {
                    TimedBody::new(b, deadline)
                })
            });
            req.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                let res = app.oneshot(req).await;
                drop(busy);
                res
            }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    // Our own deadlines (above) replace hyper's header timer, which would also cut idle
    // keep-alive connections at the head timeout.
    http.keep_alive(true).header_read_timeout(None);
    match &listening.tls {
        None => {
            drive(
                http.serve_connection(TokioIo::new(io), service),
                &mut stopped,
            )
            .await
        }
        Some(tls) => match tls.acceptor().accept(io).await {
            Ok(tls_stream) => {
                drive(
                    http.serve_connection(TokioIo::new(tls_stream), service),
                    &mut stopped,
                )
                .await;
            }
            Err(e) => {
                tracing::debug!(target: "vault::listen", error = %e, %peer, "TLS handshake failed");
            }
        },
    }
}

/// Runs one connection to its end, closing it gracefully (after the request in progress) once
/// the server stops.
async fn drive<I, S>(
    conn: hyper::server::conn::http1::Connection<I, S>,
    stopped: &mut watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = axum::body::Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = async { let _ = stopped.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
