//! The key context: 1 to 10 string pairs that choose the keys and are bound into every
//! ciphertext. Specified in `docs/FORMAT.md`, section "Key context".

// A parser of outside bytes: no index or arithmetic that can panic or wrap.
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use sha2::{Digest, Sha256};

use crate::error::ContextError;

mod reserved;

use reserved::Origin;
pub use reserved::{RESERVED_KEYS, Reserved};

/// At most this many pairs.
pub const MAX_PAIRS: usize = 10;
/// A key is at most this many bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 128;
/// A value is at most this many characters (Unicode scalar values), the WorkOS limit.
pub const MAX_VALUE_CHARS: usize = 500;
/// JSON input is at most this many bytes.
pub const MAX_JSON_BYTES: usize = 16 * 1024;
/// The version byte that starts the canonical form.
pub const CANONICAL_VERSION: u8 = 1;
/// The longest canonical form: version, count, and ten maximal pairs (a character is at most 4
/// bytes of UTF-8).
pub const MAX_CANONICAL_BYTES: usize =
    2 + MAX_PAIRS * (2 + MAX_KEY_BYTES + 2 + 4 * MAX_VALUE_CHARS);

/// A validated key context in canonical form.
///
/// Two contexts are equal exactly when their canonical bytes are equal, which is exactly when
/// they hold the same pairs, whatever the order they were given in.
///
/// ```
/// use vault_crypto::KeyContext;
/// let a = KeyContext::parse_json(br#"{"organization_id":"org_1","user_id":"u_9"}"#)?;
/// let b = KeyContext::from_pairs([("user_id", "u_9"), ("organization_id", "org_1")])?;
/// assert_eq!(a, b);
/// assert_eq!(a.canonical_bytes(), b.canonical_bytes());
/// assert!(KeyContext::parse_json(br#"{"a":"1","a":"2"}"#).is_err());
/// # Ok::<(), vault_crypto::ContextError>(())
/// ```
///
/// A context parsed from a caller's input cannot hold the vault's [`RESERVED_KEYS`]: those
/// contexts are built only by [`KeyContext::reserved`].
#[derive(Clone)]
pub struct KeyContext {
    /// Sorted by key bytes, keys unique. Shared by clones: a context is cloned into every
    /// opened value and every cache entry, and a clone costs no allocation.
    pairs: Arc<[(String, String)]>,
    /// The canonical form, computed once: it is used as associated data several times per seal.
    canonical: Arc<[u8]>,
    /// Where it came from: only a context the vault built itself may hold reserved keys and
    /// still seal. Not part of equality (two contexts are equal when their bytes are).
    origin: Origin,
}

impl PartialEq for KeyContext {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}

impl Eq for KeyContext {}

impl std::hash::Hash for KeyContext {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.canonical.hash(state);
    }
}

impl KeyContext {
    /// Parses a JSON object of 1 to [`MAX_PAIRS`] string values, strictly.
    ///
    /// # Errors
    /// A [`ContextError`] for input over [`MAX_JSON_BYTES`], invalid UTF-8 or JSON, anything but
    /// an object, duplicate keys, non-string values, a reserved key
    /// ([`ContextError::ReservedKey`]) and every limit on pairs, keys and values.
    pub fn parse_json(input: &[u8]) -> Result<Self, ContextError> {
        if input.len() > MAX_JSON_BYTES {
            return Err(ContextError::InputTooLarge {
                max: MAX_JSON_BYTES,
            });
        }
        let text = std::str::from_utf8(input).map_err(|_| ContextError::InvalidUtf8)?;
        let mut found = None;
        let mut de = serde_json::Deserializer::from_str(text);
        let parsed = PairsSeed { error: &mut found }.deserialize(&mut de);
        let pairs = match parsed {
            Ok(pairs) => pairs,
            Err(e) => return Err(found.unwrap_or_else(|| from_json_error(&e))),
        };
        de.end().map_err(|e| from_json_error(&e))?;
        Ok(Self::from_validated(pairs, Origin::Caller))
    }

    /// Builds a context from pairs given in code, with the same rules as [`parse_json`](Self::parse_json).
    ///
    /// # Errors
    /// A [`ContextError`] for duplicate keys, a reserved key and every limit on pairs, keys and
    /// values.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, ContextError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut validated = Vec::new();
        for (key, value) in pairs {
            push_pair(&mut validated, key.into(), value.into())?;
        }
        if validated.is_empty() {
            return Err(ContextError::Empty);
        }
        Ok(Self::from_validated(validated, Origin::Caller))
    }

    /// Parses the canonical bytes produced by [`canonical_bytes`](Self::canonical_bytes).
    ///
    /// Decoders reject anything that is not exactly the canonical encoding of a valid context:
    /// unsorted or repeated keys, trailing bytes, and every limit of [`parse_json`](Self::parse_json).
    /// Reserved keys decode (an envelope sealed by the vault for itself carries them), but such
    /// a context does not [seal](crate::seal): only [`KeyContext::reserved`] builds one that
    /// does.
    ///
    /// # Errors
    /// [`ContextError::UnsupportedVersion`], [`ContextError::Malformed`] or a rule violation.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, ContextError> {
        // FORMAT.md "Key context": version || count || (u16 klen || key || u16 vlen || value)*
        const TRUNCATED: ContextError = ContextError::Malformed {
            reason: "truncated",
        };
        if bytes.len() > MAX_CANONICAL_BYTES {
            return Err(ContextError::Malformed {
                reason: "longer than the longest valid context",
            });
        }
        let (&version, rest) = bytes.split_first().ok_or(TRUNCATED)?;
        if version != CANONICAL_VERSION {
            return Err(ContextError::UnsupportedVersion { version });
        }
        let (&count, mut rest) = rest.split_first().ok_or(TRUNCATED)?;
        let count = usize::from(count);
        if count == 0 {
            return Err(ContextError::Empty);
        }
        if count > MAX_PAIRS {
            return Err(ContextError::TooManyPairs { max: MAX_PAIRS });
        }
        let mut pairs: Vec<(String, String)> = Vec::with_capacity(count);
        for _ in 0..count {
            let key = take_str(&mut rest).ok_or(TRUNCATED)??;
            let value = take_str(&mut rest).ok_or(TRUNCATED)??;
            validate_key(key)?;
            validate_value(key, value)?;
            if let Some((last, _)) = pairs.last()
                && last.as_bytes() >= key.as_bytes()
            {
                return Err(ContextError::Malformed {
                    reason: "keys not in strictly ascending byte order",
                });
            }
            pairs.push((key.to_owned(), value.to_owned()));
        }
        if !rest.is_empty() {
            return Err(ContextError::Malformed {
                reason: "trailing bytes",
            });
        }
        Ok(Self {
            pairs: pairs.into(),
            canonical: bytes.into(),
            origin: Origin::Decoded,
        })
    }

    /// The canonical bytes: the associated data of every seal and wrap with this context.
    pub fn canonical_bytes(&self) -> &[u8] {
        &self.canonical
    }

    /// SHA-256 of the canonical bytes: a stable, fixed-size identifier of the context.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(&self.canonical).into()
    }

    /// The pairs, sorted by key bytes.
    pub fn pairs(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value for `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .binary_search_by(|(k, _)| k.as_bytes().cmp(key.as_bytes()))
            .ok()
            .and_then(|i| self.pairs.get(i))
            .map(|(_, v)| v.as_str())
    }

    /// Whether every one of `pairs` is present in the context with that value: how a routing
    /// rule and a rewrap's `--match` select contexts (an empty list selects every context).
    pub fn contains_all<'a>(&self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        pairs.into_iter().all(|(k, v)| self.get(k) == Some(v))
    }

    /// Number of pairs (1 to [`MAX_PAIRS`]).
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Always false: a context has at least one pair. Present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The context as a compact JSON object with keys in canonical order.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn from_validated(mut pairs: Vec<(String, String)>, origin: Origin) -> Self {
        pairs.sort_unstable_by(|(a, _), (b, _)| a.as_bytes().cmp(b.as_bytes()));
        let canonical = encode_canonical(&pairs);
        Self {
            pairs: pairs.into(),
            canonical: canonical.into(),
            origin,
        }
    }
}

/// Reads `u16 length || bytes` as UTF-8. `None` if truncated.
fn take_str<'a>(rest: &mut &'a [u8]) -> Option<Result<&'a str, ContextError>> {
    let (len, tail) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    let (bytes, tail) = tail.split_at_checked(len)?;
    *rest = tail;
    Some(
        std::str::from_utf8(bytes).map_err(|_| ContextError::Malformed {
            reason: "invalid UTF-8",
        }),
    )
}

// At most 10 pairs of bounded keys and values (checked before this is called).
#[allow(clippy::arithmetic_side_effects)]
fn encode_canonical(pairs: &[(String, String)]) -> Vec<u8> {
    let len = 2 + pairs
        .iter()
        .map(|(k, v)| 4 + k.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(CANONICAL_VERSION);
    // Validation caps pairs at 10, keys at 128 bytes and values at 2000 bytes: these fit.
    out.push(u8::try_from(pairs.len()).unwrap_or(u8::MAX));
    for (k, v) in pairs {
        for field in [k, v] {
            out.extend_from_slice(&u16::try_from(field.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
    }
    out
}

/// A short, escaped form of a key for error messages: keys are public metadata, but may be long.
fn key_for_error(key: &str) -> String {
    const SHOWN: usize = 64;
    let mut shown: String = key
        .chars()
        .take(SHOWN)
        .flat_map(char::escape_debug)
        .collect();
    if key.chars().nth(SHOWN).is_some() {
        shown.push('…');
    }
    shown
}

fn validate_key(key: &str) -> Result<(), ContextError> {
    if key.is_empty() {
        return Err(ContextError::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ContextError::KeyTooLong {
            key: key_for_error(key),
            max: MAX_KEY_BYTES,
        });
    }
    if key.chars().any(char::is_control) {
        return Err(ContextError::ControlCharacter {
            key: key_for_error(key),
        });
    }
    Ok(())
}

fn validate_value(key: &str, value: &str) -> Result<(), ContextError> {
    if value.is_empty() {
        return Err(ContextError::EmptyValue {
            key: key_for_error(key),
        });
    }
    // Four bytes per character at most: only long values need counting.
    if value.len() > MAX_VALUE_CHARS && value.chars().count() > MAX_VALUE_CHARS {
        return Err(ContextError::ValueTooLong {
            key: key_for_error(key),
            max: MAX_VALUE_CHARS,
        });
    }
    Ok(())
}

/// Validates one pair of a caller's context and appends it, rejecting reserved keys,
/// duplicates and a pair past the limit.
fn push_pair(
    pairs: &mut Vec<(String, String)>,
    key: String,
    value: String,
) -> Result<(), ContextError> {
    validate_key(&key)?;
    reserved::refuse(&key)?;
    push_valid_key(pairs, key, value)
}

/// Appends a pair whose key passed [`validate_key`], rejecting duplicates and a pair past the
/// limit.
fn push_valid_key(
    pairs: &mut Vec<(String, String)>,
    key: String,
    value: String,
) -> Result<(), ContextError> {
    if pairs.iter().any(|(k, _)| *k == key) {
        return Err(ContextError::DuplicateKey {
            key: key_for_error(&key),
        });
    }
    if pairs.len() == MAX_PAIRS {
        return Err(ContextError::TooManyPairs { max: MAX_PAIRS });
    }
    validate_value(&key, &value)?;
    pairs.push((key, value));
    Ok(())
}

fn from_json_error(e: &serde_json::Error) -> ContextError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => ContextError::NotAnObject,
        Category::Syntax | Category::Eof | Category::Io => ContextError::Syntax {
            line: e.line(),
            column: e.column(),
        },
    }
}

/// Deserializes a map of strings, stopping at the first broken rule. The typed error is left in
/// `error` because serde's error type can only carry a message.
struct PairsSeed<'e> {
    error: &'e mut Option<ContextError>,
}

impl<'de> DeserializeSeed<'de> for PairsSeed<'_> {
    type Value = Vec<(String, String)>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PairsSeed<'_> {
    type Value = Vec<(String, String)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of string values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut pairs = Vec::new();
        let mut fail = |e: ContextError| {
            let message = e.to_string();
            *self.error = Some(e);
            de::Error::custom(message)
        };
        while let Some(key) = map.next_key::<String>()? {
            let value = match map.next_value::<MaybeString>()? {
                MaybeString::Str(v) => v,
                MaybeString::Other => {
                    // Report the key's own problems first, then the value's type.
                    validate_key(&key).map_err(&mut fail)?;
                    return Err(fail(ContextError::NotAString {
                        key: key_for_error(&key),
                    }));
                }
            };
            push_pair(&mut pairs, key, value).map_err(&mut fail)?;
        }
        if pairs.is_empty() {
            return Err(fail(ContextError::Empty));
        }
        Ok(pairs)
    }
}

/// A JSON value that is either a string or something else (consumed and dropped).
enum MaybeString {
    Str(String),
    Other,
}

impl<'de> de::Deserialize<'de> for MaybeString {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeString::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(MaybeString::Str(v))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeString::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeString::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeString::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeString::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MaybeString::Other)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeString::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeString::Other)
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Debug for KeyContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyContext")?;
        f.debug_map().entries(self.pairs()).finish()
    }
}

impl fmt::Display for KeyContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl serde::Serialize for KeyContext {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.pairs())
    }
}

impl<'de> serde::Deserialize<'de> for KeyContext {
    /// Deserializes with every rule of [`KeyContext::parse_json`] except the input size limit,
    /// which belongs to whoever reads the input.
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut found = None;
        let pairs = PairsSeed { error: &mut found }.deserialize(d)?;
        Ok(Self::from_validated(pairs, Origin::Caller))
    }
}

impl std::str::FromStr for KeyContext {
    type Err = ContextError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_json(s.as_bytes())
    }
}

#[cfg(test)]
mod tests;
