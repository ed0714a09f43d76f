//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)] // Each test binary uses a different subset.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use vault_crypto::{
    Attempts, DataKey, KeyContext, KeyProvider, KeyRef, ManagedKeyProvider, ProviderError,
    ProviderErrorKind, WrappedKey,
};

/// Runs a future to completion on a fresh current-thread runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

pub fn ctx(pairs: &[(&str, &str)]) -> KeyContext {
    KeyContext::from_pairs(pairs.iter().copied()).expect("valid context")
}

/// A provider under another scheme, as a cloud KMS provider would be: it really wraps (with
/// its own managed ring underneath) but its key references say `scheme://key-id#version`.
#[derive(Debug)]
pub struct OtherScheme {
    scheme: &'static str,
    inner: ManagedKeyProvider,
}

impl OtherScheme {
    pub fn new(scheme: &'static str, key_id: &str) -> Arc<Self> {
        Arc::new(Self {
            scheme,
            inner: ManagedKeyProvider::in_memory(key_id).expect("ring"),
        })
    }

    fn to_inner(&self, wrapped: &WrappedKey) -> WrappedKey {
        let r = wrapped.key_ref();
        let key_ref = KeyRef::new("managed", r.key_id(), r.version()).expect("ref");
        WrappedKey::new(key_ref, wrapped.bytes().to_vec()).expect("wrapped")
    }

    fn to_outer(&self, wrapped: WrappedKey) -> WrappedKey {
        let r = wrapped.key_ref();
        let key_ref = KeyRef::new(self.scheme, r.key_id(), r.version()).expect("ref");
        WrappedKey::new(key_ref, wrapped.bytes().to_vec()).expect("wrapped")
    }
}

#[async_trait]
impl KeyProvider for OtherScheme {
    fn owns(&self, key: &KeyRef) -> bool {
        key.scheme() == self.scheme && key.key_id() == self.inner.name()
    }

    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
        Ok(self.to_outer(self.inner.wrap(key, ctx).await?))
    }

    async fn unwrap_owned(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
        attempts: Attempts,
    ) -> Result<DataKey, ProviderError> {
        self.inner
            .unwrap_owned(&self.to_inner(wrapped), ctx, attempts)
            .await
    }
}

/// A provider that is always down: for error propagation tests.
#[derive(Debug)]
pub struct Down {
    pub scheme: &'static str,
}

#[async_trait]
impl KeyProvider for Down {
    fn owns(&self, key: &KeyRef) -> bool {
        key.scheme() == self.scheme
    }

    async fn wrap(&self, _: &DataKey, _: &KeyContext) -> Result<WrappedKey, ProviderError> {
        Err(ProviderError::new(
            ProviderErrorKind::Unavailable,
            self.scheme,
            "connection refused",
        ))
    }

    async fn unwrap_owned(
        &self,
        _: &WrappedKey,
        _: &KeyContext,
        _: Attempts,
    ) -> Result<DataKey, ProviderError> {
        Err(ProviderError::new(
            ProviderErrorKind::Unavailable,
            self.scheme,
            "connection refused",
        ))
    }
}

/// Appends one block of a vector file: `NAME = value` lines (`NAME =` for an empty value), then
/// a blank line.
pub fn write_block(out: &mut String, fields: &[(&str, String)]) {
    for (k, v) in fields {
        if v.is_empty() {
            out.push_str(&format!("{k} =\n"));
        } else {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    out.push('\n');
}
