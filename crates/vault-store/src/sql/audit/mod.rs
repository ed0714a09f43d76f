//! The audit trail: key events of the data-key API, ring events, the Events API's listing, the
//! retention purge, idempotent answers, and what each key wraps.

use async_trait::async_trait;
use vault_crypto::KeyContext;

use super::SqlStore;
use super::change::{AuditRecord, insert_audit};
use super::db::{Arg, Backend, Columns, Tx, args};
use super::ring::{ISSUED_EVENTS, ring_pattern};
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

/// Appends `record` once for each of `environments`; returns how many.
fn insert_in_each(
    tx: &mut dyn Tx,
    environments: Vec<String>,
    mut record: AuditRecord,
) -> Result<u64, StoreError> {
    let n = environments.len() as u64;
    for environment in environments {
        record.environment = environment;
        insert_audit(tx, &record)?;
    }
    Ok(n)
}

/// An event of its row ([`EVENT_COLUMNS`]).
pub(super) fn event_from_row(r: &dyn Columns) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        id: r.text("event_id")?,
        event: r.text("event")?,
        environment: r.text("environment")?,
        actor: Actor::new(r.text("actor_id")?, r.text("actor_name")?),
        object_id: r.opt_text("object_id")?,
        object_name: r.opt_text("object_name")?,
        key_id: r.opt_text("key_id")?,
        key_context: r.opt_text("key_context")?,
        detail: r.opt_text("detail")?,
        occurred_at: Timestamp(r.int("occurred_at")?),
    })
}

/// Stores `remember`'s answer in `tx`, unless an answer younger than 24 hours is there.
///
/// # Errors
/// `Conflict::Answered` if one is (the caller drops the transaction).
pub(super) fn remember_in(tx: &mut dyn Tx, remember: &Remember) -> Result<(), StoreError> {
    let (body, mac, now) = (&remember.body, &remember.mac, remember.at);
    let stored = tx.execute(
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
    )?;
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
        // Stored values: object versions, webhook signing secrets, the BYOK seal and blobs (in
        // every state: an upload in progress is sealed already).
        const STORED: &str = "SELECT key_id, COUNT(*) AS n FROM versions GROUP BY key_id \
             UNION ALL SELECT secret_key_id AS key_id, COUNT(*) AS n FROM webhook_endpoints \
             GROUP BY secret_key_id \
             UNION ALL SELECT seal_key_id AS key_id, COUNT(*) AS n FROM byok_config \
             GROUP BY seal_key_id \
             UNION ALL SELECT key_id, COUNT(*) AS n FROM blobs GROUP BY key_id";
        // Issued data keys: a key handed out (`vault.dek.read`) or bound to a new context
        // (`vault.dek.rekeyed`); the caller keeps each blob, so each is counted, including
        // those whose events aged out (`issued_key_totals`).
        let issued = format!(
            "SELECT key_id, COUNT(*) AS n FROM audit_events \
             WHERE event IN {ISSUED_EVENTS} AND key_id IS NOT NULL GROUP BY key_id \
             UNION ALL SELECT key_id, n FROM issued_key_totals"
        );
        let counts = self
            .snapshot(move |tx| {
                let per_key = |r: &dyn Columns| Ok((r.text("key_id")?, r.count("n")?));
                Ok((
                    tx.fetch_all(STORED, &[], per_key)?,
                    tx.fetch_all(&issued, &[], per_key)?,
                ))
            })
            .await?;
        let mut usage = std::collections::BTreeMap::<String, KeyUsage>::new();
        let (stored, issued) = counts;
        for (key_id, n) in stored {
            usage
                .entry(key_id.clone())
                .or_insert_with(|| KeyUsage::new(key_id))
                .stored_versions += n;
        }
        for (key_id, n) in issued {
            usage
                .entry(key_id.clone())
                .or_insert_with(|| KeyUsage::new(key_id))
                .issued_data_keys += n;
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
        self.rows(&sql, args![environment, i64::from(limit)], event_from_row)
            .await
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
            organization: None,
            detail: None,
            at: now,
        };
        match remember {
            // Group-committed with the other reads of the moment.
            None => self.audit_read_record(record).await,
            // In a change of its own, with the answer: both or neither.
            Some(remember) => {
                let remember = remember.clone();
                self.change(move |tx: &mut dyn Tx| {
                    insert_audit(tx, &record)?;
                    remember_in(tx, &remember)
                })
                .await
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
        let (pattern, test) = ring_pattern(self.backend(), ring)?;
        let sql = format!(
            "SELECT o.environment AS environment FROM versions v \
             JOIN objects o ON o.id = v.object_id WHERE v.key_id {test} \
             UNION SELECT environment FROM audit_events \
             WHERE event IN {ISSUED_EVENTS} AND key_id {test} \
             UNION SELECT environment FROM webhook_endpoints WHERE secret_key_id {test}"
        );
        let record = AuditRecord {
            environment: String::new(),
            event: event.to_owned(),
            actor: actor.clone(),
            object: None,
            key_id: Some(key_id.to_owned()),
            key_context: None,
            organization: None,
            detail: None,
            at: Timestamp::now(),
        };
        self.change(move |tx: &mut dyn Tx| {
            let environments = tx.fetch_all(&sql, args![&pattern], |r| r.text("environment"))?;
            insert_in_each(tx, environments, record)
        })
        .await
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
        let organization = organization.to_owned();
        let record = AuditRecord {
            environment: String::new(),
            event: event.event.clone(),
            actor: event.actor.clone(),
            object: None,
            key_id: event.key_id.clone(),
            key_context: event.key_context.clone(),
            organization: None,
            detail: event.detail.clone(),
            at: Timestamp::now(),
        };
        self.change(move |tx: &mut dyn Tx| {
            // The environments whose stored values the organization's rule routes: those that
            // stored one for it. Reading one, or asking for a data key naming it, subscribes
            // none.
            let environments = tx.fetch_all(
                "SELECT DISTINCT environment FROM audit_events WHERE organization_id = $1 \
                 AND event IN ('vault.data.created', 'vault.data.updated', 'vault.blob.created')",
                args![&organization],
                |r| r.text("environment"),
            )?;
            insert_in_each(tx, environments, record)
        })
        .await
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
        // Each filter's test, `?` its parameter.
        let mut filters: Vec<(&str, Arg<'_>)> = Vec::new();
        if let Some(org) = &query.organization_id {
            filters.push((
                "(a.organization_id = ? OR a.filed_organization = ?)",
                Arg::Text(org),
            ));
        }
        if let Some(t) = query.range_start {
            filters.push(("a.occurred_at >= ?", Arg::Int(t.0)));
        }
        if let Some(t) = query.range_end {
            filters.push(("a.occurred_at < ?", Arg::Int(t.0)));
        }
        if self.backend() == Backend::Postgres {
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
            let seq = self
                .row(
                    "SELECT seq FROM audit_events WHERE event_id = $1 AND environment = $2",
                    args![after, environment],
                    |r| r.int("seq"),
                )
                .await?
                .ok_or_else(|| StoreError::invalid_query("after", "no such event"))?;
            let op = match query.order {
                Order::Asc => "a.seq > ?",
                Order::Desc => "a.seq < ?",
            };
            filters.push((op, Arg::Int(seq)));
        }
        for (test, _) in &filters {
            n += 1;
            sql.push_str(" AND ");
            sql.push_str(&test.replace('?', &format!("${n}")));
        }
        sql.push_str(match query.order {
            Order::Asc => " ORDER BY a.seq ASC LIMIT $2",
            Order::Desc => " ORDER BY a.seq DESC LIMIT $2",
        });
        let mut args = vec![Arg::Text(environment), Arg::Int(i64::from(query.limit) + 1)];
        args.extend(query.events.iter().map(|e| Arg::Text(e)));
        args.extend(filters.iter().map(|(_, value)| *value));
        let mut data = self.rows(&sql, &args, event_from_row).await?;
        let more = data.len() > query.limit as usize;
        data.truncate(query.limit as usize);
        let after = if more {
            data.last().map(|e| e.id.clone())
        } else {
            None
        };
        Ok(EventPage { data, after })
    }

    async fn purge_events(&self, before: Timestamp) -> Result<u64, StoreError> {
        // In batches, each its own change, so a large first purge never holds the writer for
        // long. Each batch counts the issued data keys among the events it removes in the same
        // transaction, so a delivery finished concurrently cannot make an event go uncounted.
        const BATCH: i64 = 5_000;
        let mut removed = 0;
        loop {
            let batch = self
                .change(move |tx: &mut dyn Tx| purge_batch(tx, before, BATCH))
                .await?;
            removed += batch;
            if batch < BATCH as u64 {
                return Ok(removed);
            }
        }
    }

    async fn remembered(&self, owner: &str, key: &str) -> Result<Option<Remembered>, StoreError> {
        let now = Timestamp::now().0;
        self.row(
            "SELECT request_hash, status, body, created_at, mac FROM idempotent_answers \
             WHERE owner = $1 AND idem_key = $2 AND created_at >= $3 AND created_at <= $4",
            args![
                owner,
                key,
                now.saturating_sub(IDEMPOTENCY_TTL_MICROS),
                now.saturating_add(CLOCK_SKEW_MICROS),
            ],
            |r| {
                Ok(Remembered {
                    request_hash: r.blob("request_hash")?,
                    status: u16::try_from(r.int("status")?).map_err(|_| {
                        StoreError::Unavailable {
                            reason: "a stored answer's status is corrupt".into(),
                        }
                    })?,
                    body: r.blob("body")?,
                    created_at: Timestamp(r.int("created_at")?),
                    mac: r.opt_blob("mac")?.unwrap_or_default(),
                })
            },
        )
        .await
    }

    async fn forget_answers(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.change(move |tx: &mut dyn Tx| {
            Ok(tx.execute(
                "DELETE FROM idempotent_answers WHERE created_at < $1 OR created_at > $2",
                args![
                    before.0,
                    Timestamp::now().0.saturating_add(CLOCK_SKEW_MICROS)
                ],
            )?)
        })
        .await
    }
}

/// Removes up to `batch` events older than `before` that no webhook still waits for, adding
/// the data keys they issued to `issued_key_totals`; returns how many it removed.
fn purge_batch(tx: &mut dyn Tx, before: Timestamp, batch: i64) -> Result<u64, StoreError> {
    let aged = "SELECT seq FROM audit_events WHERE occurred_at < $1 AND NOT EXISTS \
         (SELECT 1 FROM webhook_deliveries d WHERE d.event_seq = audit_events.seq) \
         ORDER BY seq LIMIT $2";
    let totals = "ON CONFLICT (key_id) DO UPDATE SET n = issued_key_totals.n + excluded.n";
    match tx.backend() {
        Backend::Postgres => {
            let sql = format!(
                "WITH gone AS (DELETE FROM audit_events WHERE seq IN ({aged}) \
                 RETURNING event, key_id), \
                 counted AS (INSERT INTO issued_key_totals (key_id, n) \
                 SELECT key_id, COUNT(*) FROM gone WHERE event IN {ISSUED_EVENTS} \
                 AND key_id IS NOT NULL GROUP BY key_id {totals}) \
                 SELECT COUNT(*) AS n FROM gone"
            );
            tx.fetch(&sql, args![before.0, batch], |r| r.count("n"))?
                .ok_or_else(|| StoreError::Unavailable {
                    reason: "a count returned no row".into(),
                })
        }
        Backend::Sqlite => {
            let sql = format!(
                "INSERT INTO issued_key_totals (key_id, n) SELECT key_id, COUNT(*) \
                 FROM audit_events WHERE seq IN ({aged}) AND event IN {ISSUED_EVENTS} \
                 AND key_id IS NOT NULL GROUP BY key_id {totals}"
            );
            tx.execute(&sql, args![before.0, batch])?;
            Ok(tx.execute(
                &format!("DELETE FROM audit_events WHERE seq IN ({aged})"),
                args![before.0, batch],
            )?)
        }
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests;
