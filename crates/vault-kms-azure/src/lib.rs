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
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, RequestContent, RetryOptions, Transport, Url};
use azure_security_keyvault_keys::models::{
    EncryptionAlgorithm, KeyClientGetKeyOptions, KeyClientSignOptions, KeyClientUnwrapKeyOptions,
    KeyClientWrapKeyOptions, KeyOperationParameters, SignParameters, SignatureAlgorithm,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions, ResourceId};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
pub use vault_crypto::RetryPolicy;
use vault_crypto::{
    Attempts, ConfigError, DATA_KEY_LEN, DataKey, KeyContext, KeyProvider, KeyRef, ProviderError,
    ProviderErrorKind, WrappedKey,
};
use zeroize::Zeroizing;

/// The scheme of Key Vault key references.
pub const SCHEME: &str = "azure-kv";

/// The length of the context binding appended to the data key before wrapping.
const BINDING_LEN: usize = 32;

/// What the version of a signed RSA wrap's key reference ends with.
pub const SIGNED_SUFFIX: &str = "+rs256";

/// Whether `key` (an `azure-kv` reference) names a signed RSA wrap.
pub fn is_signed(key: &KeyRef) -> bool {
    key.version().ends_with(SIGNED_SUFFIX)
}

/// The RSA public keys of key versions, by version (immutable in Key Vault, so never expired).
type PublicKeys = std::sync::Mutex<std::collections::HashMap<String, Arc<RsaPublicKey>>>;

/// One key version's RSA public key.
#[derive(Debug)]
struct RsaPublicKey {
    components: ring::signature::RsaPublicKeyComponents<Vec<u8>>,
}

impl RsaPublicKey {
    /// The modulus length in bytes: the length of a wrap and of a signature.
    fn len(&self) -> usize {
        self.components.n.len()
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.components
            .verify(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                message,
                signature,
            )
            .is_ok()
    }
}

/// What the signature of an RSA wrap covers.
fn signed_message(binding: &[u8; BINDING_LEN], wrapped: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(20 + BINDING_LEN + wrapped.len());
    m.extend_from_slice(b"vault-kms-azure/v2\0");
    m.extend_from_slice(binding);
    m.extend_from_slice(wrapped);
    m
}

/// How data keys are wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapAlgorithm {
    /// RSA-OAEP with SHA-256 (an RSA key of a Standard or Premium vault, or a Managed HSM).
    RsaOaep256,
    /// AES key wrap with a 256-bit key (RFC 3394; a Managed HSM `oct-HSM` key).
    A256Kw,
}

impl std::str::FromStr for WrapAlgorithm {
    type Err = ConfigError;

    /// The Key Vault name: `RSA-OAEP-256` or `A256KW`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "RSA-OAEP-256" => Ok(Self::RsaOaep256),
            "A256KW" => Ok(Self::A256Kw),
            _ => Err(config_error("algorithm must be RSA-OAEP-256 or A256KW")),
        }
    }
}

impl WrapAlgorithm {
    fn to_azure(self) -> EncryptionAlgorithm {
        match self {
            Self::RsaOaep256 => EncryptionAlgorithm::RsaOaep256,
            Self::A256Kw => EncryptionAlgorithm::A256Kw,
        }
    }
}

/// Where the credential comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// A service principal from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET`.
    Environment,
    /// The managed identity of the VM, App Service or container (`AZURE_CLIENT_ID` picks a
    /// user-assigned one).
    ManagedIdentity,
    /// The developer's `az login` (Azure CLI, then Azure Developer CLI).
    AzureCli,
}

impl std::str::FromStr for CredentialSource {
    type Err = ConfigError;

    /// `environment`, `managed-identity` or `azure-cli`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "environment" => Ok(Self::Environment),
            "managed-identity" => Ok(Self::ManagedIdentity),
            "azure-cli" => Ok(Self::AzureCli),
            _ => Err(config_error(
                "credential must be environment, managed-identity or azure-cli",
            )),
        }
    }
}

fn config_error(rule: &'static str) -> ConfigError {
    ConfigError {
        scheme: SCHEME,
        rule,
    }
}

/// A key in a vault, checked: an `https://` vault URL, a key name of 1 to 127 of
/// `[0-9a-zA-Z-]`, and optionally a version of `[0-9a-zA-Z]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLocation {
    url: Url,
    host: String,
    key_name: String,
    key_version: Option<String>,
}

impl KeyLocation {
    /// Checks the parts of a key's location.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first rule broken ([`problems`](Self::problems) has all).
    pub fn new(
        vault_url: &str,
        key_name: &str,
        key_version: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let (host, problems) = Self::check(vault_url, key_name, key_version);
        match (host, problems.first()) {
            (Some((url, host)), None) => Ok(Self {
                url,
                host,
                key_name: key_name.to_owned(),
                key_version: key_version.map(str::to_owned),
            }),
            (_, Some(e)) => Err(*e),
            (None, None) => Err(config_error(
                "vault_url must be https://<vault>.vault.azure.net/",
            )),
        }
    }

    /// Every rule the parts break, for a configuration check.
    pub fn problems(
        vault_url: &str,
        key_name: &str,
        key_version: Option<&str>,
    ) -> Vec<ConfigError> {
        Self::check(vault_url, key_name, key_version).1
    }

    fn check(
        vault_url: &str,
        key_name: &str,
        key_version: Option<&str>,
    ) -> (Option<(Url, String)>, Vec<ConfigError>) {
        let mut problems = Vec::new();
        let url = Url::parse(vault_url).ok().and_then(|url| {
            let host = url
                .host_str()
                .filter(|_| url.scheme() == "https")?
                .to_owned();
            Some((url, host))
        });
        if url.is_none() {
            problems.push(config_error(
                "vault_url must be https://<vault>.vault.azure.net/",
            ));
        }
        let name_ok = !key_name.is_empty()
            && key_name.len() <= 127
            && key_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !name_ok {
            problems.push(config_error("key_name must be 1 to 127 of [0-9a-zA-Z-]"));
        }
        if let Some(v) = key_version
            && (v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            problems.push(config_error("key_version must be 1 to 64 of [0-9a-zA-Z]"));
        }
        if let Some((_, host)) = &url
            && problems.is_empty()
            && KeyRef::new(
                SCHEME,
                format!("{host}/{key_name}"),
                key_version.unwrap_or(""),
            )
            .is_err()
        {
            problems.push(config_error("the key reference is invalid"));
        }
        (url, problems)
    }
}

impl CredentialSource {
    /// `Environment` when `AZURE_CLIENT_SECRET` is set, else `ManagedIdentity`.
    pub fn from_environment() -> Self {
        if std::env::var_os("AZURE_CLIENT_SECRET").is_some() {
            Self::Environment
        } else {
            Self::ManagedIdentity
        }
    }

    /// Builds the credential.
    ///
    /// # Errors
    /// A [`ProviderError`] (`AccessDenied`) naming what is missing; never a secret.
    pub fn credential(self) -> Result<Arc<dyn TokenCredential>, ProviderError> {
        let denied = |what: &str| error(ProviderErrorKind::AccessDenied, what.to_owned());
        Ok(match self {
            Self::Environment => {
                let var =
                    |k: &str| std::env::var(k).map_err(|_| denied(&format!("{k} is not set")));
                let tenant = var("AZURE_TENANT_ID")?;
                let client = var("AZURE_CLIENT_ID")?;
                let secret = var("AZURE_CLIENT_SECRET")?;
                azure_identity::ClientSecretCredential::new(&tenant, client, secret.into(), None)
                    .map_err(|_| denied("invalid service principal settings"))?
            }
            Self::ManagedIdentity => azure_identity::ManagedIdentityCredential::new(None)
                .map_err(|_| denied("cannot set up the managed identity credential"))?,
            Self::AzureCli => azure_identity::DeveloperToolsCredential::new(None)
                .map_err(|_| denied("cannot set up the Azure CLI credential"))?,
        })
    }
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

fn error(
    kind: ProviderErrorKind,
    message: impl Into<std::borrow::Cow<'static, str>>,
) -> ProviderError {
    ProviderError::new(kind, SCHEME, message)
}

/// `SHA-256("vault-kms-azure/v1" || 0x00 || canonical(ctx))`.
fn binding(ctx: &KeyContext) -> [u8; BINDING_LEN] {
    let mut h = Sha256::new();
    h.update(b"vault-kms-azure/v1\0");
    h.update(ctx.canonical_bytes());
    h.finalize().into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Wrap,
    Unwrap,
    /// `sign` and `get` (of the public key).
    Other,
}

/// Key Vault's most specific error code: the innermost `innererror.code` of an error answer
/// (`{"error": {"code": "Forbidden", "innererror": {"code": "KeyDisabled"}}}`).
fn inner_error_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        code: Option<String>,
        innererror: Option<Box<Detail>>,
    }
    let mut detail = serde_json::from_slice::<Answer>(body).ok()?.error;
    while let Some(inner) = detail.innererror {
        detail = *inner;
    }
    detail.code
}

/// Maps an SDK error to a typed provider error: the status and Key Vault's error code only
/// (messages can quote resource names; codes are all a caller needs).
fn map_error(e: &azure_core::Error, op: Op) -> ProviderError {
    match e.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let status = u16::from(*status);
            let code = error_code.as_deref().unwrap_or("");
            let inner = raw_response
                .as_ref()
                .and_then(|r| inner_error_code(r.body()));
            let kind = match status {
                401 => ProviderErrorKind::AccessDenied,
                403 if code == "KeyDisabled" || inner.as_deref() == Some("KeyDisabled") => {
                    ProviderErrorKind::Disabled
                }
                403 => ProviderErrorKind::AccessDenied,
                404 => ProviderErrorKind::NotFound,
                429 => ProviderErrorKind::Throttled,
                400 if op == Op::Unwrap => ProviderErrorKind::InvalidCiphertext,
                s if s >= 500 => ProviderErrorKind::Unavailable,
                _ => ProviderErrorKind::Other,
            };
            let code = if code.is_empty() {
                "no error code"
            } else {
                code
            };
            let mut err = error(kind, format!("Key Vault answered {status} ({code})"));
            if kind == ProviderErrorKind::Throttled
                && let Some(secs) = raw_response
                    .as_ref()
                    .and_then(|r| r.headers().get_optional_str(&"retry-after".into()))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            {
                err = err.with_retry_after(Duration::from_secs(secs));
            }
            err
        }
        ErrorKind::Connection | ErrorKind::Io => error(
            ProviderErrorKind::Unavailable,
            "Key Vault cannot be reached",
        ),
        ErrorKind::Credential => error(
            ProviderErrorKind::AccessDenied,
            "no Azure credential could get a token",
        ),
        _ => error(ProviderErrorKind::Other, "Key Vault request failed"),
    }
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
            .call(Op::Other, attempts, || {
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
            .call(Op::Other, Attempts::Retry, || {
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
