use crate::AppState;
use crate::auth::Principal;
use crate::body::{self, Body, Field};
use crate::error::{ApiError, Origin, crypto_error, vault_error};
use crate::idempotency::{self, Idem};

use super::{lost_race, reply};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::sync::Arc;
use vault_objects::{KeyContext, VaultError, wire};

/// An error of the data-key API: the bytes that failed are the caller's.
fn data_key_error(e: &VaultError) -> ApiError {
    match e {
        VaultError::Crypto(c) => crypto_error(c, Origin::Caller),
        other => vault_error(other),
    }
}

/// `POST /vault/v1/keys/data-key`: the context.
pub(crate) fn parse_data_key(bytes: &[u8]) -> Result<KeyContext, ApiError> {
    let [context] = body::fields(bytes, ["context"])?;
    body::context(&context, "context")
}

pub(crate) async fn create_data_key(
    State(state): State<Arc<AppState>>,
    who: Principal,
    headers: HeaderMap,
    Body(bytes): Body,
) -> Result<Response, ApiError> {
    let context = parse_data_key(&bytes)?;
    let idem = Idem::of(&headers, &who, "POST /vault/v1/keys/data-key", &bytes)?;
    if let Some(idem) = &idem
        && let Some(stored) = idem.stored(&state).await?
    {
        return idempotency::replay_key(&state, &who, &stored, None).await;
    }
    let answer = idem.as_ref().map(|i| i.answered(StatusCode::CREATED));
    let issued = state
        .vault
        .issue_data_key(
            &who.environment,
            &context,
            idempotency::write(&who, answer.as_ref()),
        )
        .await;
    match issued {
        Ok(key) => Ok(reply(StatusCode::CREATED, wire::data_key(&key))),
        Err(e) => match lost_race(&state, idem.as_ref(), &e).await? {
            Some(stored) => idempotency::replay_key(&state, &who, &stored, None).await,
            None => Err(data_key_error(&e)),
        },
    }
}

fn encrypted_keys_field(field: &Field, name: &str) -> Result<Vec<u8>, ApiError> {
    let text = body::string(field, name)?;
    STANDARD.decode(text.trim()).map_err(|_| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "invalid_encrypted_keys",
            name,
            format!("{name} is not base64"),
        )
    })
}

/// `POST /vault/v1/keys/decrypt`: the encrypted keys' bytes.
pub(crate) fn parse_decrypt(bytes: &[u8]) -> Result<Vec<u8>, ApiError> {
    let [keys] = body::fields(bytes, ["keys"])?;
    encrypted_keys_field(&keys, "keys")
}

pub(crate) async fn decrypt_data_key(
    State(state): State<Arc<AppState>>,
    who: Principal,
    headers: HeaderMap,
    Body(bytes): Body,
) -> Result<Response, ApiError> {
    let blob = parse_decrypt(&bytes)?;
    let idem = Idem::of(&headers, &who, "POST /vault/v1/keys/decrypt", &bytes)?;
    if let Some(idem) = &idem
        && let Some(stored) = idem.stored(&state).await?
    {
        return idempotency::replay_key(&state, &who, &stored, Some(&blob)).await;
    }
    let answer = idem.as_ref().map(|i| i.answered(StatusCode::OK));
    let recovered = state
        .vault
        .recover_data_key(
            &who.environment,
            &blob,
            idempotency::write(&who, answer.as_ref()),
        )
        .await;
    match recovered {
        Ok(key) => Ok(reply(StatusCode::OK, wire::decrypted_key(&key))),
        Err(e) => match lost_race(&state, idem.as_ref(), &e).await? {
            Some(stored) => idempotency::replay_key(&state, &who, &stored, Some(&blob)).await,
            None => {
                let mut err = data_key_error(&e);
                if let Some(f) = err.errors.first_mut() {
                    "keys".clone_into(&mut f.field);
                }
                Err(err)
            }
        },
    }
}

/// `POST /vault/v1/keys/rekey`: the new context and the encrypted keys' bytes.
pub(crate) fn parse_rekey(bytes: &[u8]) -> Result<(KeyContext, Vec<u8>), ApiError> {
    let [context, encrypted_keys] = body::fields(bytes, ["context", "encrypted_keys"])?;
    let context = body::context(&context, "context")?;
    let blob = encrypted_keys_field(&encrypted_keys, "encrypted_keys")?;
    Ok((context, blob))
}

pub(crate) async fn rekey(
    State(state): State<Arc<AppState>>,
    who: Principal,
    headers: HeaderMap,
    Body(bytes): Body,
) -> Result<Response, ApiError> {
    let (context, blob) = parse_rekey(&bytes)?;
    let idem = Idem::of(&headers, &who, "POST /vault/v1/keys/rekey", &bytes)?;
    if let Some(idem) = &idem
        && let Some(stored) = idem.stored(&state).await?
    {
        return idempotency::replay_key(&state, &who, &stored, None).await;
    }
    let answer = idem.as_ref().map(|i| i.answered(StatusCode::OK));
    let rekeyed = state
        .vault
        .rekey_data_key(
            &who.environment,
            &blob,
            &context,
            idempotency::write(&who, answer.as_ref()),
        )
        .await;
    match rekeyed {
        Ok(key) => Ok(reply(StatusCode::OK, wire::data_key(&key))),
        Err(e) => match lost_race(&state, idem.as_ref(), &e).await? {
            Some(stored) => idempotency::replay_key(&state, &who, &stored, None).await,
            None => Err(data_key_error(&e)),
        },
    }
}
