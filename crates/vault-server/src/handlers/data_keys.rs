use crate::AppState;
use crate::auth::Principal;
use crate::body::{self, Body, Field};
use crate::error::{ApiError, Origin, crypto_error, vault_error};
use crate::idempotency::{self, Idem};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::sync::Arc;
use vault_objects::{IssuedKey, KeyContext, RememberKey, VaultError};

#[allow(clippy::wildcard_imports)]
use super::*;

fn data_key_json(k: &IssuedKey) -> Value {
    json!({
        "context": context_json(k.context()),
        "data_key": STANDARD.encode(k.data_key().expose_secret()),
        "encrypted_keys": STANDARD.encode(k.encrypted_keys()),
        "id": k.id(),
    })
}

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
    let idem = Idem::of(
        &state,
        &headers,
        &who,
        "POST /vault/v1/keys/data-key",
        &bytes,
    )?;
    if let Some(idem) = &idem
        && let Some(stored) = idem.stored(&state).await?
    {
        return idempotency::replay_key(&state, &who, &stored, None).await;
    }
    let remember = idem
        .clone()
        .map(|i| move |k: &IssuedKey| i.remember_key(StatusCode::CREATED, k, data_key_json));
    let issued = state
        .vault
        .issue_data_key_with(
            &who.environment,
            &context,
            &who.actor,
            remember.as_ref().map(|f| f as &RememberKey),
        )
        .await;
    match issued {
        Ok(key) => Ok(reply(StatusCode::CREATED, data_key_json(&key))),
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

fn decrypted_json(k: &IssuedKey) -> Value {
    json!({
        "data_key": STANDARD.encode(k.data_key().expose_secret()),
        "id": k.id(),
    })
}

pub(crate) async fn decrypt_data_key(
    State(state): State<Arc<AppState>>,
    who: Principal,
    headers: HeaderMap,
    Body(bytes): Body,
) -> Result<Response, ApiError> {
    let blob = parse_decrypt(&bytes)?;
    let idem = Idem::of(
        &state,
        &headers,
        &who,
        "POST /vault/v1/keys/decrypt",
        &bytes,
    )?;
    if let Some(idem) = &idem
        && let Some(stored) = idem.stored(&state).await?
    {
        return idempotency::replay_key(&state, &who, &stored, Some(&blob)).await;
    }
    let remember = idem
        .clone()
        .map(|i| move |k: &IssuedKey| i.remember_key(StatusCode::OK, k, decrypted_json));
    let recovered = state
        .vault
        .recover_data_key_with(
            &who.environment,
            &blob,
            &who.actor,
            remember.as_ref().map(|f| f as &RememberKey),
        )
        .await;
    match recovered {
        Ok(key) => Ok(reply(StatusCode::OK, decrypted_json(&key))),
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
    let idem = Idem::of(&state, &headers, &who, "POST /vault/v1/keys/rekey", &bytes)?;
    if let Some(idem) = &idem
        && let Some(stored) = idem.stored(&state).await?
    {
        return idempotency::replay_key(&state, &who, &stored, None).await;
    }
    let remember = idem
        .clone()
        .map(|i| move |k: &IssuedKey| i.remember_key(StatusCode::OK, k, data_key_json));
    let rekeyed = state
        .vault
        .rekey_data_key_with(
            &who.environment,
            &blob,
            &context,
            &who.actor,
            remember.as_ref().map(|f| f as &RememberKey),
        )
        .await;
    match rekeyed {
        Ok(key) => Ok(reply(StatusCode::OK, data_key_json(&key))),
        Err(e) => match lost_race(&state, idem.as_ref(), &e).await? {
            Some(stored) => idempotency::replay_key(&state, &who, &stored, None).await,
            None => Err(data_key_error(&e)),
        },
    }
}
