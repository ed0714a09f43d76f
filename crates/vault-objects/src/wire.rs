//! The WorkOS Vault wire form of what the vault answers: the JSON of an object's metadata and
//! of a data key. The server replies with it, and an idempotent answer is stored as these bytes,
//! rendered here before the change that stores it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use vault_crypto::KeyContext;
use vault_crypto::issued::IssuedKey;
use vault_store::ObjectMeta;

/// A key context as a JSON object of its pairs.
pub fn context(ctx: &KeyContext) -> Value {
    Value::Object(
        ctx.pairs()
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect(),
    )
}

/// An object's metadata (`POST /vault/v1/kv`'s answer, and `metadata` elsewhere).
pub fn object_metadata(m: &ObjectMeta) -> Value {
    json!({
        "context": context(&m.context),
        "created_at": m.created_at.to_rfc3339(),
        "environment_id": m.environment,
        "id": m.id,
        "key_id": m.key_id,
        "updated_at": m.updated_at.to_rfc3339(),
        "updated_by": { "id": m.updated_by.id, "name": m.updated_by.name },
        "version_id": m.version_id,
    })
}

/// A data key handed out (`POST /vault/v1/keys/data-key` and `…/rekey`).
pub fn data_key(k: &IssuedKey) -> Value {
    json!({
        "context": context(k.context()),
        "data_key": STANDARD.encode(k.data_key().expose_secret()),
        "encrypted_keys": STANDARD.encode(k.encrypted_keys()),
        "id": k.id(),
    })
}

/// A data key recovered (`POST /vault/v1/keys/decrypt`).
pub fn decrypted_key(k: &IssuedKey) -> Value {
    json!({
        "data_key": STANDARD.encode(k.data_key().expose_secret()),
        "id": k.id(),
    })
}

/// `v` as the bytes of an answer.
pub fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// The stored form of a data-key answer: without `data_key`, so no key material is ever at
/// rest in the store (a replay recovers it again).
pub fn without_data_key(mut v: Value) -> Vec<u8> {
    if let Some(map) = v.as_object_mut() {
        map.remove("data_key");
    }
    to_bytes(&v)
}
