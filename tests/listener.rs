//! `vault serve` as a process, from the outside: its request log (useful, and never a secret in
//! it), its limits on slow, idle and too many clients, and HTTPS with a certificate that is
//! reloaded on SIGHUP.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::client::ApiClient;
use hyper::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

mod common;

use common::make_certificate;

const VAULT: &str = env!("CARGO_BIN_EXE_vault");

/// The embedded default's provider, for a configuration file that only sets `[server]`.
const MANAGED: &str = "[providers.managed]\ntype = \"managed\"\n\n";

/// A running `vault serve`, stopped with SIGTERM when dropped.
struct Server {
    child: Child,
    addr: String,
    key: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(VAULT);
        cmd.arg("--data-dir")
            .arg(dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--environment", "prod"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let line = line.unwrap();
                if let Some(rest) = line
                    .strip_prefix("vault: listening on http://")
                    .or_else(|| line.strip_prefix("vault: listening on https://"))
                {
                    let _ = tx.send(rest.split_whitespace().next().unwrap().to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!("serve did not start: {:#?}", log.lock().unwrap());
        };
        let out = child.stdout.take().unwrap();
        let (ktx, krx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let line = line.unwrap();
                if line.starts_with("sk_") {
                    let _ = ktx.send(line);
                }
            }
        });
        let key = krx.recv_timeout(Duration::from_secs(10)).unwrap();
        Self {
            child,
            addr,
            key,
            log,
        }
    }

    /// Stops the server and returns everything it logged.
    fn stop(mut self) -> Vec<String> {
        self.terminate();
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        // The reader thread drains what is left.
        std::thread::sleep(Duration::from_millis(100));
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

/// The request log is one JSON line per request, with what an operator needs, and no key,
/// value, API key or context value in any line, whatever the outcome, even at `debug`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_log_helps_and_never_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--log-format", "json"],
        &[("RUST_LOG", "debug")],
    );
    let client = ApiClient::new(&format!("http://{}", server.addr), &server.key);
    const VALUE: &str = "value-SECRET-4111111111111111";
    const NEW_VALUE: &str = "value-SECRET-5500000000000004";
    const CONTEXT_VALUE: &str = "ctx-SECRET-org-ab12";
    let ctx = json!({ "organization_id": CONTEXT_VALUE });
    let call = |method: Method, path: String, body: Option<Value>| {
        let client = client.clone();
        async move { client.call(method, &path, body.as_ref()).await.unwrap() }
    };

    let (s, created) = call(
        Method::POST,
        "/vault/v1/kv".into(),
        Some(json!({"name": "card", "value": VALUE, "key_context": ctx})),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (s, read) = call(Method::GET, format!("/vault/v1/kv/{id}"), None).await;
    assert_eq!((s, read["value"].as_str()), (200, Some(VALUE)));
    let (s, _) = call(
        Method::PUT,
        format!("/vault/v1/kv/{id}"),
        Some(json!({"value": NEW_VALUE})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, dk) = call(
        Method::POST,
        "/vault/v1/keys/data-key".into(),
        Some(json!({ "context": ctx })),
    )
    .await;
    assert_eq!(s, 201, "{dk}");
    let data_key = dk["data_key"].as_str().unwrap().to_owned();
    assert_eq!(STANDARD.decode(&data_key).unwrap().len(), 32);
    let (s, _) = call(
        Method::POST,
        "/vault/v1/keys/decrypt".into(),
        Some(json!({"keys": dk["encrypted_keys"]})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(
        Method::POST,
        "/vault/v1/keys/decrypt".into(),
        Some(json!({"keys": "AAAA"})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = call(
        Method::POST,
        "/vault/v1/kv".into(),
        Some(json!({"name": "bad", "value": VALUE, "key_context": {"organization_id": 5}})),
    )
    .await;
    assert_eq!(s, 422);
    let (s, _) = call(
        Method::GET,
        format!("/vault/v1/kv/name/{CONTEXT_VALUE}"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let forged_key = format!("sk_{}", "Q".repeat(43));
    let forged = ApiClient::new(&format!("http://{}", server.addr), &forged_key);
    let (s, _) = forged
        .call(Method::GET, "/vault/v1/kv", None)
        .await
        .unwrap();
    assert_eq!(s, 401);

    let api_key = server.key.clone();
    let log = server.stop();
    let requests: Vec<Value> = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "vault::request")
        .collect();
    assert_eq!(requests.len(), 9, "one line per request: {log:#?}");
    let mut statuses: Vec<u64> = requests
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 201, 201, 400, 401, 404, 422]);
    for r in &requests {
        for field in ["request_id", "method", "route", "latency_ms", "peer"] {
            assert!(!r[field].is_null(), "{field} missing: {r}");
        }
        if r["status"].as_u64().unwrap() >= 400 {
            assert!(r["error"].is_string(), "the error code: {r}");
        }
    }
    // Routes are templates: the name in the path (here a context value) is not logged.
    assert!(
        requests
            .iter()
            .any(|r| r["route"] == "/vault/v1/kv/name/{*name}")
    );

    let secrets = [
        VALUE,
        NEW_VALUE,
        CONTEXT_VALUE,
        data_key.as_str(),
        api_key.as_str(),
        &api_key[3..],
        &api_key[api_key.len() - 20..],
        forged_key.as_str(),
    ];
    for line in &log {
        for secret in secrets {
            assert!(!line.contains(secret), "{secret:?} in the log: {line}");
        }
    }
}

/// Half-open requests are closed after the head timeout while other clients are served; a
/// body that stops arriving gets a 408; an idle kept-alive connection lives its own (longer)
/// timeout; beyond the connection cap new connections are closed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_surplus_clients_are_cut_off_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vault.toml");
    std::fs::write(
        &config,
        format!("{MANAGED}[server]\nhead_timeout_secs = 2\nbody_timeout_secs = 2\nidle_timeout_secs = 4\n"),
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &[],
    );
    let addr = server.addr.clone();
    let client = ApiClient::new(&format!("http://{addr}"), &server.key);

    // 3,000 clients send half a request head, then nothing.
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..3000 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /vault/v1/kv HTTP/1.1\r\nHost: x\r\nAuthoriz")
            .await
            .unwrap();
        slow.push(s);
    }
    // Meanwhile everyone else is served.
    for _ in 0..5 {
        let (s, _) = client
            .call(Method::GET, "/vault/v1/kv", None)
            .await
            .unwrap();
        assert_eq!(s, 200);
    }
    let closers: Vec<_> = slow
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                // Closed (EOF or reset) by the server, not by our own timeout.
                tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
                    .await
                    .map(|r| !matches!(r, Ok(n) if n > 0))
                    .unwrap_or(false)
            })
        })
        .collect();
    let mut closed = 0;
    for c in closers {
        closed += usize::from(c.await.unwrap());
    }
    assert_eq!(closed, 3000, "every half-open request was closed");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "not before the timeout"
    );
    let (s, _) = client
        .call(Method::GET, "/vault/v1/kv", None)
        .await
        .unwrap();
    assert_eq!(s, 200, "still serving");

    // A body that stops half way: 408, then the connection is closed.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /vault/v1/kv HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
        server.key
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");

    // A blob upload takes as long as its value: one that keeps arriving (64 KiB at least per
    // body timeout) for twice the body timeout is stored; one that trickles or stalls is cut
    // (408), storing nothing.
    let blob_head = |name: &str, len: usize| {
        format!(
            "PUT /vault/v1/blobs/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Vault-Key-Context: {{\"organization_id\":\"org_1\"}}\r\nContent-Length: {len}\r\n\r\n",
            server.key
        )
    };
    let piece = vec![b'x'; 64 * 1024];
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(blob_head("slow", 8 * piece.len()).as_bytes())
        .await
        .unwrap();
    let trickle = Instant::now();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        s.write_all(&piece).await.unwrap();
    }
    assert!(trickle.elapsed() > Duration::from_secs(4));
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"size\":524288"), "{answer}");
    // A byte every half second keeps nothing alive: cut at the body timeout.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(blob_head("trickled", 100).as_bytes())
        .await
        .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let cut = Instant::now();
    let trickler = tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if wr.write_all(b"x").await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut answer)).await;
    trickler.abort();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        cut.elapsed() < Duration::from_secs(6),
        "cut at the body timeout"
    );
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(blob_head("stalled", 100).as_bytes())
        .await
        .unwrap();
    s.write_all(b"only part").await.unwrap();
    let answer = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let (status, _) = client
        .call(Method::GET, "/vault/v1/blobs/stalled", None)
        .await
        .unwrap();
    assert_eq!(status, 404, "nothing stored");

    // A client that pipelines requests for large answers and never reads them: cut off once its
    // answers have not moved for the body timeout, instead of holding the connection forever.
    let (s, big) = client
        .call(
            Method::POST,
            "/vault/v1/kv",
            Some(&json!({"name": "big", "value": "x".repeat(1_000_000), "key_context": {"organization_id": "o"}})),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{big}");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr.parse().unwrap()).await.unwrap();
    let read = format!(
        "GET /vault/v1/kv/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        big["id"].as_str().unwrap(),
        server.key
    );
    s.write_all(read.repeat(40).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let taken = read_to_close(&mut s, Duration::from_secs(20)).await;
    assert!(
        taken.len() < 20 * 1_000_000,
        "cut off: {} of 40,000,000 bytes were sent",
        taken.len()
    );

    // Kept alive: still open past the head timeout (2 s), closed past the idle one (4 s).
    let mut s = TcpStream::connect(&addr).await.unwrap();
    assert!(get_healthz(&mut s).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(get_healthz(&mut s).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(5000)).await;
    assert!(
        read_to_close(&mut s, Duration::from_secs(2))
            .await
            .is_empty()
    );
    drop(server);

    // The connection cap: the surplus is closed at once, the established are untouched.
    let config = dir.path().join("capped.toml");
    std::fs::write(
        &config,
        format!("{MANAGED}[server]\nmax_connections = 20\n"),
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("data2"),
        &["--config", config.to_str().unwrap()],
        &[],
    );
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(&server.addr).await.unwrap();
        assert!(get_healthz(&mut s).await.starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    for _ in 0..5 {
        let mut surplus = TcpStream::connect(&server.addr).await.unwrap();
        let _ = surplus
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        assert!(
            read_to_close(&mut surplus, Duration::from_secs(5))
                .await
                .is_empty()
        );
    }
    for s in &mut held {
        assert!(get_healthz(s).await.starts_with("HTTP/1.1 200"));
    }
    drop(held);
    // Slots come back as connections close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(&server.addr).await.unwrap();
    assert!(get_healthz(&mut s).await.starts_with("HTTP/1.1 200"));
}

/// One `GET /healthz` on a kept-alive connection; the answer's head and body.
async fn get_healthz<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> String {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return String::from_utf8_lossy(&got).into_owned(),
        }
    }
}

/// Everything the server sends until it closes the connection (or `limit` passes, which fails).
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> String {
    let mut got = Vec::new();
    let outcome = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "the server did not close the connection");
    String::from_utf8_lossy(&got).into_owned()
}

/// A TLS client that trusts only `ca` (a PEM file).
fn connector(ca: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    addr: &str,
    ca: &Path,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector(ca).connect(name, tcp).await
}

/// HTTPS without a proxy: the server presents its certificate; on SIGHUP it reads the files
/// again, new connections get the new certificate and an established connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_certificate_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path();
    make_certificate(certs, "a");
    make_certificate(certs, "b");
    let (cert, key) = (certs.join("cert.pem"), certs.join("key.pem"));
    std::fs::copy(certs.join("a-cert.pem"), &cert).unwrap();
    std::fs::copy(certs.join("a-key.pem"), &key).unwrap();
    let server = Server::start(
        &certs.join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("vault: listening on https://"))
    );
    let (ca_a, ca_b) = (certs.join("a-ca.pem"), certs.join("b-ca.pem"));
    let mut kept = tls_connect(&server.addr, &ca_a).await.unwrap();
    assert!(get_healthz(&mut kept).await.starts_with("HTTP/1.1 200"));
    assert!(
        tls_connect(&server.addr, &ca_b).await.is_err(),
        "signed by A only"
    );
    // Plain HTTP to the TLS port gets nothing useful.
    let mut plain = TcpStream::connect(&server.addr).await.unwrap();
    let answer = get_healthz(&mut plain).await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The certificate is replaced on disk, then SIGHUP.
    std::fs::copy(certs.join("b-cert.pem"), &cert).unwrap();
    std::fs::copy(certs.join("b-key.pem"), &key).unwrap();
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fresh = loop {
        if let Ok(s) = tls_connect(&server.addr, &ca_b).await {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(get_healthz(&mut fresh).await.starts_with("HTTP/1.1 200"));
    assert!(tls_connect(&server.addr, &ca_a).await.is_err(), "A is gone");
    // The connection made before the reload is still served.
    assert!(get_healthz(&mut kept).await.starts_with("HTTP/1.1 200"));

    // A broken file on the next SIGHUP keeps the current certificate.
    std::fs::write(&key, "not a key").unwrap();
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut after = tls_connect(&server.addr, &ca_b).await.unwrap();
    assert!(get_healthz(&mut after).await.starts_with("HTTP/1.1 200"));
    let log = server.stop();
    assert!(
        log.iter()
            .any(|l| l.contains("TLS certificate not reloaded")),
        "{log:#?}"
    );
}

/// A request head pipelined behind a complete request, and then never finished, gets the head
/// deadline (from when its first bytes came), not the idle one; a connection that is really
/// idle keeps the idle deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_head_pipelined_behind_a_request_gets_the_head_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vault.toml");
    std::fs::write(
        &config,
        format!("{MANAGED}[server]\nhead_timeout_secs = 2\nidle_timeout_secs = 30\n"),
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &[],
    );
    let mut pipelined = TcpStream::connect(&server.addr).await.unwrap();
    let started = Instant::now();
    pipelined
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(&server.addr).await.unwrap();
    assert!(get_healthz(&mut idle).await.starts_with("HTTP/1.1 200"));
    // The first request is answered; the half head then closes the connection at 2 s.
    let answer = read_to_close(&mut pipelined, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_secs(2) && started.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );
    // The idle connection is still open (30 s), and serves its next request.
    assert!(get_healthz(&mut idle).await.starts_with("HTTP/1.1 200"));
}
