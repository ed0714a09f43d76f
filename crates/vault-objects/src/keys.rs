//! Key lifecycle over the stored objects: moving data keys to the key the rules choose now
//! ([`Vault::rewrap`]), what each key wraps ([`Vault::key_usage`]), and destroying a managed
//! key version only when nothing stored depends on it, or with explicit consent
//! ([`Vault::destroy_key_version`]).

use std::time::{SystemTime, UNIX_EPOCH};

use vault_crypto::{
    KeyContext, KeyRingError, ManagedKeyProvider, ProviderErrorKind, Reserved, Rewrapped,
    VersionState,
};
use vault_store::{Actor, KeyUsage, StoreError};

use crate::{Vault, VaultError};

/// Which stored versions a rewrap looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewrapScope {
    /// Every stored version (of live and deleted, not yet purged, objects).
    All,
    /// Versions whose key context holds every one of these pairs.
    Matching(Vec<(String, String)>),
}

impl RewrapScope {
    pub(crate) fn includes(&self, ctx: &KeyContext) -> bool {
        match self {
            Self::All => true,
            Self::Matching(pairs) => ctx.contains_all(pairs.iter().map(|(k, v)| (&**k, &**v))),
        }
    }
}

/// What [`Vault::rewrap`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RewrapReport {
    /// Versions looked at.
    pub scanned: u64,
    /// Versions in the scope.
    pub matched: u64,
    /// Versions whose data key was moved to the key the rules choose now.
    pub rewrapped: u64,
    /// Versions already under that key (the primary version of a managed ring, say).
    pub already_current: u64,
    /// Versions changed by someone else meanwhile (left alone; a re-run picks them up).
    pub changed_meanwhile: u64,
    /// Versions whose key is destroyed, disabled or gone, or whose envelope does not open:
    /// left as they are.
    pub unreadable: u64,
}

impl RewrapReport {
    /// Counts a rewrap's outcome: the envelope moved (to be written), or already current or
    /// unreadable (counted, nothing to write).
    ///
    /// # Errors
    /// A failure other than an unusable key.
    pub(crate) fn count(
        &mut self,
        outcome: Result<Rewrapped, vault_crypto::Error>,
    ) -> Result<Option<vault_crypto::Sealed>, VaultError> {
        match outcome {
            Ok(Rewrapped::Moved(moved)) => Ok(Some(moved)),
            Ok(Rewrapped::AlreadyCurrent) => {
                self.already_current += 1;
                Ok(None)
            }
            Err(e) if unusable_key(&e) => {
                self.unreadable += 1;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// What [`Vault::destroy_key_version`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DestroyReport {
    /// The version.
    pub version: u32,
    /// Stored versions that were wrapped under it: unreadable from now on.
    pub stored_versions: u64,
    /// Data keys issued under it through the data-key API: unrecoverable from now on.
    pub issued_data_keys: u64,
    /// False if it was destroyed already.
    pub destroyed_now: bool,
}

impl DestroyReport {
    /// A destruction done without a store to count in.
    pub fn uncounted(version: u32, destroyed_now: bool) -> Self {
        Self {
            version,
            stored_versions: 0,
            issued_data_keys: 0,
            destroyed_now,
        }
    }
}

/// How long a version must have been replaced as the primary before it can be destroyed
/// without consent: one second for every process to see the rotation, and the rest for writes
/// sealed just before they saw it to land in the store, where they are counted. (A write that
/// takes longer than that between sealing and its commit is not counted; see `SECURITY.md`.)
pub const DESTROY_QUIET_SECS: u64 = 5;

/// Whether `destroy_key_version` may shred data that is still wrapped under the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shred {
    /// Refuse while anything counted is under the version.
    Refuse,
    /// The operator's explicit consent: destroy it, making what is under it unreadable.
    Consent,
}

impl Vault {
    /// Moves the data key of every stored version in `scope` that is not under the key the
    /// rules choose for its context now (a customer's key after a new BYOK rule, the primary
    /// version after a rotation) to that key, without touching any value ciphertext. Each
    /// envelope is swapped only if it is unchanged (compare-and-set), so concurrent writes win
    /// and are counted as changed meanwhile; versions already current are skipped, so an
    /// interrupted run is resumed by running it again. `progress` is called after each batch.
    ///
    /// # Errors
    /// The first storage failure, or a provider failure other than an unusable key (such a
    /// version is counted as unreadable and left alone); what was done before it stays done.
    pub async fn rewrap(
        &self,
        scope: &RewrapScope,
        actor: &Actor,
        mut progress: impl FnMut(&RewrapReport),
    ) -> Result<RewrapReport, VaultError> {
        let mut report = RewrapReport::default();
        let mut after = None;
        loop {
            let batch = self.store.scan_versions(after.clone(), 200).await?;
            let Some(last) = batch.last() else { break };
            after = Some((last.object_id.clone(), last.seq));
            for v in &batch {
                report.scanned += 1;
                if !scope.includes(&v.context) {
                    continue;
                }
                report.matched += 1;
                // Only an envelope of the object's own (caller's) context is wrapped again: a
                // stored one naming a reserved context is left alone, never laundered.
                if v.context.check_caller().is_err() {
                    report.unreadable += 1;
                    continue;
                }
                let rewrapped = vault_crypto::rewrap(&*self.keys, &v.envelope, &v.context).await;
                let Some(moved) = report.count(rewrapped)? else {
                    continue;
                };
                let key_id = moved.key_ref().to_string();
                if self
                    .store
                    .replace_envelope(&v.object_id, v.seq, &v.envelope, &moved, &key_id, actor)
                    .await?
                {
                    report.rewrapped += 1;
                } else {
                    report.changed_meanwhile += 1;
                }
            }
            progress(&report);
        }
        // Blobs move by their heads alone (their segments stay as they are).
        self.rewrap_blobs(scope, actor, &mut report).await?;
        progress(&report);
        // Webhook signing secrets are sealed like values, so they move too (and are counted
        // in the report as stored versions).
        for endpoint in self.store.webhooks(None).await? {
            let Ok(envelope) = vault_crypto::Envelope::parse(&endpoint.sealed_secret) else {
                report.unreadable += 1;
                continue;
            };
            report.scanned += 1;
            if !scope.includes(envelope.context()) {
                continue;
            }
            report.matched += 1;
            // A row a database writer changed is not tagged again: it stays refused.
            if crate::integrity::check_webhook(&*self.store, &self.integrity, &endpoint)
                .await
                .is_err()
            {
                report.unreadable += 1;
                continue;
            }
            let (context, _) = crate::feed::secret_binding(&endpoint.environment, &endpoint.id)?;
            let rewrapped =
                vault_crypto::rewrap(&*self.keys, &endpoint.sealed_secret, &context).await;
            let Some(moved) = report.count(rewrapped)? else {
                continue;
            };
            let replaced = vault_store::WebhookEndpoint {
                sealed_secret: moved.bytes().to_vec(),
                secret_key_id: moved.key_ref().to_string(),
                ..endpoint.clone()
            };
            let mac = crate::integrity::webhook_tag(&self.integrity, &replaced);
            match self
                .store
                .replace_webhook_secret(
                    &endpoint.id,
                    &endpoint.sealed_secret,
                    &replaced.sealed_secret,
                    &replaced.secret_key_id,
                    &mac,
                )
                .await
            {
                Ok(()) => report.rewrapped += 1,
                Err(StoreError::Conflict(_) | StoreError::NotFound) => {
                    report.changed_meanwhile += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        // The runtime BYOK rules' seal is sealed like a value, so it moves too (counted as one
        // stored version).
        if let Some(config) = self.store.byok_config().await? {
            match vault_crypto::Envelope::parse(&config.seal) {
                Err(_) => report.unreadable += 1,
                Ok(envelope) => {
                    report.scanned += 1;
                    if scope.includes(envelope.context()) {
                        report.matched += 1;
                        // Opened with the strict default: a seal the router alone would accept
                        // (a forgeable wrap) is never made genuine by moving it.
                        let opener: &dyn vault_crypto::KeyProvider = match &self.seal_opener {
                            Some(opener) => &**opener,
                            None => &*self.keys,
                        };
                        match vault_crypto::rewrap(opener, &config.seal, &byok_seal_context()?)
                            .await
                        {
                            Ok(Rewrapped::Moved(moved)) => match self
                                .store
                                .reseal_byok_config(
                                    &config.seal,
                                    &moved,
                                    &moved.key_ref().to_string(),
                                )
                                .await
                            {
                                Ok(()) => report.rewrapped += 1,
                                Err(StoreError::Conflict(_)) => report.changed_meanwhile += 1,
                                Err(e) => return Err(e.into()),
                            },
                            Ok(Rewrapped::AlreadyCurrent) => report.already_current += 1,
                            Err(e) if unusable_key(&e) => report.unreadable += 1,
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
        }
        progress(&report);
        Ok(report)
    }

    /// How much each key reference wraps: stored versions and issued data keys.
    ///
    /// # Errors
    /// `Store(Unavailable)`.
    pub async fn key_usage(&self) -> Result<Vec<KeyUsage>, VaultError> {
        Ok(self.store.key_usage().await?)
    }

    /// Destroys `version` of the managed ring `ring` (crypto-shredding), after counting what is
    /// still wrapped under it in this vault's store: stored object versions and data keys issued
    /// through the data-key API. With [`Shred::Refuse`] it refuses while either count is above
    /// zero (`vault keys rewrap --all` moves stored versions away) or while the version was the
    /// primary less than [`DESTROY_QUIET_SECS`] ago. Envelopes made outside the store
    /// (`vault encrypt`) cannot be counted.
    ///
    /// # Errors
    /// [`VaultError::KeyInUse`] or [`VaultError::KeyRecentlyPrimary`] when refused; a
    /// [`KeyRingError`] for an unknown or primary version; a storage error. Nothing is
    /// destroyed on error.
    pub async fn destroy_key_version(
        &self,
        ring: &ManagedKeyProvider,
        version: u32,
        shred: Shred,
        actor: &Actor,
    ) -> Result<DestroyReport, VaultError> {
        ring.refresh().await?;
        let info = ring
            .versions()
            .into_iter()
            .find(|v| v.version == version)
            .ok_or(KeyRingError::UnknownVersion(version))?;
        let key_id = info.key_ref.to_string();
        let usage = self
            .key_usage()
            .await?
            .into_iter()
            .find(|u| u.key_id == key_id)
            .unwrap_or_else(|| KeyUsage::new(key_id.clone()));
        let mut report = DestroyReport {
            version,
            stored_versions: usage.stored_versions,
            issued_data_keys: usage.issued_data_keys,
            destroyed_now: false,
        };
        match info.state {
            VersionState::Destroyed => return Ok(report),
            VersionState::Primary => return Err(KeyRingError::DestroyPrimary(version).into()),
            _ => {}
        }
        if shred == Shred::Refuse {
            if usage.stored_versions > 0 || usage.issued_data_keys > 0 {
                return Err(VaultError::KeyInUse {
                    version,
                    stored_versions: usage.stored_versions,
                    issued_data_keys: usage.issued_data_keys,
                });
            }
            // Times are whole seconds: a difference of n seconds may be as little as n - 1.
            let since = info
                .superseded_at
                .map_or(0, |t| unix_now().saturating_sub(t).saturating_sub(1));
            if since < DESTROY_QUIET_SECS {
                return Err(VaultError::KeyRecentlyPrimary {
                    version,
                    wait_secs: DESTROY_QUIET_SECS - since,
                });
            }
        }
        ring.destroy(version).await?;
        report.destroyed_now = true;
        self.store
            .record_ring_event(
                vault_store::events::KEK_DELETED,
                ring.name(),
                &key_id,
                actor,
            )
            .await?;
        Ok(report)
    }
}

/// A failure that says this version's key cannot be used (destroyed, disabled, gone, or the
/// envelope is not authentic), as opposed to a provider that could not be reached.
fn unusable_key(e: &vault_crypto::Error) -> bool {
    match e {
        vault_crypto::Error::Provider(p) => matches!(
            p.kind(),
            ProviderErrorKind::Disabled
                | ProviderErrorKind::NotFound
                | ProviderErrorKind::NotMine
                | ProviderErrorKind::InvalidCiphertext
        ),
        vault_crypto::Error::DecryptionFailed | vault_crypto::Error::ContextMismatch => true,
        _ => false,
    }
}

/// The reserved context the BYOK document is sealed under (`{"vault_byok": "config"}`): the
/// one place it is made, for sealing, opening and moving the document alike.
///
/// # Errors
/// Never in practice: a constant pair within every limit.
pub fn byok_seal_context() -> Result<KeyContext, VaultError> {
    Ok(KeyContext::reserved(Reserved::ByokConfig).map_err(vault_crypto::Error::from)?)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
