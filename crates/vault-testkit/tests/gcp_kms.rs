//! GcpKmsProvider against the wire-level Cloud KMS fake of `vault-testkit` (no emulator can be
//! installed here; the fake really encrypts, checks the AAD and the CRC32C fields).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use std::sync::atomic::Ordering;
use std::time::Duration;

use vault_crypto::{KeyContext, KeyProvider, ProviderErrorKind, WrappedKey};
use vault_kms_gcp::{GcpKmsProvider, RetryPolicy};
use vault_testkit::gcp_fake::{KEY, OTHER, start};
use wiremock::MockServer;

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
    fake.rotate(KEY);
    let (_, v2) = p.generate_data_key(&ctx("o")).await.unwrap();
    assert_eq!(v2.key_ref().version(), "2");
    assert_eq!(
        p.unwrap(&v1, &ctx("o")).await.unwrap().expose_secret(),
        key.expose_secret()
    );
    // The customer disables the key: a typed, non-retryable error.
    fake.set_enabled(KEY, false);
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
