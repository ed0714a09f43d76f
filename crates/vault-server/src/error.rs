//! API errors: one JSON shape, `{"code", "message", "errors"?}`, with the status codes the WorkOS
//! SDKs map to their typed exceptions (400, 401, 403, 404, 409, 413, 422, 429, 503). Messages
//! name fields and limits, never a value, a key or a database detail.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use vault_objects::VaultError;
use vault_objects::{Conflict, StoreError};
use vault_objects::{CryptoError, ProviderErrorKind};

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field, as the client named it (`key_context`, `value`, `limit`, ...).
    pub field: String,
    /// A stable snake-case code.
    pub code: &'static str,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable snake-case code.
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
    /// Per-field problems (on 400 and 422, so the Node SDK raises `BadRequestException` and
    /// lists them in `UnprocessableEntityException`).
    pub errors: Vec<FieldError>,
    /// Seconds to wait, for 429 and 503.
    pub retry_after: Option<u64>,
    /// What went wrong, for the server's log only (never sent to the client): a provider's
    /// or the store's own words, which name kinds and keys, never values or secrets.
    pub cause: Option<Box<Cause>>,
}

/// The server-side detail of an error, carried to the request log in the response's
/// extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// The key provider involved (its scheme), if any.
    pub provider: Option<String>,
    /// The provider's error kind (`disabled`, `throttled`, ...), if any.
    pub kind: Option<&'static str>,
    /// The detail.
    pub detail: String,
}

/// What the request log records of an error answer (a response extension).
#[derive(Debug, Clone)]
pub(crate) struct Logged {
    pub(crate) code: &'static str,
    pub(crate) cause: Option<Box<Cause>>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl ApiError {
    /// An error without field details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            errors: Vec::new(),
            retry_after: None,
            cause: None,
        }
    }

    /// Records `detail` for the server's log (the client never sees it).
    #[must_use]
    pub fn with_cause(mut self, detail: impl std::fmt::Display) -> Self {
        self.cause = Some(Box::new(Cause {
            provider: None,
            kind: None,
            detail: detail.to_string(),
        }));
        self
    }

    fn with_provider_cause(mut self, p: &vault_objects::ProviderError) -> Self {
        self.cause = Some(Box::new(Cause {
            provider: Some(p.scheme().to_owned()),
            kind: Some(p.kind().as_str()),
            detail: p.to_string(),
        }));
        self
    }

    /// A 400 or 422 naming one field.
    pub fn field(
        status: StatusCode,
        code: &'static str,
        field: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            errors: vec![FieldError {
                field: field.to_owned(),
                code,
            }],
            ..Self::new(status, code, message)
        }
    }

    /// 401: no API key, or one that is unknown or revoked.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required: Authorization: Bearer sk_...",
        )
    }

    /// 404 for an object (also for one of another environment).
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the object was not found",
        )
    }

    /// An invalid request field: 422 with the field named.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            field,
            message,
        )
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "too many requests for this API key; retry later",
            )
        }
    }

    /// 500: the server's key configuration cannot work (the operator's mistake).
    pub fn configuration() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "configuration_error",
            "the server's key configuration is wrong; its operator has been told",
        )
    }

    /// 500 without detail (the detail is not the client's business).
    pub fn internal(what: &str) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("internal error: {what}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Body {
            code: self.code,
            message: &self.message,
            errors: &self.errors,
        })
        .unwrap_or_default();
        let mut res = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res.extensions_mut().insert(Logged {
            code: self.code,
            cause: self.cause,
        });
        res
    }
}

/// Who supplied the bytes that failed: the caller (its `encrypted_keys`) or our own store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Caller,
    Stored,
}

pub(crate) fn store_error(e: &StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found(),
        StoreError::Conflict(conflict) => {
            let code = match conflict {
                Conflict::Version => "version_conflict",
                Conflict::Name | Conflict::ApiKey => "name_conflict",
                _ => "conflict",
            };
            ApiError::new(StatusCode::CONFLICT, code, conflict.to_string())
        }
        // Listing parameters are query syntax (400); object fields are 422.
        StoreError::InvalidQuery { field, reason } => ApiError::field(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            field,
            format!("{field}: {reason}"),
        ),
        StoreError::InvalidArgument { field, reason } => ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            field,
            format!("{field}: {reason}"),
        ),
        StoreError::Unavailable { .. } => ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the storage is unavailable; retry later",
            )
        }
        .with_cause(e),
        _ => ApiError::internal("storage").with_cause(e),
    }
}

pub(crate) fn crypto_error(e: &CryptoError, origin: Origin) -> ApiError {
    let bad_keys = |message: &str| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "invalid_encrypted_keys",
            "encrypted_keys",
            message,
        )
    };
    let answer = match (e, origin) {
        (CryptoError::Context(c), _) => ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_key_context",
            "key_context",
            c.to_string(),
        ),
        (CryptoError::PlaintextTooLarge { max }, _) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            format!("the value is larger than {max} bytes"),
        ),
        (CryptoError::Envelope(env), Origin::Caller) => {
            bad_keys(&format!("the encrypted keys are not valid: {env}"))
        }
        (CryptoError::DecryptionFailed | CryptoError::ContextMismatch, Origin::Caller) => {
            bad_keys("the encrypted keys do not decrypt in this environment")
        }
        (CryptoError::NoProvider { .. }, Origin::Caller) => {
            bad_keys("the encrypted keys name a key this server does not hold")
        }
        (CryptoError::Provider(p), origin) => match p.kind() {
            ProviderErrorKind::Throttled => ApiError {
                retry_after: Some(p.retry_after().map_or(1, |d| d.as_secs().max(1))),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "key_provider_throttled",
                    "the key provider is throttling requests; retry later",
                )
            },
            ProviderErrorKind::Unavailable => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "key_provider_unavailable",
                    "the key provider is unavailable; retry later",
                )
            },
            // Which of these it was (a destroyed version, a disabled or deleted customer key,
            // a revoked grant) is for the log: told to the caller it would let them probe
            // which key versions exist.
            ProviderErrorKind::AccessDenied
            | ProviderErrorKind::Disabled
            | ProviderErrorKind::NotFound => ApiError::new(
                StatusCode::FORBIDDEN,
                "key_unavailable",
                "the key for this context cannot be used",
            ),
            ProviderErrorKind::InvalidCiphertext if origin == Origin::Caller => {
                bad_keys("the encrypted keys do not decrypt in this environment")
            }
            // The blob names a key that its context is not routed to here.
            ProviderErrorKind::NotMine if origin == Origin::Caller => {
                bad_keys("the encrypted keys name a key this server does not hold")
            }
            // The operator's mistake (a provider defined wrongly), met at request time.
            ProviderErrorKind::Configuration | ProviderErrorKind::NoCredentials => {
                ApiError::configuration()
            }
            _ => ApiError::internal("key provider"),
        }
        .with_provider_cause(p),
        (
            CryptoError::Envelope(_) | CryptoError::DecryptionFailed | CryptoError::ContextMismatch,
            Origin::Stored,
        ) => ApiError::internal("a stored value does not decrypt"),
        _ => ApiError::internal("crypto"),
    };
    if answer.cause.is_some() || answer.status.is_client_error() {
        answer
    } else {
        answer.with_cause(e)
    }
}

pub(crate) fn vault_error(e: &VaultError) -> ApiError {
    match e {
        VaultError::Store(s) => store_error(s),
        VaultError::Crypto(c) => crypto_error(c, Origin::Stored),
        // Without `errors[]`: the Node SDK replaces a 422's message by the list of its
        // `errors[].code`, and this message is the one that says what to do instead.
        VaultError::ContextImmutable => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "key_context_immutable",
            e.to_string(),
        ),
        _ => ApiError::internal("vault").with_cause(e),
    }
}
