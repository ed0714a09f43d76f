use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// What kind of failure a key provider reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProviderErrorKind {
    /// The caller is not allowed to use the key.
    AccessDenied,
    /// The key does not exist.
    NotFound,
    /// The key (or key version) exists but is disabled, destroyed, pending deletion or below the
    /// minimum decryption version.
    Disabled,
    /// The provider asked us to slow down; see [`ProviderError::retry_after`].
    Throttled,
    /// The provider could not be reached or failed on its side.
    Unavailable,
    /// The wrapped key was rejected as not authentic for this key and context.
    InvalidCiphertext,
    /// The wrapped key names a key this provider does not hold.
    NotMine,
    /// The provider is configured wrongly (a malformed key name, an undefined provider, a
    /// feature this build lacks): the operator's mistake, not the caller's or the key's.
    Configuration,
    /// This process has no credentials for the key service (none of the places its credential
    /// chain looks holds any): the operator's to give, not the key's.
    NoCredentials,
    /// Anything else.
    Other,
}

impl ProviderErrorKind {
    /// The kind in snake case (`disabled`, `throttled`, ...), as logs and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessDenied => "access denied",
            Self::NotFound => "key not found",
            Self::Disabled => "key disabled",
            Self::Throttled => "throttled",
            Self::Unavailable => "unavailable",
            Self::InvalidCiphertext => "invalid wrapped key",
            Self::NotMine => "wrapped key not owned by this provider",
            Self::Configuration => "configuration error",
            Self::NoCredentials => "no credentials",
            Self::Other => "error",
        }
    }
}

impl fmt::Display for ProviderErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure reported by a [`KeyProvider`](crate::KeyProvider).
///
/// Provider implementations must build the message from their own words and the public key
/// reference only: never from credentials, key bytes or plaintext.
pub struct ProviderError {
    kind: ProviderErrorKind,
    scheme: Cow<'static, str>,
    message: Cow<'static, str>,
    retry_after: Option<Duration>,
    operation: Option<&'static str>,
    source: Option<BoxError>,
}

impl ProviderError {
    /// A new error of `kind` from the provider with `scheme`.
    pub fn new(
        kind: ProviderErrorKind,
        scheme: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            kind,
            scheme: scheme.into(),
            message: message.into(),
            retry_after: None,
            operation: None,
            source: None,
        }
    }

    /// Names the key service's operation that failed, as its permission is named
    /// (`kms:GenerateDataKey`, `cloudkms.cryptoKeyVersions.useToEncrypt`, `keys/wrapKey`): what
    /// an operator grants when the kind is [`ProviderErrorKind::AccessDenied`].
    #[must_use]
    pub fn with_operation(mut self, operation: &'static str) -> Self {
        self.operation = Some(operation);
        self
    }

    /// The key service's operation that failed, if the provider said.
    pub fn operation(&self) -> Option<&'static str> {
        self.operation
    }

    /// Attach a retry hint (for [`ProviderErrorKind::Throttled`]).
    #[must_use]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Attach the underlying error. It must not carry secrets in its `Display`.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ProviderErrorKind {
        self.kind
    }

    /// The scheme of the provider that failed (`managed`, `aws-kms`, ...).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// How long the provider asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether the same call may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ProviderErrorKind::Throttled | ProviderErrorKind::Unavailable
        )
    }
}

impl fmt::Debug for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderError")
            .field("kind", &self.kind)
            .field("scheme", &self.scheme)
            .field("message", &self.message)
            .field("retry_after", &self.retry_after)
            .field("operation", &self.operation)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key provider {}: {}", self.scheme, self.kind)?;
        if let Some(op) = self.operation {
            write!(f, " ({op})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ProviderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
