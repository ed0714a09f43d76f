//! Key events of the data-key API, the audit trail, and what each key wraps.

use async_trait::async_trait;
use sqlx::Row;
use vault_crypto::KeyContext;

use super::writer::AuditRecord;
use super::{SqlStore, count};
use crate::{Actor, AuditEvent, KeyUsage, Timestamp, validate_environment};
use crate::{AuditLog, StoreError};

#[async_trait]
impl AuditLog for SqlStore {
    async fn key_usage(&self) -> Result<Vec<KeyUsage>, StoreError> {
        let mut usage = std::collections::BTreeMap::<String, KeyUsage>::new();
        let stored = sqlx::query("SELECT key_id, COUNT(*) AS n FROM versions GROUP BY key_id")
            .fetch_all(&self.pool)
            .await?;
        for r in &stored {
            let key_id: String = r.try_get("key_id")?;
            usage
                .entry(key_id.clone())
                .or_insert_with(|| KeyUsage::new(key_id))
                .stored_versions = count(r)?;
        }
        // Issued data keys: a key handed out (`vault.dek.read`) or bound to a new context
        // (`vault.dek.rekeyed`); the caller keeps each blob, so each is counted.
        let issued = sqlx::query(
            "SELECT key_id, COUNT(*) AS n FROM audit_events \
             WHERE event IN ('vault.dek.read', 'vault.dek.rekeyed') AND key_id IS NOT NULL \
             GROUP BY key_id",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in &issued {
            let key_id: String = r.try_get("key_id")?;
            usage
                .entry(key_id.clone())
                .or_insert_with(|| KeyUsage::new(key_id))
                .issued_data_keys = count(r)?;
        }
        Ok(usage.into_values().collect())
    }

    async fn audit_events(
        &self,
        environment: &str,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT environment, event, actor_id, actor_name, object_id, object_name, key_id, \
             key_context, occurred_at FROM audit_events WHERE environment = $1 \
             ORDER BY seq DESC LIMIT $2",
        )
        .bind(environment)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    event: r.try_get("event")?,
                    environment: r.try_get("environment")?,
                    actor: Actor::new(
                        r.try_get::<String, _>("actor_id")?,
                        r.try_get::<String, _>("actor_name")?,
                    ),
                    object_id: r.try_get("object_id")?,
                    object_name: r.try_get("object_name")?,
                    key_id: r.try_get("key_id")?,
                    key_context: r.try_get("key_context")?,
                    occurred_at: Timestamp(r.try_get("occurred_at")?),
                })
            })
            .collect()
    }

    async fn record_key_event(
        &self,
        environment: &str,
        event: &str,
        actor: &Actor,
        key_id: &str,
        context: &KeyContext,
    ) -> Result<(), StoreError> {
        validate_environment(environment)?;
        self.audit_read_record(AuditRecord {
            environment: environment.to_owned(),
            event: event.to_owned(),
            actor: actor.clone(),
            object: None,
            key_id: Some(key_id.to_owned()),
            key_context: Some(context.to_json()),
            at: Timestamp::now(),
        })
        .await
    }
}
