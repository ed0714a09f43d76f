//! Customer-managed keys in Azure Key Vault (and Managed HSM).
//!
//! [`AzureKeyVaultProvider`] is a [`KeyProvider`] for one Key Vault key. Data keys come from the
//! OS CSPRNG and are wrapped with `wrapKey` and unwrapped with `unwrapKey`: `RSA-OAEP-256` for
//! the RSA keys of Standard and Premium vaults, `A256KW` for Managed HSM AES keys. Key references
//! are `azure-kv://<vault host>/<key name>#<key version>` with the version that wrapped, and
//! unwrapping asks for exactly that version, so a key rotation in the vault strands nothing.
//!
//! # The key context
//! Key Vault's wrap takes no associated data. So that a wrapped key still unwraps under its own
//! context only (as every provider must), what is wrapped is the data key followed by a
//! 32-byte binding of the context, `SHA-256("vault-kms-azure/v1" || 0x00 || canonical(ctx))`;
//! unwrapping checks the binding in constant time (`docs/FORMAT.md`, "Azure Key Vault wrap").
//! The envelope's key commitment binds the data key to the message on top of that.
//!
//! # Authentic RSA wraps
//! RSA-OAEP encryption needs only the public key, so a wrap alone proves nothing: anyone with
//! the key's public JWK could wrap a data key of their choice for any context and plant it in
//! the database. So an RSA wrap is also **signed** by the same Key Vault key version (`sign`,
//! `RS256`, over `SHA-256("vault-kms-azure/v2" || 0x00 || binding || wrapped)`), the signature
//! is stored after the wrapped bytes, and the reference's version says so
//! (`#<version>+rs256`). Unwrapping verifies the signature locally with that version's public
//! key (fetched once with `get`, then cached: versions never change) **before** calling Key
//! Vault, so a forged wrap costs no Key Vault call either. A wrap also verifies its own
//! signature before it is used, so a key that cannot sign fails at the first seal, never at a
//! read. `A256KW` (a symmetric Managed HSM key) needs no signature: only the key's holder can
//! wrap. Unsigned RSA wraps made before signing existed open only while
//! [`accept_unsigned_wraps`](AzureKeyVaultProvider::accept_unsigned_wraps) is on (the default,
//! so an upgrade strands nothing); `vault keys rewrap --all` replaces them, after which it
//! should be switched off.
//!
//! Failures map to the same typed kinds as every provider (403 with `KeyDisabled` is
//! `Disabled`, 404 `NotFound`, 429 `Throttled` with `Retry-After`, 5xx `Unavailable`, a 400 on
//! unwrap `InvalidCiphertext`); retryable ones are retried a bounded number of times with
//! jittered backoff ([`RetryPolicy`]), each attempt under a timeout. The SDK's own retries are
//! off, so the policy is the only one.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, RequestContent, RetryOptions, Transport, Url};
use azure_security_keyvault_keys::models::{
    KeyClientGetKeyOptions, KeyClientSignOptions, KeyClientUnwrapKeyOptions,
    KeyClientWrapKeyOptions, KeyOperationParameters, SignParameters, SignatureAlgorithm,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions, ResourceId};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
pub use vault_crypto::RetryPolicy;
use vault_crypto::{
    Attempts, DATA_KEY_LEN, DataKey, KeyContext, KeyProvider, KeyRef, ProviderError,
    ProviderErrorKind, WrappedKey,
};
use zeroize::Zeroizing;

mod config;
mod errors;
mod signing;

pub use config::{CredentialSource, KeyLocation, WrapAlgorithm};
use errors::{Op, map_error};
use signing::{PublicKeys, RsaPublicKey, binding, signed_message};

/// The scheme of Key Vault key references.
pub const SCHEME: &str = "azure-kv";

/// The length of the context binding appended to the data key before wrapping.
pub(crate) const BINDING_LEN: usize = 32;

/// What the version of a signed RSA wrap's key reference ends with.
pub const SIGNED_SUFFIX: &str = "+rs256";

/// Whether `key` (an `azure-kv` reference) names a signed RSA wrap.
pub fn is_signed(key: &KeyRef) -> bool {
    key.version().ends_with(SIGNED_SUFFIX)
}

/// A [`KeyProvider`] for one Key Vault key. See the [crate docs](crate).
#[derive(Clone)]
pub struct AzureKeyVaultProvider {
    client: Arc<KeyClient>,
    vault_host: String,
    key_name: String,
    /// `<vault host>/<key name>`: the key id of its references.
    key_id: String,
    /// Wrap with this version rather than the current one.
    pinned_version: Option<String>,
    algorithm: WrapAlgorithm,
    retry: RetryPolicy,
    /// Whether unsigned RSA wraps (made before signing existed) still open.
    accept_unsigned: bool,
    public_keys: Arc<PublicKeys>,
}

impl fmt::Debug for AzureKeyVaultProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureKeyVaultProvider")
            .field("key", &self.key_id)
            .field("pinned_version", &self.pinned_version)
            .field("algorithm", &self.algorithm)
            .field("retry", &self.retry)
            .field("accept_unsigned_wraps", &self.accept_unsigned)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn error(
    kind: ProviderErrorKind,
    message: impl Into<std::borrow::Cow<'static, str>>,
) -> ProviderError {
    ProviderError::new(kind, SCHEME, message)
}

impl AzureKeyVaultProvider {
    /// Connects to key `key_name` in the vault at `vault_url` (`https://<name>.vault.azure.net/`
    /// or a Managed HSM's URL), with the credential of `source`.
    ///
    /// # Errors
    /// A [`ProviderError`] if the URL or the key name is invalid or the credential cannot be set
    /// up.
    pub fn connect(
        vault_url: &str,
        key_name: &str,
        key_version: Option<&str>,
        algorithm: WrapAlgorithm,
        source: CredentialSource,
        retry: RetryPolicy,
    ) -> Result<Self, ProviderError> {
        Self::with_credential(
            vault_url,
            key_name,
            key_version,
            algorithm,
            source.credential()?,
            None,
            retry,
        )
    }

    /// As [`connect`](Self::connect) with a given credential and, optionally, an HTTP transport
    /// (a proxy, or a test double).
    ///
    /// # Errors
    /// A [`ProviderError`] if the URL or the key name is invalid.
    pub fn with_credential(
        vault_url: &str,
        key_name: &str,
        key_version: Option<&str>,
        algorithm: WrapAlgorithm,
        credential: Arc<dyn TokenCredential>,
        transport: Option<Transport>,
        retry: RetryPolicy,
    ) -> Result<Self, ProviderError> {
        let KeyLocation {
            url,
            host,
            key_name,
            key_version,
        } = KeyLocation::new(vault_url, key_name, key_version)?;
        let key_id = format!("{host}/{key_name}");
        let options = KeyClientOptions {
            client_options: ClientOptions {
                // Our RetryPolicy is the only retry loop.
                retry: RetryOptions::none(),
                transport,
                ..ClientOptions::default()
            },
            ..KeyClientOptions::default()
        };
        let client = KeyClient::new(url.as_str(), credential, Some(options)).map_err(|_| {
            error(
                ProviderErrorKind::Unavailable,
                "cannot build the Key Vault client",
            )
        })?;
        Ok(Self {
            client: Arc::new(client),
            vault_host: host,
            key_name,
            key_id,
            pinned_version: key_version,
            algorithm,
            retry,
            accept_unsigned: true,
            public_keys: Arc::default(),
        })
    }

    /// Whether RSA wraps without a signature (made before signed wraps existed) still open.
    /// On by default so that an upgrade strands nothing; switch it off once `vault keys rewrap
    /// --all` has replaced them, and a wrap forged with the public key no longer opens.
    #[must_use]
    pub fn accept_unsigned_wraps(mut self, accept: bool) -> Self {
        self.accept_unsigned = accept;
        self
    }

    /// Whether a data key wrapped under `key` is authentic against someone who holds only the
    /// key's public part: an `A256KW` wrap, or a signed RSA wrap.
    pub fn is_authenticated(&self, key: &KeyRef) -> bool {
        self.owns(key) && (self.algorithm == WrapAlgorithm::A256Kw || is_signed(key))
    }

    /// The public key of `version`, from the cache or from Key Vault (`get`).
    async fn public_key(
        &self,
        version: &str,
        attempts: Attempts,
    ) -> Result<Arc<RsaPublicKey>, ProviderError> {
        if let Some(k) = lock(&self.public_keys).get(version) {
            return Ok(Arc::clone(k));
        }
        let key = self
            .call(Op::Get, attempts, || {
                let options = KeyClientGetKeyOptions {
                    key_version: Some(version.to_owned()),
                    ..Default::default()
                };
                async move {
                    self.client
                        .get_key(&self.key_name, Some(options))
                        .await?
                        .into_model()
                }
            })
            .await?;
        let bad = |what: &'static str| error(ProviderErrorKind::Other, what);
        let jwk = key.key.ok_or_else(|| bad("Key Vault answered no key"))?;
        if self.version_of(jwk.kid.as_deref())? != version {
            return Err(bad("Key Vault answered for another key version"));
        }
        let strip = |b: Vec<u8>| -> Vec<u8> {
            let zeros = b.iter().take_while(|&&x| x == 0).count();
            b[zeros..].to_vec()
        };
        let n = strip(jwk.n.ok_or_else(|| bad("the key has no RSA modulus"))?);
        let e = strip(jwk.e.ok_or_else(|| bad("the key has no RSA exponent"))?);
        if !(256..=1024).contains(&n.len()) || e.is_empty() {
            return Err(bad("not an RSA key of 2048 to 8192 bits"));
        }
        let public = Arc::new(RsaPublicKey {
            components: ring::signature::RsaPublicKeyComponents { n, e },
        });
        lock(&self.public_keys).insert(version.to_owned(), Arc::clone(&public));
        Ok(public)
    }

    /// Key Vault's RS256 signature of `message` by `version`.
    async fn sign(&self, version: &str, message: &[u8]) -> Result<Vec<u8>, ProviderError> {
        let digest = Sha256::digest(message).to_vec();
        let result = self
            .call(Op::Sign, Attempts::Retry, || {
                #[allow(clippy::field_reassign_with_default)] // `non_exhaustive` model
                let params = {
                    let mut p = SignParameters::default();
                    p.algorithm = Some(SignatureAlgorithm::Rs256);
                    p.value = Some(digest.clone());
                    RequestContent::try_from(p)
                };
                let options = KeyClientSignOptions {
                    key_version: Some(version.to_owned()),
                    ..Default::default()
                };
                async move {
                    self.client
                        .sign(&self.key_name, params?, Some(options))
                        .await?
                        .into_model()
                }
            })
            .await?;
        if self.version_of(result.kid.as_deref())? != version {
            return Err(error(
                ProviderErrorKind::Other,
                "Key Vault signed with another key version",
            ));
        }
        result
            .result
            .filter(|r| !r.is_empty())
            .ok_or_else(|| error(ProviderErrorKind::Other, "sign answered no value"))
    }

    /// `<vault host>/<key name>`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// One Key Vault call under the retry policy ([`RetryPolicy::call`]).
    async fn call<T, F, Fut>(
        &self,
        op: Op,
        attempts: Attempts,
        mut f: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = azure_core::Result<T>>,
    {
        self.retry
            .call(attempts, SCHEME, || {
                let call = f();
                async move { call.await.map_err(|e| map_error(&e, op)) }
            })
            .await
    }

    // The model is `non_exhaustive`: no struct literal outside its crate.
    #[allow(clippy::field_reassign_with_default)]
    fn parameters(
        &self,
        value: Vec<u8>,
    ) -> Result<RequestContent<KeyOperationParameters>, ProviderError> {
        let mut p = KeyOperationParameters::default();
        p.algorithm = Some(self.algorithm.to_azure());
        p.value = Some(value);
        RequestContent::try_from(p)
            .map_err(|_| error(ProviderErrorKind::Other, "cannot encode the request"))
    }

    /// The version of `kid` if it names our key in our vault.
    fn version_of(&self, kid: Option<&str>) -> Result<String, ProviderError> {
        let other = || {
            error(
                ProviderErrorKind::Other,
                "Key Vault answered for another key",
            )
        };
        let id: ResourceId = kid.ok_or_else(other)?.parse().map_err(|_| other())?;
        let host = Url::parse(&id.vault_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned));
        if host.as_deref() != Some(self.vault_host.as_str()) || id.name != self.key_name {
            return Err(other());
        }
        id.version.filter(|v| !v.is_empty()).ok_or_else(other)
    }
}

#[async_trait]
impl KeyProvider for AzureKeyVaultProvider {
    fn owns(&self, key: &KeyRef) -> bool {
        key.scheme() == SCHEME && key.key_id() == self.key_id
    }

    /// An unsigned RSA wrap is never current: a rewrap replaces it with a signed one.
    async fn is_current(&self, key: &KeyRef, ctx: &KeyContext) -> Result<bool, ProviderError> {
        let _ = ctx;
        Ok(self.is_authenticated(key))
    }

    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
        let mut payload = Zeroizing::new(Vec::with_capacity(DATA_KEY_LEN + BINDING_LEN));
        payload.extend_from_slice(key.expose_secret());
        payload.extend_from_slice(&binding(ctx));
        let result = self
            .call(Op::Wrap, Attempts::Retry, || {
                // The SDK owns (and does not wipe) this copy and the request built from it.
                let params = self.parameters(payload.to_vec());
                let options = KeyClientWrapKeyOptions {
                    key_version: self.pinned_version.clone(),
                    ..Default::default()
                };
                async move {
                    let params = params.map_err(|_| {
                        azure_core::Error::with_message(ErrorKind::DataConversion, "request")
                    })?;
                    self.client
                        .wrap_key(&self.key_name, params, Some(options))
                        .await?
                        .into_model()
                }
            })
            .await?;
        let version = self.version_of(result.kid.as_deref())?;
        let mut wrapped = result
            .result
            .filter(|r| !r.is_empty())
            .ok_or_else(|| error(ProviderErrorKind::Other, "wrapKey answered no value"))?;
        let mut ref_version = version.clone();
        if self.algorithm == WrapAlgorithm::RsaOaep256 {
            let message = signed_message(&binding(ctx), &wrapped);
            let signature = self.sign(&version, &message).await?;
            // Checked now, so a key that cannot sign properly fails this seal, not a later read.
            let public = self.public_key(&version, Attempts::Retry).await?;
            if wrapped.len() != public.len() || !public.verify(&message, &signature) {
                return Err(error(
                    ProviderErrorKind::Other,
                    "Key Vault's signature of the wrap does not verify",
                ));
            }
            wrapped.extend_from_slice(&signature);
            ref_version.push_str(SIGNED_SUFFIX);
        }
        let key_ref = KeyRef::new(SCHEME, &self.key_id, ref_version)
            .map_err(|_| error(ProviderErrorKind::Other, "invalid key version"))?;
        WrappedKey::new(key_ref, wrapped)
            .map_err(|_| error(ProviderErrorKind::Other, "wrapped key out of bounds"))
    }

    async fn unwrap_owned(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
        attempts: Attempts,
    ) -> Result<DataKey, ProviderError> {
        let invalid = |what: &'static str| error(ProviderErrorKind::InvalidCiphertext, what);
        let (version, signed) = match wrapped.key_ref().version().strip_suffix(SIGNED_SUFFIX) {
            Some(v) => (v, true),
            None => (wrapped.key_ref().version(), false),
        };
        // Key Vault versions are 32 hex digits; anything else (a `/` or `..` above all, which
        // would reach another key's path) never reaches Key Vault.
        if version.is_empty()
            || version.len() > 64
            || !version.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(invalid("not a Key Vault key version"));
        }
        let mut ciphertext = wrapped.bytes();
        if self.algorithm == WrapAlgorithm::RsaOaep256 {
            if signed {
                // Verified before Key Vault is called: a forged wrap costs no call.
                let public = self.public_key(version, attempts).await?;
                let Some((wrap, signature)) = ciphertext
                    .split_at_checked(public.len())
                    .filter(|(_, s)| s.len() == public.len())
                else {
                    return Err(invalid("not a signed wrap of this key"));
                };
                if !public.verify(&signed_message(&binding(ctx), wrap), signature) {
                    return Err(invalid("the wrap's signature does not verify"));
                }
                ciphertext = wrap;
            } else if !self.accept_unsigned {
                return Err(invalid(
                    "an unsigned RSA wrap, refused (accept_unsigned_wraps is off)",
                ));
            }
        } else if signed {
            return Err(invalid("a signed wrap of an A256KW key"));
        }
        let result = self
            .call(Op::Unwrap, attempts, || {
                let params = self.parameters(ciphertext.to_vec());
                async move {
                    let params = params.map_err(|_| {
                        azure_core::Error::with_message(ErrorKind::DataConversion, "request")
                    })?;
                    self.client
                        .unwrap_key(
                            &self.key_name,
                            version,
                            params,
                            None::<KeyClientUnwrapKeyOptions<'_>>,
                        )
                        .await?
                        .into_model()
                }
            })
            .await?;
        let mut payload = Zeroizing::new(result.result.unwrap_or_default());
        if self.version_of(result.kid.as_deref())? != version {
            return Err(error(
                ProviderErrorKind::InvalidCiphertext,
                "Key Vault unwrapped with another key version",
            ));
        }
        if payload.len() != DATA_KEY_LEN + BINDING_LEN {
            return Err(error(
                ProviderErrorKind::InvalidCiphertext,
                "not a wrapped data key",
            ));
        }
        if !bool::from(payload[DATA_KEY_LEN..].ct_eq(&binding(ctx))) {
            return Err(error(
                ProviderErrorKind::InvalidCiphertext,
                "wrapped for another key context",
            ));
        }
        // Moved, not copied: the key's own storage is the only copy left (both are wiped).
        payload.truncate(DATA_KEY_LEN);
        DataKey::from_answer(std::mem::take(&mut *payload))
            .ok_or_else(|| error(ProviderErrorKind::Other, "not a data key"))
    }
}
