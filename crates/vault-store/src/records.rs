use async_trait::async_trait;

use crate::{
    ApiKeyRecord, ByokConfig, Delivery, IntegrityRecord, RecordChange, StoreError, Timestamp,
    WebhookEndpoint,
};

/// The runtime BYOK providers and rules (`vault byok`): one sealed document replaced whole by
/// compare-and-swap, and its generation, which every process polls to follow it.
#[async_trait]
pub trait ByokStore: Send + Sync + std::fmt::Debug {
    /// The document's generation (0 before the first): polling it is how a process learns
    /// that its router is stale (one indexed row read).
    ///
    /// # Errors
    /// `Unavailable`.
    async fn byok_generation(&self) -> Result<u64, StoreError>;

    /// The document, if there has been one.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn byok_config(&self) -> Result<Option<ByokConfig>, StoreError>;

    /// Replaces the document if its generation is still `expected_generation` (0: there is
    /// none); `config.generation` must be the next one. The integrity record takes `record`
    /// (the new generation) in the same transaction.
    ///
    /// # Errors
    /// `Conflict::ByokChanged` if another change (of the document or the record) landed first;
    /// `InvalidArgument` for a wrong generation or an oversized document; `Unavailable`.
    async fn replace_byok_config(
        &self,
        expected_generation: u64,
        config: &ByokConfig,
        record: &RecordChange,
    ) -> Result<(), StoreError>;

    /// Replaces the document's seal (a rewrap: same document, same generation) if it is still
    /// `old_seal`.
    ///
    /// # Errors
    /// `Conflict::ByokChanged` if the seal changed meanwhile; `Unavailable`.
    async fn reseal_byok_config(
        &self,
        old_seal: &[u8],
        new_seal: &[u8],
        seal_key_id: &str,
    ) -> Result<(), StoreError>;
}

/// Webhook endpoints and their outbox: every audit event of an endpoint's environment that it
/// subscribed to enters its outbox in the event's own transaction, and stays there until it is
/// delivered (or given up: dead, until replayed).
#[async_trait]
pub trait WebhookStore: Send + Sync + std::fmt::Debug {
    /// Stores a new endpoint (`pending` and `dead` are ignored).
    ///
    /// # Errors
    /// `InvalidArgument`; `Unavailable`.
    async fn create_webhook(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError>;

    /// The endpoints (of one environment, or all), oldest first, with their outbox counts.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn webhooks(&self, environment: Option<&str>)
    -> Result<Vec<WebhookEndpoint>, StoreError>;

    /// Deletes an endpoint and its outbox, and changes the integrity record as `record` says (the
    /// id among the deleted) in the same transaction.
    ///
    /// # Errors
    /// `NotFound`; `Conflict::Record` if the record changed meanwhile; `Unavailable`.
    async fn delete_webhook(&self, id: &str, record: &RecordChange) -> Result<(), StoreError>;

    /// Replaces an endpoint's sealed signing secret, only if it is still `expected`.
    ///
    /// # Errors
    /// `NotFound`; `Conflict::Version` if it changed meanwhile; `Unavailable`.
    async fn replace_webhook_secret(
        &self,
        id: &str,
        expected: &[u8],
        sealed_secret: &[u8],
        secret_key_id: &str,
        mac: &[u8],
    ) -> Result<(), StoreError>;

    /// Makes an endpoint's dead deliveries pending again. Returns how many.
    ///
    /// # Errors
    /// `NotFound`; `Unavailable`.
    async fn replay_webhook(&self, id: &str) -> Result<u64, StoreError>;

    /// Leases, for `owner` (a token of this lease) until `until`, one endpoint whose oldest
    /// delivery is due at `now` and that has no live lease: one deliverer per endpoint at a
    /// time, so its events go out in order. The endpoint's outbox counts are not read.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn lease_webhook(
        &self,
        owner: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Option<WebhookEndpoint>, StoreError>;

    /// Extends `owner`'s lease of an endpoint; false if the lease was lost.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn renew_webhook_lease(
        &self,
        id: &str,
        owner: &str,
        until: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Ends `owner`'s lease of an endpoint.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn release_webhook(&self, id: &str, owner: &str) -> Result<(), StoreError>;

    /// The endpoint's oldest delivery that is not dead, with its event.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn next_delivery(&self, endpoint_id: &str) -> Result<Option<Delivery>, StoreError>;

    /// Removes a delivered event from the outbox and extends the lease to `renew_until`, in
    /// one transaction, if `owner` still holds the endpoint's lease. Returns whether it did.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn delivered(
        &self,
        endpoint_id: &str,
        seq: i64,
        owner: &str,
        renew_until: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Records a failed attempt, if `owner` still holds the endpoint's lease: tried again at
    /// `next_attempt_at`, or dead. Returns whether it did.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn delivery_failed(
        &self,
        endpoint_id: &str,
        seq: i64,
        owner: &str,
        next_attempt_at: Timestamp,
        dead: bool,
        error: &str,
    ) -> Result<bool, StoreError>;
}

/// API key records (hashes, never secrets).
#[async_trait]
pub trait ApiKeyStore: Send + Sync + std::fmt::Debug {
    /// Stores a new API key record (its hash only; the secret is never stored).
    ///
    /// # Errors
    /// `Conflict` if its id or lookup exists; `InvalidArgument`; `Unavailable`.
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;

    /// The API key with this lookup prefix, revoked or not.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn api_key_by_lookup(&self, lookup: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Revokes an API key by id at `at`, with `mac` the row's tag as revoked, and the integrity
    /// record changed as `record` says (the id among the revoked), if given, in the same
    /// transaction: it authenticates nothing from now on. Revoking a revoked key is a no-op
    /// (the record is not changed then).
    ///
    /// # Errors
    /// `NotFound` for an unknown id; `Conflict::Record` if the record changed meanwhile;
    /// `Unavailable`.
    async fn revoke_api_key(
        &self,
        id: &str,
        at: Timestamp,
        mac: &[u8],
        record: Option<&RecordChange>,
    ) -> Result<(), StoreError>;

    /// Every API key record, oldest first.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
}

/// The integrity record and the tags of the rows written before there was one. The store keeps
/// bytes: the key is sealed, and tags are made and checked above it.
#[async_trait]
pub trait IntegrityStore: Send + Sync + std::fmt::Debug {
    /// The integrity record, if the store is protected.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn integrity(&self) -> Result<Option<IntegrityRecord>, StoreError>;

    /// Whether the store holds anything at all (a row in any table): a store that does and has
    /// no integrity record either predates protection or lost its record.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn holds_anything(&self) -> Result<bool, StoreError>;

    /// Protects the store, in one transaction: writes `record` and each listed row's tag (API
    /// keys, webhook endpoints and rings, by id or name), if there is no record yet. Returns
    /// `false` (and writes nothing) if there is one.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn protect(
        &self,
        record: &IntegrityRecord,
        api_keys: &[(String, Vec<u8>)],
        webhooks: &[(String, Vec<u8>)],
        rings: &[(String, Vec<u8>)],
    ) -> Result<bool, StoreError>;

    /// What the tag of each managed ring kept in the database covers, as its rows hold it.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn ring_headers(&self) -> Result<Vec<vault_crypto::integrity::RingHeader>, StoreError>;

    /// Changes the integrity record alone, if it is still the one `change` was made from.
    ///
    /// # Errors
    /// `Conflict::Record` if it is not; `Unavailable`.
    async fn change_record(&self, change: &RecordChange) -> Result<(), StoreError>;

    /// Whether a ring or an idempotent answer carries a tag (with API keys and webhook
    /// endpoints, what says a store was protected before).
    ///
    /// # Errors
    /// `Unavailable`.
    async fn holds_ring_or_answer_tags(&self) -> Result<bool, StoreError>;

    /// Keeps the integrity key, sealed by `sealed_by`, in the record (a store moved into a
    /// database, whose key was kept in a file).
    ///
    /// # Errors
    /// `NotFound` if there is no record; `Unavailable`.
    async fn keep_sealed_key(&self, sealed_by: &str, sealed_key: &[u8]) -> Result<(), StoreError>;
}
