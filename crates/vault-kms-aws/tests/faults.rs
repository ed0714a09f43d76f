//! Fault injection: a loopback HTTP proxy in front of moto answers with the errors AWS KMS
//! documents (or hangs, or forwards to moto), and the real SDK and provider handle them:
//! typed kinds, bounded retries, success after transient faults.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{client, moto_url};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vault_crypto::{KeyContext, KeyProvider, ProviderErrorKind};
use vault_kms_aws::{AwsKmsProvider, RetryPolicy};

#[derive(Clone, Debug)]
enum Action {
    /// Answer with this status and KMS error type.
    Fail(u16, &'static str),
    /// Never answer.
    Hang,
    /// Pass the request to moto.
    Forward,
}

struct Proxy {
    url: String,
    requests: Arc<AtomicUsize>,
    /// Actions for the next requests, then `then` for all others.
    plan: Arc<Mutex<(Vec<Action>, Action)>>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let plan = Arc::new(Mutex::new((Vec::new(), Action::Forward)));
        let (r, p) = (requests.clone(), plan.clone());
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let (r, p, upstream) = (r.clone(), p.clone(), upstream.clone());
                tokio::spawn(async move { handle(socket, &r, &p, &upstream).await });
            }
        });
        Self {
            url,
            requests,
            plan,
        }
    }

    fn set(&self, next: Vec<Action>, then: Action) {
        *self.plan.lock().unwrap() = (next, then);
        self.requests.store(0, Ordering::SeqCst);
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Reads one HTTP/1.1 request (head and Content-Length body).
async fn read_request(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap_or(0));
            while buf.len() < end + 4 + len {
                let n = socket.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(buf);
        }
    }
}

async fn handle(
    mut socket: TcpStream,
    requests: &AtomicUsize,
    plan: &Mutex<(Vec<Action>, Action)>,
    upstream: &str,
) {
    while let Some(request) = read_request(&mut socket).await {
        requests.fetch_add(1, Ordering::SeqCst);
        let action = {
            let mut p = plan.lock().unwrap();
            if p.0.is_empty() {
                p.1.clone()
            } else {
                p.0.remove(0)
            }
        };
        match action {
            Action::Fail(status, kind) => {
                let body = format!(r#"{{"__type":"{kind}","message":"injected"}}"#);
                let response = format!(
                    "HTTP/1.1 {status} Injected\r\nContent-Type: application/x-amz-json-1.1\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if socket.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
            Action::Hang => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            Action::Forward => {
                // One request per upstream connection, closed after the answer.
                let end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                let mut forwarded = request[..end].to_vec();
                forwarded.extend_from_slice(b"\r\nConnection: close");
                forwarded.extend_from_slice(&request[end..]);
                let addr = upstream.trim_start_matches("http://");
                let mut up = TcpStream::connect(addr).await.unwrap();
                up.write_all(&forwarded).await.unwrap();
                let mut response = Vec::new();
                up.read_to_end(&mut response).await.unwrap();
                // The client may reuse its connection: tell it not to.
                let response = String::from_utf8_lossy(&response)
                    .replacen("\r\n", "\r\nConnection: close\r\n", 1)
                    .into_bytes();
                let _ = socket.write_all(&response).await;
                return;
            }
        }
    }
}

fn retry() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(3)
        .base_delay(Duration::from_millis(10))
        .call_timeout(Duration::from_millis(500))
}

/// A provider for a real moto key, talking through the proxy.
async fn setup() -> Option<(Proxy, AwsKmsProvider)> {
    let moto = moto_url()?;
    let key = client(&moto).create_key().send().await.unwrap();
    let key = key.key_metadata().unwrap().key_id().to_owned();
    let proxy = Proxy::start(moto).await;
    let provider = AwsKmsProvider::from_client(client(&proxy.url), &key, retry())
        .await
        .unwrap();
    Some((proxy, provider))
}

fn ctx() -> KeyContext {
    KeyContext::from_pairs([("organization_id", "org_byok")]).unwrap()
}

#[tokio::test]
async fn documented_errors_map_to_their_kinds_and_only_transient_ones_are_retried() {
    let Some((proxy, p)) = setup().await else {
        return;
    };
    let cases = [
        (400, "DisabledException", ProviderErrorKind::Disabled, 1),
        (
            400,
            "KMSInvalidStateException",
            ProviderErrorKind::Disabled,
            1,
        ),
        (400, "NotFoundException", ProviderErrorKind::NotFound, 1),
        (
            400,
            "AccessDeniedException",
            ProviderErrorKind::AccessDenied,
            1,
        ),
        (
            400,
            "IncorrectKeyException",
            ProviderErrorKind::InvalidCiphertext,
            1,
        ),
        (400, "ThrottlingException", ProviderErrorKind::Throttled, 3),
        (
            500,
            "KMSInternalException",
            ProviderErrorKind::Unavailable,
            3,
        ),
        (503, "ServiceUnavailable", ProviderErrorKind::Unavailable, 3),
    ];
    for (status, kind, expected, attempts) in cases {
        proxy.set(Vec::new(), Action::Fail(status, kind));
        let e = p.generate_data_key(&ctx()).await.unwrap_err();
        assert_eq!(e.kind(), expected, "{kind}: {e}");
        assert_eq!(proxy.requests(), attempts, "{kind}: attempts");
        assert!(e.to_string().contains(kind), "{e}");
    }
}

#[tokio::test]
async fn a_hanging_kms_times_out_each_attempt() {
    let Some((proxy, p)) = setup().await else {
        return;
    };
    proxy.set(Vec::new(), Action::Hang);
    let e = p.generate_data_key(&ctx()).await.unwrap_err();
    // Every attempt was cut off by its own timeout (the clock of that is tested with paused
    // time in `RetryPolicy::call`'s tests), and the policy's attempts were all made.
    assert_eq!(e.kind(), ProviderErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("timed out"), "{e}");
    assert_eq!(proxy.requests(), 3);
}

#[tokio::test]
async fn transient_faults_then_success() {
    let Some((proxy, p)) = setup().await else {
        return;
    };
    proxy.set(
        vec![
            Action::Fail(400, "ThrottlingException"),
            Action::Fail(500, "KMSInternalException"),
        ],
        Action::Forward,
    );
    let (key, wrapped) = p.generate_data_key(&ctx()).await.unwrap();
    assert_eq!(proxy.requests(), 3);
    proxy.set(
        vec![Action::Fail(503, "ServiceUnavailable")],
        Action::Forward,
    );
    assert_eq!(
        p.unwrap(&wrapped, &ctx()).await.unwrap().expose_secret(),
        key.expose_secret()
    );
    assert_eq!(proxy.requests(), 2);
}
