//! Key Vault's answers as typed provider errors: the status and Key Vault's error code only
//! (messages can quote resource names).

use std::time::Duration;

use azure_core::error::ErrorKind;
use vault_crypto::{ProviderError, ProviderErrorKind};

use crate::error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Wrap,
    Unwrap,
    Sign,
    /// `get` (of the public key).
    Get,
}

impl Op {
    /// The Key Vault permission the operation needs (access policies name them so; RBAC's
    /// data actions are `Microsoft.KeyVault/vaults/keys/<op>/action`).
    pub(crate) fn permission(self) -> &'static str {
        match self {
            Self::Wrap => "keys/wrapKey",
            Self::Unwrap => "keys/unwrapKey",
            Self::Sign => "keys/sign",
            Self::Get => "keys/get",
        }
    }
}

/// Every error code of a Key Vault answer, outermost first: `error.code` and each nested
/// `innererror.code` (`{"error": {"code": "Forbidden", "innererror": {"code": "KeyDisabled"}}}`).
pub(crate) fn error_codes(body: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        code: Option<String>,
        innererror: Option<Box<Detail>>,
    }
    let mut codes = Vec::new();
    let mut next = serde_json::from_slice::<Answer>(body).ok().map(|a| a.error);
    while let Some(detail) = next {
        codes.extend(detail.code);
        next = detail.innererror.map(|d| *d);
    }
    codes
}

/// Maps an SDK error to a typed provider error: the status and Key Vault's error code only
/// (messages can quote resource names; codes are all a caller needs).
pub(crate) fn map_error(e: &azure_core::Error, op: Op) -> ProviderError {
    match e.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let status = u16::from(*status);
            let code = error_code.as_deref().unwrap_or("");
            let codes = raw_response
                .as_ref()
                .map(|r| error_codes(r.body()))
                .unwrap_or_default();
            let kind = match status {
                401 => ProviderErrorKind::AccessDenied,
                403 if code == "KeyDisabled" || codes.iter().any(|c| c == "KeyDisabled") => {
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
            let mut err = error(kind, format!("Key Vault answered {status} ({code})"))
                .with_operation(op.permission());
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
