//! The KeyProvider conformance suite on the managed provider (the AWS one runs it on moto).
#![allow(clippy::unwrap_used)] // Test code: a panic is a failed test, helpers included.

#[tokio::test]
async fn managed_provider_conforms() {
    let p = vault_crypto::ManagedKeyProvider::in_memory("root").unwrap();
    vault_testkit::provider::run_all(&p).await;
}

#[tokio::test]
async fn cached_managed_provider_conforms() {
    let p = vault_crypto::CachingProvider::new(
        std::sync::Arc::new(vault_crypto::ManagedKeyProvider::in_memory("root").unwrap()),
        vault_crypto::CacheLimits::default(),
    );
    vault_testkit::provider::run_all(&p).await;
}
