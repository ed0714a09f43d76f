//! The integrity record and the upgrade that tags the rows written before it existed. Only
//! bytes here: the key is sealed and the tags are made and checked above the store.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row};

use super::SqlStore;
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

impl SqlStore {
    /// Writes `change` in `tx` if the record is still the one it was made from.
    ///
    /// # Errors
    /// `Conflict::Record` if it is not; `Unavailable`.
    pub(super) async fn change_record_in(
        tx: &mut sqlx::AnyConnection,
        change: &RecordChange,
    ) -> Result<(), StoreError> {
        let r = &change.record;
        let changed = sqlx::query(
            "UPDATE integrity SET byok_generation = $1, revoked_api_keys = $2, \
             deleted_webhooks = $3, mac = $4 WHERE id = 1 AND mac = $5",
        )
        .bind(
            i64::try_from(r.byok_generation)
                .map_err(|_| StoreError::invalid("byok_generation", "out of range"))?,
        )
        .bind(joined(&r.revoked_api_keys)?)
        .bind(joined(&r.deleted_webhooks)?)
        .bind(r.mac.clone())
        .bind(change.expected_mac.clone())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(StoreError::Conflict(Conflict::Record));
        }
        Ok(())
    }
}

/// Every table a deployment keeps something in, for [`IntegrityStore::holds_anything`] and for
/// refusing to copy into a store that is not empty.
pub(super) const EVERY_TABLE: &[&str] = &[
    "objects",
    "versions",
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

impl SqlStore {
    /// Whether any table of `tables` has a row.
    pub(super) async fn any_rows(
        &self,
        conn: &mut sqlx::AnyConnection,
        tables: &[&str],
    ) -> Result<bool, StoreError> {
        for table in tables {
            let sql = format!("SELECT 1 AS one FROM {table} LIMIT 1");
            if sqlx::query(AssertSqlSafe(sql))
                .fetch_optional(&mut *conn)
                .await?
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[async_trait]
impl IntegrityStore for SqlStore {
    async fn integrity(&self) -> Result<Option<IntegrityRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT sealed_key, sealed_by, byok_generation, revoked_api_keys, deleted_webhooks, \
             mac FROM integrity WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let sealed_key: Option<Vec<u8>> = r.try_get("sealed_key")?;
        let sealed_by: Option<String> = r.try_get("sealed_by")?;
        let generation: i64 = r.try_get("byok_generation")?;
        Ok(Some(IntegrityRecord {
            sealed_key: sealed_by.zip(sealed_key),
            // A negative generation is no generation a writer of ours made: its tag fails.
            byok_generation: u64::try_from(generation).unwrap_or(u64::MAX),
            revoked_api_keys: split(&r.try_get::<String, _>("revoked_api_keys")?),
            deleted_webhooks: split(&r.try_get::<String, _>("deleted_webhooks")?),
            mac: r.try_get("mac")?,
        }))
    }

    async fn holds_anything(&self) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        self.any_rows(&mut conn, EVERY_TABLE).await
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
        let (sealed_by, sealed_key) = match &record.sealed_key {
            Some((by, key)) => (Some(by.clone()), Some(key.clone())),
            None => (None, None),
        };
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 AS one FROM integrity WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO integrity (id, sealed_key, sealed_by, byok_generation, \
             revoked_api_keys, deleted_webhooks, mac) VALUES (1, $1, $2, $3, $4, $5, $6)",
        )
        .bind(sealed_key)
        .bind(sealed_by)
        .bind(generation)
        .bind(joined(&record.revoked_api_keys)?)
        .bind(joined(&record.deleted_webhooks)?)
        .bind(record.mac.clone())
        .execute(&mut *tx)
        .await?;
        for (id, mac) in api_keys {
            sqlx::query("UPDATE api_keys SET mac = $1 WHERE id = $2")
                .bind(mac.clone())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        for (id, mac) in webhooks {
            sqlx::query("UPDATE webhook_endpoints SET mac = $1 WHERE id = $2")
                .bind(mac.clone())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        for (name, mac) in rings {
            sqlx::query("UPDATE key_rings SET mac = $1 WHERE name = $2")
                .bind(mac.clone())
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn ring_headers(&self) -> Result<Vec<vault_crypto::integrity::RingHeader>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.name, r.generation, r.primary_version, r.min_decryption_version, \
             v.version, v.created_at, v.destroyed_at \
             FROM key_rings r JOIN key_ring_versions v ON v.ring = r.name \
             ORDER BY r.name, v.version",
        )
        .fetch_all(&self.pool)
        .await?;
        let number = |v: i64| {
            u64::try_from(v).map_err(|_| StoreError::Unavailable {
                reason: "a ring's row holds a negative number".into(),
            })
        };
        let mut headers: Vec<vault_crypto::integrity::RingHeader> = Vec::new();
        for r in &rows {
            let name: String = r.try_get("name")?;
            let version = (
                u32::try_from(number(r.try_get("version")?)?).unwrap_or(u32::MAX),
                number(r.try_get("created_at")?)?,
                r.try_get::<Option<i64>, _>("destroyed_at")?
                    .map(number)
                    .transpose()?,
            );
            match headers.last_mut().filter(|h| h.name == name) {
                Some(h) => h.versions.push(version),
                None => headers.push(vault_crypto::integrity::RingHeader {
                    name,
                    generation: number(r.try_get("generation")?)?,
                    primary: u32::try_from(number(r.try_get("primary_version")?)?)
                        .unwrap_or(u32::MAX),
                    min_decryption_version: u32::try_from(number(
                        r.try_get("min_decryption_version")?,
                    )?)
                    .unwrap_or(u32::MAX),
                    versions: vec![version],
                }),
            }
        }
        Ok(headers)
    }

    async fn change_record(&self, change: &RecordChange) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        Self::change_record_in(&mut tx, change).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn holds_ring_or_answer_tags(&self) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "SELECT 1 AS one FROM key_rings WHERE mac IS NOT NULL \
             UNION ALL SELECT 1 AS one FROM idempotent_answers WHERE length(mac) > 0 LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }

    async fn keep_sealed_key(&self, sealed_by: &str, sealed_key: &[u8]) -> Result<(), StoreError> {
        // Through the writer lock, as every write.
        let mut tx = self.begin_write().await?;
        let changed =
            sqlx::query("UPDATE integrity SET sealed_key = $1, sealed_by = $2 WHERE id = 1")
                .bind(sealed_key.to_vec())
                .bind(sealed_by)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }
}
