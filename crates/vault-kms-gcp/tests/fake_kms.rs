//! GcpKmsProvider against a wire-level fake of the Cloud KMS REST API (no emulator can be
//! installed here). The fake is real where it matters: it holds AES-256 keys per crypto key
//! version, really encrypts with the additional authenticated data, checks and returns the
//! CRC32C fields, and answers errors in Google's JSON error shape. So a wrong context, a
//! tampered ciphertext or another key's ciphertext fails as in the cloud.
#![allow(clippy::unwrap_used)] // Test code: a panic is a failed test, helpers included.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};
use vault_crypto::{KeyContext, KeyProvider, ProviderErrorKind, WrappedKey};
use vault_kms_gcp::{GcpKmsProvider, RetryPolicy};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/customer";
const OTHER: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/other";

/// A crypto key's versions (AES-256 keys, the last one primary) and whether it is enabled.
type CryptoKey = (Vec<[u8; 32]>, bool);

#[derive(Default)]
struct Fake {
    /// AES keys by crypto key name, one per version (the last is primary), and whether enabled.
    keys: Mutex<HashMap<String, CryptoKey>>,
    /// Statuses to answer instead of working, for the next requests.
    faults: Mutex<Vec<(u16, &'static str)>>,
    requests: AtomicUsize,
    /// Answer with a wrong checksum, as a response damaged in transit would have.
    corrupt_checksums: std::sync::atomic::AtomicBool,
}

fn google_error(code: u16, status: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code)
        .insert_header("content-type", "application/json")
        .set_body_json(json!({"error": {"code": code, "status": status, "message": message}}))
}

fn b64(v: &Value, field: &str) -> Option<Vec<u8>> {
    v.get(field)
        .and_then(Value::as_str)
        .map(|s| B64.decode(s).unwrap())
}

/// int64 fields travel as JSON strings (proto3 JSON); accept numbers too.
fn int64(v: &Value, field: &str) -> Option<i64> {
    match v.get(field)? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn crc(b: &[u8]) -> i64 {
    i64::from(crc32c::crc32c(b))
}

/// The fake as a wiremock responder (a local newtype: `Arc` is foreign).
struct Responder(Arc<Fake>);

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        self.0.answer(req)
    }
}

impl Fake {
    fn answer(&self, req: &Request) -> ResponseTemplate {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if let Some((code, status)) = {
            let mut f = self.faults.lock().unwrap();
            (!f.is_empty()).then(|| f.remove(0))
        } {
            let r = google_error(code, status, "injected");
            return if code == 429 {
                r.insert_header("retry-after", "0")
            } else {
                r
            };
        }
        let path = req.url.path().trim_start_matches("/v1/").to_owned();
        let Some((name, op)) = path.rsplit_once(':') else {
            return google_error(404, "NOT_FOUND", "no such method");
        };
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let aad = b64(&body, "additionalAuthenticatedData").unwrap_or_default();
        if int64(&body, "additionalAuthenticatedDataCrc32c").is_some_and(|c| c != crc(&aad)) {
            return google_error(
                400,
                "INVALID_ARGUMENT",
                "additional_authenticated_data checksum mismatch",
            );
        }
        let keys = self.keys.lock().unwrap();
        let Some((versions, enabled)) = keys.get(name) else {
            return google_error(404, "NOT_FOUND", "crypto key not found");
        };
        if !enabled {
            return google_error(
                400,
                "FAILED_PRECONDITION",
                "the primary version is disabled",
            );
        }
        match op {
            "encrypt" => {
                let pt = b64(&body, "plaintext").unwrap_or_default();
                if int64(&body, "plaintextCrc32c").is_some_and(|c| c != crc(&pt)) {
                    return google_error(400, "INVALID_ARGUMENT", "plaintext checksum mismatch");
                }
                let version = versions.len();
                let key = LessSafeKey::new(
                    UnboundKey::new(&AES_256_GCM, &versions[version - 1]).unwrap(),
                );
                let mut nonce = [0u8; 12];
                SystemRandom::new().fill(&mut nonce).unwrap();
                let mut sealed = pt.clone();
                key.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&aad),
                    &mut sealed,
                )
                .unwrap();
                let mut ct = u32::try_from(version).unwrap().to_be_bytes().to_vec();
                ct.extend_from_slice(&nonce);
                ct.extend_from_slice(&sealed);
                ResponseTemplate::new(200).set_body_json(json!({
                    "name": format!("{name}/cryptoKeyVersions/{version}"),
                    "ciphertext": B64.encode(&ct),
                    "ciphertextCrc32c": (crc(&ct) + i64::from(self.corrupt_checksums.load(Ordering::SeqCst))).to_string(),
                    "verifiedPlaintextCrc32c": body.get("plaintextCrc32c").is_some(),
                    "verifiedAdditionalAuthenticatedDataCrc32c": body.get("additionalAuthenticatedDataCrc32c").is_some(),
                    "protectionLevel": "SOFTWARE",
                }))
            }
            "decrypt" => {
                let ct = b64(&body, "ciphertext").unwrap_or_default();
                if int64(&body, "ciphertextCrc32c").is_some_and(|c| c != crc(&ct)) {
                    return google_error(400, "INVALID_ARGUMENT", "ciphertext checksum mismatch");
                }
                let invalid = || {
                    google_error(
                        400,
                        "INVALID_ARGUMENT",
                        "Decryption failed: the ciphertext is invalid.",
                    )
                };
                if ct.len() < 4 + 12 + 16 {
                    return invalid();
                }
                let version = u32::from_be_bytes(ct[..4].try_into().unwrap()) as usize;
                let Some(aes) = version.checked_sub(1).and_then(|i| versions.get(i)) else {
                    return invalid();
                };
                let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, aes).unwrap());
                let mut buf = ct[16..].to_vec();
                let nonce: [u8; 12] = ct[4..16].try_into().unwrap();
                match key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut buf) {
                    Ok(pt) => ResponseTemplate::new(200).set_body_json(json!({
                        "plaintext": B64.encode(&*pt),
                        "plaintextCrc32c": (crc(pt) + i64::from(self.corrupt_checksums.load(Ordering::SeqCst))).to_string(),
                        "usedPrimary": version == versions.len(),
                        "protectionLevel": "SOFTWARE",
                    })),
                    Err(_) => invalid(),
                }
            }
            _ => google_error(404, "NOT_FOUND", "no such method"),
        }
    }
}

async fn start() -> (MockServer, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    for name in [KEY, OTHER] {
        let mut k = [0u8; 32];
        SystemRandom::new().fill(&mut k).unwrap();
        fake.keys
            .lock()
            .unwrap()
            .insert(name.to_owned(), (vec![k], true));
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Responder(fake.clone()))
        .mount(&server)
        .await;
    (server, fake)
}

async fn provider(server: &MockServer, key: &str) -> GcpKmsProvider {
    let client = google_cloud_kms_v1::client::KeyManagementService::builder()
        .with_endpoint(server.uri())
        .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
        .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry)
        .build()
        .await
        .unwrap();
    let retry = RetryPolicy::default()
        .max_attempts(3)
        .base_delay(Duration::from_millis(5));
    GcpKmsProvider::from_client(client, key, retry).unwrap()
}

fn ctx(org: &str) -> KeyContext {
    KeyContext::from_pairs([("organization_id", org)]).unwrap()
}

#[tokio::test]
async fn conforms_to_the_provider_suite() {
    let (server, _) = start().await;
    let p = provider(&server, KEY).await;
    vault_testkit::provider::run_all(&p).await;
    let (_, wrapped) = p.generate_data_key(&ctx("o")).await.unwrap();
    assert_eq!(wrapped.key_ref().to_string(), format!("gcp-kms://{KEY}#1"));
}

#[tokio::test]
async fn another_keys_ciphertext_fails_as_in_the_cloud() {
    let (server, _) = start().await;
    let mine = provider(&server, KEY).await;
    let theirs = provider(&server, OTHER).await;
    let (_, wrapped) = theirs.generate_data_key(&ctx("o")).await.unwrap();
    let relabelled = WrappedKey::new(
        vault_crypto::KeyRef::new("gcp-kms", KEY, "1").unwrap(),
        wrapped.bytes().to_vec(),
    )
    .unwrap();
    let e = mine.unwrap(&relabelled, &ctx("o")).await.unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::InvalidCiphertext, "{e}");
}

#[tokio::test]
async fn documented_errors_map_to_their_kinds_and_retries_are_bounded() {
    let (server, fake) = start().await;
    let p = provider(&server, KEY).await;
    let cases = [
        (403, "PERMISSION_DENIED", ProviderErrorKind::AccessDenied, 1),
        (404, "NOT_FOUND", ProviderErrorKind::NotFound, 1),
        (400, "FAILED_PRECONDITION", ProviderErrorKind::Disabled, 1),
        (429, "RESOURCE_EXHAUSTED", ProviderErrorKind::Throttled, 3),
        (500, "INTERNAL", ProviderErrorKind::Unavailable, 3),
        (503, "UNAVAILABLE", ProviderErrorKind::Unavailable, 3),
    ];
    for (code, status, kind, attempts) in cases {
        *fake.faults.lock().unwrap() = vec![(code, status); 5];
        fake.requests.store(0, Ordering::SeqCst);
        let e = p.generate_data_key(&ctx("o")).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{status}: {e}");
        assert_eq!(fake.requests.load(Ordering::SeqCst), attempts, "{status}");
    }
    // Transient faults, then success.
    *fake.faults.lock().unwrap() = vec![(429, "RESOURCE_EXHAUSTED"), (503, "UNAVAILABLE")];
    fake.requests.store(0, Ordering::SeqCst);
    let (key, wrapped) = p.generate_data_key(&ctx("o")).await.unwrap();
    assert_eq!(fake.requests.load(Ordering::SeqCst), 3);
    assert_eq!(
        p.unwrap(&wrapped, &ctx("o")).await.unwrap().expose_secret(),
        key.expose_secret()
    );
}

#[tokio::test]
async fn a_disabled_key_and_a_rotated_key() {
    let (server, fake) = start().await;
    let p = provider(&server, KEY).await;
    let (key, v1) = p.generate_data_key(&ctx("o")).await.unwrap();
    // Rotation: a new primary version; old ciphertexts still decrypt, new ones name v2.
    let mut k = [0u8; 32];
    SystemRandom::new().fill(&mut k).unwrap();
    fake.keys.lock().unwrap().get_mut(KEY).unwrap().0.push(k);
    let (_, v2) = p.generate_data_key(&ctx("o")).await.unwrap();
    assert_eq!(v2.key_ref().version(), "2");
    assert_eq!(
        p.unwrap(&v1, &ctx("o")).await.unwrap().expose_secret(),
        key.expose_secret()
    );
    // The customer disables the key: a typed, non-retryable error.
    fake.keys.lock().unwrap().get_mut(KEY).unwrap().1 = false;
    let e = p.unwrap(&v1, &ctx("o")).await.unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::Disabled, "{e}");
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn checksums_are_verified_on_every_response() {
    let (server, fake) = start().await;
    let p = provider(&server, KEY).await;
    let (_, wrapped) = p.generate_data_key(&ctx("o")).await.unwrap();
    fake.corrupt_checksums.store(true, Ordering::SeqCst);
    let e = p.generate_data_key(&ctx("o")).await.unwrap_err();
    assert!(e.to_string().contains("CRC32C"), "{e}");
    let e = p.unwrap(&wrapped, &ctx("o")).await.unwrap_err();
    assert!(e.to_string().contains("CRC32C"), "{e}");
    fake.corrupt_checksums.store(false, Ordering::SeqCst);
    assert!(p.unwrap(&wrapped, &ctx("o")).await.is_ok());
}
