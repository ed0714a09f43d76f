//! The audit trail as WorkOS events: `GET /events` (the Events API, as the SDKs' `listEvents`
//! / `list_events` call it) and the one JSON form of an event, which webhook deliveries carry
//! too.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};
use vault_objects::{AuditEvent, EventQuery, Order, events};

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, vault_error};
use crate::handlers::{bad_query, query_pairs, reply};

/// The page size when `limit` is not given, as WorkOS's.
const DEFAULT_LIMIT: u32 = 10;

/// `api` for a request made with an API key (`key_…`); `dashboard` (WorkOS's other source) for
/// what an operator's tools did: the CLI (`user_…`) and key management (`vault_keys`,
/// `vault_byok`).
fn actor_source(actor_id: &str) -> &'static str {
    if actor_id.starts_with("key_") {
        "api"
    } else {
        "dashboard"
    }
}

/// An event as WorkOS sends it: `{object, id, event, data, created_at}`, with the payload
/// fields of its type (`docs/API.md`, "Events").
pub fn event_json(e: &AuditEvent) -> Value {
    let mut data = Map::new();
    // WorkOS's BYOK events carry no actor fields.
    if e.event != events::BYOK_VERIFIED && e.event != events::BYOK_DELETED {
        data.insert("actor_id".into(), json!(e.actor.id));
        data.insert("actor_source".into(), json!(actor_source(&e.actor.id)));
        data.insert("actor_name".into(), json!(e.actor.name));
    }
    let context = || {
        e.key_context
            .as_deref()
            .and_then(|c| serde_json::from_str::<Value>(c).ok())
            .unwrap_or(Value::Null)
    };
    let name = || json!(e.object_name);
    // A blob's events (its metadata read, its data key rewrapped) name it as a blob.
    let name_field = if e
        .object_id
        .as_deref()
        .is_some_and(|id| id.starts_with("blob_"))
    {
        "blob_name"
    } else {
        "kv_name"
    };
    let key = || json!(e.key_id);
    let fields: Vec<(&str, Value)> = match e.event.as_str() {
        events::DATA_CREATED | events::DATA_UPDATED | events::DATA_REWRAPPED => vec![
            (name_field, name()),
            ("key_id", key()),
            ("key_context", context()),
        ],
        events::DATA_READ => vec![(name_field, name()), ("key_id", key())],
        events::DATA_DELETED | events::METADATA_READ | events::DATA_PURGED => {
            vec![(name_field, name())]
        }
        events::BLOB_CREATED => vec![
            (name_field, name()),
            ("key_id", key()),
            ("key_context", context()),
        ],
        events::BLOB_READ => vec![(name_field, name()), ("key_id", key())],
        events::BLOB_DELETED | events::BLOB_PURGED => vec![(name_field, name())],
        events::DEK_READ | events::DEK_REKEYED => {
            vec![("key_ids", json!([e.key_id])), ("key_context", context())]
        }
        events::DEK_DECRYPTED => vec![("key_id", key())],
        events::KEK_CREATED | events::KEK_DELETED => {
            // `managed://ring#v2`: the key is the ring, the id its version.
            let ring = e
                .key_id
                .as_deref()
                .and_then(|k| k.strip_prefix("managed://"))
                .and_then(|k| k.split('#').next());
            vec![("key_name", json!(ring)), ("key_id", key())]
        }
        events::BYOK_VERIFIED => {
            let detail = e
                .detail
                .as_deref()
                .and_then(|d| serde_json::from_str::<Value>(d).ok());
            vec![
                ("organization_id", context()["organization_id"].clone()),
                ("key_provider", json!(key_provider(e.key_id.as_deref()))),
                (
                    "verified",
                    detail.map_or(Value::Null, |d| d["verified"].clone()),
                ),
            ]
        }
        events::BYOK_DELETED => vec![
            ("organization_id", context()["organization_id"].clone()),
            ("key_provider", json!(key_provider(e.key_id.as_deref()))),
        ],
        _ => Vec::new(),
    };
    for (k, v) in fields {
        data.insert(k.into(), v);
    }
    json!({
        "object": "event",
        "id": e.id,
        "event": e.event,
        "data": data,
        "created_at": e.occurred_at.to_rfc3339(),
    })
}

/// The provider of a key reference as WorkOS names it (`AWS_KMS`, `GCP_KMS`,
/// `AZURE_KEY_VAULT`; ours `MANAGED`).
fn key_provider(key_id: Option<&str>) -> Option<&'static str> {
    let scheme = key_id?.split("://").next()?;
    Some(match scheme {
        "aws-kms" => "AWS_KMS",
        "gcp-kms" => "GCP_KMS",
        "azure-kv" => "AZURE_KEY_VAULT",
        "managed" => "MANAGED",
        _ => return None,
    })
}

/// Parses `GET /events`'s query: `events` (required; comma-joined, as both SDKs send it, or
/// repeated), `organization_id`, `range_start`, `range_end`, `limit`, `after`, `order`.
pub(crate) fn event_query(q: Option<&str>) -> Result<EventQuery, ApiError> {
    let mut query = EventQuery {
        limit: DEFAULT_LIMIT,
        // Oldest first, as WorkOS pages its events.
        order: Order::Asc,
        ..EventQuery::default()
    };
    let time = |field: &'static str, v: &str| {
        crate::timefmt::parse_updated_after(v)
            .ok_or_else(|| bad_query(field, "not an ISO 8601 timestamp"))
    };
    for (k, v) in query_pairs(q) {
        if v.is_empty() {
            continue;
        }
        match k.as_str() {
            "events" | "events[]" => {
                for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    if !events::ALL.contains(&name) {
                        return Err(ApiError::field(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "invalid_events",
                            "events",
                            "events: names an event type this vault does not record",
                        ));
                    }
                    if !query.events.iter().any(|e| e == name) {
                        query.events.push(name.to_owned());
                    }
                }
            }
            "organization_id" => query.organization_id = Some(v),
            "range_start" => query.range_start = Some(time("range_start", &v)?),
            "range_end" => query.range_end = Some(time("range_end", &v)?),
            "limit" => {
                query.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=vault_objects::MAX_EVENTS_LIMIT).contains(n))
                    .ok_or_else(|| bad_query("limit", "must be an integer from 1 to 100"))?;
            }
            "after" => query.after = Some(v),
            "order" => {
                query.order = match v.as_str() {
                    "asc" => Order::Asc,
                    "desc" => Order::Desc,
                    _ => return Err(bad_query("order", "must be asc or desc")),
                }
            }
            _ => {}
        }
    }
    if query.events.is_empty() {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "events_required",
            "events",
            "events: name at least one event type (as WorkOS requires)",
        ));
    }
    Ok(query)
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    who: Principal,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let query = event_query(q.as_deref())?;
    let page = state
        .vault()
        .list_events(&who.environment, &query)
        .await
        .map_err(|e| vault_error(&e))?;
    Ok(reply(
        StatusCode::OK,
        json!({
            "object": "list",
            "data": page.data.iter().map(event_json).collect::<Vec<_>>(),
            "list_metadata": { "after": page.after },
        }),
    ))
}
