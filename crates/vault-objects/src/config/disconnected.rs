use std::fmt;

use vault_crypto::{
    DataKey, KeyContext, KeyProvider, KeyRef, ProviderError, ProviderErrorKind, WrappedKey,
};

/// A customer key that could not be connected when the router was built: every call fails with
/// the reason (so only its own contexts fail). It owns the wrapped keys of the key it stands for
/// where the definition names that key exactly, so reading them fails with the key's own
/// reason (disabled, denied, unreachable) rather than "no provider".
pub struct Disconnected {
    name: String,
    kind: ProviderErrorKind,
    scheme: String,
    operation: Option<&'static str>,
    message: String,
    identity: Option<(&'static str, String)>,
}

impl Disconnected {
    /// A stand-in for provider `name`, which failed to connect with `error`.
    pub fn new(name: &str, error: &ProviderError) -> Self {
        Self {
            name: name.to_owned(),
            kind: error.kind(),
            scheme: error.scheme().to_owned(),
            operation: error.operation(),
            message: error.to_string(),
            identity: None,
        }
    }

    /// Owns the wrapped keys of `identity` (scheme and key id, as [`KeyRef`] names them).
    #[must_use]
    pub fn owning(mut self, identity: Option<(&'static str, String)>) -> Self {
        self.identity = identity;
        self
    }

    fn error(&self) -> ProviderError {
        let e = ProviderError::new(
            self.kind,
            self.scheme.clone(),
            format!(
                "provider {:?} is not connected ({})",
                self.name, self.message
            ),
        );
        match self.operation {
            Some(op) => e.with_operation(op),
            None => e,
        }
    }
}

impl fmt::Debug for Disconnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Disconnected")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl KeyProvider for Disconnected {
    fn owns(&self, key: &KeyRef) -> bool {
        self.identity
            .as_ref()
            .is_some_and(|(scheme, id)| key.scheme() == *scheme && key.key_id() == id)
    }

    async fn wrap(&self, _key: &DataKey, _ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
        Err(self.error())
    }

    async fn unwrap_owned(
        &self,
        _wrapped: &WrappedKey,
        _ctx: &KeyContext,
        _attempts: vault_crypto::Attempts,
    ) -> Result<DataKey, ProviderError> {
        Err(self.error())
    }
}
