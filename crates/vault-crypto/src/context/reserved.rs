//! The vault's own contexts: the only ones that may hold [`RESERVED_KEYS`] and seal.

use super::{KeyContext, push_valid_key, validate_key};
use crate::error::ContextError;

/// Context keys that only the vault itself uses: a KMS seal wraps a ring's root keys for
/// `{"vault_ring": …, "vault_ring_version": …}`, so a caller who could get a data key wrapped
/// for such a context could forge a sealed root key; webhook signing secrets are sealed for
/// `{"vault_webhook": …}`; `vault keys verify` generates its data keys for
/// `{"vault_verification": "byok"}`; the runtime BYOK rules are sealed for
/// `{"vault_byok": "config"}`. A caller's context cannot hold them: parsing refuses them, and
/// only [`KeyContext::reserved`] builds a context that holds them and seals.
pub const RESERVED_KEYS: &[&str] = &[
    "vault_ring",
    "vault_ring_version",
    "vault_webhook",
    "vault_verification",
    "vault_byok",
];

/// What every one of the [`RESERVED_KEYS`] starts with (a test checks it).
pub(super) const RESERVED_PREFIX: &str = "vault_";

/// Where a [`KeyContext`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// Parsed or built from a caller's pairs: it holds no reserved key.
    Caller,
    /// Built by [`KeyContext::reserved`].
    Vault,
    /// Decoded from canonical bytes (an envelope's header, a stored row): it may hold reserved
    /// keys, and then it does not seal.
    Decoded,
}

/// One of the vault's own contexts, built by [`KeyContext::reserved`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reserved<'a> {
    /// A managed ring's root key sealed by a KMS key:
    /// `{"vault_ring": ring, "vault_ring_version": version}`.
    RingRoot {
        /// The ring's name.
        ring: &'a str,
        /// The version of the root key.
        version: u32,
    },
    /// A webhook endpoint's signing secret: `{"vault_webhook": endpoint}`.
    WebhookSecret {
        /// The endpoint's id.
        endpoint: &'a str,
    },
    /// The data keys `vault keys verify` has a customer's key make:
    /// `{"vault_verification": "byok"}`.
    ByokVerification,
    /// The runtime BYOK rules: `{"vault_byok": "config"}`.
    ByokConfig,
}

impl KeyContext {
    /// One of the vault's own contexts: the only way to build a context that holds
    /// [`RESERVED_KEYS`] and seals.
    ///
    /// ```
    /// use vault_crypto::{KeyContext, Reserved};
    /// let ctx = KeyContext::reserved(Reserved::ByokConfig)?;
    /// assert_eq!(ctx.to_json(), r#"{"vault_byok":"config"}"#);
    /// // The same pairs from a caller are refused.
    /// assert!(KeyContext::parse_json(br#"{"vault_byok":"config"}"#).is_err());
    /// # Ok::<(), vault_crypto::ContextError>(())
    /// ```
    ///
    /// # Errors
    /// A [`ContextError`] if a name breaks a limit of keys or values (empty, too long).
    pub fn reserved(which: Reserved<'_>) -> Result<Self, ContextError> {
        let version;
        let pairs: &[(&str, &str)] = match which {
            Reserved::RingRoot { ring, version: v } => {
                version = v.to_string();
                &[("vault_ring", ring), ("vault_ring_version", &version)]
            }
            Reserved::WebhookSecret { endpoint } => &[("vault_webhook", endpoint)],
            Reserved::ByokVerification => &[("vault_verification", "byok")],
            Reserved::ByokConfig => &[("vault_byok", "config")],
        };
        let mut validated = Vec::with_capacity(pairs.len());
        for &(key, value) in pairs {
            validate_key(key)?;
            push_valid_key(&mut validated, key.to_owned(), value.to_owned())?;
        }
        Ok(Self::from_validated(validated, Origin::Vault))
    }

    /// Whether the context holds one of the [`RESERVED_KEYS`].
    pub fn is_reserved(&self) -> bool {
        self.reserved_key().is_some()
    }

    /// The first of the [`RESERVED_KEYS`] the context holds. Every one starts with
    /// [`RESERVED_PREFIX`] (a test checks it), so a context without that prefix, every caller's,
    /// costs one prefix test per pair (this runs on every seal and open).
    fn reserved_key(&self) -> Option<&'static str> {
        self.pairs()
            .filter(|(k, _)| k.starts_with(RESERVED_PREFIX))
            .find_map(|(k, _)| RESERVED_KEYS.iter().find(|r| **r == k).copied())
    }

    /// Checks that a context holds none of the [`RESERVED_KEYS`]: for a context decoded from
    /// bytes a caller could have written (an envelope's header, a stored row), which parsing
    /// did not check.
    ///
    /// # Errors
    /// [`ContextError::ReservedKey`].
    pub fn check_caller(&self) -> Result<(), ContextError> {
        match self.reserved_key() {
            Some(key) => Err(ContextError::ReservedKey {
                key: key.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// Checks that a context may seal, wrap or be expected of an envelope: it holds no reserved
    /// key, or the vault built it with [`KeyContext::reserved`] (rather than read it from bytes
    /// someone else wrote).
    pub(crate) fn check_not_forged(&self) -> Result<(), ContextError> {
        match self.origin {
            Origin::Vault => Ok(()),
            Origin::Caller | Origin::Decoded => self.check_caller(),
        }
    }
}

/// Refuses a reserved key in a caller's context.
pub(super) fn refuse(key: &str) -> Result<(), ContextError> {
    if RESERVED_KEYS.contains(&key) {
        return Err(ContextError::ReservedKey {
            key: key.to_owned(),
        });
    }
    Ok(())
}
