//! Customer-managed keys in AWS KMS.
//!
//! [`AwsKmsProvider`] is a [`KeyProvider`] for one KMS key. Data keys come from
//! `GenerateDataKey` (AES_256), are wrapped with `Encrypt` and unwrapped with `Decrypt`, always
//! with the key context as the KMS encryption context, so IAM conditions such as
//! `kms:EncryptionContext:organization_id` apply and a wrapped key unwraps under its own context
//! only. `Decrypt` pins the `KeyId` and rejects an answer from any other key. Key references are
//! `aws-kms://<key ARN>` (KMS records the key version inside the wrapped bytes).
//!
//! Failures map to typed kinds (`AccessDenied`, `NotFound`, `Disabled`, `Throttled`,
//! `Unavailable`, `InvalidCiphertext`, `Other`); retryable ones are retried a bounded number of
//! times with jittered exponential backoff, each attempt under a timeout. Credentials come from
//! the standard AWS chain and never appear in errors or `Debug`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::HashMap;
use std::fmt;
use std::future::Future;

use async_trait::async_trait;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState};
pub use vault_crypto::RetryPolicy;
use vault_crypto::{
    Attempts, DataKey, KeyContext, KeyProvider, KeyRef, ProviderError, ProviderErrorKind,
    WrappedKey,
};

/// The scheme of AWS KMS key references.
pub const SCHEME: &str = "aws-kms";

/// A [`KeyProvider`] for one AWS KMS key. See the [crate docs](crate).
#[derive(Clone)]
pub struct AwsKmsProvider {
    client: aws_sdk_kms::Client,
    key_arn: String,
    key_ref: KeyRef,
    retry: RetryPolicy,
}

impl fmt::Debug for AwsKmsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client holds credentials: never print it.
        f.debug_struct("AwsKmsProvider")
            .field("key", &self.key_arn)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

fn error(kind: ProviderErrorKind, message: impl Into<String>) -> ProviderError {
    ProviderError::new(kind, SCHEME, message.into())
}

/// The credential chain's failure behind `e`, if that is what it is.
fn credentials_error<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e CredentialsError> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(found) = c.downcast_ref::<CredentialsError>() {
            return Some(found);
        }
        cause = c.source();
    }
    None
}

/// Maps an SDK error to a typed provider error. The message carries the KMS error code only:
/// KMS messages can quote ARNs and contexts, never secrets, but codes are all a caller needs.
fn map_sdk_error<E, R>(e: &SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    match e {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("Unknown");
            let kind = match code {
                "AccessDeniedException" | "UnrecognizedClientException" => {
                    ProviderErrorKind::AccessDenied
                }
                "NotFoundException" => ProviderErrorKind::NotFound,
                "DisabledException" | "KMSInvalidStateException" | "KeyUnavailableException" => {
                    ProviderErrorKind::Disabled
                }
                "ThrottlingException" | "LimitExceededException" | "TooManyRequestsException" => {
                    ProviderErrorKind::Throttled
                }
                "InvalidCiphertextException" | "IncorrectKeyException" => {
                    ProviderErrorKind::InvalidCiphertext
                }
                "KMSInternalException"
                | "DependencyTimeoutException"
                | "InternalFailure"
                | "ServiceUnavailable" => ProviderErrorKind::Unavailable,
                _ => ProviderErrorKind::Other,
            };
            error(kind, format!("KMS answered {code}"))
        }
        SdkError::TimeoutError(_) => error(ProviderErrorKind::Unavailable, "KMS call timed out"),
        // Resolving credentials fails before anything is sent, and the SDK reports that as a
        // dispatch failure too: told apart, it is not the network's fault.
        SdkError::DispatchFailure(_) => match credentials_error(e) {
            Some(CredentialsError::CredentialsNotLoaded(_)) => error(
                ProviderErrorKind::NoCredentials,
                "no AWS credentials: the default credential chain (environment, profile, web identity, container and instance role) found none",
            ),
            Some(CredentialsError::InvalidConfiguration(_)) => error(
                ProviderErrorKind::NoCredentials,
                "the AWS credential configuration is invalid: check the profile or role settings this process is given",
            ),
            // A role, metadata or token service that failed or did not answer: it may answer
            // next time.
            Some(_) => error(
                ProviderErrorKind::Unavailable,
                "the AWS credential chain could not get credentials (a role, metadata or token service failed or timed out)",
            ),
            None => error(ProviderErrorKind::Unavailable, "cannot reach KMS"),
        },
        SdkError::ResponseError(_) => {
            error(ProviderErrorKind::Unavailable, "unreadable answer from KMS")
        }
        _ => error(ProviderErrorKind::Other, "KMS request failed"),
    }
}

impl AwsKmsProvider {
    /// Connects with the standard AWS configuration chain (environment, profile, instance
    /// role), optionally for `region` and at `endpoint_url`, and resolves `key_id` (an ARN, a
    /// key id or an alias) to its ARN with `DescribeKey`.
    ///
    /// # Errors
    /// A [`ProviderError`] if the key cannot be described.
    pub async fn connect(
        key_id: &str,
        region: Option<&str>,
        endpoint_url: Option<&str>,
        retry: RetryPolicy,
    ) -> Result<Self, ProviderError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(aws_config::retry::RetryConfig::disabled());
        if let Some(r) = region {
            loader = loader.region(aws_config::Region::new(r.to_owned()));
        }
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let client = aws_sdk_kms::Client::new(&loader.load().await);
        Self::from_client(client, key_id, retry).await
    }

    /// Uses an existing client (whose own retries should be disabled: this provider retries).
    ///
    /// # Errors
    /// A [`ProviderError`] if the key cannot be described.
    pub async fn from_client(
        client: aws_sdk_kms::Client,
        key_id: &str,
        retry: RetryPolicy,
    ) -> Result<Self, ProviderError> {
        let probe = Self {
            client,
            key_arn: String::new(),
            key_ref: KeyRef::new(SCHEME, "pending", "")
                .map_err(|_| error(ProviderErrorKind::Other, "key reference"))?,
            retry,
        };
        let described = probe
            .call("kms:DescribeKey", Attempts::Retry, || {
                probe.client.describe_key().key_id(key_id).send()
            })
            .await?;
        let metadata = described
            .key_metadata()
            .ok_or_else(|| error(ProviderErrorKind::NotFound, "DescribeKey returned no key"))?;
        // A key that is not enabled refuses every data-key call (KMS answers DisabledException
        // or KMSInvalidStateException): say so now, by its state.
        match metadata.key_state() {
            None | Some(KeyState::Enabled | KeyState::Updating) => {}
            // An external key store that cannot be reached: it may come back by itself.
            Some(KeyState::Unavailable) => {
                return Err(error(
                    ProviderErrorKind::Unavailable,
                    "the key's state is Unavailable (its key store is disconnected)",
                ));
            }
            Some(state) => {
                return Err(error(
                    ProviderErrorKind::Disabled,
                    format!("the key's state is {}", state.as_str()),
                ));
            }
        }
        let arn = metadata
            .arn()
            .ok_or_else(|| error(ProviderErrorKind::NotFound, "DescribeKey returned no ARN"))?
            .to_owned();
        let key_ref = KeyRef::new(SCHEME, arn.clone(), "").map_err(|_| {
            error(
                ProviderErrorKind::Other,
                "the key ARN is not a valid key id",
            )
        })?;
        Ok(Self {
            key_arn: arn,
            key_ref,
            ..probe
        })
    }

    /// The key's ARN.
    pub fn key_arn(&self) -> &str {
        &self.key_arn
    }

    /// One KMS call under the retry policy ([`RetryPolicy::call`]); its errors name
    /// `operation` (the IAM action it needs).
    async fn call<T, E, R, F, Fut>(
        &self,
        operation: &'static str,
        attempts: Attempts,
        mut op: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, R>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug + 'static,
    {
        self.retry
            .call(attempts, SCHEME, || {
                let call = op();
                async move {
                    call.await
                        .map_err(|e| map_sdk_error(&e).with_operation(operation))
                }
            })
            .await
    }

    fn encryption_context(ctx: &KeyContext) -> HashMap<String, String> {
        ctx.pairs()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn wrapped(&self, blob: Option<&Blob>) -> Result<WrappedKey, ProviderError> {
        let bytes = blob
            .ok_or_else(|| error(ProviderErrorKind::Other, "KMS returned no ciphertext"))?
            .as_ref()
            .to_vec();
        WrappedKey::new(self.key_ref.clone(), bytes)
            .map_err(|_| error(ProviderErrorKind::Other, "KMS ciphertext out of bounds"))
    }
}

/// The data key of an answer, taken out of it so that its buffer is wiped (the SDK's output
/// types do not wipe themselves).
fn data_key(plaintext: Option<Blob>) -> Result<DataKey, ProviderError> {
    plaintext
        .and_then(|b| DataKey::from_answer(b.into_inner()))
        .ok_or_else(|| error(ProviderErrorKind::InvalidCiphertext, "not a 32-byte key"))
}

#[async_trait]
impl KeyProvider for AwsKmsProvider {
    fn owns(&self, key: &KeyRef) -> bool {
        key.scheme() == SCHEME && key.key_id() == self.key_arn
    }

    async fn generate_data_key(
        &self,
        ctx: &KeyContext,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
        let ec = Self::encryption_context(ctx);
        let mut out = self
            .call("kms:GenerateDataKey", Attempts::Retry, || {
                self.client
                    .generate_data_key()
                    .key_id(&self.key_arn)
                    .key_spec(DataKeySpec::Aes256)
                    .set_encryption_context(Some(ec.clone()))
                    .send()
            })
            .await?;
        let key = data_key(out.plaintext.take())?;
        // The key KMS says it used must be the configured one: a wrap under any other key
        // (an alias moved, a grant on a look-alike) would be recorded as ours.
        if out.key_id() != Some(self.key_arn.as_str()) {
            return Err(error(
                ProviderErrorKind::Other,
                "GenerateDataKey answered with another key",
            ));
        }
        Ok((key, self.wrapped(out.ciphertext_blob())?))
    }

    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
        let ec = Self::encryption_context(ctx);
        let out = self
            .call("kms:Encrypt", Attempts::Retry, || {
                self.client
                    .encrypt()
                    .key_id(&self.key_arn)
                    // The SDK owns (and does not wipe) this copy and the request built from it.
                    .plaintext(Blob::new(key.expose_secret().to_vec()))
                    .set_encryption_context(Some(ec.clone()))
                    .send()
            })
            .await?;
        self.wrapped(out.ciphertext_blob())
    }

    /// `Decrypt`, retried as the policy allows for our own data, once for a caller's blob (no
    /// caller may multiply calls to this key: a throttling answer goes back to it at once).
    async fn unwrap_owned(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
        attempts: Attempts,
    ) -> Result<DataKey, ProviderError> {
        let ec = Self::encryption_context(ctx);
        let mut out = self
            .call("kms:Decrypt", attempts, || {
                self.client
                    .decrypt()
                    .key_id(&self.key_arn)
                    .ciphertext_blob(Blob::new(wrapped.bytes().to_vec()))
                    .set_encryption_context(Some(ec.clone()))
                    .send()
            })
            .await?;
        // A ciphertext replaced by one under a key we do not control must not be accepted.
        let key = data_key(out.plaintext.take());
        if out.key_id() != Some(self.key_arn.as_str()) {
            return Err(error(
                ProviderErrorKind::InvalidCiphertext,
                "KMS answered with another key",
            ));
        }
        key
    }
}
