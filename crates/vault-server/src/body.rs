//! Request bodies: JSON objects whose fields are read one by one, so every problem is a typed
//! error naming its field, never echoing a value. Unknown and duplicate fields are refused.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use vault_objects::KeyContext;

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
pub(crate) fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
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

/// Why a body's members were refused: a name we do not take, or one given twice.
enum Refusal {
    Unknown(String),
    Duplicate(String),
}

/// Reads a JSON object's members into the slots of `names`, checking each name as it arrives:
/// the first unknown or repeated one ends the reading (the rest is skipped without being kept),
/// so a body of many members costs no more memory than one of a few.
struct Members<'n, const N: usize> {
    names: &'n [&'n str; N],
}

impl<'de, const N: usize> Visitor<'de> for Members<'_, N> {
    type Value = Result<[Field; N], Refusal>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: [Field; N] = std::array::from_fn(|_| None);
        let mut seen = [false; N];
        while let Some(name) = map.next_key::<String>()? {
            // A name is the client's text: at most 64 characters of it are repeated.
            let shown = || name.chars().take(64).collect::<String>();
            let refusal = match self.names.iter().position(|n| *n == name) {
                None => Refusal::Unknown(shown()),
                Some(i) if seen[i] => Refusal::Duplicate(shown()),
                Some(i) => {
                    seen[i] = true;
                    let value: Box<RawValue> = map.next_value()?;
                    out[i] = (value.get() != "null").then_some(value);
                    continue;
                }
            };
            map.next_value::<IgnoredAny>()?;
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Err(refusal));
        }
        Ok(Ok(out))
    }
}

/// The fields `names` of the JSON object in `bytes`, in that order (absent and `null` are
/// `None`). A member not in `names`, or one that appears twice, is refused with its name.
pub(crate) fn fields<const N: usize>(
    bytes: &[u8],
    names: [&str; N],
) -> Result<[Field; N], ApiError> {
    let not_an_object = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be a JSON object",
        )
    };
    // serde would also fill a struct from a JSON array: only objects are bodies.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(not_an_object());
    }
    let json_error = |e: serde_json::Error| {
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
            Category::Data => not_an_object(),
        }
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let read = de
        .deserialize_map(Members { names: &names })
        .map_err(json_error)?;
    de.end().map_err(json_error)?;
    match read {
        Ok(fields) => Ok(fields),
        Err(Refusal::Unknown(name)) => Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_field",
            &name,
            format!("unknown field {name}"),
        )),
        Err(Refusal::Duplicate(name)) => Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "duplicate_field",
            &name,
            format!("field {name} appears twice"),
        )),
    }
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
    parse_context(required(field, name)?, name)
}

/// An optional key-context field, parsed as strictly as [`context`].
pub(crate) fn opt_context(field: &Field, name: &str) -> Result<Option<KeyContext>, ApiError> {
    field
        .as_deref()
        .map(|raw| parse_context(raw, name))
        .transpose()
}

fn parse_context(raw: &RawValue, name: &str) -> Result<KeyContext, ApiError> {
    KeyContext::parse_json(raw.get().as_bytes()).map_err(|e| {
        let mut err = crypto_error(&e.into(), Origin::Caller);
        if let Some(f) = err.errors.first_mut() {
            name.clone_into(&mut f.field);
        }
        err
    })
}
