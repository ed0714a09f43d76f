//! Request bodies: JSON objects whose fields are read one by one, so every problem is a typed
//! error naming its field, never echoing a value. Unknown and duplicate fields are refused.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use vault_crypto::KeyContext;

use crate::error::{ApiError, Origin, crypto_error};

/// The raw body bytes, read under the body limit; a breach is a JSON 413.
pub(crate) struct Body(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Self(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                "the request body is larger than the server accepts",
            )),
            Err(e) if timed_out(&e) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            )),
            Err(_) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request body could not be read",
            )),
        }
    }
}

/// Whether reading the body failed on the listener's body deadline.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<crate::listen::BodyTimedOut>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// A field as it appeared: absent and `null` are both `None`.
pub(crate) type Field = Option<Box<RawValue>>;

/// Parses `bytes` as the JSON object `T` (a struct of [`Field`]s with `deny_unknown_fields`).
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would also fill a struct from a JSON array, positionally: only objects are bodies.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!(
                    "the body is not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            ),
            Category::Data => {
                // serde's messages name fields between backticks; keep only that, no values.
                let text = e.to_string();
                let name = text.split('`').nth(1).unwrap_or("body").to_owned();
                if text.starts_with("unknown field") {
                    ApiError::field(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "unknown_field",
                        &name,
                        format!("unknown field {name}"),
                    )
                } else if text.starts_with("duplicate field") {
                    ApiError::field(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "duplicate_field",
                        &name,
                        format!("field {name} appears twice"),
                    )
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_json",
                        "the body must be a JSON object",
                    )
                }
            }
        }
    })
}

fn required<'a>(field: &'a Field, name: &str) -> Result<&'a RawValue, ApiError> {
    field.as_deref().ok_or_else(|| {
        ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_field",
            name,
            format!("{name} is required"),
        )
    })
}

/// An optional string field.
pub(crate) fn opt_string(field: &Field, name: &str) -> Result<Option<String>, ApiError> {
    field
        .as_deref()
        .map(|raw| {
            serde_json::from_str::<String>(raw.get()).map_err(|_| {
                ApiError::field(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_type",
                    name,
                    format!("{name} must be a string"),
                )
            })
        })
        .transpose()
}

/// A required string field.
pub(crate) fn string(field: &Field, name: &str) -> Result<String, ApiError> {
    required(field, name)?;
    opt_string(field, name)?.ok_or_else(|| ApiError::invalid(name, format!("{name} is required")))
}

/// A required key-context field, parsed strictly (duplicate keys, non-string values, more than
/// 10 pairs, empty or oversized keys and values are each a 422 naming the key and limit).
pub(crate) fn context(field: &Field, name: &str) -> Result<KeyContext, ApiError> {
    let raw = required(field, name)?;
    KeyContext::parse_json(raw.get().as_bytes()).map_err(|e| {
        let mut err = crypto_error(&e.into(), Origin::Caller);
        if let Some(f) = err.errors.first_mut() {
            name.clone_into(&mut f.field);
        }
        err
    })
}
