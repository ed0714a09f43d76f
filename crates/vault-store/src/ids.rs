//! Names, environments and ids: what they may hold, and fresh random ones.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::StoreError;
use crate::time::Timestamp;

/// The longest object name, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 200;
/// The longest environment id, in bytes.
pub const MAX_ENVIRONMENT_LEN: usize = 64;

/// Validates and trims a name: 1 to 200 characters after trimming, no control characters.
///
/// # Errors
/// [`StoreError::InvalidArgument`] for `name`.
pub fn validate_name(name: &str) -> Result<&str, StoreError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(StoreError::invalid("name", "must not be empty"));
    }
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(StoreError::invalid("name", "longer than 200 characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(StoreError::invalid("name", "contains a control character"));
    }
    Ok(trimmed)
}

/// Validates an organization id given with a new object: as a key context's value (1 to 500
/// characters), and without control characters.
///
/// # Errors
/// [`StoreError::InvalidArgument`] for `organization_id`.
pub fn validate_organization_id(org: &str) -> Result<(), StoreError> {
    if org.is_empty() {
        return Err(StoreError::invalid("organization_id", "must not be empty"));
    }
    if org.chars().count() > 500 {
        return Err(StoreError::invalid(
            "organization_id",
            "longer than 500 characters",
        ));
    }
    if org.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            "organization_id",
            "contains a control character",
        ));
    }
    Ok(())
}

/// Validates an environment id: 1 to 64 bytes of `[A-Za-z0-9_-]`.
///
/// # Errors
/// [`StoreError::InvalidArgument`] for `environment`.
pub fn validate_environment(env: &str) -> Result<(), StoreError> {
    let ok = !env.is_empty()
        && env.len() <= MAX_ENVIRONMENT_LEN
        && env
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "environment",
            "must be 1 to 64 of [A-Za-z0-9_-]",
        ))
    }
}

/// Whether `id` has the shape of an object id.
pub fn is_object_id(id: &str) -> bool {
    id.strip_prefix("secret_").is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    })
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut b = [0u8; N];
    vault_crypto::random::fill(&mut b).map_err(|_| StoreError::Unavailable {
        reason: "the operating system's random number generator failed".into(),
    })?;
    Ok(b)
}

/// A fresh object id: `secret_` and 32 random upper-case hex digits.
///
/// # Errors
/// `Unavailable` if the OS random number generator fails.
pub fn new_object_id() -> Result<String, StoreError> {
    Ok(format!(
        "secret_{}",
        hex::encode_upper(random_bytes::<16>()?)
    ))
}

/// Whether `id` has the shape of a blob id.
pub fn is_blob_id(id: &str) -> bool {
    id.strip_prefix("blob_").is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    })
}

/// A fresh blob id: `blob_` and 32 random upper-case hex digits.
///
/// # Errors
/// `Unavailable` if the OS random number generator fails.
pub fn new_blob_id() -> Result<String, StoreError> {
    Ok(format!("blob_{}", hex::encode_upper(random_bytes::<16>()?)))
}

/// A fresh version id: 32 characters of URL-safe base64 (192 random bits).
///
/// # Errors
/// `Unavailable` if the OS random number generator fails.
pub fn new_version_id() -> Result<String, StoreError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<24>()?))
}

/// Whether `id` has the shape of a version id.
pub fn is_version_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A fresh public event id: `event_` and a ULID (26 characters of Crockford base32: 48 bits of
/// the event's time in milliseconds, then 80 random bits), the shape of WorkOS's event ids.
/// Random rather than the row's sequence number, which would tell one tenant how many events
/// all the others made.
///
/// # Errors
/// `Unavailable` if the OS random number generator fails.
pub(crate) fn new_event_id(at: Timestamp) -> Result<String, StoreError> {
    const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let millis = u128::from(u64::try_from(at.0 / 1000).unwrap_or(0) & 0xFFFF_FFFF_FFFF);
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&random_bytes::<10>()?);
    let value = (millis << 80) | u128::from_be_bytes(random);
    let mut id = String::with_capacity(32);
    id.push_str("event_");
    for i in (0..26).rev() {
        id.push(char::from(CROCKFORD[((value >> (5 * i)) & 31) as usize]));
    }
    Ok(id)
}

/// Whether `id` has the shape of an event id (a ULID's, or a migrated event's 26 digits).
pub fn is_event_id(id: &str) -> bool {
    id.strip_prefix("event_").is_some_and(|rest| {
        rest.len() == 26
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    })
}

pub(crate) fn etag(envelope: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(envelope)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(validate_name("  a/b  ").unwrap(), "a/b");
        assert!(validate_name("   ").is_err());
        assert!(validate_name(&"é".repeat(200)).is_ok());
        assert!(validate_name(&"é".repeat(201)).is_err());
        assert!(validate_name("a\nb").is_err());
    }
}
