//! API keys: stored as hashes, found by their public lookup.

use super::SqlStore;
use super::db::{Columns, args};
use crate::{ApiKeyRecord, RecordChange, Timestamp, validate_environment};
use crate::{ApiKeyStore, Conflict, StoreError};
use async_trait::async_trait;

#[async_trait]
impl ApiKeyStore for SqlStore {
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        validate_environment(&key.environment)?;
        // Through the writer lock, as every write: on SQLite it never races the writer thread.
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO api_keys (id, lookup, hash, environment, name, created_at, revoked_at, \
             mac) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&key.id)
        .bind(&key.lookup)
        .bind(key.hash.clone())
        .bind(&key.environment)
        .bind(&key.name)
        .bind(key.created_at.0)
        .bind(key.revoked_at.map(|t| t.0))
        .bind(key.mac.clone())
        .execute(&mut *tx)
        .await;
        if let Err(sqlx::Error::Database(e)) = &inserted
            && e.is_unique_violation()
        {
            return Err(StoreError::Conflict(Conflict::ApiKey));
        }
        inserted?;
        tx.commit().await?;
        Ok(())
    }

    async fn api_key_by_lookup(&self, lookup: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        // Every request asks: a point read (see `SqlStore::fetch_row`).
        self.fetch_row(
            "SELECT id, lookup, hash, environment, name, created_at, revoked_at, mac FROM api_keys \
             WHERE lookup = $1",
            args![lookup],
            api_key_from_row,
        )
        .await
    }

    async fn revoke_api_key(
        &self,
        id: &str,
        at: Timestamp,
        mac: &[u8],
        record: Option<&RecordChange>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1, mac = $2 WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(at.0)
        .bind(mac.to_vec())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            if let Some(record) = record {
                Self::change_record_in(&mut tx, record).await?;
            }
            tx.commit().await?;
            return Ok(());
        }
        drop(tx);
        let exists = sqlx::query("SELECT 1 AS x FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        // Revoking twice is harmless; an unknown id is not.
        if exists.is_some() {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, lookup, hash, environment, name, created_at, revoked_at, mac FROM api_keys \
             ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| api_key_from_row(r)).collect()
    }
}

fn api_key_from_row(r: &dyn Columns) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: r.text("id")?,
        lookup: r.text("lookup")?,
        hash: r.blob("hash")?,
        environment: r.text("environment")?,
        name: r.text("name")?,
        created_at: Timestamp(r.int("created_at")?),
        revoked_at: r.opt_int("revoked_at")?.map(Timestamp),
        mac: r.opt_blob("mac")?,
    })
}
