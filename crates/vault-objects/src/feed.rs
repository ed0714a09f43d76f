//! The audit trail as WorkOS events: listing them, idempotent answers, managed ring events, and
//! webhook endpoints with their signing secrets sealed by the vault's own keys.

use std::fmt;

use vault_crypto::{KeyContext, ManagedKeyProvider, Reserved};
use vault_store::{
    Actor, EventPage, EventQuery, Remembered, StoreError, Timestamp, WebhookEndpoint, events,
    validate_environment,
};
use zeroize::Zeroizing;

use crate::{Vault, VaultError};

/// Whether `id` is shaped like a webhook endpoint's id (`we_` and 32 hex digits).
fn is_webhook_id(id: &str) -> bool {
    id.strip_prefix("we_")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The most deleted objects one purge transaction removes.
pub const PURGE_BATCH: u32 = 500;

/// The longest webhook URL.
pub const MAX_WEBHOOK_URL_LEN: usize = 2048;

/// A webhook endpoint's signing secret: 64 hex digits (256 random bits). The HMAC key is its
/// UTF-8 bytes, as the WorkOS SDKs use it. Wiped on drop, never shown by `Debug`.
#[derive(Clone)]
pub struct WebhookSecret(Zeroizing<String>);

impl WebhookSecret {
    fn generate() -> Result<Self, VaultError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        vault_crypto::random::fill(&mut *bytes)?;
        let mut text = Zeroizing::new(String::with_capacity(64));
        for b in bytes.iter() {
            text.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            text.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        Ok(Self(text))
    }

    /// The secret, to show once or to sign with.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

/// The context a webhook's secret is sealed under, and the associated data binding it to its
/// endpoint and environment: a sealed secret moved to another endpoint does not open.
pub(crate) fn secret_binding(
    environment: &str,
    id: &str,
) -> Result<(KeyContext, Vec<u8>), VaultError> {
    let context = KeyContext::reserved(Reserved::WebhookSecret { endpoint: id })
        .map_err(vault_crypto::Error::from)?;
    let mut aad = b"vault-webhook/v1\0".to_vec();
    aad.extend_from_slice(environment.as_bytes());
    aad.push(0);
    aad.extend_from_slice(id.as_bytes());
    Ok((context, aad))
}

/// Checks a webhook URL: `http` or `https`, a host, no user name or password, at most 2,048
/// bytes. Where it may be delivered is decided again on every delivery, on the address actually
/// connected to.
///
/// # Errors
/// `Store(InvalidArgument)` naming `url`.
pub fn check_webhook_url(url: &str) -> Result<url::Url, VaultError> {
    let bad = |reason| {
        VaultError::Store(StoreError::InvalidArgument {
            field: "url",
            reason,
        })
    };
    if url.len() > MAX_WEBHOOK_URL_LEN {
        return Err(bad("longer than 2048 bytes"));
    }
    let parsed = url::Url::parse(url).map_err(|_| bad("not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("must be http or https"));
    }
    if parsed.host().is_none() {
        return Err(bad("has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("must not hold a user name or password"));
    }
    Ok(parsed)
}

/// The longest retention a purge takes: 100 years.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// The deletion time before which objects are purged: `now` less `days`, or `None` if that
/// is not a time (never a wrapped-around cutoff in the future, which would purge everything).
fn purge_cutoff(now: Timestamp, days: u32) -> Option<Timestamp> {
    const MICROS_PER_DAY: i64 = 86_400_000_000;
    if days > MAX_RETENTION_DAYS {
        return None;
    }
    let span = i64::from(days).checked_mul(MICROS_PER_DAY)?;
    now.0.checked_sub(span).map(Timestamp)
}

/// [`purge_cutoff`] for `days` of retention from `now`, or the error that says the days are too
/// many.
pub(crate) fn retention_cutoff(now: Timestamp, days: u32) -> Result<Timestamp, StoreError> {
    purge_cutoff(now, days).ok_or(StoreError::InvalidArgument {
        field: "retention_days",
        reason: "must be at most 36500",
    })
}

impl Vault {
    /// A page of an environment's events.
    ///
    /// # Errors
    /// `Store(InvalidQuery)`; `Store(Unavailable)`.
    pub async fn list_events(
        &self,
        environment: &str,
        query: &EventQuery,
    ) -> Result<EventPage, VaultError> {
        Ok(self.store.list_events(environment, query).await?)
    }

    /// An environment's webhook endpoints (every environment's with `None`), with their
    /// deliveries pending and dead.
    ///
    /// # Errors
    /// `Store(Unavailable)`.
    pub async fn webhooks(
        &self,
        environment: Option<&str>,
    ) -> Result<Vec<WebhookEndpoint>, VaultError> {
        Ok(self.store.webhooks(environment).await?)
    }

    /// Makes `id`'s dead deliveries due again; how many there were.
    ///
    /// # Errors
    /// `Store(NotFound)`; `Store(Unavailable)`.
    pub async fn replay_webhook(&self, id: &str) -> Result<u64, VaultError> {
        Ok(self.store.replay_webhook(id).await?)
    }

    /// Removes for good the objects deleted more than `days` days ago, each audited as
    /// `vault.data.purged`; how many. In transactions of at most [`PURGE_BATCH`] objects, so
    /// a large backlog never holds the store's writer long.
    ///
    /// # Errors
    /// `Store(InvalidArgument)` for more than [`MAX_RETENTION_DAYS`]; `Store(Unavailable)`
    /// (the batches before it stay purged).
    pub async fn purge_older_than(&self, days: u32, actor: &Actor) -> Result<u64, VaultError> {
        let cutoff = retention_cutoff(Timestamp::now(), days)?;
        let mut purged = 0;
        loop {
            let batch = self.store.purge(cutoff, PURGE_BATCH, actor).await?;
            purged += batch;
            if batch < u64::from(PURGE_BATCH) {
                return Ok(purged);
            }
            // Let the writes waiting behind this batch go first.
            tokio::task::yield_now().await;
        }
    }

    /// The answer stored for `owner`'s idempotency key, if it is younger than 24 hours.
    ///
    /// # Errors
    /// `Store(Unavailable)`.
    pub async fn remembered(
        &self,
        owner: &str,
        key: &str,
    ) -> Result<Option<Remembered>, VaultError> {
        let Some(stored) = self.store.remembered(owner, key).await? else {
            return Ok(None);
        };
        let expected = crate::integrity::answer_tag(
            &self.integrity,
            owner,
            key,
            &stored.request_hash,
            stored.status,
            &stored.body,
            stored.created_at,
        );
        if !vault_crypto::integrity::matches(&expected, &stored.mac) {
            return Err(crate::integrity::refused(format!(
                "the stored answer to idempotency key {key:?} (table idempotent_answers) fails its integrity check"
            )));
        }
        Ok(Some(stored))
    }

    /// Removes events older than `retention_days` (`None`: keep them all), except those a
    /// webhook still has to deliver, and idempotent answers older than 24 hours. Returns
    /// (events, answers) removed.
    ///
    /// # Errors
    /// `Store(Unavailable)`.
    pub async fn expire(&self, retention_days: Option<u32>) -> Result<(u64, u64), VaultError> {
        let now = Timestamp::now().0;
        let events = match retention_days {
            Some(days) => {
                let before = now.saturating_sub(i64::from(days) * 86_400 * 1_000_000);
                self.store.purge_events(Timestamp(before)).await?
            }
            None => 0,
        };
        let answers = self
            .store
            .forget_answers(Timestamp(
                now.saturating_sub(vault_store::IDEMPOTENCY_TTL_MICROS),
            ))
            .await?;
        Ok((events, answers))
    }

    /// Rotates the managed ring `ring` (a new primary version) and records `vault.kek.created`
    /// in every environment with data under the ring. Returns the new version.
    ///
    /// # Errors
    /// A `KeyRingError`; `Store(Unavailable)` if the event cannot be written (the rotation
    /// stands).
    pub async fn rotate_key(
        &self,
        ring: &ManagedKeyProvider,
        actor: &Actor,
    ) -> Result<u32, VaultError> {
        let version = ring.rotate().await?;
        let key_id = ring
            .versions()
            .into_iter()
            .find(|v| v.version == version)
            .map_or_else(String::new, |v| v.key_ref.to_string());
        self.store
            .record_ring_event(events::KEK_CREATED, ring.name(), &key_id, actor)
            .await?;
        Ok(version)
    }

    /// Creates a webhook endpoint for `environment`'s `event_names` at `url`, with a fresh
    /// signing secret sealed under the vault's default key. Returns the endpoint and the
    /// secret, which is shown once.
    ///
    /// # Errors
    /// `Store(InvalidArgument)` for a bad environment, URL or event name; `Crypto` if the key
    /// provider fails; `Store(Unavailable)`.
    pub async fn create_webhook(
        &self,
        environment: &str,
        url: &str,
        event_names: &[String],
    ) -> Result<(WebhookEndpoint, WebhookSecret), VaultError> {
        validate_environment(environment)?;
        let url = check_webhook_url(url)?;
        if event_names.is_empty()
            || event_names
                .iter()
                .any(|e| !events::ALL.contains(&e.as_str()))
        {
            return Err(StoreError::InvalidArgument {
                field: "events",
                reason: "name one or more known event types",
            }
            .into());
        }
        let mut names = event_names.to_vec();
        names.sort();
        names.dedup();
        let id = format!("we_{}", &vault_store::new_object_id()?["secret_".len()..]);
        let secret = WebhookSecret::generate()?;
        let (context, aad) = secret_binding(environment, &id)?;
        let sealed = vault_crypto::seal_in(
            &*self.keys,
            environment,
            &context,
            secret.expose_secret().as_bytes(),
            vault_crypto::Aad::new(&aad),
        )
        .await?;
        let endpoint = WebhookEndpoint {
            id,
            environment: environment.to_owned(),
            url: url.to_string(),
            events: names,
            secret_key_id: sealed.key_ref().to_string(),
            sealed_secret: sealed.into_bytes(),
            created_at: Timestamp::now(),
            pending: 0,
            dead: 0,
            last_error: None,
            mac: Vec::new(),
        };
        let endpoint = WebhookEndpoint {
            mac: crate::integrity::webhook_tag(&self.integrity, &endpoint).to_vec(),
            ..endpoint
        };
        self.store.create_webhook(&endpoint).await?;
        Ok((endpoint, secret))
    }

    /// Replaces a webhook endpoint's signing secret with a fresh one (deliveries from now on are
    /// signed with it), sealed under the key the vault chooses now. Returns it, to show once.
    ///
    /// # Errors
    /// `Store(NotFound)`; `Store(Conflict)` if it was rotated concurrently; `Crypto`.
    pub async fn rotate_webhook_secret(&self, id: &str) -> Result<WebhookSecret, VaultError> {
        let endpoint = self
            .store
            .webhooks(None)
            .await?
            .into_iter()
            .find(|e| e.id == id)
            .ok_or(StoreError::NotFound)?;
        // A row changed by a database writer is not made authentic by a new secret.
        crate::integrity::check_webhook(&*self.store, &self.integrity, &endpoint).await?;
        let secret = WebhookSecret::generate()?;
        let (context, aad) = secret_binding(&endpoint.environment, id)?;
        let sealed = vault_crypto::seal_in(
            &*self.keys,
            &endpoint.environment,
            &context,
            secret.expose_secret().as_bytes(),
            vault_crypto::Aad::new(&aad),
        )
        .await?;
        let replaced = WebhookEndpoint {
            sealed_secret: sealed.bytes().to_vec(),
            secret_key_id: sealed.key_ref().to_string(),
            ..endpoint.clone()
        };
        let mac = crate::integrity::webhook_tag(&self.integrity, &replaced);
        self.store
            .replace_webhook_secret(
                id,
                &endpoint.sealed_secret,
                &replaced.sealed_secret,
                &replaced.secret_key_id,
                &mac,
            )
            .await?;
        Ok(secret)
    }

    /// Whether a webhook endpoint's row is as this deployment wrote it, and not one it deleted
    /// (for listings: one that is not is never delivered to).
    pub async fn webhook_is_authentic(&self, endpoint: &WebhookEndpoint) -> bool {
        crate::integrity::check_webhook(&*self.store, &self.integrity, endpoint)
            .await
            .is_ok()
    }

    /// Deletes a webhook endpoint and its outbox; the integrity record says so, so the row put
    /// back is never delivered to.
    ///
    /// # Errors
    /// `Store(NotFound)`; `Tampered` if the integrity record fails; `Store(Unavailable)`.
    pub async fn delete_webhook(&self, id: &str) -> Result<(), VaultError> {
        for _ in 0..16 {
            let record = crate::integrity::checked_record(&*self.store, &self.integrity).await?;
            let change = crate::integrity::record_change(&self.integrity, &record, |r| {
                r.deleted_webhooks.push(id.to_owned());
            });
            match self.store.delete_webhook(id, &change).await {
                Err(StoreError::Conflict(vault_store::Conflict::Record)) => {}
                // Gone already (deleted by someone else?): recorded all the same, so the row
                // put back is never delivered to.
                Err(StoreError::NotFound) if is_webhook_id(id) => {
                    if !record.deleted_webhooks.iter().any(|d| d == id) {
                        match self.store.change_record(&change).await {
                            Err(StoreError::Conflict(vault_store::Conflict::Record)) => continue,
                            other => other?,
                        }
                    }
                    return Err(StoreError::NotFound.into());
                }
                other => return Ok(other?),
            }
        }
        Err(StoreError::Conflict(vault_store::Conflict::Record).into())
    }

    /// Opens a webhook endpoint's signing secret, to sign a delivery, once its row is checked:
    /// an endpoint a database writer added or changed (its URL, its events) is never posted to.
    ///
    /// # Errors
    /// `Tampered` if the row fails its integrity check; `Crypto` if its key is unavailable or
    /// the sealed secret is not this endpoint's.
    pub async fn webhook_secret(
        &self,
        endpoint: &WebhookEndpoint,
    ) -> Result<WebhookSecret, VaultError> {
        crate::integrity::check_webhook(&*self.store, &self.integrity, endpoint).await?;
        let (context, aad) = secret_binding(&endpoint.environment, &endpoint.id)?;
        let opened = vault_crypto::open(
            &*self.keys,
            &endpoint.sealed_secret,
            &context,
            vault_crypto::Aad::new(&aad),
        )
        .await?;
        let text = String::from_utf8(opened.into_plaintext())
            .map_err(|_| vault_crypto::Error::DecryptionFailed)?;
        Ok(WebhookSecret(Zeroizing::new(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_cutoff_is_never_in_the_future() {
        let now = Timestamp(1_700_000_000_000_000);
        assert_eq!(purge_cutoff(now, 0), Some(now));
        assert_eq!(
            purge_cutoff(now, 1),
            Some(Timestamp(now.0 - 86_400_000_000))
        );
        assert_eq!(purge_cutoff(now, MAX_RETENTION_DAYS + 1), None);
        // Near the start of time the subtraction would wrap: refused, not a future cutoff.
        assert_eq!(purge_cutoff(Timestamp(i64::MIN + 1), 1), None);
    }
}
