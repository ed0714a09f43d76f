//! The listener: HTTP/1.1 over plain TCP or TLS (rustls), with limits that keep slow, idle and
//! too many clients from holding the server.
//!
//! - **Request head**: a connection whose request head (TLS handshake included) has not arrived
//!   within [`Listening::head_timeout`] of its start, or of the first byte of a next request, is
//!   closed.
//! - **Request body**: a body not complete within [`Listening::body_timeout`] of its head is
//!   answered `408` and the connection closed.
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
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

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

/// A certificate chain and private key from PEM files, reloadable while serving: connections
/// accepted after a [`reload`](Self::reload) get the new certificate, established ones keep
/// theirs.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    config: RwLock<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate chain `cert` and the private key `key` (PEM files).
    ///
    /// # Errors
    /// An I/O error naming the file that is missing, unreadable or not what it should be
    /// (never its contents).
    pub fn load(cert: &Path, key: &Path) -> io::Result<Arc<Self>> {
        let config = server_config(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            config: RwLock::new(config),
        }))
    }

    /// Reads the files again and uses them for new connections; on an error the current
    /// certificate stays.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn reload(&self) -> io::Result<()> {
        let config = server_config(&self.cert, &self.key)?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self.config.read().unwrap_or_else(|e| e.into_inner());
        tokio_rustls::TlsAcceptor::from(Arc::clone(&config))
    }
}

fn server_config(cert: &Path, key: &Path) -> io::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |path: &Path, what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {what}", path.display()),
        )
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|_| bad(cert, "cannot read a PEM certificate chain"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad(cert, "not a PEM certificate chain"))?;
    if chain.is_empty() {
        return Err(bad(cert, "no certificate in the file"));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|_| bad(key, "not a PEM private key"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| bad(cert, "no TLS version available"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|_| {
            bad(
                key,
                "the key does not match the certificate, or is unsupported",
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
    let watch = Arc::new(Watch::new());
    let io = Guarded::new(stream, Arc::clone(&watch), listening);
    let service = {
        let watch = Arc::clone(&watch);
        let body_timeout = listening.body_timeout;
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let busy = Busy::start(Arc::clone(&watch));
            let deadline = Instant::now() + body_timeout;
            let mut req = req.map(|b| axum::body::Body::new(TimedBody::new(b, deadline)));
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

/// What a connection is doing, as far as deadlines go.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for (the rest of) a request head since `since`.
    Head { since: Instant },
    /// Answered everything; quiet since `since`.
    Idle { since: Instant },
}

/// Shared by a connection's I/O and its service.
#[derive(Debug)]
struct Watch {
    /// Requests being handled.
    busy: AtomicUsize,
    phase: Mutex<Phase>,
    /// The reader that waited without a deadline while a request was handled: woken when the
    /// connection goes quiet, so that its idle deadline is armed.
    parked: Mutex<Option<Waker>>,
}

impl Watch {
    fn new() -> Self {
        Self {
            busy: AtomicUsize::new(0),
            phase: Mutex::new(Phase::Head {
                since: Instant::now(),
            }),
            parked: Mutex::new(None),
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived: a quiet connection is now reading a request head.
    fn bytes_arrived(&self) {
        let mut phase = self.phase();
        if let Phase::Idle { .. } = *phase
            && self.busy.load(Ordering::Acquire) == 0
        {
            *phase = Phase::Head {
                since: Instant::now(),
            };
        }
    }

    /// When the connection must have made progress by, if it has a deadline now.
    fn deadline(&self, head: Duration, idle: Duration) -> Option<Instant> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(match *self.phase() {
            Phase::Head { since } => since + head,
            Phase::Idle { since } => since + idle,
        })
    }
}

/// A request being handled; when it is answered the connection is quiet again.
struct Busy(Arc<Watch>);

impl Busy {
    fn start(watch: Arc<Watch>) -> Self {
        watch.busy.fetch_add(1, Ordering::AcqRel);
        Self(watch)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut phase = self.0.phase();
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            *phase = Phase::Idle {
                since: Instant::now(),
            };
            drop(phase);
            let parked = self
                .0
                .parked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(waker) = parked {
                waker.wake();
            }
        }
    }
}

/// The TCP stream with the connection's deadlines: a read that would wait past the deadline
/// fails with `TimedOut`, which closes the connection.
struct Guarded {
    inner: TcpStream,
    watch: Arc<Watch>,
    head: Duration,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    /// How long a write may make no progress.
    send: Duration,
    /// Since when writes have made no progress.
    stalled: Option<Instant>,
    send_timer: Pin<Box<Sleep>>,
}

impl Guarded {
    fn new(inner: TcpStream, watch: Arc<Watch>, listening: &Listening) -> Self {
        Self {
            inner,
            watch,
            head: listening.head_timeout,
            idle: listening.idle_timeout,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            send: listening.body_timeout,
            stalled: None,
            send_timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    /// Passes on a write's outcome; a write pending for longer than `send` since the last
    /// progress fails with `TimedOut`.
    fn write_outcome<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match outcome {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let deadline = *self.stalled.get_or_insert_with(Instant::now) + self.send;
                if self.send_timer.deadline() != deadline {
                    self.send_timer.as_mut().reset(deadline);
                }
                match self.send_timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client does not take its answers",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.watch.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // Parked before the check, so a request that finishes right after it still
                // wakes this reader to arm the idle deadline.
                *this.watch.parked.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(cx.waker().clone());
                let Some(deadline) = this.watch.deadline(this.head, this.idle) else {
                    return Poll::Pending;
                };
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client was too slow or idle too long",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.write_outcome(cx, outcome)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_flush(cx);
        self.write_outcome(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.write_outcome(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that was not complete by its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub(crate) struct BodyTimedOut;

/// A request body with a deadline.
struct TimedBody {
    inner: Incoming,
    timer: Pin<Box<Sleep>>,
}

impl TimedBody {
    fn new(inner: Incoming, deadline: Instant) -> Self {
        Self {
            inner,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
