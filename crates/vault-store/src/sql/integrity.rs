//! The integrity record and the upgrade that tags the rows written before it existed. Only
//! bytes here: the key is sealed and the tags are made and checked above the store.

use async_trait::async_trait;

use super::SqlStore;
use super::db::{Tx, args};
use crate::{Conflict, IntegrityRecord, IntegrityStore, RecordChange, StoreError};

/// A list of ids as its column keeps it: comma-separated (ids are `[A-Za-z0-9_]`).
fn joined(ids: &[String]) -> Result<String, StoreError> {
    if ids
        .iter()
        .any(|id| id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return Err(StoreError::invalid("id", "must be [A-Za-z0-9_]"));
    }
    Ok(ids.join(","))
}

fn split(column: &str) -> Vec<String> {
    column
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Writes `change` in `tx` if the record is still the one it was made from.
///
/// # Errors
/// `Conflict::Record` if it is not; `Unavailable`.
pub(super) fn change_record_in(tx: &mut dyn Tx, change: &RecordChange) -> Result<(), StoreError> {
    let r = &change.record;
    let generation = i64::try_from(r.byok_generation)
        .map_err(|_| StoreError::invalid("byok_generation", "out of range"))?;
    let changed = tx.execute(
        "UPDATE integrity SET byok_generation = $1, revoked_api_keys = $2, \
         deleted_webhooks = $3, mac = $4 WHERE id = 1 AND mac = $5",
        args![
            generation,
            &joined(&r.revoked_api_keys)?,
            &joined(&r.deleted_webhooks)?,
            &r.mac,
            &change.expected_mac,
        ],
    )?;
    if changed == 0 {
        return Err(StoreError::Conflict(Conflict::Record));
    }
    Ok(())
}

/// Every table a deployment keeps something in, for [`IntegrityStore::holds_anything`] and for
/// refusing to copy into a store that is not empty.
pub(super) const EVERY_TABLE: &[&str] = &[
    "objects",
    "versions",
    "blobs",
    "blob_segments",
    "api_keys",
    "audit_events",
    "issued_key_totals",
    "idempotent_answers",
    "webhook_endpoints",
    "webhook_deliveries",
    "byok_config",
    "key_rings",
    "key_ring_versions",
    "integrity",
];

/// Whether any table of `tables` has a row, read in `tx`.
pub(super) fn any_rows(tx: &mut dyn Tx, tables: &[&str]) -> Result<bool, StoreError> {
    for table in tables {
        if tx.exists(&format!("SELECT 1 AS one FROM {table} LIMIT 1"), &[])? {
            return Ok(true);
        }
    }
    Ok(false)
}

#[async_trait]
impl IntegrityStore for SqlStore {
    async fn integrity(&self) -> Result<Option<IntegrityRecord>, StoreError> {
        self.row(
            "SELECT sealed_key, sealed_by, byok_generation, revoked_api_keys, deleted_webhooks, \
             mac FROM integrity WHERE id = 1",
            &[],
            |r| {
                Ok(IntegrityRecord {
                    sealed_key: r.opt_text("sealed_by")?.zip(r.opt_blob("sealed_key")?),
                    byok_generation: u64::try_from(r.int("byok_generation")?).unwrap_or(u64::MAX),
                    revoked_api_keys: split(&r.text("revoked_api_keys")?),
                    deleted_webhooks: split(&r.text("deleted_webhooks")?),
                    mac: r.blob("mac")?,
                })
            },
        )
        .await
    }

    async fn holds_anything(&self) -> Result<bool, StoreError> {
        self.snapshot(|tx| any_rows(tx, EVERY_TABLE)).await
    }

    async fn protect(
        &self,
        record: &IntegrityRecord,
        api_keys: &[(String, Vec<u8>)],
        webhooks: &[(String, Vec<u8>)],
        rings: &[(String, Vec<u8>)],
    ) -> Result<bool, StoreError> {
        let generation = i64::try_from(record.byok_generation)
            .map_err(|_| StoreError::invalid("byok_generation", "out of range"))?;
        let (record, api_keys, webhooks, rings) = (
            record.clone(),
            api_keys.to_vec(),
            webhooks.to_vec(),
            rings.to_vec(),
        );
        self.change(move |tx: &mut dyn Tx| {
            if tx.exists("SELECT 1 AS one FROM integrity WHERE id = 1", &[])? {
                return Ok(false);
            }
            let (sealed_by, sealed_key) = match &record.sealed_key {
                Some((by, key)) => (Some(by.as_str()), Some(key.as_slice())),
                None => (None, None),
            };
            tx.execute(
                "INSERT INTO integrity (id, sealed_key, sealed_by, byok_generation, \
                 revoked_api_keys, deleted_webhooks, mac) VALUES (1, $1, $2, $3, $4, $5, $6)",
                args![
                    sealed_key,
                    sealed_by,
                    generation,
                    &joined(&record.revoked_api_keys)?,
                    &joined(&record.deleted_webhooks)?,
                    &record.mac,
                ],
            )?;
            for (sql, tags) in [
                ("UPDATE api_keys SET mac = $1 WHERE id = $2", &api_keys),
                (
                    "UPDATE webhook_endpoints SET mac = $1 WHERE id = $2",
                    &webhooks,
                ),
                ("UPDATE key_rings SET mac = $1 WHERE name = $2", &rings),
            ] {
                for (id, mac) in tags {
                    tx.execute(sql, args![mac, id])?;
                }
            }
            Ok(true)
        })
        .await
    }

    async fn ring_headers(&self) -> Result<Vec<vault_crypto::integrity::RingHeader>, StoreError> {
        use vault_crypto::integrity::RingHeader;
        fn number(v: i64) -> Result<u64, StoreError> {
            u64::try_from(v).map_err(|_| StoreError::Unavailable {
                reason: "a ring's row holds a negative number".into(),
            })
        }
        fn small(v: i64) -> Result<u32, StoreError> {
            number(v).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        }
        let rows = self
            .rows(
                "SELECT r.name, r.generation, r.primary_version, r.min_decryption_version, \
                 v.version, v.created_at, v.destroyed_at \
                 FROM key_rings r JOIN key_ring_versions v ON v.ring = r.name \
                 ORDER BY r.name, v.version",
                &[],
                |r| {
                    let header = RingHeader {
                        name: r.text("name")?,
                        generation: number(r.int("generation")?)?,
                        primary: small(r.int("primary_version")?)?,
                        min_decryption_version: small(r.int("min_decryption_version")?)?,
                        versions: Vec::new(),
                    };
                    let version = (
                        small(r.int("version")?)?,
                        number(r.int("created_at")?)?,
                        r.opt_int("destroyed_at")?.map(number).transpose()?,
                    );
                    Ok((header, version))
                },
            )
            .await?;
        let mut headers: Vec<RingHeader> = Vec::new();
        for (header, version) in rows {
            match headers.last_mut().filter(|h| h.name == header.name) {
                Some(h) => h.versions.push(version),
                None => headers.push(RingHeader {
                    versions: vec![version],
                    ..header
                }),
            }
        }
        Ok(headers)
    }

    async fn change_record(&self, change: &RecordChange) -> Result<(), StoreError> {
        let change = change.clone();
        self.change(move |tx: &mut dyn Tx| change_record_in(tx, &change))
            .await
    }

    async fn holds_ring_or_answer_tags(&self) -> Result<bool, StoreError> {
        self.exists(
            "SELECT 1 AS one FROM key_rings WHERE mac IS NOT NULL \
             UNION ALL SELECT 1 AS one FROM idempotent_answers WHERE length(mac) > 0 LIMIT 1",
            &[],
        )
        .await
    }

    async fn keep_sealed_key(&self, sealed_by: &str, sealed_key: &[u8]) -> Result<(), StoreError> {
        let (sealed_by, sealed_key) = (sealed_by.to_owned(), sealed_key.to_vec());
        self.change(move |tx: &mut dyn Tx| {
            let changed = tx.execute(
                "UPDATE integrity SET sealed_key = $1, sealed_by = $2 WHERE id = 1",
                args![&sealed_key, &sealed_by],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }
}
