//! Customer-managed keys in Google Cloud KMS.
//!
//! [`GcpKmsProvider`] is a [`KeyProvider`] for one Cloud KMS crypto key (symmetric,
//! `ENCRYPT_DECRYPT`). Data keys come from the OS CSPRNG and are wrapped with `encrypt` and
//! unwrapped with `decrypt`, with the canonical key context as `additionalAuthenticatedData`, so
//! a wrapped key unwraps under its own context only. The client does not check the CRC32C
//! integrity fields; this provider sets them on every request and verifies them on every
//! response. Key references are `gcp-kms://projects/…/cryptoKeys/<key>#<version>` with the
//! version that encrypted (decrypt finds it from the ciphertext).
//!
//! Failures map to the same typed kinds as every provider; retryable ones are retried a bounded
//! number of times with jittered backoff ([`RetryPolicy`]), each attempt under a timeout.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt;
use std::future::Future;

use async_trait::async_trait;
use google_cloud_gax::error::rpc::Code;
use google_cloud_kms_v1::client::KeyManagementService;
pub use vault_crypto::RetryPolicy;
use vault_crypto::{
    Attempts, ConfigError, DataKey, KeyContext, KeyProvider, KeyRef, ProviderError,
    ProviderErrorKind, WrappedKey,
};
use zeroize::Zeroizing;

/// The scheme of Cloud KMS key references.
pub const SCHEME: &str = "gcp-kms";

/// A crypto key's resource name, checked: `projects/…/locations/…/keyRings/…/cryptoKeys/…`,
/// every part non-empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(String);

impl KeyName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for KeyName {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = ConfigError {
            scheme: SCHEME,
            rule: "key_name must be projects/…/locations/…/keyRings/…/cryptoKeys/…",
        };
        let parts: Vec<&str> = s.split('/').collect();
        let shaped = parts.len() == 8
            && [
                (0, "projects"),
                (2, "locations"),
                (4, "keyRings"),
                (6, "cryptoKeys"),
            ]
            .iter()
            .all(|&(i, word)| parts[i] == word)
            && parts.iter().all(|p| !p.is_empty());
        if !shaped || KeyRef::new(SCHEME, s, "").is_err() {
            return Err(bad);
        }
        Ok(Self(s.to_owned()))
    }
}

/// A [`KeyProvider`] for one Cloud KMS crypto key. See the [crate docs](crate).
#[derive(Clone)]
pub struct GcpKmsProvider {
    client: KeyManagementService,
    key_name: String,
    retry: RetryPolicy,
}

impl fmt::Debug for GcpKmsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpKmsProvider")
            .field("key", &self.key_name)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

fn error(kind: ProviderErrorKind, message: impl Into<String>) -> ProviderError {
    ProviderError::new(kind, SCHEME, message.into())
}

fn crc(bytes: &[u8]) -> i64 {
    i64::from(crc32c::crc32c(bytes))
}

/// Maps a client error to a typed provider error (the status code's name only: messages can
/// quote resource names, and codes are all a caller needs).
fn map_error(e: &google_cloud_gax::error::Error) -> ProviderError {
    if let Some(status) = e.status() {
        let kind = match status.code {
            Code::PermissionDenied | Code::Unauthenticated => ProviderErrorKind::AccessDenied,
            Code::NotFound => ProviderErrorKind::NotFound,
            Code::FailedPrecondition => ProviderErrorKind::Disabled,
            Code::ResourceExhausted => ProviderErrorKind::Throttled,
            Code::Unavailable | Code::DeadlineExceeded | Code::Internal | Code::Aborted => {
                ProviderErrorKind::Unavailable
            }
            Code::InvalidArgument => ProviderErrorKind::InvalidCiphertext,
            _ => ProviderErrorKind::Other,
        };
        return error(kind, format!("Cloud KMS answered {:?}", status.code));
    }
    let kind = match e.http_status_code() {
        Some(429) => ProviderErrorKind::Throttled,
        Some(403 | 401) => ProviderErrorKind::AccessDenied,
        Some(404) => ProviderErrorKind::NotFound,
        Some(s) if s >= 500 => ProviderErrorKind::Unavailable,
        Some(_) => ProviderErrorKind::Other,
        // No request was sent: Application Default Credentials gave no token, for good or
        // (a token service that may answer next time) for now.
        None => match credentials_error(e) {
            Some(c) if c.is_transient() => {
                return error(
                    ProviderErrorKind::Unavailable,
                    "no Google credentials now: Application Default Credentials found no key file (GOOGLE_APPLICATION_CREDENTIALS) or gcloud application-default login, and the metadata server did not answer (off Google Cloud it never does)",
                );
            }
            Some(_) => {
                return error(
                    ProviderErrorKind::NoCredentials,
                    "no Google credentials: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's application-default login, the metadata server) gave none",
                );
            }
            None if e.is_timeout() || e.is_io() || e.is_transport() => {
                ProviderErrorKind::Unavailable
            }
            None => ProviderErrorKind::Other,
        },
    };
    error(kind, "Cloud KMS request failed")
}

/// The credentials' failure behind `e` (found among its causes), if it is not the request's.
fn credentials_error(
    e: &google_cloud_gax::error::Error,
) -> Option<&google_cloud_gax::error::CredentialsError> {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(found) = c.downcast_ref::<google_cloud_gax::error::CredentialsError>() {
            return Some(found);
        }
        cause = c.source();
    }
    None
}

impl GcpKmsProvider {
    /// Connects with Application Default Credentials to the crypto key `key_name`
    /// (`projects/…/locations/…/keyRings/…/cryptoKeys/…`), at `endpoint` if given. A plain
    /// `http://` endpoint (an emulator) gets no credentials at all: this process's bearer token
    /// is never sent over plain HTTP.
    ///
    /// # Errors
    /// A [`ProviderError`] if the client cannot be built.
    pub async fn connect(
        key_name: &str,
        endpoint: Option<&str>,
        retry: RetryPolicy,
    ) -> Result<Self, ProviderError> {
        let mut builder = KeyManagementService::builder()
            .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry);
        if let Some(url) = endpoint {
            builder = builder.with_endpoint(url);
            if !url.starts_with("https://") {
                builder = builder.with_credentials(
                    google_cloud_auth::credentials::anonymous::Builder::new().build(),
                );
            }
        }
        let client = builder.build().await.map_err(|_| {
            error(
                ProviderErrorKind::Unavailable,
                "cannot build the Cloud KMS client",
            )
        })?;
        Self::from_client(client, key_name, retry)
    }

    /// Uses an existing client (whose own retries should be off: this provider retries).
    ///
    /// # Errors
    /// A [`ProviderError`] if `key_name` is not a crypto key name.
    pub fn from_client(
        client: KeyManagementService,
        key_name: &str,
        retry: RetryPolicy,
    ) -> Result<Self, ProviderError> {
        let KeyName(key_name) = key_name.parse()?;
        Ok(Self {
            client,
            key_name,
            retry,
        })
    }

    /// The crypto key's resource name.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// One Cloud KMS call under the retry policy ([`RetryPolicy::call`]).
    async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        attempts: Attempts,
        mut op: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = google_cloud_kms_v1::Result<T>>,
    {
        self.retry
            .call(attempts, SCHEME, || {
                let call = op();
                async move {
                    call.await
                        .map_err(|e| map_error(&e).with_operation(operation))
                }
            })
            .await
    }
}

#[async_trait]
impl KeyProvider for GcpKmsProvider {
    fn owns(&self, key: &KeyRef) -> bool {
        key.scheme() == SCHEME && key.key_id() == self.key_name
    }

    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
        let plaintext = Zeroizing::new(key.expose_secret().to_vec());
        let aad = ctx.canonical_bytes().to_vec();
        let out = self
            .call(
                "cloudkms.cryptoKeyVersions.useToEncrypt",
                Attempts::Retry,
                || {
                    self.client
                        .encrypt()
                        .set_name(&self.key_name)
                        // The SDK owns (and does not wipe) this copy and the request built from it.
                        .set_plaintext(plaintext.to_vec())
                        .set_plaintext_crc32c(crc(&plaintext))
                        .set_additional_authenticated_data(aad.clone())
                        .set_additional_authenticated_data_crc32c(crc(&aad))
                        .send()
                },
            )
            .await?;
        // Integrity both ways: KMS saw what we sent, and we got what it sent.
        if !out.verified_plaintext_crc32c
            || !out.verified_additional_authenticated_data_crc32c
            || out.ciphertext_crc32c != Some(crc(&out.ciphertext))
        {
            return Err(error(
                ProviderErrorKind::Unavailable,
                "CRC32C mismatch on encrypt",
            ));
        }
        let version = out
            .name
            .rsplit_once("/cryptoKeyVersions/")
            .filter(|(key, _)| *key == self.key_name)
            .map(|(_, v)| v.to_owned())
            .ok_or_else(|| error(ProviderErrorKind::Other, "encrypt answered for another key"))?;
        let key_ref = KeyRef::new(SCHEME, &self.key_name, version)
            .map_err(|_| error(ProviderErrorKind::Other, "invalid key version"))?;
        WrappedKey::new(key_ref, out.ciphertext.to_vec())
            .map_err(|_| error(ProviderErrorKind::Other, "ciphertext out of bounds"))
    }

    async fn unwrap_owned(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
        attempts: Attempts,
    ) -> Result<DataKey, ProviderError> {
        let ciphertext = wrapped.bytes().to_vec();
        let aad = ctx.canonical_bytes().to_vec();
        let mut out = self
            .call("cloudkms.cryptoKeyVersions.useToDecrypt", attempts, || {
                self.client
                    .decrypt()
                    .set_name(&self.key_name)
                    .set_ciphertext(ciphertext.clone())
                    .set_ciphertext_crc32c(crc(&ciphertext))
                    .set_additional_authenticated_data(aad.clone())
                    .set_additional_authenticated_data_crc32c(crc(&aad))
                    .send()
            })
            .await?;
        // Taken out of the answer (the buffer is the answer's alone, so no copy is made) and
        // wiped whatever happens next.
        let mut plaintext = Zeroizing::new(Vec::from(std::mem::take(&mut out.plaintext)));
        if out.plaintext_crc32c != Some(crc(&plaintext)) {
            return Err(error(
                ProviderErrorKind::Unavailable,
                "CRC32C mismatch on decrypt",
            ));
        }
        DataKey::from_answer(std::mem::take(&mut *plaintext))
            .ok_or_else(|| error(ProviderErrorKind::InvalidCiphertext, "not a 32-byte key"))
    }
}
