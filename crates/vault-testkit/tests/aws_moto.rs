//! AwsKmsProvider against moto, a real AWS KMS emulator on loopback (`scripts/with-moto`, run by
//! `scripts/test`, sets `VAULT_TEST_MOTO_URL`). Without it these tests fail under CI and are
//! reported as skipped otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

// The AWS crate's own helpers (the moto endpoint, a client for it), shared as a file.
#[path = "../../vault-kms-aws/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{client, moto_url};
use vault_crypto::{Envelope, KeyContext, KeyProvider, ProviderErrorKind, WrappedKey};
use vault_kms_aws::{AwsKmsProvider, RetryPolicy};

async fn new_key(client: &aws_sdk_kms::Client) -> String {
    let out = client.create_key().send().await.unwrap();
    out.key_metadata().unwrap().key_id().to_owned()
}

fn ctx(org: &str) -> KeyContext {
    KeyContext::from_pairs([("organization_id", org)]).unwrap()
}

#[tokio::test]
async fn conforms_to_the_provider_suite() {
    let Some(url) = moto_url() else { return };
    let c = client(&url);
    let key = new_key(&c).await;
    let p = AwsKmsProvider::from_client(c, &key, RetryPolicy::default())
        .await
        .unwrap();
    assert!(
        p.key_arn().starts_with("arn:aws:kms:us-east-1:"),
        "{}",
        p.key_arn()
    );
    vault_testkit::provider::run_all(&p).await;
    // The key reference records the ARN.
    let env = vault_crypto::seal(&p, &ctx("org_1"), b"v", vault_crypto::Aad::NONE)
        .await
        .unwrap();
    let r = Envelope::parse(&env).unwrap().wrapped_keys()[0]
        .key_ref()
        .to_string();
    assert_eq!(r, format!("aws-kms://{}", p.key_arn()));
}

#[tokio::test]
async fn a_wrapped_key_of_another_kms_key_is_rejected_by_the_key_id_pin() {
    let Some(url) = moto_url() else { return };
    let c = client(&url);
    let mine = AwsKmsProvider::from_client(c.clone(), &new_key(&c).await, RetryPolicy::default())
        .await
        .unwrap();
    let theirs = AwsKmsProvider::from_client(c.clone(), &new_key(&c).await, RetryPolicy::default())
        .await
        .unwrap();
    let (_, wrapped) = theirs.generate_data_key(&ctx("org_1")).await.unwrap();
    // Relabel their ciphertext as ours: KMS would happily decrypt it under their key.
    let relabelled = WrappedKey::new(
        vault_crypto::KeyRef::new("aws-kms", mine.key_arn(), "").unwrap(),
        wrapped.bytes().to_vec(),
    )
    .unwrap();
    let e = mine.unwrap(&relabelled, &ctx("org_1")).await.unwrap_err();
    // AWS answers IncorrectKeyException (InvalidCiphertext); moto answers AccessDenied. Either
    // way the key of another account or customer is never used.
    assert!(
        matches!(
            e.kind(),
            ProviderErrorKind::InvalidCiphertext | ProviderErrorKind::AccessDenied
        ),
        "{e}"
    );
}

#[tokio::test]
async fn an_unknown_key_is_not_found() {
    let Some(url) = moto_url() else { return };
    let e =
        AwsKmsProvider::from_client(client(&url), "alias/does-not-exist", RetryPolicy::default())
            .await
            .unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::NotFound, "{e}");
}

#[tokio::test]
async fn an_unreachable_kms_is_retried_a_bounded_number_of_times() {
    // A closed loopback port: every attempt is refused at once.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let retry = RetryPolicy::default()
        .max_attempts(3)
        .base_delay(Duration::from_millis(100))
        .call_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let e = AwsKmsProvider::from_client(client(&url), "some-key", retry)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind(), ProviderErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    // Two backoffs of 100 ms and 200 ms (±50%) happened, and no more.
    assert!(took >= Duration::from_millis(150), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

/// Counts Decrypt calls that reach KMS.
#[derive(Debug)]
struct CountingUnwraps(AwsKmsProvider, std::sync::atomic::AtomicU64);

#[async_trait::async_trait]
impl KeyProvider for CountingUnwraps {
    fn owns(&self, key: &vault_crypto::KeyRef) -> bool {
        self.0.owns(key)
    }
    async fn wrap(
        &self,
        key: &vault_crypto::DataKey,
        ctx: &KeyContext,
    ) -> Result<WrappedKey, vault_crypto::ProviderError> {
        self.0.wrap(key, ctx).await
    }
    async fn unwrap_owned(
        &self,
        w: &WrappedKey,
        ctx: &KeyContext,
        attempts: vault_crypto::Attempts,
    ) -> Result<vault_crypto::DataKey, vault_crypto::ProviderError> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.unwrap_owned(w, ctx, attempts).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_first_reads_make_one_decrypt_call() {
    let Some(url) = moto_url() else { return };
    let c = client(&url);
    let p = AwsKmsProvider::from_client(c.clone(), &new_key(&c).await, RetryPolicy::default())
        .await
        .unwrap();
    // Credentials never show.
    assert!(!format!("{p:?}").contains("testing"), "{p:?}");
    let env = vault_crypto::seal(&p, &ctx("org_1"), b"read me", vault_crypto::Aad::NONE)
        .await
        .unwrap();
    let counting = std::sync::Arc::new(CountingUnwraps(p, std::sync::atomic::AtomicU64::new(0)));
    let cache = std::sync::Arc::new(vault_crypto::CachingProvider::new(
        counting.clone(),
        vault_crypto::CacheLimits::default(),
    ));
    let reads: Vec<_> = (0..32)
        .map(|_| {
            let (cache, env) = (cache.clone(), env.clone());
            tokio::spawn(async move {
                vault_crypto::open_any_context(&*cache, &env, vault_crypto::Aad::NONE)
                    .await
                    .unwrap()
                    .into_plaintext()
            })
        })
        .collect();
    for r in reads {
        assert_eq!(r.await.unwrap(), b"read me");
    }
    assert_eq!(counting.1.load(std::sync::atomic::Ordering::SeqCst), 1);
}
