//! API keys: stored as hashes, found by their public lookup.

use super::SqlStore;
use super::db::{Columns, DbError, Tx, args};
use super::integrity::change_record_in;
use crate::{ApiKeyRecord, RecordChange, Timestamp, validate_environment};
use crate::{ApiKeyStore, Conflict, StoreError};
use async_trait::async_trait;

#[async_trait]
impl ApiKeyStore for SqlStore {
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        validate_environment(&key.environment)?;
        let key = key.clone();
        self.change(move |tx: &mut dyn Tx| {
            let inserted = tx.execute(
                "INSERT INTO api_keys (id, lookup, hash, environment, name, created_at, \
                 revoked_at, mac) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                args![
                    &key.id,
                    &key.lookup,
                    &key.hash,
                    &key.environment,
                    &key.name,
                    key.created_at.0,
                    key.revoked_at.map(|t| t.0),
                    &key.mac,
                ],
            );
            match inserted {
                Ok(_) => Ok(()),
                Err(DbError::Unique) => Err(StoreError::Conflict(Conflict::ApiKey)),
                Err(DbError::Other(e)) => Err(e),
            }
        })
        .await
    }

    async fn api_key_by_lookup(&self, lookup: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        // Every request asks: a point read (see `SqlStore::row`).
        self.row(
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
        let (id, mac, record) = (id.to_owned(), mac.to_vec(), record.cloned());
        self.change(move |tx: &mut dyn Tx| {
            let done = tx.execute(
                "UPDATE api_keys SET revoked_at = $1, mac = $2 WHERE id = $3 \
                 AND revoked_at IS NULL",
                args![at.0, &mac, &id],
            )?;
            if done == 1 {
                if let Some(record) = &record {
                    change_record_in(tx, record)?;
                }
                return Ok(());
            }
            // Revoking twice is harmless (and changes nothing); an unknown id is not.
            if tx.exists("SELECT 1 AS x FROM api_keys WHERE id = $1", args![&id])? {
                Ok(())
            } else {
                Err(StoreError::NotFound)
            }
        })
        .await
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.rows(
            "SELECT id, lookup, hash, environment, name, created_at, revoked_at, mac FROM api_keys \
             ORDER BY created_at, id",
            &[],
            api_key_from_row,
        )
        .await
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
        mac: r.opt_blob("mac")?.unwrap_or_default(),
    })
}
