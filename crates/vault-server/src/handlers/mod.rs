//! The endpoint handlers. Each authenticates first (so a request without a valid key does
//! nothing), then reads its input field by field, then makes one call to the facade, which
//! writes the change or the read and its audit event together (`/healthz` and `/metrics` call
//! nothing).

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use vault_objects::{
    Cursor, KeyContext, ListQuery, ObjectMeta, Order, VaultError, VersionMeta, wire,
};

use crate::AppState;
use crate::auth::{self, Principal};
use crate::body::{self, Body};
use crate::error::{ApiError, store_error, vault_error};
use crate::idempotency::{self, Idem};

mod health;
pub(crate) use health::*;

mod data_keys;
pub(crate) use data_keys::*;

mod blobs;
pub(crate) use blobs::*;

impl FromRequestParts<Arc<AppState>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        let principal = auth::authenticate(&state.api_keys, key)
            .await
            .map_err(|e| store_error(&e))?
            .ok_or_else(ApiError::unauthorized)?;
        state
            .rate
            .check(&principal.actor.id)
            .map_err(ApiError::rate_limited)?;
        Ok(principal)
    }
}

/// A JSON answer with an explicit status.
pub(crate) fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

pub(crate) fn metadata_json(m: &ObjectMeta) -> Value {
    wire::object_metadata(m)
}

fn without_value(m: &ObjectMeta) -> Value {
    json!({ "id": m.id, "name": m.name, "metadata": metadata_json(m) })
}

fn check_value_size(state: &AppState, value: &str) -> Result<(), ApiError> {
    let max = state.limits.max_value_bytes;
    if value.len() > max {
        return Err(ApiError::field(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            "value",
            format!("the value is larger than {max} bytes"),
        ));
    }
    Ok(())
}

/// `POST /vault/v1/kv`: the context, name and value, and optionally the organization the
/// object's events are filed under (checked against the context's by the facade).
pub(crate) struct CreateBody {
    pub(crate) key_context: KeyContext,
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) organization_id: Option<String>,
}

pub(crate) fn parse_create(bytes: &[u8]) -> Result<CreateBody, ApiError> {
    let [key_context, name, value, organization_id] =
        body::fields(bytes, ["key_context", "name", "value", "organization_id"])?;
    Ok(CreateBody {
        key_context: body::context(&key_context, "key_context")?,
        name: body::string(&name, "name")?,
        value: body::string(&value, "value")?,
        organization_id: body::opt_string(&organization_id, "organization_id")?,
    })
}

pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    who: Principal,
    headers: HeaderMap,
    Body(bytes): Body,
) -> Result<Response, ApiError> {
    let body = parse_create(&bytes)?;
    check_value_size(&state, &body.value)?;
    let idem = Idem::of(&headers, &who, "POST /vault/v1/kv", &bytes)?;
    if let Some(idem) = &idem
        && let Some(stored) = idem.stored(&state).await?
    {
        return Ok(idempotency::replay(&stored));
    }
    let answer = idem.as_ref().map(|i| i.answered(StatusCode::CREATED));
    let created = state
        .vault
        .create(
            &who.environment,
            &body.name,
            &body.key_context,
            body.organization_id.as_deref(),
            body.value.as_bytes(),
            idempotency::write(&who, answer.as_ref()),
        )
        .await;
    match created {
        Ok(meta) => Ok(reply(StatusCode::CREATED, metadata_json(&meta))),
        Err(e) => match lost_race(&state, idem.as_ref(), &e).await? {
            Some(stored) => Ok(idempotency::replay(&stored)),
            None => Err(vault_error(&e)),
        },
    }
}

/// The stored answer of a concurrent duplicate that won (see [`idempotency`]), if `e` says this
/// request lost to one.
async fn lost_race(
    state: &AppState,
    idem: Option<&Idem>,
    e: &VaultError,
) -> Result<Option<vault_objects::Remembered>, ApiError> {
    match idem {
        Some(idem) if idempotency::lost_to_duplicate(e) => idem.stored(state).await,
        _ => Ok(None),
    }
}

fn object_json(obj: vault_objects::Object) -> Result<Response, ApiError> {
    let value = String::from_utf8(obj.value).map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "value_not_text",
            "the value is not UTF-8 text (it was stored as binary); read it with the CLI",
        )
    })?;
    Ok(reply(
        StatusCode::OK,
        json!({
            "id": obj.meta.id,
            "name": obj.meta.name,
            "value": value,
            "metadata": metadata_json(&obj.meta),
        }),
    ))
}

pub(crate) async fn read(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let obj = state
        .vault
        .read(&who.environment, &id, &who.actor)
        .await
        .map_err(|e| vault_error(&e))?;
    object_json(obj)
}

pub(crate) async fn read_by_name(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let obj = state
        .vault
        .read_by_name(&who.environment, &name, &who.actor)
        .await
        .map_err(|e| vault_error(&e))?;
    object_json(obj)
}

pub(crate) async fn describe(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let meta = state
        .vault
        .describe(&who.environment, &id, &who.actor)
        .await
        .map_err(|e| vault_error(&e))?;
    Ok(reply(StatusCode::OK, without_value(&meta)))
}

fn version_json(v: &VersionMeta) -> Value {
    json!({
        "created_at": v.created_at.to_rfc3339(),
        "current_version": v.current,
        "etag": v.etag,
        "id": v.id,
        "size": v.size,
    })
}

pub(crate) async fn versions(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let versions = state
        .vault
        .versions(&who.environment, &id, &who.actor)
        .await
        .map_err(|e| vault_error(&e))?;
    Ok(reply(
        StatusCode::OK,
        json!({
            "data": versions.iter().map(version_json).collect::<Vec<_>>(),
            "list_metadata": { "before": null, "after": null },
        }),
    ))
}

/// `PUT /vault/v1/kv/{id}`: the value, the optional version check, and the optional key
/// context (which, a context being immutable, must be the object's own).
pub(crate) struct UpdateBody {
    pub(crate) value: String,
    pub(crate) version_check: Option<String>,
    pub(crate) key_context: Option<KeyContext>,
}

pub(crate) fn parse_update(bytes: &[u8]) -> Result<UpdateBody, ApiError> {
    let [value, version_check, key_context] =
        body::fields(bytes, ["value", "version_check", "key_context"])?;
    Ok(UpdateBody {
        value: body::string(&value, "value")?,
        version_check: body::opt_string(&version_check, "version_check")?,
        key_context: body::opt_context(&key_context, "key_context")?,
    })
}

pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<String>,
    Body(bytes): Body,
) -> Result<Response, ApiError> {
    let body = parse_update(&bytes)?;
    check_value_size(&state, &body.value)?;
    let meta = state
        .vault
        .update(
            &who.environment,
            &id,
            body.value.as_bytes(),
            body.version_check.as_deref(),
            body.key_context.as_ref(),
            &who.actor,
        )
        .await
        .map_err(|e| vault_error(&e))?;
    Ok(reply(StatusCode::OK, without_value(&meta)))
}

/// The query string as (name, value) pairs, `+` decoded as a space.
pub(crate) fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(crate) fn bad_query(field: &str, message: &str) -> ApiError {
    ApiError::field(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        field,
        format!("{field}: {message}"),
    )
}

pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let version_check = query_pairs(q.as_deref())
        .into_iter()
        .find(|(k, v)| k == "version_check" && !v.is_empty())
        .map(|(_, v)| v);
    let meta = state
        .vault
        .delete(&who.environment, &id, version_check.as_deref(), &who.actor)
        .await
        .map_err(|e| vault_error(&e))?;
    Ok(reply(
        StatusCode::OK,
        json!({ "name": meta.name, "success": true }),
    ))
}

pub(crate) fn list_query(q: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut query = ListQuery::default();
    for (k, v) in query_pairs(q) {
        // Node drops empty parameters; treat an empty one as absent everywhere.
        if v.is_empty() {
            continue;
        }
        match k.as_str() {
            "limit" => {
                let n: u32 = v
                    .parse()
                    .map_err(|_| bad_query("limit", "must be an integer from 1 to 100"))?;
                query.limit = Some(n);
            }
            "before" => {
                query.before = Some(Cursor::decode(&v, "before").map_err(|e| store_error(&e))?);
            }
            "after" => {
                query.after = Some(Cursor::decode(&v, "after").map_err(|e| store_error(&e))?);
            }
            "order" => {
                query.order = v.parse::<Order>().map_err(|e| store_error(&e))?;
            }
            "search" => query.search = Some(v),
            "updatedAfter" | "updated_after" => {
                query.updated_after = Some(
                    crate::timefmt::parse_updated_after(&v)
                        .ok_or_else(|| bad_query("updated_after", "not an ISO 8601 timestamp"))?,
                );
            }
            // Other parameters (from newer SDKs) are ignored, as the SDKs ignore unknown fields.
            _ => {}
        }
    }
    Ok(query)
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    who: Principal,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let query = list_query(q.as_deref())?;
    let page = state
        .vault
        .list(&who.environment, &query, &who.actor)
        .await
        .map_err(|e| vault_error(&e))?;
    let data: Vec<Value> = page
        .data
        .iter()
        .map(|i| json!({ "id": i.id, "name": i.name, "updated_at": i.updated_at.to_rfc3339() }))
        .collect();
    Ok(reply(
        StatusCode::OK,
        json!({
            "data": data,
            "list_metadata": { "before": page.before, "after": page.after },
        }),
    ))
}
