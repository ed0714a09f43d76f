//! Blobs, our extension beside the WorkOS API (docs/API.md, "Blobs"): values of any size
//! uploaded as a streamed request body and downloaded whole or by `Range`, never held whole in
//! memory. The key context comes in the `Vault-Key-Context` header, as the body is the value.

use std::sync::Arc;

use axum::body::{Body as HttpBody, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use vault_objects::{BlobMeta, BlobReader, ByteRange, KeyContext, VaultError};

use super::reply;
use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, Origin, crypto_error, vault_error};

/// The request header that carries a blob's key context (a JSON object, parsed as strictly
/// as a `key_context` field).
pub(crate) const CONTEXT_HEADER: &str = "vault-key-context";

/// A blob's metadata as the API shows it.
fn blob_json(m: &BlobMeta) -> Value {
    json!({
        "object": "blob",
        "id": m.id,
        "name": m.name,
        "size": m.size,
        "key_id": m.key_id,
        "context": serde_json::from_str::<Value>(&m.context.to_json()).unwrap_or(Value::Null),
        "created_at": m.created_at.to_rfc3339(),
        "created_by": { "id": m.created_by.id, "name": m.created_by.name },
    })
}

/// The `Vault-Key-Context` header's context: required, a JSON object of 1 to 10 string pairs.
pub(crate) fn header_context(value: Option<&[u8]>) -> Result<KeyContext, ApiError> {
    let raw = value.ok_or_else(|| {
        ApiError::invalid(
            "Vault-Key-Context",
            "the Vault-Key-Context header is required: the blob's key context as a JSON object",
        )
    })?;
    let named = |e: vault_objects::ContextError| -> ApiError {
        let mut err = crypto_error(&e.into(), Origin::Caller);
        if let Some(f) = err.errors.first_mut() {
            "Vault-Key-Context".clone_into(&mut f.field);
        }
        err
    };
    let context = KeyContext::parse_json(raw).map_err(named)?;
    context.check_caller().map_err(named)?;
    Ok(context)
}

/// A `Range` header's one byte range (RFC 9110, 14.1.2). Anything else (another unit, several
/// ranges, bad syntax) is `None`: the header is ignored and the whole blob is answered, as the
/// RFC allows.
pub(crate) fn parse_range(value: &[u8]) -> Option<ByteRange> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (unit, spec) = text.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let spec = spec.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, false) => Some(ByteRange::Last(number(last)?)),
        (false, true) => Some(ByteRange::From(number(first)?)),
        (false, false) => {
            let (first, last) = (number(first)?, number(last)?);
            (first <= last).then_some(ByteRange::Bounded { first, last })
        }
        (true, true) => None,
    }
}

fn invalid_body() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_body",
        "the request body could not be read to its end: nothing was stored",
    )
}

/// `PUT /vault/v1/blobs/{name}`: the body is the value, streamed into sealed segments a
/// megabyte of storage at a time; the blob replaces the name's only once all of it is stored.
pub(crate) async fn put_blob(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: HttpBody,
) -> Result<Response, ApiError> {
    let context = header_context(headers.get(CONTEXT_HEADER).map(HeaderValue::as_bytes))?;
    let max = state.limits.max_blob_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "blob_too_large",
            format!(
                "the blob is larger than {max} bytes ([server] max_blob_bytes): nothing was stored"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut upload = state
        .vault
        .begin_blob(&who.environment, &name, &context, &who.actor)
        .await
        .map_err(|e| vault_error(&e))?;
    let mut body = body;
    let fed = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                if crate::body::timed_out(&e) {
                    ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        "the request body stopped arriving: nothing was stored",
                    )
                } else {
                    invalid_body()
                }
            })?;
            if let Ok(data) = frame.into_data() {
                if upload.len().saturating_add(data.len() as u64) > max {
                    return Err(too_large());
                }
                upload.write(&data).await.map_err(|e| vault_error(&e))?;
            }
        }
        Ok::<_, ApiError>(())
    };
    if let Err(e) = fed.await {
        // Best effort: the scheduled purge removes an abandoned upload otherwise.
        let _ = upload.abort().await;
        return Err(e);
    }
    let meta = upload.finish().await.map_err(|e| vault_error(&e))?;
    Ok(reply(StatusCode::OK, blob_json(&meta)))
}

/// `GET /vault/v1/blobs/{name}`: the value, or with `Range: bytes=…` the part asked for (206).
/// Every byte sent was authenticated in its place; a segment that does not open ends the
/// response early (a download cut short, never a wrong byte).
pub(crate) async fn get_blob(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| parse_range(v.as_bytes()));
    let reader = match state
        .vault
        .open_blob(&who.environment, &name, range, &who.actor)
        .await
    {
        Ok(reader) => reader,
        Err(VaultError::RangeNotSatisfiable { size }) => {
            let mut res = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the range asked for holds none of the blob's {size} bytes"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                res.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(res);
        }
        Err(e) => return Err(vault_error(&e)),
    };
    let (start, end) = reader.span();
    let size = reader.meta().size;
    let mut res = common_headers(reader.meta(), end - start);
    if range.is_some() {
        *res.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
            res.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    *res.body_mut() = HttpBody::from_stream(futures_util::stream::unfold(Some(reader), next_batch));
    Ok(res)
}

/// The response body's next batch: `None` after the end or after a failure (sent as an
/// error, which ends the response early).
async fn next_batch(
    reader: Option<BlobReader>,
) -> Option<(Result<Bytes, std::io::Error>, Option<BlobReader>)> {
    let mut reader = reader?;
    match reader.next_chunk().await {
        Ok(Some(chunk)) => Some((Ok(Bytes::from(chunk)), Some(reader))),
        Ok(None) => None,
        Err(e) => {
            tracing::error!(
                target: "vault::request", blob = %reader.meta().id, error = %e,
                "a blob download was cut short: a segment did not open"
            );
            Some((Err(std::io::Error::other("a segment did not open")), None))
        }
    }
}

/// A response without body carrying a blob's length and identity.
fn common_headers(meta: &BlobMeta, length: u64) -> Response {
    let mut res = Response::new(HttpBody::empty());
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    // Every upload is a new blob id: a strong validator of the content.
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", meta.id)) {
        h.insert(header::ETAG, v);
    }
    res
}

/// `HEAD /vault/v1/blobs/{name}`: the length and identity, nothing decrypted (audited as a
/// metadata read).
pub(crate) async fn head_blob(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let meta = state
        .vault
        .describe_blob(&who.environment, &name, &who.actor)
        .await
        .map_err(|e| vault_error(&e))?;
    Ok(common_headers(&meta, meta.size))
}

/// `DELETE /vault/v1/blobs/{name}`: gone at once, purged later.
pub(crate) async fn delete_blob(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let meta = state
        .vault
        .delete_blob(&who.environment, &name, &who.actor)
        .await
        .map_err(|e| vault_error(&e))?;
    Ok(reply(StatusCode::OK, blob_json(&meta)))
}

/// `GET /vault/v1/blobs?after=NAME&limit=N`: live blobs by name, metadata only.
pub(crate) async fn list_blobs(
    State(state): State<Arc<AppState>>,
    who: Principal,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let (after, limit) = blob_list_query(q.as_deref())?;
    let blobs = state
        .vault
        .list_blobs(&who.environment, after.as_deref(), limit, &who.actor)
        .await
        .map_err(|e| vault_error(&e))?;
    let next = (blobs.len() == limit as usize)
        .then(|| blobs.last().map(|b| b.name.clone()))
        .flatten();
    Ok(reply(
        StatusCode::OK,
        json!({
            "object": "list",
            "data": blobs.iter().map(blob_json).collect::<Vec<_>>(),
            "list_metadata": { "after": next },
        }),
    ))
}

/// The listing's `after` and `limit` (default 10, 1 to 100).
pub(crate) fn blob_list_query(q: Option<&str>) -> Result<(Option<String>, u32), ApiError> {
    let bad = |field: &str, reason: &str| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            field,
            format!("{field}: {reason}"),
        )
    };
    let (mut after, mut limit) = (None, 10);
    for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
        match &*k {
            "after" => after = Some(v.into_owned()),
            "limit" => {
                limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| bad("limit", "must be 1 to 100"))?;
            }
            _ => {}
        }
    }
    Ok((after, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_range_is_understood_and_anything_else_ignored() {
        let r = |s: &str| parse_range(s.as_bytes());
        assert_eq!(
            r("bytes=0-0"),
            Some(ByteRange::Bounded { first: 0, last: 0 })
        );
        assert_eq!(
            r(" bytes = 5 - 9 "),
            Some(ByteRange::Bounded { first: 5, last: 9 })
        );
        assert_eq!(r("BYTES=7-"), Some(ByteRange::From(7)));
        assert_eq!(r("bytes=-3"), Some(ByteRange::Last(3)));
        for ignored in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=9-3",
            "bytes=1-2,4-5",
            "items=0-1",
            "bytes=+1-2",
            "bytes=0x1-",
            "bytes=1--2",
            "bytes=18446744073709551616-",
        ] {
            assert_eq!(r(ignored), None, "{ignored}");
        }
        assert_eq!(parse_range(&[0xff, b'=', b'1', b'-']), None);
    }

    #[test]
    fn the_context_header_is_required_and_strict() {
        assert_eq!(
            header_context(None).unwrap_err().errors[0].field,
            "Vault-Key-Context"
        );
        let e = header_context(Some(br#"{"a":"1","a":"2"}"#)).unwrap_err();
        assert!(e.status.is_client_error());
        assert_eq!(e.errors[0].field, "Vault-Key-Context");
        assert!(header_context(Some(br#"{"organization_id":"org_1"}"#)).is_ok());
    }
}
