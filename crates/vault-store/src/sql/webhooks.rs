//! Webhook endpoints and their outbox (filled by the `webhook_outbox` trigger on
//! `audit_events`, in each event's own transaction).

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::SqlStore;
use super::audit::{EVENT_COLUMNS, event_from_row};
use super::db::Columns as _;
use crate::{
    Conflict, Delivery, RecordChange, StoreError, Timestamp, WebhookEndpoint, WebhookStore,
};
use crate::{events, validate_environment};

/// An endpoint's own columns.
const ENDPOINT_COLUMNS: &str = "w.id, w.environment, w.url, w.events, w.secret, \
     w.secret_key_id, w.created_at, w.mac";

/// With its outbox counts and latest failure, for listings.
const ENDPOINT_STATUS_COLUMNS: &str = "w.id, w.environment, w.url, w.events, w.secret, \
     w.secret_key_id, w.created_at, w.mac, \
     (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.endpoint_id = w.id AND d.dead = 0) \
     AS pending, \
     (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.endpoint_id = w.id AND d.dead <> 0) \
     AS dead, \
     (SELECT d.last_error FROM webhook_deliveries d WHERE d.endpoint_id = w.id \
     AND d.last_error IS NOT NULL ORDER BY d.event_seq DESC LIMIT 1) AS last_error";

/// The due time of an endpoint's oldest delivery that is not dead: what it waits for (later
/// ones wait behind it, in order).
const HEAD_DUE: &str = "(SELECT d.next_attempt_at FROM webhook_deliveries d \
     WHERE d.endpoint_id = w.id AND d.dead = 0 ORDER BY d.event_seq LIMIT 1)";

fn endpoint_from_row(r: &AnyRow) -> Result<WebhookEndpoint, StoreError> {
    let events: String = r.try_get("events")?;
    // Absent from a lease's row (which does not count the outbox): zero.
    let counted = |column: &str| {
        r.try_get::<Option<i64>, _>(column)
            .ok()
            .flatten()
            .unwrap_or(0)
    };
    let (pending, dead) = (counted("pending"), counted("dead"));
    Ok(WebhookEndpoint {
        id: r.try_get("id")?,
        environment: r.try_get("environment")?,
        url: r.try_get("url")?,
        events: events.split(',').map(str::to_owned).collect(),
        sealed_secret: r.try_get("secret")?,
        secret_key_id: r.try_get("secret_key_id")?,
        created_at: Timestamp(r.try_get("created_at")?),
        pending: u64::try_from(pending).unwrap_or(0),
        dead: u64::try_from(dead).unwrap_or(0),
        last_error: r.try_get::<Option<String>, _>("last_error").ok().flatten(),
        mac: r.opt_blob("mac")?,
    })
}

fn not_found_if_none(changed: u64) -> Result<(), StoreError> {
    if changed == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

#[async_trait]
impl WebhookStore for SqlStore {
    async fn create_webhook(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        validate_environment(&endpoint.environment)?;
        if endpoint.events.is_empty()
            || endpoint.events.iter().any(|e| !events::ALL.contains(&&**e))
        {
            return Err(StoreError::invalid("events", "name known event types"));
        }
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, environment, url, events, secret, secret_key_id, \
             created_at, mac) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&endpoint.id)
        .bind(&endpoint.environment)
        .bind(&endpoint.url)
        .bind(endpoint.events.join(","))
        .bind(endpoint.sealed_secret.clone())
        .bind(&endpoint.secret_key_id)
        .bind(endpoint.created_at.0)
        .bind(endpoint.mac.clone())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn webhooks(
        &self,
        environment: Option<&str>,
    ) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let sql = format!(
            "SELECT {ENDPOINT_STATUS_COLUMNS} FROM webhook_endpoints w \
             WHERE $1 IS NULL OR w.environment = $1 ORDER BY w.created_at, w.id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(environment.map(str::to_owned))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(endpoint_from_row).collect()
    }

    async fn delete_webhook(&self, id: &str, record: &RecordChange) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let gone = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        not_found_if_none(gone)?;
        Self::change_record_in(&mut tx, record).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn replace_webhook_secret(
        &self,
        id: &str,
        expected: &[u8],
        sealed_secret: &[u8],
        secret_key_id: &str,
        mac: &[u8],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE webhook_endpoints SET secret = $1, secret_key_id = $2, mac = $3 \
             WHERE id = $4 AND secret = $5",
        )
        .bind(sealed_secret.to_vec())
        .bind(secret_key_id)
        .bind(mac.to_vec())
        .bind(id)
        .bind(expected.to_vec())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            let exists = sqlx::query("SELECT 1 AS one FROM webhook_endpoints WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            return Err(match exists {
                Some(_) => StoreError::Conflict(Conflict::Version),
                None => StoreError::NotFound,
            });
        }
        tx.commit().await?;
        Ok(())
    }

    async fn replay_webhook(&self, id: &str) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 AS one FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        let revived = sqlx::query(
            "UPDATE webhook_deliveries SET dead = 0, attempts = 0, next_attempt_at = 0 \
             WHERE endpoint_id = $1 AND dead <> 0",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(revived)
    }

    async fn lease_webhook(
        &self,
        owner: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        // Only endpoints whose oldest delivery is due: one waiting for a retry is not taken
        // (and released) again and again meanwhile.
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS}, {HEAD_DUE} AS due FROM webhook_endpoints w \
             WHERE w.lease_until < $1 AND {HEAD_DUE} <= $1 ORDER BY due LIMIT 8"
        );
        let candidates = sqlx::query(AssertSqlSafe(sql))
            .bind(now.0)
            .fetch_all(&self.pool)
            .await?;
        for row in &candidates {
            let endpoint = endpoint_from_row(row)?;
            // A compare-and-set on the lease: of several processes, one gets it.
            let mut tx = self.begin_write().await?;
            let won = sqlx::query(
                "UPDATE webhook_endpoints SET lease_owner = $1, lease_until = $2 \
                 WHERE id = $3 AND lease_until < $4",
            )
            .bind(owner)
            .bind(until.0)
            .bind(&endpoint.id)
            .bind(now.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            if won == 1 {
                return Ok(Some(endpoint));
            }
        }
        Ok(None)
    }

    async fn renew_webhook_lease(
        &self,
        id: &str,
        owner: &str,
        until: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let kept = sqlx::query(
            "UPDATE webhook_endpoints SET lease_until = $1 WHERE id = $2 AND lease_owner = $3 \
             AND lease_until >= $4",
        )
        .bind(until.0)
        .bind(id)
        .bind(owner)
        .bind(Timestamp::now().0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(kept == 1)
    }

    async fn release_webhook(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE webhook_endpoints SET lease_owner = NULL, lease_until = 0 \
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn next_delivery(&self, endpoint_id: &str) -> Result<Option<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, d.attempts, d.next_attempt_at FROM webhook_deliveries d \
             JOIN audit_events a ON a.seq = d.event_seq \
             WHERE d.endpoint_id = $1 AND d.dead = 0 ORDER BY d.event_seq LIMIT 1"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(endpoint_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let attempts: i64 = r.try_get("attempts")?;
            Ok(Delivery {
                endpoint_id: endpoint_id.to_owned(),
                seq: r.try_get("seq")?,
                event: event_from_row(&r)?,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                next_attempt_at: Timestamp(r.try_get("next_attempt_at")?),
            })
        })
        .transpose()
    }

    async fn delivered(
        &self,
        endpoint_id: &str,
        seq: i64,
        owner: &str,
        renew_until: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let renewed = sqlx::query(
            "UPDATE webhook_endpoints SET lease_until = $1 WHERE id = $2 AND lease_owner = $3",
        )
        .bind(renew_until.0)
        .bind(endpoint_id)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if renewed == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1 AND event_seq = $2")
            .bind(endpoint_id)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn delivery_failed(
        &self,
        endpoint_id: &str,
        seq: i64,
        owner: &str,
        next_attempt_at: Timestamp,
        dead: bool,
        error: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $1, \
             dead = $2, last_error = $3 WHERE endpoint_id = $4 AND event_seq = $5 \
             AND EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.id = $4 AND w.lease_owner = $6)",
        )
        .bind(next_attempt_at.0)
        .bind(i64::from(dead))
        .bind(error)
        .bind(endpoint_id)
        .bind(seq)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(done == 1)
    }
}
