//! Errors.
//!
//! Failures on public input are typed, so a caller can tell a bad context from a truncated
//! envelope. Every failure after secrets are involved (a wrong key, a tampered tag, a commitment
//! mismatch) is the single, detail-free [`Error::DecryptionFailed`]. No error ever carries key
//! bytes, plaintext or a context *value*; they name the offending context *key* and the limit.

mod provider;
pub use provider::*;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key context was rejected.
    #[error("invalid key context: {0}")]
    Context(#[from] ContextError),
    /// The envelope is not well formed (its public structure, before any key is used).
    #[error("invalid envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// A key provider failed or refused.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// No configured provider owns any of the envelope's wrapped keys.
    #[error("no key provider owns the wrapped key {key_ref}")]
    NoProvider {
        /// The first key reference of the envelope (public metadata, never secret).
        key_ref: String,
    },
    /// The managed key ring could not be loaded, stored or changed.
    #[error(transparent)]
    KeyRing(#[from] KeyRingError),
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Random,
    /// The plaintext is larger than one envelope may hold.
    #[error("the plaintext is larger than {max} bytes")]
    PlaintextTooLarge {
        /// The limit in bytes.
        max: usize,
    },
    /// A streamed seal was asked for segments of a size outside the format's range.
    #[error("the segment size must be from {min} to {max} bytes")]
    SegmentSize {
        /// The smallest segment size.
        min: u32,
        /// The largest segment size.
        max: u32,
    },
    /// The AEAD refused to seal (a backend failure; never caused by the input).
    #[error("encryption failed")]
    EncryptionFailed,
    /// The envelope was sealed for another key context than the one it must carry
    /// ([`open`](crate::open)); nothing was unwrapped or decrypted.
    #[error("the envelope was sealed for another key context")]
    ContextMismatch,
    /// A [`blocking`](crate::blocking) function was given a provider that needs an async
    /// runtime (it calls a key service); nothing was done.
    #[error(
        "this key provider needs an async runtime (it calls a key service): use the async functions"
    )]
    NeedsRuntime,
    /// Decryption failed: wrong key, wrong context or associated data, or tampered bytes.
    ///
    /// Deliberately without detail, so it cannot serve as an oracle.
    #[error("decryption failed")]
    DecryptionFailed,
}

/// A key context that breaks a rule. Names the offending key and the limit, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The JSON input exceeds the size limit.
    #[error("the key context JSON is larger than {max} bytes")]
    InputTooLarge {
        /// The limit in bytes.
        max: usize,
    },
    /// The JSON input is not valid UTF-8.
    #[error("the key context JSON is not valid UTF-8")]
    InvalidUtf8,
    /// The input is not syntactically valid JSON.
    #[error("the key context is not valid JSON (line {line}, column {column})")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// The JSON value is not an object.
    #[error("the key context must be a JSON object of string values")]
    NotAnObject,
    /// The context has no pairs.
    #[error("the key context must have at least 1 pair")]
    Empty,
    /// The context has more pairs than allowed.
    #[error("the key context has more than {max} pairs")]
    TooManyPairs {
        /// The limit.
        max: usize,
    },
    /// The same key appears twice.
    #[error("duplicate key context key {key:?}")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// A key is the empty string.
    #[error("a key context key is empty")]
    EmptyKey,
    /// A key is reserved for the vault's own use ([`RESERVED_KEYS`](crate::RESERVED_KEYS)): a
    /// caller's context cannot hold it, and a context decoded from bytes that holds it does
    /// not seal.
    #[error("key context key {key:?} is reserved")]
    ReservedKey {
        /// The key.
        key: String,
    },
    /// A key is longer than allowed.
    #[error("key context key {key:?} is longer than {max} bytes")]
    KeyTooLong {
        /// The first characters of the key.
        key: String,
        /// The limit in bytes.
        max: usize,
    },
    /// A key contains a control character.
    #[error("key context key {key:?} contains a control character")]
    ControlCharacter {
        /// The key, with control characters escaped.
        key: String,
    },
    /// A value is not a JSON string.
    #[error("the value of key context key {key:?} is not a string")]
    NotAString {
        /// The key whose value is not a string.
        key: String,
    },
    /// A value is the empty string.
    #[error("the value of key context key {key:?} is empty")]
    EmptyValue {
        /// The key whose value is empty.
        key: String,
    },
    /// A value is longer than allowed.
    #[error("the value of key context key {key:?} is longer than {max} characters")]
    ValueTooLong {
        /// The key whose value is too long.
        key: String,
        /// The limit in characters.
        max: usize,
    },
    /// Canonical bytes with an unknown format version.
    #[error("unsupported canonical key context version {version}")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// Canonical bytes that are not in canonical form.
    #[error("malformed canonical key context: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
}

/// An envelope whose public structure is wrong. Checked before any key is touched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The input ends before the structure does.
    #[error("the envelope is truncated")]
    Truncated,
    /// The input does not start with the envelope magic bytes.
    #[error("not a vault envelope (bad magic bytes)")]
    BadMagic,
    /// An envelope format version this library does not know.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// A cipher suite this library does not know.
    #[error("unsupported cipher suite {0:#06x}")]
    UnsupportedSuite(u16),
    /// A field is larger than its limit.
    #[error("{what} is larger than {max}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A field is well delimited but its content is wrong.
    #[error("malformed envelope: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// The embedded key context is not valid canonical bytes.
    #[error("the envelope's key context is invalid: {0}")]
    Context(ContextError),
    /// The text form is not canonical padded base64.
    #[error("the envelope text is not canonical base64")]
    Base64,
}

/// The managed key ring could not be loaded, stored or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    /// Reading or writing the key-ring file failed.
    #[error("key ring file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key-ring file is not valid.
    #[error("key ring file is malformed: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// A ring name that is not 1 to 64 of `[A-Za-z0-9_-]` (it names a file and a key id).
    #[error("invalid key ring name \"{name}\": a ring name is 1 to 64 of A-Z, a-z, 0-9, _ and -")]
    InvalidName {
        /// The name (its first 64 characters, escaped).
        name: String,
    },
    /// The key-ring file is readable by others than its owner.
    #[error("key ring file {path} must not be accessible to group or others (mode {mode:o})")]
    Permissions {
        /// The file.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
    /// No such key version.
    #[error("key version {0} does not exist")]
    UnknownVersion(u32),
    /// The key version has been destroyed.
    #[error("key version {0} has been destroyed")]
    Destroyed(u32),
    /// The primary version cannot be destroyed; rotate first.
    #[error("key version {0} is the primary version; rotate before destroying it")]
    DestroyPrimary(u32),
    /// The minimum decryption version cannot be above the primary version.
    #[error("minimum decryption version {min} is above the primary version {primary}")]
    MinAbovePrimary {
        /// The requested minimum.
        min: u32,
        /// The primary version.
        primary: u32,
    },
    /// There is no ring where one was expected.
    #[error("no key ring at {location}")]
    Missing {
        /// Where it was looked for (a file, a store).
        location: String,
    },
    /// The stored ring is older than the one this process already uses: it was restored from a
    /// backup or replaced by hand. Refused, because an older ring can bring back destroyed keys
    /// and lose versions that data is wrapped under.
    #[error(
        "the stored key ring (generation {stored}) is older than the one in use (generation {held}); was it restored from a backup? Restart every process that uses it to accept it"
    )]
    RolledBack {
        /// The generation in use.
        held: u64,
        /// The generation found in the store.
        stored: u64,
    },
    /// The stored ring is not the one in use: a version is missing, has another key, or is
    /// back after being destroyed (the ring was recreated after its file was lost, or copied
    /// from elsewhere). Refused: using it would seal under keys no other process has, or open
    /// what was shredded.
    #[error(
        "the key ring at {location} was replaced by another ring (a version is missing, has another key, or was destroyed and is back); refusing to use it"
    )]
    Replaced {
        /// Where the ring lives.
        location: String,
    },
    /// Other processes kept changing the ring; nothing was changed. Try again.
    #[error("the key ring is being changed by other processes; nothing was changed, try again")]
    Busy,
    /// A root key could not be sealed or unsealed: the seal key is wrong, missing, disabled
    /// or unreachable, or the sealed bytes were changed.
    #[error("cannot {action} key ring {ring:?} v{version} with the seal {seal}: {reason}")]
    Seal {
        /// `seal` or `unseal`.
        action: &'static str,
        /// The ring.
        ring: String,
        /// The version.
        version: u32,
        /// What seals (a master key's fingerprint, a KMS key).
        seal: String,
        /// Why, without any key material.
        reason: String,
    },
    /// A ring kept in a database fails its integrity tag: its primary, minimum version,
    /// generation or versions were changed by someone who can write the database.
    #[error(
        "the key ring in {location} fails its integrity check (changed by someone who can write the database): refused"
    )]
    Tampered {
        /// Where the ring is.
        location: String,
    },
    /// The integrity key (`crate::integrity`) could not be sealed or unsealed: as for a root
    /// key.
    #[error("cannot {action} the integrity key (table integrity) with the seal {seal}: {reason}")]
    IntegritySeal {
        /// `seal` or `unseal`.
        action: &'static str,
        /// What seals.
        seal: String,
        /// Why, without any key material.
        reason: String,
    },
    /// The database that holds the ring failed or cannot be reached.
    #[error("the key ring's database: {reason}")]
    Store {
        /// What failed.
        reason: String,
    },
    /// A ring exists already where one was to be created or copied.
    #[error("a key ring already exists at {location}")]
    Exists {
        /// Where.
        location: String,
    },
    /// The store holds data wrapped under a managed ring it does not hold (the ring is still
    /// in a file): creating a new ring there would leave that data unreadable.
    #[error(
        "the store holds data under managed://{ring} keys but no key ring {ring:?}; move the file ring into the database with `vault keys migrate-ring` rather than creating a new one"
    )]
    NotMigrated {
        /// The ring.
        ring: String,
    },
    /// The ring is not where this process looks for it, but the store holds it or data
    /// under it: a new ring here would seal under keys no other process has and open none of
    /// that data.
    #[error(
        "the store holds the key ring {ring:?} or data under managed://{ring} keys, but its file is missing: give --seal if the ring was moved into the database, or restore the file from a backup (a new ring would not open that data)"
    )]
    Lost {
        /// The ring.
        ring: String,
    },
    /// The key ring has reached its maximum number of versions.
    #[error("the key ring has reached its limit of {0} versions")]
    TooManyVersions(u32),
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Random,
}

/// A provider's configuration that cannot work: a malformed key name, an unknown algorithm or
/// credential source. The message names the rule, never a secret. It converts into a
/// [`ProviderError`] of kind [`ProviderErrorKind::Configuration`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{rule}")]
pub struct ConfigError {
    /// The scheme of the provider.
    pub scheme: &'static str,
    /// The rule that was broken, as a sentence fragment (`key_name must be …`).
    pub rule: &'static str,
}

impl From<ConfigError> for ProviderError {
    fn from(e: ConfigError) -> Self {
        Self::new(ProviderErrorKind::Configuration, e.scheme, e.rule)
    }
}
