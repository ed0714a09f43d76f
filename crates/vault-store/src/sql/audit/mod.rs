//! The audit trail: key events of the data-key API, ring events, the Events API's listing, the
//! retention purge, idempotent answers, and what each key wraps.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use vault_crypto::KeyContext;

use super::change::{AuditRecord, insert_audit};
use super::db::{Tx, args};
use super::ring::ISSUED_EVENTS;
use super::writer::WriteTx;
use super::{Backend, SqlStore, count};
use crate::{
    Actor, AuditEvent, DeploymentEvent, EventPage, EventQuery, IDEMPOTENCY_TTL_MICROS, KeyUsage,
    MAX_EVENTS_LIMIT, Order, Remember, Remembered, Timestamp, is_event_id, validate_environment,
};
use crate::{AuditLog, Conflict, StoreError};

/// The columns of an event as [`event_from_row`] reads them.
pub(super) const EVENT_COLUMNS: &str = "a.seq, a.event_id, a.environment, a.event, a.actor_id, \
     a.actor_name, a.object_id, a.object_name, a.key_id, a.key_context, a.occurred_at, a.detail";

/// How old an event must be before PostgreSQL lists it, in microseconds. Sequence numbers are
/// taken when a transaction inserts, not when it commits, so on a database with concurrent
/// writers an event with a lower number can appear after a reader has paged past it; waiting
/// until every transaction that could hold one has committed (ours take far less) keeps
/// `after` cursors from skipping events. SQLite writes one transaction at a time: no wait.
const POSTGRES_SETTLE_MICROS: i64 = 5_000_000;

/// Inserts `record` once in each environment of `rows` (their `environment` column): an event
/// about something several environments share. Returns how many.
async fn insert_in_each(
    tx: &mut WriteTx,
    rows: &[AnyRow],
    mut record: AuditRecord,
) -> Result<u64, StoreError> {
    for row in rows {
        record.environment = row.try_get("environment")?;
        insert_audit(tx, &record).await?;
    }
    Ok(rows.len() as u64)
}

pub(super) fn event_from_row(r: &AnyRow) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        id: r.try_get("event_id")?,
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
        detail: r.try_get("detail")?,
        occurred_at: Timestamp(r.try_get("occurred_at")?),
    })
}

/// Stores `remember`'s answer in `tx`, unless an answer younger than 24 hours is there.
///
/// # Errors
/// `Conflict::Answered` if one is (the caller drops the transaction).
pub(super) async fn remember_in<X: Tx>(tx: &mut X, remember: &Remember) -> Result<(), StoreError> {
    let (body, mac, now) = (&remember.body, &remember.mac, remember.at);
    let stored = tx
        .execute(
            "INSERT INTO idempotent_answers (owner, idem_key, request_hash, status, body, \
             created_at, mac) VALUES ($1, $2, $3, $4, $5, $6, $9) \
             ON CONFLICT (owner, idem_key) DO UPDATE SET request_hash = excluded.request_hash, \
             status = excluded.status, body = excluded.body, created_at = excluded.created_at, \
             mac = excluded.mac \
             WHERE idempotent_answers.created_at < $7 OR idempotent_answers.created_at > $8",
            args![
                &remember.owner,
                &remember.key,
                &remember.request_hash[..],
                i64::from(remember.status),
                &body[..],
                now.0,
                now.0.saturating_sub(IDEMPOTENCY_TTL_MICROS),
                now.0.saturating_add(CLOCK_SKEW_MICROS),
                &mac[..],
            ],
        )
        .await?;
    if stored == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict(Conflict::Answered))
    }
}

/// How far ahead of this process's clock a stored answer may be (another replica's clock):
/// beyond it, an answer was not written by a process of ours and is neither replayed nor kept.
const CLOCK_SKEW_MICROS: i64 = 60_000_000;

#[async_trait]
impl AuditLog for SqlStore {
    async fn key_usage(&self) -> Result<Vec<KeyUsage>, StoreError> {
        let mut usage = std::collections::BTreeMap::<String, KeyUsage>::new();
        fn entry(
            usage: &mut std::collections::BTreeMap<String, KeyUsage>,
            key_id: String,
        ) -> &mut KeyUsage {
            usage
                .entry(key_id.clone())
                .or_insert_with(|| KeyUsage::new(key_id))
        }
        // Stored values: object versions, and webhook signing secrets.
        let stored = sqlx::query(
            "SELECT key_id, COUNT(*) AS n FROM versions GROUP BY key_id \
             UNION ALL SELECT secret_key_id AS key_id, COUNT(*) AS n FROM webhook_endpoints \
             GROUP BY secret_key_id \
             UNION ALL SELECT seal_key_id AS key_id, COUNT(*) AS n FROM byok_config \
             GROUP BY seal_key_id",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in &stored {
            entry(&mut usage, r.try_get("key_id")?).stored_versions += count(r)?;
        }
        // Issued data keys: a key handed out (`vault.dek.read`) or bound to a new context
        // (`vault.dek.rekeyed`); the caller keeps each blob, so each is counted, including
        // those whose events aged out (`issued_key_totals`).
        let sql = format!(
            "SELECT key_id, COUNT(*) AS n FROM audit_events \
             WHERE event IN {ISSUED_EVENTS} AND key_id IS NOT NULL GROUP BY key_id \
             UNION ALL SELECT key_id, n FROM issued_key_totals"
        );
        let issued = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        for r in &issued {
            entry(&mut usage, r.try_get("key_id")?).issued_data_keys += count(r)?;
        }
        Ok(usage.into_values().collect())
    }

    async fn audit_events(
        &self,
        environment: &str,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events a WHERE a.environment = $1 \
             ORDER BY a.seq DESC LIMIT $2"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(environment)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn record_key_event(
        &self,
        environment: &str,
        event: &str,
        actor: &Actor,
        key_id: &str,
        context: &KeyContext,
        remember: Option<&Remember>,
    ) -> Result<(), StoreError> {
        validate_environment(environment)?;
        let now = Timestamp::now();
        let record = AuditRecord {
            environment: environment.to_owned(),
            event: event.to_owned(),
            actor: actor.clone(),
            object: None,
            key_id: Some(key_id.to_owned()),
            key_context: Some(context.clone()),
            detail: None,
            at: now,
        };
        match remember {
            // Group-committed with the other reads of the moment.
            None => self.audit_read_record(record).await,
            // In a transaction of its own, with the answer: both or neither.
            Some(remember) => {
                let mut tx = self.begin_write().await?;
                insert_audit(&mut tx, &record).await?;
                remember_in(&mut tx, remember).await?;
                tx.commit().await?;
                Ok(())
            }
        }
    }

    async fn record_ring_event(
        &self,
        event: &str,
        ring: &str,
        key_id: &str,
        actor: &Actor,
    ) -> Result<u64, StoreError> {
        let (pattern, test) = self.ring_pattern(ring);
        let sql = format!(
            "SELECT o.environment AS environment FROM versions v \
             JOIN objects o ON o.id = v.object_id WHERE v.key_id {test} \
             UNION SELECT environment FROM audit_events \
             WHERE event IN {ISSUED_EVENTS} AND key_id {test} \
             UNION SELECT environment FROM webhook_endpoints WHERE secret_key_id {test}"
        );
        let mut tx = self.begin_write().await?;
        let environments = sqlx::query(AssertSqlSafe(sql))
            .bind(pattern)
            .fetch_all(&mut *tx)
            .await?;
        let record = AuditRecord {
            environment: String::new(),
            event: event.to_owned(),
            actor: actor.clone(),
            object: None,
            key_id: Some(key_id.to_owned()),
            key_context: None,
            detail: None,
            at: Timestamp::now(),
        };
        let n = insert_in_each(&mut tx, &environments, record).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn record_deployment_event(&self, event: &DeploymentEvent) -> Result<u64, StoreError> {
        if let Some(d) = &event.detail
            && !serde_json::from_str::<serde_json::Value>(d).is_ok_and(|v| v.is_object())
        {
            return Err(StoreError::invalid("detail", "must be a JSON object"));
        }
        let Some(organization) = event
            .key_context
            .as_ref()
            .and_then(|c| c.get("organization_id"))
        else {
            return Ok(0);
        };
        let mut tx = self.begin_write().await?;
        // The environments whose stored values the organization's rule routes: those that
        // stored one for it. Reading one, or asking for a data key naming it, subscribes none.
        let environments = sqlx::query(
            "SELECT DISTINCT environment FROM audit_events WHERE organization_id = $1 \
             AND event IN ('vault.data.created', 'vault.data.updated')",
        )
        .bind(organization)
        .fetch_all(&mut *tx)
        .await?;
        let record = AuditRecord {
            environment: String::new(),
            event: event.event.clone(),
            actor: event.actor.clone(),
            object: None,
            key_id: event.key_id.clone(),
            key_context: event.key_context.clone(),
            detail: event.detail.clone(),
            at: Timestamp::now(),
        };
        let n = insert_in_each(&mut tx, &environments, record).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn list_events(
        &self,
        environment: &str,
        query: &EventQuery,
    ) -> Result<EventPage, StoreError> {
        validate_environment(environment)?;
        if query.events.is_empty() {
            return Err(StoreError::invalid_query(
                "events",
                "name at least one event",
            ));
        }
        if !(1..=MAX_EVENTS_LIMIT).contains(&query.limit) {
            return Err(StoreError::invalid_query("limit", "must be 1 to 100"));
        }
        // Parameters: $1 environment, $2 limit + 1, then the event names, then the filters.
        let mut sql = format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events a WHERE a.environment = $1 AND a.event IN ("
        );
        let mut n = 2;
        for i in 0..query.events.len() {
            n += 1;
            sql.push_str(&format!("{}${n}", if i > 0 { ", " } else { "" }));
        }
        sql.push(')');
        let mut filters: Vec<(String, FilterValue)> = Vec::new();
        if let Some(org) = &query.organization_id {
            filters.push(("a.organization_id =".into(), FilterValue::Text(org.clone())));
        }
        if let Some(t) = query.range_start {
            filters.push(("a.occurred_at >=".into(), FilterValue::Int(t.0)));
        }
        if let Some(t) = query.range_end {
            filters.push(("a.occurred_at <".into(), FilterValue::Int(t.0)));
        }
        if self.backend == Backend::Postgres {
            // By the database's clock, from the row's insertion: neither a replica's clock
            // skew nor a wait in the read-audit queue shortens it.
            sql.push_str(
                " AND a.inserted_at <= \
                 (extract(epoch from clock_timestamp()) * 1000000)::bigint - ",
            );
            sql.push_str(&POSTGRES_SETTLE_MICROS.to_string());
        }
        if let Some(after) = &query.after {
            if !is_event_id(after) {
                return Err(StoreError::invalid_query("after", "not an event id"));
            }
            let seq: i64 = sqlx::query(
                "SELECT seq FROM audit_events WHERE event_id = $1 AND environment = $2",
            )
            .bind(after)
            .bind(environment)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::invalid_query("after", "no such event"))?
            .try_get("seq")?;
            let op = match query.order {
                Order::Asc => "a.seq >",
                Order::Desc => "a.seq <",
            };
            filters.push((op.into(), FilterValue::Int(seq)));
        }
        for (test, _) in &filters {
            n += 1;
            sql.push_str(&format!(" AND {test} ${n}"));
        }
        sql.push_str(match query.order {
            Order::Asc => " ORDER BY a.seq ASC LIMIT $2",
            Order::Desc => " ORDER BY a.seq DESC LIMIT $2",
        });
        // Built from constants and numbered placeholders only: no data is spliced in.
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(environment)
            .bind(i64::from(query.limit) + 1);
        for name in &query.events {
            q = q.bind(name.clone());
        }
        for (_, value) in filters {
            q = match value {
                FilterValue::Text(t) => q.bind(t),
                FilterValue::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        let more = rows.len() > query.limit as usize;
        let data = rows
            .iter()
            .take(query.limit as usize)
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let after = if more {
            data.last().map(|e| e.id.clone())
        } else {
            None
        };
        Ok(EventPage { data, after })
    }

    async fn purge_events(&self, before: Timestamp) -> Result<u64, StoreError> {
        // In batches, each its own transaction, so a large first purge never holds the writer
        // for long. Each batch counts the issued data keys among the events it removes in the
        // same statement (PostgreSQL) or under the writer lock (SQLite), so a delivery finished
        // concurrently cannot make an event go uncounted.
        const BATCH: i64 = 5_000;
        let aged = "SELECT seq FROM audit_events WHERE occurred_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM webhook_deliveries d WHERE d.event_seq = audit_events.seq) \
             ORDER BY seq LIMIT $2";
        let totals = "ON CONFLICT (key_id) DO UPDATE SET n = issued_key_totals.n + excluded.n";
        let mut removed = 0;
        loop {
            let mut tx = self.begin_write().await?;
            let batch = match self.backend {
                Backend::Postgres => {
                    let sql = format!(
                        "WITH gone AS (DELETE FROM audit_events WHERE seq IN ({aged}) \
                         RETURNING event, key_id), \
                         counted AS (INSERT INTO issued_key_totals (key_id, n) \
                         SELECT key_id, COUNT(*) FROM gone WHERE event IN {ISSUED_EVENTS} \
                         AND key_id IS NOT NULL GROUP BY key_id {totals}) \
                         SELECT COUNT(*) AS n FROM gone"
                    );
                    let row = sqlx::query(AssertSqlSafe(sql))
                        .bind(before.0)
                        .bind(BATCH)
                        .fetch_one(&mut *tx)
                        .await?;
                    count(&row)?
                }
                Backend::Sqlite => {
                    let sql = format!(
                        "INSERT INTO issued_key_totals (key_id, n) SELECT key_id, COUNT(*) \
                         FROM audit_events WHERE seq IN ({aged}) AND event IN {ISSUED_EVENTS} \
                         AND key_id IS NOT NULL GROUP BY key_id {totals}"
                    );
                    sqlx::query(AssertSqlSafe(sql))
                        .bind(before.0)
                        .bind(BATCH)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(AssertSqlSafe(format!(
                        "DELETE FROM audit_events WHERE seq IN ({aged})"
                    )))
                    .bind(before.0)
                    .bind(BATCH)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                }
            };
            tx.commit().await?;
            removed += batch;
            if batch < BATCH as u64 {
                return Ok(removed);
            }
        }
    }

    async fn remembered(&self, owner: &str, key: &str) -> Result<Option<Remembered>, StoreError> {
        let now = Timestamp::now().0;
        let row = sqlx::query(
            "SELECT request_hash, status, body, created_at, mac FROM idempotent_answers \
             WHERE owner = $1 AND idem_key = $2 AND created_at >= $3 AND created_at <= $4",
        )
        .bind(owner)
        .bind(key)
        .bind(now.saturating_sub(IDEMPOTENCY_TTL_MICROS))
        .bind(now.saturating_add(CLOCK_SKEW_MICROS))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let status: i64 = r.try_get("status")?;
            Ok(Remembered {
                request_hash: r.try_get("request_hash")?,
                status: u16::try_from(status).map_err(|_| StoreError::Unavailable {
                    reason: "a stored answer's status is corrupt".into(),
                })?,
                body: r.try_get("body")?,
                created_at: Timestamp(r.try_get("created_at")?),
                mac: r.try_get::<Option<Vec<u8>>, _>("mac")?.unwrap_or_default(),
            })
        })
        .transpose()
    }

    async fn forget_answers(&self, before: Timestamp) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let removed =
            sqlx::query("DELETE FROM idempotent_answers WHERE created_at < $1 OR created_at > $2")
                .bind(before.0)
                .bind(Timestamp::now().0.saturating_add(CLOCK_SKEW_MICROS))
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(removed)
    }
}

enum FilterValue {
    Text(String),
    Int(i64),
}

#[cfg(test)]
mod tests;
