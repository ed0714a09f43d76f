//! The KeyProvider conformance suite on the managed provider, plain and behind the data-key
//! cache (`aws_moto.rs`, `gcp_kms.rs` and `azure_key_vault.rs` run it on the cloud providers).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

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
