//! `Idempotency-Key` on the POST endpoints: the first successful answer for an (API key,
//! idempotency key) pair is stored, with a hash of the request, in the transaction of the
//! change it answers, and kept 24 hours. A retry with the same request gets the same status and
//! body (a create is not repeated); the same key with another request is a 422
//! `idempotency_key_reused`. A duplicate arriving while the first still runs does its own work,
//! and whichever commits first answers both: the other's change is rolled back in its
//! transaction, and it answers with the stored answer.
//!
//! Answers that hand out a data key are stored without it (`data_key` is left out) and rebuilt
//! on a replay by recovering the key from the `encrypted_keys` they carry, or from the
//! request's `keys` for `/decrypt`: that recovery is audited as `vault.dek.decrypted`, as any
//! recovery is, and no key material is ever at rest in the store.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use sha2::{Digest, Sha256};
use vault_objects::{Conflict, Idempotent, Remembered, StoreError, VaultError, Write};

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, vault_error};

/// The longest idempotency key.
const MAX_KEY_LEN: usize = 255;

/// The header a replayed answer carries.
const REPLAYED: &str = "idempotent-replayed";

/// An idempotency key sent with a request, and what identifies the request.
#[derive(Clone)]
pub(crate) struct Idem {
    owner: String,
    key: String,
    hash: [u8; 32],
}

impl std::fmt::Debug for Idem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idem")
            .field("owner", &self.owner)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Idem {
    /// The request's `Idempotency-Key`, if it sent one: 1 to 255 printable ASCII characters.
    pub(crate) fn of(
        headers: &HeaderMap,
        who: &Principal,
        route: &str,
        body: &[u8],
    ) -> Result<Option<Self>, ApiError> {
        let Some(value) = headers.get("idempotency-key") else {
            return Ok(None);
        };
        let key = value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
            .filter(|k| k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to 255 printable ASCII characters",
                )
            })?;
        let mut hash = Sha256::new();
        hash.update(route.as_bytes());
        hash.update([0]);
        hash.update(body);
        Ok(Some(Self {
            owner: who.actor.id.clone(),
            key: key.to_owned(),
            hash: hash.finalize().into(),
        }))
    }

    /// The answer stored for this key: `Some` to replay it, a 422 if it answered another
    /// request.
    pub(crate) async fn stored(&self, state: &AppState) -> Result<Option<Remembered>, ApiError> {
        let Some(stored) = state
            .vault()
            .remembered(&self.owner, &self.key)
            .await
            .map_err(|e| vault_error(&e))?
        else {
            return Ok(None);
        };
        if stored.request_hash != self.hash {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request in the last 24 hours",
            ));
        }
        Ok(Some(stored))
    }

    /// The request, for the facade to keep its answer given with `status`.
    pub(crate) fn answered(&self, status: StatusCode) -> Idempotent {
        Idempotent {
            owner: self.owner.clone(),
            key: self.key.clone(),
            request_hash: self.hash,
            status: status.as_u16(),
        }
    }
}

/// The facade's write options for a change by `who`, its answer kept for `answer`'s retries.
pub(crate) fn write<'a>(who: &'a Principal, answer: Option<&'a Idempotent>) -> Write<'a> {
    Write {
        actor: &who.actor,
        idempotent: answer,
    }
}

fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Whether a failed change lost to a concurrent duplicate (its answer stored meanwhile, or the
/// name it was creating taken by it): then the stored answer is the answer.
pub(crate) fn lost_to_duplicate(e: &VaultError) -> bool {
    matches!(
        e,
        VaultError::Store(StoreError::Conflict(Conflict::Answered | Conflict::Name))
    )
}

/// A stored answer, as it was.
pub(crate) fn replay(stored: &Remembered) -> Response {
    answer(stored.status, stored.body.clone())
}

/// A stored data-key answer with its `data_key` recovered again: from the `encrypted_keys` in
/// the stored body, or from `blob` (the request's `keys`, for `/decrypt`).
pub(crate) async fn replay_key(
    state: &AppState,
    who: &Principal,
    stored: &Remembered,
    blob: Option<&[u8]>,
) -> Result<Response, ApiError> {
    let corrupt = || ApiError::internal("a stored idempotent answer is corrupt");
    let mut body: serde_json::Map<String, Value> =
        serde_json::from_slice(&stored.body).map_err(|_| corrupt())?;
    let from_body;
    let blob = match blob {
        Some(b) => b,
        None => {
            let text = body
                .get("encrypted_keys")
                .and_then(Value::as_str)
                .ok_or_else(corrupt)?;
            from_body = STANDARD.decode(text).map_err(|_| corrupt())?;
            &from_body
        }
    };
    let key = state
        .vault()
        .recover_data_key(&who.environment, blob, &who.actor)
        .await
        .map_err(|e| vault_error(&e))?;
    body.insert(
        "data_key".into(),
        Value::String(STANDARD.encode(key.data_key().expose_secret())),
    );
    Ok(answer(stored.status, json_bytes(&Value::Object(body))))
}

fn answer(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    res
}
