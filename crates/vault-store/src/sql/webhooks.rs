//! Webhook endpoints and their outbox (filled by the `webhook_outbox` trigger on
//! `audit_events`, in each event's own transaction).

use async_trait::async_trait;

use super::SqlStore;
use super::audit::{EVENT_COLUMNS, event_from_row};
use super::db::{Columns, Tx, args};
use super::integrity::change_record_in;
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

fn endpoint_from_row(r: &dyn Columns) -> Result<WebhookEndpoint, StoreError> {
    let events = r.text("events")?;
    // Absent from a lease's row (which does not count the outbox): zero.
    let counted = |column: &str| u64::try_from(r.maybe_int(column).unwrap_or(0)).unwrap_or(0);
    Ok(WebhookEndpoint {
        id: r.text("id")?,
        environment: r.text("environment")?,
        url: r.text("url")?,
        events: events.split(',').map(str::to_owned).collect(),
        sealed_secret: r.blob("secret")?,
        secret_key_id: r.text("secret_key_id")?,
        created_at: Timestamp(r.int("created_at")?),
        pending: counted("pending"),
        dead: counted("dead"),
        last_error: r.opt_text("last_error").ok().flatten(),
        mac: r.opt_blob("mac")?.unwrap_or_default(),
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
        let e = endpoint.clone();
        self.change(move |tx: &mut dyn Tx| {
            tx.execute(
                "INSERT INTO webhook_endpoints (id, environment, url, events, secret, \
                 secret_key_id, created_at, mac) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                args![
                    &e.id,
                    &e.environment,
                    &e.url,
                    &e.events.join(","),
                    &e.sealed_secret,
                    &e.secret_key_id,
                    e.created_at.0,
                    &e.mac,
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn webhooks(
        &self,
        environment: Option<&str>,
    ) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let sql = format!(
            "SELECT {ENDPOINT_STATUS_COLUMNS} FROM webhook_endpoints w \
             WHERE $1 IS NULL OR w.environment = $1 ORDER BY w.created_at, w.id"
        );
        self.rows(&sql, args![environment], endpoint_from_row).await
    }

    async fn delete_webhook(&self, id: &str, record: &RecordChange) -> Result<(), StoreError> {
        let (id, record) = (id.to_owned(), record.clone());
        self.change(move |tx: &mut dyn Tx| {
            tx.execute(
                "DELETE FROM webhook_deliveries WHERE endpoint_id = $1",
                args![&id],
            )?;
            let gone = tx.execute("DELETE FROM webhook_endpoints WHERE id = $1", args![&id])?;
            not_found_if_none(gone)?;
            change_record_in(tx, &record)
        })
        .await
    }

    async fn replace_webhook_secret(
        &self,
        id: &str,
        expected: &[u8],
        sealed_secret: &[u8],
        secret_key_id: &str,
        mac: &[u8],
    ) -> Result<(), StoreError> {
        let (id, expected, sealed_secret, secret_key_id, mac) = (
            id.to_owned(),
            expected.to_vec(),
            sealed_secret.to_vec(),
            secret_key_id.to_owned(),
            mac.to_vec(),
        );
        self.change(move |tx: &mut dyn Tx| {
            let changed = tx.execute(
                "UPDATE webhook_endpoints SET secret = $1, secret_key_id = $2, mac = $3 \
                 WHERE id = $4 AND secret = $5",
                args![&sealed_secret, &secret_key_id, &mac, &id, &expected],
            )?;
            if changed == 0 {
                let exists = tx.exists(
                    "SELECT 1 AS one FROM webhook_endpoints WHERE id = $1",
                    args![&id],
                )?;
                return Err(if exists {
                    StoreError::Conflict(Conflict::Version)
                } else {
                    StoreError::NotFound
                });
            }
            Ok(())
        })
        .await
    }

    async fn replay_webhook(&self, id: &str) -> Result<u64, StoreError> {
        let id = id.to_owned();
        self.change(move |tx: &mut dyn Tx| {
            if !tx.exists(
                "SELECT 1 AS one FROM webhook_endpoints WHERE id = $1",
                args![&id],
            )? {
                return Err(StoreError::NotFound);
            }
            Ok(tx.execute(
                "UPDATE webhook_deliveries SET dead = 0, attempts = 0, next_attempt_at = 0 \
                 WHERE endpoint_id = $1 AND dead <> 0",
                args![&id],
            )?)
        })
        .await
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
        let candidates = self.rows(&sql, args![now.0], endpoint_from_row).await?;
        for endpoint in candidates {
            // A compare-and-set on the lease: of several processes, one gets it.
            let (owner, id) = (owner.to_owned(), endpoint.id.clone());
            let won = self
                .change(move |tx: &mut dyn Tx| {
                    Ok(tx.execute(
                        "UPDATE webhook_endpoints SET lease_owner = $1, lease_until = $2 \
                         WHERE id = $3 AND lease_until < $4",
                        args![&owner, until.0, &id, now.0],
                    )?)
                })
                .await?;
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
        let (id, owner) = (id.to_owned(), owner.to_owned());
        let kept = self
            .change(move |tx: &mut dyn Tx| {
                Ok(tx.execute(
                    "UPDATE webhook_endpoints SET lease_until = $1 WHERE id = $2 \
                     AND lease_owner = $3 AND lease_until >= $4",
                    args![until.0, &id, &owner, Timestamp::now().0],
                )?)
            })
            .await?;
        Ok(kept == 1)
    }

    async fn release_webhook(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.change(move |tx: &mut dyn Tx| {
            tx.execute(
                "UPDATE webhook_endpoints SET lease_owner = NULL, lease_until = 0 \
                 WHERE id = $1 AND lease_owner = $2",
                args![&id, &owner],
            )?;
            Ok(())
        })
        .await
    }

    async fn next_delivery(&self, endpoint_id: &str) -> Result<Option<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, d.attempts, d.next_attempt_at FROM webhook_deliveries d \
             JOIN audit_events a ON a.seq = d.event_seq \
             WHERE d.endpoint_id = $1 AND d.dead = 0 ORDER BY d.event_seq LIMIT 1"
        );
        self.row(&sql, args![endpoint_id], |r| {
            Ok(Delivery {
                endpoint_id: endpoint_id.to_owned(),
                seq: r.int("seq")?,
                event: event_from_row(r)?,
                attempts: u32::try_from(r.int("attempts")?).unwrap_or(u32::MAX),
                next_attempt_at: Timestamp(r.int("next_attempt_at")?),
            })
        })
        .await
    }

    async fn delivered(
        &self,
        endpoint_id: &str,
        seq: i64,
        owner: &str,
        renew_until: Timestamp,
    ) -> Result<bool, StoreError> {
        let (endpoint_id, owner) = (endpoint_id.to_owned(), owner.to_owned());
        self.change(move |tx: &mut dyn Tx| {
            let renewed = tx.execute(
                "UPDATE webhook_endpoints SET lease_until = $1 WHERE id = $2 AND lease_owner = $3",
                args![renew_until.0, &endpoint_id, &owner],
            )?;
            if renewed == 0 {
                return Ok(false);
            }
            tx.execute(
                "DELETE FROM webhook_deliveries WHERE endpoint_id = $1 AND event_seq = $2",
                args![&endpoint_id, seq],
            )?;
            Ok(true)
        })
        .await
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
        let (endpoint_id, owner, error) =
            (endpoint_id.to_owned(), owner.to_owned(), error.to_owned());
        let done = self
            .change(move |tx: &mut dyn Tx| {
                Ok(tx.execute(
                    "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $1, \
                     dead = $2, last_error = $3 WHERE endpoint_id = $4 AND event_seq = $5 \
                     AND EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.id = $4 \
                     AND w.lease_owner = $6)",
                    args![
                        next_attempt_at.0,
                        i64::from(dead),
                        &error,
                        &endpoint_id,
                        seq,
                        &owner,
                    ],
                )?)
            })
            .await?;
        Ok(done == 1)
    }
}
