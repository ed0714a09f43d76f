//! The values the store takes and returns.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use vault_crypto::KeyContext;

use crate::error::StoreError;

/// The longest object name, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 200;
/// The longest environment id, in bytes.
pub const MAX_ENVIRONMENT_LEN: usize = 64;
/// The default and the largest page size of [`ListQuery`].
pub const DEFAULT_LIMIT: u32 = 10;
/// The largest page size.
pub const MAX_LIMIT: u32 = 100;

/// Microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }

    /// RFC 3339 / ISO 8601 in UTC with microseconds: `2025-02-21T12:04:09.165291Z`.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }

    /// Parses RFC 3339 with `Z` or a numeric offset and 0 to 9 fractional digits.
    ///
    /// # Errors
    /// [`StoreError::InvalidQuery`] naming `field`.
    pub fn parse_rfc3339(s: &str, field: &'static str) -> Result<Self, StoreError> {
        let bad = || StoreError::invalid_query(field, "not an ISO 8601 timestamp");
        let b = s.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(bad());
        }
        let num = |r: std::ops::Range<usize>| -> Result<i64, StoreError> {
            let t = s.get(r).ok_or_else(bad)?;
            if !t.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            t.parse().map_err(|_| bad())
        };
        let (y, mo, d, h, mi, se) = (
            num(0..4)?,
            num(5..7)?,
            num(8..10)?,
            num(11..13)?,
            num(14..16)?,
            num(17..19)?,
        );
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return Err(bad());
        }
        let mut rest = &s[19..];
        let mut micros = 0i64;
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 9 {
                return Err(bad());
            }
            let mut value: i64 = frac[..digits].parse().map_err(|_| bad())?;
            for _ in digits..6 {
                value *= 10;
            }
            for _ in 6..digits {
                value /= 10;
            }
            micros = value;
            rest = &frac[digits..];
        }
        let offset_secs = match rest {
            "Z" | "z" => 0,
            // Byte positions are only safe to slice in ASCII (a fuzzed `-01\u{a0}5` once panicked).
            o if o.len() == 6
                && (o.starts_with('+') || o.starts_with('-'))
                && o.as_bytes()[3] == b':'
                && [1, 2, 4, 5]
                    .iter()
                    .all(|&i| o.as_bytes()[i].is_ascii_digit()) =>
            {
                let sign = if o.starts_with('-') { -1 } else { 1 };
                let oh: i64 = o[1..3].parse().map_err(|_| bad())?;
                let om: i64 = o[4..6].parse().map_err(|_| bad())?;
                sign * (oh * 3600 + om * 60)
            }
            _ => return Err(bad()),
        };
        let days = days_from_civil(y, mo, d);
        let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_secs;
        Ok(Self(secs * 1_000_000 + micros))
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Who made a change: an API key or a user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Actor {
    /// `key_…` or `user_…`.
    pub id: String,
    /// A display name.
    pub name: String,
}

impl Actor {
    /// An actor.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
        }
    }
}

/// An API key as stored: its public parts and a hash of the whole key, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// `key_…`: the actor id its requests are recorded under.
    pub id: String,
    /// The public prefix of the key's random part, to find the record without the secret.
    pub lookup: String,
    /// SHA-256 of the whole key text.
    pub hash: Vec<u8>,
    /// The one environment it can see.
    pub environment: String,
    /// A display name (the actor name).
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

impl fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyRecord")
            .field("id", &self.id)
            .field("environment", &self.environment)
            .field("name", &self.name)
            .field("created_at", &self.created_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// An object's metadata: everything but the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Opaque, URL-safe, unique: `secret_` and 32 hex digits.
    pub id: String,
    /// The environment (tenant) it belongs to.
    pub environment: String,
    /// Unique among the live objects of its environment.
    pub name: String,
    /// The key context, fixed at creation.
    pub context: KeyContext,
    /// The key that wraps the current version's data key.
    pub key_id: String,
    /// The current version.
    pub version_id: String,
    /// When the object was created.
    pub created_at: Timestamp,
    /// When the current version was written.
    pub updated_at: Timestamp,
    /// Who wrote the current version.
    pub updated_by: Actor,
}

/// An object's metadata and the envelope of its current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// The metadata.
    pub meta: ObjectMeta,
    /// The sealed value of the current version.
    pub envelope: Vec<u8>,
}

/// A version to write.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// The sealed value.
    pub envelope: Vec<u8>,
    /// The plaintext's size in bytes.
    pub size: u64,
    /// The key that wraps its data key (the first wrapped key's reference).
    pub key_id: String,
}

/// One version of an object, newest first in listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMeta {
    /// The version id.
    pub id: String,
    /// When it was written.
    pub created_at: Timestamp,
    /// Who wrote it.
    pub created_by: Actor,
    /// The plaintext's size in bytes.
    pub size: u64,
    /// 32 hex digits identifying the stored bytes (a hash of the envelope, not of the value).
    pub etag: String,
    /// Whether it is the current version.
    pub current: bool,
}

/// One stored version, for maintenance scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// The object.
    pub object_id: String,
    /// Its environment.
    pub environment: String,
    /// The version's number within the object (1, 2, ...).
    pub seq: i64,
    /// The object's key context.
    pub context: KeyContext,
    /// The sealed value.
    pub envelope: Vec<u8>,
}

/// Listing order, by `updated_at` then id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first (the default).
    #[default]
    Desc,
}

impl std::str::FromStr for Order {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "asc" => Ok(Self::Asc),
            "desc" => Ok(Self::Desc),
            _ => Err(StoreError::invalid_query("order", "must be asc or desc")),
        }
    }
}

/// A position in a listing: after (or before) the object with this `updated_at` and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The object's `updated_at`.
    pub updated_at: Timestamp,
    /// The object's id.
    pub id: String,
}

impl Cursor {
    /// The opaque text form handed to clients.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("v1.{}.{}", self.updated_at.0, self.id))
    }

    /// Parses the text form.
    ///
    /// # Errors
    /// [`StoreError::InvalidQuery`] naming `field` for anything [`encode`](Self::encode) did
    /// not produce.
    pub fn decode(s: &str, field: &'static str) -> Result<Self, StoreError> {
        let bad = || StoreError::invalid_query(field, "malformed cursor");
        if s.len() > 256 {
            return Err(bad());
        }
        let raw = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let rest = text.strip_prefix("v1.").ok_or_else(bad)?;
        let (micros, id) = rest.split_once('.').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        if !is_object_id(id) {
            return Err(bad());
        }
        Ok(Self {
            updated_at: Timestamp(micros),
            id: id.to_owned(),
        })
    }
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Page size, 1 to 100; default 10.
    pub limit: Option<u32>,
    /// Items before this cursor (in the listing's order).
    pub before: Option<Cursor>,
    /// Items after this cursor.
    pub after: Option<Cursor>,
    /// By `updated_at` then id.
    pub order: Order,
    /// Case-insensitive substring of the name.
    pub search: Option<String>,
    /// Only objects updated after this time.
    pub updated_after: Option<Timestamp>,
}

/// One entry of a listing: metadata only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListItem {
    /// The object id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// When its current version was written.
    pub updated_at: Timestamp,
}

/// A page of a listing, with the cursors to the neighbouring pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The items.
    pub data: Vec<ListItem>,
    /// Cursor for the previous page, if there are items before this one.
    pub before: Option<String>,
    /// Cursor for the next page, if there are items after this one.
    pub after: Option<String>,
}

/// An audit event, written in the same transaction as the change it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// `vault.data.created`, `vault.data.read`, ...
    pub event: String,
    /// The environment.
    pub environment: String,
    /// Who did it.
    pub actor: Actor,
    /// The object, where there is one.
    pub object_id: Option<String>,
    /// Its name.
    pub object_name: Option<String>,
    /// The key, where one was used.
    pub key_id: Option<String>,
    /// The key context, where there is one (never the value).
    pub key_context: Option<String>,
    /// When.
    pub occurred_at: Timestamp,
}

/// How much is wrapped under one key reference (`managed://root#v1`, `aws-kms://…`): what
/// destroying that key would make unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyUsage {
    /// The key reference.
    pub key_id: String,
    /// Stored object versions (of live and deleted, not yet purged, objects) whose data key it
    /// wraps.
    pub stored_versions: u64,
    /// Data keys issued under it through the data-key API (`vault.dek.read` and
    /// `vault.dek.rekeyed` events): their holders keep the blobs, so none is known to be gone.
    pub issued_data_keys: u64,
}

impl KeyUsage {
    /// No use of `key_id`.
    pub fn new(key_id: impl Into<String>) -> Self {
        Self {
            key_id: key_id.into(),
            stored_versions: 0,
            issued_data_keys: 0,
        }
    }
}

/// Audit event names.
pub mod events {
    /// An object was created.
    pub const DATA_CREATED: &str = "vault.data.created";
    /// An object got a new version.
    pub const DATA_UPDATED: &str = "vault.data.updated";
    /// An object's value was read.
    pub const DATA_READ: &str = "vault.data.read";
    /// An object was deleted.
    pub const DATA_DELETED: &str = "vault.data.deleted";
    /// An object's metadata (or versions) was read.
    pub const METADATA_READ: &str = "vault.metadata.read";
    /// Object names were listed.
    pub const NAMES_LISTED: &str = "vault.names.listed";
    /// A data key issued by the data-key API.
    pub const DEK_READ: &str = "vault.dek.read";
    /// An issued data key recovered.
    pub const DEK_DECRYPTED: &str = "vault.dek.decrypted";
    /// An issued data key bound to a new context.
    pub const DEK_REKEYED: &str = "vault.dek.rekeyed";
    /// A stored version's data key was wrapped again (a key rotation's rewrap). Ours: WorkOS
    /// has no such event.
    pub const DATA_REWRAPPED: &str = "vault.data.rewrapped";
    /// A deleted object was removed for good with its versions. Ours: WorkOS has no such event.
    pub const DATA_PURGED: &str = "vault.data.purged";
}

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
    getrandom::fill(&mut b).map_err(|_| StoreError::Unavailable {
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

pub(crate) fn new_version_id() -> Result<String, StoreError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<24>()?))
}

pub(crate) fn etag(envelope: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(envelope)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_rfc3339() {
        for t in [
            0i64,
            1_718_447_400_000_000,
            1_740_139_449_165_291,
            -1,
            951_782_400_123_456,
        ] {
            let text = Timestamp(t).to_rfc3339();
            assert_eq!(
                Timestamp::parse_rfc3339(&text, "t").unwrap(),
                Timestamp(t),
                "{text}"
            );
        }
        assert_eq!(
            Timestamp(1_740_139_449_165_291).to_rfc3339(),
            "2025-02-21T12:04:09.165291Z"
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2024-06-15T12:30:00+02:00", "t").unwrap(),
            Timestamp::parse_rfc3339("2024-06-15T10:30:00.000Z", "t").unwrap()
        );
        for bad in [
            "",
            "2024-06-15",
            "2024-13-01T00:00:00Z",
            "2024-06-15T10:30:00",
            "x024-06-15T10:30:00Z",
            "2024-06-15T10:30:00.Z",
            "9999-12-31T23:59:59-01\u{a0}5",
            "2024-06-15T10:30:00++1:00",
            "2024-06-15T10:30:00-0é:00",
        ] {
            assert!(Timestamp::parse_rfc3339(bad, "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            updated_at: Timestamp(42),
            id: "secret_51B0AC67C2FB4247AC5ABDDD3C701BDC".into(),
        };
        assert_eq!(Cursor::decode(&c.encode(), "after").unwrap(), c);
        for bad in [
            "",
            "!!",
            "djEuNDI",
            &URL_SAFE_NO_PAD.encode("v1.x.secret_51B0AC67C2FB4247AC5ABDDD3C701BDC"),
            &URL_SAFE_NO_PAD.encode("v1.1.other"),
        ] {
            assert!(Cursor::decode(bad, "after").is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(validate_name("  a/b  ").unwrap(), "a/b");
        assert!(validate_name("   ").is_err());
        assert!(validate_name(&"é".repeat(200)).is_ok());
        assert!(validate_name(&"é".repeat(201)).is_err());
        assert!(validate_name("a\nb").is_err());
    }
}
