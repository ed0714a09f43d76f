//! The BYOK document: every runtime provider and rule in one row, sealed by the vault's own
//! key, replaced whole by compare-and-swap on its generation.

use async_trait::async_trait;
use sqlx::Row;

use super::SqlStore;
use crate::{ByokConfig, ByokStore, Conflict, RecordChange, StoreError};

/// The longest document (a few hundred rules and providers).
const MAX_DOCUMENT: usize = 1 << 20;

/// Whether `name` can name a provider: 1 to 64 ASCII letters, digits, `_` or `-` (it becomes
/// part of `VAULT_PROVIDER_<NAME>_…` and of metric labels).
pub fn is_provider_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn generation_of(g: i64) -> u64 {
    u64::try_from(g).unwrap_or(0)
}

#[async_trait]
impl ByokStore for SqlStore {
    async fn byok_generation(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT generation FROM byok_config WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(generation_of(r.try_get("generation")?)),
            None => Ok(0),
        }
    }

    async fn byok_config(&self) -> Result<Option<ByokConfig>, StoreError> {
        let row = sqlx::query(
            "SELECT generation, document, seal, seal_key_id FROM byok_config WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ByokConfig {
                generation: generation_of(r.try_get("generation")?),
                document: r.try_get("document")?,
                seal: r.try_get("seal")?,
                seal_key_id: r.try_get("seal_key_id")?,
            })
        })
        .transpose()
    }

    async fn replace_byok_config(
        &self,
        expected_generation: u64,
        config: &ByokConfig,
        record: &RecordChange,
    ) -> Result<(), StoreError> {
        if config.document.len() > MAX_DOCUMENT {
            return Err(StoreError::invalid("document", "at most 1 MiB"));
        }
        if config.generation != expected_generation.saturating_add(1) {
            return Err(StoreError::invalid(
                "generation",
                "must be the expected generation plus one",
            ));
        }
        let expected = i64::try_from(expected_generation)
            .map_err(|_| StoreError::invalid("generation", "out of range"))?;
        let mut tx = self.begin_write().await?;
        let changed = if expected == 0 {
            let inserted = sqlx::query(
                "INSERT INTO byok_config (id, generation, document, seal, seal_key_id) \
                 VALUES (1, 1, $1, $2, $3)",
            )
            .bind(&config.document)
            .bind(config.seal.clone())
            .bind(&config.seal_key_id)
            .execute(&mut *tx)
            .await;
            match inserted {
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => 0,
                other => other?.rows_affected(),
            }
        } else {
            sqlx::query(
                "UPDATE byok_config SET generation = generation + 1, document = $1, seal = $2, \
                 seal_key_id = $3 WHERE id = 1 AND generation = $4",
            )
            .bind(&config.document)
            .bind(config.seal.clone())
            .bind(&config.seal_key_id)
            .bind(expected)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        };
        if changed == 0 {
            return Err(StoreError::Conflict(Conflict::ByokChanged));
        }
        // What exists, recorded with it: a deleted or older document is then refused.
        if record.record.byok_generation != config.generation {
            return Err(StoreError::invalid(
                "generation",
                "the integrity record must take the new generation",
            ));
        }
        match Self::change_record_in(&mut tx, record).await {
            Err(StoreError::Conflict(_)) => {
                return Err(StoreError::Conflict(Conflict::ByokChanged));
            }
            other => other?,
        }
        tx.commit().await?;
        Ok(())
    }

    async fn reseal_byok_config(
        &self,
        old_seal: &[u8],
        new_seal: &[u8],
        seal_key_id: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE byok_config SET seal = $1, seal_key_id = $2 WHERE id = 1 AND seal = $3",
        )
        .bind(new_seal.to_vec())
        .bind(seal_key_id)
        .bind(old_seal.to_vec())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(StoreError::Conflict(Conflict::ByokChanged));
        }
        tx.commit().await?;
        Ok(())
    }
}
